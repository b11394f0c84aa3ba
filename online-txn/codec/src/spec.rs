//! ISO 8583 profiles ("specs"): the TOML file format, its validation and the compiled form
//! the codec runs on.
//!
//! A spec describes everything the codec needs to know about one message dialect: the
//! optional TPDU and raw header, how the MTI and bitmaps are encoded, and for every
//! field its type, length kind, length-prefix encoding, value encoding, BCD alignment
//! and padding, and optional subfields (fixed-position composite or TLV). See
//! `docs/codec.md` for the file format.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{CodecError, Result};

/// The built-in profiles, as `(name, TOML text)`.
const BUILTIN: &[(&str, &str)] = &[
    ("cup", include_str!("../profiles/cup.toml")),
    ("iso87-ascii", include_str!("../profiles/iso87-ascii.toml")),
];

/// Largest `max_message_len` a spec may declare (1 MiB).
pub const MAX_MESSAGE_LEN_LIMIT: usize = 1 << 20;

/// Default `max_message_len` when a spec does not set one.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 8192;

/// ISO 8583 data element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// `n`: digits `0-9`.
    N,
    /// `a`: letters `A-Z a-z` and space.
    A,
    /// `an`: letters, digits and space.
    An,
    /// `ans`: printable ASCII (0x20..=0x7E).
    Ans,
    /// `z`: track 2/3 code set, ASCII `0-9 : ; < = > ?` (one BCD nibble each; `=` is the
    /// field separator, nibble `D`).
    Z,
    /// `b`: binary data (bytes).
    B,
    /// `x+n`: `C` (credit) or `D` (debit) followed by digits, e.g. amounts with sign.
    XN,
}

impl FieldType {
    /// The ISO notation of the type (`n`, `ans`, `x+n`, …).
    pub fn notation(self) -> &'static str {
        match self {
            FieldType::N => "n",
            FieldType::A => "a",
            FieldType::An => "an",
            FieldType::Ans => "ans",
            FieldType::Z => "z",
            FieldType::B => "b",
            FieldType::XN => "x+n",
        }
    }

    fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "n" => FieldType::N,
            "a" => FieldType::A,
            "an" => FieldType::An,
            "ans" => FieldType::Ans,
            "z" => FieldType::Z,
            "b" => FieldType::B,
            "x+n" => FieldType::XN,
            _ => return None,
        })
    }

    /// Whether the value is text (everything but `b`).
    pub fn is_text(self) -> bool {
        self != FieldType::B
    }

    /// Whether `c` (an ASCII byte) belongs to this type's character set. Always false for
    /// `b`; for `x+n` this is the digit part only.
    #[inline]
    pub fn allows(self, c: u8) -> bool {
        match self {
            FieldType::N | FieldType::XN => c.is_ascii_digit(),
            FieldType::A => c.is_ascii_alphabetic() || c == b' ',
            FieldType::An => c.is_ascii_alphanumeric() || c == b' ',
            FieldType::Ans => (0x20..=0x7E).contains(&c),
            FieldType::Z => (0x30..=0x3F).contains(&c),
            FieldType::B => false,
        }
    }

    /// Whether every character allowed by `self` is allowed by `parent`.
    fn subset_of(self, parent: FieldType) -> bool {
        use FieldType::*;
        match parent {
            Ans => !matches!(self, B | XN),
            An => matches!(self, N | A | An),
            A => self == A,
            N => self == N,
            Z => matches!(self, N | Z),
            B | XN => false,
        }
    }
}

/// Human description of a type's characters, for error messages.
pub(crate) fn describe(t: FieldType) -> &'static str {
    match t {
        FieldType::N => "digits 0-9",
        FieldType::A => "letters and space",
        FieldType::An => "letters, digits and space",
        FieldType::Ans => "printable ASCII",
        FieldType::Z => "track data characters 0-9 : ; < = > ?",
        FieldType::B => "bytes",
        FieldType::XN => "'C' or 'D' followed by digits",
    }
}

/// How the length of a field is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LengthKind {
    /// Always exactly this many units.
    Fixed,
    /// A 2-digit length prefix (`..` in ISO notation).
    Ll,
    /// A 3-digit length prefix (`...`).
    Lll,
    /// A 4-digit length prefix (`....`).
    Llll,
}

