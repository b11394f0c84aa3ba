//! The virtual card reader of seed 001 §12: a read waits for the tester to insert a card
//! (magnetic with editable tracks, chip with ATR and scripted APDU answers, or invalid); after
//! eject the card sits in the slot until TakeCard, or NotTakeCard leaves it there and the reader
//! retains it after a configurable timeout; error presets and state editing; a persisted card
//! library (CardInfo) and retain-bin count.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use openteller_proto::device::v1::{
    ApduRule, Capabilities, Card, CardAction, CardActionEvent, CardList, CardReaderEvent,
    CardReaderResult, CardReaderStatus, ChipCard, ChipIoResult, ChipState, DataStatus, DeviceClass,
    DeviceState, DeviceStatus, MagneticCard, MediaStatus, ReadRawData, ReadRawDataResult,
    ResetAction, RetainBinState, RetainBinThreshold, RetainResult, TrackData, card,
    card_reader_command::Command as Idc, card_reader_event::Event as IdcEvent, card_reader_result,
    card_reader_sim_action::Action as SimIdc, command, command_completion, device_event,
    device_status, simulator_reply, simulator_request,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::common::SimCommon;
use super::{Timer, common_action, wrong_class};
use crate::backend::{Backend, CommandContext, Failure, Hub, Outcome};
use crate::codes::{XfsError, generic, idc};
use crate::store::{StateFile, StoreError};

/// Most cards the library holds.
pub const MAX_LIBRARY_CARDS: usize = 500;
/// Default time a card may sit in the slot after NotTakeCard before it is retained.
pub const DEFAULT_RETAIN_TIMEOUT_MS: u32 = 30_000;
const DEFAULT_RETAIN_CAPACITY: u32 = 50;

#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    retain_count: u32,
    retain_capacity: u32,
    retain_timeout_ms: u32,
    cards: Vec<Card>,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            retain_count: 0,
            retain_capacity: DEFAULT_RETAIN_CAPACITY,
            retain_timeout_ms: DEFAULT_RETAIN_TIMEOUT_MS,
            cards: sample_cards(),
        }
    }
}

/// The library a new reader starts with: test cards of the simulated bank host's accounts.
fn sample_cards() -> Vec<Card> {
    let mag = |name: &str, t1: &str, t2: &str| Card {
        name: name.into(),
        kind: Some(card::Kind::Magnetic(MagneticCard {
            track1: t1.into(),
            track2: t2.into(),
            track3: String::new(),
        })),
    };
    vec![
        mag(
            "debit-zhang",
            "B6222020200112233445^ZHANG/SAN^4912101",
            "6222020200112233445=4912101000000000",
        ),
        mag(
            "debit-li",
            "B6222020200198765432^LI/SI^4912101",
            "6222020200198765432=4912101000000000",
        ),
        Card {
            name: "ic-wang".into(),
            kind: Some(card::Kind::Chip(ChipCard {
                atr: vec![
                    0x3B, 0x6E, 0x00, 0x00, 0x80, 0x31, 0x80, 0x66, 0xB0, 0x84, 0x12, 0x01, 0x6E,
                    0x01, 0x83, 0x00, 0x90, 0x00,
                ],
                apdu_rules: vec![ApduRule {
                    // SELECT PPSE
                    command_prefix: vec![0x00, 0xA4, 0x04, 0x00],
                    response: vec![0x6F, 0x00, 0x90, 0x00],
                }],
                stripe: Some(MagneticCard {
                    track1: String::new(),
                    track2: "6222020200155550000=4912201000000000".into(),
                    track3: String::new(),
                }),
            })),
        },
        Card {
            name: "invalid".into(),
            kind: Some(card::Kind::Invalid(Default::default())),
        },
    ]
}

struct State {
    common: SimCommon,
    media: MediaStatus,
    chip: ChipState,
    /// The card in the reader or in the slot.
    card: Option<Card>,
    /// A read waiting for the customer; InsertCard fires it.
    waiting: Option<oneshot::Sender<()>>,
    retain_timer: Option<Timer>,
    persisted: Persisted,
}

/// The virtual card reader.
pub struct VirtualCardReader {
    state: Mutex<State>,
    store: StateFile,
    hub: Arc<Hub>,
    me: Weak<VirtualCardReader>,
}

