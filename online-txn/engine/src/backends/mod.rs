//! Back ends the [router](crate::router) sends channel requests to, each with its own
//! [circuit breaker](crate::breaker):
//!
//! | kind | what |
//! |---|---|
//! | `host` (implicit) | the `[host]` link the terminals use (multiplexed long connections) |
//! | `tcp_8583` | another host over the same multiplexed link ([`crate::host::HostLink`]) |
//! | `tcp_8583_split` | "two in, two out": separate send and receive connections ([`split`]) |
//! | `http_json` | the canonical message POSTed as JSON ([`http`]), `http://` or `https://` |
//! | `http_xml` | an XML record POSTed ([`record`]) |
//! | `tcp_fixed`, `tcp_delimited` | fixed-width or delimited records over TCP ([`record`]) |
//!
//! ISO 8583 back ends get the request MAC'd under their ZAK and check the answer's MAC; PIN
//! blocks are translated to their ZPK. Requests are converted from the canonical profile (the
//! `[host]` profile) to the back end's profile through the record form when the two differ.
//!
//! A request to a back end whose breaker is open is declined 91 before it is journaled SENT.
//! Requests left in doubt on any back end but `host` are reversed by [`reversal`] (the
//! terminals' reversal worker only speaks to `host`).

pub mod http;
pub mod record;
pub mod reversal;
pub mod split;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::{FieldValue, Message, Spec};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::config::Config;
use crate::engine::{encode_with_mac, verify_mac};
use crate::host::{HostError, HostLink};
use crate::router::DEFAULT_BACKEND;
use crate::security::SecurityModule;

/// Back end kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Multiplexed long connections (like `[host]`).
    #[serde(rename = "tcp_8583")]
    Tcp8583,
    /// Separate send and receive connections.
    #[serde(rename = "tcp_8583_split")]
    Tcp8583Split,
    /// HTTP POST of the message as JSON.
    HttpJson,
    /// HTTP POST of an XML record.
    HttpXml,
    /// Fixed-width records over TCP.
    TcpFixed,
    /// Delimited records over TCP.
    TcpDelimited,
}

impl BackendKind {
    /// ISO 8583 over TCP (MAC'd, with a profile).
    pub fn is_iso8583(self) -> bool {
        matches!(self, BackendKind::Tcp8583 | BackendKind::Tcp8583Split)
    }

    /// Record formats (format and mapping files).
    pub fn is_record(self) -> bool {
        matches!(
            self,
            BackendKind::HttpXml | BackendKind::TcpFixed | BackendKind::TcpDelimited
        )
    }

    /// Over HTTP (a `url`).
    pub fn is_http(self) -> bool {
        matches!(self, BackendKind::HttpJson | BackendKind::HttpXml)
    }
}

/// One `[[backends]]` entry. Which keys apply depends on `kind` (see `docs/online-txn.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Name routes refer to (not `host`).
    pub name: String,
    /// Kind.
    pub kind: BackendKind,
    /// `tcp_8583`, `tcp_fixed`, `tcp_delimited`: the host's address.
    #[serde(default)]
    pub address: Option<String>,
    /// `tcp_8583`, `tcp_fixed`, `tcp_delimited`: long connections (default 2; record kinds
    /// carry one request at a time on each).
    #[serde(default)]
    pub connections: Option<usize>,
    /// `tcp_8583_split`: where requests are sent.
    #[serde(default)]
    pub send_address: Option<String>,
    /// `tcp_8583_split`: send connections (default 1).
    #[serde(default)]
    pub send_connections: Option<usize>,
    /// `tcp_8583_split`: connect here to receive answers.
    #[serde(default)]
    pub receive_address: Option<String>,
    /// `tcp_8583_split`: connections to `receive_address` (default 1).
    #[serde(default)]
    pub receive_connections: Option<usize>,
    /// `tcp_8583_split`: listen here for the host's answer connections.
    #[serde(default)]
    pub receive_listen: Option<SocketAddr>,
    /// ISO 8583 kinds: message profile (default: the `[host]` profile).
    #[serde(default)]
    pub profile: Option<String>,
    /// Record kinds: the request format file (a codec format).
    #[serde(default)]
    pub format: Option<String>,
    /// Record kinds: the answer format file (default: `format`).
    #[serde(default)]
    pub response_format: Option<String>,
    /// Record kinds: canonical request → request record, answer record → canonical.
    #[serde(default)]
    pub mapping: Option<crate::channels::MappingConfig>,
    /// HTTPS: a PEM file of CA certificates trusted besides the system's (a private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// TCP kinds: framing (default `binary2`).
    #[serde(default)]
    pub framing: Option<String>,
    /// TCP kinds: echo after this many idle seconds (default 30; 0 disables).
    #[serde(default)]
    pub echo_interval_s: Option<u64>,
    /// PIN key (ZPK) name; TCP kinds default to `[host].zpk`, `http_json` has none unless set.
    #[serde(default)]
    pub zpk: Option<String>,
    /// TCP kinds: MAC key (ZAK) name (default `[host].zak`).
    #[serde(default)]
    pub zak: Option<String>,
    /// `http_json`: the URL requests are POSTed to.
    #[serde(default)]
    pub url: Option<String>,
    /// `http_json`: extra headers, e.g. a shared secret; a value `env:NAME` is read from the
    /// environment at start.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Answer time limit (default `[host].timeout_ms`); a channel's `timeout_ms` may shorten it.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

