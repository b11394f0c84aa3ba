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
//! - A withdrawal approved (F39 = 00) becomes an authorisation in the transaction-state table
//!   ([`crate::state::TxnTable::approve`], reference = F37, else `F41-F11-F13`): this client is
//!   its only creator. A withdrawal that got no answer, or whose approval cannot be recorded,
//!   is reversed (0400 naming the original F11 / F13) on a best-effort basis.
//! - STANs are allocated from `<state dir>/stan.json`, saved before use.
//! - One exchange at a time on one lazily opened connection; answers are matched on response
//!   MTI, F11 and F41 (others — late answers — are dropped); a timeout closes the connection.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::BytesMut;
use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::{FieldValue, Message, Spec, Subfield};
use openteller_proto::device::v1::{
    Command, CompletionCode, GenerateMac, GetPinBlock, ImportKey, KeyAlgorithm, KeyUsage,
    MacAlgorithm, PinBlockFormat, PinPadCommand, command, command_completion, command_reply,
    pin_pad_command, pin_pad_result,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Terminal;
use crate::config::OnlineSpec;
use crate::devices::DeviceManager;
use crate::rules::PinVerdict;
use crate::state::{StateError, write_atomic};

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
    /// The STAN or the authorisation could not be saved.
    #[error(transparent)]
    State(#[from] StateError),
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
        })
    }

    /// Whether a sign-on succeeded since start.
    pub fn signed_on(&self) -> bool {
        self.signed_on.load(Ordering::SeqCst)
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
    ) -> Result<(Message, Vec<u8>), TxnError> {
        let framed = self
            .framer
            .frame(payload)
            .map_err(|e| TxnError::Invalid(format!("frame: {e}")))?;
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let connect = TcpStream::connect(&self.online.address);
            let stream = match tokio::time::timeout(self.online.connect_timeout, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(TxnError::Unreachable(e.to_string())),
                Err(_) => return Err(TxnError::Unreachable("connect timed out".into())),
            };
            let _ = stream.set_nodelay(true);
            *guard = Some((stream, BytesMut::with_capacity(4096)));
        }
        let Some((stream, buf)) = guard.as_mut() else {
            return Err(TxnError::Unreachable("no connection".into()));
        };
        if let Err(e) = stream.write_all(&framed).await {
            *guard = None;
            return Err(TxnError::Unreachable(e.to_string()));
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
        result
    }

    /// Sends `msg` MAC'd by the EPP; returns the answer with its MAC checked (when it has one).
    async fn mac_exchange(&self, t: &Terminal, msg: &mut Message) -> Result<Message, TxnError> {
        let payload = self.seal(t, msg).await?;
        let (answer, raw) = self.exchange(msg, &payload).await?;
        let field = if answer.has(128) { 128 } else { 64 };
        if let Some(mac) = answer.get(field).and_then(FieldValue::as_bytes) {
            let end = raw.len().saturating_sub(MAC_LEN);
            let data = raw.get(MTI_OFFSET..end).unwrap_or(&[]).to_vec();
            let expected = self.generate_mac(t, data).await?;
            if !raw.ends_with(mac) || expected.get(..MAC_LEN) != Some(mac) {
                return Err(TxnError::BadAnswer("the answer's MAC is wrong".into()));
            }
        } else if text(&answer, 39) == Some("00") {
            return Err(TxnError::BadAnswer("an approval without a MAC".into()));
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
        let devices = t.devices();
        let spec = devices
            .spec(&self.online.pinpad)
            .map_err(|e| TxnError::Device(e.to_string()))?
            .clone();
        let cmd = Command {
            request_id: format!("txn-{}", self.seq.fetch_add(1, Ordering::Relaxed)),
            timeout_ms: self.online.device_timeout.as_millis() as u32,
            command: Some(command::Command::PinPad(PinPadCommand { command: Some(c) })),
        };
        let gate = t.gate();
        let admitted = gate
            .admit(&spec, &cmd, None)
            .await
            .map_err(|e| TxnError::Sequence(e.to_string()))?;
        let mut stream = match devices.execute(&spec.name, cmd).await {
            Ok(s) => s,
            Err(e) => {
                gate.abandon(admitted, &e.to_string()).await;
                return Err(TxnError::Device(e.to_string()));
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(reply)) => {
                    if let Some(command_reply::Reply::Completion(mut c)) = reply.reply {
                        gate.finish(admitted, &mut c).await;
                        let done = c.completion.unwrap_or_default();
                        if done.code != CompletionCode::Success as i32 {
                            return Err(TxnError::Device(format!(
                                "{} {}",
                                crate::rules::completion_text(
                                    &openteller_proto::device::v1::CommandCompletion {
                                        completion: Some(done.clone()),
                                        result: None,
                                    }
                                ),
                                done.description
                            )));
                        }
                        return Ok(match c.result {
                            Some(command_completion::Result::PinPad(p)) => p.result,
                            _ => None,
                        });
                    }
                }
                Ok(None) => {
                    gate.abandon(admitted, "the stream ended without a completion")
                        .await;
                    return Err(TxnError::Device(
                        "the stream ended without a completion".into(),
                    ));
                }
                Err(status) => {
                    let e = DeviceManager::stream_error(&spec.name, status);
                    gate.abandon(admitted, &e.to_string()).await;
                    return Err(TxnError::Device(e.to_string()));
                }
            }
        }
    }

    /// Sign-on: new TPK and TAK from online-txn, imported into the EPP under the TMK.
    pub async fn sign_on(&self, t: &Terminal) -> Result<TxnOutcome, TxnError> {
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
        let (answer, _) = self.exchange(&req, &payload).await?;
        let code = text(&answer, 39).unwrap_or("").to_owned();
        t.gate()
            .journal()
            .note(format!("TXN SIGN-ON stan={stan} rc={code}"))
            .await;
        if code != "00" {
            self.signed_on.store(false, Ordering::SeqCst);
            return Ok(TxnOutcome {
                response_code: code,
                approved: false,
                balance: None,
                authorization: None,
                pin_tries_left: None,
            });
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
        Ok(TxnOutcome {
            response_code: code,
            approved: true,
            balance: None,
            authorization: None,
            pin_tries_left: None,
        })
    }

    /// A 0200 with the card's PAN and the EPP's PIN block.
    async fn financial(
        &self,
        t: &Terminal,
        pcode: &str,
        amount: Option<(u64, &str)>,
    ) -> Result<(Message, Message), TxnError> {
        if !self.signed_on() {
            return Err(TxnError::Sequence(
                "not signed on: call txn.signOn first".into(),
            ));
        }
        let pan = t
            .gate()
            .track2_for_host()
            .and_then(|t2| pan_of_track2(&t2))
            .ok_or_else(|| {
                TxnError::Sequence("no card with a usable track 2 in the reader".into())
            })?;
        let block = match self
            .pinpad(
                t,
                pin_pad_command::Command::GetPinBlock(GetPinBlock {
                    key_name: self.online.tpk_key.clone(),
                    format: PinBlockFormat::Iso0 as i32,
                    pan: pan.clone(),
                }),
            )
            .await?
        {
            Some(pin_pad_result::Result::PinBlock(b)) => b.pin_block,
            _ => return Err(TxnError::Device("GetPinBlock returned no PIN block".into())),
        };
        let stan = self.next_stan().await?;
        let mut req = self
            .base("0200", &stan)
            .with(2, pan)
            .with(3, pcode)
            .with(22, "021")
            .with(25, "02")
            .with(52, block);
        match amount {
            Some((a, numeric)) => {
                req.set(4, format!("{a:012}"));
                req.set(49, numeric);
            }
            None => {
                req.set(49, "156");
            }
        }
        let answer = self.mac_exchange(t, &mut req).await;
        match answer {
            Ok(a) => Ok((req, a)),
            Err(e) => {
                if amount.is_some() && matches!(e, TxnError::Timeout(_) | TxnError::BadAnswer(_)) {
                    self.reverse(t, &req, &e.to_string()).await;
                }
                Err(e)
            }
        }
    }

    /// Best effort: a 0400 for `original` (same F11 / F13, which is how online-txn finds it).
    async fn reverse(&self, t: &Terminal, original: &Message, why: &str) {
        let mut rev = original.clone();
        rev.mti = "0400".into();
        rev.remove(52);
        rev.set(39, "98");
        let stan = text(original, 11).unwrap_or("").to_owned();
        let result = self.mac_exchange(t, &mut rev).await;
        let outcome = match &result {
            Ok(a) => format!("rc={}", text(a, 39).unwrap_or("")),
            Err(e) => format!("FAILED ({e})"),
        };
        t.gate()
            .journal()
            .note(format!("TXN REVERSAL stan={stan} because {why}: {outcome}"))
            .await;
    }

    fn outcome(&self, t: &Terminal, answer: &Message) -> TxnOutcome {
        let code = text(answer, 39).unwrap_or("").to_owned();
        let pin_tries_left = match code.as_str() {
            "00" => {
                t.gate().record_pin_verification(true);
                None
            }
            "55" => Some(match t.gate().record_pin_verification(false) {
                PinVerdict::TryAgain(n) => n,
                _ => 0,
            }),
            _ => None,
        };
        TxnOutcome {
            approved: code == "00",
            balance: text(answer, 54).and_then(balances),
            response_code: code,
            authorization: None,
            pin_tries_left,
        }
    }

    /// Balance inquiry (F3 310000).
    pub async fn inquiry(&self, t: &Terminal) -> Result<TxnOutcome, TxnError> {
        let (req, answer) = self.financial(t, "310000", None).await?;
        let out = self.outcome(t, &answer);
        t.gate()
            .journal()
            .note(format!(
                "TXN INQUIRY stan={} rc={}",
                text(&req, 11).unwrap_or(""),
                out.response_code
            ))
            .await;
        Ok(out)
    }

    /// Withdrawal (F3 010000) of `amount` minor units; approved, it is registered as an
    /// authorisation for the dispenser.
    pub async fn withdrawal(
        &self,
        t: &Terminal,
        amount: u64,
        currency: &str,
    ) -> Result<TxnOutcome, TxnError> {
        if amount == 0 || amount > 999_999_999_999 {
            return Err(TxnError::Invalid(
                "amount must be 1..=999999999999 minor units".into(),
            ));
        }
        let numeric = numeric_currency(currency)
            .ok_or_else(|| TxnError::Invalid(format!("unsupported currency {currency:?}")))?;
        let (req, answer) = self.financial(t, "010000", Some((amount, numeric))).await?;
        let mut out = self.outcome(t, &answer);
        let stan = text(&req, 11).unwrap_or("").to_owned();
        if out.approved {
            let reference = text(&answer, 37)
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    format!(
                        "{}-{stan}-{}",
                        self.terminal_id,
                        text(&req, 13).unwrap_or("")
                    )
                });
            if let Err(e) = t.gate().table().approve(&reference, amount, currency).await {
                tracing::error!(error = %e, "cannot record the approval; reversing");
                self.reverse(t, &req, &format!("the approval cannot be recorded: {e}"))
                    .await;
                return Err(e.into());
            }
            out.authorization = Some(reference);
        }
        t.gate()
            .journal()
            .note(format!(
                "TXN WITHDRAWAL stan={stan} amount={amount} {currency} rc={}{}",
                out.response_code,
                out.authorization
                    .as_deref()
                    .map(|r| format!(" ref={r}"))
                    .unwrap_or_default()
            ))
            .await;
        Ok(out)
    }
}

fn response_mti(mti: &str) -> String {
    let mut b = mti.as_bytes().to_vec();
    if let Some(c) = b.get_mut(2) {
        *c = match *c {
            b'0' => b'1',
            b'2' => b'3',
            other => other,
        };
    }
    String::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(response_mti("0200"), "0210");
        assert_eq!(response_mti("0800"), "0810");
        assert_eq!(response_mti("0400"), "0410");
        assert_eq!(
            pan_of_track2(";6222020200112233445=49121010000?").as_deref(),
            Some("6222020200112233445")
        );
        assert_eq!(pan_of_track2("1234=1"), None);
        assert_eq!(numeric_currency("CNY"), Some("156"));
        assert_eq!(alpha_currency("156"), Some("CNY"));
        let b = balances("1001156C0000000100001002156C000000009000").unwrap();
        assert_eq!(
            b,
            json!({"ledger": 10000, "available": 9000, "currency": "CNY"})
        );
    }
}
