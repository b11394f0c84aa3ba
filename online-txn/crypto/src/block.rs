//! Block cipher engines and ECB / zero-IV CBC modes.

use cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use des::{Des, TdesEde2, TdesEde3};
use sm4::Sm4;
use zeroize::Zeroizing;

use crate::error::{CryptoError, Result};
use crate::key::{Algorithm, Key};

/// A keyed block cipher. The RustCrypto ciphers zeroize their key schedules on drop.
pub(crate) enum Engine {
    Des(Des),
    Tdes2(TdesEde2),
    Tdes3(TdesEde3),
    Sm4(Sm4),
}

fn enc<C: BlockCipherEncrypt>(cipher: &C, block: &mut [u8]) {
    if let Ok(b) = <&mut Block<C>>::try_from(block) {
        cipher.encrypt_block(b);
    }
}

fn dec<C: BlockCipherDecrypt>(cipher: &C, block: &mut [u8]) {
    if let Ok(b) = <&mut Block<C>>::try_from(block) {
        cipher.decrypt_block(b);
    }
}

impl Engine {
    /// Builds the engine for `key`. Single DES (8-byte TDES key) is rejected
    /// unless `allow_single_des` (MACs and KCVs only).
    pub(crate) fn for_key(key: &Key, allow_single_des: bool) -> Result<Self> {
        if key.algorithm() == Algorithm::Tdes && key.len_bytes() == 8 && !allow_single_des {
            return Err(CryptoError::KeyNotPermitted(
                "single-length DES keys may only be used for MACs",
            ));
        }
        Self::from_raw(key.algorithm(), key.bytes())
    }

    /// Builds an engine from raw key bytes (8 → DES, 16 → 2-key TDES, 24 → 3-key TDES).
    pub(crate) fn from_raw(algorithm: Algorithm, bytes: &[u8]) -> Result<Self> {
        let invalid = |_| CryptoError::InvalidKeyLength {
            algorithm,
            len: bytes.len(),
        };
        Ok(match (algorithm, bytes.len()) {
            (Algorithm::Tdes, 8) => Engine::Des(Des::new_from_slice(bytes).map_err(invalid)?),
            (Algorithm::Tdes, 16) => {
                Engine::Tdes2(TdesEde2::new_from_slice(bytes).map_err(invalid)?)
            }
            (Algorithm::Tdes, 24) => {
                Engine::Tdes3(TdesEde3::new_from_slice(bytes).map_err(invalid)?)
            }
            (Algorithm::Sm4, 16) => Engine::Sm4(Sm4::new_from_slice(bytes).map_err(invalid)?),
            (algorithm, len) => return Err(CryptoError::InvalidKeyLength { algorithm, len }),
        })
    }

    pub(crate) fn block_size(&self) -> usize {
        match self {
            Engine::Sm4(_) => 16,
            _ => 8,
        }
    }

    /// Encrypts exactly one block in place (no-op if `block` has the wrong size,
    /// which callers rule out).
    pub(crate) fn encrypt_block(&self, block: &mut [u8]) {
        match self {
            Engine::Des(c) => enc(c, block),
            Engine::Tdes2(c) => enc(c, block),
            Engine::Tdes3(c) => enc(c, block),
            Engine::Sm4(c) => enc(c, block),
        }
    }

    /// Decrypts exactly one block in place.
    pub(crate) fn decrypt_block(&self, block: &mut [u8]) {
        match self {
            Engine::Des(c) => dec(c, block),
            Engine::Tdes2(c) => dec(c, block),
            Engine::Tdes3(c) => dec(c, block),
            Engine::Sm4(c) => dec(c, block),
        }
    }

    fn check_len(&self, data: &[u8]) -> Result<()> {
        let block_size = self.block_size();
        if data.is_empty() || !data.len().is_multiple_of(block_size) {
            return Err(CryptoError::InvalidDataLength {
                len: data.len(),
                block_size,
            });
        }
        Ok(())
    }

    pub(crate) fn ecb_encrypt(&self, data: &mut [u8]) -> Result<()> {
        self.check_len(data)?;
        data.chunks_exact_mut(self.block_size())
            .for_each(|b| self.encrypt_block(b));
        Ok(())
    }

    pub(crate) fn ecb_decrypt(&self, data: &mut [u8]) -> Result<()> {
        self.check_len(data)?;
        data.chunks_exact_mut(self.block_size())
            .for_each(|b| self.decrypt_block(b));
        Ok(())
    }

    /// CBC encryption in place with a zero IV (the last block is the CBC-MAC).
    pub(crate) fn cbc_encrypt(&self, data: &mut [u8]) -> Result<()> {
        self.check_len(data)?;
        let mut chain = Zeroizing::new(vec![0u8; self.block_size()]);
        for block in data.chunks_exact_mut(self.block_size()) {
            block
                .iter_mut()
                .zip(chain.iter())
                .for_each(|(b, c)| *b ^= c);
            self.encrypt_block(block);
            chain.copy_from_slice(block);
        }
        Ok(())
    }

    pub(crate) fn cbc_decrypt(&self, data: &mut [u8]) -> Result<()> {
        self.check_len(data)?;
        let mut chain = Zeroizing::new(vec![0u8; self.block_size()]);
        let mut saved = Zeroizing::new(vec![0u8; self.block_size()]);
        for block in data.chunks_exact_mut(self.block_size()) {
            saved.copy_from_slice(block);
            self.decrypt_block(block);
            block
                .iter_mut()
                .zip(chain.iter())
                .for_each(|(b, c)| *b ^= c);
            chain.copy_from_slice(&saved);
        }
        Ok(())
    }
}

/// Encrypts whole blocks in ECB mode.
///
/// `key` must be a 16/24-byte TDES key or an SM4 key; `data` must be a non-zero
/// multiple of the block size (no padding is applied).
pub fn ecb_encrypt(key: &Key, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = data.to_vec();
    Engine::for_key(key, false)?.ecb_encrypt(&mut out)?;
    Ok(out)
}

/// Decrypts whole blocks in ECB mode. Same requirements as [`ecb_encrypt`].
pub fn ecb_decrypt(key: &Key, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = data.to_vec();
    Engine::for_key(key, false)?.ecb_decrypt(&mut out)?;
    Ok(out)
}

/// Encrypts whole blocks in CBC mode with an all-zero IV.
/// Same requirements as [`ecb_encrypt`].
pub fn cbc_encrypt_zero_iv(key: &Key, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = data.to_vec();
    Engine::for_key(key, false)?.cbc_encrypt(&mut out)?;
    Ok(out)
}

/// Decrypts whole blocks in CBC mode with an all-zero IV.
/// Same requirements as [`ecb_encrypt`].
pub fn cbc_decrypt_zero_iv(key: &Key, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = data.to_vec();
    Engine::for_key(key, false)?.cbc_decrypt(&mut out)?;
    Ok(out)
}