impl BackendConfig {
    /// Checks the keys of its kind.
    pub fn validate(&self) -> Result<(), String> {
        let at = format!("backends {:?}", self.name);
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(format!("{at}: names are letters, digits, '-', '_', '.'"));
        }
        if self.name == DEFAULT_BACKEND {
            return Err(format!(
                "{at}: \"host\" is the [host] section's back end; choose another name"
            ));
        }
        let iso = self.kind.is_iso8583();
        let record = self.kind.is_record();
        let http = self.kind.is_http();
        let tcp_address = matches!(
            self.kind,
            BackendKind::Tcp8583 | BackendKind::TcpFixed | BackendKind::TcpDelimited
        );
        let forbid = |present: bool, key: &str| {
            if present {
                Err(format!(
                    "{at}: {key} does not apply to kind {:?}",
                    self.kind
                ))
            } else {
                Ok(())
            }
        };
        let split = self.kind == BackendKind::Tcp8583Split;
        forbid(
            !tcp_address && (self.address.is_some() || self.connections.is_some()),
            "address/connections",
        )?;
        forbid(
            !split
                && (self.send_address.is_some()
                    || self.send_connections.is_some()
                    || self.receive_address.is_some()
                    || self.receive_connections.is_some()
                    || self.receive_listen.is_some()),
            "send_*/receive_*",
        )?;
        forbid(
            !iso && (self.profile.is_some()
                || self.echo_interval_s.is_some()
                || self.zak.is_some()),
            "profile/echo_interval_s/zak",
        )?;
        forbid(http && self.framing.is_some(), "framing")?;
        forbid(
            !http && (self.url.is_some() || !self.headers.is_empty() || self.ca_file.is_some()),
            "url/headers/ca_file",
        )?;
        forbid(
            !record
                && (self.format.is_some()
                    || self.response_format.is_some()
                    || self.mapping.is_some()),
            "format/response_format/mapping",
        )?;
        if record && (self.format.is_none() || self.mapping.is_none()) {
            return Err(format!(
                "{at}: format and mapping (request, response) are required"
            ));
        }
        if tcp_address && self.address.is_none() {
            return Err(format!("{at}: address is required"));
        }
        if self.kind == BackendKind::Tcp8583Split && self.send_address.is_none() {
            return Err(format!("{at}: send_address is required"));
        }
        if http {
            let url = self.url.as_deref().unwrap_or_default();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{at}: url must be an http:// or https:// URL"));
            }
            if self.ca_file.is_some() && !url.starts_with("https://") {
                return Err(format!("{at}: ca_file is for https:// URLs"));
            }
        }
        for n in [
            self.connections,
            self.send_connections,
            self.receive_connections,
        ]
        .into_iter()
        .flatten()
        {
            if !(1..=64).contains(&n) {
                return Err(format!("{at}: connection counts must be 1..=64"));
            }
        }
        if let Some(f) = &self.framing
            && LengthPrefix::parse(f).is_none()
        {
            return Err(format!("{at}: framing {f:?}: use binary2, bcd2 or ascii4"));
        }
        if let Some(p) = &self.profile
            && let Err(e) = Spec::by_name_or_path(p)
        {
            return Err(format!("{at}: profile {p:?}: {e}"));
        }
        if let Some(t) = self.timeout_ms
            && !(100..=120_000).contains(&t)
        {
            return Err(format!("{at}: timeout_ms must be 100..=120000"));
        }
        if self.breaker.failures > 0 && !(100..=3_600_000).contains(&self.breaker.cooldown_ms) {
            return Err(format!("{at}: breaker.cooldown_ms must be 100..=3600000"));
        }
        Ok(())
    }
}