impl LengthKind {
    /// Number of decimal digits of the length prefix (0 for fixed).
    pub fn digits(self) -> usize {
        match self {
            LengthKind::Fixed => 0,
            LengthKind::Ll => 2,
            LengthKind::Lll => 3,
            LengthKind::Llll => 4,
        }
    }

    /// The largest length the prefix can express in decimal.
    fn limit(self) -> usize {
        match self {
            LengthKind::Fixed => 999,
            LengthKind::Ll => 99,
            LengthKind::Lll => 999,
            LengthKind::Llll => 9999,
        }
    }
}

/// Encoding of a length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthEncoding {
    /// ASCII digits: LL = 2 bytes, LLL = 3, LLLL = 4.
    Ascii,
    /// EBCDIC digits (0xF0..=0xF9), as many bytes as digits.
    Ebcdic,
    /// Packed BCD, right-aligned: LL = 1 byte, LLL and LLLL = 2 bytes.
    Bcd,
    /// Unsigned big-endian binary: LL = 1 byte, LLL and LLLL = 2 bytes.
    Binary,
}

/// Encoding of a value (or of the MTI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// One ASCII byte per character.
    Ascii,
    /// One EBCDIC (code page 037) byte per character.
    Ebcdic,
    /// Packed BCD, two digits (nibbles) per byte; odd lengths are padded per `align`/`pad`.
    Bcd,
    /// Raw bytes (type `b` only).
    Binary,
    /// Bytes as ASCII hexadecimal, two characters per byte (type `b` only).
    Hex,
}

/// Which side an odd-length BCD value is aligned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    /// Left-aligned: the pad nibble goes last (`123` → `12 30`).
    Left,
    /// Right-aligned: the pad nibble goes first (`123` → `01 23`).
    Right,
}

/// Encoding of the message type indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtiEncoding {
    /// 4 ASCII digits.
    Ascii,
    /// 4 EBCDIC digits.
    Ebcdic,
    /// 2 bytes of BCD.
    Bcd,
}

/// Encoding of the primary and secondary bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitmapEncoding {
    /// 8 raw bytes per bitmap.
    Binary,
    /// 16 ASCII hexadecimal characters per bitmap (uppercase when encoding; either case
    /// accepted when decoding).
    Hex,
}

/// One subfield of a composite (fixed-position) field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubfieldSpec {
    /// Identifier, used as the key in the JSON form (e.g. `"1"` for 60.1).
    pub id: compact_str::CompactString,
    /// Human-readable name.
    pub name: String,
    /// Type of the subfield's characters.
    pub field_type: FieldType,
    /// Exact length (fixed) or maximum length (variable: the last subfield only, which
    /// takes the rest of the field).
    pub len: usize,
    /// Whether this is a variable-length last subfield.
    pub variable: bool,
}

/// Format of TLV tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlvTag {
    /// BER-TLV tags as in EMV (1 to 4 bytes; the JSON key is the tag in uppercase hex).
    Ber,
    /// Fixed-size ASCII tags (the JSON key is the tag text).
    Ascii(usize),
    /// Fixed-size binary tags (the JSON key is uppercase hex).
    Binary(usize),
}

/// Format of TLV lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlvLength {
    /// BER definite lengths (`0x00..=0x7F`, `0x81 xx`, `0x82 xx xx`); minimal form on encode.
    Ber,
    /// Fixed number of ASCII digits.
    Ascii(usize),
    /// Fixed number of big-endian binary bytes.
    Binary(usize),
    /// Fixed number of BCD bytes.
    Bcd(usize),
}

/// Rules of a TLV-structured field (such as F55 ICC data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvSpec {
    /// Tag format.
    pub tag: TlvTag,
    /// Length format.
    pub length: TlvLength,
    /// Whether values are text (`ans`) rather than bytes.
    pub text_values: bool,
}

/// Inner structure of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldContent {
    /// A plain value.
    Plain,
    /// Fixed-position subfields of a text field; trailing subfields may be absent.
    Composite(Vec<SubfieldSpec>),
    /// A sequence of TLV elements.
    Tlv(TlvSpec),
}

