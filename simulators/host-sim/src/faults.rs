//! Fault injection settings: what the host does wrong on purpose.
//!
//! Order of application to each request (see `docs/host-sim.md`):
//! 1. `disconnect`: the link is down: connections are closed, requests are not processed;
//! 2. `response_code` at `response_rate` (0200 and 0400 only, after the MAC check): the
//!    host answers with that code **without applying** anything;
//! 3. the request is processed normally (state changes applied);
//! 4. `drop_rate`: the response is dropped (applied, not answered);
//! 5. `delay_ms`: the response is sent that long after processing (applied, answered late).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest injectable delay: one hour.
pub const MAX_DELAY_MS: u64 = 3_600_000;

/// A two-character ISO 8583 response code (digits or uppercase letters).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseCode([u8; 2]);

impl ResponseCode {
    /// Parses a response code: exactly two characters, `0-9` or `A-Z`.
    pub fn parse(s: &str) -> Option<ResponseCode> {
        match s.as_bytes() {
            [a, b]
                if [a, b]
                    .iter()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) =>
            {
                Some(ResponseCode([*a, *b]))
            }
            _ => None,
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("96")
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResponseCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The current faults. The default injects nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Faults {
    /// Delay before each response is sent, in milliseconds (0 = none).
    pub delay_ms: u64,
    /// Probability (0..=1) that a response is dropped after the request was applied.
    pub drop_rate: f64,
    /// Response code answered at `response_rate` without applying the request.
    pub response_code: Option<ResponseCode>,
    /// Probability (0..=1) of answering `response_code`.
    pub response_rate: f64,
    /// Link down: close every connection, process nothing, until cleared.
    pub disconnect: bool,
}

/// A partial update of [`Faults`] (the body of `POST /faults`, the `[faults]` table of the
/// config file). Absent fields are left unchanged; `"response_code": null` removes the
/// code (and then `response_rate` must be 0).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    /// See [`Faults::delay_ms`].
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// See [`Faults::drop_rate`].
    #[serde(default)]
    pub drop_rate: Option<f64>,
    /// See [`Faults::response_code`]: `Some(None)` is an explicit `null`.
    #[serde(default, deserialize_with = "explicit_null")]
    pub response_code: Option<Option<String>>,
    /// See [`Faults::response_rate`].
    #[serde(default)]
    pub response_rate: Option<f64>,
    /// See [`Faults::disconnect`].
    #[serde(default)]
    pub disconnect: Option<bool>,
}

fn explicit_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Why a [`FaultsUpdate`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultsError(pub String);

fn rate(name: &str, v: f64) -> Result<f64, FaultsError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(FaultsError(format!(
            "{name} must be between 0 and 1, got {v}"
        )))
    }
}

impl Faults {
    /// `self` with `update` applied, validated as a whole.
    pub fn updated(&self, update: &FaultsUpdate) -> Result<Faults, FaultsError> {
        let mut f = *self;
        if let Some(d) = update.delay_ms {
            if d > MAX_DELAY_MS {
                return Err(FaultsError(format!(
                    "delay_ms must be at most {MAX_DELAY_MS}, got {d}"
                )));
            }
            f.delay_ms = d;
        }
        if let Some(r) = update.drop_rate {
            f.drop_rate = rate("drop_rate", r)?;
        }
        if let Some(r) = update.response_rate {
            f.response_rate = rate("response_rate", r)?;
        }
        match &update.response_code {
            None => {}
            Some(None) => f.response_code = None,
            Some(Some(code)) => {
                f.response_code = Some(ResponseCode::parse(code).ok_or_else(|| {
                    FaultsError(format!(
                        "response_code must be two characters 0-9/A-Z, got {code:?}"
                    ))
                })?);
            }
        }
        if let Some(d) = update.disconnect {
            f.disconnect = d;
        }
        if f.response_rate > 0.0 && f.response_code.is_none() {
            return Err(FaultsError(
                "response_rate > 0 needs a response_code".to_owned(),
            ));
        }
        Ok(f)
    }

    /// Whether an event of probability `p` happens now.
    pub(crate) fn roll(p: f64) -> bool {
        p >= 1.0 || (p > 0.0 && rand::random::<f64>() < p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(json: &str) -> Result<FaultsUpdate, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn partial_updates_and_validation() {
        let f = Faults::default()
            .updated(
                &upd(r#"{"delay_ms": 10000, "response_code": "96", "response_rate": 0.2}"#)
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(f.delay_ms, 10_000);
        assert_eq!(f.response_code.unwrap().as_str(), "96");
        let g = f.updated(&upd(r#"{"drop_rate": 0.5}"#).unwrap()).unwrap();
        assert_eq!((g.delay_ms, g.drop_rate), (10_000, 0.5));
        for bad in [
            r#"{"drop_rate": 1.5}"#,
            r#"{"response_rate": -0.1}"#,
            r#"{"response_code": "9"}"#,
            r#"{"response_code": "a0"}"#,
            r#"{"delay_ms": 3600001}"#,
            r#"{"response_code": null}"#,
        ] {
            assert!(f.updated(&upd(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(upd(r#"{"delay": 1}"#).is_err());
        assert!(upd(r#"{"delay_ms": -1}"#).is_err());
        let cleared = f
            .updated(&upd(r#"{"response_code": null, "response_rate": 0}"#).unwrap())
            .unwrap();
        assert_eq!(cleared.response_code, None);
    }
}
