//! The transaction flow between terminals and the host.
//!
//! - **Sign-on** (0800, F60.3 = 003): new working keys TPK and TAK for the terminal, returned
//!   in F62 encrypted under its TMK with their check values. **Echo** (F60.3 = 301) answers 00.
//! - **Financial requests** (0200): the terminal's MAC verified under its TAK, the PIN block
//!   translated TPK → ZPK (for a PIN change, F3 70xxxx, the new PIN block in F62 too), the
//!   host request MAC'd under ZAK, then journaled directly as SENT
//!   (keyed by F41 + F11 + F13, so a retry gets the first answer) and sent; a request refused
//!   before that is journaled RECEIVED and DECLINED. The answer's MAC checked,
//!   the row ends APPROVED or DECLINED and the terminal gets the answer MAC'd under its TAK. No
//!   answer in time → IN_DOUBT, a reversal is queued in the same commit, the terminal gets 98.
//! - **Terminal reversals** (0400/0401, F11 + F13 of the original): the original is found and
//!   a reversal queued durably before the 0410 answer; the queue delivers it to the host. With
//!   F95 (replacement amounts) the reversal is **partial**: the first 12 digits are the amount
//!   that stands (the notes actually dispensed), only the rest is given back.
//!
//! Nothing here logs a PAN (only first 6 / last 4), a track, a PIN block or a key.

use std::sync::Arc;
use std::time::Duration;

use openteller_codec::{FieldValue, Message, Spec, Subfield};
use openteller_crypto::{MacAlgorithm, PinBlockFormat};

use crate::host::{HostError, HostLink};
use crate::journal::{Answer, Begin, Journal, NewTxn, TxnRecord, TxnState};
use crate::router::DEFAULT_BACKEND;
use crate::security::{KeyUsage, SecurityModule};

/// Response codes the engine itself answers with.
pub mod rc {
    /// Approved.
    pub const APPROVED: &str = "00";
    /// Invalid transaction.
    pub const INVALID_TXN: &str = "12";
    /// Invalid amount (a partial reversal's F95 not below the original amount).
    pub const INVALID_AMOUNT: &str = "13";
    /// Original not found (reversal).
    pub const ORIGINAL_NOT_FOUND: &str = "25";
    /// Format error.
    pub const FORMAT_ERROR: &str = "30";
    /// The host is not reachable; nothing was sent.
    pub const HOST_DOWN: &str = "91";
    /// Duplicate transmission with different content.
    pub const DUPLICATE: &str = "94";
    /// System malfunction.
    pub const SYSTEM: &str = "96";
    /// No answer from the host in time (the transaction is being reversed).
    pub const NO_ANSWER: &str = "98";
    /// MAC error.
    pub const MAC_ERROR: &str = "A0";
    /// Terminal not signed on / unknown keys.
    pub const NOT_SIGNED_ON: &str = "A7";
}

/// Processing code prefix (F3) of a PIN change: the new PIN block is in F62.
pub const PIN_CHANGE: &str = "70";

/// The MAC algorithm on both sides (ANSI X9.19 retail MAC).
pub const MAC_ALGORITHM: MacAlgorithm = MacAlgorithm::AnsiX919;
const TPDU_HEADER: usize = 5;

/// The MAC field of a message: F128 when a secondary bitmap is present, else F64.
pub fn mac_field(m: &Message) -> u16 {
    if m.fields.iter().any(|(k, _)| k > 64 && k != 128) {
        128
    } else {
        64
    }
}

/// The bytes a MAC covers: the encoded message after TPDU and header, up to (excluding) the
/// 8-byte MAC value, which is the last field.
pub fn mac_input<'a>(spec: &Spec, encoded: &'a [u8]) -> Option<&'a [u8]> {
    let start = if spec.has_tpdu() { TPDU_HEADER } else { 0 } + spec.header_len();
    encoded.get(start..encoded.len().checked_sub(8)?)
}

