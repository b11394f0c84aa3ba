//! The terminal front channel: a TCP server with length-prefix framing. Each connection may
//! carry many requests, also pipelined; each request is handled in its own task (bounded by
//! the in-flight limit, which is the back-pressure) and answered as soon as it is done.

use std::sync::Arc;

use bytes::BytesMut;
use openteller_codec::framing::Framer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

/// Serves terminals on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    framer: Framer,
    max_connections: usize,
    max_in_flight: usize,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(max_connections));
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            p = Arc::clone(&connections).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let engine = Arc::clone(&engine);
        let in_flight = Arc::clone(&in_flight);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(stream, engine, framer, in_flight, shutdown).await;
            tracing::debug!(%peer, "terminal connection closed");
            drop(permit);
        });
    }
}

async fn connection(
    stream: TcpStream,
    engine: Arc<Engine>,
    framer: Framer,
    in_flight: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let (mut read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Option<Vec<u8>>>(256);
    let writer = tokio::spawn(async move {
        while let Some(Some(frame)) = rx.recv().await {
            if write.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let mut buf = BytesMut::with_capacity(4096);
    'read: loop {
        let n = tokio::select! {
            () = shutdown.cancelled() => break,
            n = read.read_buf(&mut buf) => n,
        };
        if matches!(n, Ok(0) | Err(_)) {
            break;
        }
        loop {
            let payload = match framer.decode_frame(&mut buf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "bad frame from a terminal; closing the connection");
                    break 'read;
                }
            };
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                break 'read;
            };
            let engine = Arc::clone(&engine);
            let tx = tx.clone();
            tokio::spawn(async move {
                let answer = engine.handle(&payload).await;
                drop(permit);
                let frame = answer.and_then(|a| framer.frame(&a).ok());
                // `None` asks the writer to close: the request could not be answered.
                let _ = tx.send(frame).await;
            });
        }
    }
    drop(tx);
    let _ = writer.await;
}
