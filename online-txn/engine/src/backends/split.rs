//! The "two in, two out" bank network model (银联网络模型, 二进二出): requests leave on a pool
//! of **send** connections and their answers arrive on separate **receive** connections.
//! Answers are matched on the same key as the multiplexed link ([`crate::host::answer_key`] /
//! [`crate::host::received_key`]: response MTI class, F11, F41), whichever connection they
//! arrive on.
//!
//! - Send side: `send_connections` long connections to `send_address`, reconnecting with
//!   back-off, an echo (0800, F60.3 = 301) when idle.
//! - Receive side: `receive_connections` connections to `receive_address` (we connect), and/or
//!   a listener on `receive_listen` the host connects to (the classic model: each side is the
//!   client of the link it sends on). A request arriving there (the host's echo) is answered
//!   on the same connection.
//! - Tolerance: answers arriving on a **send** connection are matched too, so a host that only
//!   answers on the connection a request came in on (like host-sim) works; with neither
//!   `receive_address` nor `receive_listen` that is the only way answers come back.
//!
//! The link counts as up when a send connection is up and — when a receive side is configured
//! — at least one receive connection is up (a request that could not be answered is not sent:
//! it is declined 91 without leaving).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use openteller_codec::framing::Framer;
use openteller_codec::{FieldValue, Message, Spec, Subfield};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::host::{
    HostError, Pending, answer_key, connect_with_backoff, received_key, register, response_mti,
};

struct Outgoing {
    frame: Vec<u8>,
    written: oneshot::Sender<bool>,
}

struct SendConn {
    tx: mpsc::Sender<Outgoing>,
    up: Arc<AtomicBool>,
}

/// Where the receive side comes from.
#[derive(Debug, Clone, Default)]
pub struct ReceiveSide {
    /// Connect to this address (as many as `connections`).
    pub address: Option<String>,
    /// Connections to `address`.
    pub connections: usize,
    /// Accept the host's connections here (already bound).
    pub listener: Option<Arc<TcpListener>>,
}

/// A split send/receive link (see the module docs).
pub struct SplitLink {
    senders: Vec<SendConn>,
    next: AtomicUsize,
    pending: Pending,
    receivers_up: Arc<AtomicUsize>,
    needs_receiver: bool,
    framer: Framer,
}

impl SplitLink {
    /// Starts the send and receive sides; they run until `shutdown`.
    pub fn start(
        send_address: String,
        send_connections: usize,
        receive: ReceiveSide,
        spec: Arc<Spec>,
        framer: Framer,
        echo_interval: Duration,
        shutdown: CancellationToken,
    ) -> Arc<SplitLink> {
        let pending: Pending = Arc::default();
        let receivers_up = Arc::new(AtomicUsize::new(0));
        let senders = (0..send_connections.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(4096);
                let up = Arc::new(AtomicBool::new(false));
                tokio::spawn(run_sender(
                    i,
                    send_address.clone(),
                    Arc::clone(&spec),
                    framer,
                    rx,
                    Arc::clone(&up),
                    Arc::clone(&pending),
                    echo_interval,
                    shutdown.clone(),
                ));
                SendConn { tx, up }
            })
            .collect();
        let needs_receiver = receive.address.is_some() || receive.listener.is_some();
        if let Some(address) = receive.address {
            for i in 0..receive.connections.max(1) {
                tokio::spawn(run_receiver(
                    i,
                    address.clone(),
                    Arc::clone(&spec),
                    framer,
                    Arc::clone(&pending),
                    Arc::clone(&receivers_up),
                    shutdown.clone(),
                ));
            }
        }
        if let Some(listener) = receive.listener {
            tokio::spawn(accept_receivers(
                listener,
                Arc::clone(&spec),
                framer,
                Arc::clone(&pending),
                Arc::clone(&receivers_up),
                shutdown,
            ));
        }
        Arc::new(SplitLink {
            senders,
            next: AtomicUsize::new(0),
            pending,
            receivers_up,
            needs_receiver,
            framer,
        })
    }

    /// Whether a request can be sent and answered now.
    pub fn is_up(&self) -> bool {
        self.senders.iter().any(|c| c.up.load(Ordering::Relaxed))
            && (!self.needs_receiver || self.receivers_up.load(Ordering::Relaxed) > 0)
    }

    /// Sends an encoded request and waits for its answer on any connection.
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
        if self.needs_receiver && self.receivers_up.load(Ordering::Relaxed) == 0 {
            return Err(HostError::NotSent(
                "no receive connection: an answer could not arrive".into(),
            ));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.senders.len();
        let conn = (0..n)
            .map(|i| &self.senders[(start + i) % n])
            .find(|c| c.up.load(Ordering::Relaxed))
            .ok_or_else(|| HostError::NotSent("no send connection to the host".into()))?;
        // Whatever happens next, the key does not stay behind (the guard removes it).
        let (_waiting, answer) = register(&self.pending, answer_key(request))?;
        let (written, was_written) = oneshot::channel();
        if conn.tx.send(Outgoing { frame, written }).await.is_err() {
            return Err(HostError::NotSent("the link is shutting down".into()));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, was_written).await {
            Ok(Ok(true)) => {}
            // The connection went down before writing: nothing left.
            Ok(Err(_)) => return Err(HostError::NotSent("send connection closed".into())),
            // A failed write may have left part of the frame: fate unknown.
            Ok(Ok(false)) => return Err(HostError::Lost),
            Err(_) => return Err(HostError::Timeout),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(HostError::Lost),
            Err(_) => Err(HostError::Timeout),
        }
    }
}

