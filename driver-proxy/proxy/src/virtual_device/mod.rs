//! The virtual devices (`--backend virtual`): software models of the real hardware that testers
//! drive through the simulator-control service (seed 001 §12). Their persistent parts (retain
//! count, card library, key table, cassettes, receipts) live in the state directory.

use std::path::Path;
use std::sync::Arc;

use openteller_proto::device::v1::DeviceClass;

use crate::backend::{Backend, Hub};
use crate::store::StoreError;

pub mod card_reader;
pub mod cash_dispenser;
pub mod common;
pub mod pin_pad;
pub mod receipt_printer;

/// Opens the virtual device of `class` with its state in `state_dir`.
pub fn open(
    class: DeviceClass,
    state_dir: &Path,
    hub: Arc<Hub>,
) -> Result<Arc<dyn Backend>, StoreError> {
    Ok(match class {
        DeviceClass::CardReader => card_reader::VirtualCardReader::open(state_dir, hub)?,
        DeviceClass::PinPad => pin_pad::VirtualPinPad::open(state_dir, hub)?,
        DeviceClass::CashDispenser => cash_dispenser::VirtualDispenser::open(state_dir, hub)?,
        DeviceClass::ReceiptPrinter => receipt_printer::VirtualPrinter::open(state_dir, hub)?,
        DeviceClass::Unspecified => unreachable!("the command line only offers real classes"),
    })
}

/// Simulator actions shared by every class: power, state and error presets.
pub(crate) fn common_action(
    common: &mut common::SimCommon,
    action: &openteller_proto::device::v1::simulator_request::Action,
) -> Option<Result<(), crate::backend::Failure>> {
    use openteller_proto::device::v1::simulator_request::Action;
    Some(match action {
        Action::SetError(e) => common.set_error(e),
        Action::ClearErrors(_) => {
            common.clear_errors();
            Ok(())
        }
        Action::OpenDevice(_) => {
            common.powered = true;
            Ok(())
        }
        Action::CloseDevice(_) => {
            common.powered = false;
            Ok(())
        }
        _ => return None,
    })
}

/// The failure for a simulator action of another class.
pub(crate) fn wrong_class(class: DeviceClass) -> crate::backend::Failure {
    crate::backend::Failure::unsupported(format!("this simulator is a {}", class.as_str_name()))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A spawned timer task that is aborted when this handle is dropped, so device timers never
/// outlive the device or the state they were started for.
#[derive(Debug)]
pub(crate) struct Timer(tokio::task::AbortHandle);

impl Timer {
    pub(crate) fn start(after: std::time::Duration, task: impl FnOnce() + Send + 'static) -> Self {
        let handle = tokio::spawn(async move {
            tokio::time::sleep(after).await;
            task();
        });
        Timer(handle.abort_handle())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The capabilities of a virtual device: its model, the class's commands, and the simulator
/// actions every virtual device accepts plus `class_actions`.
pub(crate) fn capabilities(
    class: DeviceClass,
    model: impl Into<String>,
    class_actions: &[&str],
) -> openteller_proto::device::v1::Capabilities {
    const COMMON: [&str; 5] = [
        "SetError",
        "ClearErrors",
        "SetDeviceState",
        "OpenDevice",
        "CloseDevice",
    ];
    openteller_proto::device::v1::Capabilities {
        device_class: class as i32,
        backend: "virtual".into(),
        vendor: "OpenTeller".into(),
        model: model.into(),
        firmware: env!("CARGO_PKG_VERSION").into(),
        commands: crate::backend::class_commands(class)
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        simulator_actions: COMMON
            .iter()
            .chain(class_actions)
            .map(|s| (*s).to_owned())
            .collect(),
    }
}

/// The outcome for a command of another class or an empty one. The queue refuses those before
/// they reach a backend, so this only answers direct callers.
pub(crate) fn not_this_class() -> crate::backend::Outcome {
    crate::backend::Failure::new(
        openteller_proto::device::v1::CompletionCode::InvalidCommand,
        "not a command of this device",
    )
    .into()
}
