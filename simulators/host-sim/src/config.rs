//! The configuration file of `host-sim serve`.
//!
//! ```toml
//! listen = "127.0.0.1:9583"     # 8583 over TCP
//! control = "127.0.0.1:9584"    # control API (HTTP JSON); keep it on loopback
//! accounts = "accounts.toml"    # relative to this file; [[account]]/[[generate]] may also be inline
//! journal = "host-journal.jsonl"  # optional JSON-lines journal of applied transactions
//! require_mac = true            # 0200/0400 without a MAC answer A0
//! max_connections = 1024
//! remember = 1000000            # transactions kept for retransmissions and reversals
//! max_pin_tries = 3
//!
//! [keys]                        # clear keys in a file: acceptable for a simulator only
//! algorithm = "tdes"            # or "sm4"
//! zpk = "0123456789ABCDEFFEDCBA9876543210"
//! zak = "89ABCDEF0123456776543210FEDCBA98"
//! mac = "x9.19"                 # x9.19 (default for tdes), x9.9, cup-ecb, sm4-cbc (default for sm4)
//! pin_block = "iso0"            # iso0 (default), iso1, iso3; sm4 always uses the 16-byte format 0
//!
//! [faults]                      # optional, same fields as POST /faults
//! delay_ms = 0
//! ```
//!
//! Unknown keys are errors. Every problem is reported before anything is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use openteller_crypto::{Algorithm, Key, MacAlgorithm, PinBlockFormat};
use serde::Deserialize;

use crate::accounts::{AccountSeed, AccountTables, check_unique, load_accounts};
use crate::faults::{Faults, FaultsUpdate};
use crate::listeners::{ListenerConfig, RawListener};
use crate::wire::MacKey;

/// Default 8583 listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9583";
/// Default control API address.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:9584";

/// A configuration problem (the binary exits with 78).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The host's keys.
#[derive(Debug, Clone)]
pub struct HostKeys {
    /// Zone PIN key: PIN blocks in F52 (and F62) are encrypted under it.
    pub zpk: Key,
    /// PIN block format of F52 / F62.
    pub pin_format: PinBlockFormat,
    /// Zone MAC key (ZAK) and MAC algorithm.
    pub mac: MacKey,
}

