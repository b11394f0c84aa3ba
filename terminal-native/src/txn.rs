//! The transaction client: ISO 8583 (`cup` profile, 2-byte binary length framing) over TCP to
//! online-txn's terminal front (docs/online-txn.md).
//!
//! - **Sign-on** (0800, F60.3 = 003): the working keys TPK and TAK come back in F62 encrypted
//!   under the terminal master key; they are imported into the EPP under the TMK (which lives in
//!   the EPP only) with their check values. Clear keys never exist in this process.
//! - **Financial requests** (0200 inquiry 310000, withdrawal 010000): the PAN from the card the
//!   gate holds ([`Gate::track2_for_host`]), the PIN block ISO-0 under the TPK made by the EPP
//!   (`GetPinBlock`), the MAC X9.19 under the TAK made by the EPP (`GenerateMac`), checked on the
//!   answer too. The host's PIN verdict goes to [`Gate::record_pin_verification`].
//! - **Transfer** (0200 40 0000, F103 the destination account) and **PIN change** (0200
//!   700000, F52 the current PIN block, F62 the new one, both made by the EPP).
//! - Every withdrawal, transfer and PIN change is written to the durable transaction log
//!   ([`crate::state::TxnTable::log_request`], reference `F41-F11-F13`) **before** the 0200
//!   goes out; the answer is recorded before the page hears it. An approved withdrawal is the
//!   authorisation a dispense must name: this client is its only creator.
//! - A request that got no answer, a bad answer, or whose approval cannot be recorded is
//!   queued for reversal in the log; the **reversal worker** ([`TxnClient::run_reversals`])
//!   sends 0400, then 0401 repeats with back-off until online-txn acknowledges (00, or 25:
//!   nothing to undo), across restarts. A partial reversal (part of the notes taken) carries
//!   F95 = the dispensed amount (12 digits) + 30 zeros.
//! - A wrong PIN (55) is counted by the gate; at `max_pin_attempts` (or on 75, PIN tries
//!   exceeded) the card is retained through the reader and the answer says `cardRetained`.
//! - A0 (MAC error) or A7 (not signed on) drop the sign-on; the sign-on task
//!   ([`crate::selfcheck::run_sign_on`]) signs on again.
//! - One transaction at a time: a second `txn.*` while one runs is a `SEQUENCE_ERROR`.
//! - STANs are allocated from `<state dir>/stan.json`, saved before use.
//! - One exchange at a time on one lazily opened connection; answers are matched on response
//!   MTI, F11 and F41 (others — late answers — are dropped); a timeout closes the connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::{FieldValue, Message, Spec, Subfield};
use openteller_proto::device::v1::{
    CompletionCode, GenerateMac, GetPinBlock, ImportKey, KeyAlgorithm, KeyUsage, MacAlgorithm,
    PinBlockFormat, PinPadCommand, command, command_completion, pin_pad_command, pin_pad_result,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Terminal;
use crate::config::OnlineSpec;
use crate::rules::{PinChangeStep, PinVerdict};
use crate::state::{AuthState, Original, StateError, TxnKind, crash_point, write_atomic};

/// Largest 8583 payload accepted (the `cup` profile's maximum).
const MAX_FRAME: usize = 4096;
/// TPDU (5) + CUP header (6): the MAC covers the message from the MTI on.
const MTI_OFFSET: usize = 11;
/// Length of the MAC value (F64 / F128).
const MAC_LEN: usize = 8;
/// The STAN file in the state directory.
const STAN_FILE: &str = "stan.json";

/// Why a transaction could not be carried out (not a host decline: those are answers).
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// No card in the reader, no PIN entered, not signed on…
    #[error("{0}")]
    Sequence(String),
    /// A bad parameter.
    #[error("{0}")]
    Invalid(String),
    /// online-txn cannot be reached (nothing was sent).
    #[error("online-txn unreachable: {0}")]
    Unreachable(String),
    /// No answer in time (a withdrawal is reversed).
    #[error("no answer from online-txn within {0} ms")]
    Timeout(u64),
    /// The answer was malformed, or its MAC wrong.
    #[error("bad answer from online-txn: {0}")]
    BadAnswer(String),
    /// The EPP (PIN pad) refused or failed.
    #[error("PIN pad: {0}")]
    Device(String),
    /// PIN change: the confirmation differs from the new PIN.
    #[error("the confirmation does not match the new PIN: enter the new PIN again")]
    PinMismatch,
    /// The STAN or the authorisation could not be saved.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A failed exchange with online-txn, by whether the request left the terminal: that,
/// not the kind of error, decides between "declined, nothing to undo" and "reverse it".
#[derive(Debug)]
enum Exchanged {
    /// The frame was never written (no connection, no MAC, the gate refused the EPP).
    NotSent(TxnError),
    /// The frame was written: online-txn may have acted on it, whatever failed afterwards.
    Sent(TxnError),
}

impl Exchanged {
    /// Whether the request may have reached online-txn.
    fn was_sent(&self) -> bool {
        matches!(self, Exchanged::Sent(_))
    }

    /// The error itself.
    fn into_error(self) -> TxnError {
        match self {
            Exchanged::NotSent(e) | Exchanged::Sent(e) => e,
        }
    }
}

impl TxnError {
    /// The stable bridge error code.
    pub fn code(&self) -> &'static str {
        match self {
            TxnError::Sequence(_) => "SEQUENCE_ERROR",
            TxnError::Invalid(_) => "INVALID_ARGUMENT",
            TxnError::Unreachable(_) => "HOST_UNAVAILABLE",
            TxnError::Timeout(_) => "HOST_TIMEOUT",
            TxnError::BadAnswer(_) => "HOST_ERROR",
            TxnError::Device(_) => "DEVICE_ERROR",
            TxnError::PinMismatch => "PIN_MISMATCH",
            TxnError::State(_) => "STATE_ERROR",
        }
    }
}