/// Hands a received answer to its waiter; logs late ones.
fn deliver(pending: &Pending, answer: Message, side: &str) {
    let key = received_key(&answer);
    let waiter = pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    match waiter {
        Some(w) => {
            let _ = w.send(Ok(answer));
        }
        None => tracing::warn!(
            side,
            mti = %key.0,
            stan = %key.1,
            terminal = %key.2,
            "late or unexpected answer from the host dropped"
        ),
    }
}

fn is_request(m: &Message) -> bool {
    m.mti
        .as_bytes()
        .get(2)
        .is_some_and(|c| c.wrapping_sub(b'0').is_multiple_of(2))
}

fn echo(stan: u32, spec: &Spec) -> Message {
    let mut m = Message::new("0800")
        .with(11, format!("{stan:06}"))
        .with(41, "ECHO0000")
        .with(
            60,
            FieldValue::Subfields(vec![
                Subfield::new("1", "00"),
                Subfield::new("2", "000000"),
                Subfield::new("3", "301"),
            ]),
        );
    if spec.has_tpdu() {
        m.tpdu = Some(vec![0x60, 0, 0, 0, 0].into());
    }
    if spec.header_len() == 6 {
        m.header = Some(vec![0x60, 0x31, 0, 0, 0, 0].into());
    } else if spec.header_len() > 0 {
        m.header = Some(vec![0; spec.header_len()].into());
    }
    m
}

#[allow(clippy::too_many_arguments)]
async fn run_sender(
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
    let idle = if echo_interval.is_zero() {
        Duration::from_secs(86_400)
    } else {
        echo_interval
    };
    let mut echo_stan = 0u32;
    loop {
        // Requests routed here while down are refused: nothing was written (dropping
        // `written` tells the caller so).
        let connected = connect_with_backoff(&address, &shutdown, "split send", index, || {
            while rx.try_recv().is_ok() {}
        });
        let Some(stream) = connected.await else {
            return;
        };
        up.store(true, Ordering::Relaxed);
        tracing::info!(connection = index, %address, "split send connection up");
        let (mut read, mut write) = stream.into_split();
        let mut buf = BytesMut::with_capacity(4096);
        let reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                out = rx.recv() => {
                    let Some(out) = out else { return };
                    let ok = write.write_all(&out.frame).await.is_ok();
                    let _ = out.written.send(ok);
                    if !ok {
                        break "write failed";
                    }
                }
                n = read.read_buf(&mut buf) => {
                    if matches!(n, Ok(0) | Err(_)) {
                        break "closed by the host";
                    }
                    // Tolerated: answers on the send connection.
                    if let Err(reason) = drain(&mut buf, &spec, &framer, &pending, None, "send").await {
                        break reason;
                    }
                }
                () = tokio::time::sleep(idle) => {
                    echo_stan = (echo_stan + 1) % 1_000_000;
                    let Ok(frame) = spec.encode(&echo(echo_stan, &spec)).and_then(|b| framer.frame(&b)) else { continue };
                    if write.write_all(&frame).await.is_err() {
                        break "echo failed";
                    }
                }
            }
        };
        up.store(false, Ordering::Relaxed);
        tracing::warn!(connection = index, %address, reason, "split send connection closed; reconnecting");
    }
}

