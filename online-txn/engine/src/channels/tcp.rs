//! TCP channels (`tcp_fixed`, `tcp_delimited`, `tcp_8583`): length-prefixed frames
//! (`binary2`, `bcd2`, `ascii4`; the TPDU and header of ISO 8583 profiles that have them are
//! part of the message), one request per frame.
//!
//! - `connection = "long"`: many requests per connection, pipelined; each answered as soon as
//!   it is done (answers may come out of order: match them on the STAN).
//! - `connection = "short"`: one request, its answer, then the connection is closed.
//!
//! Back-pressure: `max_in_flight` requests of the channel at once (further frames wait, which
//! stops reading the connection), `max_connections` connections. A request that cannot be
//! decoded is answered with the response record carrying F39 = 30 (the connection stays open:
//! frame boundaries are intact), or, when not even that can be formed, the connection is
//! closed. A malformed or oversized length prefix gets that error answer and the connection is
//! closed (the stream cannot be trusted any more).

use std::sync::Arc;

use bytes::BytesMut;
use openteller_codec::framing::Framer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Channel, ConnectionMode, Handled, Hub};

/// Serves a TCP channel on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    channel: Arc<Channel>,
    shutdown: CancellationToken,
) {
    let framer = Framer::new(channel.framing(), channel.config.max_message_bytes);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = Arc::clone(&channel.connections).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(channel = %channel.config.name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !channel.allows(peer.ip()) {
            tracing::warn!(channel = %channel.config.name, %peer, "peer not allowed; closed");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (hub, channel, shutdown) = (Arc::clone(&hub), Arc::clone(&channel), shutdown.clone());
        tokio::spawn(async move {
            connection(stream, hub, Arc::clone(&channel), framer, shutdown).await;
            tracing::debug!(channel = %channel.config.name, %peer, "channel connection closed");
            drop(permit);
        });
    }
}

enum Out {
    Frame(Vec<u8>),
    /// Send this (if anything) and close.
    Close(Option<Vec<u8>>),
}

async fn connection(
    stream: TcpStream,
    hub: Arc<Hub>,
    channel: Arc<Channel>,
    framer: Framer,
    shutdown: CancellationToken,
) {
    let (mut read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Out>(256);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Frame(f) => {
                    if write.write_all(&f).await.is_err() {
                        break;
                    }
                }
                Out::Close(f) => {
                    if let Some(f) = f {
                        let _ = write.write_all(&f).await;
                    }
                    break;
                }
            }
        }
        let _ = write.shutdown().await;
    });
    let short = channel.config.connection == ConnectionMode::Short;
    let name = channel.config.name.clone();
    let error_frame = || {
        hub.refusal_document(&channel)
            .and_then(|d| framer.frame(&d).ok())
    };
    let mut buf = BytesMut::with_capacity(4096);
    let mut requests = 0usize;
    'read: loop {
        let n = tokio::select! {
            () = shutdown.cancelled() => break,
            n = read.read_buf(&mut buf) => n,
        };
        if matches!(n, Ok(0) | Err(_)) {
            break;
        }
        loop {
            if short && requests == 1 {
                // One request per short connection: anything more is ignored.
                buf.clear();
                break;
            }
            let payload = match framer.decode_frame(&mut buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(channel = %name, error = %e, "bad frame; answering 30 and closing");
                    let _ = tx.send(Out::Close(error_frame())).await;
                    break 'read;
                }
            };
            if payload.is_empty() {
                continue;
            }
            requests += 1;
            let Ok(permit) = Arc::clone(&channel.in_flight).acquire_owned().await else {
                break 'read;
            };
            let (hub, channel, tx) = (Arc::clone(&hub), Arc::clone(&channel), tx.clone());
            tokio::spawn(async move {
                let handled = hub.handle(&channel, &payload).await;
                drop(permit);
                let out = match handled {
                    Handled::Answer(doc) => match framer.frame(&doc) {
                        Ok(f) if short => Out::Close(Some(f)),
                        Ok(f) => Out::Frame(f),
                        Err(e) => {
                            tracing::error!(channel = %channel.config.name, error = %e, "answer too large for the framing");
                            Out::Close(None)
                        }
                    },
                    Handled::Refused { document, .. } => {
                        // The frame boundaries are intact: a long connection stays open.
                        match document.and_then(|d| framer.frame(&d).ok()) {
                            Some(f) if !short => Out::Frame(f),
                            f => Out::Close(f),
                        }
                    }
                    Handled::Unencodable(_) => Out::Close(None),
                };
                let _ = tx.send(out).await;
            });
        }
    }
    drop(tx);
    let _ = writer.await;
}
