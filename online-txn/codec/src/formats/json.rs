//! JSON documents: each record key is read from / written to a dotted path.
//!
//! ```toml
//! kind = "json"
//! name = "kiosk-request"
//! pretty = false          # default false
//! [[field]]
//! name = "pan"
//! path = "card.pan"       # default: the name
//! [[field]]
//! name = "amount"
//! path = "txn.amount"
//! type = "number"         # "string" (default), "number" or "boolean"
//! required = true         # default false
//! ```
//!
//! Decoding turns strings, numbers and booleans into text (`null` counts as absent);
//! objects and arrays at a field's path are an error. Encoding writes `number` fields as
//! JSON numbers (the text must be a valid JSON number; note that numbers pass through
//! `f64` unless they are integers, so keep exact decimals as `string`).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{CodecError, Result};
use crate::formats::{check_kind, check_names, parse_spec};
use crate::record::Record;

/// JSON type of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    /// A JSON string.
    #[default]
    String,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
}

/// One JSON field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonField {
    /// Record key.
    pub name: String,
    /// Dotted path of object keys (defaults to the name).
    #[serde(default)]
    pub path: Option<String>,
    /// JSON type when encoding.
    #[serde(default, rename = "type")]
    pub json_type: JsonType,
    /// Whether the value must be present (decoding and encoding).
    #[serde(default)]
    pub required: bool,
}

impl JsonField {
    fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(&self.name)
    }
}

/// A JSON record format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFormat {
    kind: String,
    /// Format name.
    pub name: String,
    /// Whether to pretty-print when encoding.
    #[serde(default)]
    pub pretty: bool,
    /// Fields.
    #[serde(rename = "field")]
    pub fields: Vec<JsonField>,
}

impl JsonFormat {
    /// Parses and validates a `kind = "json"` spec.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        let f: JsonFormat = parse_spec(text, source_name)?;
        check_kind(&f.kind, "json", source_name)?;
        check_names(
            &f.name,
            f.fields.iter().map(|x| x.name.as_str()),
            source_name,
        )?;
        for a in &f.fields {
            if a.path().split('.').any(str::is_empty) {
                return Err(CodecError::spec(
                    source_name,
                    format!(
                        "field {:?}: path {:?} has an empty segment",
                        a.name,
                        a.path()
                    ),
                ));
            }
            for b in &f.fields {
                let (pa, pb) = (a.path(), b.path());
                if a.name != b.name
                    && (pa == pb || pb.strip_prefix(pa).is_some_and(|r| r.starts_with('.')))
                {
                    return Err(CodecError::spec(
                        source_name,
                        format!(
                            "fields {:?} and {:?}: path {pb:?} overlaps {pa:?}",
                            a.name, b.name
                        ),
                    ));
                }
            }
        }
        Ok(f)
    }

    /// Decodes one JSON document.
    pub fn decode(&self, bytes: &[u8]) -> Result<Record> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| CodecError::BadJson {
            detail: e.to_string(),
        })?;
        if !doc.is_object() {
            return Err(CodecError::BadJson {
                detail: "the document must be an object".into(),
            });
        }
        let mut rec = Record::new();
        for f in &self.fields {
            let mut cur = Some(&doc);
            for seg in f.path().split('.') {
                cur = cur.and_then(|v| v.get(seg));
            }
            let text = match cur {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                Some(_) => {
                    return Err(CodecError::record(format!(
                        "{}: {:?} is an object or array, not a value",
                        self.name,
                        f.path()
                    )));
                }
            };
            match text {
                Some(t) => {
                    rec.insert(f.name.clone(), t);
                }
                None if f.required => {
                    return Err(CodecError::record(format!(
                        "{}: missing required {:?}",
                        self.name,
                        f.path()
                    )));
                }
                None => {}
            }
        }
        Ok(rec)
    }

    /// Encodes one record as a JSON document.
    pub fn encode(&self, record: &Record) -> Result<Vec<u8>> {
        let mut root = Map::new();
        for f in &self.fields {
            let Some(text) = record.get(&f.name) else {
                if f.required {
                    return Err(CodecError::record(format!(
                        "{}: missing required field {:?}",
                        self.name, f.name
                    )));
                }
                continue;
            };
            let value = match f.json_type {
                JsonType::String => Value::String(text.to_owned()),
                JsonType::Number => match serde_json::from_str::<serde_json::Number>(text) {
                    Ok(n) => Value::Number(n),
                    Err(_) => {
                        return Err(CodecError::record(format!(
                            "{}: field {:?}: {text:?} is not a JSON number",
                            self.name, f.name
                        )));
                    }
                },
                JsonType::Boolean => match text {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => {
                        return Err(CodecError::record(format!(
                            "{}: field {:?}: {text:?} is not true or false",
                            self.name, f.name
                        )));
                    }
                },
            };
            let segs: Vec<&str> = f.path().split('.').collect();
            let Some((last, parents)) = segs.split_last() else {
                continue;
            };
            let mut obj = &mut root;
            for seg in parents {
                let entry = obj
                    .entry((*seg).to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                obj = match entry {
                    Value::Object(m) => m,
                    _ => {
                        return Err(CodecError::record(format!(
                            "{}: path {:?} crosses a value",
                            self.name,
                            f.path()
                        )));
                    }
                };
            }
            obj.insert((*last).to_owned(), value);
        }
        let doc = Value::Object(root);
        let out = if self.pretty {
            serde_json::to_vec_pretty(&doc)
        } else {
            serde_json::to_vec(&doc)
        };
        out.map_err(|e| CodecError::BadJson {
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
kind = "json"
name = "j"
[[field]]
name = "pan"
path = "card.pan"
required = true
[[field]]
name = "amount"
path = "txn.amount"
type = "number"
[[field]]
name = "ok"
type = "boolean"
"#;

    #[test]
    fn round_trip() {
        let f = JsonFormat::from_toml_str(SPEC, "j").unwrap();
        let r = Record::new()
            .with("pan", "6222")
            .with("amount", "100")
            .with("ok", "true");
        let bytes = f.encode(&r).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"card":{"pan":"6222"},"ok":true,"txn":{"amount":100}}"#
        );
        assert_eq!(f.decode(&bytes).unwrap(), r);
        assert_eq!(f.decode(b"{}").unwrap_err().code(), "CODEC_BAD_RECORD");
        assert_eq!(f.decode(b"[1]").unwrap_err().code(), "CODEC_BAD_JSON");
        assert_eq!(f.decode(b"{").unwrap_err().code(), "CODEC_BAD_JSON");
        assert!(f.encode(&r.clone().with("amount", "12a")).is_err());
        let overlap = SPEC.replace("path = \"txn.amount\"", "path = \"card.pan.x\"");
        assert!(JsonFormat::from_toml_str(&overlap, "j").is_err());
    }
}
