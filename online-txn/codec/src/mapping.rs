//! Field mapping between two record formats, driven by a TOML spec.
//!
//! ```toml
//! name = "kiosk-to-cup"
//!
//! [[map]]                       # copy (the default transform)
//! from = "pan"
//! to = "2"
//!
//! [[map]]                       # a constant
//! to = "3"
//! constant = "310000"
//!
//! [[map]]                       # "123.45" -> "000000012345"
//! from = "amount"
//! to = "4"
//! transform = "decimal_to_minor"
//! scale = 2
//! width = 12
//!
//! [[map]]
//! from = "terminal"
//! to = "41"
//! transform = "pad_right"       # also pad_left, trim, trim_left, trim_right
//! width = 8
//! pad = " "
//! required = true               # default false: a missing source skips the rule
//! default = "00000000"          # used when the source is missing
//! ```
//!
//! Transforms: `copy`, `pad_left` / `pad_right` (to `width` with `pad`, default `" "`; a
//! longer value is an error), `trim` / `trim_left` / `trim_right` (`pad` characters,
//! default whitespace), `minor_to_decimal` (`"000000012345"` → `"123.45"` with `scale`,
//! default 2), `decimal_to_minor` (`"123.45"` → `"12345"`, left-padded with zeros to
//! `width` when given; more decimals than `scale` is an error, never a rounding).
//!
//! Keys of ISO 8583 records are `mti`, `N` and `N.SUB` (see [`crate::record`]).

use std::path::Path;

use serde::Deserialize;

use crate::error::{CodecError, Result};
use crate::formats::Format;
use crate::record::Record;

/// A value transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// The value unchanged.
    #[default]
    Copy,
    /// Left-pad to `width` with `pad`.
    PadLeft,
    /// Right-pad to `width` with `pad`.
    PadRight,
    /// Remove `pad` characters (or whitespace) at both ends.
    Trim,
    /// Remove `pad` characters (or whitespace) at the start.
    TrimLeft,
    /// Remove `pad` characters (or whitespace) at the end.
    TrimRight,
    /// Integer minor units to a decimal amount (`scale` decimals).
    MinorToDecimal,
    /// Decimal amount to integer minor units (`scale` decimals), optionally zero-padded
    /// to `width`.
    DecimalToMinor,
}

/// One mapping rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Source key (absent for constants).
    #[serde(default)]
    pub from: Option<String>,
    /// Target key.
    pub to: String,
    /// A constant value instead of a source key.
    #[serde(default)]
    pub constant: Option<String>,
    /// Transform applied to the value.
    #[serde(default)]
    pub transform: Transform,
    /// Width for padding transforms and `decimal_to_minor`.
    #[serde(default)]
    pub width: Option<usize>,
    /// Pad or trim character.
    #[serde(default)]
    pub pad: Option<char>,
    /// Decimals for amount transforms (default 2).
    #[serde(default)]
    pub scale: Option<u32>,
    /// Value used when the source key is missing.
    #[serde(default)]
    pub default: Option<String>,
    /// Whether a missing source (with no default) is an error rather than skipped.
    #[serde(default)]
    pub required: bool,
}

/// A mapping spec: rules applied in order to build the target record.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Mapping name.
    pub name: String,
    /// Rules.
    #[serde(rename = "map")]
    pub rules: Vec<Rule>,
}

fn map_err(rule: &Rule, detail: impl std::fmt::Display) -> CodecError {
    CodecError::Mapping {
        detail: format!("{}: {detail}", rule.to),
    }
}

impl Mapping {
    /// Parses and validates a mapping spec.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Mapping> {
        let m: Mapping = crate::formats::parse_spec(text, source_name)?;
        let err = |d: String| CodecError::spec(source_name, d);
        if m.rules.is_empty() {
            return Err(err("no [[map]] rules".into()));
        }
        for r in &m.rules {
            if r.to.is_empty() {
                return Err(err("a rule has an empty 'to'".into()));
            }
            match (&r.from, &r.constant) {
                (Some(_), Some(_)) => {
                    return Err(err(format!(
                        "{}: give 'from' or 'constant', not both",
                        r.to
                    )));
                }
                (None, None) => {
                    return Err(err(format!("{}: give 'from' or 'constant'", r.to)));
                }
                _ => {}
            }
            let needs_width = matches!(r.transform, Transform::PadLeft | Transform::PadRight);
            if needs_width && r.width.is_none() {
                return Err(err(format!("{}: {:?} needs a width", r.to, r.transform)));
            }
            if r.scale.is_some_and(|s| s > 18) {
                return Err(err(format!("{}: scale must be 0..=18", r.to)));
            }
        }
        Ok(m)
    }

    /// Loads a mapping spec file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Mapping> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| CodecError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        Mapping::from_toml_str(&text, &path.display().to_string())
    }

    /// Builds the target record from `source`.
    pub fn apply(&self, source: &Record) -> Result<Record> {
        let mut out = Record::new();
        for rule in &self.rules {
            let value = match (&rule.constant, &rule.from) {
                (Some(c), _) => c.clone(),
                (None, Some(from)) => match source.get(from).or(rule.default.as_deref()) {
                    Some(v) => v.to_owned(),
                    None if rule.required => {
                        return Err(map_err(rule, format!("source {from:?} is missing")));
                    }
                    None => continue,
                },
                (None, None) => continue,
            };
            out.insert(rule.to.clone(), transform(rule, &value)?);
        }
        Ok(out)
    }

    /// Decodes `input` with `from`, applies the mapping and encodes with `to`.
    pub fn convert(&self, from: &Format, to: &Format, input: &[u8]) -> Result<Vec<u8>> {
        let record = from.decode_record(input)?;
        to.encode_record(&self.apply(&record)?)
    }
}

