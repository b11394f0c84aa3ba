//! The local control API: HTTP JSON on loopback TCP or a Unix socket, every answer in the
//! project's `{code, message, data}` envelope (seed 001 §6.3.1). It has no authentication, which
//! is why the configuration refuses a non-loopback address; it must never be exposed further.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::host_commands::HostCommand;
use crate::supervisor::{KeeperHandle, RequestError};

/// The router of the control API.
pub fn router(keeper: KeeperHandle) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/processes", get(processes))
        .route("/api/v1/processes/{name}", get(process))
        .route("/api/v1/processes/{name}/restart", post(restart))
        .route("/api/v1/processes/{name}/heartbeat", post(heartbeat))
        .route("/api/v1/service", get(service))
        .route("/api/v1/service/pause", post(pause))
        .route("/api/v1/service/resume", post(resume))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/environment", get(environment))
        .route("/api/v1/host-commands", post(host_command))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed on this endpoint",
            )
        })
        .with_state(keeper)
}

fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    (
        status,
        Json(json!({"code": "OK", "message": "ok", "data": data})),
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (
        status,
        Json(json!({"code": code, "message": message, "data": null})),
    )
        .into_response()
}

/// An optional JSON body: empty means the defaults (so `curl -X POST` works without `-d`).
fn optional_json<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            e.to_string(),
        ))
    })
}

fn request_error(e: RequestError) -> Response {
    match e {
        RequestError::UnknownProcess(_) => error(StatusCode::NOT_FOUND, "NOT_FOUND", e.to_string()),
        RequestError::ShuttingDown => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            e.to_string(),
        ),
    }
}

async fn status(State(k): State<KeeperHandle>) -> Response {
    ok(StatusCode::OK, k.status())
}

async fn processes(State(k): State<KeeperHandle>) -> Response {
    ok(StatusCode::OK, k.status().processes)
}

async fn process(State(k): State<KeeperHandle>, Path(name): Path<String>) -> Response {
    match k.process(&name) {
        Some(p) => ok(StatusCode::OK, p),
        None => request_error(RequestError::UnknownProcess(name)),
    }
}

async fn restart(State(k): State<KeeperHandle>, Path(name): Path<String>) -> Response {
    match k.restart(&name) {
        Ok(()) => ok(
            StatusCode::ACCEPTED,
            json!({"name": name, "restart": "requested"}),
        ),
        Err(e) => request_error(e),
    }
}

/// Body of a heartbeat; empty or `{}` is fine.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    /// terminal-native: no customer session in progress (host commands may run).
    idle: Option<bool>,
}

async fn heartbeat(
    State(k): State<KeeperHandle>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let body: HeartbeatBody = match optional_json(&body) {
        Ok(b) => b,
        Err(e) => return *e,
    };
    match k.heartbeat(&name, body.idle) {
        Ok(state) => ok(StatusCode::OK, json!({"name": name, "state": state})),
        Err(e) => request_error(e),
    }
}

async fn service(State(k): State<KeeperHandle>) -> Response {
    ok(StatusCode::OK, k.service())
}

/// Body of a pause; optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    reason: Option<String>,
}

async fn pause(State(k): State<KeeperHandle>, body: Bytes) -> Response {
    let body: PauseBody = match optional_json(&body) {
        Ok(b) => b,
        Err(e) => return *e,
    };
    ok(StatusCode::OK, k.pause(body.reason, "operator"))
}

async fn resume(State(k): State<KeeperHandle>) -> Response {
    ok(StatusCode::OK, k.resume())
}

async fn alarms(State(k): State<KeeperHandle>) -> Response {
    ok(StatusCode::OK, k.alarms().list())
}

async fn environment(State(k): State<KeeperHandle>) -> Response {
    ok(StatusCode::OK, k.environment())
}

async fn host_command(body: Result<Json<HostCommand>, JsonRejection>) -> Response {
    match body {
        Ok(Json(command)) => error(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            format!(
                "host command {:?} has no executor in this keeper yet",
                command.kind()
            ),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", e.body_text()),
    }
}