enum Link {
    Tcp(Arc<HostLink>),
    Split(Arc<split::SplitLink>),
    Http(http::HttpLink),
    Record(Box<record::RecordLink>),
}

/// A running back end.
pub struct Backend {
    /// Its name (`host` for the default).
    pub name: String,
    link: Link,
    spec: Arc<Spec>,
    canonical: Arc<Spec>,
    zak: Option<String>,
    /// The PIN key PIN blocks are translated to; `None`: PINs cannot be sent here.
    pub zpk: Option<String>,
    /// Answer time limit.
    pub timeout: Duration,
    /// Its circuit breaker.
    pub breaker: CircuitBreaker,
}

/// A request ready to leave.
pub struct Prepared {
    message: Message,
    bytes: Vec<u8>,
}

impl Backend {
    /// Whether this is the `[host]` link (whose reversals the terminals' worker delivers).
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_BACKEND
    }

    /// Converts a canonical request to this back end's profile and encodes it (MAC'd under
    /// the ZAK for ISO 8583 back ends). Nothing is sent.
    pub fn prepare(&self, hsm: &dyn SecurityModule, request: &Message) -> Result<Prepared, String> {
        let mut message = self.for_backend(request)?;
        message.remove(64);
        message.remove(128);
        let bytes = match (&self.link, &self.zak) {
            (Link::Http(_), _) => Vec::new(),
            (Link::Record(r), _) => r.codec.encode(&message)?,
            (_, Some(zak)) => encode_with_mac(&self.spec, hsm, zak, &mut message)?,
            (_, None) => self.spec.encode(&message).map_err(|e| e.to_string())?,
        };
        Ok(Prepared { message, bytes })
    }

    /// Sends a prepared request and waits for the answer (MAC checked), converted back to the
    /// canonical profile. A bad MAC or an unconvertible answer leaves the request in doubt.
    pub async fn send(
        &self,
        hsm: &dyn SecurityModule,
        prepared: &Prepared,
        timeout: Duration,
    ) -> Result<Message, HostError> {
        let answer = match &self.link {
            Link::Tcp(l) => {
                l.exchange(&prepared.message, &prepared.bytes, timeout)
                    .await?
            }
            Link::Split(l) => {
                l.exchange(&prepared.message, &prepared.bytes, timeout)
                    .await?
            }
            Link::Http(l) => return l.exchange(&prepared.message, timeout).await,
            Link::Record(l) => {
                return l
                    .exchange(&prepared.message, &prepared.bytes, timeout)
                    .await;
            }
        };
        if let Some(zak) = &self.zak {
            // Codecs are canonical for a profile: the MAC is checked on a re-encoding.
            let raw = self.spec.encode(&answer).unwrap_or_default();
            if !verify_mac(&self.spec, hsm, zak, &answer, &raw) {
                tracing::warn!(backend = %self.name, "answer failed its MAC check; in doubt");
                return Err(HostError::Lost);
            }
        }
        self.canonical_of(&answer).map_err(|e| {
            tracing::warn!(backend = %self.name, error = %e, "answer cannot be converted; in doubt");
            HostError::Lost
        })
    }

    fn same_profile(&self) -> bool {
        matches!(self.link, Link::Http(_) | Link::Record(_))
            || self.spec.name() == self.canonical.name()
    }

    fn for_backend(&self, m: &Message) -> Result<Message, String> {
        if self.same_profile() {
            return Ok(m.clone());
        }
        let mut record = m.to_record();
        fit_envelope_record(&mut record, &self.spec);
        Message::from_record(&record, &self.spec).map_err(|e| e.to_string())
    }

    fn canonical_of(&self, m: &Message) -> Result<Message, String> {
        if self.same_profile() {
            return Ok(m.clone());
        }
        let mut record = m.to_record();
        fit_envelope_record(&mut record, &self.canonical);
        for k in ["64", "128"] {
            record.remove(k);
        }
        Message::from_record(&record, &self.canonical).map_err(|e| e.to_string())
    }

    /// Whether requests can be sent now (a connection is up).
    pub fn is_up(&self) -> bool {
        match &self.link {
            Link::Tcp(l) => l.is_up(),
            Link::Split(l) => l.is_up(),
            Link::Http(_) | Link::Record(_) => true,
        }
    }
}

