//! The virtual encrypting PIN pad (EPP): key table with KCVs, clear-component and encrypted key
//! loading, PIN entry with masked key events, ISO 9564 PIN blocks (formats 0, 1, 3 under 3DES and
//! the 16-byte SM4 variant) and MACs.
//!
//! A clear PIN never leaves this module: key events carry `*`, results carry only the digit
//! count, the PIN buffer is zeroized, and only an encrypted PIN block goes out. Key material
//! is persisted in the state file (mode 0600) because a virtual EPP has no secure memory; it is
//! never returned by any command (only name, usage, algorithm and KCV).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use openteller_crypto::{self as crypto, Algorithm, CryptoError, Key, zeroize::Zeroizing};
use openteller_proto::device::v1::{
    Capabilities, DeviceClass, DeviceStatus, EncryptionState, EntryCompletion, EntryStarted,
    GetDataResult, GetPinResult, KeyAlgorithm, KeyDetail, KeyInfo, KeyPressed, KeyUsage,
    MacAlgorithm, MacResult, PinBlockFormat, PinBlockResult, PinPadEvent, PinPadResult,
    PinPadStatus, command, command_completion, device_event, device_status,
    pin_pad_command::Command as Pin, pin_pad_event::Event as PinEvent, pin_pad_result,
    pin_pad_sim_action::Action as SimPin, simulator_reply, simulator_request,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::common::SimCommon;
use super::{common_action, wrong_class};
use crate::backend::{Backend, CommandContext, Failure, Hub, Outcome};
use crate::codes::{generic, pin};
use crate::store::{StateFile, StoreError};

/// Most keys the table holds.
pub const MAX_KEYS: usize = 64;
/// The keys of the pad as named in key events and PressKeys.
pub const FUNCTION_KEYS: [&str; 4] = ["ENTER", "CANCEL", "CLEAR", "BACKSPACE"];

#[derive(Serialize, Deserialize)]
struct StoredKey {
    name: String,
    usage: String,
    algorithm: String,
    /// Hex key value. Zeroized when the table entry is dropped.
    value: String,
    kcv: String,
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        use openteller_crypto::zeroize::Zeroize;
        self.value.zeroize();
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Persisted {
    keys: Vec<StoredKey>,
}

/// Key presses from the simulator; `done` fires once the EPP has applied them.
struct KeyBatch {
    keys: Vec<String>,
    done: oneshot::Sender<()>,
}

struct Entry {
    keys: mpsc::UnboundedSender<KeyBatch>,
}

struct State {
    common: SimCommon,
    persisted: Persisted,
    entry: Option<Entry>,
    /// The last PIN entered, kept for GetPinBlock until the next entry or reset.
    pin: Zeroizing<String>,
    digits_entered: u32,
}

/// The virtual EPP.
pub struct VirtualPinPad {
    state: Mutex<State>,
    store: StateFile,
    hub: Arc<Hub>,
}

impl VirtualPinPad {
    /// Opens the EPP with its key table in `dir`.
    pub fn open(dir: &Path, hub: Arc<Hub>) -> Result<Arc<Self>, StoreError> {
        let store = StateFile::new(dir, "pin-pad.json")?;
        let persisted = store.load()?.unwrap_or_default();
        Ok(Arc::new(VirtualPinPad {
            state: Mutex::new(State {
                common: SimCommon::new(DeviceClass::PinPad),
                persisted,
                entry: None,
                pin: Zeroizing::new(String::new()),
                digits_entered: 0,
            }),
            store,
            hub,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, state: &State) -> Result<(), Failure> {
        self.store.save(&state.persisted).map_err(|e| {
            tracing::error!(error = %e, "cannot persist the key table");
            Failure::xfs(generic::INTERNAL_ERROR, "cannot persist the key table")
        })
    }

    fn key(&self, state: &State, name: &str, usage: KeyUsage) -> Result<Key, Failure> {
        let stored = state
            .persisted
            .keys
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| Failure::xfs(pin::KEYNOTFOUND, format!("no key named {name:?}")))?;
        if stored.usage != usage.as_str_name() {
            return Err(Failure::xfs(
                pin::USEVIOLATION,
                format!(
                    "key {name:?} is a {} key, not {}",
                    stored.usage,
                    usage.as_str_name()
                ),
            ));
        }
        let algorithm = match stored.algorithm.as_str() {
            "KEY_ALGORITHM_SM4" => Algorithm::Sm4,
            _ => Algorithm::Tdes,
        };
        let bytes = Zeroizing::new(hex::decode(stored.value.as_str()).map_err(|_| {
            Failure::xfs(
                generic::INTERNAL_ERROR,
                format!("key {name:?} is corrupt in the state file"),
            )
        })?);
        Key::new(algorithm, &bytes).map_err(|e| crypto_failure(&e))
    }

    fn store_key(
        &self,
        name: &str,
        usage: KeyUsage,
        algorithm: KeyAlgorithm,
        value: &[u8],
        expected_kcv: &str,
    ) -> Result<Outcome, Failure> {
        validate_key_name(name)?;
        if usage == KeyUsage::Unspecified {
            return Err(Failure::xfs(pin::INVALIDDATA, "the key usage is required"));
        }
        let alg = to_algorithm(algorithm)?;
        let key = Key::new(alg, value).map_err(|e| crypto_failure(&e))?;
        if value.len() == 8 {
            return Err(Failure::xfs(
                pin::INVALIDKEYLENGTH,
                "single-length DES keys are not accepted",
            ));
        }
        let kcv = crypto::kcv_hex(&key);
        if !expected_kcv.is_empty() && !expected_kcv.eq_ignore_ascii_case(&kcv) {
            return Err(Failure::xfs(
                pin::KEYINVALID,
                format!("key check value {kcv} does not match {expected_kcv}"),
            ));
        }
        let mut state = self.lock();
        let stored = StoredKey {
            name: name.to_owned(),
            usage: usage.as_str_name().to_owned(),
            algorithm: algorithm.as_str_name().to_owned(),
            value: hex::encode_upper(value),
            kcv: kcv.clone(),
        };
        let keys = &mut state.persisted.keys;
        match keys.iter().position(|k| k.name == name) {
            Some(i) => keys[i] = stored,
            None if keys.len() >= MAX_KEYS => {
                return Err(Failure::xfs(
                    pin::INVALIDDATA,
                    format!("the key table holds at most {MAX_KEYS} keys"),
                ));
            }
            None => keys.push(stored),
        }
        self.save(&state)?;
        tracing::info!(key = name, usage = usage.as_str_name(), kcv, "key loaded");
        let info = KeyInfo {
            name: name.into(),
            usage: usage as i32,
            algorithm: algorithm as i32,
            kcv,
            length: value.len() as u32,
        };
        Ok(Outcome::ok(pin_result(pin_pad_result::Result::Key(info))))
    }

    /// Runs a PIN (`secure`) or data entry until ENTER, auto-end or CANCEL.
    async fn entry(
        &self,
        secure: bool,
        min: usize,
        max: usize,
        auto_end: bool,
        ctx: &CommandContext,
    ) -> Result<
        (
            Zeroizing<String>,
            EntryCompletion,
            Option<oneshot::Sender<()>>,
        ),
        Failure,
    > {
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let mut state = self.lock();
            state.entry = Some(Entry { keys: tx });
            state.pin = Zeroizing::new(String::new());
            state.digits_entered = 0;
        }
        // Ends the entry in the state however this future ends (completion, cancel, timeout).
        struct EndEntry<'a>(&'a VirtualPinPad);
        impl Drop for EndEntry<'_> {
            fn drop(&mut self) {
                self.0.lock().entry = None;
                self.0.hub.status(self.0.status());
            }
        }
        let _end = EndEntry(self);
        self.hub.status(self.status());
        ctx.emit(pin_event(PinEvent::EntryStarted(EntryStarted {
            pin: secure,
        })));
        let mut buffer = Zeroizing::new(String::with_capacity(max));
        // The batch being applied; acknowledged when the next one arrives or the entry ends.
        let mut ack: Option<oneshot::Sender<()>> = None;
        let completion = 'entry: loop {
            let Some(batch) = rx.recv().await else {
                return Err(Failure::xfs(
                    generic::INTERNAL_ERROR,
                    "the keyboard went away",
                ));
            };
            if let Some(previous) = ack.replace(batch.done) {
                let _ = previous.send(());
            }
            for key in batch.keys {
                let reported = match key.as_str() {
                    "ENTER" if buffer.len() >= min => break 'entry EntryCompletion::Enter,
                    // Too few digits: the pad ignores ENTER, as real EPPs do (they beep).
                    "ENTER" => continue,
                    "CANCEL" => {
                        buffer.clear();
                        break 'entry EntryCompletion::Cancel;
                    }
                    "CLEAR" => {
                        buffer.clear();
                        "CLEAR".to_owned()
                    }
                    "BACKSPACE" => {
                        buffer.pop();
                        "BACKSPACE".to_owned()
                    }
                    digit if buffer.len() < max => {
                        buffer.push_str(digit);
                        if secure {
                            "*".to_owned()
                        } else {
                            digit.to_owned()
                        }
                    }
                    // Digits beyond the maximum are ignored.
                    _ => continue,
                };
                let digits = buffer.len() as u32;
                self.lock().digits_entered = digits;
                ctx.emit(pin_event(PinEvent::KeyPressed(KeyPressed {
                    key: reported,
                    digits_entered: digits,
                })));
                if auto_end && buffer.len() == max {
                    break 'entry EntryCompletion::Auto;
                }
            }
            self.hub.status(self.status());
        };
        // Keys after the one that ended the entry go nowhere, as on a real pad.
        drop(_end);
        Ok((buffer, completion, ack))
    }

    async fn run(&self, c: Pin, ctx: &CommandContext) -> Result<Outcome, Failure> {
        match c {
            Pin::GetKeyDetail(_) => {
                let state = self.lock();
                let keys = state
                    .persisted
                    .keys
                    .iter()
                    .map(|k| KeyInfo {
                        name: k.name.clone(),
                        usage: KeyUsage::from_str_name(&k.usage).unwrap_or_default() as i32,
                        algorithm: KeyAlgorithm::from_str_name(&k.algorithm).unwrap_or_default()
                            as i32,
                        kcv: k.kcv.clone(),
                        length: (k.value.len() / 2) as u32,
                    })
                    .collect();
                Ok(Outcome::ok(pin_result(pin_pad_result::Result::KeyDetail(
                    KeyDetail { keys },
                ))))
            }
            Pin::ImportKeyComponents(req) => {
                let parts: Vec<&[u8]> = req.components.iter().map(Vec::as_slice).collect();
                let combined =
                    crypto::combine_components(&parts).map_err(|e| crypto_failure(&e))?;
                self.store_key(
                    &req.name,
                    req.usage(),
                    req.algorithm(),
                    &combined,
                    &req.expected_kcv,
                )
            }
            Pin::ImportKey(req) => {
                let kek = {
                    let state = self.lock();
                    self.key(&state, &req.kek_name, KeyUsage::KeyEncryption)?
                };
                let clear = Zeroizing::new(
                    crypto::ecb_decrypt(&kek, &req.encrypted_key)
                        .map_err(|e| crypto_failure(&e))?,
                );
                self.store_key(
                    &req.name,
                    req.usage(),
                    req.algorithm(),
                    &clear,
                    &req.expected_kcv,
                )
            }
            Pin::DeleteKey(req) => {
                let mut state = self.lock();
                let before = state.persisted.keys.len();
                state.persisted.keys.retain(|k| k.name != req.name);
                if state.persisted.keys.len() == before {
                    return Err(Failure::xfs(
                        pin::KEYNOTFOUND,
                        format!("no key named {:?}", req.name),
                    ));
                }
                self.save(&state)?;
                Ok(Outcome::done())
            }
            Pin::GetPin(req) => {
                let (min, max) = entry_bounds(req.min_length, req.max_length, 4, 12)?;
                let (pin, completion, ack) = self.entry(true, min, max, req.auto_end, ctx).await?;
                let digits = pin.len() as u32;
                let mut state = self.lock();
                state.pin = if completion == EntryCompletion::Cancel {
                    Zeroizing::new(String::new())
                } else {
                    pin
                };
                state.digits_entered = state.pin.len() as u32;
                drop(state);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                Ok(Outcome::ok(pin_result(pin_pad_result::Result::GetPin(
                    GetPinResult {
                        digits,
                        completion: completion as i32,
                    },
                ))))
            }
            Pin::GetData(req) => {
                let (_, max) = entry_bounds(0, req.max_length, 0, 32)?;
                let (data, completion, ack) = self.entry(false, 0, max, req.auto_end, ctx).await?;
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                Ok(Outcome::ok(pin_result(pin_pad_result::Result::GetData(
                    GetDataResult {
                        data: data.to_string(),
                        completion: completion as i32,
                    },
                ))))
            }
            Pin::GetPinBlock(req) => {
                let format = match req.format() {
                    PinBlockFormat::Iso0 => crypto::PinBlockFormat::Iso0,
                    PinBlockFormat::Iso1 => crypto::PinBlockFormat::Iso1,
                    PinBlockFormat::Iso3 => crypto::PinBlockFormat::Iso3,
                    PinBlockFormat::Sm4Iso0 => crypto::PinBlockFormat::Sm4Iso0,
                    PinBlockFormat::Unspecified => {
                        return Err(Failure::xfs(
                            pin::FORMATNOTSUPP,
                            "a PIN block format is required",
                        ));
                    }
                };
                let state = self.lock();
                if state.pin.is_empty() {
                    return Err(Failure::xfs(pin::NOPIN, "no PIN has been entered"));
                }
                let key = self.key(&state, &req.key_name, KeyUsage::Pin)?;
                let block = crypto::encrypt_pin_block(format, &state.pin, &req.pan, &key)
                    .map_err(|e| crypto_failure(&e))?;
                Ok(Outcome::ok(pin_result(pin_pad_result::Result::PinBlock(
                    PinBlockResult { pin_block: block },
                ))))
            }
            Pin::GenerateMac(req) => {
                let algorithm = match req.algorithm() {
                    MacAlgorithm::X99 => crypto::MacAlgorithm::AnsiX99,
                    MacAlgorithm::X919 => crypto::MacAlgorithm::AnsiX919,
                    MacAlgorithm::CupEcb => crypto::MacAlgorithm::CupEcb,
                    MacAlgorithm::Sm4 => crypto::MacAlgorithm::Sm4Cbc,
                    MacAlgorithm::Unspecified => {
                        return Err(Failure::xfs(
                            pin::ALGORITHMNOTSUPP,
                            "a MAC algorithm is required",
                        ));
                    }
                };
                if req.data.len() > 64 * 1024 {
                    return Err(Failure::xfs(
                        pin::INVALIDDATA,
                        "MAC data is limited to 64 KiB",
                    ));
                }
                let key = {
                    let state = self.lock();
                    self.key(&state, &req.key_name, KeyUsage::Mac)?
                };
                let mac =
                    crypto::mac(algorithm, &key, &req.data).map_err(|e| crypto_failure(&e))?;
                Ok(Outcome::ok(pin_result(pin_pad_result::Result::Mac(
                    MacResult { mac },
                ))))
            }
            Pin::Reset(_) => {
                let mut state = self.lock();
                state.pin = Zeroizing::new(String::new());
                state.digits_entered = 0;
                state.common.state = openteller_proto::device::v1::DeviceState::Online;
                Ok(Outcome::done())
            }
        }
    }

    async fn press_keys(&self, keys: &[String]) -> Result<(), Failure> {
        if keys.is_empty() || keys.len() > 32 {
            return Err(Failure::invalid_data("PressKeys takes 1 to 32 keys"));
        }
        if let Some(bad) = keys.iter().find(|k| !is_key(k)) {
            // The rejected name is not echoed: it may be part of a PIN typed in the wrong field.
            let _ = bad;
            return Err(Failure::invalid_data(format!(
                "keys are 0-9, {}",
                FUNCTION_KEYS.join(", ")
            )));
        }
        let (done, applied) = oneshot::channel();
        {
            let state = self.lock();
            let Some(entry) = &state.entry else {
                return Err(Failure::sequence("no PIN or data entry is active"));
            };
            if entry
                .keys
                .send(KeyBatch {
                    keys: keys.to_vec(),
                    done,
                })
                .is_err()
            {
                return Err(Failure::sequence("the entry ended"));
            }
        }
        // The reply (and its status) describes the pad after the keys; an entry that ended or
        // was canceled meanwhile drops the acknowledgement, which is fine too.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), applied).await;
        Ok(())
    }
}

