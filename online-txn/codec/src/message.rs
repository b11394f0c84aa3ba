//! The message model and its JSON form.
//!
//! # JSON convention
//!
//! ```json
//! {
//!   "mti": "0200",
//!   "tpdu": "6000030000",
//!   "header": "603100000000",
//!   "fields": {
//!     "2": "6222021234567890",
//!     "52": "hex:0A1B2C3D4E5F6071",
//!     "55": { "9F26": "hex:1122334455667788", "9F27": "hex:80" },
//!     "60": { "1": "22", "2": "000001" }
//!   }
//! }
//! ```
//!
//! * `mti`: the 4-digit message type indicator.
//! * `tpdu`, `header`: raw bytes as hexadecimal, present when the profile has them.
//! * `fields`: keyed by field number (decimal string), in ascending order. A value is
//!   - a plain string: the text of an `n`, `a`, `an`, `ans`, `z` or `x+n` field (digits,
//!     not BCD: BCD, EBCDIC and so on are wire encodings the profile takes care of);
//!   - a string starting with `hex:`: bytes (`b` fields, TLV values), uppercase hex;
//!   - a string starting with `txt:`: text whose own first characters are `hex:` or
//!     `txt:` (the prefix is removed; only emitted when needed);
//!   - an object: subfields, keyed by subfield id (composite fields such as CUP F60) or by
//!     tag (TLV fields such as F55; uppercase hex for BER tags), in wire order.
//!
//! When encoding, a `b` field or a binary TLV value also accepts plain hex without the
//! `hex:` prefix, and a composite field also accepts its whole text as one string.

use std::fmt;

use bytes::Bytes;
use compact_str::CompactString;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::{from_hex, to_hex};
use crate::error::{CodecError, Result};

/// Prefix marking bytes in the JSON form.
pub const HEX_PREFIX: &str = "hex:";
/// Prefix escaping text that itself starts with `hex:` or `txt:` in the JSON form.
pub const TEXT_PREFIX: &str = "txt:";

/// An ISO 8583 message, independent of any wire encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Message type indicator, 4 digits (e.g. `"0200"`).
    pub mti: String,
    /// The 5-byte TPDU, for profiles that have one.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub tpdu: Option<Bytes>,
    /// The raw header after the TPDU (6 bytes in CUP), for profiles that have one.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_hex")]
    pub header: Option<Bytes>,
    /// Data elements by field number (2..=128), in ascending order.
    #[serde(default)]
    pub fields: FieldMap,
}

/// Data elements by field number, kept in ascending order: a small sorted map (a
/// `Vec`, faster than a `BTreeMap` for at most 127 entries built in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMap {
    entries: Vec<(u16, FieldValue)>,
}

impl FieldMap {
    /// An empty map.
    pub fn new() -> Self {
        FieldMap::default()
    }

    /// An empty map with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        FieldMap {
            entries: Vec::with_capacity(n),
        }
    }

    fn position(&self, number: u16) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&number, |(n, _)| *n)
    }

    /// Field `number`.
    pub fn get(&self, number: u16) -> Option<&FieldValue> {
        self.position(number).ok().map(|i| &self.entries[i].1)
    }

    /// Field `number`, mutably.
    pub fn get_mut(&mut self, number: u16) -> Option<&mut FieldValue> {
        match self.position(number) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    /// Sets field `number`, returning its previous value.
    pub fn insert(&mut self, number: u16, value: FieldValue) -> Option<FieldValue> {
        // Appending in ascending order (the common case) needs no search.
        if self.entries.last().is_none_or(|(n, _)| *n < number) {
            self.entries.push((number, value));
            return None;
        }
        match self.position(number) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (number, value));
                None
            }
        }
    }

    /// Removes field `number`, returning its value.
    pub fn remove(&mut self, number: u16) -> Option<FieldValue> {
        match self.position(number) {
            Ok(i) => Some(self.entries.remove(i).1),
            Err(_) => None,
        }
    }

    /// Whether field `number` is present.
    pub fn contains_key(&self, number: u16) -> bool {
        self.position(number).is_ok()
    }

    /// Field numbers, ascending.
    pub fn keys(&self) -> impl Iterator<Item = u16> + '_ {
        self.entries.iter().map(|(n, _)| *n)
    }

    /// `(number, value)` pairs, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &FieldValue)> {
        self.entries.iter().map(|(n, v)| (*n, v))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

impl<'a> IntoIterator for &'a FieldMap {
    type Item = (u16, &'a FieldValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (u16, FieldValue)>,
        fn(&'a (u16, FieldValue)) -> (u16, &'a FieldValue),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(n, v)| (*n, v))
    }
}

