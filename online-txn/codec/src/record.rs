//! [`Record`]: the flat `name → text` form every format decodes to and encodes from, and
//! the conversion between ISO 8583 [`Message`]s and records.
//!
//! Record keys of an ISO 8583 message: `mti`, `tpdu` and `header` (hex), `N` for field N
//! (text, or uppercase hex for `b` fields), and `N.ID` for subfield / TLV tag `ID` of
//! field N (for example `60.2` or `55.9F26`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::encoding::{from_hex, to_hex};
use crate::error::{CodecError, Result};
use crate::message::{FieldValue, Message, Subfield};
use crate::spec::{FieldContent, FieldType, Spec};

/// A flat record: field names to text values, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Record(BTreeMap<String, String>);

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Sets `key`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(key.into(), value.into())
    }

    /// Sets `key` (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }
    /// Drops the keys whose value is blank (empty or only spaces): padding of a fixed-width
    /// field or an empty delimited field means "absent".
    pub fn drop_blank(&mut self) {
        self.0.retain(|_, v| !v.trim().is_empty());
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Record {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Record(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl IntoIterator for Record {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

fn value_text(v: &FieldValue) -> String {
    match v {
        FieldValue::Text(s) => s.to_string(),
        FieldValue::Binary(b) => to_hex(b),
        FieldValue::Subfields(_) => String::new(),
    }
}

impl Message {
    /// The record form of this message (see the module docs for the keys).
    pub fn to_record(&self) -> Record {
        let mut r = Record::new();
        r.insert("mti", self.mti.clone());
        if let Some(t) = &self.tpdu {
            r.insert("tpdu", to_hex(t));
        }
        if let Some(h) = &self.header {
            r.insert("header", to_hex(h));
        }
        for (n, v) in &self.fields {
            match v {
                FieldValue::Subfields(subs) => {
                    for s in subs {
                        r.insert(format!("{n}.{}", s.id), value_text(&s.value));
                    }
                }
                other => {
                    r.insert(n.to_string(), value_text(other));
                }
            }
        }
        r
    }

    /// Builds a message from its record form; `spec` tells which fields are bytes and how
    /// subfields are ordered.
    pub fn from_record(record: &Record, spec: &Spec) -> Result<Message> {
        let mti = record
            .get("mti")
            .ok_or_else(|| CodecError::record("missing key \"mti\""))?
            .to_owned();
        let hex = |key: &str| -> Result<Option<Bytes>> {
            record
                .get(key)
                .map(|v| {
                    from_hex(v)
                        .map(Bytes::from)
                        .map_err(|e| CodecError::record(format!("key {key:?}: {e}")))
                })
                .transpose()
        };
        let mut msg = Message {
            mti,
            tpdu: hex("tpdu")?,
            header: hex("header")?,
            fields: Default::default(),
        };
        let mut subs: BTreeMap<u16, Vec<Subfield>> = BTreeMap::new();
        for (key, value) in record.iter() {
            if matches!(key, "mti" | "tpdu" | "header") {
                continue;
            }
            let (num, sub) = match key.split_once('.') {
                Some((n, s)) => (n, Some(s)),
                None => (key, None),
            };
            let n: u16 = num.parse().map_err(|_| {
                CodecError::record(format!(
                    "key {key:?} is not mti, tpdu, header, a field number or FIELD.SUBFIELD"
                ))
            })?;
            let f = spec.field(n).ok_or_else(|| CodecError::UnknownField {
                field: n,
                profile: spec.name().to_owned(),
            })?;
            let binary = |v: &str| {
                from_hex(v)
                    .map(FieldValue::from)
                    .map_err(|e| CodecError::record(format!("key {key:?}: {e}")))
            };
            match sub {
                None => {
                    let v = if f.field_type == FieldType::B {
                        binary(value)?
                    } else {
                        FieldValue::from(value)
                    };
                    msg.fields.insert(n, v);
                }
                Some(id) => {
                    let v = match &f.content {
                        FieldContent::Tlv(t) if !t.text_values => binary(value)?,
                        FieldContent::Tlv(_) | FieldContent::Composite(_) => {
                            FieldValue::from(value)
                        }
                        FieldContent::Plain => {
                            return Err(CodecError::record(format!(
                                "key {key:?}: field {n} has no subfields"
                            )));
                        }
                    };
                    subs.entry(n).or_default().push(Subfield::new(id, v));
                }
            }
        }
        for (n, mut list) in subs {
            if msg.fields.contains_key(n) {
                return Err(CodecError::record(format!(
                    "field {n} is given both whole and as subfields"
                )));
            }
            if let Some(FieldContent::Composite(defs)) = spec.field(n).map(|f| &f.content) {
                list.sort_by_key(|s| defs.iter().position(|d| d.id == s.id).unwrap_or(usize::MAX));
            }
            msg.fields.insert(n, FieldValue::Subfields(list));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_record_round_trip() {
        let spec = Spec::builtin("cup").unwrap();
        let msg = Message::new("0200")
            .with_tpdu(vec![0x60, 0, 3, 0, 0])
            .with(4, "000000010000")
            .with(52, vec![1, 2, 3, 4, 5, 6, 7, 8])
            .with(55, FieldValue::subfields([("9F26", vec![0xAAu8])]))
            .with(
                60,
                FieldValue::subfields([("1", "22"), ("2", "000001"), ("3", "000")]),
            );
        let r = msg.to_record();
        assert_eq!(r.get("52"), Some("0102030405060708"));
        assert_eq!(r.get("55.9F26"), Some("AA"));
        assert_eq!(r.get("60.2"), Some("000001"));
        assert_eq!(r.get("tpdu"), Some("6000030000"));
        assert_eq!(Message::from_record(&r, &spec).unwrap(), msg);
        let bad = r.clone().with("5", "1");
        assert_eq!(
            Message::from_record(&bad, &spec).unwrap_err().code(),
            "CODEC_UNKNOWN_FIELD"
        );
        let bad = r.with("amount", "1");
        assert_eq!(
            Message::from_record(&bad, &spec).unwrap_err().code(),
            "CODEC_BAD_RECORD"
        );
    }
}
