//! Request processing: one encoded request in, what to do about it out.
//!
//! [`Host::handle`] is synchronous and never panics, whatever the bytes: undecodable input
//! closes the connection, anything decodable gets an answer (or, for a response MTI, is
//! ignored). Cryptography (MAC check, PIN block decryption) runs before the state lock is
//! taken; the lock is held only while deciding, sealing and remembering the response.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, mpsc};
use std::time::Duration;

use bytes::Bytes;
use openteller_codec::{FieldValue, Message, Spec};
use openteller_crypto::{PinBlockFormat, extract_pin};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use crate::clock;
use crate::config::{Config, HostKeys};
use crate::faults::Faults;
use crate::state::{
    Effect, FinRequest, JournalEntry, PinAttempt, Record, RevRequest, Seen, State, TxnKey, TxnKind,
};
use crate::wire::{self, MacCheck, OriginalData, mask_pan, pc, rc};

/// What the connection should do after a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Send this payload (unframed), after `delay` if any.
    Reply {
        payload: Bytes,
        delay: Option<Duration>,
    },
    /// Send nothing (dropped response, or the input was itself a response).
    Nothing,
    /// Close the connection (undecodable input, link down).
    Close,
}

/// Fields echoed from a 0200/0400 request into its response.
const ECHO_TXN: &[u16] = &[2, 3, 4, 11, 12, 13, 25, 32, 41, 42, 49];
/// Fields echoed from a 0800 request into its response.
const ECHO_NET: &[u16] = &[11, 12, 13, 32, 41, 42, 60];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Financial,
    Reversal,
    Network,
    Unsupported,
}

/// Classifies an MTI; `None` for responses (third digit odd), which are not answered.
fn classify(mti: &str) -> Option<(Class, String)> {
    let b = mti.as_bytes();
    let [v, c, f, _] = b else { return None };
    if f % 2 == 1 {
        return None;
    }
    let resp = format!("{}{}{}0", char::from(*v), char::from(*c), char::from(f + 1));
    let class = match (c, f) {
        (b'2', b'0') => Class::Financial,
        (b'4', b'0' | b'2') => Class::Reversal,
        (b'8', b'0') => Class::Network,
        _ => Class::Unsupported,
    };
    Some((class, resp))
}

fn hash_value(h: &mut DefaultHasher, v: &FieldValue) {
    match v {
        FieldValue::Text(s) => {
            0u8.hash(h);
            s.hash(h);
        }
        FieldValue::Binary(b) => {
            1u8.hash(h);
            b.hash(h);
        }
        FieldValue::Subfields(subs) => {
            2u8.hash(h);
            for s in subs {
                s.id.hash(h);
                hash_value(h, &s.value);
            }
        }
    }
}

/// Hash of a request's content: the MTI without its repeat digit (0200 = 0201) and every
/// field except the MAC fields.
fn fingerprint(msg: &Message) -> u64 {
    let mut h = DefaultHasher::new();
    msg.mti.get(..3).unwrap_or("").hash(&mut h);
    for n in (2..=127).filter(|&n| n != 64) {
        if let Some(v) = msg.get(n) {
            n.hash(&mut h);
            hash_value(&mut h, v);
        }
    }
    h.finish()
}

fn digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| c.is_ascii_digit())
}

fn text(msg: &Message, n: u16) -> Option<&str> {
    msg.text(n).filter(|s| !s.is_empty())
}

/// F11, F13 and F41 of a transaction request: its identity.
fn identity(msg: &Message, class: u8) -> Result<(TxnKey, String, String), &'static str> {
    let stan = text(msg, 11).filter(|s| digits(s, 6));
    let date = text(msg, 13).filter(|s| digits(s, 4));
    let terminal = text(msg, 41);
    match (stan, date, terminal) {
        (Some(stan), Some(date), Some(terminal)) => Ok((
            TxnKey {
                class,
                terminal: terminal.to_owned(),
                stan: stan.parse().map_err(|_| rc::FORMAT_ERROR)?,
                date: date.parse().map_err(|_| rc::FORMAT_ERROR)?,
            },
            stan.to_owned(),
            date.to_owned(),
        )),
        _ => Err(rc::FORMAT_ERROR),
    }
}

/// Whether F22 (POS entry mode, n 3) says the point of service cannot take a PIN: its third
/// digit (PIN entry capability, ISO 8583:1987 and CUP) is 2.
fn no_pin_entry(msg: &Message) -> bool {
    text(msg, 22).is_some_and(|m| m.len() == 3 && m.as_bytes()[2] == b'2')
}

