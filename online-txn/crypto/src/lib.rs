//! # openteller-crypto
//!
//! Financial cryptography shared by the OpenTeller virtual PIN pad (EPP), the
//! online transaction engine's security module and the simulated bank host.
//!
//! It provides:
//!
//! * [`Key`] / [`Algorithm`]: TDEA (3DES, plus single DES for legacy MACs only)
//!   and SM4 keys, zeroized on drop and never printed;
//! * block encryption: [`ecb_encrypt`], [`ecb_decrypt`], [`cbc_encrypt_zero_iv`],
//!   [`cbc_decrypt_zero_iv`];
//! * key management: [`kcv`], [`kcv_hex`], [`combine_components`], [`import_key`];
//! * ISO 9564-1 PIN blocks (formats 0, 1, 3 and the 16-byte SM4 variant of
//!   format 0): [`build_pin_block`], [`encrypt_pin_block`], [`extract_pin`],
//!   [`verify_pin`], [`translate_pin_block`];
//! * MACs: ANSI X9.9, ANSI X9.19 (retail MAC), China UnionPay "ECB" MAC and
//!   SM4 CBC-MAC via [`mac`] and the constant-time [`verify_mac`].
//!
//! ## What this crate must never do
//!
//! This crate must **never log, print, or return clear PINs or clear keys** except
//! through the few explicitly documented, zeroizing accessors that exist for the
//! host simulator and key loading ([`extract_pin`], [`ClearPinBlock::expose_bytes`],
//! [`combine_components`]). In particular:
//!
//! * `Debug` for [`Key`] and [`ClearPinBlock`] is redacted;
//! * [`CryptoError`] messages never contain PIN digits, key bytes or clear blocks;
//! * buffers that hold clear secrets are wrapped in [`zeroize::Zeroizing`];
//! * no function panics on malformed input: every failure is a [`CryptoError`].
//!
//! ## Example
//!
//! ```
//! use openteller_crypto::{Algorithm, Key, PinBlockFormat, encrypt_pin_block, verify_pin};
//!
//! let pek = Key::from_hex(Algorithm::Tdes, "0123456789ABCDEFFEDCBA9876543210")?;
//! let block = encrypt_pin_block(PinBlockFormat::Iso0, "1234", "43219876543210987", &pek)?;
//! assert!(verify_pin(PinBlockFormat::Iso0, &block, "43219876543210987", &pek, "1234")?);
//! # Ok::<(), openteller_crypto::CryptoError>(())
//! ```
#![forbid(unsafe_code)]

mod block;
mod error;
mod key;
mod mac;
mod pin;

pub use block::{cbc_decrypt_zero_iv, cbc_encrypt_zero_iv, ecb_decrypt, ecb_encrypt};
pub use error::{CryptoError, Result};
pub use key::{Algorithm, Key, WrapMode, combine_components, import_key, kcv, kcv_hex};
pub use mac::{MacAlgorithm, mac, verify_mac};
pub use pin::{
    ClearPinBlock, PinBlockFormat, build_pin_block, encrypt_pin_block, extract_pin,
    translate_pin_block, verify_pin,
};
pub use zeroize;
