//! Delimiter-separated records: ordered fields joined by a separator, one record per
//! message.
//!
//! ```toml
//! kind = "delimited"
//! name = "host-reply"
//! separator = "|"
//! trailing_separator = false   # default false: "a|b|c"; true: "a|b|c|"
//! [[field]]
//! name = "code"
//! [[field]]
//! name = "balance"
//! required = true
//! ```
//!
//! Decoding ignores one final line ending (`\n` or `\r\n`) and requires exactly as many
//! values as fields. Encoding rejects values that contain the separator or a line break
//! (there is no escaping).

use serde::Deserialize;

use crate::error::{CodecError, Result};
use crate::formats::{check_kind, check_names, parse_spec, utf8};
use crate::record::Record;

/// One delimited field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelimitedField {
    /// Record key.
    pub name: String,
    /// Whether encoding fails when the record lacks this key (otherwise empty).
    #[serde(default)]
    pub required: bool,
}

/// A delimiter-separated record format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelimitedFormat {
    kind: String,
    /// Format name.
    pub name: String,
    /// Separator (one or more characters).
    pub separator: String,
    /// Whether a separator also follows the last value.
    #[serde(default)]
    pub trailing_separator: bool,
    /// Fields in order.
    #[serde(rename = "field")]
    pub fields: Vec<DelimitedField>,
}

impl DelimitedFormat {
    /// Parses and validates a `kind = "delimited"` spec.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        let f: DelimitedFormat = parse_spec(text, source_name)?;
        check_kind(&f.kind, "delimited", source_name)?;
        check_names(
            &f.name,
            f.fields.iter().map(|x| x.name.as_str()),
            source_name,
        )?;
        if f.separator.is_empty() || f.separator.contains(['\n', '\r']) {
            return Err(CodecError::spec(
                source_name,
                "separator must be non-empty and contain no line break",
            ));
        }
        Ok(f)
    }

    /// Decodes one record.
    pub fn decode(&self, bytes: &[u8]) -> Result<Record> {
        let mut text = utf8(bytes)?;
        text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        if self.trailing_separator {
            text = text.strip_suffix(self.separator.as_str()).ok_or_else(|| {
                CodecError::record(format!(
                    "{}: the record must end with {:?}",
                    self.name, self.separator
                ))
            })?;
        }
        let values: Vec<&str> = text.split(self.separator.as_str()).collect();
        if values.len() != self.fields.len() {
            return Err(CodecError::record(format!(
                "{}: expected {} values separated by {:?}, got {}",
                self.name,
                self.fields.len(),
                self.separator,
                values.len()
            )));
        }
        Ok(self
            .fields
            .iter()
            .zip(values)
            .map(|(f, v)| (f.name.clone(), v.to_owned()))
            .collect())
    }

    /// Encodes one record.
    pub fn encode(&self, record: &Record) -> Result<Vec<u8>> {
        let mut out = String::new();
        for (i, f) in self.fields.iter().enumerate() {
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
            if v.contains(self.separator.as_str()) || v.contains(['\n', '\r']) {
                return Err(CodecError::record(format!(
                    "{}: field {:?} contains the separator or a line break",
                    self.name, f.name
                )));
            }
            if i > 0 {
                out.push_str(&self.separator);
            }
            out.push_str(v);
        }
        if self.trailing_separator {
            out.push_str(&self.separator);
        }
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = DelimitedFormat::from_toml_str(
            "kind = \"delimited\"\nname = \"d\"\nseparator = \"|\"\ntrailing_separator = true\n[[field]]\nname = \"a\"\n[[field]]\nname = \"b\"\nrequired = true\n",
            "d",
        )
        .unwrap();
        let r = Record::new().with("a", "x").with("b", "");
        assert_eq!(f.encode(&r).unwrap(), b"x||");
        assert_eq!(f.decode(b"x||\r\n").unwrap(), r);
        assert!(f.decode(b"x|").is_err());
        assert!(f.decode(b"x|y|z|").is_err());
        assert!(f.encode(&Record::new().with("a", "x")).is_err());
        assert!(f.encode(&Record::new().with("b", "a|b")).is_err());
    }
}
