//! Record back ends: hosts that speak the other formats of seed 001 §13.2 — XML over HTTP
//! (`http_xml`), fixed-width ("struct", `tcp_fixed`) or delimiter-separated (`tcp_delimited`)
//! records over TCP — so that each channel front can have a back end of its own format.
//!
//! A request goes out as the canonical message's record (`mti`, `N`, `N.SUB` keys) through
//! the back end's **request mapping** into its request format; the answer comes back through
//! its response format and **response mapping** into canonical keys, and becomes a message of
//! the canonical profile. The answer must be the request's response MTI (filled in when the
//! format has none) with its F11 and F41 and an F39, else the request is in doubt. The
//! request format must carry the MTI: a back end has to tell a reversal (0400) from a
//! request, which [`RecordCodec::load`] checks.
//!
//! TCP: a pool of long connections, each carrying one request at a time (request, answer,
//! next); a connection that times out or fails is closed (a late answer could not be told
//! from the next one). HTTP: one POST per request. Cannot connect: not sent (91). There is no
//! MAC: put such hosts on a private network.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::mapping::Mapping;
use openteller_codec::{FieldValue, Format, Message, Record, Spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::host::{HostError, answer_key, received_key, response_mti};

/// Formats and mappings of a record back end.
pub struct RecordCodec {
    format: Format,
    response_format: Format,
    request_map: Mapping,
    response_map: Mapping,
}

impl RecordCodec {
    /// Loads the files (paths already resolved) and checks that a reversal's MTI survives the
    /// request mapping and format.
    pub fn load(
        format: &str,
        response_format: Option<&str>,
        request_map: &str,
        response_map: &str,
    ) -> Result<RecordCodec, String> {
        let load = |p: &str| Format::by_name_or_path(p).map_err(|e| format!("format {p:?}: {e}"));
        let map = |p: &str| Mapping::from_file(p).map_err(|e| format!("mapping {p:?}: {e}"));
        let codec = RecordCodec {
            format: load(format)?,
            response_format: match response_format {
                Some(r) => load(r)?,
                None => load(format)?,
            },
            request_map: map(request_map)?,
            response_map: map(response_map)?,
        };
        let probe = Record::new()
            .with("mti", "0400")
            .with("3", "010000")
            .with("4", "000000010000")
            .with("11", "000001")
            .with("13", "0101")
            .with("41", "PROBE001");
        let carried = codec
            .request_map
            .apply(&probe)
            .ok()
            .and_then(|r| codec.format.encode_record(&r).ok())
            .and_then(|b| codec.format.decode_record(&b).ok())
            .is_some_and(|r| r.iter().any(|(_, v)| v == "0400"));
        if !carried {
            return Err(
                "the request format (through the request mapping) does not carry the MTI: \
                 reversals could not be told from requests; add an mti field"
                    .into(),
            );
        }
        Ok(codec)
    }

    /// Encodes a canonical request.
    pub fn encode(&self, request: &Message) -> Result<Vec<u8>, String> {
        let mapped = self
            .request_map
            .apply(&request.to_record())
            .map_err(|e| e.to_string())?;
        self.format
            .encode_record(&mapped)
            .map_err(|e| e.to_string())
    }

    /// Decodes an answer to `request` into a message of the canonical profile.
    pub fn decode(
        &self,
        request: &Message,
        body: &[u8],
        canonical: &Spec,
    ) -> Result<Message, String> {
        let mut record = self
            .response_format
            .decode_record(body)
            .map_err(|e| e.to_string())?;
        record.drop_blank();
        let mut mapped = self
            .response_map
            .apply(&record)
            .map_err(|e| e.to_string())?;
        mapped.drop_blank();
        if !mapped.contains("mti") {
            mapped.insert("mti", response_mti(&request.mti));
        }
        super::fit_envelope_record(&mut mapped, canonical);
        let answer = Message::from_record(&mapped, canonical).map_err(|e| e.to_string())?;
        if received_key(&answer) != answer_key(request)
            || answer.get(39).and_then(FieldValue::as_text).is_none()
        {
            return Err(
                "the answer does not match the request (MTI, F11, F41) or lacks F39".into(),
            );
        }
        Ok(answer)
    }
}

/// A pool of lock-step TCP connections to a record host.
pub struct TcpRecordLink {
    address: String,
    framer: Framer,
    idle: Mutex<Vec<TcpStream>>,
    slots: Semaphore,
}

impl TcpRecordLink {
    /// A pool of at most `connections` connections to `address`, opened when needed.
    pub fn new(address: String, prefix: LengthPrefix, max: usize, connections: usize) -> Self {
        TcpRecordLink {
            address,
            framer: Framer::new(prefix, max),
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(connections),
        }
    }

    /// An idle connection that is still usable: not closed by the host and with nothing
    /// unread on it (a late answer would put the link out of step). Others are dropped.
    fn pooled(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(s) = idle.pop() {
            let mut probe = [0u8; 1];
            match s.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(s),
                // Ok(0): closed by the host; Ok(_): unread bytes; Err: broken.
                _ => continue,
            }
        }
        None
    }

    /// Sends one encoded request and returns the answer's body.
    pub async fn exchange(&self, body: &[u8], timeout: Duration) -> Result<Vec<u8>, HostError> {
        let framed = self
            .framer
            .frame(body)
            .map_err(|e| HostError::NotSent(format!("cannot frame: {e}")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let _slot = tokio::time::timeout_at(deadline, self.slots.acquire())
            .await
            .map_err(|_| HostError::NotSent("no free connection in time".into()))?
            .map_err(|_| HostError::NotSent("shutting down".into()))?;
        let connect = || async {
            let s = tokio::time::timeout_at(deadline, TcpStream::connect(&self.address))
                .await
                .map_err(|_| HostError::NotSent("connect timed out".into()))?
                .map_err(|e| HostError::NotSent(format!("cannot connect: {e}")))?;
            let _ = s.set_nodelay(true);
            Ok::<_, HostError>(s)
        };
        let mut stream = match self.pooled() {
            Some(s) => s,
            None => connect().await?,
        };
        // A pooled connection the host closed can still fail at write: nothing was taken, so
        // try once on a fresh one. A write that does not finish by the deadline may have sent
        // part of the request: lost, not "not sent".
        match tokio::time::timeout_at(deadline, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                stream = connect().await?;
                tokio::time::timeout_at(deadline, stream.write_all(&framed))
                    .await
                    .map_err(|_| HostError::Lost)?
                    .map_err(|e| HostError::NotSent(format!("cannot send: {e}")))?;
            }
            Err(_) => return Err(HostError::Lost),
        }
        let mut buf = BytesMut::with_capacity(1024);
        let answer = tokio::time::timeout_at(deadline, async {
            loop {
                match self.framer.decode_frame(&mut buf) {
                    Ok(Some(f)) if f.is_empty() => continue,
                    Ok(Some(f)) => return Ok(f.to_vec()),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(address = %self.address, error = %e, "bad frame from a record back end");
                        return Err(HostError::Lost);
                    }
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) => return Err(HostError::Lost),
                    Ok(_) => {}
                    Err(_) => return Err(HostError::Lost),
                }
            }
        })
        .await;
        match answer {
            Ok(Ok(body)) => {
                if buf.is_empty() {
                    self.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(stream);
                }
                Ok(body)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(HostError::Timeout),
        }
    }
}