/// Encodes `m` with a MAC under `key` in its MAC field.
pub fn encode_with_mac(
    spec: &Spec,
    hsm: &dyn SecurityModule,
    key: &str,
    m: &mut Message,
) -> Result<Vec<u8>, String> {
    let field = mac_field(m);
    m.remove(if field == 64 { 128 } else { 64 });
    m.set(field, FieldValue::Binary(vec![0u8; 8].into()));
    let mut bytes = spec.encode(m).map_err(|e| e.to_string())?;
    let input = mac_input(spec, &bytes).ok_or("message too short for a MAC")?;
    let mac = hsm
        .generate_mac(key, MAC_ALGORITHM, input)
        .map_err(|e| e.to_string())?;
    let len = bytes.len();
    bytes[len - 8..].copy_from_slice(&mac[..8]);
    m.set(field, FieldValue::Binary(mac[..8].to_vec().into()));
    Ok(bytes)
}

/// Verifies the MAC of a received message (on its raw bytes).
pub fn verify_mac(
    spec: &Spec,
    hsm: &dyn SecurityModule,
    key: &str,
    m: &Message,
    raw: &[u8],
) -> bool {
    let field = mac_field(m);
    let Some(mac) = m.get(field).and_then(FieldValue::as_bytes) else {
        return false;
    };
    let Some(input) = mac_input(spec, raw) else {
        return false;
    };
    raw.ends_with(mac)
        && hsm
            .verify_mac(key, MAC_ALGORITHM, input, mac)
            .unwrap_or(false)
}

/// First 6 and last 4 digits of a PAN.
pub fn mask_pan(pan: &str) -> String {
    if pan.len() <= 10 {
        return "*".repeat(pan.len());
    }
    format!(
        "{}{}{}",
        &pan[..6],
        "*".repeat(pan.len() - 10),
        &pan[pan.len() - 4..]
    )
}

fn text(m: &Message, n: u16) -> Option<&str> {
    m.get(n).and_then(FieldValue::as_text)
}

/// The PAN of a request: F2, or the digits of track 2 before the separator.
pub fn pan_of(m: &Message) -> Option<String> {
    text(m, 2).map(str::to_owned).or_else(|| {
        text(m, 35)
            .and_then(|t| t.split(['=', 'D', 'd']).next())
            .map(str::to_owned)
    })
}

/// The length of F95 (replacement amounts, ISO 8583:1987 `an 42`).
pub const F95_LEN: usize = 42;

/// The F95 value of a partial reversal: the amount that stands, 12 digits, then 30 zeros
/// (settlement amount and fees, unused).
pub fn replacement_field(amount_minor: i64) -> String {
    format!(
        "{:012}{}",
        amount_minor.clamp(0, 999_999_999_999),
        "0".repeat(30)
    )
}

/// The amount that stands after a reversal carrying F95 (`Ok(None)` without F95, or with a
/// zero amount: a full reversal). `Err`: F95 is not 42 characters starting with 12 digits
/// followed by letters, digits or spaces (answer 30).
pub fn replacement_of(m: &Message) -> Result<Option<i64>, &'static str> {
    let Some(v) = m.get(95) else {
        return Ok(None);
    };
    let s = v.as_text().ok_or(rc::FORMAT_ERROR)?;
    let ok = s.len() == F95_LEN
        && s.bytes().take(12).all(|c| c.is_ascii_digit())
        && s.bytes()
            .skip(12)
            .all(|c| c.is_ascii_alphanumeric() || c == b' ');
    if !ok {
        return Err(rc::FORMAT_ERROR);
    }
    let amount: i64 = s[..12].parse().map_err(|_| rc::FORMAT_ERROR)?;
    Ok((amount > 0).then_some(amount))
}

fn network_code(m: &Message) -> Option<&str> {
    m.get(60)?.subfield("3")?.as_text()
}

/// Names of a terminal's keys in the key store.
pub fn terminal_key(terminal: &str, which: &str) -> String {
    format!("term/{terminal}/{which}")
}

/// Everything the flow needs.
pub struct Engine {
    /// Terminal-side profile.
    pub terminal_spec: Arc<Spec>,
    /// The journal.
    pub journal: Journal,
    /// The security module.
    pub hsm: Arc<dyn SecurityModule>,
    /// The host link.
    pub host: Arc<HostLink>,
    /// Host answer time limit.
    pub host_timeout: Duration,
    /// Host PIN key name.
    pub zpk: String,
    /// Host MAC key name.
    pub zak: String,
    /// How long a reversal stays deliverable.
    pub reversal_ttl: Duration,
    /// Wakes the reversal worker.
    pub reversals: Arc<tokio::sync::Notify>,
}