fn is_key(k: &str) -> bool {
    (k.len() == 1 && k.as_bytes()[0].is_ascii_digit()) || FUNCTION_KEYS.contains(&k)
}

fn entry_bounds(
    min: u32,
    max: u32,
    default_min: u32,
    limit: u32,
) -> Result<(usize, usize), Failure> {
    let min = if min == 0 { default_min } else { min };
    let max = if max == 0 { limit } else { max };
    if max > limit || min > max {
        return Err(Failure::xfs(
            pin::INVALIDDATA,
            format!("lengths must satisfy min <= max <= {limit}"),
        ));
    }
    Ok((min as usize, max as usize))
}

fn validate_key_name(name: &str) -> Result<(), Failure> {
    let ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Failure::xfs(
            pin::INVALIDID,
            "a key name has 1 to 32 characters A-Z a-z 0-9 _ - .",
        ))
    }
}

fn to_algorithm(a: KeyAlgorithm) -> Result<Algorithm, Failure> {
    match a {
        KeyAlgorithm::Tdes => Ok(Algorithm::Tdes),
        KeyAlgorithm::Sm4 => Ok(Algorithm::Sm4),
        KeyAlgorithm::Unspecified => Err(Failure::xfs(
            pin::ALGORITHMNOTSUPP,
            "the key algorithm is required",
        )),
    }
}

