//! The login log and the access-authorisation log (seed 001 §6.5.8): who signed in when, from
//! where, with what outcome; and every permission check with its result.

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::paged;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::db::{Arg, Where};
use crate::error::ApiResult;
use crate::http::QueryMap;
use crate::ids::rfc3339;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/platform/login-log", get(logins))
        .route("/api/v2/platform/access-log", get(accesses))
}

/// A login attempt.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    id: String,
    at: String,
    username: String,
    address: String,
    outcome: String,
}

/// A permission check.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    id: String,
    at: String,
    username: String,
    method: String,
    path: String,
    permission: String,
    allowed: bool,
}

fn login(r: &AnyRow) -> Result<Login, sqlx::Error> {
    Ok(Login {
        id: r.try_get::<i64, _>("id")?.to_string(),
        at: rfc3339(r.try_get("at_ms")?),
        username: r.try_get("username")?,
        address: r.try_get("address")?,
        outcome: r.try_get("outcome")?,
    })
}

fn access(r: &AnyRow) -> Result<Access, sqlx::Error> {
    Ok(Access {
        id: r.try_get::<i64, _>("id")?.to_string(),
        at: rfc3339(r.try_get("at_ms")?),
        username: r.try_get("username")?,
        method: r.try_get("method")?,
        path: r.try_get("path")?,
        permission: r.try_get("permission")?,
        allowed: r.try_get::<i64, _>("allowed")? == 1,
    })
}

fn time_range(q: &mut QueryMap, w: &mut Where) -> ApiResult<()> {
    if let Some(v) = q.time("from")? {
        w.and("at_ms >= ?", [Arg::I64(v)]);
    }
    if let Some(v) = q.time("to")? {
        w.and("at_ms < ?", [Arg::I64(v)]);
    }
    Ok(())
}

async fn logins(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:loginlog:query").await?;
    let mut w = Where::new();
    if let Some(u) = q.text("username")? {
        w.and("username = ?", [Arg::Text(u)]);
    }
    if let Some(o) = q.one_of(
        "outcome",
        &[
            "success",
            "bad_credentials",
            "locked",
            "frozen",
            "disabled",
            "blacklisted",
        ],
    )? {
        w.and("outcome = ?", [Arg::Text(o)]);
    }
    time_range(&mut q, &mut w)?;
    let page = q.page()?;
    q.finish()?;
    paged(&ctx, page, "login_log", w, "at_ms", login).await
}

async fn accesses(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:accesslog:query").await?;
    let mut w = Where::new();
    if let Some(u) = q.text("username")? {
        w.and("username = ?", [Arg::Text(u)]);
    }
    if let Some(a) = q.flag("allowed")? {
        w.and("allowed = ?", [Arg::I64(i64::from(a))]);
    }
    time_range(&mut q, &mut w)?;
    let page = q.page()?;
    q.finish()?;
    paged(&ctx, page, "access_log", w, "at_ms", access).await
}
