//! The contract between the command queue / gRPC server and a device implementation.
//!
//! A [`Backend`] executes one command at a time (the queue guarantees it), reports status at
//! any moment without waiting for a running command, and publishes unsolicited events and status
//! changes through the [`Hub`]. Every future it returns must be cancel-safe: the queue drops it on
//! cancel or timeout, and the device state must stay consistent when that happens.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use openteller_proto::device::v1::{
    Capabilities, Completion, CompletionCode, DeviceClass, DeviceEvent, DeviceStatus, Notice,
    command, command_completion, device_event, notice, simulator_reply, simulator_request,
};
use tokio::sync::{broadcast, mpsc};

use crate::codes::{self, XfsError};

/// Why a command or simulator action did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The completion code.
    pub code: CompletionCode,
    /// The XFS error, when there is one.
    pub error: Option<XfsError>,
    /// What went wrong, for people. Never contains secrets or full card numbers.
    pub description: String,
}

impl Failure {
    /// A failure reported with an XFS error number; the completion code follows from it.
    pub fn xfs(error: XfsError, description: impl Into<String>) -> Self {
        Failure {
            code: codes::completion_code_for(error),
            error: Some(error),
            description: description.into(),
        }
    }

    /// A failure without an XFS number.
    pub fn new(code: CompletionCode, description: impl Into<String>) -> Self {
        Failure {
            code,
            error: None,
            description: description.into(),
        }
    }

    /// `INVALID_DATA` (-52): the request's data is malformed or out of range.
    pub fn invalid_data(description: impl Into<String>) -> Self {
        Self::xfs(codes::generic::INVALID_DATA, description)
    }

    /// `SEQUENCE_ERROR`: the action is not valid in the device's current state.
    pub fn sequence(description: impl Into<String>) -> Self {
        Self::new(CompletionCode::SequenceError, description)
    }

    /// `DEVICE_NOT_READY` (-13).
    pub fn not_ready(description: impl Into<String>) -> Self {
        Self::xfs(codes::generic::DEV_NOT_READY, description)
    }

    /// `UNSUPPORTED_COMMAND` (-50).
    pub fn unsupported(description: impl Into<String>) -> Self {
        Self::xfs(codes::generic::UNSUPP_COMMAND, description)
    }

    /// The wire form.
    pub fn to_completion(&self) -> Completion {
        Completion {
            code: self.code as i32,
            error_code: self.error.map_or(0, |e| e.code),
            error_name: self.error.map_or_else(String::new, |e| e.name.to_owned()),
            description: self.description.clone(),
        }
    }
}

/// The completion of a successful command.
pub fn success() -> Completion {
    Completion {
        code: CompletionCode::Success as i32,
        ..Completion::default()
    }
}

/// What a command produced: its completion and, on success (and for a partly done dispense),
/// its class-specific result.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// How the command ended.
    pub completion: Completion,
    /// The result payload.
    pub result: Option<command_completion::Result>,
}

impl Outcome {
    /// A success with a result.
    pub fn ok(result: command_completion::Result) -> Self {
        Outcome {
            completion: success(),
            result: Some(result),
        }
    }

    /// A success without a result.
    pub fn done() -> Self {
        Outcome {
            completion: success(),
            result: None,
        }
    }
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Self {
        Outcome {
            completion: f.to_completion(),
            result: None,
        }
    }
}

impl From<Result<Outcome, Failure>> for Outcome {
    fn from(r: Result<Outcome, Failure>) -> Self {
        r.unwrap_or_else(Outcome::from)
    }
}

/// What a running command may do besides returning: emit intermediate events to its requester.
pub struct CommandContext {
    events: mpsc::UnboundedSender<DeviceEvent>,
}

impl CommandContext {
    /// A context whose events go to `events`.
    pub fn new(events: mpsc::UnboundedSender<DeviceEvent>) -> Self {
        CommandContext { events }
    }

    /// Sends an intermediate event to the requester (dropped if it went away).
    pub fn emit(&self, event: device_event::Event) {
        let _ = self.events.send(DeviceEvent { event: Some(event) });
    }
}

/// The fan-out of notices (unsolicited events, status changes, command traces) to subscribers.
pub struct Hub {
    sender: broadcast::Sender<Notice>,
    sequence: AtomicU64,
    last_status: Mutex<Option<DeviceStatus>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A hub keeping up to 1024 notices for slow subscribers.
    pub fn new() -> Self {
        Hub {
            sender: broadcast::channel(1024).0,
            sequence: AtomicU64::new(0),
            last_status: Mutex::new(None),
        }
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.sender.subscribe()
    }

    /// Publishes one notice to every subscriber.
    pub fn publish(&self, notice: notice::Notice) {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = self.sender.send(Notice {
            sequence,
            at_unix_ms,
            notice: Some(notice),
        });
    }

    /// Publishes an unsolicited device event.
    pub fn event(&self, event: device_event::Event) {
        self.publish(notice::Notice::Event(DeviceEvent { event: Some(event) }));
    }

    /// Publishes a status-changed event when `status` differs from the last one published.
    pub fn status(&self, status: DeviceStatus) {
        let mut last = self.last_status.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() == Some(&status) {
            return;
        }
        *last = Some(status.clone());
        drop(last);
        self.event(device_event::Event::StatusChanged(status));
    }
}

