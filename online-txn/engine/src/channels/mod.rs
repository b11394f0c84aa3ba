//! Channels: fronts for internal bank systems besides the terminals — HTTP with JSON or XML
//! bodies, TCP with fixed-width ("struct"), delimited or ISO 8583 messages — configured as
//! `[[channels]]` and routed by [`crate::router`] to [`crate::backends`].
//!
//! Every request becomes a **canonical message**: an ISO 8583 message of the `[host]` profile
//! (`cup` by default), built from the channel's record by its request mapping (codec
//! [`Mapping`]); the answer goes back the other way through the response mapping. Financial
//! requests (0200) then take the terminals' path minus the terminal's MAC and PIN keys: journal
//! RECEIVED (idempotent on F41 + F11 + F13), route, PIN block translated from the channel's PIN
//! key to the back end's ZPK, journal SENT, send, answer journaled — or in doubt and reversed.
//! 0400/0401 reverse an earlier channel transaction (the original's F11 and F13), 0800 is
//! answered locally.
//!
//! **Channels are trusted**: no MAC, and a PIN only when the request carries one (F52, hex,
//! ISO 9564 format 0 under the channel's `pin_key`). Requests without a PIN are allowed only for
//! the processing codes in `pinless`. Put channels on a protected network; `allow` restricts
//! peers by address, and HTTP channels may require a shared secret header (`auth`).
//!
//! Bad input never crashes anything: undecodable bodies answer HTTP 400 `{code, message}` (an
//! XML error document on XML channels), TCP channels answer a response record with F39 = 30
//! (or close the connection when even that cannot be formed); a request whose identity (F11,
//! F41) is known is journaled DECLINED 30 first. A framing error or an oversized frame answers
//! once and closes the connection.

pub mod http;
pub mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openteller_codec::framing::LengthPrefix;
use openteller_codec::mapping::Mapping;
use openteller_codec::{FieldValue, Format, Message, Record, Spec};
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore};
use zeroize::Zeroizing;

use crate::backends::{Backend, Backends, fit_message};
use crate::config::Config;
use crate::engine::{Engine, new_txn, pan_of, rc, today_mmdd};
use crate::journal::{TxnRecord, TxnState};
use crate::router::{DEFAULT_BACKEND, Router};

/// Declined when a PIN is required and missing ("incorrect PIN").
pub const PIN_REQUIRED: &str = "55";

/// Channel kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// HTTP POST, JSON body.
    HttpJson,
    /// HTTP POST, XML body.
    HttpXml,
    /// TCP, fixed-width records.
    TcpFixed,
    /// TCP, delimiter-separated records.
    TcpDelimited,
    /// TCP, ISO 8583 messages of a profile.
    #[serde(rename = "tcp_8583")]
    Tcp8583,
}

impl ChannelKind {
    /// Whether the channel is an HTTP server.
    pub fn is_http(self) -> bool {
        matches!(self, ChannelKind::HttpJson | ChannelKind::HttpXml)
    }
}

/// TCP connection use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionMode {
    /// Many requests per connection, pipelined.
    #[default]
    Long,
    /// One request, its answer, then the connection is closed.
    Short,
}

/// The mapping files of a channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Channel request record → canonical message record.
    pub request: PathBuf,
    /// Canonical answer record → channel response record.
    pub response: PathBuf,
}

/// A shared secret an HTTP channel requires in a header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Header name, e.g. `x-openteller-key`.
    pub header: String,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the secret (trailing whitespace ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

/// One `[[channels]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name (routes and logs).
    pub name: String,
    /// Kind.
    pub kind: ChannelKind,
    /// Listen address.
    pub listen: SocketAddr,
    /// Record format file of requests (`tcp_8583`: a profile name or file).
    pub format: String,
    /// Record format file of responses (default: `format`).
    #[serde(default)]
    pub response_format: Option<String>,
    /// TCP kinds: `binary2` (default), `bcd2` or `ascii4`.
    #[serde(default)]
    pub framing: Option<String>,
    /// TCP kinds: `long` (default) or `short`; HTTP: `short` closes after each answer.
    #[serde(default)]
    pub connection: ConnectionMode,
    /// Request and response mappings (optional for `tcp_8583`: fields are then copied).
    #[serde(default)]
    pub mapping: Option<MappingConfig>,
    /// Most requests of this channel processed at once (HTTP answers 503 beyond; TCP waits).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most connections at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Answer time limit for this channel's requests (default: the back end's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Largest request in bytes (HTTP body or TCP frame).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// HTTP: the path requests are POSTed to.
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP: a required shared-secret header.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Peers allowed to connect: addresses or CIDR blocks; empty allows any.
    #[serde(default)]
    pub allow: Vec<String>,
    /// F41 of this channel's requests must start with this (keeps them apart from terminals
    /// and other channels in the journal; required when a route sends them to a back end
    /// other than `host`).
    #[serde(default)]
    pub terminal_prefix: Option<String>,
    /// F41 when the mapped request has none.
    #[serde(default)]
    pub terminal_id: Option<String>,
    /// Processing-code prefixes allowed on this channel; empty allows any.
    #[serde(default)]
    pub processing_codes: Vec<String>,
    /// Processing-code prefixes allowed without a PIN block (F52).
    #[serde(default)]
    pub pinless: Vec<String>,
    /// The PIN key (usage pin) PIN blocks of this channel are encrypted under.
    #[serde(default)]
    pub pin_key: Option<String>,
}

fn default_max_in_flight() -> usize {
    256
}
fn default_max_connections() -> usize {
    1_000
}
fn default_max_message_bytes() -> usize {
    16 * 1024
}
fn default_path() -> String {
    "/".into()
}

fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.contains('\\') || s.ends_with(".toml")
}

/// Makes the channels' relative file names relative to the configuration file's directory.
pub fn resolve_paths(config: &mut Config, file: &Path) {
    let dir = file.parent().unwrap_or(Path::new("")).to_owned();
    let join = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    let join_str = |s: &mut String| {
        if looks_like_path(s) && Path::new(s.as_str()).is_relative() {
            *s = dir.join(&*s).display().to_string();
        }
    };
    for ch in &mut config.channels {
        join_str(&mut ch.format);
        if let Some(f) = &mut ch.response_format {
            join_str(f);
        }
        if let Some(m) = &mut ch.mapping {
            join(&mut m.request);
            join(&mut m.response);
        }
        if let Some(a) = &mut ch.auth
            && let Some(f) = &mut a.secret_file
        {
            join(f);
        }
    }
    for b in &mut config.backends {
        for p in [&mut b.profile, &mut b.format, &mut b.response_format]
            .into_iter()
            .flatten()
        {
            join_str(p);
        }
        if let Some(m) = &mut b.mapping {
            join(&mut m.request);
            join(&mut m.response);
        }
        if let Some(f) = &mut b.ca_file {
            join(f);
        }
    }
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// An address or CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    bits: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `127.0.0.1`, `::1`, `fd00::/8`.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(IpNet { addr, bits })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

struct RecordCodec {
    request: Format,
    response: Format,
    request_map: Mapping,
    response_map: Mapping,
}

/// How a channel's messages are read and written.
enum ChannelCodec {
    Records(Box<RecordCodec>),
    Iso {
        spec: Arc<Spec>,
        request_map: Option<Mapping>,
        response_map: Option<Mapping>,
    },
}

fn load_format(kind: ChannelKind, name: &str) -> Result<Format, String> {
    let f = Format::by_name_or_path(name).map_err(|e| format!("format {name:?}: {e}"))?;
    let ok = matches!(
        (kind, &f),
        (ChannelKind::HttpJson, Format::Json(_))
            | (ChannelKind::HttpXml, Format::Xml(_))
            | (ChannelKind::TcpFixed, Format::Fixed(_))
            | (ChannelKind::TcpDelimited, Format::Delimited(_))
    );
    if ok {
        Ok(f)
    } else {
        Err(format!(
            "format {name:?} is not a {} format",
            match kind {
                ChannelKind::HttpJson => "json",
                ChannelKind::HttpXml => "xml",
                ChannelKind::TcpFixed => "fixed",
                ChannelKind::TcpDelimited => "delimited",
                ChannelKind::Tcp8583 => "iso8583",
            }
        ))
    }
}

fn load_mapping(p: &Path) -> Result<Mapping, String> {
    Mapping::from_file(p).map_err(|e| format!("mapping {}: {e}", p.display()))
}

impl ChannelCodec {
    fn load(c: &ChannelConfig) -> Result<ChannelCodec, String> {
        if c.kind == ChannelKind::Tcp8583 {
            let spec = Spec::by_name_or_path(&c.format)
                .map_err(|e| format!("format {:?}: {e}", c.format))?;
            if c.response_format.is_some() {
                return Err("response_format does not apply to tcp_8583".into());
            }
            let (request_map, response_map) = match &c.mapping {
                Some(m) => (
                    Some(load_mapping(&m.request)?),
                    Some(load_mapping(&m.response)?),
                ),
                None => (None, None),
            };
            return Ok(ChannelCodec::Iso {
                spec: Arc::new(spec),
                request_map,
                response_map,
            });
        }
        let request = load_format(c.kind, &c.format)?;
        let response = match &c.response_format {
            Some(r) => load_format(c.kind, r)?,
            None => request.clone(),
        };
        let m = c
            .mapping
            .as_ref()
            .ok_or("mapping = { request = ..., response = ... } is required")?;
        Ok(ChannelCodec::Records(Box::new(RecordCodec {
            request,
            response,
            request_map: load_mapping(&m.request)?,
            response_map: load_mapping(&m.response)?,
        })))
    }
}

fn prefix_list_ok(list: &[String]) -> bool {
    list.iter().all(|p| digits(p, 1, 6))
}

/// Checks the `[[channels]]`, `[[routes]]` and `[[backends]]` sections (formats and mappings
/// are loaded, so a bad file is refused at start).
pub fn validate(config: &Config) -> Result<(), String> {
    let mut backend_names: Vec<&str> = Vec::new();
    for b in &config.backends {
        b.validate()?;
        if backend_names.contains(&b.name.as_str()) {
            return Err(format!("backends: the name {:?} is used twice", b.name));
        }
        backend_names.push(&b.name);
    }
    // Each back end is its own repair system group (seed 002): two names that map to one group
    // would hide one back end's in-doubt rows from the automatic plans.
    let mut groups = vec![crate::repair::HOST_GROUP.to_owned()];
    for b in &config.backends {
        let group = crate::repair::group_of(&b.name);
        if groups.contains(&group) {
            return Err(format!(
                "backends {:?}: its repair system group {group} is taken (by [host] or another back end); choose a name that differs in more than case, '-', '.' or after 32 characters",
                b.name
            ));
        }
        groups.push(group);
    }
    let mut names: Vec<&str> = Vec::new();
    let mut listens = vec![config.terminals.listen];
    let mut prefixes: Vec<(&str, &str)> = Vec::new();
    let router = Router::new(config.routes.clone());
    for c in &config.channels {
        let at = format!("channels {:?}", c.name);
        let name_ok = !c.name.is_empty()
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(format!("{at}: names are letters, digits, '-', '_', '.'"));
        }
        if names.contains(&c.name.as_str()) {
            return Err(format!("{at}: the name is used twice"));
        }
        names.push(&c.name);
        if c.listen.port() != 0 && listens.contains(&c.listen) {
            return Err(format!("{at}: listen {} is already used", c.listen));
        }
        listens.push(c.listen);
        if c.kind.is_http() {
            if c.framing.is_some() {
                return Err(format!("{at}: framing does not apply to HTTP channels"));
            }
            if !c.path.starts_with('/') {
                return Err(format!("{at}: path must start with '/'"));
            }
        } else {
            if let Some(f) = &c.framing
                && LengthPrefix::parse(f).is_none()
            {
                return Err(format!("{at}: framing {f:?}: use binary2, bcd2 or ascii4"));
            }
            if c.auth.is_some() {
                return Err(format!(
                    "{at}: auth applies to HTTP channels; restrict TCP peers with allow"
                ));
            }
        }
        ChannelCodec::load(c).map_err(|e| format!("{at}: {e}"))?;
        if !(1..=100_000).contains(&c.max_in_flight) || !(1..=100_000).contains(&c.max_connections)
        {
            return Err(format!(
                "{at}: max_in_flight and max_connections must be 1..=100000"
            ));
        }
        if !(64..=1 << 20).contains(&c.max_message_bytes) {
            return Err(format!("{at}: max_message_bytes must be 64..=1048576"));
        }
        if let Some(t) = c.timeout_ms
            && !(100..=120_000).contains(&t)
        {
            return Err(format!("{at}: timeout_ms must be 100..=120000"));
        }
        if let Some(a) = &c.auth {
            let header_ok = !a.header.is_empty()
                && a.header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !header_ok {
                return Err(format!(
                    "{at}: auth.header {:?} is not a header name",
                    a.header
                ));
            }
            if a.secret_env.is_some() == a.secret_file.is_some() {
                return Err(format!("{at}: auth needs one of secret_env or secret_file"));
            }
        }
        if let Some(bad) = c.allow.iter().find(|a| IpNet::parse(a).is_none()) {
            return Err(format!(
                "{at}: allow {bad:?} is not an address or CIDR block"
            ));
        }
        if !prefix_list_ok(&c.processing_codes) || !prefix_list_ok(&c.pinless) {
            return Err(format!(
                "{at}: processing_codes and pinless are F3 prefixes (1 to 6 digits)"
            ));
        }
        let printable = |s: &str| s.bytes().all(|b| (0x21..0x7f).contains(&b));
        if let Some(p) = &c.terminal_prefix {
            if p.is_empty() || p.len() > 7 || !printable(p) {
                return Err(format!(
                    "{at}: terminal_prefix must be 1 to 7 printable characters"
                ));
            }
            if let Some((other, _)) = prefixes
                .iter()
                .find(|(q, _)| q.starts_with(p.as_str()) || p.starts_with(q))
            {
                return Err(format!(
                    "{at}: terminal_prefix {p:?} overlaps {other:?} of another channel"
                ));
            }
            prefixes.push((p, &c.name));
        }
        if let Some(t) = &c.terminal_id {
            if t.is_empty() || t.len() > 8 || !printable(t) {
                return Err(format!(
                    "{at}: terminal_id must be 1 to 8 printable characters"
                ));
            }
            if let Some(p) = &c.terminal_prefix
                && !t.starts_with(p.as_str())
            {
                return Err(format!("{at}: terminal_id must start with terminal_prefix"));
            }
        }
        if c.pin_key.as_deref().is_some_and(str::is_empty) {
            return Err(format!("{at}: pin_key must name a key"));
        }
        let elsewhere = router.backends_of(&c.name).any(|b| b != DEFAULT_BACKEND);
        if elsewhere && c.terminal_prefix.is_none() {
            return Err(format!(
                "{at}: routes send it to a back end other than \"host\": set terminal_prefix \
                 (its reversals are found by it)"
            ));
        }
    }
    router.validate(&names, &backend_names)
}

