//! Fixed-width records ("structs"): ordered fields, each a fixed number of characters,
//! padded left or right.
//!
//! ```toml
//! kind = "fixed"
//! name = "kiosk-txn"
//! [[field]]
//! name = "code"
//! width = 4
//! [[field]]
//! name = "amount"
//! width = 12
//! align = "right"   # default "left"
//! pad = "0"         # default " "
//! required = true   # default false: missing values encode as padding only
//! ```
//!
//! Widths count characters of UTF-8 text. Decoding removes the padding (trailing for
//! left-aligned fields, leading for right-aligned ones), so a value made only of pad
//! characters decodes as empty.

use serde::Deserialize;

use crate::error::{CodecError, Result};
use crate::formats::{check_kind, check_names, parse_spec, utf8};
use crate::record::Record;

/// Alignment of a fixed-width value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FixedAlign {
    /// Value first, padding after.
    #[default]
    Left,
    /// Padding first, value after.
    Right,
}

/// One fixed-width field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedField {
    /// Record key.
    pub name: String,
    /// Width in characters.
    pub width: usize,
    /// Alignment.
    #[serde(default)]
    pub align: FixedAlign,
    /// Pad character.
    #[serde(default = "space")]
    pub pad: char,
    /// Whether encoding fails when the record lacks this key.
    #[serde(default)]
    pub required: bool,
}

fn space() -> char {
    ' '
}

/// A fixed-width record format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedFormat {
    kind: String,
    /// Format name.
    pub name: String,
    /// Fields in order.
    #[serde(rename = "field")]
    pub fields: Vec<FixedField>,
}

impl FixedFormat {
    /// Parses and validates a `kind = "fixed"` spec.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        let f: FixedFormat = parse_spec(text, source_name)?;
        check_kind(&f.kind, "fixed", source_name)?;
        check_names(
            &f.name,
            f.fields.iter().map(|x| x.name.as_str()),
            source_name,
        )?;
        if let Some(bad) = f.fields.iter().find(|x| x.width == 0 || x.width > 65_535) {
            return Err(CodecError::spec(
                source_name,
                format!("field {:?}: width must be 1..=65535", bad.name),
            ));
        }
        Ok(f)
    }

    /// Total width in characters.
    pub fn width(&self) -> usize {
        self.fields.iter().map(|f| f.width).sum()
    }

    /// Decodes one record.
    pub fn decode(&self, bytes: &[u8]) -> Result<Record> {
        let text = utf8(bytes)?;
        let total = text.chars().count();
        if total != self.width() {
            return Err(CodecError::record(format!(
                "{}: expected {} characters, got {total}",
                self.name,
                self.width()
            )));
        }
        let mut rec = Record::new();
        let mut chars = text.chars();
        for f in &self.fields {
            let raw: String = chars.by_ref().take(f.width).collect();
            let v = match f.align {
                FixedAlign::Left => raw.trim_end_matches(f.pad),
                FixedAlign::Right => raw.trim_start_matches(f.pad),
            };
            rec.insert(f.name.clone(), v);
        }
        Ok(rec)
    }

    /// Encodes one record.
    pub fn encode(&self, record: &Record) -> Result<Vec<u8>> {
        let mut out = String::with_capacity(self.width());
        for f in &self.fields {
            let v = match record.get(&f.name) {
                Some(v) => v,
                None if f.required => {
                    return Err(CodecError::record(format!(
                        "{}: missing required field {:?}",
                        self.name, f.name
                    )));
                }
                None => "",
            };
            let n = v.chars().count();
            if n > f.width {
                return Err(CodecError::record(format!(
                    "{}: field {:?}: {n} characters do not fit in width {}",
                    self.name, f.name, f.width
                )));
            }
            let pad = std::iter::repeat_n(f.pad, f.width - n);
            match f.align {
                FixedAlign::Left => {
                    out.push_str(v);
                    out.extend(pad);
                }
                FixedAlign::Right => {
                    out.extend(pad);
                    out.push_str(v);
                }
            }
        }
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
kind = "fixed"
name = "t"
[[field]]
name = "code"
width = 4
[[field]]
name = "amount"
width = 8
align = "right"
pad = "0"
required = true
[[field]]
name = "memo"
width = 5
"#;

    #[test]
    fn round_trip() {
        let f = FixedFormat::from_toml_str(SPEC, "t").unwrap();
        let r = Record::new()
            .with("code", "01")
            .with("amount", "12345")
            .with("memo", "取款");
        let bytes = f.encode(&r).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "01  00012345取款   "
        );
        assert_eq!(f.decode(&bytes).unwrap(), r);
        assert!(f.decode(b"short").is_err());
        assert!(f.encode(&Record::new().with("code", "01")).is_err());
        assert!(f.encode(&r.clone().with("code", "12345")).is_err());
        assert!(
            FixedFormat::from_toml_str("kind = \"fixed\"\nname = \"x\"\nfield = []", "x").is_err()
        );
        assert!(
            FixedFormat::from_toml_str(&SPEC.replace("width = 5", "width = 5\nbogus = 1"), "x")
                .is_err()
        );
    }
}