fn amount(msg: &Message) -> Result<Option<i64>, &'static str> {
    match text(msg, 4) {
        None => Ok(None),
        Some(s) if s.len() <= 12 && s.bytes().all(|c| c.is_ascii_digit()) => {
            s.parse().map(Some).map_err(|_| rc::INVALID_AMOUNT)
        }
        Some(_) => Err(rc::INVALID_AMOUNT),
    }
}

/// The shared host: keys, books, faults.
pub(crate) struct Host {
    spec: Spec,
    keys: HostKeys,
    require_mac: bool,
    max_pin_tries: u8,
    state: Mutex<State>,
    faults: RwLock<Faults>,
    rrn: AtomicU64,
    /// Bumped to close every current connection.
    pub(crate) disconnect: watch::Sender<u64>,
    /// Open 8583 connections.
    pub(crate) connections: AtomicUsize,
}

impl Host {
    pub(crate) fn new(
        config: &Config,
        spec: Spec,
        journal: Option<mpsc::Sender<JournalEntry>>,
    ) -> Host {
        let now_s = clock::now_ms() / 1000;
        Host {
            spec,
            keys: config.keys.clone(),
            require_mac: config.require_mac,
            max_pin_tries: config.max_pin_tries,
            state: Mutex::new(State::new(&config.accounts, config.remember, journal)),
            faults: RwLock::new(config.faults),
            // Unique within a run; runs started in different seconds rarely overlap.
            rrn: AtomicU64::new((now_s % 1_000_000) * 1_000_000),
            disconnect: watch::channel(0).0,
            connections: AtomicUsize::new(0),
        }
    }

    /// The books. A panic elsewhere while holding the lock must not stop the host.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn faults(&self) -> Faults {
        *self.faults.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_faults(&self, f: Faults) {
        let was_down = {
            let mut w = self.faults.write().unwrap_or_else(|p| p.into_inner());
            let was = w.disconnect;
            *w = f;
            was
        };
        if f.disconnect && !was_down {
            self.disconnect_all();
        }
    }

    /// Closes every current 8583 connection; returns how many were open.
    pub(crate) fn disconnect_all(&self) -> usize {
        self.disconnect.send_modify(|g| *g = g.wrapping_add(1));
        self.connections.load(Ordering::Relaxed)
    }

    fn next_rrn(&self) -> (String, String) {
        let n = self.rrn.fetch_add(1, Ordering::Relaxed);
        (
            format!("{:012}", n % 1_000_000_000_000),
            format!("{:06}", (n.wrapping_mul(7919)) % 1_000_000),
        )
    }

    /// Handles one request payload (unframed).
    pub(crate) fn handle(&self, payload: &[u8]) -> Outcome {
        let faults = self.faults();
        if faults.disconnect {
            return Outcome::Close;
        }
        let msg = match self.spec.decode(payload) {
            Ok(m) => m,
            Err(e) => {
                warn!(code = e.code(), error = %e, "undecodable 8583 message: closing the connection");
                return Outcome::Close;
            }
        };
        self.process(&msg, Some(payload), faults)
    }

    /// Handles one request that arrived on a trusted format listener ([`crate::listeners`]):
    /// already a `cup` message, without a MAC to check (the answer is still sealed).
    pub(crate) fn handle_trusted(&self, msg: &Message) -> Outcome {
        let faults = self.faults();
        if faults.disconnect {
            return Outcome::Close;
        }
        self.process(msg, None, faults)
    }