/// A running channel.
pub struct Channel {
    /// Its configuration.
    pub config: ChannelConfig,
    codec: ChannelCodec,
    in_flight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    allow: Vec<IpNet>,
    secret: Option<(String, Zeroizing<Vec<u8>>)>,
}

impl Channel {
    /// Loads formats, mappings and the secret.
    pub fn new(config: ChannelConfig) -> Result<Channel, String> {
        let at = format!("channels {:?}", config.name);
        let codec = ChannelCodec::load(&config).map_err(|e| format!("{at}: {e}"))?;
        let secret = match &config.auth {
            None => None,
            Some(a) => {
                let value = match (&a.secret_env, &a.secret_file) {
                    (Some(var), _) => std::env::var(var)
                        .map_err(|_| format!("{at}: auth.secret_env: {var} is not set"))?,
                    (None, Some(f)) => std::fs::read_to_string(f)
                        .map_err(|e| format!("{at}: auth.secret_file {}: {e}", f.display()))?
                        .trim_end()
                        .to_owned(),
                    (None, None) => return Err(format!("{at}: auth needs a secret")),
                };
                if value.len() < 16 {
                    return Err(format!(
                        "{at}: the shared secret must be at least 16 characters"
                    ));
                }
                Some((
                    a.header.to_ascii_lowercase(),
                    Zeroizing::new(value.into_bytes()),
                ))
            }
        };
        Ok(Channel {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            allow: config
                .allow
                .iter()
                .filter_map(|a| IpNet::parse(a))
                .collect(),
            codec,
            secret,
            config,
        })
    }

