//! The wire contract between the online transaction engine and the host, as code.
//!
//! Everything here is pure and shared: the host uses it to check requests and seal
//! responses, the engine (and its tests) can use it to build requests and check responses
//! with exactly the same definitions. See `docs/host-sim.md` for the prose version.
//!
//! * Framing: a 2-byte big-endian binary length in front of each message ([`framer`]).
//! * Payload: a `cup` profile message: TPDU (5) + header (6) + BCD MTI (2) + bitmap(s) +
//!   fields ([`spec`]).
//! * MAC: the last field of the message, F64, or F128 when the message has a secondary
//!   bitmap (any field above 64); 8 bytes computed over [`mac_input`].
//!
//! Nothing here panics on malformed input.

use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::{CodecError, Message, Spec};
use openteller_crypto::{CryptoError, Key, MacAlgorithm};

/// Name of the codec profile spoken on the wire.
pub const PROFILE: &str = "cup";
/// Length of the TPDU at the start of every message.
pub const TPDU_LEN: usize = 5;
/// Length of the CUP header after the TPDU.
pub const HEADER_LEN: usize = 6;
/// Offset of the MTI in an encoded message: where the MAC input starts.
pub const MTI_OFFSET: usize = TPDU_LEN + HEADER_LEN;
/// Length of the MAC field value (F64 / F128).
pub const MAC_LEN: usize = 8;
/// Largest payload accepted in one frame (the `cup` profile's maximum message length).
pub const MAX_FRAME: usize = 4096;

/// ISO 8583 response codes (F39) the host answers with.
pub mod rc {
    /// Approved.
    pub const APPROVED: &str = "00";
    /// Invalid transaction (unknown processing code or MTI, wrong account, ...).
    pub const INVALID_TRANSACTION: &str = "12";
    /// Invalid amount (missing, zero, or not the original's amount in a reversal).
    pub const INVALID_AMOUNT: &str = "13";
    /// Invalid card number (unknown PAN or unknown to-account).
    pub const INVALID_CARD: &str = "14";
    /// Original transaction not found (reversal).
    pub const ORIGINAL_NOT_FOUND: &str = "25";
    /// Format error (a mandatory field is missing or malformed).
    pub const FORMAT_ERROR: &str = "30";
    /// Insufficient funds.
    pub const INSUFFICIENT_FUNDS: &str = "51";
    /// Expired card.
    pub const EXPIRED_CARD: &str = "54";
    /// Incorrect PIN.
    pub const INCORRECT_PIN: &str = "55";
    /// Exceeds the daily withdrawal limit.
    pub const EXCEEDS_LIMIT: &str = "61";
    /// PIN tries exceeded: the card is locked.
    pub const PIN_TRIES_EXCEEDED: &str = "75";
    /// Duplicate transmission: same F41 + F11 + F13 already processed with other content.
    pub const DUPLICATE: &str = "94";
    /// System malfunction.
    pub const SYSTEM_MALFUNCTION: &str = "96";
    /// MAC error (CUP).
    pub const MAC_ERROR: &str = "A0";
}

/// Processing code (F3) prefixes, first two digits.
pub mod pc {
    /// Balance inquiry.
    pub const INQUIRY: &str = "31";
    /// Cash withdrawal.
    pub const WITHDRAWAL: &str = "01";
    /// Transfer.
    pub const TRANSFER: &str = "40";
    /// PIN change.
    pub const PIN_CHANGE: &str = "70";
}

/// Errors of the wire helpers.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The message could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// A cryptographic operation failed (wrong key type for the algorithm, ...).
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
}

/// The `cup` profile, parsed. Parse it once and share it: parsing is not free.
pub fn spec() -> Result<Spec, WireError> {
    Ok(Spec::builtin(PROFILE)?)
}

/// The framer of the wire: 2-byte big-endian binary length, payload up to [`MAX_FRAME`].
pub fn framer() -> Framer {
    Framer::new(LengthPrefix::Binary2, MAX_FRAME)
}

/// The bytes a MAC covers, given an encoded message (TPDU and header included, no length
/// prefix) whose last field is the MAC field.
///
/// The rule: **everything from the MTI up to but excluding the MAC value**, i.e. skip the
/// 5-byte TPDU and 6-byte header and drop the final 8 bytes. The MAC field is always the
/// last field of the message (F64 without a secondary bitmap, F128 with one) and has no
/// length prefix (`b 8`), so its value is exactly the last 8 bytes. To compute a MAC,
/// encode the message with the MAC field set to 8 zero bytes and MAC `mac_input` of it
/// ([`MacKey::seal`] does all of this).
///
/// Returns an empty slice when `encoded` is too short to hold a MAC.
pub fn mac_input(encoded: &[u8]) -> &[u8] {
    let end = encoded.len().saturating_sub(MAC_LEN);
    encoded.get(MTI_OFFSET..end).unwrap_or(&[])
}