/// Decodes every complete frame in `buf`: answers go to their waiters; requests (the
/// host's echo) are answered on `reply_to` when given.
async fn drain(
    buf: &mut BytesMut,
    spec: &Spec,
    framer: &Framer,
    pending: &Pending,
    mut reply_to: Option<&mut tokio::net::tcp::OwnedWriteHalf>,
    side: &str,
) -> Result<(), &'static str> {
    loop {
        let frame = match framer.decode_frame(buf) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(_) => return Err("bad frame from the host"),
        };
        let message = match spec.decode(&frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(side, error = %e, "undecodable message from the host dropped");
                continue;
            }
        };
        if !is_request(&message) {
            deliver(pending, message, side);
            continue;
        }
        if message.mti.starts_with("08")
            && let Some(w) = reply_to.as_deref_mut()
        {
            let mut answer = Message::new(response_mti(&message.mti));
            answer.tpdu = message.tpdu.clone();
            answer.header = message.header.clone();
            for n in [11, 12, 13, 41, 60] {
                if let Some(v) = message.get(n) {
                    answer.set(n, v.clone());
                }
            }
            answer.set(39, "00");
            if let Ok(frame) = spec.encode(&answer).and_then(|b| framer.frame(&b))
                && w.write_all(&frame).await.is_err()
            {
                return Err("write failed");
            }
        } else {
            tracing::warn!(side, mti = %message.mti, "request from the host ignored");
        }
    }
}

async fn receive_on(
    stream: TcpStream,
    spec: &Spec,
    framer: &Framer,
    pending: &Pending,
    shutdown: &CancellationToken,
) -> &'static str {
    let (mut read, mut write) = stream.into_split();
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        let n = tokio::select! {
            () = shutdown.cancelled() => return "shutdown",
            n = read.read_buf(&mut buf) => n,
        };
        if matches!(n, Ok(0) | Err(_)) {
            return "closed by the host";
        }
        if let Err(reason) =
            drain(&mut buf, spec, framer, pending, Some(&mut write), "receive").await
        {
            return reason;
        }
    }
}

async fn run_receiver(
    index: usize,
    address: String,
    spec: Arc<Spec>,
    framer: Framer,
    pending: Pending,
    up: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    loop {
        let connected = connect_with_backoff(&address, &shutdown, "split receive", index, || {});
        let Some(stream) = connected.await else {
            return;
        };
        up.fetch_add(1, Ordering::Relaxed);
        tracing::info!(connection = index, %address, "split receive connection up");
        let reason = receive_on(stream, &spec, &framer, &pending, &shutdown).await;
        up.fetch_sub(1, Ordering::Relaxed);
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!(connection = index, %address, reason, "split receive connection closed; reconnecting");
    }
}

async fn accept_receivers(
    listener: Arc<TcpListener>,
    spec: Arc<Spec>,
    framer: Framer,
    pending: Pending,
    up: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "split receive accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (spec, pending, up, shutdown) = (
            Arc::clone(&spec),
            Arc::clone(&pending),
            Arc::clone(&up),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            up.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "split receive connection accepted");
            let reason = receive_on(stream, &spec, &framer, &pending, &shutdown).await;
            up.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, reason, "split receive connection closed");
        });
    }
}

/// The address a receive listener is bound to, for logs.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
