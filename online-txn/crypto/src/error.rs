//! Error type of the crate.

use crate::key::Algorithm;
use crate::pin::PinBlockFormat;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, CryptoError>;

/// Errors returned by every fallible operation of this crate.
///
/// Messages never contain secret material (PIN digits, key bytes, clear blocks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key length is not valid for the algorithm
    /// (TDES: 8, 16 or 24 bytes; SM4: 16 bytes).
    #[error("invalid {algorithm:?} key length: {len} bytes")]
    InvalidKeyLength {
        /// Algorithm the key was meant for.
        algorithm: Algorithm,
        /// Length that was supplied, in bytes.
        len: usize,
    },
    /// The key is valid but not permitted for the requested operation
    /// (e.g. single DES used for encryption, SM4 key for an X9.19 MAC).
    #[error("key not permitted for this operation: {0}")]
    KeyNotPermitted(&'static str),
    /// Input data is not a non-zero multiple of the cipher block size.
    #[error("data length {len} is not a non-zero multiple of the {block_size}-byte block size")]
    InvalidDataLength {
        /// Length that was supplied, in bytes.
        len: usize,
        /// Block size of the cipher, in bytes.
        block_size: usize,
    },
    /// A hexadecimal string could not be decoded.
    #[error("invalid hexadecimal input")]
    InvalidHex,
    /// Key components are unusable (fewer than two, empty, or of different lengths).
    #[error("invalid key components: {0}")]
    InvalidComponents(&'static str),
    /// The key check value of an imported key does not match the expected one.
    #[error("key check value mismatch: expected {expected}, computed {actual}")]
    KcvMismatch {
        /// Expected KCV, uppercase hex.
        expected: String,
        /// KCV computed from the decrypted key, uppercase hex.
        actual: String,
    },
    /// The PIN is not 4 to 12 decimal digits.
    #[error("invalid PIN: {0}")]
    InvalidPin(&'static str),
    /// The PAN is not 13 to 19 decimal digits.
    #[error("invalid PAN: {0}")]
    InvalidPan(&'static str),
    /// A (decrypted) PIN block is malformed: wrong length, control field,
    /// PIN length, digits or fill.
    #[error("invalid PIN block: {0}")]
    InvalidBlock(&'static str),
    /// The PIN block format cannot be used with a key of this algorithm
    /// (ISO 0/1/3 need TDES, `Sm4Iso0` needs SM4).
    #[error("PIN block format {format:?} is not supported with a {algorithm:?} key")]
    UnsupportedFormat {
        /// Requested PIN block format.
        format: PinBlockFormat,
        /// Algorithm of the supplied key.
        algorithm: Algorithm,
    },
}