/// The field that carries the MAC of `msg`: 128 when the message has any field from 65
/// to 127 (so it has a secondary bitmap), else 64.
pub fn mac_field(msg: &Message) -> u16 {
    if (65..128).any(|n| msg.has(n)) {
        128
    } else {
        64
    }
}

/// Result of checking the MAC of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacCheck {
    /// The MAC is present and correct.
    Valid,
    /// The MAC is present and wrong (or in the wrong place).
    Invalid,
    /// Neither F64 nor F128 is present.
    Missing,
}

/// A MAC key (the ZAK) with its algorithm. The MAC on the wire is always 8 bytes: the
/// SM4 CBC-MAC (16 bytes) is truncated to its leftmost 8.
#[derive(Debug, Clone)]
pub struct MacKey {
    key: Key,
    algorithm: MacAlgorithm,
}

impl MacKey {
    /// A MAC key; fails if `key` does not suit `algorithm` (e.g. X9.19 needs a 16-byte
    /// TDES key, SM4 CBC-MAC an SM4 key).
    pub fn new(algorithm: MacAlgorithm, key: Key) -> Result<Self, WireError> {
        openteller_crypto::mac(algorithm, &key, &[])?;
        Ok(MacKey { key, algorithm })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> MacAlgorithm {
        self.algorithm
    }

    /// Key check value of the key (uppercase hex, 6 characters): safe to log.
    pub fn kcv_hex(&self) -> String {
        openteller_crypto::kcv_hex(&self.key)
    }

    /// The 8-byte MAC of `data`.
    pub fn compute(&self, data: &[u8]) -> Result<[u8; MAC_LEN], WireError> {
        let full = openteller_crypto::mac(self.algorithm, &self.key, data)?;
        let mut out = [0u8; MAC_LEN];
        for (o, b) in out.iter_mut().zip(full.iter()) {
            *o = *b;
        }
        Ok(out)
    }

    /// Sets the MAC field of `msg` ([`mac_field`]; the other MAC field is removed) and
    /// returns the encoded message (TPDU and header included, no length prefix).
    pub fn seal(&self, spec: &Spec, msg: &mut Message) -> Result<Vec<u8>, WireError> {
        msg.remove(64);
        msg.remove(128);
        let field = mac_field(msg);
        msg.set(field, vec![0u8; MAC_LEN]);
        let mut encoded = spec.encode(msg)?;
        let mac = self.compute(mac_input(&encoded))?;
        let at = encoded.len().saturating_sub(MAC_LEN);
        if let Some(tail) = encoded.get_mut(at..) {
            tail.copy_from_slice(&mac);
        }
        msg.set(field, mac.to_vec());
        Ok(encoded)
    }

    /// Checks the MAC of a received message: `encoded` is the payload as received and `msg`
    /// its decoding.
    ///
    /// The MAC must be the last field ([`mac_input`]). One lenient case is accepted for
    /// senders that put the MAC in F64 although the message has fields above 64 (and no
    /// F128): the MAC then covers the bytes from the MTI up to but excluding the F64 value,
    /// i.e. the fields after F64 are not covered.
    pub fn check(&self, spec: &Spec, encoded: &[u8], msg: &Message) -> MacCheck {
        let expected = match (msg.get(128), msg.get(64)) {
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => return MacCheck::Missing,
        };
        let Some(expected) = expected.as_bytes() else {
            return MacCheck::Invalid;
        };
        let lenient = !msg.has(128) && mac_field(msg) == 128;
        let data = if lenient {
            // Where F64's value ends: the message without its fields above 64 is the same
            // up to F64 except for the 8-byte secondary bitmap it lacks.
            let mut head = msg.clone();
            for n in 65..=128 {
                head.remove(n);
            }
            match spec.encode(&head) {
                Ok(bytes) => match encoded.get(MTI_OFFSET..bytes.len()) {
                    Some(d) => d,
                    None => return MacCheck::Invalid,
                },
                Err(_) => return MacCheck::Invalid,
            }
        } else {
            if encoded.get(encoded.len().saturating_sub(MAC_LEN)..) != Some(expected) {
                return MacCheck::Invalid;
            }
            mac_input(encoded)
        };
        match openteller_crypto::verify_mac(self.algorithm, &self.key, data, expected) {
            Ok(true) if expected.len() == MAC_LEN => MacCheck::Valid,
            _ => MacCheck::Invalid,
        }
    }
}

/// The TPDU of a response: the request's with destination and source addresses swapped
/// (`ID DDDD SSSS` becomes `ID SSSS DDDD`). Anything not 5 bytes is returned unchanged.
pub fn response_tpdu(request_tpdu: &[u8]) -> Vec<u8> {
    match request_tpdu {
        [id, d1, d2, s1, s2] => vec![*id, *s1, *s2, *d1, *d2],
        other => other.to_vec(),
    }
}

/// ISO 8583 amount type of an F54 entry: ledger (current) balance.
pub const AMOUNT_TYPE_LEDGER: &str = "01";
/// ISO 8583 amount type of an F54 entry: available balance.
pub const AMOUNT_TYPE_AVAILABLE: &str = "02";
/// Account type the host writes in F54 ("10": savings).
pub const ACCOUNT_TYPE_SAVINGS: &str = "10";

/// One "additional amount" (F54 entry, 20 characters):
/// account type (2) + amount type (2) + currency (3, numeric) + sign (`C` credit / `D`
/// debit) + amount (12 digits, minor units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// Account type, e.g. `"10"`.
    pub account_type: String,
    /// Amount type: [`AMOUNT_TYPE_LEDGER`] or [`AMOUNT_TYPE_AVAILABLE`].
    pub amount_type: String,
    /// ISO 4217 numeric currency, e.g. `"156"`.
    pub currency: String,
    /// Signed amount in minor units.
    pub amount: i64,
}