/// What a page sees of a transaction: never a PAN, a PIN or a key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TxnOutcome {
    /// F39 of the answer.
    pub response_code: String,
    /// F39 = 00.
    pub approved: bool,
    /// Balances from F54 (inquiry; withdrawal when the host sends them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<Value>,
    /// The authorisation reference to dispense against (approved withdrawal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// After a wrong PIN (F39 = 55): attempts left; 0 = the card must be retained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_tries_left: Option<u32>,
    /// The PIN limit was reached and the host retained the card (the session is over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_retained: Option<bool>,
}

impl TxnOutcome {
    fn code(response_code: String) -> TxnOutcome {
        TxnOutcome {
            approved: response_code == "00",
            response_code,
            balance: None,
            authorization: None,
            pin_tries_left: None,
            card_retained: None,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StanFile {
    last: u32,
}

/// The transaction client of one terminal.
pub struct TxnClient {
    spec: Spec,
    online: OnlineSpec,
    terminal_id: String,
    state_dir: PathBuf,
    framer: Framer,
    conn: tokio::sync::Mutex<Option<(TcpStream, BytesMut)>>,
    stan: tokio::sync::Mutex<Option<u32>>,
    signed_on: AtomicBool,
    seq: AtomicU64,
    /// One customer transaction (or sign-on) at a time.
    busy: tokio::sync::Mutex<()>,
    sign_on_wanted: Arc<tokio::sync::Notify>,
    reversals: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for TxnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnClient")
            .field("address", &self.online.address)
            .field("terminal_id", &self.terminal_id)
            .finish_non_exhaustive()
    }
}

fn text(m: &Message, n: u16) -> Option<&str> {
    m.get(n).and_then(FieldValue::as_text)
}

/// The numeric ISO 4217 code of an alphabetic one (the currencies a terminal may dispense).
pub fn numeric_currency(alpha: &str) -> Option<&'static str> {
    Some(match alpha {
        "CNY" => "156",
        "HKD" => "344",
        "MOP" => "446",
        "USD" => "840",
        "EUR" => "978",
        "GBP" => "826",
        "JPY" => "392",
        _ => return None,
    })
}

fn alpha_currency(numeric: &str) -> Option<&'static str> {
    ["CNY", "HKD", "MOP", "USD", "EUR", "GBP", "JPY"]
        .into_iter()
        .find(|a| numeric_currency(a) == Some(numeric))
}

/// The PAN of track 2 data (`PAN=YYMM…` or `PAN D YYMM…`, start sentinel tolerated).
fn pan_of_track2(track2: &str) -> Option<String> {
    let t = track2.trim_start_matches(';');
    let pan: String = t.chars().take_while(char::is_ascii_digit).collect();
    (13..=19).contains(&pan.len()).then_some(pan)
}

