//! The engine's configuration file (TOML, unknown fields refused), validated at start: a bad
//! file exits 64 (usage) / 78 (config) before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use openteller_codec::framing::LengthPrefix;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The durable journal.
    pub journal: JournalConfig,
    /// The key store.
    pub keys: KeysConfig,
    /// The front channel the terminals connect to.
    pub terminals: TerminalFront,
    /// The back channel to the bank host.
    pub host: HostConfig,
    /// The reversal store-and-forward queue.
    #[serde(default)]
    pub reversal: ReversalConfig,
    /// The admin HTTP API (repair plans); off unless configured. Loopback only by default.
    #[serde(default)]
    pub admin: Option<crate::admin::AdminConfig>,
    /// Fronts for internal bank systems (HTTP JSON/XML, TCP fixed/delimited/8583).
    #[serde(default)]
    pub channels: Vec<crate::channels::ChannelConfig>,
    /// Routing of channel requests to back ends (first match wins).
    #[serde(default)]
    pub routes: Vec<crate::router::RouteConfig>,
    /// Back ends besides `[host]`.
    #[serde(default)]
    pub backends: Vec<crate::backends::BackendConfig>,
}

/// See [`Config::journal`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// `sqlite://PATH` (default `sqlite://.state/online-txn/journal.db`) or `postgres://...`.
    #[serde(default = "default_journal")]
    pub url: String,
}

fn default_journal() -> String {
    "sqlite://.state/online-txn/journal.db".into()
}

/// See [`Config::keys`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The sealed key file.
    pub file: PathBuf,
    /// A file holding the master key (64 hex characters); otherwise `OPENTELLER_MASTER_KEY`.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
}

/// See [`Config::terminals`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalFront {
    /// Listen address.
    pub listen: SocketAddr,
    /// Message profile (`cup` or a profile file).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// `binary2`, `bcd2` or `ascii4`.
    #[serde(default = "default_framing")]
    pub framing: String,
    /// Most concurrent connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most requests being processed at once, over all connections (back-pressure).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

/// See [`Config::host`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The host's address.
    pub address: String,
    /// Message profile.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Framing.
    #[serde(default = "default_framing")]
    pub framing: String,
    /// Long connections kept open (requests are multiplexed on them).
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// How long to wait for an answer before the request is in doubt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Echo (0800, F60.3 = 301) after this many idle seconds; 0 disables.
    #[serde(default = "default_echo")]
    pub echo_interval_s: u64,
    /// Name of the host PIN key (ZPK) in the key store.
    #[serde(default = "default_zpk")]
    pub zpk: String,
    /// Name of the host MAC key (ZAK) in the key store.
    #[serde(default = "default_zak")]
    pub zak: String,
}

/// See [`Config::reversal`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReversalConfig {
    /// Attempts before a reversal is given up (then it needs repair).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub retry_ms: u64,
    /// How long a reversal stays deliverable.
    pub ttl_s: u64,
    /// Response codes after which the host is asked again (others end the reversal).
    pub retryable_codes: Vec<String>,
}

impl Default for ReversalConfig {
    fn default() -> Self {
        ReversalConfig {
            max_attempts: 20,
            retry_ms: 2_000,
            ttl_s: 86_400,
            retryable_codes: vec!["91".into(), "96".into(), "98".into()],
        }
    }
}

fn default_profile() -> String {
    "cup".into()
}
fn default_framing() -> String {
    "binary2".into()
}
fn default_max_connections() -> usize {
    2_000
}
fn default_max_in_flight() -> usize {
    4_096
}
fn default_connections() -> usize {
    2
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_echo() -> u64 {
    30
}
fn default_zpk() -> String {
    "host/ZPK".into()
}
fn default_zak() -> String {
    "host/ZAK".into()
}

/// Why the configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML or unknown fields.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        crate::channels::resolve_paths(&mut config, path);
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        for (what, f) in [
            ("terminals.framing", &self.terminals.framing),
            ("host.framing", &self.host.framing),
        ] {
            if LengthPrefix::parse(f).is_none() {
                return bad(format!("{what} = {f:?}: use binary2, bcd2 or ascii4"));
            }
        }
        for (what, p) in [
            ("terminals.profile", &self.terminals.profile),
            ("host.profile", &self.host.profile),
        ] {
            if let Err(e) = openteller_codec::Spec::by_name_or_path(p) {
                return bad(format!("{what} = {p:?}: {e}"));
            }
        }
        if !(1..=64).contains(&self.host.connections) {
            return bad("host.connections must be 1..=64".into());
        }
        if !(100..=120_000).contains(&self.host.timeout_ms) {
            return bad("host.timeout_ms must be 100..=120000".into());
        }
        if self.terminals.max_connections == 0 || self.terminals.max_in_flight == 0 {
            return bad("terminals.max_connections and max_in_flight must be positive".into());
        }
        if self.reversal.max_attempts == 0 || self.reversal.retry_ms == 0 {
            return bad("reversal.max_attempts and retry_ms must be positive".into());
        }
        crate::channels::validate(self).map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The terminal front's framing.
    pub fn terminal_framing(&self) -> LengthPrefix {
        LengthPrefix::parse(&self.terminals.framing).unwrap_or(LengthPrefix::Binary2)
    }

    /// The host's framing.
    pub fn host_framing(&self) -> LengthPrefix {
        LengthPrefix::parse(&self.host.framing).unwrap_or(LengthPrefix::Binary2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_backends(names: &[&str]) -> Result<(), ConfigError> {
        let mut text = String::from(
            "[journal]\nurl = \"sqlite::memory:\"\n[keys]\nfile = \"keys.json\"\n[terminals]\nlisten = \"127.0.0.1:0\"\n[host]\naddress = \"127.0.0.1:9\"\n",
        );
        for n in names {
            text.push_str(&format!(
                "[[backends]]\nname = \"{n}\"\nkind = \"tcp_8583\"\naddress = \"127.0.0.1:9\"\n"
            ));
        }
        let config: Config = toml::from_str(&text).expect("parses");
        config.validate()
    }

    #[test]
    fn back_ends_need_repair_groups_of_their_own() {
        with_backends(&["core-a", "core-b"]).expect("distinct groups");
        for clash in [&["core-a", "core.a"][..], &["HOST"], &["Host"]] {
            let e = with_backends(clash).unwrap_err().to_string();
            assert!(e.contains("repair system group"), "{clash:?}: {e}");
        }
    }
}
