//! Message authentication codes: ANSI X9.9, ANSI X9.19, CUP-ECB and SM4 CBC-MAC.

use subtle::ConstantTimeEq;

use crate::block::Engine;
use crate::error::{CryptoError, Result};
use crate::key::{Algorithm, Key};

/// MAC algorithm. All of them zero-pad the message to the block size (no padding
/// when already aligned; an empty message is one block of zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacAlgorithm {
    /// ANSI X9.9: single-DES CBC-MAC with an 8-byte key, or the first half of a
    /// 16/24-byte TDES key. 8-byte MAC.
    AnsiX99,
    /// ANSI X9.19 retail MAC (ISO 9797-1 algorithm 3): single-DES CBC with K1, then
    /// the final block is decrypted with K2 and encrypted with K1. Needs a 16-byte
    /// TDES key. 8-byte MAC.
    AnsiX919,
    /// China UnionPay "ECB" MAC: XOR of all 8-byte blocks, hex-expanded, two
    /// encryptions under the TDES (or legacy single-DES) key; the MAC is the first
    /// 8 ASCII uppercase hex characters, as 8 bytes.
    CupEcb,
    /// SM4 CBC-MAC (zero IV) with an SM4 key. 16-byte MAC; callers may truncate.
    Sm4Cbc,
}

impl MacAlgorithm {
    /// Length of the full MAC in bytes.
    pub fn output_len(self) -> usize {
        match self {
            MacAlgorithm::Sm4Cbc => 16,
            _ => 8,
        }
    }
}

/// Minimum length of a (truncated) MAC accepted by [`verify_mac`].
const MIN_VERIFY_LEN: usize = 4;

fn zero_pad(data: &[u8], block_size: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    let padded = data.len().div_ceil(block_size).max(1) * block_size;
    out.resize(padded, 0);
    out
}

fn require(key: &Key, algorithm: Algorithm, reason: &'static str) -> Result<()> {
    if key.algorithm() == algorithm {
        Ok(())
    } else {
        Err(CryptoError::KeyNotPermitted(reason))
    }
}

/// CBC-MAC: last block of the zero-IV CBC encryption of the zero-padded data.
fn cbc_mac(engine: &Engine, data: &[u8]) -> Result<Vec<u8>> {
    let mut buf = zero_pad(data, engine.block_size());
    engine.cbc_encrypt(&mut buf)?;
    Ok(buf.split_off(buf.len() - engine.block_size()))
}

fn cup_ecb(engine: &Engine, data: &[u8]) -> Result<Vec<u8>> {
    let padded = zero_pad(data, 8);
    let mut acc = [0u8; 8];
    for block in padded.chunks_exact(8) {
        acc.iter_mut().zip(block).for_each(|(a, b)| *a ^= b);
    }
    let expanded = hex::encode_upper(acc).into_bytes();
    let mut left = expanded[..8].to_vec();
    engine.encrypt_block(&mut left);
    left.iter_mut()
        .zip(&expanded[8..])
        .for_each(|(l, r)| *l ^= r);
    engine.encrypt_block(&mut left);
    let mut out = hex::encode_upper(&left).into_bytes();
    out.truncate(8);
    Ok(out)
}

/// Computes a MAC over `data`.
///
/// # Errors
/// [`CryptoError::KeyNotPermitted`] if the key does not suit the algorithm
/// (TDES keys for the DES-based MACs, a 16-byte TDES key for X9.19, an SM4 key
/// for SM4 CBC-MAC).
pub fn mac(algorithm: MacAlgorithm, key: &Key, data: &[u8]) -> Result<Vec<u8>> {
    match algorithm {
        MacAlgorithm::AnsiX99 => {
            require(key, Algorithm::Tdes, "ANSI X9.9 requires a DES/TDES key")?;
            let engine = Engine::from_raw(Algorithm::Tdes, &key.bytes()[..8])?;
            cbc_mac(&engine, data)
        }
        MacAlgorithm::AnsiX919 => {
            require(key, Algorithm::Tdes, "ANSI X9.19 requires a TDES key")?;
            if key.len_bytes() != 16 {
                return Err(CryptoError::KeyNotPermitted(
                    "ANSI X9.19 requires a double-length (16-byte) TDES key",
                ));
            }
            let k1 = Engine::from_raw(Algorithm::Tdes, &key.bytes()[..8])?;
            let k2 = Engine::from_raw(Algorithm::Tdes, &key.bytes()[8..16])?;
            let mut out = cbc_mac(&k1, data)?;
            k2.decrypt_block(&mut out);
            k1.encrypt_block(&mut out);
            Ok(out)
        }
        MacAlgorithm::CupEcb => {
            require(key, Algorithm::Tdes, "CUP-ECB MAC requires a DES/TDES key")?;
            cup_ecb(&Engine::for_key(key, true)?, data)
        }
        MacAlgorithm::Sm4Cbc => {
            require(key, Algorithm::Sm4, "SM4 CBC-MAC requires an SM4 key")?;
            cbc_mac(&Engine::for_key(key, false)?, data)
        }
    }
}

/// Verifies a MAC in constant time.
///
/// `expected` may be the full MAC or a truncation of it (its leftmost bytes) of at
/// least 4 bytes; anything shorter or longer than the full MAC yields `Ok(false)`.
/// Errors as [`mac`].
pub fn verify_mac(
    algorithm: MacAlgorithm,
    key: &Key,
    data: &[u8],
    expected: &[u8],
) -> Result<bool> {
    let computed = mac(algorithm, key, data)?;
    if expected.len() < MIN_VERIFY_LEN || expected.len() > computed.len() {
        return Ok(false);
    }
    Ok(bool::from(computed[..expected.len()].ct_eq(expected)))
}
