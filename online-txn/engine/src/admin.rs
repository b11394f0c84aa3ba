//! The admin HTTP API (JSON, under `/api/v2/`): repair plans, their runs and attempts, what
//! needs repair, and journal rows (masked). See `docs/online-txn.md`, "Repair plans".
//!
//! Every answer is the envelope of seed 001 §6.3.1: `{"code", "message", "data"}` with
//! `code` `"OK"` on success and a stable error code otherwise (`INVALID_ARGUMENT`,
//! `NOT_FOUND`, `CONFLICT`, `FAILED_PRECONDITION`, `METHOD_NOT_ALLOWED`,
//! `PAYLOAD_TOO_LARGE`, `UNAVAILABLE`, `INTERNAL`); lists are pages
//! `{pageNo, pageSize, totalCount, totalPages, rows}`. A refused request changes nothing.
//!
//! **No authentication yet**: the backoffice gateway is to front it. It therefore binds the
//! loopback interface unless `allow_remote = true` is configured.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::repair::{AttemptFilter, PageRequest, PlanInput, Repair, RepairError, RunOptions};

/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;

/// The `[admin]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address (default `127.0.0.1:5801`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Allow a non-loopback listen address. The API has no authentication of its own: only
    /// set this behind a gateway that authenticates and authorizes.
    #[serde(default)]
    pub allow_remote: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5801))
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_listen(),
            allow_remote: false,
        }
    }
}

impl AdminConfig {
    /// Refuses a non-loopback address unless `allow_remote` is set.
    pub fn validate(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && !self.allow_remote {
            return Err(format!(
                "admin.listen = {}: the admin API has no authentication; bind a loopback address \
                 or set admin.allow_remote = true behind an authenticating gateway",
                self.listen
            ));
        }
        Ok(())
    }
}

/// Binds `config.listen` and serves the API until `shutdown`; returns the bound address.
pub async fn start(
    config: &AdminConfig,
    repair: Arc<Repair>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router(repair))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    tracing::info!(%addr, "admin API listening (no authentication: keep it behind the gateway)");
    Ok(addr)
}

/// The API's routes.
pub fn router(repair: Arc<Repair>) -> Router {
    Router::new()
        .route("/api/v2/repair/plans", get(list_plans).post(create_plan))
        .route(
            "/api/v2/repair/plans/{id}",
            get(get_plan).put(update_plan).delete(delete_plan),
        )
        .route("/api/v2/repair/plans/{id}/run", post(run_plan))
        .route("/api/v2/repair/attempts", get(list_attempts))
        .route("/api/v2/repair/items", get(list_items))
        .route("/api/v2/journal/{id}", get(get_journal))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(repair)
}

/// The success envelope.
#[derive(Serialize)]
struct Envelope<T: Serialize> {
    code: &'static str,
    message: &'static str,
    data: T,
}

fn ok<T: Serialize>(status: StatusCode, data: T) -> Response {
    (
        status,
        axum::Json(Envelope {
            code: "OK",
            message: "success",
            data,
        }),
    )
        .into_response()
}

/// An error answer: status, stable code, message, and the offending field if any.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let data = self.field.map(|f| serde_json::json!({ "field": f }));
        (
            self.status,
            axum::Json(serde_json::json!({
                "code": self.code,
                "message": self.message,
                "data": data,
            })),
        )
            .into_response()
    }
}

impl From<RepairError> for ApiError {
    fn from(e: RepairError) -> ApiError {
        let status = match &e {
            RepairError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            RepairError::NotFound(_) => StatusCode::NOT_FOUND,
            RepairError::Conflict(_) | RepairError::FailedPrecondition(_) => StatusCode::CONFLICT,
            RepairError::Journal(_) if e.code() == "UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
            RepairError::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            RepairError::Journal(inner) => {
                tracing::error!(error = %inner, "admin API: journal error");
                "the journal database failed; see the engine log".to_owned()
            }
            other => other.to_string(),
        };
        ApiError {
            status,
            code: e.code(),
            message,
            field: match &e {
                RepairError::InvalidArgument { field, .. } => Some(field),
                _ => None,
            },
        }
    }
}

type ApiResult = Result<Response, ApiError>;

fn path_id(p: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    match p {
        Ok(Path(id)) if id > 0 => Ok(id),
        _ => Err(ApiError {
            field: Some("id"),
            ..ApiError::invalid("the id in the path must be a positive integer")
        }),
    }
}