/// The compiled definition of one data element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// Field number (2..=128).
    pub number: u16,
    /// Human-readable name.
    pub name: String,
    /// Data element type.
    pub field_type: FieldType,
    /// Fixed or variable length.
    pub length_kind: LengthKind,
    /// Exact length (fixed) or maximum (variable), in characters / digits for text types
    /// and bytes for `b`. For `x+n`, the number of digits after the sign.
    pub max_len: usize,
    /// Encoding of the length prefix (unused for fixed fields).
    pub length_encoding: LengthEncoding,
    /// Encoding of the value.
    pub encoding: ValueEncoding,
    /// Alignment of odd-length BCD values.
    pub align: Align,
    /// Pad nibble (0..=15) of odd-length BCD values.
    pub pad: u8,
    /// Subfield structure.
    pub content: FieldContent,
}

impl FieldSpec {
    /// Bytes on the wire for a value of `len` units (excluding the length prefix).
    #[inline]
    pub fn wire_len(&self, len: usize) -> usize {
        match (self.field_type, self.encoding) {
            (FieldType::XN, ValueEncoding::Bcd) => 1 + len.div_ceil(2),
            (FieldType::XN, _) => 1 + len,
            (_, ValueEncoding::Bcd) => len.div_ceil(2),
            (_, ValueEncoding::Hex) => 2 * len,
            _ => len,
        }
    }

    /// Bytes on the wire of the length prefix.
    #[inline]
    pub fn prefix_len(&self) -> usize {
        let d = self.length_kind.digits();
        match self.length_encoding {
            _ if d == 0 => 0,
            LengthEncoding::Ascii | LengthEncoding::Ebcdic => d,
            LengthEncoding::Bcd | LengthEncoding::Binary => d.div_ceil(2).min(2),
        }
    }

    /// The field's format in ISO notation, e.g. `n..19` or `b 8`.
    pub fn notation(&self) -> String {
        let dots = match self.length_kind {
            LengthKind::Fixed => " ",
            LengthKind::Ll => "..",
            LengthKind::Lll => "...",
            LengthKind::Llll => "....",
        };
        format!("{}{}{}", self.field_type.notation(), dots, self.max_len)
    }
}

/// A compiled ISO 8583 profile: the codec itself ([`Spec::encode`], [`Spec::decode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) max_message_len: usize,
    pub(crate) tpdu: bool,
    pub(crate) header_len: usize,
    pub(crate) mti: MtiEncoding,
    pub(crate) bitmap: BitmapEncoding,
    pub(crate) secondary_bitmap: bool,
    /// Indexed by field number; entries 0 and 1 are always `None`.
    pub(crate) fields: Vec<Option<FieldSpec>>,
}

impl Spec {
    /// Names of the built-in profiles.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// The TOML text of a built-in profile, to copy as a starting point for your own.
    pub fn builtin_source(name: &str) -> Option<&'static str> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// Loads a built-in profile (`cup`, `iso87-ascii`).
    pub fn builtin(name: &str) -> Result<Spec> {
        match Spec::builtin_source(name) {
            Some(src) => Spec::from_toml_str(src, name),
            None => Err(CodecError::UnknownProfile {
                name: name.to_owned(),
            }),
        }
    }

    /// Loads a profile from a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Spec> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| CodecError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Spec::from_toml_str(&text, &path.display().to_string())
    }

    /// Loads a built-in profile by name, or else a spec file by path. A string that is
    /// neither a built-in name nor looks like a path (contains `/` or `\`, or ends in
    /// `.toml`) nor an existing file gives [`CodecError::UnknownProfile`].
    pub fn by_name_or_path(s: &str) -> Result<Spec> {
        if Spec::builtin_source(s).is_some() {
            return Spec::builtin(s);
        }
        let looks_like_path = s.contains('/') || s.contains('\\') || s.ends_with(".toml");
        if looks_like_path || Path::new(s).is_file() {
            Spec::from_file(s)
        } else {
            Err(CodecError::UnknownProfile { name: s.to_owned() })
        }
    }

    /// Parses and validates a profile from TOML text; `source_name` names it in errors.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Spec> {
        let file: SpecFile =
            toml::from_str(text).map_err(|e| CodecError::spec(source_name, e.to_string()))?;
        compile(file, source_name)
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The profile's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Largest message (TPDU and header included, framing excluded) the codec encodes or
    /// decodes with this profile.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// Whether messages start with a 5-byte TPDU.
    pub fn has_tpdu(&self) -> bool {
        self.tpdu
    }

    /// Length of the raw header after the TPDU (0 = none).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// MTI encoding.
    pub fn mti_encoding(&self) -> MtiEncoding {
        self.mti
    }

    /// Bitmap encoding.
    pub fn bitmap_encoding(&self) -> BitmapEncoding {
        self.bitmap
    }

    /// Whether fields 65..=128 (and so a secondary bitmap) are allowed.
    pub fn has_secondary_bitmap(&self) -> bool {
        self.secondary_bitmap
    }

    /// The definition of field `number`, if the profile has one.
    pub fn field(&self, number: u16) -> Option<&FieldSpec> {
        self.fields
            .get(usize::from(number))
            .and_then(Option::as_ref)
    }

    /// All field definitions, in field-number order.
    pub fn fields(&self) -> impl Iterator<Item = &FieldSpec> {
        self.fields.iter().flatten()
    }
}

