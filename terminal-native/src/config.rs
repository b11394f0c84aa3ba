//! The TOML configuration, validated in full before anything is bound or started: a bad file
//! is reported with its reason and the binary exits 64.
//!
//! ```toml
//! terminal_id = "T0001"
//! business_package = "/var/lib/openteller/kiosk"
//! journal_dir = "/var/lib/openteller/ej"
//! state_dir = "/var/lib/openteller/native"
//!
//! [headless]
//! listen = "127.0.0.1:8780"          # loopback only: the bridge has no authentication
//!
//! [rules]
//! max_pin_attempts = 3
//!
//! [devices.idc]
//! class = "CardReader"
//! endpoint = "unix:/run/openteller/idc.sock"
//! critical = true                    # default; the terminal is in service iff every critical device is usable
//!
//! [keeper]                           # optional
//! control = "tcp:127.0.0.1:7700"
//! process = "native"
//! heartbeat_interval_ms = 2000
//!
//! [window]                           # optional, the windowed host's kiosk window
//! fullscreen = true                  # default
//! cursor = false                     # default: hidden
//! devtools = false                   # default
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openteller_keeper::config::ControlAddr;
use openteller_proto::Endpoint;
use openteller_proto::device::v1::DeviceClass;
use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML for the schema (unknown fields included).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    terminal_id: String,
    business_package: PathBuf,
    journal_dir: PathBuf,
    state_dir: PathBuf,
    headless: RawHeadless,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    devices: BTreeMap<String, RawDevice>,
    keeper: Option<RawKeeper>,
    online: Option<RawOnline>,
    #[serde(default)]
    self_check: RawSelfCheck,
    #[serde(default)]
    window: RawWindow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    #[serde(default = "yes")]
    fullscreen: bool,
    #[serde(default)]
    cursor: bool,
    #[serde(default)]
    devtools: bool,
}