/// A record host reached over HTTP(S).
pub struct HttpRecordLink {
    client: reqwest::Client,
    url: String,
    content_type: &'static str,
    headers: Vec<(String, String)>,
    max_body: usize,
}

impl HttpRecordLink {
    /// POSTs to `url` with this content type and these extra headers.
    pub fn new(
        client: reqwest::Client,
        url: String,
        content_type: &'static str,
        headers: Vec<(String, String)>,
        max_body: usize,
    ) -> Self {
        HttpRecordLink {
            client,
            url,
            content_type,
            headers,
            max_body,
        }
    }

    /// Sends one encoded request and returns the answer's body.
    pub async fn exchange(&self, body: &[u8], timeout: Duration) -> Result<Vec<u8>, HostError> {
        super::http::post(
            &self.client,
            &self.url,
            self.content_type,
            &self.headers,
            body.to_vec(),
            timeout,
            self.max_body,
        )
        .await
    }
}

/// How a record back end is reached.
pub enum RecordTransport {
    /// `tcp_fixed`, `tcp_delimited`.
    Tcp(TcpRecordLink),
    /// `http_xml`.
    Http(HttpRecordLink),
}

/// A record back end's link: transport and codec.
pub struct RecordLink {
    /// Transport.
    pub transport: RecordTransport,
    /// Formats and mappings.
    pub codec: RecordCodec,
    /// The canonical profile answers are converted to.
    pub canonical: Arc<Spec>,
}

