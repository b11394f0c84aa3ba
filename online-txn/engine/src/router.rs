//! Routing of channel requests to back ends: `[[routes]]` matched in order on the channel name,
//! the MTI and a processing-code prefix; the first match names the back end. Without any
//! `[[routes]]`, everything goes to the default host (`[host]`, back end name `host`).
//!
//! ```toml
//! [[routes]]
//! channel = "mobile"          # optional: any channel when absent
//! mti = "0200"                # optional: exact MTI
//! processing_code = "31"      # optional: prefix of F3
//! backend = "core-json"       # a [[backends]] name, or "host"
//! ```
//!
//! A request no route matches is declined 12 (invalid transaction) and journaled.

use serde::Deserialize;

/// The name of the default back end: the `[host]` link the terminals use.
pub const DEFAULT_BACKEND: &str = "host";

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Channel name; any when absent.
    #[serde(default)]
    pub channel: Option<String>,
    /// Exact MTI; any when absent.
    #[serde(default)]
    pub mti: Option<String>,
    /// Prefix of the processing code (F3); any when absent.
    #[serde(default)]
    pub processing_code: Option<String>,
    /// The back end.
    pub backend: String,
}

impl RouteConfig {
    fn matches(&self, channel: &str, mti: &str, processing_code: &str) -> bool {
        self.channel.as_deref().is_none_or(|c| c == channel)
            && self.mti.as_deref().is_none_or(|m| m == mti)
            && self
                .processing_code
                .as_deref()
                .is_none_or(|p| processing_code.starts_with(p))
    }
}

/// The routing table.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<RouteConfig>,
}

impl Router {
    /// A table from the configuration, in order.
    pub fn new(routes: Vec<RouteConfig>) -> Self {
        Router { routes }
    }

    /// The back end for a request, if any route matches.
    pub fn route(&self, channel: &str, mti: &str, processing_code: &str) -> Option<&str> {
        if self.routes.is_empty() {
            return Some(DEFAULT_BACKEND);
        }
        self.routes
            .iter()
            .find(|r| r.matches(channel, mti, processing_code))
            .map(|r| r.backend.as_str())
    }

    /// Every back end a channel's requests may be routed to.
    pub fn backends_of<'a>(&'a self, channel: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let default = self.routes.is_empty().then_some(DEFAULT_BACKEND);
        default.into_iter().chain(
            self.routes
                .iter()
                .filter(move |r| r.channel.as_deref().is_none_or(|c| c == channel))
                .map(|r| r.backend.as_str()),
        )
    }

    /// Checks names: every route's channel and back end must exist; `prefix` must be a valid
    /// F3 prefix (digits, at most 6) and the MTI 4 digits.
    pub fn validate(&self, channels: &[&str], backends: &[&str]) -> Result<(), String> {
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if let Some(c) = &r.channel
                && !channels.contains(&c.as_str())
            {
                return Err(format!("{at}: channel {c:?} is not a [[channels]] name"));
            }
            if r.backend != DEFAULT_BACKEND && !backends.contains(&r.backend.as_str()) {
                return Err(format!(
                    "{at}: backend {:?} is neither \"host\" nor a [[backends]] name",
                    r.backend
                ));
            }
            if let Some(m) = &r.mti
                && (m.len() != 4 || !m.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!("{at}: mti {m:?} must be 4 digits"));
            }
            if let Some(p) = &r.processing_code
                && (p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(format!(
                    "{at}: processing_code {p:?} must be 1 to 6 digits (a prefix of F3)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(channel: Option<&str>, mti: Option<&str>, pc: Option<&str>, to: &str) -> RouteConfig {
        RouteConfig {
            channel: channel.map(Into::into),
            mti: mti.map(Into::into),
            processing_code: pc.map(Into::into),
            backend: to.into(),
        }
    }

    #[test]
    fn first_match_wins() {
        let r = Router::new(vec![
            route(Some("mobile"), Some("0200"), Some("31"), "json"),
            route(Some("mobile"), None, None, "split"),
            route(None, None, Some("40"), "host"),
        ]);
        assert_eq!(r.route("mobile", "0200", "310000"), Some("json"));
        assert_eq!(r.route("mobile", "0200", "400000"), Some("split"));
        assert_eq!(r.route("kiosk", "0200", "400000"), Some("host"));
        assert_eq!(r.route("kiosk", "0200", "310000"), None);
        assert_eq!(
            r.backends_of("mobile").collect::<Vec<_>>(),
            ["json", "split", "host"]
        );
        assert_eq!(Router::default().route("x", "0200", "31"), Some("host"));
        assert!(r.validate(&["mobile"], &["json", "split"]).is_ok());
        assert!(r.validate(&["kiosk"], &["json", "split"]).is_err());
        assert!(r.validate(&["mobile"], &["json"]).is_err());
        let bad = Router::new(vec![route(None, Some("200"), None, "host")]);
        assert!(bad.validate(&[], &[]).is_err());
        let bad = Router::new(vec![route(None, None, Some("3x"), "host")]);
        assert!(bad.validate(&[], &[]).is_err());
    }
}