impl Engine {
    /// Handles one framed payload from a terminal; returns the answer to send back, or `None`
    /// when nothing sensible can be answered (the connection is then closed).
    pub async fn handle(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let request = match self.terminal_spec.decode(raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable terminal message");
                return None;
            }
        };
        let terminal = text(&request, 41).unwrap_or_default().to_owned();
        let (answer, mac) = match request.mti.as_str() {
            "0800" => (self.network(&request).await, false),
            "0200" => self.financial(&request, raw).await,
            "0400" | "0401" => self.terminal_reversal(&request, raw).await,
            _ => (self.reply(&request, rc::INVALID_TXN), true),
        };
        let mut answer = answer;
        if mac && !terminal.is_empty() {
            if let Ok(bytes) = encode_with_mac(
                &self.terminal_spec,
                self.hsm.as_ref(),
                &terminal_key(&terminal, "TAK"),
                &mut answer,
            ) {
                return Some(bytes);
            }
            // Without a TAK the terminal cannot check a MAC anyway.
            answer.remove(64);
            answer.remove(128);
        }
        self.terminal_spec.encode(&answer).ok()
    }

    /// A reply skeleton echoing the identifying fields.
    pub(crate) fn reply(&self, request: &Message, code: &str) -> Message {
        let mut m = Message::new(crate::host::response_mti(&request.mti));
        m.tpdu = request.tpdu.as_ref().map(|t| swap_tpdu(t).into());
        m.header = request.header.clone();
        // The card number is not echoed: the terminal has it, and answers stay PAN-free.
        for n in [3, 4, 11, 12, 13, 25, 41, 42, 49, 60] {
            if let Some(v) = request.get(n) {
                m.set(n, v.clone());
            }
        }
        m.set(39, code);
        m
    }

    async fn network(&self, request: &Message) -> Message {
        let terminal = text(request, 41).unwrap_or_default();
        match network_code(request) {
            Some("301") => self.reply(request, rc::APPROVED),
            Some("001" | "003" | "004") => {
                let tmk = terminal_key(terminal, "TMK");
                let mut f62 = Vec::with_capacity(38);
                for (which, usage) in [("TPK", KeyUsage::Pin), ("TAK", KeyUsage::Mac)] {
                    match self
                        .hsm
                        .generate_working_key(&tmk, &terminal_key(terminal, which), usage)
                    {
                        Ok((wrapped, kcv)) => {
                            f62.extend_from_slice(&wrapped);
                            f62.extend_from_slice(&hex::decode(&kcv).unwrap_or_default());
                        }
                        Err(e) => {
                            tracing::warn!(terminal, error = %e, "sign-on refused");
                            return self.reply(request, rc::NOT_SIGNED_ON);
                        }
                    }
                }
                tracing::info!(terminal, "terminal signed on; new working keys issued");
                let mut m = self.reply(request, rc::APPROVED);
                m.set(62, FieldValue::Binary(f62.into()));
                m
            }
            _ => self.reply(request, rc::INVALID_TXN),
        }
    }

    async fn financial(&self, request: &Message, raw: &[u8]) -> (Message, bool) {
        let terminal = text(request, 41).unwrap_or_default().to_owned();
        let (Some(stan), Some(pcode)) = (text(request, 11), text(request, 3)) else {
            return (self.reply(request, rc::FORMAT_ERROR), true);
        };
        let pan = pan_of(request).unwrap_or_default();
        if terminal.is_empty() || pan.len() < 13 {
            return (self.reply(request, rc::FORMAT_ERROR), true);
        }
        let txn = new_txn(request, stan, pcode, &pan);
        // Everything that can refuse the request runs before it is journaled, so that the
        // common path is one journal write (SENT) before the send and one (the answer) after.
        let prepared = self.host_request(request, raw, &terminal, stan, &pan);
        let (host_req, encoded) = match prepared {
            Ok(ready) => ready,
            // Refused before sending: RECEIVED, then DECLINED (a retransmission still finds
            // its first answer through `begin`).
            Err(code) => {
                return match self.begin(request, txn).await {
                    Ok(id) => (self.decline(request, id, code).await, true),
                    Err(answer) => (answer, true),
                };
            }
        };
        let id = match self.begin_sent(request, txn, DEFAULT_BACKEND).await {
            Ok(id) => id,
            Err(answer) => return (answer, true),
        };
        match self
            .host
            .exchange(&host_req, &encoded, self.host_timeout)
            .await
        {
            Ok(host_answer) => self.finish(request, id, host_answer).await,
            Err(e) => (self.not_answered(request, id, &e, None).await, true),
        }
    }

    /// The host request of a terminal's financial request, MAC'd under the ZAK, with its
    /// encoding: the terminal's MAC verified, the PIN block translated TPK → ZPK. `Err`: the
    /// response code to decline with.
    fn host_request(
        &self,
        request: &Message,
        raw: &[u8],
        terminal: &str,
        stan: &str,
        pan: &str,
    ) -> Result<(Message, Vec<u8>), &'static str> {
        if !verify_mac(
            &self.terminal_spec,
            self.hsm.as_ref(),
            &terminal_key(terminal, "TAK"),
            request,
            raw,
        ) {
            tracing::warn!(terminal, stan, "terminal MAC check failed");
            return Err(rc::MAC_ERROR);
        }
        // The same data elements, the PIN blocks under the ZPK, a new MAC. A PIN change
        // (F3 70xxxx) carries the new PIN block in F62, translated like F52.
        let mut host_req = request.clone();
        host_req.remove(64);
        host_req.remove(128);
        let tpk = terminal_key(terminal, "TPK");
        if let Err(e) = translate_pin_blocks(self.hsm.as_ref(), &tpk, &self.zpk, pan, &mut host_req)
        {
            tracing::warn!(terminal, stan, error = %e, "PIN blocks not translated");
            return Err(e.code());
        }
        match encode_with_mac(
            self.host.spec(),
            self.hsm.as_ref(),
            &self.zak,
            &mut host_req,
        ) {
            Ok(encoded) => Ok((host_req, encoded)),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the host request");
                Err(rc::SYSTEM)
            }
        }
    }

    /// Journals a new request (RECEIVED), or answers a retransmission with the first answer,
    /// a clash with 94 and a journal failure with 96 (`Err`: the answer to give).
    pub(crate) async fn begin(&self, request: &Message, txn: NewTxn) -> Result<i64, Message> {
        match self.journal.begin(txn).await {
            Ok(Begin::New(id)) => Ok(id),
            Ok(Begin::Existing(r)) => Err(self.replay(request, r).await),
            Ok(Begin::Clash(_)) => Err(self.reply(request, rc::DUPLICATE)),
            Err(e) => {
                tracing::error!(error = %e, "journal unavailable; request refused");
                Err(self.reply(request, rc::SYSTEM))
            }
        }
    }

    /// Journals a new request directly as SENT to `backend` (its message is ready and goes out
    /// next), or answers like [`Engine::begin`]; a journal failure is 96 and nothing is sent.
    pub(crate) async fn begin_sent(
        &self,
        request: &Message,
        txn: NewTxn,
        backend: &str,
    ) -> Result<i64, Message> {
        match self.journal.begin_sent(txn, backend).await {
            Ok(Begin::New(id)) => Ok(id),
            Ok(Begin::Existing(r)) => Err(self.replay(request, r).await),
            Ok(Begin::Clash(_)) => Err(self.reply(request, rc::DUPLICATE)),
            Err(e) => {
                tracing::error!(error = %e, "journal unavailable before sending; request refused");
                Err(self.reply(request, rc::SYSTEM))
            }
        }
    }

    /// Declines journaled row `id` with `code` before anything was sent.
    pub(crate) async fn decline(&self, request: &Message, id: i64, code: &str) -> Message {
        let answer = self.reply(request, code);
        let a = Answer {
            response_code: Some(code.to_owned()),
            response_json: serde_json::to_string(&answer).ok(),
            ..Answer::default()
        };
        let _ = self.journal.transition(id, TxnState::Declined, a).await;
        answer
    }

    /// A sent request got no answer: declined 91 when nothing left, else in doubt (98) with
    /// a reversal — queued for the reversal worker (`own_reversal` = `None`), or left to the
    /// caller's own reversal delivery, which `own_reversal` wakes.
    pub(crate) async fn not_answered(
        &self,
        request: &Message,
        id: i64,
        error: &HostError,
        own_reversal: Option<&tokio::sync::Notify>,
    ) -> Message {
        let terminal = text(request, 41).unwrap_or_default();
        let stan = text(request, 11).unwrap_or_default();
        if let HostError::NotSent(reason) = error {
            tracing::warn!(
                terminal,
                stan,
                reason,
                "host unreachable; declined without sending"
            );
            // SENT → DECLINED: the bytes never left.
            return self.decline(request, id, rc::HOST_DOWN).await;
        }
        tracing::warn!(terminal, stan, error = %error, "no host answer; reversing");
        let answer = self.reply(request, rc::NO_ANSWER);
        let a = Answer {
            response_code: Some(rc::NO_ANSWER.into()),
            response_json: serde_json::to_string(&answer).ok(),
            ..Answer::default()
        };
        match own_reversal {
            // The 98 and the queued reversal are one commit: the worker cannot close the row
            // before the answer is on it.
            None => match self
                .journal
                .queue_reversal_answered(id, "TIMEOUT", self.reversal_ttl, a)
                .await
            {
                Ok(_) => self.reversals.notify_one(),
                Err(e) => {
                    tracing::error!(error = %e, journal_id = id, "cannot queue the reversal; recovery will")
                }
            },
            // With its own reversal delivery, the caller's worker is woken once the row is
            // IN_DOUBT with its answer.
            Some(wake) => {
                let _ = self.journal.transition(id, TxnState::InDoubt, a).await;
                wake.notify_one();
            }
        }
        answer
    }

    /// Records the host's answer and builds the terminal's.
    async fn finish(&self, request: &Message, id: i64, host_answer: Message) -> (Message, bool) {
        // The host's MAC is checked on a re-encoding: codecs are canonical for a profile.
        let raw = self.host.spec().encode(&host_answer).unwrap_or_default();
        if !verify_mac(
            self.host.spec(),
            self.hsm.as_ref(),
            &self.zak,
            &host_answer,
            &raw,
        ) {
            tracing::warn!(
                journal_id = id,
                "host answer failed its MAC check; treating as no answer"
            );
            let _ = self
                .journal
                .queue_reversal(id, "BAD_HOST_MAC", self.reversal_ttl)
                .await;
            self.reversals.notify_one();
            return (self.reply(request, rc::NO_ANSWER), true);
        }
        (self.record_answer(request, id, &host_answer).await, true)
    }

    /// Records an authenticated host answer to row `id` (APPROVED / DECLINED) and builds the
    /// reply; if it cannot be recorded the transaction is reversed and the reply is 96.
    pub(crate) async fn record_answer(
        &self,
        request: &Message,
        id: i64,
        host_answer: &Message,
    ) -> Message {
        let code = text(host_answer, 39).unwrap_or(rc::SYSTEM).to_owned();
        let mut answer = self.reply(request, &code);
        for n in [37, 38, 44, 54, 15] {
            if let Some(v) = host_answer.get(n) {
                answer.set(n, v.clone());
            }
        }
        let state = if code == rc::APPROVED {
            TxnState::Approved
        } else {
            TxnState::Declined
        };
        let a = Answer {
            response_code: Some(code),
            rrn: text(host_answer, 37).map(str::to_owned),
            auth_code: text(host_answer, 38).map(str::to_owned),
            response_json: serde_json::to_string(&answer).ok(),
        };
        if let Err(e) = self.journal.transition(id, state, a).await {
            // The host answered but we could not record it: reverse rather than hand out money.
            tracing::error!(error = %e, journal_id = id, "cannot record the host answer; reversing");
            let _ = self
                .journal
                .queue_reversal(id, "JOURNAL", self.reversal_ttl)
                .await;
            self.reversals.notify_one();
            return self.reply(request, rc::SYSTEM);
        }
        answer
    }

    /// The answer to a retransmission: the stored one, or 98 while the first is unanswered.
    pub(crate) async fn replay(&self, request: &Message, record: TxnRecord) -> Message {
        let deadline = tokio::time::Instant::now() + self.host_timeout + Duration::from_secs(1);
        let mut record = record;
        while !record.state.is_answered() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.journal.get(record.id).await {
                Ok(r) => record = r,
                Err(_) => break,
            }
        }
        match record
            .response_json
            .as_deref()
            .map(serde_json::from_str::<Message>)
        {
            Some(Ok(mut stored)) => {
                stored.tpdu = request.tpdu.as_ref().map(|t| swap_tpdu(t).into());
                stored
            }
            _ => self.reply(
                request,
                record.response_code.as_deref().unwrap_or(rc::NO_ANSWER),
            ),
        }
    }

    async fn terminal_reversal(&self, request: &Message, raw: &[u8]) -> (Message, bool) {
        let terminal = text(request, 41).unwrap_or_default().to_owned();
        if !verify_mac(
            &self.terminal_spec,
            self.hsm.as_ref(),
            &terminal_key(&terminal, "TAK"),
            request,
            raw,
        ) {
            return (self.reply(request, rc::MAC_ERROR), true);
        }
        let (Some(stan), Some(date)) = (text(request, 11), text(request, 13)) else {
            return (self.reply(request, rc::FORMAT_ERROR), true);
        };
        let replacement = match replacement_of(request) {
            Ok(r) => r,
            Err(code) => {
                tracing::warn!(terminal, stan, "malformed F95 in a reversal");
                return (self.reply(request, code), true);
            }
        };
        let original = match self.journal.find(&terminal, stan, date).await {
            Ok(Some(r)) => r,
            Ok(None) => return (self.reply(request, rc::ORIGINAL_NOT_FOUND), true),
            Err(e) => {
                tracing::error!(error = %e, "journal unavailable; reversal not accepted");
                return (self.reply(request, rc::SYSTEM), true);
            }
        };
        let code = self
            .queue_requested_reversal(&original, replacement, "TERMINAL")
            .await;
        (self.reply(request, code), true)
    }

    /// The answer to a reversal request when `original` already has a reversal queued (see
    /// [`Engine::queue_requested_reversal`]), `None` when it has none.
    async fn repeated_reversal(
        &self,
        original: &TxnRecord,
        replacement: Option<i64>,
        reason: &str,
    ) -> Option<&'static str> {
        match self.journal.reversal_amounts(original.id).await {
            Ok(Some(queued)) => {
                let same = queued.replacement_minor == replacement;
                let engine_full = queued.replacement_minor.is_none() && queued.reason != reason;
                Some(if same || engine_full {
                    rc::APPROVED
                } else {
                    tracing::warn!(
                        journal_id = original.id,
                        "reversal repeated with other replacement amounts"
                    );
                    rc::DUPLICATE
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "journal unavailable; reversal not accepted");
                Some(rc::SYSTEM)
            }
        }
    }

    /// Queues the reversal a terminal or channel asked for (`replacement`: its F95 amount,
    /// `None` for a full reversal) and returns the code to answer:
    ///
    /// - an approved original: full or partial reversal, 00; a partial one whose amount that
    ///   stands is not below the original amount is refused with 13 and nothing is queued;
    /// - sent or in doubt (the requester was never told 00, so nothing was dispensed): a
    ///   full reversal whatever F95 says, 00;
    /// - a repeat (the row has a reversal already): 00 if it asks for the same amounts, or if
    ///   the queued one is a full reversal the engine started itself (no answer in time: the
    ///   requester was never told 00); a different amount than the requester's own earlier
    ///   reversal is 94;
    /// - declined, already reversed, never sent: nothing to undo, 00.
    pub(crate) async fn queue_requested_reversal(
        &self,
        original: &TxnRecord,
        replacement: Option<i64>,
        reason: &str,
    ) -> &'static str {
        if let Some(code) = self.repeated_reversal(original, replacement, reason).await {
            return code;
        }
        let partial = match original.state {
            TxnState::Approved => replacement,
            TxnState::Sent | TxnState::InDoubt => None,
            // Declined, already reversed, or never sent: nothing to undo.
            _ => return rc::APPROVED,
        };
        if partial.is_some_and(|r| r >= original.txn.amount_minor) {
            tracing::warn!(
                journal_id = original.id,
                "partial reversal refused: the replacement amount is not below the original amount"
            );
            return rc::INVALID_AMOUNT;
        }
        let queued = match partial {
            Some(r) => {
                self.journal
                    .queue_partial_reversal(original.id, reason, self.reversal_ttl, r)
                    .await
            }
            None => {
                self.journal
                    .queue_reversal(original.id, reason, self.reversal_ttl)
                    .await
            }
        };
        match queued {
            // Another request for the same original queued its reversal between the check
            // above and this one: answer as for any repeat.
            Ok(false) => self
                .repeated_reversal(original, replacement, reason)
                .await
                .unwrap_or(rc::SYSTEM),
            Ok(true) => {
                if let Some(r) = partial {
                    tracing::info!(
                        journal_id = original.id,
                        stands = r,
                        reversed = original.txn.amount_minor - r,
                        "partial reversal queued"
                    );
                }
                self.reversals.notify_one();
                rc::APPROVED
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot queue the requested reversal");
                rc::SYSTEM
            }
        }
    }
}