impl VirtualCardReader {
    /// Opens the reader with its persisted state in `dir`.
    pub fn open(dir: &Path, hub: Arc<Hub>) -> Result<Arc<Self>, StoreError> {
        let store = StateFile::new(dir, "card-reader.json")?;
        let persisted = match store.load()? {
            Some(p) => p,
            None => {
                let p = Persisted::default();
                store.save(&p)?;
                p
            }
        };
        Ok(Arc::new_cyclic(|me| VirtualCardReader {
            state: Mutex::new(State {
                common: SimCommon::new(DeviceClass::CardReader),
                media: MediaStatus::NotPresent,
                chip: ChipState::NoCard,
                card: None,
                waiting: None,
                retain_timer: None,
                persisted,
            }),
            store,
            hub,
            me: me.clone(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, state: &State) -> Result<(), Failure> {
        self.store.save(&state.persisted).map_err(|e| {
            tracing::error!(error = %e, "cannot persist card reader state");
            Failure::xfs(generic::INTERNAL_ERROR, "cannot persist the reader state")
        })
    }

    fn publish_status(&self) {
        self.hub.status(self.status());
    }

    /// Moves the card into the retain bin; the caller publishes status.
    fn retain_locked(&self, state: &mut State) -> Result<u32, Failure> {
        if state.persisted.retain_count >= state.persisted.retain_capacity {
            return Err(Failure::xfs(idc::RETAINBINFULL, "the retain bin is full"));
        }
        let before = retain_bin_state(&state.persisted);
        state.persisted.retain_count += 1;
        state.card = None;
        state.media = MediaStatus::NotPresent;
        state.chip = ChipState::NoCard;
        state.retain_timer = None;
        self.save(state)?;
        let after = retain_bin_state(&state.persisted);
        if after != before {
            self.hub.event(idc_event(IdcEvent::RetainBinThreshold(
                RetainBinThreshold {
                    state: after as i32,
                },
            )));
        }
        Ok(state.persisted.retain_count)
    }

    fn on_retain_timeout(&self) {
        let mut state = self.lock();
        if state.media != MediaStatus::Entering {
            return;
        }
        match self.retain_locked(&mut state) {
            Ok(_) => {
                drop(state);
                tracing::info!("card not taken in time: retained");
                self.hub
                    .event(idc_event(IdcEvent::CardAction(CardActionEvent {
                        action: CardAction::Retained as i32,
                    })));
            }
            Err(f) => {
                // The bin is full: the card stays in the slot, jammed for the customer.
                state.media = MediaStatus::Jammed;
                state.common.state = DeviceState::HardwareError;
                drop(state);
                tracing::warn!(reason = %f.description, "card not taken and cannot be retained");
            }
        }
        self.publish_status();
    }

    async fn read_raw_data(
        &self,
        req: ReadRawData,
        ctx: &CommandContext,
    ) -> Result<Outcome, Failure> {
        if !(req.track1 || req.track2 || req.track3 || req.chip) {
            return Err(Failure::invalid_data(
                "ReadRawData must ask for at least one track or the chip",
            ));
        }
        let wait = {
            let mut state = self.lock();
            match state.media {
                MediaStatus::Present => None,
                MediaStatus::NotPresent => {
                    let (tx, rx) = oneshot::channel();
                    state.waiting = Some(tx);
                    Some(rx)
                }
                MediaStatus::Entering => {
                    return Err(Failure::sequence(
                        "a card is in the slot; it must be taken first",
                    ));
                }
                other => {
                    return Err(Failure::xfs(
                        idc::MEDIAJAM,
                        format!("media is {}", other.as_str_name()),
                    ));
                }
            }
        };
        if let Some(rx) = wait {
            ctx.emit(idc_event(IdcEvent::InsertCard(Default::default())));
            // The sender lives in the state until InsertCard takes it; a cancel drops `rx`,
            // which InsertCard sees as "no read waiting".
            if rx.await.is_err() {
                return Err(Failure::xfs(
                    generic::INTERNAL_ERROR,
                    "the wait for a card was abandoned",
                ));
            }
            ctx.emit(idc_event(IdcEvent::MediaInserted(Default::default())));
        }
        let mut state = self.lock();
        let card = state.card.clone().unwrap_or_default();
        let (stripe, atr) = match &card.kind {
            Some(card::Kind::Magnetic(m)) => (Some(m.clone()), Vec::new()),
            Some(card::Kind::Chip(c)) => (c.stripe.clone(), c.atr.clone()),
            Some(card::Kind::Invalid(_)) | None => (None, Vec::new()),
        };
        let stripe = stripe.unwrap_or_default();
        let track = |wanted: bool, data: &str| {
            wanted.then(|| TrackData {
                status: if data.is_empty() {
                    DataStatus::Missing
                } else {
                    DataStatus::Ok
                } as i32,
                data: data.to_owned(),
            })
        };
        let result = ReadRawDataResult {
            track1: track(req.track1, &stripe.track1),
            track2: track(req.track2, &stripe.track2),
            track3: track(req.track3, &stripe.track3),
            atr: if req.chip { atr.clone() } else { Vec::new() },
        };
        let readable = [&result.track1, &result.track2, &result.track3]
            .iter()
            .any(|t| {
                t.as_ref()
                    .is_some_and(|t| t.status == DataStatus::Ok as i32)
            })
            || !result.atr.is_empty();
        if !readable {
            // Unreadable: the reader hands the card back.
            state.media = MediaStatus::Entering;
            state.chip = ChipState::NoCard;
            drop(state);
            ctx.emit(idc_event(IdcEvent::InvalidMedia(Default::default())));
            return Err(Failure::xfs(
                idc::INVALIDMEDIA,
                "no requested track or chip could be read; card returned",
            ));
        }
        if req.chip && !atr.is_empty() {
            state.chip = ChipState::Online;
        }
        Ok(Outcome::ok(idc_result(
            card_reader_result::Result::ReadRawData(result),
        )))
    }

    fn eject(&self) -> Result<Outcome, Failure> {
        let mut state = self.lock();
        match state.media {
            MediaStatus::Present | MediaStatus::Latched => {
                state.media = MediaStatus::Entering;
                state.chip = ChipState::NoCard;
                Ok(Outcome::done())
            }
            MediaStatus::Entering => Ok(Outcome::done()),
            _ => Err(Failure::xfs(idc::NOMEDIA, "there is no card to eject")),
        }
    }

    fn retain(&self) -> Result<Outcome, Failure> {
        let mut state = self.lock();
        if state.card.is_none() {
            return Err(Failure::xfs(idc::NOMEDIA, "there is no card to retain"));
        }
        let count = self.retain_locked(&mut state)?;
        Ok(Outcome::ok(idc_result(card_reader_result::Result::Retain(
            RetainResult {
                retain_count: count,
            },
        ))))
    }

    fn reset(&self, action: ResetAction) -> Result<Outcome, Failure> {
        let mut state = self.lock();
        state.common.state = DeviceState::Online;
        if state.card.is_some() {
            match action {
                ResetAction::NoAction => {
                    if state.media == MediaStatus::Jammed {
                        state.media = MediaStatus::Present;
                    }
                }
                ResetAction::Eject => {
                    state.media = MediaStatus::Entering;
                    state.chip = ChipState::NoCard;
                }
                ResetAction::Retain | ResetAction::Unspecified => {
                    self.retain_locked(&mut state)?;
                }
            }
        } else {
            state.media = MediaStatus::NotPresent;
        }
        Ok(Outcome::done())
    }

    fn chip_io(&self, apdu: &[u8]) -> Result<Outcome, Failure> {
        if apdu.len() < 4 || apdu.len() > 261 {
            return Err(Failure::xfs(
                idc::INVALIDDATA,
                "a command APDU has 4 to 261 bytes",
            ));
        }
        let state = self.lock();
        let Some(card::Kind::Chip(chip)) = state.card.as_ref().and_then(|c| c.kind.as_ref()) else {
            return Err(Failure::xfs(
                idc::NOMEDIA,
                "there is no chip card in the reader",
            ));
        };
        if state.chip != ChipState::Online {
            return Err(Failure::xfs(
                idc::ATRNOTOBTAINED,
                "the chip is not powered; read it with chip=true first",
            ));
        }
        let response = chip
            .apdu_rules
            .iter()
            .filter(|r| apdu.starts_with(&r.command_prefix))
            .max_by_key(|r| r.command_prefix.len())
            .map_or_else(|| vec![0x6D, 0x00], |r| r.response.clone());
        Ok(Outcome::ok(idc_result(card_reader_result::Result::ChipIo(
            ChipIoResult {
                response_apdu: response,
            },
        ))))
    }

    /// Failure and side effects of an armed error preset.
    fn injected(&self, name: &str, error: XfsError) -> Failure {
        let mut state = self.lock();
        if error == idc::MEDIAJAM || error == generic::HARDWARE_ERROR {
            if error == idc::MEDIAJAM && state.card.is_some() {
                state.media = MediaStatus::Jammed;
            }
            state.common.state = DeviceState::HardwareError;
        }
        if error == idc::MEDIARETAINED && state.card.is_some() {
            let _ = self.retain_locked(&mut state);
        }
        Failure::xfs(error, format!("simulated error on {name}"))
    }

    fn insert_card(&self, library_name: &str, card: Option<Card>) -> Result<(), Failure> {
        let mut state = self.lock();
        let mut chosen = if library_name.is_empty() {
            card.clone()
                .ok_or_else(|| Failure::invalid_data("InsertCard needs a library name or a card"))?
        } else {
            state
                .persisted
                .cards
                .iter()
                .find(|c| c.name == library_name)
                .cloned()
                .ok_or_else(|| {
                    Failure::invalid_data(format!("no card named {library_name:?} in the library"))
                })?
        };
        // Tracks typed in the dialog override the library card's.
        if let (
            Some(base),
            Some(Card {
                kind: Some(kind), ..
            }),
        ) = (chosen.kind.as_mut(), card)
        {
            *base = kind;
        }
        validate_card(&chosen, false)?;
        if chosen.kind.is_none() {
            chosen.kind = Some(card::Kind::Invalid(Default::default()));
        }
        if state.media != MediaStatus::NotPresent {
            return Err(Failure::sequence(
                "a card is already in the reader or the slot",
            ));
        }
        let waiting = state.waiting.take().filter(|tx| !tx.is_closed());
        let Some(tx) = waiting else {
            return Err(Failure::sequence("no read is waiting for a card"));
        };
        state.chip = if matches!(chosen.kind, Some(card::Kind::Chip(_))) {
            ChipState::PoweredOff
        } else {
            ChipState::NoCard
        };
        state.card = Some(chosen);
        state.media = MediaStatus::Present;
        let _ = tx.send(());
        Ok(())
    }

    fn take_card(&self) -> Result<(), Failure> {
        let mut state = self.lock();
        if state.media != MediaStatus::Entering {
            return Err(Failure::sequence("there is no card in the slot to take"));
        }
        state.media = MediaStatus::NotPresent;
        state.card = None;
        state.retain_timer = None;
        drop(state);
        self.hub
            .event(idc_event(IdcEvent::MediaRemoved(Default::default())));
        Ok(())
    }

    fn not_take_card(&self) -> Result<(), Failure> {
        let mut state = self.lock();
        if state.media != MediaStatus::Entering {
            return Err(Failure::sequence("there is no card in the slot"));
        }
        let me = self.me.clone();
        let after = Duration::from_millis(u64::from(state.persisted.retain_timeout_ms));
        state.retain_timer = Some(Timer::start(after, move || {
            if let Some(reader) = me.upgrade() {
                reader.on_retain_timeout();
            }
        }));
        Ok(())
    }

    fn set_media(&self, media: MediaStatus) -> Result<(), Failure> {
        let mut state = self.lock();
        match media {
            MediaStatus::Unspecified => {}
            MediaStatus::NotPresent => {
                state.card = None;
                state.chip = ChipState::NoCard;
                state.retain_timer = None;
                state.media = media;
            }
            MediaStatus::Jammed | MediaStatus::Unknown => state.media = media,
            MediaStatus::Present | MediaStatus::Entering | MediaStatus::Latched => {
                if state.card.is_none() {
                    return Err(Failure::invalid_data(format!(
                        "media cannot be {} without a card; insert one first",
                        media.as_str_name()
                    )));
                }
                state.media = media;
            }
        }
        Ok(())
    }

    fn library(&self, action: SimIdc) -> Result<Option<simulator_reply::Data>, Failure> {
        let mut state = self.lock();
        match action {
            SimIdc::PutCard(put) => {
                let card = put
                    .card
                    .ok_or_else(|| Failure::invalid_data("PutCard needs a card"))?;
                validate_card(&card, true)?;
                let cards = &mut state.persisted.cards;
                match cards.iter().position(|c| c.name == card.name) {
                    Some(i) => cards[i] = card,
                    None if cards.len() >= MAX_LIBRARY_CARDS => {
                        return Err(Failure::invalid_data(format!(
                            "the library holds at most {MAX_LIBRARY_CARDS} cards"
                        )));
                    }
                    None => cards.push(card),
                }
            }
            SimIdc::DeleteCard(del) => {
                let before = state.persisted.cards.len();
                state.persisted.cards.retain(|c| c.name != del.name);
                if state.persisted.cards.len() == before {
                    return Err(Failure::invalid_data(format!(
                        "no card named {:?}",
                        del.name
                    )));
                }
            }
            SimIdc::SetRetainTimeout(t) => {
                if !(100..=600_000).contains(&t.timeout_ms) {
                    return Err(Failure::invalid_data(
                        "the retain timeout must be 100..=600000 ms",
                    ));
                }
                state.persisted.retain_timeout_ms = t.timeout_ms;
            }
            SimIdc::ListCards(_) => {}
            _ => unreachable!("library() is only called with library actions"),
        }
        self.save(&state)?;
        Ok(Some(simulator_reply::Data::Cards(CardList {
            cards: state.persisted.cards.clone(),
        })))
    }
}

fn retain_bin_state(p: &Persisted) -> RetainBinState {
    if p.retain_count >= p.retain_capacity {
        RetainBinState::Full
    } else if p.retain_count * 10 >= p.retain_capacity * 8 {
        RetainBinState::High
    } else {
        RetainBinState::Ok
    }
}

fn idc_event(e: IdcEvent) -> device_event::Event {
    device_event::Event::CardReader(CardReaderEvent { event: Some(e) })
}

fn idc_result(r: card_reader_result::Result) -> command_completion::Result {
    command_completion::Result::CardReader(CardReaderResult { result: Some(r) })
}

/// Checks a card as ISO/IEC 7811 would encode it; nothing is stored when it fails.
pub fn validate_card(card: &Card, needs_name: bool) -> Result<(), Failure> {
    if needs_name || !card.name.is_empty() {
        let ok = (1..=64).contains(&card.name.chars().count())
            && card.name.chars().all(|c| !c.is_control());
        if !ok {
            return Err(Failure::invalid_data(
                "a card name has 1 to 64 printable characters",
            ));
        }
    }
    match &card.kind {
        Some(card::Kind::Magnetic(m)) => validate_stripe(m),
        Some(card::Kind::Chip(c)) => {
            if !(2..=33).contains(&c.atr.len()) {
                return Err(Failure::invalid_data("an ATR has 2 to 33 bytes"));
            }
            if c.apdu_rules.len() > 64 {
                return Err(Failure::invalid_data(
                    "a chip card has at most 64 APDU rules",
                ));
            }
            for r in &c.apdu_rules {
                if r.command_prefix.is_empty()
                    || r.command_prefix.len() > 261
                    || !(2..=258).contains(&r.response.len())
                {
                    return Err(Failure::invalid_data(
                        "an APDU rule has a 1..=261 byte command prefix and a 2..=258 byte response",
                    ));
                }
            }
            c.stripe.as_ref().map_or(Ok(()), validate_stripe)
        }
        Some(card::Kind::Invalid(_)) => Ok(()),
        None if needs_name => Err(Failure::invalid_data(
            "a card must be magnetic, chip or invalid",
        )),
        None => Ok(()),
    }
}

/// Track 1: ISO 7811-2 alphanumeric (0x20–0x5F), at most 76 characters; tracks 2 and 3:
/// digits and the field separator `=`, at most 37 and 104 characters. Sentinels are not part
/// of the data.
fn validate_stripe(m: &MagneticCard) -> Result<(), Failure> {
    let check = |name: &str, data: &str, max: usize, ok: fn(char) -> bool| {
        if data.chars().count() > max {
            return Err(Failure::invalid_data(format!(
                "{name} has more than {max} characters"
            )));
        }
        if let Some(bad) = data.chars().position(|c| !ok(c)) {
            return Err(Failure::invalid_data(format!(
                "{name} has an invalid character at position {}",
                bad + 1
            )));
        }
        Ok(())
    };
    check("track 1", &m.track1, 76, |c| {
        ('\x20'..='\x5f').contains(&c) && c != '%' && c != '?'
    })?;
    check("track 2", &m.track2, 37, |c| c.is_ascii_digit() || c == '=')?;
    check("track 3", &m.track3, 104, |c| {
        c.is_ascii_digit() || c == '='
    })?;
    Ok(())
}

#[async_trait]
impl Backend for VirtualCardReader {
    fn device_class(&self) -> DeviceClass {
        DeviceClass::CardReader
    }

    fn capabilities(&self) -> Capabilities {
        super::capabilities(
            DeviceClass::CardReader,
            "Virtual motorised card reader (magnetic + contact chip)",
            &[
                "InsertCard",
                "TakeCard",
                "NotTakeCard",
                "PutCard",
                "DeleteCard",
                "ListCards",
                "SetRetainTimeout",
            ],
        )
    }

    fn status(&self) -> DeviceStatus {
        let state = self.lock();
        DeviceStatus {
            device_class: DeviceClass::CardReader as i32,
            device: state.common.device_state() as i32,
            queued_commands: 0,
            detail: Some(device_status::Detail::CardReader(CardReaderStatus {
                media: state.media as i32,
                retain_bin: retain_bin_state(&state.persisted) as i32,
                retain_count: state.persisted.retain_count,
                retain_capacity: state.persisted.retain_capacity,
                chip: state.chip as i32,
            })),
        }
    }

    async fn execute(&self, command: command::Command, ctx: &CommandContext) -> Outcome {
        let name = crate::backend::command_name(&command);
        let command::Command::CardReader(openteller_proto::device::v1::CardReaderCommand {
            command: Some(c),
        }) = command
        else {
            return super::not_this_class();
        };
        {
            let mut state = self.lock();
            if let Err(f) = state.common.check_ready(matches!(c, Idc::Reset(_))) {
                return f.into();
            }
            if let Some(error) = state.common.take_error(name) {
                drop(state);
                let f = self.injected(name, error);
                self.publish_status();
                return f.into();
            }
        }
        let outcome = match c {
            Idc::ReadRawData(r) => self.read_raw_data(r, ctx).await,
            Idc::Eject(_) => self.eject(),
            Idc::Retain(_) => self.retain(),
            Idc::Reset(r) => self.reset(r.action()),
            Idc::ChipIo(io) => self.chip_io(&io.command_apdu),
        };
        self.publish_status();
        outcome.into()
    }

    async fn simulate(
        &self,
        action: simulator_request::Action,
    ) -> Result<Option<simulator_reply::Data>, Failure> {
        use simulator_request::Action;
        if let Some(r) = common_action(&mut self.lock().common, &action) {
            return r.map(|()| None);
        }
        match action {
            Action::SetDeviceState(s) => {
                // Validate both parts before changing either.
                let device = s.device();
                if device == DeviceState::PowerOff {
                    return Err(Failure::invalid_data(
                        "use CloseDevice to power the device off",
                    ));
                }
                self.set_media(s.media())?;
                self.lock().common.set_state(device)?;
                Ok(None)
            }
            Action::CardReader(a) => match a.action {
                Some(SimIdc::InsertCard(i)) => {
                    self.insert_card(&i.library_name, i.card).map(|()| None)
                }
                Some(SimIdc::TakeCard(_)) => self.take_card().map(|()| None),
                Some(SimIdc::NotTakeCard(_)) => self.not_take_card().map(|()| None),
                Some(a) => self.library(a),
                None => Err(Failure::invalid_data("the card reader action is empty")),
            },
            _ => Err(wrong_class(DeviceClass::CardReader)),
        }
    }
}