// ---------------------------------------------------------------------------------------
// The TOML file format.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    max_message_len: Option<usize>,
    message: MessageFile,
    #[serde(default)]
    defaults: DefaultsFile,
    fields: BTreeMap<String, FieldFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFile {
    #[serde(default)]
    tpdu: bool,
    #[serde(default)]
    header_len: usize,
    mti: MtiEncoding,
    bitmap: BitmapEncoding,
    #[serde(default = "yes")]
    secondary_bitmap: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsFile {
    length_encoding: Option<LengthEncoding>,
    numeric: Option<ValueEncoding>,
    text: Option<ValueEncoding>,
    binary: Option<ValueEncoding>,
    align: Option<Align>,
    pad: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    format: String,
    #[serde(default)]
    name: String,
    length_encoding: Option<LengthEncoding>,
    encoding: Option<ValueEncoding>,
    align: Option<Align>,
    pad: Option<String>,
    subfields: Option<Vec<SubfieldFile>>,
    tlv: Option<TlvFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubfieldFile {
    id: String,
    format: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TlvFile {
    Preset(String),
    Table(TlvTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlvTable {
    tag: String,
    #[serde(default)]
    tag_size: Option<usize>,
    length: String,
    #[serde(default)]
    length_size: Option<usize>,
    #[serde(default)]
    value: Option<String>,
}

/// Parses ISO notation such as `n 6`, `n6`, `n..19`, `ans...999`, `x+n 8`.
fn parse_format(s: &str) -> std::result::Result<(FieldType, LengthKind, usize), String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_lowercase() || c == '+'))
        .unwrap_or(s.len());
    let (ty, rest) = s.split_at(split);
    let field_type = FieldType::parse(ty).ok_or_else(|| {
        format!("format {s:?}: unknown type {ty:?} (expected n, a, an, ans, z, b or x+n)")
    })?;
    let rest = rest.trim_start();
    let dots = rest.chars().take_while(|&c| c == '.').count();
    let kind = match dots {
        0 => LengthKind::Fixed,
        2 => LengthKind::Ll,
        3 => LengthKind::Lll,
        4 => LengthKind::Llll,
        _ => {
            return Err(format!(
                "format {s:?}: use 2, 3 or 4 dots for LL, LLL or LLLL"
            ));
        }
    };
    let digits = &rest[dots..];
    let len: usize = digits
        .parse()
        .map_err(|_| format!("format {s:?}: length {digits:?} is not a number"))?;
    if len == 0 {
        return Err(format!("format {s:?}: length must be at least 1"));
    }
    if len > kind.limit() {
        return Err(format!(
            "format {s:?}: length {len} exceeds {} for this length kind",
            kind.limit()
        ));
    }
    Ok((field_type, kind, len))
}

fn parse_pad(s: &str) -> std::result::Result<u8, String> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_hexdigit() => {
            Ok(c.to_digit(16).map(|d| d as u8).unwrap_or(0))
        }
        _ => Err(format!(
            "pad {s:?} must be a single hexadecimal digit (nibble), such as \"0\" or \"F\""
        )),
    }
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn compile(file: SpecFile, src: &str) -> Result<Spec> {
    let err = |d: String| CodecError::spec(src, d);
    if let Some(kind) = &file.kind
        && kind != "iso8583"
    {
        return Err(err(format!(
            "kind {kind:?}: an ISO 8583 profile has kind \"iso8583\""
        )));
    }
    if file.name.is_empty()
        || !file
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(err(format!(
            "name {:?} must be non-empty letters, digits, '-', '_' or '.'",
            file.name
        )));
    }
    let max_message_len = file.max_message_len.unwrap_or(DEFAULT_MAX_MESSAGE_LEN);
    if !(16..=MAX_MESSAGE_LEN_LIMIT).contains(&max_message_len) {
        return Err(err(format!(
            "max_message_len {max_message_len} must be between 16 and {MAX_MESSAGE_LEN_LIMIT}"
        )));
    }
    let m = &file.message;
    if m.header_len > 64 {
        return Err(err(format!(
            "message.header_len {} exceeds 64 bytes",
            m.header_len
        )));
    }
    let d = &file.defaults;
    let default_pad = match &d.pad {
        Some(p) => parse_pad(p).map_err(|e| err(format!("defaults: {e}")))?,
        None => 0,
    };
    let mut fields: Vec<Option<FieldSpec>> = vec![None; 129];
    if file.fields.is_empty() {
        return Err(err("no fields defined".into()));
    }
    for (key, f) in file.fields {
        let number: u16 = key
            .parse()
            .ok()
            .filter(|n| (2..=128).contains(n))
            .ok_or_else(|| err(format!("fields.{key}: field numbers are 2..=128")))?;
        let ferr = |d: String| err(format!("field {number}: {d}"));
        if number > 64 && !m.secondary_bitmap {
            return Err(ferr(
                "fields above 64 need message.secondary_bitmap = true".into(),
            ));
        }
        let (field_type, length_kind, max_len) = parse_format(&f.format).map_err(ferr)?;
        let default_enc = match field_type {
            FieldType::N | FieldType::Z | FieldType::XN => d.numeric,
            FieldType::A | FieldType::An | FieldType::Ans => d.text,
            FieldType::B => d.binary,
        };
        let encoding = f.encoding.or(default_enc).unwrap_or(match field_type {
            FieldType::B => ValueEncoding::Binary,
            _ => ValueEncoding::Ascii,
        });
        let ok = match field_type {
            FieldType::N | FieldType::Z | FieldType::XN => matches!(
                encoding,
                ValueEncoding::Ascii | ValueEncoding::Ebcdic | ValueEncoding::Bcd
            ),
            FieldType::A | FieldType::An | FieldType::Ans => {
                matches!(encoding, ValueEncoding::Ascii | ValueEncoding::Ebcdic)
            }
            FieldType::B => matches!(encoding, ValueEncoding::Binary | ValueEncoding::Hex),
        };
        if !ok {
            return Err(ferr(format!(
                "encoding {encoding:?} is not allowed for type {} (n/z/x+n: ascii, ebcdic, bcd; a/an/ans: ascii, ebcdic; b: binary, hex)",
                field_type.notation()
            )));
        }
        if field_type == FieldType::XN && length_kind != LengthKind::Fixed {
            return Err(ferr("x+n fields must have a fixed length".into()));
        }
        let length_encoding = f
            .length_encoding
            .or(d.length_encoding)
            .unwrap_or(LengthEncoding::Ascii);
        let align = f.align.or(d.align).unwrap_or(Align::Right);
        let pad = match &f.pad {
            Some(p) => parse_pad(p).map_err(ferr)?,
            None => default_pad,
        };
        let content = match (f.subfields, f.tlv) {
            (Some(_), Some(_)) => {
                return Err(ferr("a field has either subfields or tlv, not both".into()));
            }
            (None, None) => FieldContent::Plain,
            (Some(subs), None) => FieldContent::Composite(compile_subfields(
                subs,
                field_type,
                length_kind,
                max_len,
                &ferr,
            )?),
            (None, Some(tlv)) => {
                if !matches!(field_type, FieldType::B | FieldType::Ans) {
                    return Err(ferr("tlv is allowed on b and ans fields only".into()));
                }
                FieldContent::Tlv(compile_tlv(tlv, field_type, &ferr)?)
            }
        };
        fields[usize::from(number)] = Some(FieldSpec {
            number,
            name: f.name,
            field_type,
            length_kind,
            max_len,
            length_encoding,
            encoding,
            align,
            pad,
            content,
        });
    }
    Ok(Spec {
        name: file.name,
        description: file.description,
        max_message_len,
        tpdu: m.tpdu,
        header_len: m.header_len,
        mti: m.mti,
        bitmap: m.bitmap,
        secondary_bitmap: m.secondary_bitmap,
        fields,
    })
}

