//! The back channel to the bank host: long TCP connections on which requests are multiplexed
//! and answers matched by (response MTI, F11, F41); late answers (after the caller gave up) are
//! logged and dropped — the reversal queue already covers their transaction. Connections
//! reconnect with back-off, and idle ones send an echo (0800, F60.3 = 301).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::{FieldValue, Message, Spec, Subfield};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Why a host exchange did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing was sent: no connection, or the request could not be encoded.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The request may have reached the host, but no answer came in time.
    #[error("no answer in time")]
    Timeout,
    /// The connection broke after the request was written.
    #[error("connection lost after sending")]
    Lost,
}

/// F41 of the link's own echo messages.
const ECHO_TERMINAL: &str = "ECHO0000";

/// The key an answer is matched by.
pub type MatchKey = (String, String, String);

/// The response MTI of a request MTI: 0200 → 0210, 0401 → 0410, 0800 → 0810.
pub fn response_mti(mti: &str) -> String {
    match mti.as_bytes() {
        [a, b, c, _] if c.is_ascii_digit() => {
            let class = (c - b'0' + 1) % 10;
            format!("{}{}{class}0", char::from(*a), char::from(*b))
        }
        _ => mti.to_owned(),
    }
}

fn text(m: &Message, n: u16) -> String {
    m.get(n)
        .and_then(FieldValue::as_text)
        .unwrap_or_default()
        .to_owned()
}

/// The key of the answer to `request`.
pub fn answer_key(request: &Message) -> MatchKey {
    (
        response_mti(&request.mti),
        text(request, 11),
        text(request, 41),
    )
}

/// The key of an answer as received.
pub fn received_key(answer: &Message) -> MatchKey {
    let mut mti = answer.mti.clone();
    // 0411 (answer to a repeat) matches like 0410.
    if mti.len() == 4 {
        mti.replace_range(3..4, "0");
    }
    (mti, text(answer, 11), text(answer, 41))
}

/// A request waiting to be written; its waiter is in the connection's pending map.
struct Outgoing {
    key: MatchKey,
    frame: Vec<u8>,
}

struct Conn {
    tx: mpsc::Sender<Outgoing>,
    up: Arc<AtomicBool>,
    /// Waiters by match key. Shared with the caller, which removes its own on timeout, so
    /// abandoned requests never pile up on a long-lived connection.
    pending: Pending,
}

/// A registered waiter; removed from its map when the caller stops waiting (answer, timeout
/// or drop), so abandoned requests never pile up on a long-lived connection.
pub(crate) struct Waiting<'a> {
    pending: &'a Pending,
    key: MatchKey,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Registers a waiter for the answer matching `key`; refused while another request with the
/// same key waits (its answer could not be told apart).
pub(crate) fn register(
    pending: &Pending,
    key: MatchKey,
) -> Result<(Waiting<'_>, oneshot::Receiver<Result<Message, HostError>>), HostError> {
    let (reply, rx) = oneshot::channel();
    let mut map = pending.lock().unwrap_or_else(|p| p.into_inner());
    if map.contains_key(&key) {
        return Err(HostError::NotSent(
            "a request with the same MTI class, F11 and F41 is in flight".into(),
        ));
    }
    map.insert(key.clone(), reply);
    Ok((Waiting { pending, key }, rx))
}

/// The multiplexed host link.
pub struct HostLink {
    conns: Vec<Conn>,
    next: AtomicUsize,
    spec: Arc<Spec>,
    framer: Framer,
}

impl HostLink {
    /// Starts `connections` long connections to `address`; they run until `shutdown`.
    pub fn start(
        address: String,
        spec: Arc<Spec>,
        prefix: LengthPrefix,
        connections: usize,
        echo_interval: Duration,
        shutdown: CancellationToken,
    ) -> Arc<HostLink> {
        let framer = Framer::new(prefix, spec.max_message_len());
        let conns = (0..connections.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(4096);
                let up = Arc::new(AtomicBool::new(false));
                let pending: Pending = Arc::default();
                tokio::spawn(run_connection(
                    i,
                    address.clone(),
                    Arc::clone(&spec),
                    framer,
                    rx,
                    Arc::clone(&up),
                    Arc::clone(&pending),
                    echo_interval,
                    shutdown.clone(),
                ));
                Conn { tx, up, pending }
            })
            .collect();
        Arc::new(HostLink {
            conns,
            next: AtomicUsize::new(0),
            spec,
            framer,
        })
    }

    /// The profile spoken to the host.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Whether at least one connection is up.
    pub fn is_up(&self) -> bool {
        self.conns.iter().any(|c| c.up.load(Ordering::Relaxed))
    }

    /// Sends an encoded request (whose match key is that of `request`) and waits for its
    /// answer up to `timeout`.
    pub async fn exchange(
        &self,
        request: &Message,
        encoded: &[u8],
        timeout: Duration,
    ) -> Result<Message, HostError> {
        let frame = self
            .framer
            .frame(encoded)
            .map_err(|e| HostError::NotSent(e.to_string()))?;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let conn = (0..n)
            .map(|i| &self.conns[(start + i) % n])
            .find(|c| c.up.load(Ordering::Relaxed))
            .ok_or_else(|| HostError::NotSent("no connection to the host".into()))?;
        let key = answer_key(request);
        let (_waiting, rx) = register(&conn.pending, key.clone())?;
        conn.tx
            .send(Outgoing { key, frame })
            .await
            .map_err(|_| HostError::NotSent("the host link is shutting down".into()))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(HostError::Lost),
            Err(_) => Err(HostError::Timeout),
        }
    }
}

