//! Format listeners: the same host (accounts, PINs, idempotency, reversals, faults) reached
//! with the other message formats of seed 001 §13.2, so that each front of the online
//! transaction engine can have a back end of its own format behind it.
//!
//! | kind | transport | body |
//! |---|---|---|
//! | `http_json` | HTTP POST | the codec's JSON form of a `cup` message (`{"mti":"0200","fields":{..}}`), answered the same way |
//! | `http_xml` | HTTP POST | an XML record format, mapped to and from the `cup` message |
//! | `tcp_fixed` | TCP, length-prefixed frames, long connections, one request at a time per connection | a fixed-width ("struct") record format |
//! | `tcp_delimited` | the same | a delimiter-separated record format |
//!
//! Record formats and mappings are the codec's (`docs/codec.md`): the request mapping turns
//! the decoded record into `cup` record keys (`mti`, `2`, `4`, `52`, ...; `mti` defaults to
//! what the mapping says), the response mapping turns the `cup` answer's keys back into the
//! response record. PIN blocks are hex, under the ZPK, as in F52/F62.
//!
//! These listeners are **trusted**: there is no MAC (keep them on loopback or a private
//! network). Faults apply as on the 8583 port: an injected code, a delay, a dropped answer
//! (TCP: nothing is sent; HTTP: the request is held until the client gives up) and the link
//! down (TCP: the connection closes; HTTP: 503). A request that cannot be decoded or mapped is
//! answered HTTP 400 with `{"code","message"}` (the codec's error code); on TCP it closes the
//! connection, like undecodable input on the 8583 port. A decodable request with missing or
//! malformed fields gets the host's answer (F39 30), as on the 8583 port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::mapping::Mapping;
use openteller_codec::{Format, Message, Record};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::ConfigError;
use crate::host::{Host, Outcome};

/// Largest request body or frame a listener takes.
const MAX_MESSAGE: usize = 16 * 1024;

/// Listener kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    /// HTTP, the codec's JSON form of the `cup` message.
    HttpJson,
    /// HTTP, an XML record format.
    HttpXml,
    /// TCP, a fixed-width record format.
    TcpFixed,
    /// TCP, a delimiter-separated record format.
    TcpDelimited,
}

impl ListenerKind {
    fn is_http(self) -> bool {
        matches!(self, ListenerKind::HttpJson | ListenerKind::HttpXml)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    name: String,
    kind: ListenerKind,
    listen: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    response_format: Option<String>,
    #[serde(default)]
    mapping: Option<RawMapping>,
    #[serde(default)]
    framing: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    request: String,
    response: String,
}

/// The record side of a listener: formats and mappings.
#[derive(Debug, Clone)]
pub struct RecordCodec {
    format: Arc<Format>,
    response_format: Arc<Format>,
    request_map: Arc<Mapping>,
    response_map: Arc<Mapping>,
}

/// One `[[listeners]]` entry, validated.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Name, shown in the `listening` line (`NAME=ADDR`).
    pub name: String,
    /// Kind.
    pub kind: ListenerKind,
    /// Listen address.
    pub listen: SocketAddr,
    /// HTTP: the path requests are POSTed to (default `/`).
    pub path: String,
    /// TCP: the length prefix of each frame.
    pub framing: LengthPrefix,
    /// Record kinds: formats and mappings (`None` for `http_json`).
    pub codec: Option<RecordCodec>,
}

impl RawListener {
    pub(crate) fn resolve(self, base: &Path) -> Result<ListenerConfig, ConfigError> {
        let at = format!("listeners {:?}", self.name);
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !name_ok || matches!(self.name.as_str(), "iso8583" | "control") {
            return Err(ConfigError(format!(
                "{at}: names are letters, digits, '-', '_' (not iso8583 or control)"
            )));
        }
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| ConfigError(format!("{at}: listen must be IP:PORT")))?;
        let http = self.kind.is_http();
        if !http && self.path.is_some() {
            return Err(ConfigError(format!("{at}: path is for HTTP listeners")));
        }
        if http && self.framing.is_some() {
            return Err(ConfigError(format!("{at}: framing is for TCP listeners")));
        }
        let framing = match self.framing.as_deref() {
            None => LengthPrefix::Binary2,
            Some(f) => LengthPrefix::parse(f).ok_or_else(|| {
                ConfigError(format!("{at}: framing {f:?}: use binary2, bcd2 or ascii4"))
            })?,
        };
        let path = self.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            return Err(ConfigError(format!("{at}: path must start with '/'")));
        }
        let file = |p: &str| base.join(p).display().to_string();
        let codec = match (self.kind, self.format, self.mapping) {
            (ListenerKind::HttpJson, None, None) if self.response_format.is_none() => None,
            (ListenerKind::HttpJson, ..) => {
                return Err(ConfigError(format!(
                    "{at}: http_json takes the codec's JSON message form: no format or mapping"
                )));
            }
            (_, Some(format), Some(mapping)) => {
                let load = |p: &str| {
                    Format::by_name_or_path(&file(p))
                        .map(Arc::new)
                        .map_err(|e| ConfigError(format!("{at}: format {p:?}: {e}")))
                };
                let format = load(&format)?;
                let response_format = match &self.response_format {
                    Some(r) => load(r)?,
                    None => Arc::clone(&format),
                };
                let map = |p: &str| {
                    Mapping::from_file(file(p))
                        .map(Arc::new)
                        .map_err(|e| ConfigError(format!("{at}: mapping {p:?}: {e}")))
                };
                Some(RecordCodec {
                    format,
                    response_format,
                    request_map: map(&mapping.request)?,
                    response_map: map(&mapping.response)?,
                })
            }
            _ => {
                return Err(ConfigError(format!(
                    "{at}: format and mapping (request, response) are required"
                )));
            }
        };
        Ok(ListenerConfig {
            name: self.name,
            kind: self.kind,
            listen,
            path,
            framing,
            codec,
        })
    }
}