/// Parses F54: 20-character entries (account type 2, amount type 2, currency 3, sign C/D,
/// amount 12).
fn balances(f54: &str) -> Option<Value> {
    let mut out = serde_json::Map::new();
    for chunk in f54.as_bytes().chunks(20) {
        let Ok(s) = std::str::from_utf8(chunk) else {
            continue;
        };
        if s.len() != 20 {
            continue;
        }
        let Ok(abs) = s[8..20].parse::<i64>() else {
            continue;
        };
        let amount = match &s[7..8] {
            "C" => abs,
            "D" => -abs,
            _ => continue,
        };
        let key = match &s[2..4] {
            "01" => "ledger",
            "02" => "available",
            _ => continue,
        };
        out.insert(key.into(), json!(amount));
        let cur = &s[4..7];
        out.insert("currency".into(), json!(alpha_currency(cur).unwrap_or(cur)));
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn now_fields() -> (String, String) {
    let now = chrono::Local::now();
    (
        now.format("%H%M%S").to_string(),
        now.format("%m%d").to_string(),
    )
}

/// The F95 of a partial reversal: the amount dispensed (12 digits) and 30 zeros.
pub fn partial_f95(delivered: u64) -> String {
    format!("{delivered:012}{}", "0".repeat(30))
}

/// The reversal message of a logged transaction (0400, or 0401 for a repeat): the original's
/// F3, F4, F11, F12, F13, F49, this terminal's F41 / F42, F39 the reason, and F95 for a
/// partial reversal. No PAN: online-txn finds the original by F41 + F11 + F13.
pub fn reversal_message(
    terminal_id: &str,
    merchant_id: &str,
    original: &Original,
    amount: u64,
    delivered: u64,
    repeat: bool,
    reason_code: &str,
) -> Message {
    let mut m = Message::new(if repeat { "0401" } else { "0400" })
        .with_tpdu(vec![0x60, 0x00, 0x01, 0x00, 0x00])
        .with_header(vec![0x60, 0x31, 0x00, 0x00, 0x00, 0x00])
        .with(3, original.processing_code.clone())
        .with(11, original.stan.clone())
        .with(12, original.time.clone())
        .with(13, original.date.clone())
        .with(39, reason_code)
        .with(41, terminal_id.to_owned())
        .with(42, format!("{merchant_id:<15.15}"));
    if amount > 0 {
        m.set(4, format!("{amount:012}"));
    }
    if let Some(c) = &original.currency_numeric {
        m.set(49, c.clone());
    }
    if delivered > 0 && delivered < amount {
        m.set(95, partial_f95(delivered));
    }
    m
}

/// A 0200 to send: processing code, kind, amount and the extra fields.
struct Request {
    kind: Option<TxnKind>,
    pcode: &'static str,
    amount: Option<(u64, String)>,
    pin_block: Option<Vec<u8>>,
    extra: Vec<(u16, FieldValue)>,
}

impl TxnClient {
    /// A client for `online`; nothing is opened until the first request.
    pub fn new(
        online: OnlineSpec,
        terminal_id: &str,
        state_dir: PathBuf,
    ) -> Result<TxnClient, String> {
        let spec = Spec::builtin("cup").map_err(|e| format!("the cup profile: {e}"))?;
        Ok(TxnClient {
            spec,
            online,
            terminal_id: terminal_id.to_owned(),
            state_dir,
            framer: Framer::new(LengthPrefix::Binary2, MAX_FRAME),
            conn: tokio::sync::Mutex::new(None),
            stan: tokio::sync::Mutex::new(None),
            signed_on: AtomicBool::new(false),
            seq: AtomicU64::new(1),
            busy: tokio::sync::Mutex::new(()),
            sign_on_wanted: Arc::new(tokio::sync::Notify::new()),
            reversals: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Whether no customer transaction (or sign-on) is running.
    pub fn idle(&self) -> bool {
        self.busy.try_lock().is_ok()
    }

    /// Whether a sign-on succeeded since start (and no answer said the keys are bad since).
    pub fn signed_on(&self) -> bool {
        self.signed_on.load(Ordering::SeqCst)
    }

    /// The configured PIN pad (the EPP holding the keys).
    pub fn pinpad_name(&self) -> &str {
        &self.online.pinpad
    }

    /// Woken when the keys are lost and a sign-on is wanted.
    pub fn sign_on_wanted(&self) -> Arc<tokio::sync::Notify> {
        self.sign_on_wanted.clone()
    }

    /// Wakes the reversal worker (a reversal was queued).
    pub fn wake_reversals(&self) {
        self.reversals.notify_one();
    }

    fn keys_lost(&self, t: &Terminal, why: &str) {
        if self.signed_on.swap(false, Ordering::SeqCst) {
            tracing::warn!(why, "working keys rejected; signing on again");
        }
        self.sign_on_wanted.notify_one();
        t.poke_status();
    }

    fn begin(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, TxnError> {
        self.busy
            .try_lock()
            .map_err(|_| TxnError::Sequence("a transaction is in progress".into()))
    }

    /// The next STAN (000001–999999), saved in the state directory before it is used.
    pub async fn next_stan(&self) -> Result<String, TxnError> {
        let mut cur = self.stan.lock().await;
        let last = match *cur {
            Some(l) => l,
            None => match std::fs::read(self.state_dir.join(STAN_FILE)) {
                Ok(b) => serde_json::from_slice::<StanFile>(&b)
                    .map(|f| f.last)
                    .unwrap_or(0),
                Err(_) => 0,
            },
        };
        let next = last % 999_999 + 1;
        let bytes = serde_json::to_vec(&StanFile { last: next }).unwrap_or_default();
        write_atomic(&self.state_dir, STAN_FILE, &bytes)?;
        *cur = Some(next);
        Ok(format!("{next:06}"))
    }

    fn base(&self, mti: &str, stan: &str) -> Message {
        let (time, date) = now_fields();
        Message::new(mti)
            .with_tpdu(vec![0x60, 0x00, 0x01, 0x00, 0x00])
            .with_header(vec![0x60, 0x31, 0x00, 0x00, 0x00, 0x00])
            .with(11, stan)
            .with(12, time)
            .with(13, date)
            .with(41, self.terminal_id.clone())
            .with(42, format!("{:<15.15}", self.online.merchant_id))
    }

    /// One exchange: sends `payload`, waits for the answer matching `request`.
    async fn exchange(
        &self,
        request: &Message,
        payload: &[u8],
    ) -> Result<(Message, Vec<u8>), Exchanged> {
        use Exchanged::NotSent;
        let framed = self
            .framer
            .frame(payload)
            .map_err(|e| NotSent(TxnError::Invalid(format!("frame: {e}"))))?;
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let connect = TcpStream::connect(&self.online.address);
            let stream = match tokio::time::timeout(self.online.connect_timeout, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(NotSent(TxnError::Unreachable(e.to_string()))),
                Err(_) => return Err(NotSent(TxnError::Unreachable("connect timed out".into()))),
            };
            let _ = stream.set_nodelay(true);
            *guard = Some((stream, BytesMut::with_capacity(4096)));
        }
        let Some((stream, buf)) = guard.as_mut() else {
            return Err(NotSent(TxnError::Unreachable("no connection".into())));
        };
        if let Err(e) = stream.write_all(&framed).await {
            // A frame cut short is not a request online-txn can act on.
            *guard = None;
            return Err(NotSent(TxnError::Unreachable(e.to_string())));
        }
        let want_mti = response_mti(&request.mti);
        let (stan, tid) = (text(request, 11), text(request, 41));
        let timeout_ms = self.online.response_timeout.as_millis() as u64;
        let deadline = tokio::time::Instant::now() + self.online.response_timeout;
        let result = loop {
            let frame = match self.framer.decode_frame(buf) {
                Ok(Some(f)) => f,
                Ok(None) => match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
                    Err(_) => break Err(TxnError::Timeout(timeout_ms)),
                    Ok(Ok(0)) => {
                        break Err(TxnError::BadAnswer("connection closed".into()));
                    }
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => break Err(TxnError::BadAnswer(e.to_string())),
                },
                Err(e) => break Err(TxnError::BadAnswer(format!("frame: {e}"))),
            };
            let msg = match self.spec.decode(&frame) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable answer from online-txn dropped");
                    continue;
                }
            };
            if msg.mti == want_mti && text(&msg, 11) == stan && text(&msg, 41) == tid {
                break Ok((msg, frame.to_vec()));
            }
            tracing::info!(mti = %msg.mti, stan = ?text(&msg, 11), "unmatched (late) answer dropped");
        };
        if result.is_err() {
            *guard = None;
        }
        result.map_err(Exchanged::Sent)
    }

    /// Sends `msg` MAC'd by the EPP; returns the answer with its MAC checked (when it has one).
    ///
    /// A failure says whether the request left the terminal: every error before the frame
    /// is written is [`Exchanged::NotSent`]; every error after it (no answer, a bad answer,
    /// the PIN pad failing while checking the answer's MAC) is [`Exchanged::Sent`], since the
    /// host may have approved it.
    async fn mac_exchange(&self, t: &Terminal, msg: &mut Message) -> Result<Message, Exchanged> {
        let payload = self.seal(t, msg).await.map_err(Exchanged::NotSent)?;
        let (answer, raw) = self.exchange(msg, &payload).await?;
        let field = if answer.has(128) { 128 } else { 64 };
        if let Some(mac) = answer.get(field).and_then(FieldValue::as_bytes) {
            let end = raw.len().saturating_sub(MAC_LEN);
            let data = raw.get(MTI_OFFSET..end).unwrap_or(&[]).to_vec();
            let expected = self.generate_mac(t, data).await.map_err(Exchanged::Sent)?;
            if !raw.ends_with(mac) || expected.get(..MAC_LEN) != Some(mac) {
                // online-txn MACs its answers under its current TAK: ours is not that one
                // (another sign-on happened, or online-txn lost its keys).
                self.keys_lost(t, "the answer's MAC is wrong");
                return Err(Exchanged::Sent(TxnError::BadAnswer(
                    "the answer's MAC is wrong".into(),
                )));
            }
        } else if text(&answer, 39) == Some("00") {
            return Err(Exchanged::Sent(TxnError::BadAnswer(
                "an approval without a MAC".into(),
            )));
        }
        Ok(answer)
    }

    /// Encodes `msg` with the MAC (F64, or F128 with a secondary bitmap) made by the EPP.
    async fn seal(&self, t: &Terminal, msg: &mut Message) -> Result<Vec<u8>, TxnError> {
        msg.remove(64);
        msg.remove(128);
        let field = if msg.fields.keys().any(|k| k > 64) {
            128
        } else {
            64
        };
        msg.set(field, vec![0u8; MAC_LEN]);
        let mut encoded = self
            .spec
            .encode(msg)
            .map_err(|e| TxnError::Invalid(format!("encode: {e}")))?;
        let end = encoded.len().saturating_sub(MAC_LEN);
        let data = encoded.get(MTI_OFFSET..end).unwrap_or(&[]).to_vec();
        let mac = self.generate_mac(t, data).await?;
        let mac = mac
            .get(..MAC_LEN)
            .ok_or_else(|| TxnError::Device("the MAC is too short".into()))?
            .to_vec();
        if let Some(tail) = encoded.get_mut(end..) {
            tail.copy_from_slice(&mac);
        }
        msg.set(field, mac);
        Ok(encoded)
    }

    async fn generate_mac(&self, t: &Terminal, data: Vec<u8>) -> Result<Vec<u8>, TxnError> {
        let r = self
            .pinpad(
                t,
                pin_pad_command::Command::GenerateMac(GenerateMac {
                    key_name: self.online.tak_key.clone(),
                    algorithm: MacAlgorithm::X919 as i32,
                    data,
                }),
            )
            .await?;
        match r {
            Some(pin_pad_result::Result::Mac(m)) => Ok(m.mac),
            _ => Err(TxnError::Device("GenerateMac returned no MAC".into())),
        }
    }

    /// Runs one PIN pad command through the gate (journaled like a page's command).
    async fn pinpad(
        &self,
        t: &Terminal,
        c: pin_pad_command::Command,
    ) -> Result<Option<pin_pad_result::Result>, TxnError> {
        let rid = format!("txn-{}", self.seq.fetch_add(1, Ordering::Relaxed));
        let c = command::Command::PinPad(PinPadCommand { command: Some(c) });
        let done = crate::recovery::host_command(
            t,
            &self.online.pinpad,
            rid,
            self.online.device_timeout.as_millis() as u32,
            c,
            None,
        )
        .await
        .map_err(|e| match e {
            crate::recovery::HostCommandError::Refused(m) => TxnError::Sequence(m),
            crate::recovery::HostCommandError::Device(m) => TxnError::Device(m),
        })?;
        let code = done.completion.as_ref().map_or(0, |d| d.code);
        if code != CompletionCode::Success as i32 {
            let description = done
                .completion
                .as_ref()
                .map(|d| d.description.clone())
                .unwrap_or_default();
            return Err(TxnError::Device(format!(
                "{} {description}",
                crate::rules::completion_text(&done)
            )));
        }
        Ok(match done.result {
            Some(command_completion::Result::PinPad(p)) => p.result,
            _ => None,
        })
    }

    /// Sign-on: new TPK and TAK from online-txn, imported into the EPP under the TMK. Waits
    /// for a running transaction to end.
    pub async fn sign_on(&self, t: &Terminal) -> Result<TxnOutcome, TxnError> {
        let _busy = self.busy.lock().await;
        let result = self.sign_on_locked(t).await;
        t.poke_status();
        result
    }

    async fn sign_on_locked(&self, t: &Terminal) -> Result<TxnOutcome, TxnError> {
        let stan = self.next_stan().await?;
        let req = self.base("0800", &stan).with(
            60,
            FieldValue::Subfields(vec![
                Subfield::new("1", "00"),
                Subfield::new("2", "000001"),
                Subfield::new("3", "003"),
            ]),
        );
        let payload = self
            .spec
            .encode(&req)
            .map_err(|e| TxnError::Invalid(format!("encode: {e}")))?;
        let (answer, _) = self
            .exchange(&req, &payload)
            .await
            .map_err(Exchanged::into_error)?;
        let code = text(&answer, 39).unwrap_or("").to_owned();
        t.gate()
            .journal()
            .note(format!("TXN SIGN-ON stan={stan} rc={code}"))
            .await;
        if code != "00" {
            self.signed_on.store(false, Ordering::SeqCst);
            return Ok(TxnOutcome::code(code));
        }
        let f62 = answer
            .get(62)
            .and_then(FieldValue::as_bytes)
            .filter(|b| b.len() == 38)
            .ok_or_else(|| TxnError::BadAnswer("F62 must hold 38 bytes of working keys".into()))?
            .to_vec();
        for (name, usage, wrapped, kcv) in [
            (
                &self.online.tpk_key,
                KeyUsage::Pin,
                &f62[..16],
                &f62[16..19],
            ),
            (
                &self.online.tak_key,
                KeyUsage::Mac,
                &f62[19..35],
                &f62[35..38],
            ),
        ] {
            self.pinpad(
                t,
                pin_pad_command::Command::ImportKey(ImportKey {
                    name: name.clone(),
                    usage: usage as i32,
                    algorithm: KeyAlgorithm::Tdes as i32,
                    kek_name: self.online.tmk_key.clone(),
                    encrypted_key: wrapped.to_vec(),
                    expected_kcv: hex::encode_upper(kcv),
                }),
            )
            .await?;
        }
        self.signed_on.store(true, Ordering::SeqCst);
        Ok(TxnOutcome::code(code))
    }

    fn card_pan(&self, t: &Terminal) -> Result<String, TxnError> {
        if !self.signed_on() {
            return Err(TxnError::Sequence(
                "not signed on: the terminal is signing on, try again".into(),
            ));
        }
        t.gate()
            .track2_for_host()
            .and_then(|t2| pan_of_track2(&t2))
            .ok_or_else(|| TxnError::Sequence("no card with a usable track 2 in the reader".into()))
    }

    /// The EPP's PIN block of the last PIN entered (ISO-0 under the TPK).
    async fn pin_block(&self, t: &Terminal, pan: &str) -> Result<Vec<u8>, TxnError> {
        match self
            .pinpad(
                t,
                pin_pad_command::Command::GetPinBlock(GetPinBlock {
                    key_name: self.online.tpk_key.clone(),
                    format: PinBlockFormat::Iso0 as i32,
                    pan: pan.to_owned(),
                }),
            )
            .await?
        {
            Some(pin_pad_result::Result::PinBlock(b)) => Ok(b.pin_block),
            _ => Err(TxnError::Device("GetPinBlock returned no PIN block".into())),
        }
    }

    /// A 0200 with the card's PAN and a PIN block. Withdrawals, transfers and PIN changes are
    /// logged before they are sent and reversed (queued) when the answer is missing or bad.
    /// Answers the request, the logged reference and the answer.
    async fn financial(
        &self,
        t: &Terminal,
        pan: String,
        r: Request,
    ) -> Result<(Message, Option<String>, Message), TxnError> {
        let block = match r.pin_block {
            Some(b) => b,
            None => self.pin_block(t, &pan).await?,
        };
        let stan = self.next_stan().await?;
        let mut req = self
            .base("0200", &stan)
            .with(2, pan)
            .with(3, r.pcode)
            .with(22, "021")
            .with(25, "02")
            .with(52, block);
        let currency_numeric = match &r.amount {
            Some((a, numeric)) => {
                req.set(4, format!("{a:012}"));
                numeric.clone()
            }
            None => "156".to_owned(),
        };
        req.set(49, currency_numeric.clone());
        for (n, v) in r.extra {
            req.set(n, v);
        }
        let reference = match r.kind {
            None => None,
            Some(kind) => {
                let original = Original {
                    stan: stan.clone(),
                    time: text(&req, 12).unwrap_or("").to_owned(),
                    date: text(&req, 13).unwrap_or("").to_owned(),
                    processing_code: r.pcode.to_owned(),
                    currency_numeric: Some(currency_numeric.clone()),
                };
                let reference = format!("{}-{stan}-{}", self.terminal_id, original.date);
                let (amount, currency) = match &r.amount {
                    Some((a, n)) => (*a, alpha_currency(n).unwrap_or("CNY")),
                    None => (0, "CNY"),
                };
                t.gate()
                    .table()
                    .log_request(&reference, kind, amount, currency, original)
                    .await?;
                Some(reference)
            }
        };
        match self.mac_exchange(t, &mut req).await {
            Ok(a) => Ok((req, reference, a)),
            Err(failed) => {
                let sent = failed.was_sent();
                let e = failed.into_error();
                if let Some(reference) = &reference {
                    let table = t.gate().table();
                    if !sent {
                        // Nothing left this terminal (no connection, no MAC): nothing to undo.
                        let note = format!("not sent: {e}");
                        let _ = table
                            .update(reference, |a| {
                                a.state = AuthState::Declined;
                                a.outcome = Some(note);
                            })
                            .await;
                    } else {
                        // The frame was written: the host may have approved it.
                        let why = e.to_string();
                        let queued = table
                            .queue_reversal(reference, &why, 0, &[AuthState::Requested])
                            .await;
                        if queued.is_ok() {
                            t.gate()
                                .journal()
                                .note(format!(
                                    "TXN REVERSAL QUEUED ref={reference} stan={stan} because {why}"
                                ))
                                .await;
                            self.wake_reversals();
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// The page's view of an answer; counts the PIN verdict and retains the card at the
    /// limit.
    async fn outcome(&self, t: &Terminal, answer: &Message) -> TxnOutcome {
        let code = text(answer, 39).unwrap_or("").to_owned();
        if matches!(code.as_str(), "A0" | "A7") {
            self.keys_lost(t, &code);
        }
        let verdict = match code.as_str() {
            "00" => Some(t.gate().record_pin_verification(true)),
            "55" => Some(t.gate().record_pin_verification(false)),
            "75" => Some(t.gate().record_pin_tries_exceeded()),
            _ => None,
        };
        let mut out = TxnOutcome::code(code);
        out.balance = text(answer, 54).and_then(balances);
        match verdict {
            Some(PinVerdict::TryAgain(n)) => out.pin_tries_left = Some(n),
            Some(PinVerdict::RetainCard) => {
                out.pin_tries_left = Some(0);
                let why = format!(
                    "{} wrong PINs, limit {} (rc={})",
                    t.gate().session().wrong_pins,
                    t.gate().max_pin_attempts(),
                    out.response_code
                );
                out.card_retained = Some(crate::recovery::retain_card(t, &why).await);
            }
            _ => {}
        }
        out
    }

    /// Records the answer of a logged request; an approval that cannot be recorded is
    /// reversed.
    async fn record_answer(
        &self,
        t: &Terminal,
        reference: &str,
        out: &TxnOutcome,
        answer: &Message,
    ) -> Result<(), TxnError> {
        let rrn = text(answer, 37)
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        let table = t.gate().table();
        if let Err(e) = table.answered(reference, out.approved, rrn).await {
            tracing::error!(error = %e, "cannot record the answer");
            t.gate().alarm(
                "txn_state_failed",
                "txn",
                format!("the answer to {reference} cannot be recorded: {e}"),
            );
            if out.approved {
                let why = format!("the approval cannot be recorded: {e}");
                let queued = table
                    .queue_reversal(reference, &why, 0, &[AuthState::Requested])
                    .await;
                if queued.is_ok() {
                    self.wake_reversals();
                }
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Balance inquiry (F3 310000).
    pub async fn inquiry(&self, t: &Terminal) -> Result<TxnOutcome, TxnError> {
        let _busy = self.begin()?;
        let pan = self.card_pan(t)?;
        let (req, _, answer) = self
            .financial(
                t,
                pan,
                Request {
                    kind: None,
                    pcode: "310000",
                    amount: None,
                    pin_block: None,
                    extra: Vec::new(),
                },
            )
            .await?;
        let out = self.outcome(t, &answer).await;
        t.gate()
            .journal()
            .note(format!(
                "TXN INQUIRY stan={} rc={}{}",
                text(&req, 11).unwrap_or(""),
                out.response_code,
                retained_note(&out)
            ))
            .await;
        Ok(out)
    }

    fn check_amount(amount: u64, currency: &str) -> Result<&'static str, TxnError> {
        if amount == 0 || amount > 999_999_999_999 {
            return Err(TxnError::Invalid(
                "amount must be 1..=999999999999 minor units".into(),
            ));
        }
        numeric_currency(currency)
            .ok_or_else(|| TxnError::Invalid(format!("unsupported currency {currency:?}")))
    }

    /// Sends a transaction the log keeps (withdrawal, transfer, PIN change), records the
    /// answer in the log and journals `TXN {label} stan=…{details} rc=… ref=…`. Answers the
    /// outcome and the log reference.
    async fn logged(
        &self,
        t: &Terminal,
        pan: String,
        request: Request,
        label: &str,
        details: &str,
    ) -> Result<(TxnOutcome, String), TxnError> {
        let (req, reference, answer) = self.financial(t, pan, request).await?;
        let reference = reference.unwrap_or_default();
        let out = self.outcome(t, &answer).await;
        self.record_answer(t, &reference, &out, &answer).await?;
        t.gate()
            .journal()
            .note(format!(
                "TXN {label} stan={}{details} rc={} ref={reference}{}",
                text(&req, 11).unwrap_or(""),
                out.response_code,
                retained_note(&out)
            ))
            .await;
        Ok((out, reference))
    }

    /// Withdrawal (F3 010000) of `amount` minor units; approved, it is the authorisation a
    /// dispense must name.
    pub async fn withdrawal(
        &self,
        t: &Terminal,
        amount: u64,
        currency: &str,
    ) -> Result<TxnOutcome, TxnError> {
        let numeric = Self::check_amount(amount, currency)?;
        let _busy = self.begin()?;
        let pan = self.card_pan(t)?;
        let request = Request {
            kind: Some(TxnKind::Withdrawal),
            pcode: "010000",
            amount: Some((amount, numeric.to_owned())),
            pin_block: None,
            extra: Vec::new(),
        };
        let details = format!(" amount={amount} {currency}");
        let (mut out, reference) = self.logged(t, pan, request, "WITHDRAWAL", &details).await?;
        if out.approved {
            out.authorization = Some(reference);
        }
        Ok(out)
    }

    /// Transfer (F3 400000) of `amount` minor units to `to_account` (F103, 1-28 digits).
    pub async fn transfer(
        &self,
        t: &Terminal,
        to_account: &str,
        amount: u64,
        currency: &str,
    ) -> Result<TxnOutcome, TxnError> {
        if !(1..=28).contains(&to_account.len()) || !to_account.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(TxnError::Invalid("toAccount must be 1-28 digits".into()));
        }
        let numeric = Self::check_amount(amount, currency)?;
        let _busy = self.begin()?;
        let pan = self.card_pan(t)?;
        let request = Request {
            kind: Some(TxnKind::Transfer),
            pcode: "400000",
            amount: Some((amount, numeric.to_owned())),
            pin_block: None,
            extra: vec![(103, FieldValue::from(to_account.to_owned()))],
        };
        let details = format!(
            " amount={amount} {currency} to={}",
            crate::journal::mask_pan(to_account)
        );
        let (out, _) = self.logged(t, pan, request, "TRANSFER", &details).await?;
        Ok(out)
    }

    /// One step of a PIN change, called after each `PinPad.GetPin`: `current` and `new`
    /// capture the EPP's PIN block; `confirm` compares it with `new` (the same PIN, PAN and
    /// key give the same ISO-0 block) and, when equal, sends the 0200 (F3 700000, F52 the
    /// current block, F62 the new one).
    pub async fn pin_change(&self, t: &Terminal, step: &str) -> Result<Value, TxnError> {
        let _busy = self.begin()?;
        let pan = self.card_pan(t)?;
        let gate = t.gate();
        match step {
            "current" => {
                let block = self.pin_block(t, &pan).await?;
                gate.set_pin_change_block(PinChangeStep::Current, block);
                return Ok(json!({"step": step, "captured": true}));
            }
            "new" => {
                if gate.pin_change_block(PinChangeStep::Current).is_none() {
                    return Err(TxnError::Sequence(
                        "PIN change: capture the current PIN first".into(),
                    ));
                }
                let block = self.pin_block(t, &pan).await?;
                gate.set_pin_change_block(PinChangeStep::New, block);
                return Ok(json!({"step": step, "captured": true}));
            }
            "confirm" => {}
            _ => {
                return Err(TxnError::Invalid(
                    "step must be \"current\", \"new\" or \"confirm\"".into(),
                ));
            }
        }
        let (Some(current), Some(new)) = (
            gate.pin_change_block(PinChangeStep::Current),
            gate.pin_change_block(PinChangeStep::New),
        ) else {
            return Err(TxnError::Sequence(
                "PIN change: capture the current and the new PIN first".into(),
            ));
        };
        let confirm = self.pin_block(t, &pan).await?;
        if confirm != new {
            gate.clear_pin_change(PinChangeStep::New);
            gate.journal()
                .note("TXN PIN-CHANGE confirmation differs: new PIN asked again")
                .await;
            return Err(TxnError::PinMismatch);
        }
        gate.clear_pin_change(PinChangeStep::Current);
        let request = Request {
            kind: Some(TxnKind::PinChange),
            pcode: "700000",
            amount: None,
            pin_block: Some(current),
            extra: vec![(62, FieldValue::from(new))],
        };
        let (out, _) = self.logged(t, pan, request, "PIN-CHANGE", "").await?;
        Ok(json!(out))
    }

    /// The reversal worker: sends every due reversal of the log (0400 first, 0401 for
    /// repeats), each attempt saved before it is sent, with back-off between attempts, until
    /// online-txn acknowledges it. Waits while the terminal is not signed on.
    pub async fn run_reversals(&self, t: Arc<Terminal>, stop: tokio_util::sync::CancellationToken) {
        loop {
            let mut wait = Duration::from_secs(3600);
            if self.signed_on() {
                let now = openteller_keeper::unix_ms();
                let pending: Vec<_> = t
                    .gate()
                    .table()
                    .all()
                    .await
                    .into_iter()
                    .filter(|a| a.state == AuthState::ReversalPending)
                    .collect();
                for a in pending {
                    let Some(r) = a.reversal.as_ref() else {
                        continue;
                    };
                    if r.next_at_ms > now {
                        wait = wait.min(Duration::from_millis(r.next_at_ms - now));
                        continue;
                    }
                    if stop.is_cancelled() {
                        return;
                    }
                    if let Some(next) = self.reverse_once(&t, &a.reference).await {
                        wait = wait.min(next);
                    }
                }
            } else {
                wait = Duration::from_millis(500);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.reversals.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One attempt; answers when to look again if the reversal is still pending.
    async fn reverse_once(&self, t: &Terminal, reference: &str) -> Option<Duration> {
        // Not under `busy`: a customer transaction waits at most for this exchange (the
        // connection is shared), and a reversal MAC'd with keys replaced meanwhile is refused
        // and simply sent again.
        let table = t.gate().table();
        let base = self.online.reversal_retry;
        let max = self.online.reversal_max_retry;
        // The attempt is saved (count and next time) before it is sent.
        let entry = match table
            .update(reference, |a| {
                if let Some(r) = a.reversal.as_mut() {
                    r.attempts += 1;
                    let factor = 1u32 << (r.attempts - 1).min(16);
                    let delay = base.saturating_mul(factor).min(max);
                    r.next_at_ms = openteller_keeper::unix_ms() + delay.as_millis() as u64;
                }
            })
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "cannot save the reversal attempt");
                return Some(base);
            }
        };
        crash_point("reversal_sending");
        let (Some(original), Some(r)) = (entry.original.as_ref(), entry.reversal.as_ref()) else {
            return None;
        };
        // Decided when it was queued; guessed from the reason for entries of older versions.
        let legacy = |reason: &str| {
            if ["no answer", "bad answer", "no recorded answer"]
                .iter()
                .any(|w| reason.contains(w))
            {
                "98"
            } else {
                "06"
            }
        };
        let reason_code = r
            .reason_code
            .clone()
            .unwrap_or_else(|| legacy(&r.reason).to_owned());
        let mut msg = reversal_message(
            &self.terminal_id,
            &self.online.merchant_id,
            original,
            entry.amount,
            r.delivered,
            r.attempts > 1,
            &reason_code,
        );
        let result = self
            .mac_exchange(t, &mut msg)
            .await
            .map_err(Exchanged::into_error);
        let (done, outcome) = match &result {
            Ok(a) => {
                let code = text(a, 39).unwrap_or("").to_owned();
                if matches!(code.as_str(), "A0" | "A7") {
                    self.keys_lost(t, &code);
                }
                (matches!(code.as_str(), "00" | "25"), format!("rc={code}"))
            }
            Err(e) => (false, format!("FAILED ({e})")),
        };
        let kind = if r.delivered > 0 && r.delivered < entry.amount {
            format!("partial (delivered {})", r.delivered)
        } else {
            "full".to_owned()
        };
        t.gate()
            .journal()
            .note(format!(
                "TXN REVERSAL {} ref={reference} stan={} {kind} attempt {} because {}: {outcome}{}",
                msg.mti,
                original.stan,
                r.attempts,
                r.reason,
                if done { " DONE" } else { "" }
            ))
            .await;
        let saved = table
            .update(reference, |a| {
                if done {
                    a.state = AuthState::Reversed;
                }
                if let Some(r) = a.reversal.as_mut() {
                    r.last_result = Some(outcome.clone());
                }
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(error = %e, "cannot record the reversal's result");
        }
        if done {
            t.page_event(
                "txn.reversal",
                json!({"authorization": reference, "reason": r.reason,
                       "delivered": r.delivered, "state": AuthState::Reversed}),
            );
            None
        } else {
            Some(Duration::from_millis(
                r.next_at_ms
                    .saturating_sub(openteller_keeper::unix_ms())
                    .max(1),
            ))
        }
    }
}

fn retained_note(out: &TxnOutcome) -> &'static str {
    match out.card_retained {
        Some(true) => " CARD RETAINED",
        Some(false) => " CARD NOT RETAINED",
        None => "",
    }
}

/// The answer's MTI: the function digit goes up by one and the origin digit is 0 (a 0401
/// repeat is answered 0410).
fn response_mti(mti: &str) -> String {
    match mti.as_bytes() {
        [a, b, c, _] if c.is_ascii_digit() => {
            let function = (c - b'0' + 1) % 10;
            format!("{}{}{function}0", char::from(*a), char::from(*b))
        }
        _ => mti.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(response_mti("0200"), "0210");
        assert_eq!(response_mti("0800"), "0810");
        assert_eq!(response_mti("0400"), "0410");
        assert_eq!(response_mti("0401"), "0410");
        assert_eq!(
            pan_of_track2(";6222020200112233445=49121010000?").as_deref(),
            Some("6222020200112233445")
        );
        assert_eq!(pan_of_track2("1234=1"), None);
        assert_eq!(numeric_currency("CNY"), Some("156"));
        assert_eq!(alpha_currency("156"), Some("CNY"));
        assert_eq!(
            partial_f95(10000),
            format!("000000010000{}", "0".repeat(30))
        );
        assert_eq!(partial_f95(10000).len(), 42);
        let original = Original {
            stan: "000004".into(),
            time: "101500".into(),
            date: "1122".into(),
            processing_code: "010000".into(),
            currency_numeric: Some("156".into()),
        };
        let full = reversal_message("T0000001", "M1", &original, 30000, 0, false, "98");
        assert_eq!(full.mti, "0400");
        assert_eq!(text(&full, 11), Some("000004"));
        assert_eq!(text(&full, 13), Some("1122"));
        assert_eq!(text(&full, 4), Some("000000030000"));
        assert!(!full.has(95) && !full.has(2) && !full.has(52));
        let partial = reversal_message("T0000001", "M1", &original, 30000, 10000, true, "06");
        assert_eq!(partial.mti, "0401");
        assert_eq!(text(&partial, 95), Some(partial_f95(10000).as_str()));
        let b = balances("1001156C0000000100001002156C000000009000").unwrap();
        assert_eq!(
            b,
            json!({"ledger": 10000, "available": 9000, "currency": "CNY"})
        );
    }
}

#[cfg(test)]
mod exchange_tests {
    use super::*;

    fn client(address: String) -> TxnClient {
        let online = OnlineSpec {
            address,
            merchant_id: "M1".into(),
            pinpad: "EPP1".into(),
            tmk_key: "TMK".into(),
            tpk_key: "TPK".into(),
            tak_key: "TAK".into(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            device_timeout: Duration::from_secs(5),
            reversal_retry: Duration::from_secs(1),
            reversal_max_retry: Duration::from_secs(2),
        };
        TxnClient::new(online, "T0000001", std::env::temp_dir()).expect("client")
    }

    fn request() -> Message {
        let mut m = Message::new("0800");
        m.set(11, "000001");
        m.set(41, "T0000001");
        m
    }

    /// No connection: the request never left, so nothing may be reversed.
    #[tokio::test]
    async fn a_failed_connect_is_not_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let c = client(address);
        let err = c.exchange(&request(), b"0800").await.unwrap_err();
        assert!(!err.was_sent(), "{err:?}");
        assert!(matches!(err.into_error(), TxnError::Unreachable(_)));
    }

    /// The frame was written and the answer never came: the host may have acted on it.
    #[tokio::test]
    async fn an_error_after_the_write_is_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let host = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            // Closes without answering.
        });
        let c = client(address);
        let err = c.exchange(&request(), b"0800").await.unwrap_err();
        host.await.unwrap();
        assert!(err.was_sent(), "{err:?}");
        assert!(matches!(err.into_error(), TxnError::BadAnswer(_)));
    }
}