impl Balance {
    /// The 20-character F54 form. Amounts beyond 12 digits are clamped.
    pub fn to_field(&self) -> String {
        let sign = if self.amount < 0 { 'D' } else { 'C' };
        let abs = self.amount.unsigned_abs().min(999_999_999_999);
        format!(
            "{:.2}{:.2}{:.3}{sign}{abs:012}",
            self.account_type, self.amount_type, self.currency
        )
    }

    /// Parses one 20-character F54 entry.
    pub fn parse(s: &str) -> Option<Balance> {
        let b = s.as_bytes();
        if b.len() != 20 || !s.is_ascii() {
            return None;
        }
        let digits = s.get(8..20)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let abs: i64 = digits.parse().ok()?;
        let amount = match b[7] {
            b'C' => abs,
            b'D' => -abs,
            _ => return None,
        };
        Some(Balance {
            account_type: s.get(0..2)?.to_owned(),
            amount_type: s.get(2..4)?.to_owned(),
            currency: s.get(4..7)?.to_owned(),
            amount,
        })
    }

    /// Parses every 20-character entry of an F54 value.
    pub fn parse_all(s: &str) -> Vec<Balance> {
        s.as_bytes()
            .chunks(20)
            .filter_map(|c| std::str::from_utf8(c).ok().and_then(Balance::parse))
            .collect()
    }
}

/// F95, replacement amounts (`an 42`, ISO 8583:1987), of a **partial reversal**: the
/// actual transaction amount — the part of the original that stands, e.g. the notes actually
/// dispensed — in 12 digits (minor units), then the actual settlement amount (12) and two fees
/// (9 each), which the host does not use (send zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replacement {
    /// The amount that stands, minor units.
    pub amount: i64,
}

impl Replacement {
    /// The 42-character F95 value: the amount in 12 digits, then 30 zeros.
    pub fn to_field(&self) -> String {
        format!(
            "{:012}{}",
            self.amount.clamp(0, 999_999_999_999),
            "0".repeat(30)
        )
    }

    /// Parses F95: 42 characters, the first 12 digits, the rest letters, digits or spaces.
    /// `None` when malformed.
    pub fn parse(s: &str) -> Option<Replacement> {
        let b = s.as_bytes();
        if b.len() != 42
            || !b[..12].iter().all(u8::is_ascii_digit)
            || !b[12..]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b' ')
        {
            return None;
        }
        Some(Replacement {
            amount: s.get(..12)?.parse().ok()?,
        })
    }
}

/// F90, original data elements (`n 42`), as the host reads it: original MTI (4) +
/// original STAN (6) + original MMDDhhmmss (10: the original's F13 then F12) + 22 zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalData {
    /// Original MTI, e.g. `"0200"`.
    pub mti: String,
    /// Original STAN (F11).
    pub stan: String,
    /// Original local date MMDD (F13).
    pub date: String,
    /// Original local time hhmmss (F12).
    pub time: String,
}

impl OriginalData {
    /// The 42-digit F90 value.
    pub fn to_field(&self) -> String {
        format!(
            "{:0>4.4}{:0>6.6}{:0>4.4}{:0>6.6}{}",
            self.mti,
            self.stan,
            self.date,
            self.time,
            "0".repeat(22)
        )
    }

    /// Parses an F90 value (42 digits; the trailing 22 digits are ignored).
    pub fn parse(s: &str) -> Option<OriginalData> {
        if s.len() != 42 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        Some(OriginalData {
            mti: s.get(0..4)?.to_owned(),
            stan: s.get(4..10)?.to_owned(),
            date: s.get(10..14)?.to_owned(),
            time: s.get(14..20)?.to_owned(),
        })
    }
}

