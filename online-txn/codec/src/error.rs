//! Typed errors with stable codes.

use std::fmt;

/// Where in an ISO 8583 message a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The message as a whole.
    Message,
    /// The 5-byte TPDU.
    Tpdu,
    /// The raw header after the TPDU (for example CUP's 6-byte header).
    Header,
    /// The message type indicator.
    Mti,
    /// The primary or secondary bitmap.
    Bitmap,
    /// A data element (field 2..=128).
    Field(u16),
    /// A subfield or TLV tag of a data element.
    Subfield(u16, String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Message => f.write_str("message"),
            Location::Tpdu => f.write_str("TPDU"),
            Location::Header => f.write_str("header"),
            Location::Mti => f.write_str("MTI"),
            Location::Bitmap => f.write_str("bitmap"),
            Location::Field(n) => write!(f, "field {n}"),
            Location::Subfield(n, id) => write!(f, "field {n} subfield {id}"),
        }
    }
}

/// Every error the codec, the record formats, the mapping and the framers return.
///
/// No input makes this crate panic: malformed frames, wrong lengths, unknown profiles
/// and oversized messages all end up here. [`CodecError::code`] gives a stable,
/// machine-readable code (`CODEC_BAD_LENGTH`, …) that the CLI prints as
/// `error[CODE]: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ends inside an element.
    #[error("{at}: message truncated: needs {needed} byte(s), only {available} left")]
    Truncated {
        /// The element being read.
        at: Location,
        /// Bytes the element needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// A length prefix is malformed, exceeds the field's maximum, or a value has the
    /// wrong length for its field.
    #[error("{at}: {detail}")]
    BadLength {
        /// The element concerned.
        at: Location,
        /// What is wrong.
        detail: String,
    },
    /// A value has characters its type does not allow, bad padding, or the wrong shape.
    #[error("{at}: {detail}")]
    BadValue {
        /// The element concerned.
        at: Location,
        /// What is wrong.
        detail: String,
    },
    /// The bitmap is malformed or inconsistent with the profile.
    #[error("bitmap: {detail}")]
    BadBitmap {
        /// What is wrong.
        detail: String,
    },
    /// A field is present (in the bitmap or the message) that the profile does not define.
    #[error("field {field}: not defined in profile {profile}")]
    UnknownField {
        /// The field number.
        field: u16,
        /// The profile's name.
        profile: String,
    },
    /// Bytes are left after the last field of the bitmap.
    #[error("{extra} unexpected byte(s) after the last field")]
    TrailingData {
        /// How many bytes are left over.
        extra: usize,
    },
    /// A message or frame is larger than allowed.
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The size seen.
        size: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// Neither a built-in profile name nor a spec file.
    #[error(
        "unknown profile {name:?} (built-in profiles: cup, iso87-ascii; or give the path of a .toml spec file)"
    )]
    UnknownProfile {
        /// The name given.
        name: String,
    },
    /// A spec (profile, record format or mapping) file is invalid.
    #[error("spec {source_name}: {detail}")]
    BadSpec {
        /// The file or built-in name.
        source_name: String,
        /// What is wrong.
        detail: String,
    },
    /// Text that should be hexadecimal is not.
    #[error("invalid hex: {detail}")]
    BadHex {
        /// What is wrong.
        detail: String,
    },
    /// JSON input is malformed or does not follow the message convention.
    #[error("invalid JSON: {detail}")]
    BadJson {
        /// What is wrong.
        detail: String,
    },
    /// XML input is malformed or does not match its format spec.
    #[error("invalid XML: {detail}")]
    BadXml {
        /// What is wrong.
        detail: String,
    },
    /// A record (JSON, XML, fixed-width or delimited) does not match its format spec.
    #[error("record: {detail}")]
    BadRecord {
        /// What is wrong.
        detail: String,
    },
    /// A mapping rule cannot be applied.
    #[error("mapping: {detail}")]
    Mapping {
        /// What is wrong.
        detail: String,
    },
    /// A length-prefixed frame is malformed.
    #[error("frame: {detail}")]
    BadFrame {
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read.
    #[error("{path}: {detail}")]
    Io {
        /// The path concerned.
        path: String,
        /// The operating system's message.
        detail: String,
    },
}

impl CodecError {
    /// The stable code of this error, such as `CODEC_BAD_LENGTH`.
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::Truncated { .. } => "CODEC_TRUNCATED",
            CodecError::BadLength { .. } => "CODEC_BAD_LENGTH",
            CodecError::BadValue { .. } => "CODEC_BAD_VALUE",
            CodecError::BadBitmap { .. } => "CODEC_BAD_BITMAP",
            CodecError::UnknownField { .. } => "CODEC_UNKNOWN_FIELD",
            CodecError::TrailingData { .. } => "CODEC_TRAILING_DATA",
            CodecError::TooLarge { .. } => "CODEC_TOO_LARGE",
            CodecError::UnknownProfile { .. } => "CODEC_UNKNOWN_PROFILE",
            CodecError::BadSpec { .. } => "CODEC_BAD_SPEC",
            CodecError::BadHex { .. } => "CODEC_BAD_HEX",
            CodecError::BadJson { .. } => "CODEC_BAD_JSON",
            CodecError::BadXml { .. } => "CODEC_BAD_XML",
            CodecError::BadRecord { .. } => "CODEC_BAD_RECORD",
            CodecError::Mapping { .. } => "CODEC_MAPPING",
            CodecError::BadFrame { .. } => "CODEC_BAD_FRAME",
            CodecError::Io { .. } => "CODEC_IO",
        }
    }

    pub(crate) fn bad_length(at: Location, detail: impl Into<String>) -> Self {
        CodecError::BadLength {
            at,
            detail: detail.into(),
        }
    }

    pub(crate) fn bad_value(at: Location, detail: impl Into<String>) -> Self {
        CodecError::BadValue {
            at,
            detail: detail.into(),
        }
    }

    pub(crate) fn spec(source_name: &str, detail: impl Into<String>) -> Self {
        CodecError::BadSpec {
            source_name: source_name.to_owned(),
            detail: detail.into(),
        }
    }

    pub(crate) fn record(detail: impl Into<String>) -> Self {
        CodecError::BadRecord {
            detail: detail.into(),
        }
    }
}

/// `Result` with [`CodecError`].
pub type Result<T, E = CodecError> = std::result::Result<T, E>;
