//! Keys, key check values, key components and key import.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::block::Engine;
use crate::error::{CryptoError, Result};

/// Block cipher family of a [`Key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// TDEA (Triple DES, 8-byte blocks). 16- or 24-byte keys; 8-byte single
    /// DES keys are accepted only for legacy MACs and key check values.
    Tdes,
    /// SM4 (GB/T 32907, 16-byte blocks, 16-byte keys).
    Sm4,
}

impl Algorithm {
    /// Block size of the cipher in bytes (8 for TDES, 16 for SM4).
    pub fn block_size(self) -> usize {
        match self {
            Algorithm::Tdes => 8,
            Algorithm::Sm4 => 16,
        }
    }
}

/// A secret cipher key.
///
/// The bytes are zeroized on drop, and neither `Debug` nor any error prints them.
#[derive(Clone)]
pub struct Key {
    algorithm: Algorithm,
    bytes: Zeroizing<Vec<u8>>,
}

impl Key {
    /// Creates a key, validating its length: TDES 8 (single DES, MAC/KCV only),
    /// 16 or 24 bytes; SM4 16 bytes.
    pub fn new(algorithm: Algorithm, bytes: &[u8]) -> Result<Self> {
        let valid = match algorithm {
            Algorithm::Tdes => matches!(bytes.len(), 8 | 16 | 24),
            Algorithm::Sm4 => bytes.len() == 16,
        };
        if !valid {
            return Err(CryptoError::InvalidKeyLength {
                algorithm,
                len: bytes.len(),
            });
        }
        Ok(Self {
            algorithm,
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// Creates a key from a hexadecimal string (either case), see [`Key::new`].
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Self> {
        let bytes = Zeroizing::new(hex::decode(hex).map_err(|_| CryptoError::InvalidHex)?);
        Self::new(algorithm, &bytes)
    }

    /// Algorithm of this key.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Key length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Raw key bytes; crate-internal only, never returned to callers.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("algorithm", &self.algorithm)
            .field("len", &self.bytes.len())
            .field("bytes", &"<redacted>")
            .finish()
    }
}

/// How a key is encrypted under a key-encryption key (KEK) for [`import_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapMode {
    /// Each block encrypted independently (ECB).
    Ecb,
    /// CBC with an all-zero IV.
    CbcZeroIv,
}

/// Full zero-block encryption; the KCV is a prefix of it.
fn check_block(key: &Key) -> Zeroizing<Vec<u8>> {
    let engine = Engine::for_key(key, true).expect("a validated Key always builds a cipher");
    let mut block = Zeroizing::new(vec![0u8; engine.block_size()]);
    engine.encrypt_block(&mut block);
    block
}

/// Key check value: the first 3 bytes of the encryption of one all-zero block
/// (8 bytes for TDES/DES, 16 bytes for SM4).
pub fn kcv(key: &Key) -> [u8; 3] {
    let block = check_block(key);
    [block[0], block[1], block[2]]
}

/// [`kcv`] as an uppercase hexadecimal string (6 characters).
pub fn kcv_hex(key: &Key) -> String {
    hex::encode_upper(kcv(key))
}

/// Combines clear key components by XOR (dual-control key entry).
///
/// Requires at least two components, all non-empty and of the same length.
/// The result is clear key material: it is zeroized on drop and should be turned
/// into a [`Key`] immediately.
pub fn combine_components(components: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>> {
    let Some((first, rest)) = components.split_first() else {
        return Err(CryptoError::InvalidComponents("no components"));
    };
    if rest.is_empty() {
        return Err(CryptoError::InvalidComponents(
            "at least two components are required",
        ));
    }
    if first.is_empty() {
        return Err(CryptoError::InvalidComponents("empty component"));
    }
    if rest.iter().any(|c| c.len() != first.len()) {
        return Err(CryptoError::InvalidComponents(
            "components have different lengths",
        ));
    }
    let mut out = Zeroizing::new(first.to_vec());
    for component in rest {
        for (o, c) in out.iter_mut().zip(component.iter()) {
            *o ^= c;
        }
    }
    Ok(out)
}

/// Imports a key encrypted under a key-encryption key.
///
/// Decrypts `wrapped` under `kek` (which must be a 16/24-byte TDES or an SM4 key)
/// using `mode`, builds a key of `algorithm` from the result and checks its
/// [`kcv`] against `expected_kcv` in constant time.
///
/// # Errors
/// [`CryptoError::KcvMismatch`] if the check value differs, plus the length and
/// key errors of [`Key::new`] and [`ecb_decrypt`](crate::ecb_decrypt).
pub fn import_key(
    kek: &Key,
    wrapped: &[u8],
    mode: WrapMode,
    algorithm: Algorithm,
    expected_kcv: &[u8; 3],
) -> Result<Key> {
    let engine = Engine::for_key(kek, false)?;
    let mut clear = Zeroizing::new(wrapped.to_vec());
    match mode {
        WrapMode::Ecb => engine.ecb_decrypt(&mut clear)?,
        WrapMode::CbcZeroIv => engine.cbc_decrypt(&mut clear)?,
    }
    let key = Key::new(algorithm, &clear)?;
    let actual = kcv(&key);
    if bool::from(actual.ct_eq(expected_kcv)) {
        Ok(key)
    } else {
        Err(CryptoError::KcvMismatch {
            expected: hex::encode_upper(expected_kcv),
            actual: hex::encode_upper(actual),
        })
    }
}