/// PAN and expiry (YYMM, when present) from track 2 data (`PAN=YYMM...` or `PAN D YYMM...`,
/// sentinels tolerated).
pub fn track2_pan_expiry(track2: &str) -> Option<(&str, Option<&str>)> {
    let t = track2.trim_start_matches(';').trim_end_matches('?');
    let sep = t.find(['=', 'D', 'd'])?;
    let pan = t.get(..sep)?;
    if pan.is_empty() || !pan.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let expiry = t
        .get(sep + 1..sep + 5)
        .filter(|e| e.bytes().all(|c| c.is_ascii_digit()));
    Some((pan, expiry))
}

/// A PAN masked for logs, journals and API answers: first 6 and last 4 digits kept.
pub fn mask_pan(pan: &str) -> String {
    let n = pan.chars().count();
    if n <= 10 {
        return "*".repeat(n);
    }
    pan.chars()
        .enumerate()
        .map(|(i, c)| if i < 6 || i >= n - 4 { c } else { '*' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openteller_crypto::Algorithm;

    fn key() -> MacKey {
        let k = Key::from_hex(Algorithm::Tdes, "89ABCDEF0123456776543210FEDCBA98").unwrap();
        MacKey::new(MacAlgorithm::AnsiX919, k).unwrap()
    }

    fn base(mti: &str) -> Message {
        Message::new(mti)
            .with_tpdu(vec![0x60, 0, 1, 0, 2])
            .with_header(vec![0x60, 0x31, 0, 0, 0, 0])
            .with(11, "000001")
            .with(41, "ATM00001")
    }

    #[test]
    fn seal_then_check_f64_and_f128() {
        let spec = spec().unwrap();
        let k = key();
        for mut msg in [base("0200"), base("0400").with(90, "0".repeat(42))] {
            let bytes = k.seal(&spec, &mut msg).unwrap();
            let decoded = spec.decode(&bytes).unwrap();
            assert_eq!(decoded, msg);
            assert_eq!(k.check(&spec, &bytes, &decoded), MacCheck::Valid);
            let tampered_msg = decoded.clone().with(41, "ATM00002");
            let tampered = spec.encode(&tampered_msg).unwrap();
            assert_eq!(k.check(&spec, &tampered, &tampered_msg), MacCheck::Invalid);
        }
        let m = base("0800");
        let bytes = spec.encode(&m).unwrap();
        assert_eq!(k.check(&spec, &bytes, &m), MacCheck::Missing);
    }

    #[test]
    fn lenient_f64_with_secondary_fields() {
        let spec = spec().unwrap();
        let k = key();
        let mut msg = base("0400").with(64, vec![0u8; 8]).with(90, "0".repeat(42));
        let zeros = spec.encode(&msg).unwrap();
        let mut head = msg.clone();
        head.remove(90);
        let head_len = spec.encode(&head).unwrap().len();
        let mac = k.compute(&zeros[MTI_OFFSET..head_len]).unwrap();
        msg.set(64, mac.to_vec());
        let bytes = spec.encode(&msg).unwrap();
        assert_eq!(k.check(&spec, &bytes, &msg), MacCheck::Valid);
    }

    #[test]
    fn mac_input_never_panics() {
        assert!(mac_input(&[]).is_empty());
        assert!(mac_input(&[0; 12]).is_empty());
        assert_eq!(mac_input(&[0; 20]).len(), 1);
    }

    #[test]
    fn f54_and_f90_forms() {
        let b = Balance {
            account_type: "10".into(),
            amount_type: AMOUNT_TYPE_AVAILABLE.into(),
            currency: "156".into(),
            amount: 12345,
        };
        assert_eq!(b.to_field(), "1002156C000000012345");
        assert_eq!(Balance::parse(&b.to_field()), Some(b));
        assert_eq!(Balance::parse("1001156D000000000001").unwrap().amount, -1);
        assert_eq!(Balance::parse("1001156X000000000001"), None);
        let o = OriginalData {
            mti: "0200".into(),
            stan: "000123".into(),
            date: "0615".into(),
            time: "101112".into(),
        };
        assert_eq!(o.to_field().len(), 42);
        assert_eq!(OriginalData::parse(&o.to_field()), Some(o));
    }

    #[test]
    fn track2_and_mask() {
        assert_eq!(
            track2_pan_expiry("6222020200112233445=4912101000000000"),
            Some(("6222020200112233445", Some("4912")))
        );
        assert_eq!(
            track2_pan_expiry(";6222020200112233445D49?"),
            Some(("6222020200112233445", None))
        );
        assert_eq!(track2_pan_expiry("=4912"), None);
        assert_eq!(mask_pan("6222020200112233445"), "622202*********3445");
        assert_eq!(response_tpdu(&[0x60, 0, 1, 0, 2]), vec![0x60, 0, 2, 0, 1]);
    }
}