fn crypto_failure(e: &CryptoError) -> Failure {
    let error = match e {
        CryptoError::InvalidKeyLength { .. } => pin::INVALIDKEYLENGTH,
        CryptoError::KeyNotPermitted(_) => pin::USEVIOLATION,
        CryptoError::KcvMismatch { .. } => pin::KEYINVALID,
        CryptoError::UnsupportedFormat { .. } => pin::FORMATNOTSUPP,
        _ => pin::INVALIDDATA,
    };
    Failure::xfs(error, e.to_string())
}

fn pin_event(e: PinEvent) -> device_event::Event {
    device_event::Event::PinPad(PinPadEvent { event: Some(e) })
}

fn pin_result(r: pin_pad_result::Result) -> command_completion::Result {
    command_completion::Result::PinPad(PinPadResult { result: Some(r) })
}

#[async_trait]
impl Backend for VirtualPinPad {
    fn device_class(&self) -> DeviceClass {
        DeviceClass::PinPad
    }

    fn capabilities(&self) -> Capabilities {
        super::capabilities(
            DeviceClass::PinPad,
            "Virtual EPP (3DES, SM4; ISO 9564 formats 0, 1, 3, SM4-0)",
            &["PressKeys"],
        )
    }

    fn status(&self) -> DeviceStatus {
        let state = self.lock();
        DeviceStatus {
            device_class: DeviceClass::PinPad as i32,
            device: state.common.device_state() as i32,
            queued_commands: 0,
            detail: Some(device_status::Detail::PinPad(PinPadStatus {
                encryption: if state.persisted.keys.is_empty() {
                    EncryptionState::NotInitialized
                } else {
                    EncryptionState::Ready
                } as i32,
                key_count: state.persisted.keys.len() as u32,
                entry_active: state.entry.is_some(),
                digits_entered: state.digits_entered,
            })),
        }
    }

    async fn execute(&self, command: command::Command, ctx: &CommandContext) -> Outcome {
        let name = crate::backend::command_name(&command);
        let command::Command::PinPad(openteller_proto::device::v1::PinPadCommand {
            command: Some(c),
        }) = command
        else {
            return super::not_this_class();
        };
        {
            let mut state = self.lock();
            if let Err(f) = state.common.check_ready(matches!(c, Pin::Reset(_))) {
                return f.into();
            }
            if let Some(error) = state.common.take_error(name) {
                if error == generic::HARDWARE_ERROR {
                    state.common.state = openteller_proto::device::v1::DeviceState::HardwareError;
                }
                return Failure::xfs(error, format!("simulated error on {name}")).into();
            }
        }
        let outcome = self.run(c, ctx).await.into();
        self.hub.status(self.status());
        outcome
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
            Action::SetDeviceState(s) => self.lock().common.set_state(s.device()).map(|()| None),
            Action::PinPad(a) => match a.action {
                Some(SimPin::PressKeys(p)) => self.press_keys(&p.keys).await.map(|()| None),
                None => Err(Failure::invalid_data("the PIN pad action is empty")),
            },
            _ => Err(wrong_class(DeviceClass::PinPad)),
        }
    }
}