impl IntoIterator for FieldMap {
    type Item = (u16, FieldValue);
    type IntoIter = std::vec::IntoIter<(u16, FieldValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl FromIterator<(u16, FieldValue)> for FieldMap {
    fn from_iter<I: IntoIterator<Item = (u16, FieldValue)>>(iter: I) -> Self {
        let mut m = FieldMap::new();
        for (n, v) in iter {
            m.insert(n, v);
        }
        m
    }
}

impl Serialize for FieldMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (n, v) in &self.entries {
            map.serialize_entry(n, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FieldMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object keyed by field number")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldMap, A::Error> {
                let mut out = FieldMap::new();
                while let Some(n) = map.next_key::<u16>()? {
                    let v = map.next_value::<FieldValue>()?;
                    if out.insert(n, v).is_some() {
                        return Err(de::Error::custom(format!("field {n} given twice")));
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The value of a data element or subfield.
///
/// Text is a [`CompactString`] (stored inline up to 24 bytes, so most fields need no
/// allocation) and bytes are [`Bytes`] (decoding slices them out of the input without
/// copying); both dereference to `str` / `[u8]` and convert from `&str`, `String`,
/// `Vec<u8>` and `&[u8]` with `.into()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// Text of an `n`, `a`, `an`, `ans`, `z` or `x+n` element.
    Text(CompactString),
    /// Bytes of a `b` element.
    Binary(Bytes),
    /// Subfields (composite or TLV), in wire order.
    Subfields(Vec<Subfield>),
}

/// One subfield or TLV element of a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subfield {
    /// Subfield id (composite) or tag (TLV).
    pub id: CompactString,
    /// Its value ([`FieldValue::Text`] or [`FieldValue::Binary`]).
    pub value: FieldValue,
}

impl Subfield {
    /// A subfield.
    pub fn new(id: impl Into<CompactString>, value: impl Into<FieldValue>) -> Self {
        Subfield {
            id: id.into(),
            value: value.into(),
        }
    }
}

impl FieldValue {
    /// The text, if this is a text value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            FieldValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a binary value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            FieldValue::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The subfields, if this is a structured value.
    pub fn as_subfields(&self) -> Option<&[Subfield]> {
        match self {
            FieldValue::Subfields(s) => Some(s),
            _ => None,
        }
    }

    /// The subfield (or TLV tag) `id`, if this is a structured value that has it.
    pub fn subfield(&self, id: &str) -> Option<&FieldValue> {
        self.as_subfields()?
            .iter()
            .find(|s| s.id == id)
            .map(|s| &s.value)
    }

    /// Builds structured values from `(id, value)` pairs.
    pub fn subfields<I, K, V>(items: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<CompactString>,
        V: Into<FieldValue>,
    {
        FieldValue::Subfields(
            items
                .into_iter()
                .map(|(k, v)| Subfield::new(k, v))
                .collect(),
        )
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::Text(s.into())
    }
}

impl From<String> for FieldValue {
    fn from(s: String) -> Self {
        FieldValue::Text(s.into())
    }
}

impl From<CompactString> for FieldValue {
    fn from(s: CompactString) -> Self {
        FieldValue::Text(s)
    }
}

impl From<Vec<u8>> for FieldValue {
    fn from(b: Vec<u8>) -> Self {
        FieldValue::Binary(b.into())
    }
}

impl From<&[u8]> for FieldValue {
    fn from(b: &[u8]) -> Self {
        FieldValue::Binary(Bytes::copy_from_slice(b))
    }
}

impl<const N: usize> From<[u8; N]> for FieldValue {
    fn from(b: [u8; N]) -> Self {
        FieldValue::Binary(Bytes::copy_from_slice(&b))
    }
}

impl From<Bytes> for FieldValue {
    fn from(b: Bytes) -> Self {
        FieldValue::Binary(b)
    }
}

impl From<Vec<Subfield>> for FieldValue {
    fn from(s: Vec<Subfield>) -> Self {
        FieldValue::Subfields(s)
    }
}

impl Message {
    /// An empty message with this MTI.
    pub fn new(mti: impl Into<String>) -> Self {
        Message {
            mti: mti.into(),
            ..Message::default()
        }
    }

    /// Sets the TPDU (builder style).
    pub fn with_tpdu(mut self, tpdu: impl Into<Bytes>) -> Self {
        self.tpdu = Some(tpdu.into());
        self
    }

    /// Sets the raw header (builder style).
    pub fn with_header(mut self, header: impl Into<Bytes>) -> Self {
        self.header = Some(header.into());
        self
    }

    /// Sets field `number` (builder style).
    pub fn with(mut self, number: u16, value: impl Into<FieldValue>) -> Self {
        self.fields.insert(number, value.into());
        self
    }

    /// Sets field `number`, returning its previous value.
    pub fn set(&mut self, number: u16, value: impl Into<FieldValue>) -> Option<FieldValue> {
        self.fields.insert(number, value.into())
    }

    /// Removes field `number`, returning its value.
    pub fn remove(&mut self, number: u16) -> Option<FieldValue> {
        self.fields.remove(number)
    }

    /// Field `number`.
    pub fn get(&self, number: u16) -> Option<&FieldValue> {
        self.fields.get(number)
    }

    /// The text of field `number`, if it is a text value.
    pub fn text(&self, number: u16) -> Option<&str> {
        self.get(number)?.as_text()
    }

    /// The bytes of field `number`, if it is a binary value.
    pub fn bytes(&self, number: u16) -> Option<&[u8]> {
        self.get(number)?.as_bytes()
    }

    /// Whether field `number` is present.
    pub fn has(&self, number: u16) -> bool {
        self.fields.contains_key(number)
    }

    /// The JSON form (see the module docs), pretty-printed.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// The JSON form (see the module docs), compact.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<Message> {
        serde_json::from_str(text).map_err(|e| CodecError::BadJson {
            detail: e.to_string(),
        })
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Text(s) => {
                if s.starts_with(HEX_PREFIX) || s.starts_with(TEXT_PREFIX) {
                    serializer.serialize_str(&format!("{TEXT_PREFIX}{s}"))
                } else {
                    serializer.serialize_str(s)
                }
            }
            FieldValue::Binary(b) => {
                serializer.serialize_str(&format!("{HEX_PREFIX}{}", to_hex(b)))
            }
            FieldValue::Subfields(subs) => {
                let mut map = serializer.serialize_map(Some(subs.len()))?;
                for s in subs {
                    map.serialize_entry(s.id.as_str(), &s.value)?;
                }
                map.end()
            }
        }
    }
}

/// Parses one JSON string according to the convention.
fn value_from_str<E: de::Error>(s: &str) -> Result<FieldValue, E> {
    if let Some(h) = s.strip_prefix(HEX_PREFIX) {
        from_hex(h)
            .map(|b| FieldValue::Binary(b.into()))
            .map_err(|e| E::custom(format!("{s:?}: {e}")))
    } else if let Some(t) = s.strip_prefix(TEXT_PREFIX) {
        Ok(FieldValue::Text(t.into()))
    } else {
        Ok(FieldValue::Text(s.into()))
    }
}

struct FieldValueVisitor {
    nested: bool,
}

impl<'de> Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nested {
            f.write_str("a string (text, or \"hex:\" followed by bytes in hex)")
        } else {
            f.write_str(
                "a string (text, or \"hex:\" followed by bytes in hex) or an object of subfields",
            )
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldValue, E> {
        value_from_str(v)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
        if self.nested {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        let mut subs = Vec::new();
        while let Some(id) = map.next_key::<String>()? {
            let value = map.next_value::<SubfieldValue>()?.0;
            subs.push(Subfield {
                id: id.into(),
                value,
            });
        }
        Ok(FieldValue::Subfields(subs))
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor { nested: false })
    }
}

/// A subfield value: strings only, no nesting.
struct SubfieldValue(FieldValue);

impl<'de> Deserialize<'de> for SubfieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(FieldValueVisitor { nested: true })
            .map(SubfieldValue)
    }
}

