//! ISO 9564-1 PIN blocks (formats 0, 1, 3) and the 16-byte SM4 variant of format 0.

use std::fmt;

use rand::Rng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::block::Engine;
use crate::error::{CryptoError, Result};
use crate::key::{Algorithm, Key};

/// PIN block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinBlockFormat {
    /// ISO 9564-1 format 0 (ANSI X9.8): PIN field with `F` fill XOR PAN field. 8 bytes, TDES.
    Iso0,
    /// ISO 9564-1 format 1: PIN field with random fill, no PAN. 8 bytes, TDES.
    Iso1,
    /// ISO 9564-1 format 3: PIN field with random `A`–`F` fill XOR PAN field. 8 bytes, TDES.
    Iso3,
    /// Format 0 extended to 16 bytes for SM4 (used in China): PIN field
    /// `0 || len || PIN || F…` to 32 nibbles, PAN field 20 zero nibbles followed by
    /// the 12 rightmost PAN digits excluding the check digit. 16 bytes, SM4.
    Sm4Iso0,
}

impl PinBlockFormat {
    /// Length of the PIN block in bytes (8, or 16 for [`PinBlockFormat::Sm4Iso0`]).
    pub fn block_len(self) -> usize {
        match self {
            PinBlockFormat::Sm4Iso0 => 16,
            _ => 8,
        }
    }

    /// Algorithm a key must have to encrypt this format.
    pub fn algorithm(self) -> Algorithm {
        match self {
            PinBlockFormat::Sm4Iso0 => Algorithm::Sm4,
            _ => Algorithm::Tdes,
        }
    }

    fn control(self) -> u8 {
        match self {
            PinBlockFormat::Iso1 => 1,
            PinBlockFormat::Iso3 => 3,
            PinBlockFormat::Iso0 | PinBlockFormat::Sm4Iso0 => 0,
        }
    }

    fn uses_pan(self) -> bool {
        self != PinBlockFormat::Iso1
    }
}

/// A clear (unencrypted) PIN block. Zeroized on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct ClearPinBlock {
    format: PinBlockFormat,
    bytes: Zeroizing<Vec<u8>>,
}

impl ClearPinBlock {
    /// Format of this block.
    pub fn format(&self) -> PinBlockFormat {
        self.format
    }

    /// The clear block bytes. **Sensitive**: equivalent to the clear PIN for anyone
    /// who knows the PAN. Never log or persist them.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Encrypts the block (ECB, one block) under `key`, which must be a 16/24-byte
    /// TDES key for ISO 0/1/3 or an SM4 key for `Sm4Iso0`.
    pub fn encrypt(&self, key: &Key) -> Result<Vec<u8>> {
        let engine = engine_for(self.format, key)?;
        let mut out = self.bytes.to_vec();
        engine.ecb_encrypt(&mut out)?;
        Ok(out)
    }
}

impl fmt::Debug for ClearPinBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClearPinBlock")
            .field("format", &self.format)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

fn engine_for(format: PinBlockFormat, key: &Key) -> Result<Engine> {
    if key.algorithm() != format.algorithm() {
        return Err(CryptoError::UnsupportedFormat {
            format,
            algorithm: key.algorithm(),
        });
    }
    Engine::for_key(key, false)
}

fn validate_pin(pin: &str) -> Result<()> {
    if !(4..=12).contains(&pin.len()) {
        return Err(CryptoError::InvalidPin("length must be 4 to 12 digits"));
    }
    if !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CryptoError::InvalidPin("must contain decimal digits only"));
    }
    Ok(())
}

/// PAN field as nibbles: zeros, then the 12 rightmost digits excluding the check digit.
fn pan_field(format: PinBlockFormat, pan: &str) -> Result<Zeroizing<Vec<u8>>> {
    let nibbles = format.block_len() * 2;
    let mut field = Zeroizing::new(vec![0u8; nibbles]);
    if !format.uses_pan() {
        return Ok(field);
    }
    if !(13..=19).contains(&pan.len()) {
        return Err(CryptoError::InvalidPan("length must be 13 to 19 digits"));
    }
    if !pan.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CryptoError::InvalidPan("must contain decimal digits only"));
    }
    let digits = &pan.as_bytes()[pan.len() - 13..pan.len() - 1];
    for (slot, d) in field[nibbles - 12..].iter_mut().zip(digits) {
        *slot = d - b'0';
    }
    Ok(field)
}

fn pack(nibbles: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        nibbles
            .chunks_exact(2)
            .map(|pair| (pair[0] << 4) | pair[1])
            .collect(),
    )
}