/// Why [`translate_pin_blocks`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PinTranslationError {
    /// A PIN change (F3 70xxxx) without an 8-byte new PIN block in F62.
    #[error("PIN change without an 8-byte new PIN block in F62")]
    NoNewPinBlock,
    /// The security module refused or failed.
    #[error("F{field}: {error}")]
    Failed { field: u16, error: String },
}

impl PinTranslationError {
    /// The response code to decline with.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            PinTranslationError::NoNewPinBlock => rc::FORMAT_ERROR,
            PinTranslationError::Failed { .. } => rc::SYSTEM,
        }
    }
}

/// Re-encrypts the PIN blocks of `request` in place from PIN key `from` to `to` (ISO 9564
/// format 0 both sides): F52 when present and, for a PIN change (F3 70xxxx), the new PIN block
/// in F62, which such a request must carry.
pub(crate) fn translate_pin_blocks(
    hsm: &dyn SecurityModule,
    from: &str,
    to: &str,
    pan: &str,
    request: &mut Message,
) -> Result<(), PinTranslationError> {
    let pin_change = text(request, 3).is_some_and(|p| p.starts_with(PIN_CHANGE));
    if pin_change
        && request
            .get(62)
            .and_then(FieldValue::as_bytes)
            .is_none_or(|b| b.len() != 8)
    {
        return Err(PinTranslationError::NoNewPinBlock);
    }
    let fields: &[u16] = if pin_change { &[52, 62] } else { &[52] };
    for &n in fields {
        let Some(block) = request.get(n).and_then(FieldValue::as_bytes) else {
            continue;
        };
        let translated = hsm
            .translate_pin(
                from,
                PinBlockFormat::Iso0,
                block,
                to,
                PinBlockFormat::Iso0,
                pan,
            )
            .map_err(|e| PinTranslationError::Failed {
                field: n,
                error: e.to_string(),
            })?;
        request.set(n, FieldValue::Binary(translated.into()));
    }
    Ok(())
}

