//! The control API: HTTP JSON on its own port (loopback by default, no authentication).
//!
//! Errors are `{"code": "...", "message": "..."}` with a stable code:
//! `BAD_JSON` (400), `INVALID_FAULTS` (400), `BAD_QUERY` (400), `UNKNOWN_ACCOUNT` (404),
//! `NOT_FOUND` (404), `METHOD_NOT_ALLOWED` (405).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;

use crate::clock;
use crate::faults::{Faults, FaultsUpdate};
use crate::host::Host;
use crate::state::{AccountView, JournalEntry, Summary};

/// Most transactions one `GET /state/transactions` returns.
pub(crate) const MAX_PAGE: usize = 100_000;
/// Default page size of `GET /state/transactions`.
pub(crate) const DEFAULT_PAGE: usize = 10_000;

/// A control API error.
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

type Shared = State<Arc<Host>>;

/// The router.
pub(crate) fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/disconnect", post(disconnect))
        .route("/accounts/{pan}/unlock", post(unlock))
        .route("/state/accounts", get(accounts))
        .route("/state/accounts/{pan}", get(account))
        .route("/state/transactions", get(transactions))
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
        .with_state(host)
}

async fn healthz(State(host): Shared) -> Json<serde_json::Value> {
    let accounts = host.lock().accounts.len();
    Json(json!({
        "status": "ok",
        "connections": host.connections.load(std::sync::atomic::Ordering::Relaxed),
        "accounts": accounts,
    }))
}

async fn get_faults(State(host): Shared) -> Json<Faults> {
    Json(host.faults())
}

async fn set_faults(State(host): Shared, body: Bytes) -> Result<Json<Faults>, ApiError> {
    let update: FaultsUpdate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "BAD_JSON", e.to_string()))?;
    let faults = host
        .faults()
        .updated(&update)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_FAULTS", e.0))?;
    host.set_faults(faults);
    tracing::info!(?faults, "faults set");
    Ok(Json(faults))
}

async fn clear_faults(State(host): Shared) -> Json<Faults> {
    host.set_faults(Faults::default());
    tracing::info!("faults cleared");
    Json(Faults::default())
}

async fn disconnect(State(host): Shared) -> Json<serde_json::Value> {
    let n = host.disconnect_all();
    tracing::info!(connections = n, "disconnect requested");
    Json(json!({ "closed": n }))
}

fn unknown(pan: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UNKNOWN_ACCOUNT",
        format!("no account {}", crate::wire::mask_pan(pan)),
    )
}

async fn unlock(
    State(host): Shared,
    Path(pan): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    let today = clock::day(clock::now_ms());
    let mut st = host.lock();
    let acct = st.accounts.get_mut(&pan).ok_or_else(|| unknown(&pan))?;
    acct.locked = false;
    acct.pin_tries = 0;
    tracing::info!(pan = %crate::wire::mask_pan(&pan), "account unlocked");
    Ok(Json(acct.view(today)))
}

async fn account(
    State(host): Shared,
    Path(pan): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    let today = clock::day(clock::now_ms());
    let st = host.lock();
    let acct = st.accounts.get(&pan).ok_or_else(|| unknown(&pan))?;
    Ok(Json(acct.view(today)))
}

#[derive(Serialize)]
struct AccountsTotals {
    accounts: usize,
    ledger: i64,
    available: i64,
}

#[derive(Serialize)]
struct AccountsPage {
    accounts: Vec<AccountView>,
    totals: AccountsTotals,
}

async fn accounts(State(host): Shared) -> Json<AccountsPage> {
    let today = clock::day(clock::now_ms());
    let mut list: Vec<(String, AccountView)> = {
        let st = host.lock();
        st.accounts
            .values()
            .map(|a| (a.pan.clone(), a.view(today)))
            .collect()
    };
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let totals = AccountsTotals {
        accounts: list.len(),
        ledger: list.iter().map(|(_, v)| v.ledger).sum(),
        available: list.iter().map(|(_, v)| v.available).sum(),
    };
    Json(AccountsPage {
        accounts: list.into_iter().map(|(_, v)| v).collect(),
        totals,
    })
}

#[derive(Serialize)]
struct TransactionsPage {
    transactions: Vec<JournalEntry>,
    next: u64,
    summary: Summary,
}

async fn transactions(
    State(host): Shared,
    RawQuery(query): RawQuery,
) -> Result<Json<TransactionsPage>, ApiError> {
    let mut since = 1u64;
    let mut limit = DEFAULT_PAGE;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_QUERY",
                format!("{k} must be a non-negative integer, got {v:?}"),
            )
        };
        match k {
            "since" => since = v.parse().map_err(|_| bad())?,
            "limit" => {
                limit = v.parse().map_err(|_| bad())?;
                if limit == 0 || limit > MAX_PAGE {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "BAD_QUERY",
                        format!("limit must be 1 to {MAX_PAGE}"),
                    ));
                }
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BAD_QUERY",
                    format!("unknown parameter {other:?} (since, limit)"),
                ));
            }
        }
    }
    let st = host.lock();
    let (transactions, next) = st.transactions(since, limit);
    Ok(Json(TransactionsPage {
        transactions,
        next,
        summary: st.summary.clone(),
    }))
}