/// Builds a clear PIN block.
///
/// `pin` must be 4–12 decimal digits. `pan` must be 13–19 decimal digits for
/// all formats except [`PinBlockFormat::Iso1`], which ignores it. ISO 1 fill
/// nibbles are random `0`–`F`, ISO 3 fill nibbles random `A`–`F`.
pub fn build_pin_block(format: PinBlockFormat, pin: &str, pan: &str) -> Result<ClearPinBlock> {
    validate_pin(pin)?;
    let pan_nibbles = pan_field(format, pan)?;
    let nibbles = format.block_len() * 2;
    let mut field = Zeroizing::new(Vec::with_capacity(nibbles));
    field.push(format.control());
    field.push(pin.len() as u8);
    field.extend(pin.bytes().map(|d| d - b'0'));
    let mut rng = rand::rng();
    while field.len() < nibbles {
        field.push(match format {
            PinBlockFormat::Iso0 | PinBlockFormat::Sm4Iso0 => 0xF,
            PinBlockFormat::Iso1 => rng.random_range(0x0..=0xF),
            PinBlockFormat::Iso3 => rng.random_range(0xA..=0xF),
        });
    }
    field
        .iter_mut()
        .zip(pan_nibbles.iter())
        .for_each(|(f, p)| *f ^= p);
    Ok(ClearPinBlock {
        format,
        bytes: pack(&field),
    })
}

/// Builds a PIN block (see [`build_pin_block`]) and encrypts it under `key`
/// (see [`ClearPinBlock::encrypt`]).
pub fn encrypt_pin_block(
    format: PinBlockFormat,
    pin: &str,
    pan: &str,
    key: &Key,
) -> Result<Vec<u8>> {
    build_pin_block(format, pin, pan)?.encrypt(key)
}

/// Decrypts `encrypted` and parses the PIN, validating control field, length,
/// digits and fill.
fn decode(
    format: PinBlockFormat,
    encrypted: &[u8],
    pan: &str,
    key: &Key,
) -> Result<Zeroizing<String>> {
    let engine = engine_for(format, key)?;
    if encrypted.len() != format.block_len() {
        return Err(CryptoError::InvalidBlock(
            "wrong encrypted PIN block length",
        ));
    }
    let pan_nibbles = pan_field(format, pan)?;
    let mut clear = Zeroizing::new(encrypted.to_vec());
    engine.ecb_decrypt(&mut clear)?;
    let mut field = Zeroizing::new(Vec::with_capacity(clear.len() * 2));
    for byte in clear.iter() {
        field.push(byte >> 4);
        field.push(byte & 0x0F);
    }
    field
        .iter_mut()
        .zip(pan_nibbles.iter())
        .for_each(|(f, p)| *f ^= p);

    if field[0] != format.control() {
        return Err(CryptoError::InvalidBlock("unexpected control field"));
    }
    let len = usize::from(field[1]);
    if !(4..=12).contains(&len) {
        return Err(CryptoError::InvalidBlock("PIN length out of range"));
    }
    let digits = &field[2..2 + len];
    if digits.iter().any(|&d| d > 9) {
        return Err(CryptoError::InvalidBlock("PIN field contains non-digits"));
    }
    let fill_ok = field[2 + len..].iter().all(|&n| match format {
        PinBlockFormat::Iso0 | PinBlockFormat::Sm4Iso0 => n == 0xF,
        PinBlockFormat::Iso3 => n >= 0xA,
        PinBlockFormat::Iso1 => true,
    });
    if !fill_ok {
        return Err(CryptoError::InvalidBlock("invalid fill"));
    }
    let mut pin = Zeroizing::new(String::with_capacity(len));
    pin.extend(digits.iter().map(|&d| char::from(b'0' + d)));
    Ok(pin)
}

/// Decrypts an encrypted PIN block and extracts the clear PIN.
///
/// **Sensitive**: intended for the simulated bank host only; prefer
/// [`verify_pin`]. `pan` is ignored for [`PinBlockFormat::Iso1`].
///
/// # Errors
/// [`CryptoError::InvalidBlock`] if the decrypted block is malformed (which is also
/// what a wrong key or wrong PAN usually produces), plus key/PAN errors.
pub fn extract_pin(
    format: PinBlockFormat,
    encrypted: &[u8],
    pan: &str,
    key: &Key,
) -> Result<Zeroizing<String>> {
    decode(format, encrypted, pan, key)
}

/// Decrypts an encrypted PIN block and compares its PIN with `expected_pin` in
/// constant time. Returns `Ok(false)` on mismatch; errors as [`extract_pin`].
pub fn verify_pin(
    format: PinBlockFormat,
    encrypted: &[u8],
    pan: &str,
    key: &Key,
    expected_pin: &str,
) -> Result<bool> {
    let pin = decode(format, encrypted, pan, key)?;
    Ok(bool::from(pin.as_bytes().ct_eq(expected_pin.as_bytes())))
}

/// Translates an encrypted PIN block from (`from_key`, `from_format`) to
/// (`to_key`, `to_format`), e.g. TDES ISO 0 to SM4 `Sm4Iso0`, without exposing the
/// clear PIN: only the new encrypted block is returned.
pub fn translate_pin_block(
    from_key: &Key,
    from_format: PinBlockFormat,
    encrypted: &[u8],
    to_key: &Key,
    to_format: PinBlockFormat,
    pan: &str,
) -> Result<Vec<u8>> {
    // Fail on the destination key before decrypting anything.
    engine_for(to_format, to_key)?;
    let pin = decode(from_format, encrypted, pan, from_key)?;
    encrypt_pin_block(to_format, &pin, pan, to_key)
}