/// The journal row of a financial request: identity (F41, F11, F13 — today when absent) and
/// a digest of its business content.
pub(crate) fn new_txn(request: &Message, stan: &str, pcode: &str, pan: &str) -> NewTxn {
    let amount: i64 = text(request, 4).and_then(|a| a.parse().ok()).unwrap_or(0);
    let date = text(request, 13).map_or_else(today_mmdd, str::to_owned);
    NewTxn {
        terminal_id: text(request, 41).unwrap_or_default().to_owned(),
        stan: stan.to_owned(),
        txn_date: date,
        mti: request.mti.clone(),
        processing_code: pcode.to_owned(),
        amount_minor: amount,
        currency: text(request, 49).unwrap_or_default().to_owned(),
        pan_masked: mask_pan(pan),
        request_digest: digest(&[
            pan,
            pcode,
            &amount.to_string(),
            text(request, 49).unwrap_or_default(),
        ]),
    }
}

pub(crate) fn swap_tpdu(t: &[u8]) -> Vec<u8> {
    // TPDU: id (1) | destination (2) | source (2); an answer swaps the addresses.
    if t.len() == 5 {
        vec![t[0], t[3], t[4], t[1], t[2]]
    } else {
        t.to_vec()
    }
}

pub(crate) fn today_mmdd() -> String {
    let days = crate::journal::now_ms() / 86_400_000;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), UTC.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{m:02}{d:02}")
}