/// A bound listener.
pub(crate) struct Bound {
    pub(crate) config: ListenerConfig,
    pub(crate) listener: TcpListener,
}

/// Why a request could not be taken: HTTP 400 code and message.
struct Refused(&'static str, String);

/// What a request turned into.
enum Handled {
    /// The encoded answer body, after `delay`.
    Answer(Vec<u8>, Option<std::time::Duration>),
    /// No answer (dropped by a fault).
    Dropped,
    /// Link down, or an answer that cannot be encoded.
    Close,
}

impl ListenerConfig {
    /// Decodes a request body into a `cup` message.
    fn request(&self, host: &Host, body: &[u8]) -> Result<Message, Refused> {
        let Some(codec) = &self.codec else {
            let text = std::str::from_utf8(body)
                .map_err(|_| Refused("BAD_REQUEST", "the body is not UTF-8".into()))?;
            return Message::from_json(text).map_err(|e| Refused(e.code(), e.to_string()));
        };
        let mut record = codec
            .format
            .decode_record(body)
            .map_err(|e| Refused(e.code(), e.to_string()))?;
        record.drop_blank();
        let mut mapped = codec
            .request_map
            .apply(&record)
            .map_err(|e| Refused(e.code(), e.to_string()))?;
        let spec = host.spec();
        if spec.has_tpdu() && !mapped.contains("tpdu") {
            mapped.insert("tpdu", "6000000000");
        }
        if spec.header_len() > 0 && !mapped.contains("header") {
            mapped.insert("header", "603100000000");
        }
        mapped.drop_blank();
        Message::from_record(&mapped, spec).map_err(|e| Refused(e.code(), e.to_string()))
    }

    /// Encodes a `cup` answer as this listener's response body.
    fn response(&self, answer: &Message) -> Result<Vec<u8>, String> {
        let Some(codec) = &self.codec else {
            return Ok(answer.to_json().into_bytes());
        };
        let record: Record = codec
            .response_map
            .apply(&answer.to_record())
            .map_err(|e| e.to_string())?;
        codec
            .response_format
            .encode_record(&record)
            .map_err(|e| e.to_string())
    }

    /// The whole exchange: body in, body out.
    fn handle(&self, host: &Host, body: &[u8]) -> Result<Handled, Refused> {
        let request = self.request(host, body)?;
        Ok(match host.handle_trusted(&request) {
            Outcome::Reply { payload, delay } => {
                let encoded = host
                    .spec()
                    .decode(&payload)
                    .map_err(|e| e.to_string())
                    .and_then(|answer| self.response(&answer));
                match encoded {
                    Ok(b) => Handled::Answer(b, delay),
                    Err(e) => {
                        warn!(listener = %self.name, error = %e, "cannot encode an answer");
                        Handled::Close
                    }
                }
            }
            Outcome::Nothing => Handled::Dropped,
            Outcome::Close => Handled::Close,
        })
    }
}

/// Serves one listener until `shutdown`.
pub(crate) async fn serve(
    bound: Bound,
    host: Arc<Host>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let Bound { config, listener } = bound;
    let config = Arc::new(config);
    if config.kind.is_http() {
        let path = config.path.clone();
        let router = Router::new()
            .route(&path, axum::routing::post(http_request))
            .with_state((config, host, shutdown.clone()));
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            warn!(error = %e, "format listener failed");
        }
        return;
    }
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        if host.faults().disconnect {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (config, host, shutdown) = (config.clone(), host.clone(), shutdown.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = tcp_connection(stream, &config, &host) => {}
                () = shutdown.cancelled() => {}
            }
            debug!(%peer, listener = %config.name, "connection closed");
        });
    }
}

type HttpState = (Arc<ListenerConfig>, Arc<Host>, CancellationToken);

async fn http_request(State((config, host, shutdown)): State<HttpState>, body: Bytes) -> Response {
    if body.len() > MAX_MESSAGE {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE", "body too large");
    }
    let content_type = if config.kind == ListenerKind::HttpXml {
        "application/xml"
    } else {
        "application/json"
    };
    match config.handle(&host, &body) {
        Ok(Handled::Answer(bytes, delay)) => {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        Ok(Handled::Dropped) => {
            // Never answered: the client times out, as with a lost 8583 answer.
            shutdown.cancelled().await;
            error(StatusCode::SERVICE_UNAVAILABLE, "SHUTTING_DOWN", "stopping")
        }
        Ok(Handled::Close) => error(StatusCode::SERVICE_UNAVAILABLE, "LINK_DOWN", "link down"),
        Err(Refused(code, message)) => error(StatusCode::BAD_REQUEST, code, &message),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "code": code, "message": message })),
    )
        .into_response()
}

/// One TCP connection: a frame in, its answer out, in order.
async fn tcp_connection(mut stream: TcpStream, config: &ListenerConfig, host: &Host) {
    let framer = Framer::new(config.framing, MAX_MESSAGE);
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let frame = loop {
            match framer.decode_frame(&mut buf) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => {
                    warn!(listener = %config.name, error = %e, "broken frame: closing");
                    return;
                }
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        if frame.is_empty() {
            continue;
        }
        let body = match config.handle(host, &frame) {
            Ok(Handled::Answer(bytes, delay)) => {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                bytes
            }
            Ok(Handled::Dropped) => continue,
            Ok(Handled::Close) => return,
            Err(Refused(code, message)) => {
                warn!(listener = %config.name, code, message, "request refused: closing");
                return;
            }
        };
        let Ok(out) = framer.frame(&body) else {
            return;
        };
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