/// A JSON body: `application/json`, at most [`MAX_BODY`] bytes, unknown fields refused.
/// `empty` is used for an empty body when the endpoint allows one.
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    empty: Option<T>,
) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("the body must be at most {MAX_BODY} bytes"),
            )
        } else {
            ApiError::invalid(format!("cannot read the body: {}", r.body_text()))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace)
        && let Some(v) = empty
    {
        return Ok(v);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::invalid(
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("bad JSON body: {e}")))
}

/// Paging (and filter) query parameters; unknown ones are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListQuery {
    #[serde(default)]
    page_no: Option<String>,
    #[serde(default)]
    page_size: Option<String>,
    #[serde(default)]
    plan_id: Option<String>,
    #[serde(default)]
    journal_id: Option<String>,
}

fn query(q: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|r| {
        ApiError::invalid(format!(
            "bad query: {}",
            r.body_text()
                .trim_start_matches("Failed to deserialize query string: ")
        ))
    })
}

fn number(v: &Option<String>, field: &'static str) -> Result<Option<i64>, ApiError> {
    v.as_deref()
        .map(|s| {
            s.parse::<i64>().map_err(|_| ApiError {
                field: Some(field),
                ..ApiError::invalid(format!("{field} must be an integer, got {s:?}"))
            })
        })
        .transpose()
}

fn page(q: &ListQuery) -> Result<PageRequest, ApiError> {
    Ok(PageRequest::new(
        number(&q.page_no, "pageNo")?,
        number(&q.page_size, "pageSize")?,
    )?)
}

fn only_paging(q: &ListQuery) -> Result<(), ApiError> {
    match (&q.plan_id, &q.journal_id) {
        (None, None) => Ok(()),
        _ => Err(ApiError::invalid(
            "this list takes only pageNo and pageSize",
        )),
    }
}

fn positive(v: Option<i64>, field: &'static str) -> Result<Option<i64>, ApiError> {
    match v {
        Some(n) if n <= 0 => Err(ApiError {
            field: Some(field),
            ..ApiError::invalid(format!("{field} must be a positive integer, got {n}"))
        }),
        v => Ok(v),
    }
}

async fn list_plans(
    State(repair): State<Arc<Repair>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    only_paging(&q)?;
    Ok(ok(StatusCode::OK, repair.plans(page(&q)?).await?))
}

async fn create_plan(
    State(repair): State<Arc<Repair>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let input: PlanInput = json_body(&headers, body, None)?;
    Ok(ok(StatusCode::CREATED, repair.create_plan(input).await?))
}

async fn get_plan(
    State(repair): State<Arc<Repair>>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    Ok(ok(StatusCode::OK, repair.plan(path_id(id)?).await?))
}

async fn update_plan(
    State(repair): State<Arc<Repair>>,
    id: Result<Path<i64>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let input: PlanInput = json_body(&headers, body, None)?;
    Ok(ok(StatusCode::OK, repair.update_plan(id, input).await?))
}

async fn delete_plan(
    State(repair): State<Arc<Repair>>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    repair.delete_plan(id).await?;
    Ok(ok(StatusCode::OK, serde_json::json!({ "id": id })))
}

async fn run_plan(
    State(repair): State<Arc<Repair>>,
    id: Result<Path<i64>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = path_id(id)?;
    let options: RunOptions = json_body(&headers, body, Some(RunOptions::default()))?;
    Ok(ok(StatusCode::OK, repair.run_plan(id, options).await?))
}

async fn list_attempts(
    State(repair): State<Arc<Repair>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let filter = AttemptFilter {
        plan_id: positive(number(&q.plan_id, "planId")?, "planId")?,
        journal_id: positive(number(&q.journal_id, "journalId")?, "journalId")?,
    };
    Ok(ok(
        StatusCode::OK,
        repair.attempts(filter, page(&q)?).await?,
    ))
}

async fn list_items(
    State(repair): State<Arc<Repair>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    only_paging(&q)?;
    Ok(ok(StatusCode::OK, repair.items(page(&q)?).await?))
}

async fn get_journal(
    State(repair): State<Arc<Repair>>,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult {
    Ok(ok(
        StatusCode::OK,
        repair.journal_entry(path_id(id)?).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_unless_allowed() {
        assert!(AdminConfig::default().validate().is_ok());
        let mut c = AdminConfig {
            listen: "0.0.0.0:5801".parse().unwrap(),
            allow_remote: false,
        };
        assert!(c.validate().unwrap_err().contains("no authentication"));
        c.allow_remote = true;
        assert!(c.validate().is_ok());
        assert!(
            AdminConfig {
                listen: "[::1]:0".parse().unwrap(),
                allow_remote: false
            }
            .validate()
            .is_ok()
        );
    }
}
