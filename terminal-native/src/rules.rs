//! The safety gate in front of every device command a page sends (invariants 1 and 3).
//!
//! [`Gate::admit`] decides before anything reaches a device; [`Gate::finish`] sees the
//! completion (and masks card data in it before the page does). The rules:
//!
//! - **Dispense** (CashDispenser `Dispense`) only against an approved authorisation of this
//!   terminal with the same amount and currency that was not dispensed yet; explicit note
//!   `items` are refused (a page does not choose notes). **Present** only for the notes stacked
//!   by a dispense of the authorisation it names. Anything else: `DISPENSE_REFUSED`, journaled
//!   and raised as a fraud alarm.
//! - **Card session**: a `ReadRawData` opens it; a second one while it is open is a
//!   `SEQUENCE_ERROR` (no second transaction while one is open); `Eject`, `Retain` or `Reset` of
//!   the reader ends it. `GetPin` / `GetPinBlock` need an open session and fewer wrong PINs than
//!   `rules.max_pin_attempts` ([`Gate::record_pin_verification`], fed by phase 2's transaction
//!   client, says when the card must be retained).
//! - **Out of service** (paused by the keeper): no new card session.
//! - **Card data**: track data read from a card stays in the host; the page gets the masked PAN
//!   in place of each track.
//!
//! The gate must never let a command through because of a failure of its own: when the state
//! table cannot be saved, the dispense is refused.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use openteller_proto::device::v1::{
    Command, CommandCompletion, CompletionCode, DeviceClass, card_reader_command,
    card_reader_result, cash_dispenser_command, command, command_completion, pin_pad_command,
    receipt_printer_command,
};

use crate::alarms::{Alarm, AlarmSink, Severity};
use crate::config::DeviceSpec;
use crate::journal::{EJournal, mask_track};
use crate::state::{TxnTable, UnitCount};

/// Why the gate refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A dispense or present without a matching authorisation (fraud alarm raised).
    #[error("{0}")]
    DispenseRefused(String),
    /// The command is out of sequence for the customer session.
    #[error("{0}")]
    Sequence(String),
    /// The terminal is out of service.
    #[error("{0}")]
    OutOfService(String),
}

/// What the gate reserved for a command; hand it back through [`Gate::finish`]. Dropped
/// unfinished (the page went away, the proxy died), it releases what it reserved — except a
/// claimed authorisation, which stays consumed.
#[derive(Debug)]
pub struct Admitted {
    kind: Kind,
    device: String,
    command: &'static str,
    request_id: String,
    session: Arc<Mutex<Session>>,
    in_flight: Arc<AtomicUsize>,
    finished: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Plain,
    CardRead,
    CardEnd,
    Dispense(String),
    Present(String),
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished && self.kind == Kind::CardRead {
            let mut s = lock(&self.session);
            if s.card == CardState::Reading {
                s.card = CardState::Idle;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CardState {
    Idle,
    Reading,
    CardIn,
}

/// Card data kept in the host for the transaction client; never printed.
struct CardData {
    track2: String,
    masked_pan: Option<String>,
}

impl std::fmt::Debug for CardData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardData")
            .field("masked_pan", &self.masked_pan)
            .finish_non_exhaustive()
    }
}

struct Session {
    card: CardState,
    data: Option<CardData>,
    wrong_pins: u32,
    /// PIN change: the EPP's PIN blocks (ISO-0 under the TPK) of the current and the new PIN.
    pin_change: [Option<Vec<u8>>; 2],
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("card", &self.card)
            .field("data", &self.data)
            .field("wrong_pins", &self.wrong_pins)
            .finish_non_exhaustive()
    }
}

impl Session {
    fn end(&mut self) {
        self.card = CardState::Idle;
        self.data = None;
        self.wrong_pins = 0;
        self.pin_change = [None, None];
    }
}

/// A step of a PIN change ([`Gate::pin_change_block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinChangeStep {
    /// The current PIN.
    Current,
    /// The new PIN.
    New,
}

fn lock(s: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// What to do after the host verified a PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinVerdict {
    /// Correct; the wrong-PIN count starts again.
    Verified,
    /// Wrong; this many tries are left.
    TryAgain(u32),
    /// Wrong too often: retain the card.
    RetainCard,
}