impl Default for RawWindow {
    fn default() -> Self {
        RawWindow {
            fullscreen: true,
            cursor: false,
            devtools: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeadless {
    listen: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSelfCheck {
    interval_s: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRules {
    max_pin_attempts: Option<u32>,
    abandon_after_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    class: String,
    endpoint: String,
    #[serde(default = "yes")]
    critical: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeeper {
    control: String,
    #[serde(default = "default_process")]
    process: String,
    #[serde(default = "default_heartbeat")]
    heartbeat_interval_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnline {
    address: String,
    pinpad: String,
    #[serde(default = "default_merchant")]
    merchant_id: String,
    #[serde(default = "default_tmk")]
    tmk_key: String,
    #[serde(default = "default_tpk")]
    tpk_key: String,
    #[serde(default = "default_tak")]
    tak_key: String,
    #[serde(default = "default_connect_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_response_ms")]
    response_timeout_ms: u64,
    #[serde(default = "default_device_ms")]
    device_timeout_ms: u64,
    #[serde(default = "default_reversal_retry_ms")]
    reversal_retry_ms: u64,
    #[serde(default = "default_reversal_max_retry_ms")]
    reversal_max_retry_ms: u64,
}

fn default_reversal_retry_ms() -> u64 {
    5_000
}

fn default_reversal_max_retry_ms() -> u64 {
    300_000
}

fn default_merchant() -> String {
    "OPENTELLER00001".into()
}
fn default_tmk() -> String {
    "TMK".into()
}
fn default_tpk() -> String {
    "TPK".into()
}
fn default_tak() -> String {
    "TAK".into()
}
fn default_connect_ms() -> u64 {
    3000
}
fn default_response_ms() -> u64 {
    30_000
}
fn default_device_ms() -> u64 {
    10_000
}

fn default_process() -> String {
    "native".into()
}

fn default_heartbeat() -> u64 {
    2000
}

/// One configured device.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// The name pages use (`idc`, `pin`, `cdm`, `ptr`…).
    pub name: String,
    /// Its class; commands of another class are refused before they reach it.
    pub class: DeviceClass,
    /// Where its driver-proxy listens.
    pub endpoint: Endpoint,
    /// Counts for the in-service decision.
    pub critical: bool,
}

/// Heartbeats to the keeper.
#[derive(Debug, Clone)]
pub struct KeeperSpec {
    /// The keeper's control API.
    pub control: ControlAddr,
    /// This process's name in the keeper's configuration.
    pub process: String,
    /// Between heartbeats (and service-state polls).
    pub interval: Duration,
}

/// The transaction client's link to online-txn and the EPP's key names.
#[derive(Debug, Clone)]
pub struct OnlineSpec {
    /// online-txn's terminal front, `HOST:PORT`.
    pub address: String,
    /// F42, at most 15 characters (padded with spaces).
    pub merchant_id: String,
    /// The configured PinPad device (the EPP) that holds the keys.
    pub pinpad: String,
    /// The terminal master key's name in the EPP (loaded by the key ceremony).
    pub tmk_key: String,
    /// The PIN key's name in the EPP (imported at sign-on).
    pub tpk_key: String,
    /// The MAC key's name in the EPP (imported at sign-on).
    pub tak_key: String,
    /// To open the connection.
    pub connect_timeout: Duration,
    /// For an answer.
    pub response_timeout: Duration,
    /// For each EPP command (PIN block, MAC, key import).
    pub device_timeout: Duration,
    /// First delay before a reversal is sent again (doubling per attempt).
    pub reversal_retry: Duration,
    /// Longest delay between two attempts of a reversal.
    pub reversal_max_retry: Duration,
}

/// The kiosk window of the windowed host (`[window]`; ignored with `--headless`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Cover the whole screen (default); otherwise a 1280×1024 window. Never decorated,
    /// always on top.
    pub fullscreen: bool,
    /// Show the mouse cursor (default: hidden, the customer uses the touch screen).
    pub cursor: bool,
    /// Allow the web inspector (default: off; a kiosk must not open it).
    pub devtools: bool,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This terminal's id; authorisations of another terminal are refused.
    pub terminal_id: String,
    /// The business-package directory served at `/`.
    pub business_package: PathBuf,
    /// What the package's manifest says (name, version), read at validation.
    pub package: crate::package::PackageInfo,
    /// Where the electronic journal's daily files go.
    pub journal_dir: PathBuf,
    /// Where the transaction-state table is persisted.
    pub state_dir: PathBuf,
    /// The headless bridge's loopback address (port 0: any free port).
    pub listen: SocketAddr,
    /// Wrong PINs before the card is retained.
    pub max_pin_attempts: u32,
    /// An approved withdrawal not dispensed, or stacked notes not presented, this long while
    /// the terminal is idle is abandoned: reversed (`[rules] abandon_after_s`, default 300).
    pub abandon_after: Duration,
    /// Devices, in name order.
    pub devices: Vec<DeviceSpec>,
    /// Heartbeats to the keeper, if configured.
    pub keeper: Option<KeeperSpec>,
    /// The transaction client, if configured.
    pub online: Option<OnlineSpec>,
    /// How often the self-check runs (`[self_check] interval_s`, default 360 s, seed 001
    /// §8.1).
    pub self_check_interval: Duration,
    /// The kiosk window (windowed host only).
    pub window: WindowSpec,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Parses a class name as the driver-proxy's `--class` spells it.
pub fn parse_class(s: &str) -> Option<DeviceClass> {
    match s {
        "CardReader" => Some(DeviceClass::CardReader),
        "PinPad" => Some(DeviceClass::PinPad),
        "CashDispenser" => Some(DeviceClass::CashDispenser),
        "ReceiptPrinter" => Some(DeviceClass::ReceiptPrinter),
        _ => None,
    }
}

/// The class name as pages and the driver-proxy spell it.
pub fn class_name(c: DeviceClass) -> &'static str {
    match c {
        DeviceClass::CardReader => "CardReader",
        DeviceClass::PinPad => "PinPad",
        DeviceClass::CashDispenser => "CashDispenser",
        DeviceClass::ReceiptPrinter => "ReceiptPrinter",
        DeviceClass::Unspecified => "Unspecified",
    }
}

impl Settings {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        let id = raw.terminal_id.trim();
        if id.is_empty()
            || id.len() > 32
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(format!(
                "terminal_id {:?} must be 1-32 letters, digits, '-' or '_'",
                raw.terminal_id
            )));
        }
        for (what, p) in [
            ("business_package", &raw.business_package),
            ("journal_dir", &raw.journal_dir),
            ("state_dir", &raw.state_dir),
        ] {
            if p.as_os_str().is_empty() {
                return Err(invalid(format!("{what} must not be empty")));
            }
        }
        if !raw.business_package.is_dir() {
            return Err(invalid(format!(
                "business_package {} is not a directory",
                raw.business_package.display()
            )));
        }
        let package = crate::package::PackageInfo::read(&raw.business_package)
            .map_err(|e| invalid(format!("business_package: {e}")))?;
        let listen: SocketAddr = raw.headless.listen.parse().map_err(|_| {
            invalid(format!(
                "headless.listen {:?} must be IP:PORT, e.g. 127.0.0.1:8780",
                raw.headless.listen
            ))
        })?;
        if !listen.ip().is_loopback() {
            return Err(invalid(format!(
                "headless.listen {listen} must be a loopback address: the bridge has no authentication"
            )));
        }
        let max_pin_attempts = raw.rules.max_pin_attempts.unwrap_or(3);
        if !(1..=10).contains(&max_pin_attempts) {
            return Err(invalid("rules.max_pin_attempts must be 1..=10"));
        }
        let abandon_after = Duration::from_secs(raw.rules.abandon_after_s.unwrap_or(300));
        if !(1..=86_400).contains(&abandon_after.as_secs()) {
            return Err(invalid("rules.abandon_after_s must be 1..=86400"));
        }
        let mut devices = Vec::new();
        for (name, d) in raw.devices {
            if name.is_empty()
                || name.len() > 32
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!(
                    "device name {name:?} must be 1-32 letters, digits, '-' or '_'"
                )));
            }
            let class = parse_class(&d.class).ok_or_else(|| {
                invalid(format!(
                    "devices.{name}.class {:?} must be CardReader, PinPad, CashDispenser or ReceiptPrinter",
                    d.class
                ))
            })?;
            let endpoint: Endpoint = d
                .endpoint
                .parse()
                .map_err(|e| invalid(format!("devices.{name}.endpoint: {e}")))?;
            devices.push(DeviceSpec {
                name,
                class,
                endpoint,
                critical: d.critical,
            });
        }
        let keeper = match raw.keeper {
            None => None,
            Some(k) => {
                let control: ControlAddr = k
                    .control
                    .parse()
                    .map_err(|e| invalid(format!("keeper.control: {e}")))?;
                if !(100..=60_000).contains(&k.heartbeat_interval_ms) {
                    return Err(invalid("keeper.heartbeat_interval_ms must be 100..=60000"));
                }
                if k.process.is_empty() {
                    return Err(invalid("keeper.process must not be empty"));
                }
                Some(KeeperSpec {
                    control,
                    process: k.process,
                    interval: Duration::from_millis(k.heartbeat_interval_ms),
                })
            }
        };
        let self_check_interval = match raw.self_check.interval_s {
            None => Duration::from_secs(360),
            Some(s) if (1..=86_400).contains(&s) => Duration::from_secs(s),
            Some(_) => return Err(invalid("self_check.interval_s must be 1..=86400")),
        };
        let online = match raw.online {
            None => None,
            Some(o) => {
                if id.len() != 8 {
                    return Err(invalid(
                        "with [online], terminal_id is F41 and must be exactly 8 characters",
                    ));
                }
                if o.address.trim().is_empty() || !o.address.contains(':') {
                    return Err(invalid("online.address must be HOST:PORT"));
                }
                match devices.iter().find(|d| d.name == o.pinpad) {
                    Some(d) if d.class == DeviceClass::PinPad => {}
                    _ => {
                        return Err(invalid(format!(
                            "online.pinpad {:?} must name a configured PinPad device",
                            o.pinpad
                        )));
                    }
                }
                if o.merchant_id.is_empty() || o.merchant_id.len() > 15 || !o.merchant_id.is_ascii()
                {
                    return Err(invalid("online.merchant_id must be 1-15 ASCII characters"));
                }
                for (what, k) in [
                    ("tmk_key", &o.tmk_key),
                    ("tpk_key", &o.tpk_key),
                    ("tak_key", &o.tak_key),
                ] {
                    if k.is_empty() || k.len() > 64 {
                        return Err(invalid(format!("online.{what} must be 1-64 characters")));
                    }
                }
                if o.tmk_key == o.tpk_key || o.tmk_key == o.tak_key || o.tpk_key == o.tak_key {
                    return Err(invalid("online key names must differ"));
                }
                for (what, ms) in [
                    ("connect_timeout_ms", o.connect_timeout_ms),
                    ("response_timeout_ms", o.response_timeout_ms),
                    ("device_timeout_ms", o.device_timeout_ms),
                ] {
                    if !(100..=300_000).contains(&ms) {
                        return Err(invalid(format!("online.{what} must be 100..=300000")));
                    }
                }
                for (what, ms) in [
                    ("reversal_retry_ms", o.reversal_retry_ms),
                    ("reversal_max_retry_ms", o.reversal_max_retry_ms),
                ] {
                    if !(100..=3_600_000).contains(&ms) {
                        return Err(invalid(format!("online.{what} must be 100..=3600000")));
                    }
                }
                if o.reversal_max_retry_ms < o.reversal_retry_ms {
                    return Err(invalid(
                        "online.reversal_max_retry_ms must be at least reversal_retry_ms",
                    ));
                }
                Some(OnlineSpec {
                    address: o.address,
                    merchant_id: o.merchant_id,
                    pinpad: o.pinpad,
                    tmk_key: o.tmk_key,
                    tpk_key: o.tpk_key,
                    tak_key: o.tak_key,
                    connect_timeout: Duration::from_millis(o.connect_timeout_ms),
                    response_timeout: Duration::from_millis(o.response_timeout_ms),
                    device_timeout: Duration::from_millis(o.device_timeout_ms),
                    reversal_retry: Duration::from_millis(o.reversal_retry_ms),
                    reversal_max_retry: Duration::from_millis(o.reversal_max_retry_ms),
                })
            }
        };
        Ok(Settings {
            terminal_id: id.to_owned(),
            business_package: raw.business_package,
            package,
            journal_dir: raw.journal_dir,
            state_dir: raw.state_dir,
            listen,
            max_pin_attempts,
            abandon_after,
            devices,
            keeper,
            online,
            self_check_interval,
            window: WindowSpec {
                fullscreen: raw.window.fullscreen,
                cursor: raw.window.cursor,
                devtools: raw.window.devtools,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(extra: &str) -> String {
        format!(
            "terminal_id = \"T1\"\nbusiness_package = \"/\"\njournal_dir = \"/tmp/ej\"\nstate_dir = \"/tmp/st\"\n\
             [headless]\nlisten = \"127.0.0.1:0\"\n{extra}"
        )
    }

    #[test]
    fn accepts_a_full_file() {
        let s = Settings::parse(&base(
            "[devices.idc]\nclass = \"CardReader\"\nendpoint = \"unix:/tmp/idc.sock\"\n\
             [devices.ptr]\nclass = \"ReceiptPrinter\"\nendpoint = \"tcp:127.0.0.1:9\"\ncritical = false\n\
             [keeper]\ncontrol = \"tcp:127.0.0.1:7700\"\n",
        ))
        .unwrap();
        assert_eq!(s.devices.len(), 2);
        assert!(s.devices[0].critical && !s.devices[1].critical);
        assert_eq!(s.keeper.unwrap().process, "native");
        assert_eq!(s.max_pin_attempts, 3);
    }

    #[test]
    fn refuses_bad_files() {
        for bad in [
            base("surprise = 1\n"),
            base("[devices.idc]\nclass = \"Scanner\"\nendpoint = \"unix:/a\"\n"),
            base("[devices.idc]\nclass = \"CardReader\"\nendpoint = \"/a\"\n"),
            base("[devices.idc]\nclass = \"CardReader\"\nendpoint = \"unix:/a\"\nextra = 1\n"),
            base("[keeper]\ncontrol = \"tcp:10.0.0.1:7700\"\n"),
            base("[rules]\nmax_pin_attempts = 0\n"),
            base("[rules]\nabandon_after_s = 0\n"),
            base("[self_check]\ninterval_s = 0\n"),
            base("[self_check]\nevery = 1\n"),
            base("").replace("127.0.0.1:0", "0.0.0.0:80"),
            base("").replace("T1", "bad id"),
            base("[online]\naddress = \"127.0.0.1:5800\"\npinpad = \"pin\"\n"),
        ] {
            assert!(Settings::parse(&bad).is_err(), "accepted: {bad}");
        }
        let pin = "[devices.pin]\nclass = \"PinPad\"\nendpoint = \"unix:/tmp/pin.sock\"\n";
        let ok = base(&format!(
            "{pin}[online]\naddress = \"127.0.0.1:5800\"\npinpad = \"pin\"\n"
        ))
        .replace("\"T1\"", "\"T0000001\"");
        let s = Settings::parse(&ok).unwrap();
        assert_eq!(s.online.unwrap().tpk_key, "TPK");
        for bad in [
            ok.replace("pinpad = \"pin\"", "pinpad = \"idc\""),
            ok.replace("T0000001", "T1"),
            format!("{ok}response_timeout_ms = 1\n"),
            format!("{ok}tpk_key = \"TMK\"\n"),
            format!("{ok}reversal_retry_ms = 10\n"),
            format!("{ok}reversal_retry_ms = 5000\nreversal_max_retry_ms = 1000\n"),
        ] {
            assert!(Settings::parse(&bad).is_err(), "accepted: {bad}");
        }
    }
}