fn compile_subfields(
    subs: Vec<SubfieldFile>,
    parent: FieldType,
    kind: LengthKind,
    max_len: usize,
    ferr: &dyn Fn(String) -> CodecError,
) -> Result<Vec<SubfieldSpec>> {
    if !parent.is_text() || parent == FieldType::XN {
        return Err(ferr(
            "subfields are allowed on n, a, an, ans and z fields only".into(),
        ));
    }
    if subs.is_empty() {
        return Err(ferr("subfields is empty".into()));
    }
    let count = subs.len();
    let mut out: Vec<SubfieldSpec> = Vec::with_capacity(count);
    let mut total = 0usize;
    for (i, s) in subs.into_iter().enumerate() {
        if !valid_id(&s.id) {
            return Err(ferr(format!(
                "subfield id {:?} must be 1-32 letters, digits, '_', '-' or '.'",
                s.id
            )));
        }
        if out.iter().any(|o| o.id == s.id) {
            return Err(ferr(format!("duplicate subfield id {:?}", s.id)));
        }
        let (ty, k, len) =
            parse_format(&s.format).map_err(|e| ferr(format!("subfield {}: {e}", s.id)))?;
        if !ty.subset_of(parent) {
            return Err(ferr(format!(
                "subfield {}: type {} is not allowed inside a {} field",
                s.id,
                ty.notation(),
                parent.notation()
            )));
        }
        let variable = k != LengthKind::Fixed;
        if variable && i + 1 != count {
            return Err(ferr(format!(
                "subfield {}: only the last subfield may have a variable length",
                s.id
            )));
        }
        total += len;
        out.push(SubfieldSpec {
            id: s.id.into(),
            name: s.name,
            field_type: ty,
            len,
            variable,
        });
    }
    let last_variable = out.last().is_some_and(|s| s.variable);
    if kind == LengthKind::Fixed && (total != max_len || last_variable) {
        return Err(ferr(format!(
            "fixed subfields must add up to the field length {max_len} (they add up to {total})"
        )));
    }
    if total > max_len {
        return Err(ferr(format!(
            "subfields add up to {total}, more than the field maximum {max_len}"
        )));
    }
    Ok(out)
}