    /// Whether a peer may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip))
    }

    /// Whether the shared secret (if any) is right, compared in constant time.
    pub fn authorized(&self, value: Option<&[u8]>) -> bool {
        let Some((_, secret)) = &self.secret else {
            return true;
        };
        let Some(v) = value else { return false };
        if v.len() != secret.len() {
            return false;
        }
        v.iter()
            .zip(secret.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The header holding the shared secret, if one is required.
    pub fn auth_header(&self) -> Option<&str> {
        self.secret.as_ref().map(|(h, _)| h.as_str())
    }

    fn framing(&self) -> LengthPrefix {
        self.config
            .framing
            .as_deref()
            .and_then(LengthPrefix::parse)
            .unwrap_or(LengthPrefix::Binary2)
    }

    fn pinless(&self, pcode: &str) -> bool {
        self.config
            .pinless
            .iter()
            .any(|p| pcode.starts_with(p.as_str()))
    }

    fn allowed(&self, pcode: &str) -> bool {
        self.config.processing_codes.is_empty()
            || self
                .config
                .processing_codes
                .iter()
                .any(|p| pcode.starts_with(p.as_str()))
    }

    fn owns_terminal(&self, terminal: &str) -> bool {
        self.config
            .terminal_prefix
            .as_deref()
            .is_none_or(|p| terminal.starts_with(p))
    }
}

/// What a channel answers.
#[derive(Debug)]
pub enum Handled {
    /// A response document.
    Answer(Vec<u8>),
    /// The request was refused as malformed: an error code and message (HTTP 400), and a
    /// response document with F39 = 30 when one can be formed (TCP).
    Refused {
        /// Stable code: a codec code (`CODEC_BAD_JSON`, `CODEC_MAPPING`, ...) or
        /// `BAD_REQUEST`.
        code: String,
        /// What is wrong.
        message: String,
        /// The response document for TCP channels.
        document: Option<Vec<u8>>,
    },
    /// The answer could not be encoded in the channel's format (a configuration problem).
    Unencodable(String),
}

struct Bad {
    code: String,
    message: String,
    /// The request as far as it is known (for journaling and the error document).
    partial: Option<Box<Message>>,
}

impl Bad {
    fn new(code: &str, message: impl Into<String>, partial: Option<Message>) -> Bad {
        Bad {
            code: code.into(),
            message: message.into(),
            partial: partial.map(Box::new),
        }
    }
}

/// Everything the channels share: the engine, the back ends and the routes.
pub struct Hub {
    engine: Arc<Engine>,
    backends: Arc<Backends>,
    router: Router,
    canonical: Arc<Spec>,
    wake: Arc<Notify>,
    prefixes: Vec<(String, String)>,
}

impl Hub {
    /// The hub for a configuration; `wake` wakes the back ends' reversal worker.
    pub fn new(
        config: &Config,
        engine: Arc<Engine>,
        backends: Arc<Backends>,
        wake: Arc<Notify>,
    ) -> Result<Hub, String> {
        let canonical =
            Arc::new(Spec::by_name_or_path(&config.host.profile).map_err(|e| e.to_string())?);
        Ok(Hub {
            engine,
            backends,
            router: Router::new(config.routes.clone()),
            canonical,
            wake,
            prefixes: config
                .channels
                .iter()
                .filter_map(|c| Some((c.terminal_prefix.clone()?, c.name.clone())))
                .collect(),
        })
    }

    /// The back end of a journal row of a channel (by its terminal prefix and the routes).
    pub fn backend_of(&self, r: &TxnRecord) -> Option<Arc<Backend>> {
        let (_, channel) = self
            .prefixes
            .iter()
            .find(|(p, _)| r.txn.terminal_id.starts_with(p.as_str()))?;
        let name = self
            .router
            .route(channel, &r.txn.mti, &r.txn.processing_code)?;
        self.backends.get(name).cloned()
    }

    /// Handles one request of `ch` (the raw body or frame payload).
    pub async fn handle(&self, ch: &Channel, raw: &[u8]) -> Handled {
        let request = match self.decode(ch, raw) {
            Ok(m) => m,
            Err(bad) => return self.refuse(ch, bad).await,
        };
        let answer = match request.mti.as_str() {
            "0200" | "0201" => self.financial(ch, request).await,
            "0400" | "0401" => self.reversal(ch, request).await,
            "0800" | "0801" => Ok(self.engine.reply(&request, rc::APPROVED)),
            _ => Ok(self.engine.reply(&request, rc::INVALID_TXN)),
        };
        match answer {
            Ok(reply) => match self.encode(ch, &reply) {
                Ok(doc) => Handled::Answer(doc),
                Err(e) => {
                    tracing::error!(channel = %ch.config.name, error = %e, "the answer cannot be encoded for the channel");
                    Handled::Unencodable(e)
                }
            },
            Err(bad) => self.refuse(ch, bad).await,
        }
    }

    /// The error document of a TCP channel for input that could not even be decoded.
    pub fn refusal_document(&self, ch: &Channel) -> Option<Vec<u8>> {
        self.error_document(ch, None)
    }

    async fn refuse(&self, ch: &Channel, bad: Bad) -> Handled {
        tracing::warn!(channel = %ch.config.name, code = %bad.code, message = %bad.message, "channel request refused");
        if let Some(p) = &bad.partial {
            self.journal_refusal(ch, p).await;
        }
        Handled::Refused {
            document: self.error_document(ch, bad.partial.as_deref()),
            code: bad.code,
            message: bad.message,
        }
    }

    /// Journals a malformed request whose identity is known as DECLINED 30.
    async fn journal_refusal(&self, ch: &Channel, m: &Message) {
        let (Some(stan), Some(terminal)) = (text(m, 11), text(m, 41)) else {
            return;
        };
        if !digits(stan, 6, 6) || terminal.is_empty() || !ch.owns_terminal(terminal) {
            return;
        }
        if !matches!(m.mti.as_str(), "0200" | "0201") {
            return;
        }
        let pan = pan_of(m).unwrap_or_default();
        let pcode = text(m, 3).unwrap_or_default();
        if let Ok(id) = self.engine.begin(m, new_txn(m, stan, pcode, &pan)).await {
            self.engine.decline(m, id, rc::FORMAT_ERROR).await;
        }
    }

    fn error_document(&self, ch: &Channel, partial: Option<&Message>) -> Option<Vec<u8>> {
        let reply = match partial {
            Some(p) => self.engine.reply(p, rc::FORMAT_ERROR),
            None => {
                let mut m = Message::new("0210").with(39, rc::FORMAT_ERROR);
                fit_message(&mut m, &self.canonical);
                m
            }
        };
        self.encode(ch, &reply).ok()
    }

    /// Channel bytes → canonical message.
    fn decode(&self, ch: &Channel, raw: &[u8]) -> Result<Message, Bad> {
        let mut record = match &ch.codec {
            ChannelCodec::Records(c) => {
                let (request, request_map) = (&c.request, &c.request_map);
                let mut record = request
                    .decode_record(raw)
                    .map_err(|e| Bad::new(e.code(), e.to_string(), None))?;
                // Empty values (padding only, empty elements) count as absent.
                record = record.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                request_map.apply(&record).map_err(|e| {
                    let partial = self.lenient(ch, &partial_map(request_map, &record));
                    Bad::new(e.code(), e.to_string(), Some(partial))
                })?
            }
            ChannelCodec::Iso {
                spec, request_map, ..
            } => {
                let m = spec
                    .decode(raw)
                    .map_err(|e| Bad::new(e.code(), e.to_string(), None))?;
                let record = m.to_record();
                match request_map {
                    Some(map) => map.apply(&record).map_err(|e| {
                        let partial = self.lenient(ch, &partial_map(map, &record));
                        Bad::new(e.code(), e.to_string(), Some(partial))
                    })?,
                    None => record,
                }
            }
        };
        if !record.contains("mti") {
            record.insert("mti", "0200");
        }
        crate::backends::fit_envelope_record(&mut record, &self.canonical);
        let mut m = Message::from_record(&record, &self.canonical)
            .map_err(|e| Bad::new(e.code(), e.to_string(), Some(self.lenient(ch, &record))))?;
        self.complete(ch, &mut m);
        self.check(ch, &m)?;
        Ok(m)
    }

    /// Fills what a channel may leave out: F41 (the channel's `terminal_id`), F13 (today).
    fn complete(&self, ch: &Channel, m: &mut Message) {
        if m.get(41).is_none()
            && let Some(t) = &ch.config.terminal_id
        {
            m.set(41, t.as_str());
        }
        if m.get(13).is_none() && m.mti != "0800" {
            m.set(13, today_mmdd());
        }
        fit_message(m, &self.canonical);
    }

    /// A message of whatever text keys of `record` make sense, for journaling and errors.
    fn lenient(&self, ch: &Channel, record: &Record) -> Message {
        // Only a well-formed MTI: the reply's MTI is derived from it.
        let mti = record
            .get("mti")
            .filter(|m| digits(m, 4, 4))
            .unwrap_or("0200");
        let mut m = Message::new(mti);
        for n in [2u16, 3, 4, 11, 13, 41, 49] {
            if let Some(v) = record.get(&n.to_string()) {
                m.set(n, v);
            }
        }
        self.complete(ch, &mut m);
        m
    }

    /// Shape checks (the host profile's own checks run when the message is encoded).
    fn check(&self, ch: &Channel, m: &Message) -> Result<(), Bad> {
        let bad = |msg: String, journal: bool| {
            Err(Bad::new("BAD_REQUEST", msg, journal.then(|| m.clone())))
        };
        if !digits(&m.mti, 4, 4) {
            return bad(format!("MTI {:?} is not 4 digits", m.mti), false);
        }
        if m.mti.starts_with("08") {
            return Ok(());
        }
        let stan = text(m, 11).unwrap_or_default();
        if !digits(stan, 6, 6) {
            return bad("F11 (STAN) must be 6 digits".into(), false);
        }
        let terminal = text(m, 41).unwrap_or_default();
        if terminal.is_empty() {
            return bad("F41 (terminal id) is missing".into(), false);
        }
        if !ch.owns_terminal(terminal) {
            return bad(
                format!(
                    "F41 {terminal:?} does not start with this channel's terminal_prefix {:?}",
                    ch.config.terminal_prefix.as_deref().unwrap_or_default()
                ),
                false,
            );
        }
        if !digits(text(m, 13).unwrap_or_default(), 4, 4) {
            return bad("F13 (date MMDD) must be 4 digits".into(), false);
        }
        if !m.mti.starts_with("02") {
            return Ok(());
        }
        if !digits(text(m, 3).unwrap_or_default(), 6, 6) {
            return bad("F3 (processing code) must be 6 digits".into(), true);
        }
        if !digits(&pan_of(m).unwrap_or_default(), 13, 19) {
            return bad(
                "the PAN (F2 or track 2) must be 13 to 19 digits".into(),
                true,
            );
        }
        if let Some(a) = text(m, 4)
            && !digits(a, 12, 12)
        {
            return bad("F4 (amount) must be 12 digits of minor units".into(), true);
        }
        if m.get(52)
            .is_some_and(|v| v.as_bytes().is_none_or(|b| b.len() != 8))
        {
            return bad("F52 (PIN block) must be 8 bytes (16 hex)".into(), true);
        }
        if let Err(e) = self.canonical.encode(m) {
            return Err(Bad::new(e.code(), e.to_string(), Some(m.clone())));
        }
        Ok(())
    }

    /// Canonical answer → channel bytes.
    fn encode(&self, ch: &Channel, reply: &Message) -> Result<Vec<u8>, String> {
        let record = reply.to_record();
        match &ch.codec {
            ChannelCodec::Records(c) => {
                let (response, response_map) = (&c.response, &c.response_map);
                let out = response_map.apply(&record).map_err(|e| e.to_string())?;
                response.encode_record(&out).map_err(|e| e.to_string())
            }
            ChannelCodec::Iso {
                spec, response_map, ..
            } => {
                let mut out = match response_map {
                    Some(map) => map.apply(&record).map_err(|e| e.to_string())?,
                    None => record,
                };
                crate::backends::fit_envelope_record(&mut out, spec);
                let m = Message::from_record(&out, spec).map_err(|e| e.to_string())?;
                spec.encode(&m).map_err(|e| e.to_string())
            }
        }
    }

    async fn financial(&self, ch: &Channel, mut request: Message) -> Result<Message, Bad> {
        let name = ch.config.name.as_str();
        let stan = text(&request, 11).unwrap_or_default().to_owned();
        let pcode = text(&request, 3).unwrap_or_default().to_owned();
        let pan = pan_of(&request).unwrap_or_default();
        let engine = &self.engine;
        let txn = new_txn(&request, &stan, &pcode, &pan);
        // Everything that can refuse the request runs before it is journaled: the common path
        // is one journal write (SENT, with its back end) before the send, one after.
        let backend = self
            .router
            .route(name, &request.mti, &pcode)
            .and_then(|b| self.backends.get(b))
            .cloned();
        let checked = match &backend {
            None => Err((rc::INVALID_TXN, "no route")),
            Some(_) if !ch.allowed(&pcode) => Err((rc::INVALID_TXN, "processing code not allowed")),
            Some(backend) => self
                .translate_pin(ch, backend, &mut request, &pcode, &pan)
                .and_then(|()| {
                    let admission = backend
                        .breaker
                        .admit()
                        .map_err(|_| (rc::HOST_DOWN, "circuit breaker open"))?;
                    match backend.prepare(engine.hsm.as_ref(), &request) {
                        Ok(prepared) => Ok((backend, admission, prepared)),
                        Err(e) => {
                            tracing::error!(channel = name, backend = %backend.name, error = %e, "cannot build the back end request");
                            Err((rc::SYSTEM, "cannot build the request"))
                        }
                    }
                }),
        };
        let (backend, admission, prepared) = match checked {
            Ok(ready) => ready,
            // Refused before sending: RECEIVED, then DECLINED (a retransmission still finds
            // its first answer through `begin`).
            Err((code, why)) => {
                return Ok(match engine.begin(&request, txn).await {
                    Ok(id) => self.declined(ch, &request, id, code, why).await,
                    Err(answer) => answer,
                });
            }
        };
        let id = match engine.begin_sent(&request, txn, &backend.name).await {
            Ok(id) => id,
            // A retransmission (stored answer), a clash (94) or no journal (96): nothing is
            // sent. Were this admission the half-open probe, dropping it counts as a failed
            // probe (one more cooldown), as for any probe that was not sent.
            Err(answer) => {
                drop(admission);
                return Ok(answer);
            }
        };
        let timeout = ch.config.timeout_ms.map_or(backend.timeout, |t| {
            backend.timeout.min(Duration::from_millis(t))
        });
        let outcome = backend.send(engine.hsm.as_ref(), &prepared, timeout).await;
        request.remove(52);
        Ok(match outcome {
            Ok(answer) => {
                admission.success();
                engine.record_answer(&request, id, &answer).await
            }
            Err(e) => {
                admission.failure();
                let own = (!backend.is_default()).then_some(self.wake.as_ref());
                engine.not_answered(&request, id, &e, own).await
            }
        })
    }

    /// Translates the request's PIN block (F52; for a PIN change also the new one in F62)
    /// from the channel's PIN key to `backend`'s ZPK in place; a request without one must
    /// have a pinless processing code. `Err`: the
    /// response code to decline with and why.
    fn translate_pin(
        &self,
        ch: &Channel,
        backend: &Backend,
        request: &mut Message,
        pcode: &str,
        pan: &str,
    ) -> Result<(), (&'static str, &'static str)> {
        if request.get(52).and_then(FieldValue::as_bytes).is_none() {
            return if ch.pinless(pcode) {
                let mode = pinless_entry_mode(text(request, 22));
                request.set(22, mode);
                Ok(())
            } else {
                Err((PIN_REQUIRED, "no PIN block (not a pinless code)"))
            };
        }
        let (Some(from), Some(to)) = (&ch.config.pin_key, &backend.zpk) else {
            return Err((rc::INVALID_TXN, "PIN block but no pin_key/zpk"));
        };
        crate::engine::translate_pin_blocks(self.engine.hsm.as_ref(), from, to, pan, request)
            .map_err(|e| {
                tracing::warn!(channel = %ch.config.name, stan = text(request, 11).unwrap_or_default(), error = %e, "PIN blocks not translated");
                let why = match e {
                    crate::engine::PinTranslationError::NoNewPinBlock => {
                        "PIN change without an 8-byte F62"
                    }
                    crate::engine::PinTranslationError::Failed { .. } => "PIN translation failed",
                };
                (e.code(), why)
            })
    }

    async fn declined(
        &self,
        ch: &Channel,
        request: &Message,
        id: i64,
        code: &str,
        why: &str,
    ) -> Message {
        tracing::warn!(
            channel = %ch.config.name,
            stan = text(request, 11).unwrap_or_default(),
            code,
            why,
            "channel request declined"
        );
        self.engine.decline(request, id, code).await
    }

    /// A reversal from a channel: the original is named by its F41, F11 and F13.
    async fn reversal(&self, ch: &Channel, request: Message) -> Result<Message, Bad> {
        let engine = &self.engine;
        let (terminal, stan, date) = (
            text(&request, 41).unwrap_or_default(),
            text(&request, 11).unwrap_or_default(),
            text(&request, 13).unwrap_or_default(),
        );
        let replacement = match crate::engine::replacement_of(&request) {
            Ok(r) => r,
            Err(code) => return Ok(engine.reply(&request, code)),
        };
        let original = match engine.journal.find(terminal, stan, date).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(engine.reply(&request, rc::ORIGINAL_NOT_FOUND)),
            Err(e) => {
                tracing::error!(error = %e, "journal unavailable; channel reversal not accepted");
                return Ok(engine.reply(&request, rc::SYSTEM));
            }
        };
        let backend = self
            .router
            .route(
                &ch.config.name,
                &original.txn.mti,
                &original.txn.processing_code,
            )
            .and_then(|b| self.backends.get(b))
            .cloned();
        let code = match (original.state, backend) {
            (TxnState::Approved | TxnState::Sent | TxnState::InDoubt, Some(b))
                if b.is_default() =>
            {
                engine
                    .queue_requested_reversal(&original, replacement, "CHANNEL")
                    .await
            }
            // Other back ends are reversed from the journal row alone, which has no place
            // for a replacement amount: a partial reversal there is refused.
            (TxnState::Approved | TxnState::Sent | TxnState::InDoubt, Some(_))
                if replacement.is_some() =>
            {
                tracing::warn!(
                    journal_id = original.id,
                    "partial reversal refused: only the host back end takes F95"
                );
                rc::INVALID_TXN
            }
            (TxnState::Approved, Some(_)) => {
                let a = crate::journal::Answer::default();
                match engine
                    .journal
                    .transition(original.id, TxnState::InDoubt, a)
                    .await
                {
                    Ok(()) => {
                        self.wake.notify_one();
                        rc::APPROVED
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot mark a channel transaction for reversal");
                        rc::SYSTEM
                    }
                }
            }
            (TxnState::InDoubt, Some(_)) => {
                self.wake.notify_one();
                rc::APPROVED
            }
            // Still waiting for its answer: ask again shortly.
            (TxnState::Sent, Some(_)) => rc::SYSTEM,
            (TxnState::Approved | TxnState::Sent | TxnState::InDoubt, None) => {
                tracing::error!(
                    journal_id = original.id,
                    "no route for the reversal of a channel transaction"
                );
                rc::SYSTEM
            }
            // Declined, already reversed, or never sent: nothing to undo.
            _ => rc::APPROVED,
        };
        Ok(engine.reply(&request, code))
    }
}