/// A snapshot of the customer session, for `terminal.status` and the keeper's idle flag.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// `idle`, `reading` or `card_in`.
    pub card: &'static str,
    /// The masked PAN of the card inside.
    pub masked_pan: Option<String>,
    /// Wrong PINs in this session.
    pub wrong_pins: u32,
    /// Device commands running for pages.
    pub commands_in_flight: usize,
}

/// The gate; one per terminal, shared by every bridge.
pub struct Gate {
    table: Arc<TxnTable>,
    journal: EJournal,
    alarms: Vec<Arc<dyn AlarmSink>>,
    session: Arc<Mutex<Session>>,
    max_pin_attempts: u32,
    paused: AtomicBool,
    in_flight: Arc<AtomicUsize>,
    settle: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// `Class.Command` of a command, e.g. `CardReader.ReadRawData`; `None` when a oneof is empty.
pub fn command_name(c: &Command) -> Option<&'static str> {
    use card_reader_command::Command as Idc;
    use cash_dispenser_command::Command as Cdm;
    use pin_pad_command::Command as Pin;
    use receipt_printer_command::Command as Ptr;
    Some(match c.command.as_ref()? {
        command::Command::CardReader(c) => match c.command.as_ref()? {
            Idc::ReadRawData(_) => "CardReader.ReadRawData",
            Idc::Eject(_) => "CardReader.Eject",
            Idc::Retain(_) => "CardReader.Retain",
            Idc::Reset(_) => "CardReader.Reset",
            Idc::ChipIo(_) => "CardReader.ChipIo",
        },
        command::Command::PinPad(c) => match c.command.as_ref()? {
            Pin::GetKeyDetail(_) => "PinPad.GetKeyDetail",
            Pin::ImportKeyComponents(_) => "PinPad.ImportKeyComponents",
            Pin::ImportKey(_) => "PinPad.ImportKey",
            Pin::DeleteKey(_) => "PinPad.DeleteKey",
            Pin::GetPin(_) => "PinPad.GetPin",
            Pin::GetData(_) => "PinPad.GetData",
            Pin::GetPinBlock(_) => "PinPad.GetPinBlock",
            Pin::GenerateMac(_) => "PinPad.GenerateMac",
            Pin::Reset(_) => "PinPad.Reset",
        },
        command::Command::CashDispenser(c) => match c.command.as_ref()? {
            Cdm::Denominate(_) => "CashDispenser.Denominate",
            Cdm::Dispense(_) => "CashDispenser.Dispense",
            Cdm::Present(_) => "CashDispenser.Present",
            Cdm::Retract(_) => "CashDispenser.Retract",
            Cdm::Reject(_) => "CashDispenser.Reject",
            Cdm::Reset(_) => "CashDispenser.Reset",
        },
        command::Command::ReceiptPrinter(c) => match c.command.as_ref()? {
            Ptr::PrintText(_) => "ReceiptPrinter.PrintText",
            Ptr::PrintForm(_) => "ReceiptPrinter.PrintForm",
            Ptr::Reset(_) => "ReceiptPrinter.Reset",
        },
    })
}

/// The class a command is for.
pub fn command_class(c: &Command) -> Option<DeviceClass> {
    Some(match c.command.as_ref()? {
        command::Command::CardReader(_) => DeviceClass::CardReader,
        command::Command::PinPad(_) => DeviceClass::PinPad,
        command::Command::CashDispenser(_) => DeviceClass::CashDispenser,
        command::Command::ReceiptPrinter(_) => DeviceClass::ReceiptPrinter,
    })
}

