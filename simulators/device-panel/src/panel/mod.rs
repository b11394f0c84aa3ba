//! `devsim panel`: one self-contained web page and a small JSON API over the simulator-control
//! API of running proxies.
//!
//! API (errors are `{"code": "...", "message": "..."}` with a 4xx/5xx status):
//! - `GET  /api/devices` — `{"devices": [view...]}`: name, endpoint, connected, error,
//!   deviceClass, capabilities, status, running commands;
//! - `GET  /api/devices/{name}` — one view;
//! - `GET  /api/devices/{name}/status`, `.../capabilities` — asked from the proxy now;
//! - `POST /api/devices/{name}/simulator` — a `SimulatorRequest` in proto3 JSON; answers the
//!   `SimulatorReply` (200 also when the device refused: see `result`);
//! - `GET  /api/devices/{name}/events` — Server-Sent Events: `device` (a view; on arrival and
//!   whenever the connection changes) and `notice` (one `Notice` of the proxy);
//! - `GET  /api/events` — the same for every device, `notice` data `{"device", "notice"}`.
//!
//! Nothing here logs request bodies or notices: PIN pad key presses are PIN digits.

mod monitor;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use openteller_proto::device::v1::CompletionCode;
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::actions;
use crate::cli::PanelArgs;
use crate::conn::{CallError, DeviceConn};
use monitor::{Device, Update};

/// Largest request body accepted.
const BODY_LIMIT: usize = 1 << 20;

/// The page: HTML with its CSS and JavaScript inlined, so it loads nothing from elsewhere.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("../../assets/index.html")
        .replace("/*STYLE*/", include_str!("../../assets/style.css"))
        .replace("/*SCRIPT*/", include_str!("../../assets/app.js"))
});

/// Shared by every handler.
struct App {
    devices: Vec<Arc<Device>>,
    by_name: HashMap<String, usize>,
    shutdown: watch::Receiver<bool>,
}

impl App {
    fn device(&self, name: &str) -> Result<&Arc<Device>, ApiError> {
        self.by_name
            .get(name)
            .map(|i| &self.devices[*i])
            .ok_or_else(|| {
                let known: Vec<&str> = self.devices.iter().map(|d| d.name.as_str()).collect();
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "UNKNOWN_DEVICE",
                    format!(
                        "no device named {name:?}; the panel knows {}",
                        known.join(", ")
                    ),
                )
            })
    }
}