/// A short digest of the business content of a request (FNV-1a, 64 bit): it only tells a
/// retransmission from a different request under the same key, it is not a security measure.
fn digest(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Builds the reversal (0400, or 0401 for a repeat) of a journaled transaction for the host;
/// `replacement` (the amount that stands) makes it partial: F95 carries it, F4 stays the
/// original amount.
pub fn reversal_message(record: &TxnRecord, attempt: i64, replacement: Option<i64>) -> Message {
    let original = format!(
        "{}{}{}000000{}",
        record.txn.mti,
        record.txn.stan,
        record.txn.txn_date,
        "0".repeat(22)
    );
    let mut m = Message::new(if attempt == 0 { "0400" } else { "0401" })
        .with_tpdu(vec![0x60, 0, 0, 0, 0])
        .with_header(vec![0x60, 0x31, 0, 0, 0, 0])
        .with(3, record.txn.processing_code.as_str())
        .with(4, format!("{:012}", record.txn.amount_minor))
        .with(11, record.txn.stan.as_str())
        .with(13, record.txn.txn_date.as_str())
        .with(39, "98")
        .with(41, record.txn.terminal_id.as_str())
        .with(90, original);
    if !record.txn.currency.is_empty() {
        m.set(49, record.txn.currency.as_str());
    }
    if let Some(r) = replacement {
        m.set(95, replacement_field(r));
    }
    m.set(
        60,
        FieldValue::Subfields(vec![
            Subfield::new("1", "00"),
            Subfield::new("2", "000000"),
            Subfield::new("3", "000"),
        ]),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pans_are_masked_and_found_in_track2() {
        assert_eq!(mask_pan("6222020200112233445"), "622202*********3445");
        let m = Message::new("0200").with(35, "6222020200112233445=4912101000000000");
        assert_eq!(pan_of(&m).as_deref(), Some("6222020200112233445"));
    }

    #[test]
    fn replacement_amounts_are_read_from_f95() {
        let m = |v: &str| Message::new("0400").with(95, v);
        assert_eq!(replacement_of(&Message::new("0400")), Ok(None));
        assert_eq!(
            replacement_of(&m(&replacement_field(20_000))),
            Ok(Some(20_000))
        );
        assert_eq!(
            replacement_of(&m(&replacement_field(0))),
            Ok(None),
            "zero: full"
        );
        let spaced = format!("{:012}{}", 5, " ".repeat(30));
        assert_eq!(replacement_of(&m(&spaced)), Ok(Some(5)));
        for bad in [
            "000000020000".to_owned(),
            format!("00000002000X{}", "0".repeat(30)),
            format!("{:012}-{}", 1, "0".repeat(29)),
        ] {
            assert_eq!(replacement_of(&m(&bad)), Err(rc::FORMAT_ERROR), "{bad}");
        }
        assert_eq!(replacement_field(20_000).len(), F95_LEN);
    }

    #[test]
    fn digests_tell_content_apart() {
        assert_eq!(digest(&["a", "b"]), digest(&["a", "b"]));
        assert_ne!(digest(&["ab", ""]), digest(&["a", "b"]));
    }

    #[test]
    fn today_is_a_date() {
        let d = today_mmdd();
        let (m, day): (u32, u32) = (d[..2].parse().unwrap(), d[2..].parse().unwrap());
        assert!((1..=12).contains(&m) && (1..=31).contains(&day));
    }
}