/// Applies each rule of `map` on its own, keeping what maps (identity fields of a request
/// whose amount, say, is malformed).
fn partial_map(map: &Mapping, record: &Record) -> Record {
    let mut out = Record::new();
    for rule in &map.rules {
        let one = Mapping {
            name: map.name.clone(),
            rules: vec![rule.clone()],
        };
        if let Ok(r) = one.apply(record) {
            for (k, v) in r {
                out.insert(k, v);
            }
        }
    }
    out
}

fn text(m: &Message, n: u16) -> Option<&str> {
    m.get(n).and_then(FieldValue::as_text)
}

/// What [`start_all`] bound.
pub struct Started {
    /// `(channel, address)` of every channel.
    pub channels: Vec<(String, SocketAddr)>,
}

/// The back end a journal row of a channel goes to, by name, from the configuration alone.
fn backend_name<'a>(config: &'a Config, router: &'a Router, r: &TxnRecord) -> Option<&'a str> {
    let channel = config.channels.iter().find(|c| {
        c.terminal_prefix
            .as_deref()
            .is_some_and(|p| r.txn.terminal_id.starts_with(p))
    })?;
    router.route(&channel.name, &r.txn.mti, &r.txn.processing_code)
}

/// At start, before the journal's recovery: channel rows still SENT on a back end other than
/// `host` become IN_DOUBT, for the back ends' reversal worker (see [`crate::backends::reversal`]).
pub async fn before_recovery(
    config: &Config,
    journal: &crate::journal::Journal,
) -> Result<(), String> {
    if config.channels.is_empty() {
        return Ok(());
    }
    let router = Router::new(config.routes.clone());
    let n = crate::backends::reversal::claim_sent(journal, |r| {
        backend_name(config, &router, r).is_some_and(|b| b != DEFAULT_BACKEND)
    })
    .await?;
    if n > 0 {
        tracing::warn!(
            in_doubt = n,
            "unanswered channel transactions on other back ends will be reversed"
        );
    }
    Ok(())
}