/// Waiters by match key.
pub(crate) type Pending =
    Arc<Mutex<HashMap<MatchKey, oneshot::Sender<Result<Message, HostError>>>>>;

#[allow(clippy::too_many_arguments)]
async fn run_connection(
    index: usize,
    address: String,
    spec: Arc<Spec>,
    framer: Framer,
    mut rx: mpsc::Receiver<Outgoing>,
    up: Arc<AtomicBool>,
    pending: Pending,
    echo_interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let connected = connect_with_backoff(&address, &shutdown, "host", index, || {
            refuse_unsent(&mut rx, &pending)
        });
        let Some(stream) = connected.await else {
            return;
        };
        up.store(true, Ordering::Relaxed);
        tracing::info!(connection = index, %address, "host connected");
        let reason = serve_connection(
            stream,
            &spec,
            &framer,
            &mut rx,
            &pending,
            echo_interval,
            &shutdown,
        )
        .await;
        up.store(false, Ordering::Relaxed);
        // Requests still queued were never written; everything else was, and its fate is unknown.
        refuse_unsent(&mut rx, &pending);
        let lost: Vec<_> = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, reply) in lost {
            let _ = reply.send(Err(HostError::Lost));
        }
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!(connection = index, %address, reason, "host connection closed; reconnecting");
    }
}

/// Connects to `address`, retrying with capped exponential back-off (100 ms doubling to 5 s);
/// `on_failure` runs after each failed attempt (to refuse what was queued meanwhile). `None`
/// once `shutdown` is canceled.
pub(crate) async fn connect_with_backoff(
    address: &str,
    shutdown: &CancellationToken,
    what: &str,
    index: usize,
    mut on_failure: impl FnMut(),
) -> Option<TcpStream> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return None,
            s = TcpStream::connect(address) => s,
        };
        match attempt {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Err(e) => {
                tracing::warn!(connection = index, %address, error = %e, "{what} connect failed");
                on_failure();
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Answers the requests still queued for writing with `NotSent`: nothing of them left.
fn refuse_unsent(rx: &mut mpsc::Receiver<Outgoing>, pending: &Pending) {
    while let Ok(o) = rx.try_recv() {
        let waiter = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&o.key);
        if let Some(w) = waiter {
            let _ = w.send(Err(HostError::NotSent("no connection to the host".into())));
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    spec: &Spec,
    framer: &Framer,
    rx: &mut mpsc::Receiver<Outgoing>,
    pending: &Pending,
    echo_interval: Duration,
    shutdown: &CancellationToken,
) -> &'static str {
    let (mut read, mut write) = stream.into_split();
    let mut buf = BytesMut::with_capacity(8192);
    let mut echo_stan: u32 = 0;
    let idle = if echo_interval.is_zero() {
        Duration::from_secs(86_400)
    } else {
        echo_interval
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return "shutdown",
            out = rx.recv() => {
                let Some(out) = out else { return "link dropped" };
                if write.write_all(&out.frame).await.is_err() {
                    return "write failed";
                }
            }
            n = read.read_buf(&mut buf) => {
                match n {
                    Ok(0) | Err(_) => return "closed by the host",
                    Ok(_) => {}
                }
                loop {
                    let frame = match framer.decode_frame(&mut buf) {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(_) => return "bad frame from the host",
                    };
                    match spec.decode(&frame) {
                        Ok(answer) => {
                            let key = received_key(&answer);
                            let waiter = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                            match waiter {
                                Some(w) => { let _ = w.send(Ok(answer)); }
                                None if key.2 == ECHO_TERMINAL => tracing::debug!("echo answered"),
                                None => tracing::warn!(mti = %key.0, stan = %key.1, terminal = %key.2, "late or unexpected answer from the host dropped"),
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable message from the host dropped"),
                    }
                }
            }
            () = tokio::time::sleep(idle) => {
                echo_stan = (echo_stan + 1) % 1_000_000;
                let mut echo = Message::new("0800")
                    .with(11, format!("{echo_stan:06}"))
                    .with(41, ECHO_TERMINAL)
                    .with(60, FieldValue::Subfields(vec![Subfield::new("1", "00"), Subfield::new("2", "000000"), Subfield::new("3", "301")]));
                if spec.has_tpdu() {
                    echo = echo.with_tpdu(vec![0x60, 0, 0, 0, 0]);
                }
                if spec.header_len() > 0 {
                    // CUP's header starts 60 31; other profiles get zeros.
                    let mut header = vec![0u8; spec.header_len()];
                    let n = header.len().min(2);
                    header[..n].copy_from_slice(&[0x60, 0x31][..n]);
                    echo = echo.with_header(header);
                }
                let Ok(frame) = spec.encode(&echo).and_then(|b| framer.frame(&b)) else { continue };
                if write.write_all(&frame).await.is_err() {
                    return "echo failed";
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_mtis_and_keys() {
        assert_eq!(response_mti("0200"), "0210");
        assert_eq!(response_mti("0400"), "0410");
        assert_eq!(response_mti("0401"), "0410");
        assert_eq!(response_mti("0800"), "0810");
        let req = Message::new("0401").with(11, "000123").with(41, "T0000001");
        let ans = Message::new("0411").with(11, "000123").with(41, "T0000001");
        assert_eq!(answer_key(&req), received_key(&ans));
    }
}
