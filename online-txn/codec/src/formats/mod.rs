//! Record formats besides ISO 8583, each driven by a TOML spec: [`json`], [`xml`],
//! [`fixed`] (fixed-width struct) and [`delimited`]. They all decode to and encode from a
//! [`Record`]; [`Format`] puts them and ISO 8583 profiles behind one interface so a
//! [`Mapping`](crate::mapping::Mapping) can convert between any two.

pub mod delimited;
pub mod fixed;
pub mod json;
pub mod xml;

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{CodecError, Result};
use crate::message::Message;
use crate::record::Record;
use crate::spec::Spec;

pub use delimited::DelimitedFormat;
pub use fixed::FixedFormat;
pub use json::JsonFormat;
pub use xml::XmlFormat;

/// Any message format: an ISO 8583 profile or a record format.
#[derive(Debug, Clone)]
pub enum Format {
    /// An ISO 8583 profile; records use the keys described in [`crate::record`].
    Iso8583(Spec),
    /// A JSON document.
    Json(JsonFormat),
    /// An XML document.
    Xml(XmlFormat),
    /// A fixed-width record.
    Fixed(FixedFormat),
    /// A delimiter-separated record.
    Delimited(DelimitedFormat),
}

#[derive(Deserialize)]
struct KindOnly {
    kind: Option<String>,
}

impl Format {
    /// Parses a format spec. The top-level `kind` key selects `json`, `xml`, `fixed`,
    /// `delimited` or `iso8583` (the default when absent).
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Format> {
        let kind: KindOnly = toml::from_str::<toml::Table>(text)
            .map_err(|e| CodecError::spec(source_name, e.to_string()))
            .and_then(|t| {
                toml::Value::Table(t)
                    .try_into()
                    .map_err(|e: toml::de::Error| CodecError::spec(source_name, e.to_string()))
            })?;
        match kind.kind.as_deref() {
            None | Some("iso8583") => Spec::from_toml_str(text, source_name).map(Format::Iso8583),
            Some("json") => JsonFormat::from_toml_str(text, source_name).map(Format::Json),
            Some("xml") => XmlFormat::from_toml_str(text, source_name).map(Format::Xml),
            Some("fixed") => FixedFormat::from_toml_str(text, source_name).map(Format::Fixed),
            Some("delimited") => {
                DelimitedFormat::from_toml_str(text, source_name).map(Format::Delimited)
            }
            Some(other) => Err(CodecError::spec(
                source_name,
                format!("kind {other:?}: expected iso8583, json, xml, fixed or delimited"),
            )),
        }
    }

    /// Loads a format spec file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Format> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| CodecError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Format::from_toml_str(&text, &path.display().to_string())
    }

    /// A built-in ISO 8583 profile by name, or else a format spec file by path.
    pub fn by_name_or_path(s: &str) -> Result<Format> {
        if Spec::builtin_source(s).is_some() {
            return Spec::builtin(s).map(Format::Iso8583);
        }
        let looks_like_path = s.contains('/') || s.contains('\\') || s.ends_with(".toml");
        if looks_like_path || Path::new(s).is_file() {
            Format::from_file(s)
        } else {
            Err(CodecError::UnknownProfile { name: s.to_owned() })
        }
    }

    /// The format's name.
    pub fn name(&self) -> &str {
        match self {
            Format::Iso8583(s) => s.name(),
            Format::Json(f) => &f.name,
            Format::Xml(f) => &f.name,
            Format::Fixed(f) => &f.name,
            Format::Delimited(f) => &f.name,
        }
    }

    /// Whether messages of this format are binary (shown as hex by the CLI).
    pub fn is_binary(&self) -> bool {
        matches!(self, Format::Iso8583(_))
    }

    /// Decodes one message into a record.
    pub fn decode_record(&self, bytes: &[u8]) -> Result<Record> {
        match self {
            Format::Iso8583(s) => s.decode(bytes).map(|m| m.to_record()),
            Format::Json(f) => f.decode(bytes),
            Format::Xml(f) => f.decode(bytes),
            Format::Fixed(f) => f.decode(bytes),
            Format::Delimited(f) => f.decode(bytes),
        }
    }

    /// Encodes a record into one message.
    pub fn encode_record(&self, record: &Record) -> Result<Vec<u8>> {
        match self {
            Format::Iso8583(s) => s.encode(&Message::from_record(record, s)?),
            Format::Json(f) => f.encode(record),
            Format::Xml(f) => f.encode(record),
            Format::Fixed(f) => f.encode(record),
            Format::Delimited(f) => f.encode(record),
        }
    }
}

/// Deserializes a spec file, mapping errors to [`CodecError::BadSpec`].
pub(crate) fn parse_spec<T: DeserializeOwned>(text: &str, source_name: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| CodecError::spec(source_name, e.to_string()))
}

/// Checks that `expected` is the kind given in the file.
pub(crate) fn check_kind(kind: &str, expected: &str, source_name: &str) -> Result<()> {
    if kind == expected {
        Ok(())
    } else {
        Err(CodecError::spec(
            source_name,
            format!("kind {kind:?}: expected {expected:?}"),
        ))
    }
}

/// Checks a format's name and that field names are unique and non-empty.
pub(crate) fn check_names<'a>(
    name: &str,
    names: impl Iterator<Item = &'a str>,
    source_name: &str,
) -> Result<()> {
    if name.is_empty() {
        return Err(CodecError::spec(source_name, "name must not be empty"));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut any = false;
    for n in names {
        any = true;
        if n.is_empty() {
            return Err(CodecError::spec(source_name, "a field has an empty name"));
        }
        if !seen.insert(n) {
            return Err(CodecError::spec(
                source_name,
                format!("field name {n:?} is used twice"),
            ));
        }
    }
    if !any {
        return Err(CodecError::spec(source_name, "no fields defined"));
    }
    Ok(())
}

/// The input as UTF-8 text.
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes)
        .map_err(|e| CodecError::record(format!("input is not UTF-8 text: {e}")))
}
