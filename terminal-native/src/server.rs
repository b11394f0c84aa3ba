//! The headless host: the business package as static files at `/` and the bridge as a
//! WebSocket at `/bridge`, on a loopback address.
//!
//! Static files come from `tower_http::services::ServeDir`: no directory listing (a directory
//! serves its `index.html` or 404), and a path that would leave the package directory
//! (`..`, encoded or not, absolute or Windows-style components) is refused with 404 — it never
//! reaches the file system.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tower_http::services::ServeDir;

use crate::Terminal;
use crate::bridge::Bridge;

/// Largest message a page may send.
const MAX_MESSAGE: usize = 64 * 1024;

/// The router: `/bridge` and the static files.
pub fn router(terminal: Arc<Terminal>) -> Router {
    let files = ServeDir::new(terminal.settings().business_package.clone())
        .append_index_html_on_directories(true);
    Router::new()
        .route("/bridge", get(upgrade))
        .fallback_service(files)
        .with_state(terminal)
}

async fn upgrade(State(terminal): State<Arc<Terminal>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve_page(terminal, socket))
}

async fn serve_page(terminal: Arc<Terminal>, mut socket: WebSocket) {
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let bridge = Bridge::new(terminal, out_tx);
    let mut events = bridge.events();
    tracing::debug!(?bridge, "page connected");
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => bridge.handle(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    let msg = json!({"id": null, "error": {"code": "INVALID_REQUEST",
                        "message": "the bridge speaks JSON text messages"}});
                    if socket.send(Message::text(msg.to_string())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            Some(msg) = out_rx.recv() => {
                if socket.send(Message::text(msg)).await.is_err() {
                    break;
                }
            }
            ev = events.recv() => {
                let msg = match ev {
                    Ok(m) => m,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        json!({"event": "bridge.lagged", "data": {"missed": n}}).to_string()
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if socket.send(Message::text(msg)).await.is_err() {
                    break;
                }
            }
        }
    }
    // Nobody reads the page's queue any more: replies of tasks still running are dropped.
    drop(out_rx);
    bridge.close().await;
    tracing::debug!(?bridge, "page disconnected");
}