/// Starts the back ends, their reversal worker and every channel; returns once all are bound.
pub async fn start_all(
    config: &Config,
    engine: Arc<Engine>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Started, crate::server::StartError> {
    use crate::server::StartError;
    if config.channels.is_empty() {
        return Ok(Started {
            channels: Vec::new(),
        });
    }
    let (backends, listeners) = Backends::start(config, Arc::clone(&engine.host), shutdown)
        .await
        .map_err(StartError::Config)?;
    for (name, addr) in &listeners.receive {
        tracing::info!(
            backend = %name,
            %addr,
            "split back end listening for the host's answers: {name}={addr}"
        );
    }
    let wake = Arc::new(Notify::new());
    let hub = Arc::new(
        Hub::new(
            config,
            Arc::clone(&engine),
            Arc::new(backends),
            Arc::clone(&wake),
        )
        .map_err(StartError::Config)?,
    );
    let resolver_hub = Arc::clone(&hub);
    let worker = crate::backends::reversal::BackendReversals {
        journal: engine.journal.clone(),
        hsm: Arc::clone(&engine.hsm),
        resolve: Arc::new(move |r| resolver_hub.backend_of(r)),
        policy: config.reversal.clone(),
        wake,
    };
    tokio::spawn(worker.run(shutdown.clone()));
    let mut bound = Vec::new();
    for c in &config.channels {
        let channel = Arc::new(Channel::new(c.clone()).map_err(StartError::Config)?);
        let listener = tokio::net::TcpListener::bind(c.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: c.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: c.listen.to_string(),
            source,
        })?;
        // Tests and scripts read this line (the listen port may be 0).
        tracing::info!(channel = %c.name, kind = ?c.kind, %addr, "channel listening: {}={addr}", c.name);
        bound.push((c.name.clone(), addr));
        if c.kind.is_http() {
            tokio::spawn(http::serve(
                listener,
                Arc::clone(&hub),
                channel,
                shutdown.clone(),
            ));
        } else {
            tokio::spawn(tcp::serve(
                listener,
                Arc::clone(&hub),
                channel,
                shutdown.clone(),
            ));
        }
    }
    Ok(Started { channels: bound })
}