/// Drops or adds the TPDU and header keys (hex) of a record for a profile.
pub fn fit_envelope_record(record: &mut openteller_codec::Record, spec: &Spec) {
    if !spec.has_tpdu() {
        record.remove("tpdu");
    } else if !record.contains("tpdu") {
        record.insert("tpdu", "6000000000");
    }
    if spec.header_len() == 0 {
        record.remove("header");
    } else if record
        .get("header")
        .is_none_or(|h| h.len() != 2 * spec.header_len())
    {
        record.insert("header", default_header(spec.header_len()));
    }
}

/// The header a message gets when it has none: the CUP one for 6-byte headers, else zeros.
pub fn default_header(len: usize) -> String {
    if len == 6 {
        "603100000000".into()
    } else {
        "00".repeat(len)
    }
}

/// Gives a message the TPDU and header its profile needs, dropping those it does not have.
pub fn fit_message(m: &mut Message, spec: &Spec) {
    if !spec.has_tpdu() {
        m.tpdu = None;
    } else if m.tpdu.is_none() {
        m.tpdu = Some(vec![0x60, 0, 0, 0, 0].into());
    }
    if spec.header_len() == 0 {
        m.header = None;
    } else if m
        .header
        .as_ref()
        .is_none_or(|h| h.len() != spec.header_len())
    {
        m.header = hex::decode(default_header(spec.header_len()))
            .ok()
            .map(Into::into);
    }
}

/// Every back end by name, `host` included.
pub struct Backends {
    map: HashMap<String, Arc<Backend>>,
}

/// What starting the back ends bound, for logs.
pub struct BackendListeners {
    /// `(back end, receive address)` of split back ends listening for the host.
    pub receive: Vec<(String, SocketAddr)>,
}

