//! The 8583 TCP server: one task per connection, many requests per connection (pipelining
//! allowed), each answered as soon as it is done.
//!
//! A connection task reads frames, hands each to [`Host::handle`] (synchronous, a few
//! microseconds) and writes the answers; delayed answers wait in the same task
//! (a `FuturesUnordered` of timers), so a slow answer never holds up the next ones. The task
//! ends when the peer closes (after its pending answers are sent), on malformed input, on
//! `POST /disconnect`, while the `disconnect` fault is on, and on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::host::{Host, Outcome};
use crate::wire;

/// Accepts connections until `shutdown`, at most `limit` at a time.
pub(crate) async fn serve(
    listener: TcpListener,
    host: Arc<Host>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    limit: Arc<Semaphore>,
) {
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        if host.faults().disconnect {
            debug!(%peer, "link down (disconnect fault): closing a new connection");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let host = host.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            connection(stream, peer, host, shutdown).await;
        });
    }
}

/// Counts an open connection for as long as it lives.
struct Open<'a>(&'a Host);

impl<'a> Open<'a> {
    fn new(host: &'a Host) -> Self {
        host.connections.fetch_add(1, Ordering::Relaxed);
        Open(host)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    host: Arc<Host>,
    shutdown: CancellationToken,
) {
    let _open = Open::new(&host);
    let mut disconnect = host.disconnect.subscribe();
    disconnect.mark_unchanged();
    debug!(%peer, "connection opened");
    let framer = wire::framer();
    let mut input = BytesMut::with_capacity(4096);
    let mut output: Vec<u8> = Vec::with_capacity(4096);
    let mut delayed = FuturesUnordered::new();
    let mut reading = true;
    let mut close = false;
    loop {
        while !close {
            match framer.decode_frame(&mut input) {
                Ok(Some(frame)) if frame.is_empty() => {}
                Ok(Some(frame)) => match host.handle(&frame) {
                    Outcome::Reply {
                        payload,
                        delay: None,
                    } => {
                        let _ = framer.frame_into(&payload, &mut output);
                    }
                    Outcome::Reply {
                        payload,
                        delay: Some(d),
                    } => delayed.push(async move {
                        tokio::time::sleep(d).await;
                        payload
                    }),
                    Outcome::Nothing => {}
                    Outcome::Close => close = true,
                },
                Ok(None) => break,
                Err(e) => {
                    warn!(%peer, code = e.code(), error = %e, "bad frame: closing the connection");
                    close = true;
                }
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                break;
            }
            output.clear();
        }
        if close || (!reading && delayed.is_empty()) {
            break;
        }
        tokio::select! {
            r = stream.read_buf(&mut input), if reading => match r {
                Ok(0) => reading = false,
                Ok(_) => {}
                Err(_) => break,
            },
            Some(payload) = delayed.next(), if !delayed.is_empty() => {
                let _ = framer.frame_into(&payload, &mut output);
            }
            _ = disconnect.changed() => {
                debug!(%peer, "disconnect requested");
                break;
            }
            () = shutdown.cancelled() => break,
        }
    }
    debug!(%peer, "connection closed");
}