fn transform(rule: &Rule, v: &str) -> Result<String> {
    let pad = rule.pad.unwrap_or(' ');
    let scale = rule.scale.unwrap_or(2) as usize;
    Ok(match rule.transform {
        Transform::Copy => v.to_owned(),
        Transform::PadLeft | Transform::PadRight => {
            let width = rule.width.unwrap_or(0);
            let n = v.chars().count();
            if n > width {
                return Err(map_err(
                    rule,
                    format!("{n} characters do not fit in width {width}"),
                ));
            }
            let padding: String = std::iter::repeat_n(pad, width - n).collect();
            if rule.transform == Transform::PadLeft {
                padding + v
            } else {
                v.to_owned() + &padding
            }
        }
        Transform::Trim | Transform::TrimLeft | Transform::TrimRight => {
            let t = rule.transform;
            let left = t != Transform::TrimRight;
            let right = t != Transform::TrimLeft;
            let mut s = v;
            match rule.pad {
                Some(p) => {
                    if left {
                        s = s.trim_start_matches(p);
                    }
                    if right {
                        s = s.trim_end_matches(p);
                    }
                }
                None => {
                    if left {
                        s = s.trim_start();
                    }
                    if right {
                        s = s.trim_end();
                    }
                }
            }
            s.to_owned()
        }
        Transform::MinorToDecimal => {
            if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
                return Err(map_err(
                    rule,
                    format!("{v:?} is not an amount in minor units"),
                ));
            }
            let digits = v.trim_start_matches('0');
            let digits = format!("{digits:0>w$}", w = scale + 1);
            let (int, frac) = digits.split_at(digits.len() - scale);
            if scale == 0 {
                int.to_owned()
            } else {
                format!("{int}.{frac}")
            }
        }
        Transform::DecimalToMinor => {
            let (int, frac) = v.split_once('.').unwrap_or((v, ""));
            let ok = !int.is_empty()
                && int.bytes().all(|c| c.is_ascii_digit())
                && frac.bytes().all(|c| c.is_ascii_digit())
                && !(v.contains('.') && frac.is_empty());
            if !ok {
                return Err(map_err(rule, format!("{v:?} is not a decimal amount")));
            }
            if frac.len() > scale {
                return Err(map_err(
                    rule,
                    format!("{v:?} has more than {scale} decimals"),
                ));
            }
            let mut minor = format!("{int}{frac:0<scale$}");
            let trimmed = minor.trim_start_matches('0');
            minor = if trimmed.is_empty() {
                "0".into()
            } else {
                trimmed.to_owned()
            };
            match rule.width {
                Some(w) if minor.len() > w => {
                    return Err(map_err(rule, format!("{v:?} does not fit in {w} digits")));
                }
                Some(w) => format!("{minor:0>w$}"),
                None => minor,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(t: Transform) -> Rule {
        Rule {
            from: Some("a".into()),
            to: "b".into(),
            constant: None,
            transform: t,
            width: None,
            pad: None,
            scale: None,
            default: None,
            required: false,
        }
    }

    #[test]
    fn amounts() {
        let m2d = rule(Transform::MinorToDecimal);
        assert_eq!(transform(&m2d, "000000012345").unwrap(), "123.45");
        assert_eq!(transform(&m2d, "5").unwrap(), "0.05");
        assert_eq!(transform(&m2d, "000").unwrap(), "0.00");
        assert!(transform(&m2d, "12.3").is_err());
        let mut d2m = rule(Transform::DecimalToMinor);
        d2m.width = Some(12);
        assert_eq!(transform(&d2m, "123.45").unwrap(), "000000012345");
        assert_eq!(transform(&d2m, "123.4").unwrap(), "000000012340");
        assert_eq!(transform(&d2m, "7").unwrap(), "000000000700");
        assert!(transform(&d2m, "1.234").is_err());
        assert!(transform(&d2m, "-1").is_err());
        assert!(transform(&d2m, "1.").is_err());
        assert!(transform(&d2m, "10000000000.00").is_err());
        let mut s0 = rule(Transform::MinorToDecimal);
        s0.scale = Some(0);
        assert_eq!(transform(&s0, "0042").unwrap(), "42");
    }

    #[test]
    fn padding_and_trim() {
        let mut p = rule(Transform::PadLeft);
        p.width = Some(6);
        p.pad = Some('0');
        assert_eq!(transform(&p, "42").unwrap(), "000042");
        assert!(transform(&p, "1234567").is_err());
        let mut t = rule(Transform::TrimLeft);
        t.pad = Some('0');
        assert_eq!(transform(&t, "000420").unwrap(), "420");
        assert_eq!(transform(&rule(Transform::Trim), "  x ").unwrap(), "x");
    }

    #[test]
    fn apply_rules() {
        let m = Mapping::from_toml_str(
            r#"
name = "m"
[[map]]
from = "amount"
to = "4"
transform = "decimal_to_minor"
width = 12
[[map]]
to = "3"
constant = "310000"
[[map]]
from = "missing"
to = "x"
[[map]]
from = "missing2"
to = "y"
default = "d"
"#,
            "m",
        )
        .unwrap();
        let out = m.apply(&Record::new().with("amount", "1.50")).unwrap();
        assert_eq!(
            out,
            Record::new()
                .with("4", "000000000150")
                .with("3", "310000")
                .with("y", "d")
        );
        assert!(Mapping::from_toml_str("name = \"m\"\n[[map]]\nto = \"x\"\n", "m").is_err());
    }
}