impl Backends {
    /// Starts every configured back end (connections run until `shutdown`); `host` wraps the
    /// terminals' link.
    pub async fn start(
        config: &Config,
        host: Arc<HostLink>,
        shutdown: &CancellationToken,
    ) -> Result<(Backends, BackendListeners), String> {
        let canonical =
            Arc::new(Spec::by_name_or_path(&config.host.profile).map_err(|e| e.to_string())?);
        let host_timeout = Duration::from_millis(config.host.timeout_ms);
        let mut map = HashMap::new();
        let mut receive = Vec::new();
        map.insert(
            DEFAULT_BACKEND.to_owned(),
            Arc::new(Backend {
                name: DEFAULT_BACKEND.into(),
                link: Link::Tcp(host),
                spec: Arc::clone(&canonical),
                canonical: Arc::clone(&canonical),
                zak: Some(config.host.zak.clone()),
                zpk: Some(config.host.zpk.clone()),
                timeout: host_timeout,
                breaker: CircuitBreaker::new(DEFAULT_BACKEND, BreakerConfig::default()),
            }),
        );
        for b in &config.backends {
            let spec = match &b.profile {
                Some(p) => Arc::new(Spec::by_name_or_path(p).map_err(|e| e.to_string())?),
                None => Arc::clone(&canonical),
            };
            let prefix = b
                .framing
                .as_deref()
                .and_then(LengthPrefix::parse)
                .unwrap_or(LengthPrefix::Binary2);
            let echo = Duration::from_secs(b.echo_interval_s.unwrap_or(30));
            let link = match b.kind {
                BackendKind::Tcp8583 => Link::Tcp(HostLink::start(
                    b.address.clone().unwrap_or_default(),
                    Arc::clone(&spec),
                    prefix,
                    b.connections.unwrap_or(2),
                    echo,
                    shutdown.clone(),
                )),
                BackendKind::Tcp8583Split => {
                    let listener = match b.receive_listen {
                        Some(addr) => {
                            let l = TcpListener::bind(addr).await.map_err(|e| {
                                format!("backends {:?}: cannot listen on {addr}: {e}", b.name)
                            })?;
                            if let Some(a) = split::local_addr(&l) {
                                receive.push((b.name.clone(), a));
                            }
                            Some(Arc::new(l))
                        }
                        None => None,
                    };
                    Link::Split(split::SplitLink::start(
                        b.send_address.clone().unwrap_or_default(),
                        b.send_connections.unwrap_or(1),
                        split::ReceiveSide {
                            address: b.receive_address.clone(),
                            connections: b.receive_connections.unwrap_or(1),
                            listener,
                        },
                        Arc::clone(&spec),
                        Framer::new(prefix, spec.max_message_len()),
                        echo,
                        shutdown.clone(),
                    ))
                }
                BackendKind::HttpJson => Link::Http(http::HttpLink::new(
                    http::client(b.ca_file.as_deref())
                        .map_err(|e| format!("backends {:?}: {e}", b.name))?,
                    b.url.clone().unwrap_or_default(),
                    headers_of(b)?,
                    spec.max_message_len().max(64 * 1024),
                )),
                BackendKind::HttpXml | BackendKind::TcpFixed | BackendKind::TcpDelimited => {
                    let files = b.mapping.as_ref().ok_or("mapping is required")?;
                    let codec = record::RecordCodec::load(
                        b.format.as_deref().unwrap_or_default(),
                        b.response_format.as_deref(),
                        &files.request.display().to_string(),
                        &files.response.display().to_string(),
                    )
                    .map_err(|e| format!("backends {:?}: {e}", b.name))?;
                    let transport = if b.kind == BackendKind::HttpXml {
                        record::RecordTransport::Http(record::HttpRecordLink::new(
                            http::client(b.ca_file.as_deref())
                                .map_err(|e| format!("backends {:?}: {e}", b.name))?,
                            b.url.clone().unwrap_or_default(),
                            "application/xml",
                            headers_of(b)?,
                            64 * 1024,
                        ))
                    } else {
                        record::RecordTransport::Tcp(record::TcpRecordLink::new(
                            b.address.clone().unwrap_or_default(),
                            prefix,
                            64 * 1024,
                            b.connections.unwrap_or(2),
                        ))
                    };
                    Link::Record(Box::new(record::RecordLink {
                        transport,
                        codec,
                        canonical: Arc::clone(&canonical),
                    }))
                }
            };
            let tcp = b.kind.is_iso8583();
            map.insert(
                b.name.clone(),
                Arc::new(Backend {
                    name: b.name.clone(),
                    link,
                    spec,
                    canonical: Arc::clone(&canonical),
                    zak: tcp.then(|| b.zak.clone().unwrap_or_else(|| config.host.zak.clone())),
                    zpk: if tcp {
                        Some(b.zpk.clone().unwrap_or_else(|| config.host.zpk.clone()))
                    } else {
                        b.zpk.clone()
                    },
                    timeout: b.timeout_ms.map_or(host_timeout, Duration::from_millis),
                    breaker: CircuitBreaker::new(b.name.clone(), b.breaker),
                }),
            );
        }
        Ok((Backends { map }, BackendListeners { receive }))
    }

    /// A back end by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.map.get(name)
    }
}

/// The extra headers of an HTTP back end; a value `env:NAME` is read from the environment.
fn headers_of(b: &BackendConfig) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for (k, v) in &b.headers {
        let value = match v.strip_prefix("env:") {
            Some(var) => std::env::var(var).map_err(|_| {
                format!(
                    "backends {:?}: header {k}: environment variable {var} is not set",
                    b.name
                )
            })?,
            None => v.clone(),
        };
        headers.push((k.clone(), value));
    }
    Ok(headers)
}

/// F39 of a message.
pub fn response_code(m: &Message) -> Option<&str> {
    m.get(39).and_then(FieldValue::as_text)
}
