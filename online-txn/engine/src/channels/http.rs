//! HTTP channels (`http_json`, `http_xml`): `POST {path}` with the request document as the
//! body; the answer is the response document (200), whatever the response code inside.
//!
//! | status | when | body |
//! |---|---|---|
//! | 200 | processed (approved or declined: see the response code in the document) | response document |
//! | 400 | the body cannot be decoded or mapped, or lacks what a request needs | `{code, message}` |
//! | 401 | the shared-secret header is missing or wrong (`auth`) | `{code: "UNAUTHORIZED"}` |
//! | 403 | the peer is not in `allow` | `{code: "FORBIDDEN"}` |
//! | 404 / 405 | another path / method | `NOT_FOUND` / `METHOD_NOT_ALLOWED` |
//! | 413 | the body is larger than `max_message_bytes` | `TOO_LARGE` |
//! | 500 | the answer cannot be encoded in the channel's format (a configuration problem) | `RESPONSE_ENCODING` |
//! | 503 | `max_in_flight` requests of the channel are being processed | `OVERLOADED` |
//!
//! On XML channels the error body is `<Error><Code>…</Code><Message>…</Message></Error>`.
//! A request keeps being processed when its client goes away (it runs in its own task), so
//! nothing is left half done.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Channel, ChannelKind, ConnectionMode, Handled, Hub};

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    channel: Arc<Channel>,
}

/// Serves an HTTP channel on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    channel: Arc<Channel>,
    shutdown: CancellationToken,
) {
    let name = channel.config.name.clone();
    let path = channel.config.path.clone();
    let state = AppState { hub, channel };
    let fallback_state = state.clone();
    let app = Router::new()
        .route(
            &path,
            axum::routing::post(handle).fallback({
                let s = state.clone();
                move || async move {
                    error(
                        &s.channel,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "METHOD_NOT_ALLOWED",
                        "use POST",
                    )
                }
            }),
        )
        .fallback(move || async move {
            error(
                &fallback_state.channel,
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such path",
            )
        })
        .with_state(state);
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await;
    if let Err(e) = result {
        tracing::error!(channel = %name, error = %e, "HTTP channel stopped");
    }
}

fn content_type(channel: &Channel) -> &'static str {
    if channel.config.kind == ChannelKind::HttpXml {
        "application/xml; charset=utf-8"
    } else {
        "application/json"
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn finish(channel: &Channel, mut r: Response) -> Response {
    if channel.config.connection == ConnectionMode::Short {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

fn error(channel: &Channel, status: StatusCode, code: &str, message: &str) -> Response {
    let body = if channel.config.kind == ChannelKind::HttpXml {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
            xml_escape(code),
            xml_escape(message)
        )
    } else {
        serde_json::json!({ "code": code, "message": message }).to_string()
    };
    finish(
        channel,
        (
            status,
            [(header::CONTENT_TYPE, content_type(channel))],
            body,
        )
            .into_response(),
    )
}

async fn handle(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ch = &s.channel;
    if !ch.allows(peer.ip()) {
        tracing::warn!(channel = %ch.config.name, %peer, "peer not allowed");
        return error(
            ch,
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this address may not use the channel",
        );
    }
    if let Some(h) = ch.auth_header()
        && !ch.authorized(headers.get(h).map(HeaderValue::as_bytes))
    {
        tracing::warn!(channel = %ch.config.name, %peer, "missing or wrong shared secret");
        return error(
            ch,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or wrong credentials",
        );
    }
    let limit = ch.config.max_message_bytes;
    let too_large = || {
        error(
            ch,
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOO_LARGE",
            &format!("the body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let Ok(permit) = Arc::clone(&ch.in_flight).try_acquire_owned() else {
        return error(
            ch,
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            "too many requests in flight on this channel; retry later",
        );
    };
    // Its own task: a client that goes away must not cut a transaction in half.
    let (hub, channel) = (Arc::clone(&s.hub), Arc::clone(ch));
    let task = tokio::spawn(async move {
        let handled = hub.handle(&channel, &bytes).await;
        drop(permit);
        handled
    });
    match task.await {
        Ok(Handled::Answer(doc)) => finish(
            ch,
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, content_type(ch))],
                doc,
            )
                .into_response(),
        ),
        Ok(Handled::Refused { code, message, .. }) => {
            error(ch, StatusCode::BAD_REQUEST, &code, &message)
        }
        Ok(Handled::Unencodable(e)) => error(
            ch,
            StatusCode::INTERNAL_SERVER_ERROR,
            "RESPONSE_ENCODING",
            &format!("the answer cannot be encoded: {e}"),
        ),
        Err(e) => {
            tracing::error!(channel = %ch.config.name, error = %e, "channel request task failed");
            error(
                ch,
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            )
        }
    }
}