/// A device implementation: virtual, LFS or XFS.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The class this device serves.
    fn device_class(&self) -> DeviceClass;

    /// Static description.
    fn capabilities(&self) -> Capabilities;

    /// The current status, answered at once (also while a command runs).
    fn status(&self) -> DeviceStatus;

    /// Runs one command of this device's class. Called one at a time; must be cancel-safe.
    async fn execute(&self, command: command::Command, ctx: &CommandContext) -> Outcome;

    /// Applies one simulator action; real hardware answers `UNSUPPORTED_COMMAND`.
    async fn simulate(
        &self,
        action: simulator_request::Action,
    ) -> Result<Option<simulator_reply::Data>, Failure> {
        let _ = action;
        Err(Failure::unsupported("this device is not a simulator"))
    }
}

/// The `Class.Command` name of a command, e.g. `CardReader.ReadRawData`, as used in logs,
/// traces and error simulation.
pub fn command_name(command: &command::Command) -> &'static str {
    use openteller_proto::device::v1::{
        card_reader_command::Command as Idc, cash_dispenser_command::Command as Cdm,
        pin_pad_command::Command as Pin, receipt_printer_command::Command as Ptr,
    };
    match command {
        command::Command::CardReader(c) => match &c.command {
            Some(Idc::ReadRawData(_)) => "CardReader.ReadRawData",
            Some(Idc::Eject(_)) => "CardReader.Eject",
            Some(Idc::Retain(_)) => "CardReader.Retain",
            Some(Idc::Reset(_)) => "CardReader.Reset",
            Some(Idc::ChipIo(_)) => "CardReader.ChipIo",
            None => "CardReader.?",
        },
        command::Command::PinPad(c) => match &c.command {
            Some(Pin::GetKeyDetail(_)) => "PinPad.GetKeyDetail",
            Some(Pin::ImportKeyComponents(_)) => "PinPad.ImportKeyComponents",
            Some(Pin::ImportKey(_)) => "PinPad.ImportKey",
            Some(Pin::DeleteKey(_)) => "PinPad.DeleteKey",
            Some(Pin::GetPin(_)) => "PinPad.GetPin",
            Some(Pin::GetData(_)) => "PinPad.GetData",
            Some(Pin::GetPinBlock(_)) => "PinPad.GetPinBlock",
            Some(Pin::GenerateMac(_)) => "PinPad.GenerateMac",
            Some(Pin::Reset(_)) => "PinPad.Reset",
            None => "PinPad.?",
        },
        command::Command::CashDispenser(c) => match &c.command {
            Some(Cdm::Denominate(_)) => "CashDispenser.Denominate",
            Some(Cdm::Dispense(_)) => "CashDispenser.Dispense",
            Some(Cdm::Present(_)) => "CashDispenser.Present",
            Some(Cdm::Retract(_)) => "CashDispenser.Retract",
            Some(Cdm::Reject(_)) => "CashDispenser.Reject",
            Some(Cdm::Reset(_)) => "CashDispenser.Reset",
            None => "CashDispenser.?",
        },
        command::Command::ReceiptPrinter(c) => match &c.command {
            Some(Ptr::PrintText(_)) => "ReceiptPrinter.PrintText",
            Some(Ptr::PrintForm(_)) => "ReceiptPrinter.PrintForm",
            Some(Ptr::Reset(_)) => "ReceiptPrinter.Reset",
            None => "ReceiptPrinter.?",
        },
    }
}

/// The class a command belongs to.
pub fn command_class(command: &command::Command) -> DeviceClass {
    match command {
        command::Command::CardReader(_) => DeviceClass::CardReader,
        command::Command::PinPad(_) => DeviceClass::PinPad,
        command::Command::CashDispenser(_) => DeviceClass::CashDispenser,
        command::Command::ReceiptPrinter(_) => DeviceClass::ReceiptPrinter,
    }
}

/// Every command name of a class, for capabilities and for validating error simulation.
pub fn class_commands(class: DeviceClass) -> &'static [&'static str] {
    match class {
        DeviceClass::CardReader => &[
            "CardReader.ReadRawData",
            "CardReader.Eject",
            "CardReader.Retain",
            "CardReader.Reset",
            "CardReader.ChipIo",
        ],
        DeviceClass::PinPad => &[
            "PinPad.GetKeyDetail",
            "PinPad.ImportKeyComponents",
            "PinPad.ImportKey",
            "PinPad.DeleteKey",
            "PinPad.GetPin",
            "PinPad.GetData",
            "PinPad.GetPinBlock",
            "PinPad.GenerateMac",
            "PinPad.Reset",
        ],
        DeviceClass::CashDispenser => &[
            "CashDispenser.Denominate",
            "CashDispenser.Dispense",
            "CashDispenser.Present",
            "CashDispenser.Retract",
            "CashDispenser.Reject",
            "CashDispenser.Reset",
        ],
        DeviceClass::ReceiptPrinter => &[
            "ReceiptPrinter.PrintText",
            "ReceiptPrinter.PrintForm",
            "ReceiptPrinter.Reset",
        ],
        DeviceClass::Unspecified => &[],
    }
}