/// F22 for a request sent without a PIN: the third digit 2 says "no PIN entry capability" to
/// the back end (ISO 8583:1987 and CUP). The PAN entry mode (first two digits) is kept when F22
/// is three digits, else "01" (manual). Channel input is not trusted to be digits.
fn pinless_entry_mode(f22: Option<&str>) -> String {
    let entry = f22
        .filter(|m| m.len() == 3 && m.bytes().all(|c| c.is_ascii_digit()))
        .map_or("01", |m| &m[..2]);
    format!("{entry}2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinless_entry_mode_keeps_a_digit_entry_mode_only() {
        assert_eq!(pinless_entry_mode(Some("051")), "052");
        assert_eq!(pinless_entry_mode(None), "012");
        // Not digits (here 3 bytes with a multi-byte character): never sliced, replaced.
        assert_eq!(pinless_entry_mode(Some("1é")), "012");
        assert_eq!(pinless_entry_mode(Some("05")), "012");
    }

    #[test]
    fn cidr_blocks() {
        let n = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            IpNet::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "x", "1.2.3.4/", "::/129"] {
            assert!(IpNet::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_sample_configuration_loads_and_mistakes_are_named() {
        let sample =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/channels/online-txn.toml");
        let config = Config::load(&sample).unwrap();
        assert_eq!(config.channels.len(), 5);
        assert_eq!(config.backends.len(), 2);
        let text = std::fs::read_to_string(&sample).unwrap();
        let check = |edit: &dyn Fn(&str) -> String, want: &str| {
            let mut c: Config = toml::from_str(&edit(&text)).unwrap();
            resolve_paths(&mut c, &sample);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        };
        check(
            &|t| t.replace("backend = \"cups\"", "backend = \"nowhere\""),
            "backend \"nowhere\"",
        );
        check(
            &|t| t.replace("terminal_prefix = \"SW\"", ""),
            "set terminal_prefix",
        );
        check(
            &|t| t.replace("terminal_prefix = \"BX\"", "terminal_prefix = \"M\""),
            "overlaps",
        );
        check(
            &|t| {
                t.replace(
                    "framing = \"ascii4\"\nconnection",
                    "framing = \"ascii9\"\nconnection",
                )
            },
            "ascii9",
        );
        check(
            &|t| {
                t.replace(
                    "format = \"mobile-json.toml\"",
                    "format = \"kiosk-fixed-request.toml\"",
                )
            },
            "is not a json format",
        );
        check(
            &|t| t.replace("pinless = [\"31\"]", "pinless = [\"3x\"]"),
            "F3 prefixes",
        );
        check(
            &|t| t.replace("url = \"http://127.0.0.1:9700/iso\"", "url = \"ftp://x\""),
            "http://",
        );
        check(
            &|t| {
                t.replace(
                    "request = \"request-map.toml\"",
                    "request = \"missing.toml\"",
                )
            },
            "missing.toml",
        );
        let unknown = text.replace("kind = \"tcp_fixed\"", "kind = \"tcp_fixed\"\nbogus = 1");
        assert!(toml::from_str::<Config>(&unknown).is_err());
    }

    #[test]
    fn partial_mapping_keeps_what_maps() {
        let map = Mapping::from_toml_str(
            "name = \"m\"\n[[map]]\nfrom = \"stan\"\nto = \"11\"\n[[map]]\nfrom = \"amount\"\nto = \"4\"\ntransform = \"decimal_to_minor\"\nwidth = 12\n",
            "m",
        )
        .unwrap();
        let rec = Record::new().with("stan", "000001").with("amount", "1.2.3");
        assert!(map.apply(&rec).is_err());
        assert_eq!(partial_map(&map, &rec), Record::new().with("11", "000001"));
    }
}