    /// The spec of the messages handled (the `cup` profile).
    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }

    /// A decoded request; `payload` is its encoding for the MAC check, `None` for a trusted
    /// listener (no MAC check).
    fn process(&self, msg: &Message, payload: Option<&[u8]>, faults: Faults) -> Outcome {
        let Some((class, resp_mti)) = classify(&msg.mti) else {
            debug!(mti = %msg.mti, "ignoring a response MTI");
            return Outcome::Nothing;
        };
        self.lock().summary.requests += 1;
        let reply = match class {
            Class::Unsupported => {
                let seal = msg.has(64) || msg.has(128);
                self.answer(msg, &resp_mti, ECHO_TXN, rc::INVALID_TRANSACTION, seal)
            }
            Class::Network => match payload.map(|p| self.keys.mac.check(&self.spec, p, msg)) {
                None | Some(MacCheck::Missing) => {
                    self.answer(msg, &resp_mti, ECHO_NET, rc::APPROVED, false)
                }
                Some(MacCheck::Valid) => self.answer(msg, &resp_mti, ECHO_NET, rc::APPROVED, true),
                Some(MacCheck::Invalid) => {
                    self.answer(msg, &resp_mti, ECHO_NET, rc::MAC_ERROR, true)
                }
            },
            Class::Financial | Class::Reversal => {
                self.transaction(msg, payload, class, &resp_mti, &faults)
            }
        };
        let Some(payload) = reply else {
            return Outcome::Close;
        };
        if Faults::roll(faults.drop_rate) {
            self.lock().summary.dropped += 1;
            debug!(mti = %msg.mti, "fault: response dropped");
            return Outcome::Nothing;
        }
        Outcome::Reply {
            payload,
            delay: (faults.delay_ms > 0).then(|| Duration::from_millis(faults.delay_ms)),
        }
    }

    fn transaction(
        &self,
        msg: &Message,
        payload: Option<&[u8]>,
        class: Class,
        resp_mti: &str,
        faults: &Faults,
    ) -> Option<Bytes> {
        let mac_ok = match payload.map(|p| self.keys.mac.check(&self.spec, p, msg)) {
            None | Some(MacCheck::Valid) => true,
            Some(MacCheck::Missing) => !self.require_mac,
            Some(MacCheck::Invalid) => false,
        };
        if !mac_ok {
            debug!(mti = %msg.mti, stan = ?msg.text(11), "MAC error");
            return self.answer(msg, resp_mti, ECHO_TXN, rc::MAC_ERROR, true);
        }
        if let Some(code) = faults.response_code
            && Faults::roll(faults.response_rate)
        {
            self.lock().summary.injected += 1;
            debug!(mti = %msg.mti, code = %code, "fault: injected response code");
            return self.answer(msg, resp_mti, ECHO_TXN, code.as_str(), true);
        }
        let result = if class == Class::Financial {
            self.financial(msg, resp_mti)
        } else {
            self.reversal(msg, resp_mti)
        };
        match result {
            Ok(bytes) => bytes,
            Err(code) => self.answer(msg, resp_mti, ECHO_TXN, code, true),
        }
    }

    /// Parses a 0200, decrypting its PIN blocks (outside the lock).
    fn parse_financial(&self, msg: &Message) -> Result<FinRequest, &'static str> {
        let pcode = text(msg, 3)
            .filter(|s| digits(s, 6))
            .ok_or(rc::FORMAT_ERROR)?;
        let kind = match pcode.get(..2) {
            Some(pc::INQUIRY) => TxnKind::Inquiry,
            Some(pc::WITHDRAWAL) => TxnKind::Withdrawal,
            Some(pc::TRANSFER) => TxnKind::Transfer,
            Some(pc::PIN_CHANGE) => TxnKind::PinChange,
            _ => return Err(rc::INVALID_TRANSACTION),
        };
        let (key, stan, date) = identity(msg, 2)?;
        let track2 = text(msg, 35).map(wire::track2_pan_expiry);
        let (t2_pan, t2_exp) = match track2 {
            Some(Some((p, e))) => (Some(p), e),
            Some(None) => return Err(rc::FORMAT_ERROR),
            None => (None, None),
        };
        let pan = match (text(msg, 2), t2_pan) {
            (Some(a), Some(b)) if a != b => return Err(rc::FORMAT_ERROR),
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => return Err(rc::FORMAT_ERROR),
        };
        if !(13..=19).contains(&pan.len()) || !pan.bytes().all(|c| c.is_ascii_digit()) {
            return Err(rc::INVALID_CARD);
        }
        let expiry = text(msg, 14).or(t2_exp).map(str::to_owned);
        let amount = amount(msg)?;
        if matches!(kind, TxnKind::Withdrawal | TxnKind::Transfer) && amount.unwrap_or(0) <= 0 {
            return Err(rc::INVALID_AMOUNT);
        }
        let to_pan = if kind == TxnKind::Transfer {
            if text(msg, 102).is_some_and(|from| from != pan) {
                return Err(rc::INVALID_TRANSACTION);
            }
            Some(text(msg, 103).ok_or(rc::FORMAT_ERROR)?.to_owned())
        } else {
            None
        };
        let (current, new) = self.pin_blocks(msg);
        let pin = match current {
            Some(block) => match extract_pin(self.keys.pin_format, block, pan, &self.keys.zpk) {
                Ok(p) => PinAttempt::Clear(p),
                Err(_) => PinAttempt::Undecodable,
            },
            // No PIN block: acceptable only from a point of service without PIN entry
            // capability (F22, third digit 2), and only for some transactions (decided with
            // the account); a PIN change always needs the current PIN.
            None if no_pin_entry(msg) && kind != TxnKind::PinChange => PinAttempt::Absent,
            None => return Err(rc::FORMAT_ERROR),
        };
        let new_pin = if kind == TxnKind::PinChange {
            let block = new.ok_or(rc::FORMAT_ERROR)?;
            Some(
                extract_pin(self.keys.pin_format, block, pan, &self.keys.zpk)
                    .map_err(|_| rc::FORMAT_ERROR)?,
            )
        } else {
            None
        };
        Ok(FinRequest {
            kind,
            mti: msg.mti.clone(),
            key,
            stan,
            date,
            fingerprint: fingerprint(msg),
            pan: pan.to_owned(),
            expiry,
            amount,
            currency: text(msg, 49).map(str::to_owned),
            pin,
            new_pin,
            to_pan,
        })
    }

    /// (current PIN block, new PIN block): F52 and F62 with TDES; with SM4 (16-byte
    /// blocks, which F52 `b 8` cannot carry) F62 holds current || new.
    fn pin_blocks<'m>(&self, msg: &'m Message) -> (Option<&'m [u8]>, Option<&'m [u8]>) {
        if self.keys.pin_format == PinBlockFormat::Sm4Iso0 {
            let f62 = msg.bytes(62);
            (
                f62.and_then(|b| b.get(..16)),
                f62.and_then(|b| b.get(16..32)),
            )
        } else {
            (msg.bytes(52), msg.bytes(62))
        }
    }

    fn financial(&self, msg: &Message, resp_mti: &str) -> Result<Option<Bytes>, &'static str> {
        let req = self.parse_financial(msg)?;
        let now = clock::now_ms();
        let mut st = self.lock();
        match st.seen(&req.key, req.fingerprint) {
            Seen::New => {}
            Seen::Again(bytes) => {
                debug!(stan = %req.stan, terminal = %req.key.terminal, "retransmission: same response");
                return Ok(Some(bytes));
            }
            Seen::Refuse(code) => {
                drop(st);
                return Err(code);
            }
        }
        let d = st.decide(&req, now, self.max_pin_tries);
        let (rrn, auth) = self.next_rrn();
        let mut resp = self.response(msg, resp_mti, ECHO_TXN, d.code);
        resp.set(37, rrn.clone());
        if d.code == rc::APPROVED {
            resp.set(38, auth);
        }
        if let Some((currency, available)) = &d.balance {
            let b = wire::Balance {
                account_type: wire::ACCOUNT_TYPE_SAVINGS.to_owned(),
                amount_type: wire::AMOUNT_TYPE_AVAILABLE.to_owned(),
                currency: currency.clone(),
                amount: *available,
            };
            resp.set(54, b.to_field());
        }
        let bytes = match self.keys.mac.seal(&self.spec, &mut resp) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                error!(error = %e, "cannot encode a response; the request was applied");
                return Ok(None);
            }
        };
        st.count_response(d.code);
        debug!(
            mti = %req.mti, stan = %req.stan, terminal = %req.key.terminal,
            pan = %mask_pan(&req.pan), kind = ?req.kind, code = d.code, "financial"
        );
        if let Some(draft) = d.journal {
            st.journal(
                draft,
                now,
                &req.mti,
                &req.key.terminal,
                &req.stan,
                &req.date,
                &rrn,
            );
        }
        st.remember(
            req.key,
            Record {
                fingerprint: req.fingerprint,
                response: Some(bytes.clone()),
                effect: d.effect,
                kind: req.kind,
                rrn,
                reversed: false,
            },
        );
        Ok(Some(bytes))
    }

    fn parse_reversal(&self, msg: &Message) -> Result<RevRequest, &'static str> {
        let (key, stan, date) = identity(msg, 4)?;
        let original = match text(msg, 90) {
            Some(f90) => {
                let o = OriginalData::parse(f90).ok_or(rc::FORMAT_ERROR)?;
                if !o.mti.starts_with("020") {
                    return Err(rc::ORIGINAL_NOT_FOUND);
                }
                TxnKey {
                    class: 2,
                    terminal: key.terminal.clone(),
                    stan: o.stan.parse().map_err(|_| rc::FORMAT_ERROR)?,
                    date: o.date.parse().map_err(|_| rc::FORMAT_ERROR)?,
                }
            }
            None => TxnKey {
                class: 2,
                ..key.clone()
            },
        };
        let pan = match (
            text(msg, 2),
            text(msg, 35).and_then(wire::track2_pan_expiry),
        ) {
            (Some(p), _) => Some(p.to_owned()),
            (None, Some((p, _))) => Some(p.to_owned()),
            (None, None) => None,
        };
        Ok(RevRequest {
            mti: msg.mti.clone(),
            key,
            stan,
            date,
            fingerprint: fingerprint(msg),
            original,
            pan,
            amount: amount(msg)?,
            // A zero replacement amount means nothing stands: a full reversal.
            replacement: match text(msg, 95) {
                None => None,
                Some(f95) => {
                    let r = wire::Replacement::parse(f95).ok_or(rc::FORMAT_ERROR)?;
                    (r.amount > 0).then_some(r.amount)
                }
            },
        })
    }

    fn reversal(&self, msg: &Message, resp_mti: &str) -> Result<Option<Bytes>, &'static str> {
        let rev = self.parse_reversal(msg)?;
        let now = clock::now_ms();
        let mut st = self.lock();
        match st.seen(&rev.key, rev.fingerprint) {
            Seen::New => {}
            Seen::Again(bytes) => return Ok(Some(bytes)),
            Seen::Refuse(code) => {
                drop(st);
                return Err(code);
            }
        }
        let d = st.reverse(&rev);
        let (rrn, _) = self.next_rrn();
        let mut resp = self.response(msg, resp_mti, ECHO_TXN, d.code);
        resp.set(37, rrn.clone());
        let bytes = match self.keys.mac.seal(&self.spec, &mut resp) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                error!(error = %e, "cannot encode a response; the reversal was applied");
                return Ok(None);
            }
        };
        st.count_response(d.code);
        debug!(
            mti = %rev.mti, stan = %rev.stan, terminal = %rev.key.terminal,
            original_stan = rev.original.stan, code = d.code, "reversal"
        );
        if let Some(draft) = d.journal {
            st.journal(
                draft,
                now,
                &rev.mti,
                &rev.key.terminal,
                &rev.stan,
                &rev.date,
                &rrn,
            );
        }
        st.remember(
            rev.key,
            Record {
                fingerprint: rev.fingerprint,
                response: Some(bytes.clone()),
                effect: Effect::None,
                kind: TxnKind::Reversal,
                rrn,
                reversed: false,
            },
        );
        Ok(Some(bytes))
    }

    /// The skeleton of a response: TPDU swapped, header echoed, `echo` fields copied, F39.
    fn response(&self, req: &Message, mti: &str, echo: &[u16], code: &str) -> Message {
        let mut r = Message::new(mti);
        r.tpdu = req.tpdu.as_deref().map(|t| wire::response_tpdu(t).into());
        r.header = req.header.clone();
        for &n in echo {
            if let Some(v) = req.get(n) {
                r.set(n, v.clone());
            }
        }
        r.set(39, code);
        r
    }

    /// A response that changes nothing and is not remembered (MAC error, format error,
    /// injected code, duplicate, echo test...).
    fn answer(
        &self,
        req: &Message,
        mti: &str,
        echo: &[u16],
        code: &str,
        seal: bool,
    ) -> Option<Bytes> {
        let mut r = self.response(req, mti, echo, code);
        if echo == ECHO_TXN {
            let (rrn, auth) = self.next_rrn();
            r.set(37, rrn);
            if code == rc::APPROVED && mti.starts_with("021") {
                r.set(38, auth);
            }
        }
        let encoded = if seal {
            self.keys.mac.seal(&self.spec, &mut r)
        } else {
            self.spec.encode(&r).map_err(Into::into)
        };
        match encoded {
            Ok(b) => {
                self.lock().count_response(code);
                Some(Bytes::from(b))
            }
            Err(e) => {
                warn!(error = %e, mti = %req.mti, "cannot encode a response: closing the connection");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Terminal;
    use proptest::prelude::*;

    const CONFIG: &str = r#"
[keys]
zpk = "0123456789ABCDEFFEDCBA9876543210"
zak = "89ABCDEF0123456776543210FEDCBA98"
[[account]]
pan = "6222020200112233445"
pin = "1234"
balance = 100000
"#;

    fn host() -> Host {
        let config = Config::from_toml_str(CONFIG, std::path::Path::new(".")).unwrap();
        Host::new(&config, wire::spec().unwrap(), None)
    }

    /// One host for all fuzz cases: building one per case would dominate the run time.
    fn shared() -> &'static Host {
        static HOST: std::sync::LazyLock<Host> = std::sync::LazyLock::new(host);
        &HOST
    }

    fn terminal() -> Terminal {
        let config = Config::from_toml_str(CONFIG, std::path::Path::new(".")).unwrap();
        Terminal::new("ATM00001", "OPENTELLER0001 ", config.keys)
    }

    fn reply(h: &Host, bytes: &[u8]) -> Message {
        match h.handle(bytes) {
            Outcome::Reply { payload, .. } => wire::spec().unwrap().decode(&payload).unwrap(),
            other => panic!("no reply: {other:?}"),
        }
    }

    #[test]
    fn classify_mtis() {
        assert_eq!(classify("0200"), Some((Class::Financial, "0210".into())));
        assert_eq!(classify("0201"), Some((Class::Financial, "0210".into())));
        assert_eq!(classify("0401"), Some((Class::Reversal, "0410".into())));
        assert_eq!(classify("0420"), Some((Class::Reversal, "0430".into())));
        assert_eq!(classify("0800"), Some((Class::Network, "0810".into())));
        assert_eq!(classify("0100"), Some((Class::Unsupported, "0110".into())));
        assert_eq!(classify("0210"), None);
        assert_eq!(classify("02"), None);
    }

    #[test]
    fn withdrawal_retransmission_and_reversal() {
        let h = host();
        let mut t = terminal();
        let w = t.withdrawal("6222020200112233445", "1234", 5000);
        let bytes = t.seal(&mut w.clone()).unwrap();
        let r1 = reply(&h, &bytes);
        assert_eq!(r1.text(39), Some("00"));
        let r2 = reply(&h, &bytes);
        assert_eq!(r1, r2);
        assert_eq!(h.lock().accounts["6222020200112233445"].available, 95000);
        let rev = t.reversal_of(&w);
        let rb = t.seal(&mut rev.clone()).unwrap();
        assert_eq!(reply(&h, &rb).text(39), Some("00"));
        assert_eq!(h.lock().accounts["6222020200112233445"].available, 100000);
        let mut again = t.reversal_of(&w);
        assert_eq!(reply(&h, &t.seal(&mut again).unwrap()).text(39), Some("00"));
        assert_eq!(h.lock().accounts["6222020200112233445"].available, 100000);
    }

    #[test]
    fn sm4_keys_carry_pin_blocks_in_f62() {
        let text = r#"
[keys]
algorithm = "sm4"
zpk = "0123456789ABCDEFFEDCBA9876543210"
zak = "89ABCDEF0123456776543210FEDCBA98"
[[account]]
pan = "6222020200112233445"
pin = "1234"
balance = 100000
"#;
        let config = Config::from_toml_str(text, std::path::Path::new(".")).unwrap();
        let h = Host::new(&config, wire::spec().unwrap(), None);
        let mut t = Terminal::new("ATM00001", "OPENTELLER0001", config.keys);
        let pan = "6222020200112233445";
        let mut w = t.withdrawal(pan, "1234", 100);
        assert_eq!(w.bytes(62).map(<[u8]>::len), Some(16));
        assert!(!w.has(52));
        let r = reply(&h, &t.seal(&mut w).unwrap());
        assert_eq!(r.text(39), Some("00"));
        let mut change = t.pin_change(pan, "1234", "5678");
        assert_eq!(change.bytes(62).map(<[u8]>::len), Some(32));
        assert_eq!(
            reply(&h, &t.seal(&mut change).unwrap()).text(39),
            Some("00")
        );
        let mut inq = t.inquiry(pan, "5678");
        let bytes = t.seal(&mut inq).unwrap();
        let payload = match h.handle(&bytes) {
            Outcome::Reply { payload, .. } => payload,
            other => panic!("{other:?}"),
        };
        let (resp, check) = t.open(&payload).unwrap();
        assert_eq!(resp.text(39), Some("00"));
        assert_eq!(check, MacCheck::Valid);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = shared().handle(&bytes);
        }

        #[test]
        fn mutated_requests_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let h = shared();
            let mut t = terminal();
            let mut m = t.withdrawal("6222020200112233445", "1234", 100);
            let mut bytes = t.seal(&mut m).unwrap();
            for (i, b) in flips {
                let len = bytes.len();
                bytes[i % len] ^= b;
            }
            let cut = cut % (bytes.len() + 1);
            let _ = h.handle(&bytes[..cut]);
            let _ = h.handle(&bytes);
        }
    }
}