/// `SUCCESS`, or `COMMAND_ERROR -306 NOTDISPENSABLE`: the completion as the journal shows it.
pub fn completion_text(c: &CommandCompletion) -> String {
    let Some(done) = c.completion.as_ref() else {
        return "NO_COMPLETION".into();
    };
    let code = CompletionCode::try_from(done.code)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("COMPLETION_CODE_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("CODE_{}", done.code));
    if done.error_code != 0 {
        format!("{code} {} {}", done.error_code, done.error_name)
    } else {
        code
    }
}

/// A card reader command that failed with MEDIAJAM (−200).
fn jammed(c: &CommandCompletion) -> bool {
    c.completion.as_ref().is_some_and(|d| d.error_code == -200)
}

fn succeeded(c: &CommandCompletion) -> bool {
    c.completion
        .as_ref()
        .is_some_and(|d| d.code == CompletionCode::Success as i32)
}

impl Gate {
    /// A gate over `table`, journaling to `journal`, alarming to `alarms`.
    pub fn new(
        table: Arc<TxnTable>,
        journal: EJournal,
        alarms: Vec<Arc<dyn AlarmSink>>,
        max_pin_attempts: u32,
    ) -> Gate {
        Gate {
            table,
            journal,
            alarms,
            session: Arc::new(Mutex::new(Session {
                card: CardState::Idle,
                data: None,
                wrong_pins: 0,
                pin_change: [None, None],
            })),
            max_pin_attempts,
            paused: AtomicBool::new(false),
            in_flight: Arc::new(AtomicUsize::new(0)),
            settle: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The transaction-state table.
    pub fn table(&self) -> &Arc<TxnTable> {
        &self.table
    }

    /// The electronic journal.
    pub fn journal(&self) -> &EJournal {
        &self.journal
    }

    /// Out of service (keeper pause) or back.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// True while the keeper has the service paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// No customer session open and no command running: host commands may run.
    pub fn idle(&self) -> bool {
        lock(&self.session).card == CardState::Idle && self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// The session as `terminal.status` shows it.
    pub fn session(&self) -> SessionView {
        let s = lock(&self.session);
        SessionView {
            card: match s.card {
                CardState::Idle => "idle",
                CardState::Reading => "reading",
                CardState::CardIn => "card_in",
            },
            masked_pan: s.data.as_ref().and_then(|d| d.masked_pan.clone()),
            wrong_pins: s.wrong_pins,
            commands_in_flight: self.in_flight.load(Ordering::SeqCst),
        }
    }

    /// Track 2 of the card inside, for the transaction client (phase 2) to put into the
    /// authorisation request — the only way card data leaves the host.
    pub fn track2_for_host(&self) -> Option<String> {
        lock(&self.session)
            .data
            .as_ref()
            .map(|d| d.track2.clone())
            .filter(|t| !t.is_empty())
    }

    /// Records the host's PIN verification for the open session.
    pub fn record_pin_verification(&self, ok: bool) -> PinVerdict {
        let mut s = lock(&self.session);
        if ok {
            s.wrong_pins = 0;
            return PinVerdict::Verified;
        }
        s.wrong_pins += 1;
        if s.wrong_pins >= self.max_pin_attempts {
            PinVerdict::RetainCard
        } else {
            PinVerdict::TryAgain(self.max_pin_attempts - s.wrong_pins)
        }
    }

    /// The host says the PIN tries are exhausted (F39 75) whatever this terminal counted: the
    /// count goes to the limit and the card must be retained.
    pub fn record_pin_tries_exceeded(&self) -> PinVerdict {
        let mut s = lock(&self.session);
        s.wrong_pins = s.wrong_pins.max(self.max_pin_attempts);
        PinVerdict::RetainCard
    }

    /// The configured limit of wrong PINs.
    pub fn max_pin_attempts(&self) -> u32 {
        self.max_pin_attempts
    }

    /// Keeps a PIN block of a PIN change for the open session (replacing that step's; a new
    /// current PIN forgets the new one).
    pub fn set_pin_change_block(&self, step: PinChangeStep, block: Vec<u8>) {
        let mut s = lock(&self.session);
        match step {
            PinChangeStep::Current => s.pin_change = [Some(block), None],
            PinChangeStep::New => s.pin_change[1] = Some(block),
        }
    }

    /// The PIN block kept for `step`, if any.
    pub fn pin_change_block(&self, step: PinChangeStep) -> Option<Vec<u8>> {
        let s = lock(&self.session);
        s.pin_change[match step {
            PinChangeStep::Current => 0,
            PinChangeStep::New => 1,
        }]
        .clone()
    }

    /// Forgets the PIN change's blocks from `step` on.
    pub fn clear_pin_change(&self, from: PinChangeStep) {
        let mut s = lock(&self.session);
        if from == PinChangeStep::Current {
            s.pin_change[0] = None;
        }
        s.pin_change[1] = None;
    }

    /// Woken when a dispense or present ended other than as planned (failed, notes not
    /// taken, no completion): the settler must look at the dispenser and reverse.
    pub fn settle_signal(&self) -> Arc<tokio::sync::Notify> {
        self.settle.clone()
    }

    /// Raises a critical alarm to every sink.
    pub fn alarm(&self, kind: &'static str, source: &str, message: String) {
        self.raise(kind, source, message);
    }

    fn raise(&self, kind: &'static str, source: &str, message: String) {
        let alarm = Alarm {
            at_ms: openteller_keeper::unix_ms(),
            severity: Severity::Critical,
            kind,
            source: source.to_owned(),
            message,
        };
        for sink in &self.alarms {
            sink.deliver(&alarm);
        }
    }

    async fn refuse_dispense(
        &self,
        device: &str,
        name: &str,
        request_id: &str,
        what: String,
    ) -> RuleError {
        let line = format!("{device} {name} {request_id} REFUSED {what}");
        // Refused whether or not the journal could be written; the alarm says so too.
        let journaled = self.journal.write(&line).await;
        let mut message = format!("{name} refused on {device}: {what}");
        if let Err(e) = journaled {
            message.push_str(&format!(" (NOT JOURNALED: {e})"));
        }
        self.raise("fraud_attempt", device, message.clone());
        RuleError::DispenseRefused(message)
    }

    /// The extra rule for commands that come from a page rather than from the host itself:
    /// while a withdrawal's notes are stacked or presented and not yet settled, only the host's
    /// settler may clear the dispenser's output (`Retract`, `Reject`, `Reset`). It works out
    /// what the customer got from the notes it finds at the output, so a page clearing them
    /// first would make retracted notes look taken and skip the reversal.
    pub async fn check_page_command(&self, command_name: &str) -> Result<(), RuleError> {
        if !matches!(
            command_name,
            "CashDispenser.Retract" | "CashDispenser.Reject" | "CashDispenser.Reset"
        ) {
            return Ok(());
        }
        match self.table.unsettled_withdrawal().await {
            Some(a) => Err(RuleError::Sequence(format!(
                "{command_name} is the host's while withdrawal {} is not settled",
                a.reference
            ))),
            None => Ok(()),
        }
    }

    /// Decides whether `command` (already checked to be of `device`'s class and complete) may
    /// go to the device. `authorization` is the page's `authorization` parameter.
    pub async fn admit(
        &self,
        device: &DeviceSpec,
        command: &Command,
        authorization: Option<&str>,
    ) -> Result<Admitted, RuleError> {
        self.admit_counted(device, command, authorization, None)
            .await
    }

    /// [`Gate::admit`] with the dispenser's cash unit counters read just before (recorded with
    /// a dispense's claim, for crash recovery).
    pub async fn admit_counted(
        &self,
        device: &DeviceSpec,
        command: &Command,
        authorization: Option<&str>,
        counters: Option<Vec<UnitCount>>,
    ) -> Result<Admitted, RuleError> {
        use card_reader_command::Command as Idc;
        use cash_dispenser_command::Command as Cdm;
        use pin_pad_command::Command as Pin;
        let name = command_name(command).unwrap_or("?");
        let rid = command.request_id.as_str();
        let mut kind = Kind::Plain;
        match command.command.as_ref() {
            Some(command::Command::CardReader(c)) => match c.command.as_ref() {
                Some(Idc::ReadRawData(_)) => {
                    if self.paused() {
                        return Err(RuleError::OutOfService(
                            "the terminal is out of service".into(),
                        ));
                    }
                    let mut s = lock(&self.session);
                    if s.card != CardState::Idle {
                        return Err(RuleError::Sequence(
                            "a card session is open already: eject or retain the card first".into(),
                        ));
                    }
                    s.card = CardState::Reading;
                    kind = Kind::CardRead;
                }
                Some(Idc::Eject(_) | Idc::Retain(_) | Idc::Reset(_)) => kind = Kind::CardEnd,
                _ => {}
            },
            Some(command::Command::PinPad(c)) => {
                if let Some(Pin::GetPin(_) | Pin::GetPinBlock(_)) = c.command.as_ref() {
                    let s = lock(&self.session);
                    if s.card != CardState::CardIn {
                        return Err(RuleError::Sequence(format!(
                            "{name} needs a card in the reader"
                        )));
                    }
                    if s.wrong_pins >= self.max_pin_attempts {
                        return Err(RuleError::Sequence(format!(
                            "{} wrong PINs: the card must be retained",
                            s.wrong_pins
                        )));
                    }
                }
            }
            Some(command::Command::CashDispenser(c)) => match c.command.as_ref() {
                Some(Cdm::Dispense(d)) => {
                    let Some(reference) = authorization else {
                        return Err(self
                            .refuse_dispense(
                                &device.name,
                                name,
                                rid,
                                format!(
                                    "amount={} {} without an authorisation",
                                    d.amount, d.currency
                                ),
                            )
                            .await);
                    };
                    if !d.items.is_empty() {
                        return Err(self
                            .refuse_dispense(
                                &device.name,
                                name,
                                rid,
                                format!("ref={reference} with explicit note items"),
                            )
                            .await);
                    }
                    if let Err(r) = self
                        .table
                        .claim_dispense_counted(
                            reference,
                            d.amount,
                            &d.currency,
                            d.present,
                            counters,
                        )
                        .await
                    {
                        return Err(self
                            .refuse_dispense(
                                &device.name,
                                name,
                                rid,
                                format!("ref={reference} amount={} {}: {r}", d.amount, d.currency),
                            )
                            .await);
                    }
                    self.journal
                        .note(format!(
                            "{} {name} {rid} SENT ref={reference} amount={} {}",
                            device.name, d.amount, d.currency
                        ))
                        .await;
                    kind = Kind::Dispense(reference.to_owned());
                }
                Some(Cdm::Present(_)) => {
                    let refusal = match authorization {
                        None => Some("without an authorisation".to_owned()),
                        Some(reference) => match self.table.claim_present(reference).await {
                            Ok(()) => None,
                            Err(r) => Some(format!("ref={reference}: {r}")),
                        },
                    };
                    if let Some(what) = refusal {
                        return Err(self.refuse_dispense(&device.name, name, rid, what).await);
                    }
                    let reference = authorization.unwrap_or_default().to_owned();
                    self.journal
                        .note(format!("{} {name} {rid} SENT ref={reference}", device.name))
                        .await;
                    kind = Kind::Present(reference);
                }
                _ => {}
            },
            _ => {}
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(Admitted {
            kind,
            device: device.name.clone(),
            command: name,
            request_id: rid.to_owned(),
            session: self.session.clone(),
            in_flight: self.in_flight.clone(),
            finished: false,
        })
    }

    /// Takes the completion of an admitted command: updates the session, journals the step,
    /// records dispense outcomes, and masks card data in `completion` before the page sees it.
    pub async fn finish(&self, mut admitted: Admitted, completion: &mut CommandCompletion) {
        admitted.finished = true;
        let ok = succeeded(completion);
        let outcome = completion_text(completion);
        let mut detail = String::new();
        match &admitted.kind {
            Kind::CardRead => {
                let mut s = lock(&self.session);
                if ok {
                    let data = take_card_data(completion);
                    if let Some(pan) = data.masked_pan.as_ref() {
                        detail = format!(" card={pan}");
                    }
                    s.card = CardState::CardIn;
                    s.data = Some(data);
                    s.wrong_pins = 0;
                } else {
                    s.card = CardState::Idle;
                }
            }
            Kind::CardEnd if ok => lock(&self.session).end(),
            Kind::CardEnd if jammed(completion) => {
                // The card is stuck: the session cannot go on; the reader's hardware error
                // takes the terminal out of service until the self-check's Reset clears it.
                lock(&self.session).end();
                detail = " CARD JAMMED: session ended, reader out of service".into();
                self.raise(
                    "card_jam",
                    &admitted.device,
                    format!(
                        "{} {} jammed the card ({outcome})",
                        admitted.device, admitted.command
                    ),
                );
            }
            Kind::Dispense(reference) | Kind::Present(reference) => {
                detail = format!(" ref={reference}");
                if let Some(command_completion::Result::CashDispenser(r)) = &completion.result {
                    detail.push_str(&format!(" result={}", serde_json::json!(r)));
                }
                // The journal line first: after a crash right after the outcome is saved,
                // the journal already shows how the command ended.
                self.journal
                    .note(format!(
                        "{} {} {} {outcome}{detail}",
                        admitted.device, admitted.command, admitted.request_id
                    ))
                    .await;
                if let Err(e) = self.table.record_outcome(reference, &outcome).await {
                    tracing::error!(error = %e, "cannot record the dispense outcome");
                }
                if !ok {
                    self.settle.notify_one();
                }
                return;
            }
            _ => {}
        }
        self.journal
            .note(format!(
                "{} {} {} {outcome}{detail}",
                admitted.device, admitted.command, admitted.request_id
            ))
            .await;
    }

    /// The command's stream broke before its completion (proxy gone): journal it and release.
    pub async fn abandon(&self, admitted: Admitted, reason: &str) {
        let detail = match &admitted.kind {
            Kind::Dispense(r) | Kind::Present(r) => format!(" ref={r}"),
            _ => String::new(),
        };
        self.journal
            .note(format!(
                "{} {} {} NO COMPLETION ({reason}){detail}",
                admitted.device, admitted.command, admitted.request_id
            ))
            .await;
        if let Kind::Dispense(r) | Kind::Present(r) = &admitted.kind {
            let outcome = format!("unknown: {reason}");
            if let Err(e) = self.table.record_outcome(r, &outcome).await {
                tracing::error!(error = %e, "cannot record the dispense outcome");
            }
            self.settle.notify_one();
        }
        drop(admitted);
    }
}

/// Takes the tracks out of a ReadRawData result, leaving the masked PAN (or nothing) in their
/// place.
fn take_card_data(completion: &mut CommandCompletion) -> CardData {
    let mut data = CardData {
        track2: String::new(),
        masked_pan: None,
    };
    let Some(command_completion::Result::CardReader(r)) = completion.result.as_mut() else {
        return data;
    };
    let Some(card_reader_result::Result::ReadRawData(raw)) = r.result.as_mut() else {
        return data;
    };
    for (i, track) in [&mut raw.track1, &mut raw.track2, &mut raw.track3]
        .into_iter()
        .enumerate()
    {
        let Some(t) = track.as_mut() else { continue };
        let masked = mask_track(&t.data);
        if i == 1 {
            data.track2 = std::mem::take(&mut t.data);
        }
        if data.masked_pan.is_none() {
            data.masked_pan = masked.clone();
        }
        t.data = masked.unwrap_or_default();
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(dir: &std::path::Path, max: u32) -> Gate {
        let table = Arc::new(TxnTable::load(&dir.join("st"), "T1").unwrap());
        let journal = EJournal::open(&dir.join("ej"), "T1").unwrap();
        Gate::new(table, journal, Vec::new(), max)
    }

    #[test]
    fn wrong_pins_lead_to_retention() {
        let dir = tempfile::tempdir().unwrap();
        let g = gate(dir.path(), 3);
        assert_eq!(g.record_pin_verification(false), PinVerdict::TryAgain(2));
        assert_eq!(g.record_pin_verification(true), PinVerdict::Verified);
        assert_eq!(g.record_pin_verification(false), PinVerdict::TryAgain(2));
        assert_eq!(g.record_pin_verification(false), PinVerdict::TryAgain(1));
        assert_eq!(g.record_pin_verification(false), PinVerdict::RetainCard);
    }

    #[test]
    fn card_data_is_taken_out_of_the_result() {
        use openteller_proto::device::v1::{
            CardReaderResult, Completion, ReadRawDataResult, TrackData,
        };
        let track = |d: &str| {
            Some(TrackData {
                status: 1,
                data: d.into(),
            })
        };
        let mut c = CommandCompletion {
            completion: Some(Completion {
                code: CompletionCode::Success as i32,
                ..Default::default()
            }),
            result: Some(command_completion::Result::CardReader(CardReaderResult {
                result: Some(card_reader_result::Result::ReadRawData(ReadRawDataResult {
                    track1: None,
                    track2: track("6225880123451234=2512101"),
                    track3: track("0099887766"),
                    atr: Vec::new(),
                })),
            })),
        };
        let data = take_card_data(&mut c);
        assert_eq!(data.track2, "6225880123451234=2512101");
        assert_eq!(data.masked_pan.as_deref(), Some("622588******1234"));
        let shown = serde_json::to_string(&c).unwrap();
        assert!(shown.contains("622588******1234"));
        assert!(
            !shown.contains("2512101") && !shown.contains("0099887766"),
            "{shown}"
        );
        assert!(!format!("{data:?}").contains("2512101"));
    }
}