impl RecordLink {
    /// Sends `request` (already encoded as `body`) and returns the canonical answer; an
    /// answer that cannot be decoded or does not match leaves the request in doubt.
    pub async fn exchange(
        &self,
        request: &Message,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Message, HostError> {
        let answer = match &self.transport {
            RecordTransport::Tcp(t) => t.exchange(body, timeout).await?,
            RecordTransport::Http(h) => h.exchange(body, timeout).await?,
        };
        self.codec
            .decode(request, &answer, &self.canonical)
            .map_err(|e| {
                tracing::warn!(error = %e, "record back end answer unusable; in doubt");
                HostError::Lost
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> String {
        format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn a_request_format_without_the_mti_is_refused() {
        let maps = (
            path("examples/backends/request-map.toml"),
            path("examples/backends/response-map.toml"),
        );
        let host = |f: &str| path(&format!("../../simulators/host-sim/formats/{f}"));
        assert!(
            RecordCodec::load(
                &host("fixed-request.toml"),
                Some(&host("fixed-response.toml")),
                &maps.0,
                &maps.1
            )
            .is_ok()
        );
        let err = RecordCodec::load(
            &path("examples/channels/kiosk-fixed-request.toml"),
            None,
            &maps.0,
            &maps.1,
        )
        .err()
        .unwrap();
        assert!(err.contains("MTI"), "{err}");
    }

    #[test]
    fn answers_are_matched_to_their_request() {
        let host = |f: &str| path(&format!("../../simulators/host-sim/formats/{f}"));
        let codec = RecordCodec::load(
            &host("delimited-request.toml"),
            Some(&host("delimited-response.toml")),
            &path("examples/backends/request-map.toml"),
            &path("examples/backends/response-map.toml"),
        )
        .unwrap();
        let spec = Spec::builtin("cup").unwrap();
        let request = Message::new("0200")
            .with(3, "310000")
            .with(11, "000042")
            .with(41, "TD000001");
        let encoded = codec.encode(&request).unwrap();
        assert!(
            String::from_utf8(encoded)
                .unwrap()
                .starts_with("0200|310000|TD000001|000042")
        );
        let ok = codec
            .decode(&request, b"0210|00|42|TD000001|123456789012|||", &spec)
            .unwrap();
        assert_eq!(ok.get(11).and_then(FieldValue::as_text), Some("000042"));
        assert_eq!(ok.get(39).and_then(FieldValue::as_text), Some("00"));
        for bad in [
            &b"0210|00|43|TD000001|123456789012|||"[..],
            b"0410|00|42|TD000001|123456789012|||",
            b"0210||42|TD000001|123456789012|||",
            b"garbage",
        ] {
            assert!(codec.decode(&request, bad, &spec).is_err());
        }
    }

    /// A host that answers one request per connection and then closes it (and a connection
    /// it left with an unread late answer): the next exchange must not reuse such a pooled
    /// connection, where its write would succeed and its read find nothing (a lost request).
    #[tokio::test]
    async fn stale_pooled_connections_are_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            for n in 1u8.. {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    s.read_exact(&mut len).await.unwrap();
                    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    s.read_exact(&mut body).await.unwrap();
                    body.push(b'!');
                    let answer = [&(body.len() as u16).to_be_bytes()[..], &body].concat();
                    s.write_all(&answer).await.unwrap();
                    if n == 2 {
                        // Second connection: a late extra answer stays unread on it.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        s.write_all(&answer).await.unwrap();
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    // Other connections: closed by dropping `s`.
                });
            }
        });
        let link = TcpRecordLink::new(address, LengthPrefix::Binary2, 4096, 1);
        let t = Duration::from_secs(5);
        assert_eq!(link.exchange(b"one", t).await.unwrap(), b"one!");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(link.exchange(b"two", t).await.unwrap(), b"two!");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(link.exchange(b"three", t).await.unwrap(), b"three!");
    }
}