impl HostKeys {
    /// Keys from hex strings (see the `[keys]` table).
    pub fn from_hex(
        algorithm: &str,
        zpk: &str,
        zak: &str,
        mac: Option<&str>,
        pin_block: Option<&str>,
    ) -> Result<HostKeys, ConfigError> {
        let alg = match algorithm {
            "tdes" | "3des" => Algorithm::Tdes,
            "sm4" => Algorithm::Sm4,
            other => {
                return Err(ConfigError(format!(
                    "keys.algorithm must be tdes or sm4, got {other:?}"
                )));
            }
        };
        let zpk = Key::from_hex(alg, zpk).map_err(|e| ConfigError(format!("keys.zpk: {e}")))?;
        let zak_key = Key::from_hex(alg, zak).map_err(|e| ConfigError(format!("keys.zak: {e}")))?;
        let mac_alg = match (mac, alg) {
            (None, Algorithm::Tdes) | (Some("x9.19"), _) => MacAlgorithm::AnsiX919,
            (None, Algorithm::Sm4) | (Some("sm4-cbc"), _) => MacAlgorithm::Sm4Cbc,
            (Some("x9.9"), _) => MacAlgorithm::AnsiX99,
            (Some("cup-ecb"), _) => MacAlgorithm::CupEcb,
            (Some(other), _) => {
                return Err(ConfigError(format!(
                    "keys.mac must be x9.19, x9.9, cup-ecb or sm4-cbc, got {other:?}"
                )));
            }
        };
        let mac = MacKey::new(mac_alg, zak_key)
            .map_err(|e| ConfigError(format!("keys.zak does not suit keys.mac: {e}")))?;
        let pin_format = match (pin_block, alg) {
            (_, Algorithm::Sm4) => PinBlockFormat::Sm4Iso0,
            (None | Some("iso0"), _) => PinBlockFormat::Iso0,
            (Some("iso1"), _) => PinBlockFormat::Iso1,
            (Some("iso3"), _) => PinBlockFormat::Iso3,
            (Some(other), _) => {
                return Err(ConfigError(format!(
                    "keys.pin_block must be iso0, iso1 or iso3, got {other:?}"
                )));
            }
        };
        if alg == Algorithm::Tdes && zpk.len_bytes() == 8 {
            return Err(ConfigError(
                "keys.zpk must be a double- or triple-length TDES key".to_owned(),
            ));
        }
        Ok(HostKeys {
            zpk,
            pin_format,
            mac,
        })
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// 8583 listen address.
    pub listen: SocketAddr,
    /// Control API listen address.
    pub control: SocketAddr,
    /// Keys.
    pub keys: HostKeys,
    /// Seeded accounts.
    pub accounts: Vec<AccountSeed>,
    /// JSON-lines journal of applied transactions, if any.
    pub journal: Option<PathBuf>,
    /// Whether 0200/0400 must carry a MAC.
    pub require_mac: bool,
    /// Most simultaneous 8583 connections.
    pub max_connections: usize,
    /// How many transactions are remembered for retransmissions and reversals (oldest
    /// forgotten first), and how many journal entries `GET /state/transactions` keeps.
    pub remember: usize,
    /// Wrong PINs in a row that lock a card.
    pub max_pin_tries: u8,
    /// Faults active from the start.
    pub faults: Faults,
    /// Format listeners (`[[listeners]]`): the same host in other message formats.
    pub listeners: Vec<ListenerConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    control: Option<String>,
    #[serde(default)]
    accounts: Option<PathBuf>,
    #[serde(default)]
    journal: Option<PathBuf>,
    #[serde(default)]
    require_mac: Option<bool>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    remember: Option<usize>,
    #[serde(default)]
    max_pin_tries: Option<u8>,
    keys: RawKeys,
    #[serde(default)]
    faults: Option<FaultsUpdate>,
    #[serde(default)]
    account: Vec<toml::Value>,
    #[serde(default)]
    generate: Vec<toml::Value>,
    #[serde(default)]
    listeners: Vec<RawListener>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    #[serde(default)]
    algorithm: Option<String>,
    zpk: String,
    zak: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    pin_block: Option<String>,
}

fn addr(name: &str, v: Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let s = v.unwrap_or_else(|| default.to_owned());
    s.parse()
        .map_err(|_| ConfigError(format!("{name} must be IP:PORT, got {s:?}")))
}

impl Config {
    /// Reads and validates a config file; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_str(&text, base)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and validates config text; relative paths are relative to `base`.
    pub fn from_toml_str(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        let keys = HostKeys::from_hex(
            raw.keys.algorithm.as_deref().unwrap_or("tdes"),
            &raw.keys.zpk,
            &raw.keys.zak,
            raw.keys.mac.as_deref(),
            raw.keys.pin_block.as_deref(),
        )?;
        let mut accounts = Vec::new();
        if let Some(p) = &raw.accounts {
            let p = base.join(p);
            accounts = load_accounts(&p).map_err(|e| ConfigError(e.0))?;
        }
        let inline = AccountTables {
            account: raw
                .account
                .into_iter()
                .map(|v| v.try_into())
                .collect::<Result<_, _>>()
                .map_err(|e: toml::de::Error| ConfigError(format!("account: {e}")))?,
            generate: raw
                .generate
                .into_iter()
                .map(|v| v.try_into())
                .collect::<Result<_, _>>()
                .map_err(|e: toml::de::Error| ConfigError(format!("generate: {e}")))?,
        };
        inline
            .resolve(&mut accounts)
            .map_err(|e| ConfigError(e.0))?;
        check_unique(&accounts).map_err(|e| ConfigError(e.0))?;
        let faults = match &raw.faults {
            Some(u) => Faults::default()
                .updated(u)
                .map_err(|e| ConfigError(format!("faults: {e}")))?,
            None => Faults::default(),
        };
        let max_connections = raw.max_connections.unwrap_or(1024);
        if max_connections == 0 {
            return Err(ConfigError("max_connections must be at least 1".into()));
        }
        let max_pin_tries = raw.max_pin_tries.unwrap_or(3);
        if max_pin_tries == 0 {
            return Err(ConfigError("max_pin_tries must be at least 1".into()));
        }
        let listeners = raw
            .listeners
            .into_iter()
            .map(|l| l.resolve(base))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, l) in listeners.iter().enumerate() {
            if listeners[..i].iter().any(|o| o.name == l.name) {
                return Err(ConfigError(format!(
                    "listeners {:?}: defined twice",
                    l.name
                )));
            }
        }
        Ok(Config {
            listeners,
            listen: addr("listen", raw.listen, DEFAULT_LISTEN)?,
            control: addr("control", raw.control, DEFAULT_CONTROL)?,
            keys,
            accounts,
            journal: raw.journal.map(|j| base.join(j)),
            require_mac: raw.require_mac.unwrap_or(true),
            max_connections,
            remember: raw.remember.unwrap_or(1_000_000).max(1),
            max_pin_tries,
            faults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("host-sim.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.accounts.len() >= 103);
        assert_eq!(c.keys.pin_format, PinBlockFormat::Iso0);
    }

    #[test]
    fn errors_are_reported() {
        let base = Path::new(".");
        let ok_keys = "[keys]\nzpk = \"0123456789ABCDEFFEDCBA9876543210\"\nzak = \"89ABCDEF0123456776543210FEDCBA98\"\n";
        assert!(Config::from_toml_str(ok_keys, base).is_ok());
        for bad in [
            format!("listen = \"nope\"\n{ok_keys}"),
            format!("bogus = 1\n{ok_keys}"),
            "[keys]\nzpk = \"0123\"\nzak = \"89ABCDEF0123456776543210FEDCBA98\"\n".to_owned(),
            format!("{ok_keys}mac = \"sm4-cbc\"\n"),
            format!("{ok_keys}[faults]\ndrop_rate = 2.0\n"),
            format!("accounts = \"/nonexistent/accounts.toml\"\n{ok_keys}"),
            format!("{ok_keys}[[account]]\npan = \"1\"\npin = \"1234\"\n"),
        ] {
            assert!(Config::from_toml_str(&bad, base).is_err(), "{bad}");
        }
    }
}