fn compile_tlv(
    tlv: TlvFile,
    parent: FieldType,
    ferr: &dyn Fn(String) -> CodecError,
) -> Result<TlvSpec> {
    let t = match tlv {
        TlvFile::Preset(p) if p == "ber" => TlvTable {
            tag: "ber".into(),
            tag_size: None,
            length: "ber".into(),
            length_size: None,
            value: None,
        },
        TlvFile::Preset(p) => {
            return Err(ferr(format!(
                "tlv {p:?}: the only preset is \"ber\"; otherwise give a table {{ tag, tag_size, length, length_size, value }}"
            )));
        }
        TlvFile::Table(t) => t,
    };
    let size = |what: &str, s: Option<usize>| -> Result<usize> {
        match s {
            Some(n @ 1..=4) => Ok(n),
            _ => Err(ferr(format!("tlv.{what}_size must be 1..=4"))),
        }
    };
    let tag = match t.tag.as_str() {
        "ber" if t.tag_size.is_none() => TlvTag::Ber,
        "ascii" => TlvTag::Ascii(size("tag", t.tag_size)?),
        "binary" => TlvTag::Binary(size("tag", t.tag_size)?),
        other => {
            return Err(ferr(format!(
                "tlv.tag {other:?}: expected \"ber\" (without tag_size), \"ascii\" or \"binary\""
            )));
        }
    };
    let length = match t.length.as_str() {
        "ber" if t.length_size.is_none() => TlvLength::Ber,
        "ascii" => TlvLength::Ascii(size("length", t.length_size)?),
        "binary" => TlvLength::Binary(size("length", t.length_size)?),
        "bcd" => TlvLength::Bcd(size("length", t.length_size)?),
        other => {
            return Err(ferr(format!(
                "tlv.length {other:?}: expected \"ber\" (without length_size), \"ascii\", \"binary\" or \"bcd\""
            )));
        }
    };
    let text_values = match t.value.as_deref() {
        None | Some("b") => false,
        Some("ans") => true,
        Some(other) => {
            return Err(ferr(format!(
                "tlv.value {other:?}: expected \"b\" or \"ans\""
            )));
        }
    };
    if parent == FieldType::Ans
        && (!text_values
            || !matches!(tag, TlvTag::Ascii(_))
            || !matches!(length, TlvLength::Ascii(_)))
    {
        return Err(ferr(
            "tlv inside an ans field needs ascii tags, ascii lengths and value = \"ans\"".into(),
        ));
    }
    Ok(TlvSpec {
        tag,
        length,
        text_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notation_parses() {
        assert_eq!(
            parse_format("n 6"),
            Ok((FieldType::N, LengthKind::Fixed, 6))
        );
        assert_eq!(parse_format("n6"), Ok((FieldType::N, LengthKind::Fixed, 6)));
        assert_eq!(
            parse_format("n..19"),
            Ok((FieldType::N, LengthKind::Ll, 19))
        );
        assert_eq!(
            parse_format("ans...999"),
            Ok((FieldType::Ans, LengthKind::Lll, 999))
        );
        assert_eq!(
            parse_format("b....9999"),
            Ok((FieldType::B, LengthKind::Llll, 9999))
        );
        assert_eq!(
            parse_format("x+n 8"),
            Ok((FieldType::XN, LengthKind::Fixed, 8))
        );
        assert!(parse_format("n..100").is_err());
        assert!(parse_format("q 3").is_err());
        assert!(parse_format("n .5").is_err());
        assert!(parse_format("n 0").is_err());
        assert!(parse_format("n").is_err());
    }

    fn load(fields: &str) -> Result<Spec> {
        Spec::from_toml_str(
            &format!(
                "name = \"t\"\n[message]\nmti = \"ascii\"\nbitmap = \"hex\"\nsecondary_bitmap = false\n[fields]\n{fields}"
            ),
            "t",
        )
    }

    #[test]
    fn invalid_specs_are_rejected_with_the_field_named() {
        let cases = [
            ("1 = { format = \"n 2\" }", "field numbers are 2..=128"),
            ("129 = { format = \"n 2\" }", "field numbers are 2..=128"),
            ("65 = { format = \"n 2\" }", "secondary_bitmap"),
            (
                "2 = { format = \"n 2\", bogus = 1 }",
                "unknown field `bogus`",
            ),
            (
                "2 = { format = \"ans 2\", encoding = \"bcd\" }",
                "not allowed for type ans",
            ),
            (
                "2 = { format = \"b 2\", encoding = \"ascii\" }",
                "not allowed for type b",
            ),
            (
                "2 = { format = \"x+n..8\" }",
                "x+n fields must have a fixed length",
            ),
            (
                "2 = { format = \"n 2\", tlv = \"ber\" }",
                "tlv is allowed on b and ans",
            ),
            (
                "2 = { format = \"b..9\", tlv = \"der\" }",
                "the only preset",
            ),
            (
                "2 = { format = \"n 2\", pad = \"G\" }",
                "single hexadecimal digit",
            ),
            (
                "2 = { format = \"n 5\", subfields = [{ id = \"1\", format = \"n 2\" }] }",
                "must add up to the field length 5",
            ),
            (
                "2 = { format = \"n..9\", subfields = [{ id = \"1\", format = \"an 2\" }] }",
                "type an is not allowed inside a n field",
            ),
            (
                "2 = { format = \"ans..9\", subfields = [{ id = \"1\", format = \"ans..2\" }, { id = \"2\", format = \"n 1\" }] }",
                "only the last subfield may have a variable length",
            ),
        ];
        for (fields, want) in cases {
            let e = load(fields).unwrap_err();
            assert_eq!(e.code(), "CODEC_BAD_SPEC");
            assert!(e.to_string().contains(want), "{fields}: {e}");
        }
        assert!(load("2 = { format = \"n..19\" }").is_ok());
        assert!(Spec::from_toml_str("name = \"t\"", "t").is_err());
    }

    #[test]
    fn builtins_load() {
        for name in Spec::builtin_names() {
            let spec = Spec::builtin(name).expect(name);
            assert_eq!(spec.name(), name);
        }
    }
}