mod opt_hex {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&crate::encoding::to_hex(b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => crate::encoding::from_hex(&s)
                .map(|b| Some(b.into()))
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_convention_round_trips() {
        let m = Message::new("0200")
            .with_tpdu(vec![0x60, 0, 3, 0, 0])
            .with(2, "6222021234567890")
            .with(41, "hex:abc")
            .with(42, "txt:x")
            .with(52, vec![0x0A, 0x1B])
            .with(
                55,
                FieldValue::subfields([("9F26", vec![0x11u8, 0x22]), ("82", vec![0x7C, 0x00])]),
            );
        let j = m.to_json();
        assert!(j.contains(r#""52":"hex:0A1B""#), "{j}");
        assert!(j.contains(r#""41":"txt:hex:abc""#), "{j}");
        assert!(j.contains(r#""42":"txt:txt:x""#), "{j}");
        assert!(j.contains(r#""tpdu":"6000030000""#), "{j}");
        assert!(
            j.contains(r#""55":{"9F26":"hex:1122","82":"hex:7C00"}"#),
            "{j}"
        );
        assert_eq!(Message::from_json(&j).unwrap(), m);
    }

    #[test]
    fn json_errors_are_typed() {
        for bad in [
            r#"{"mti":"0200","fields":{"2":5}}"#,
            r#"{"mti":"0200","fields":{"52":"hex:0G"}}"#,
            r#"{"mti":"0200","fields":{"55":{"9F26":{"a":"b"}}}}"#,
            r#"{"mti":"0200","fields":{"x":"1"}}"#,
            r#"{"mti":"0200","extra":1}"#,
            r#"{"mti":"0200","tpdu":"123"}"#,
            "not json",
        ] {
            let e = Message::from_json(bad).unwrap_err();
            assert_eq!(e.code(), "CODEC_BAD_JSON", "{bad}");
        }
    }
}