/// A refused API request.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        if e.is_unreachable() {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "DEVICE_UNAVAILABLE",
                e.to_string(),
            )
        } else {
            Self::new(StatusCode::BAD_GATEWAY, "DEVICE_ERROR", e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// Serializes a proto message as the JSON body of a 200 answer.
fn proto_json<T: serde::Serialize>(value: &T) -> Result<Response, ApiError> {
    let body = serde_json::to_string(value).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "DEVICE_ERROR",
            format!("the device's answer cannot be shown as JSON: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

fn device_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(name)| name)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Serves the panel until Ctrl-C or SIGTERM.
pub(crate) async fn serve(args: PanelArgs, call_timeout: Duration) -> anyhow::Result<()> {
    let (stop, shutdown) = watch::channel(false);
    let mut devices = Vec::new();
    let mut by_name = HashMap::new();
    for d in args.devices {
        // `PanelArgs::check` refused duplicates already; a later one would shadow the first.
        by_name.entry(d.name.clone()).or_insert(devices.len());
        let conn = DeviceConn::new(d.endpoint, call_timeout)?;
        devices.push(Arc::new(Device::new(d.name, conn)));
    }
    let mut watchers = Vec::new();
    for d in &devices {
        watchers.push(tokio::spawn(Arc::clone(d).watch(shutdown.clone())));
    }
    let app = Arc::new(App {
        devices,
        by_name,
        shutdown,
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "the panel has no authentication; anyone who can reach this address drives the devices");
    }
    tracing::info!(%address, "panel started");
    // Scripts and tests read the address from this line (useful with --listen 127.0.0.1:0).
    println!("devsim panel listening on http://{address}/");

    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("stopping");
            // Ends the event streams too, so the graceful shutdown does not wait for them.
            let _ = stop.send(true);
        })
        .await?;
    for w in watchers {
        let _ = w.await;
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/devices", get(list_devices))
        .route("/api/devices/{name}", get(one_device))
        .route("/api/devices/{name}/status", get(device_status))
        .route("/api/devices/{name}/capabilities", get(device_capabilities))
        .route("/api/devices/{name}/simulator", post(simulate))
        .route("/api/devices/{name}/events", get(device_events))
        .route("/api/events", get(all_events))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such page or API")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this method is not allowed here",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
            ),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

async fn list_devices(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let views: Vec<_> = app.devices.iter().map(|d| d.view_json(None)).collect();
    Json(serde_json::json!({ "devices": views }))
}

async fn one_device(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = device_name(path)?;
    Ok(Json(app.device(&name)?.view_json(None)))
}

async fn device_status(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = device_name(path)?;
    let status = app.device(&name)?.conn.status().await?;
    proto_json(&status)
}

async fn device_capabilities(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = device_name(path)?;
    let capabilities = app.device(&name)?.conn.capabilities().await?;
    proto_json(&capabilities)
}

async fn simulate(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = device_name(path)?;
    let device = app.device(&name)?;
    // Requiring JSON also keeps other web sites from posting here (it forces a CORS preflight,
    // which the panel does not grant).
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the SimulatorRequest with Content-Type: application/json",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the body exceeds {BODY_LIMIT} bytes"),
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })?;
    let request = actions::parse_request(&body).map_err(ApiError::bad_request)?;
    let label = actions::action_label(&request);
    let reply = device.conn.simulate(request).await.inspect_err(|e| {
        tracing::warn!(device = %name, action = label, error = %e, "simulator action failed");
    })?;
    let code = reply
        .result
        .as_ref()
        .and_then(|c| CompletionCode::try_from(c.code).ok())
        .map_or("UNKNOWN", |c| c.as_str_name());
    tracing::info!(device = %name, action = label, result = code, "simulator action");
    proto_json(&reply)
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// The updates of one device as SSE events, ending at shutdown.
fn event_stream(device: Arc<Device>, tagged: bool, shutdown: watch::Receiver<bool>) -> EventStream {
    let (first, receiver) = device.attach();
    let lag_source = Arc::clone(&device);
    let live = BroadcastStream::new(receiver).map(move |item| match item {
        Ok(update) => update,
        Err(BroadcastStreamRecvError::Lagged(n)) => lag_source.lagged(n),
    });
    let name = serde_json::Value::String(device.name.clone()).to_string();
    let events = futures::stream::iter(first).chain(live).map(move |update| {
        Ok(match update {
            Update::Device(view) => Event::default().event("device").data(&*view),
            Update::Notice(notice) if tagged => Event::default()
                .event("notice")
                .data(format!(r#"{{"device":{name},"notice":{notice}}}"#)),
            Update::Notice(notice) => Event::default().event("notice").data(&*notice),
        })
    });
    let mut stop = shutdown;
    Box::pin(events.take_until(async move {
        let _ = stop.wait_for(|s| *s).await;
    }))
}

async fn device_events(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = device_name(path)?;
    let device = Arc::clone(app.device(&name)?);
    Ok(Sse::new(event_stream(device, false, app.shutdown.clone()))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn all_events(State(app): State<Arc<App>>) -> Response {
    let streams = app
        .devices
        .iter()
        .map(|d| event_stream(Arc::clone(d), true, app.shutdown.clone()));
    let merged: EventStream = Box::pin(futures::stream::select_all(streams));
    Sse::new(merged)
        .keep_alive(KeepAlive::default())
        .into_response()
}
