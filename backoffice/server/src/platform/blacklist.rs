//! The blacklist (seed 001 §6.6.7): user names and client addresses refused at login and on
//! every request.

use std::net::IpAddr;

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::{by_id, paged};
use super::text;
use crate::app::AppState;
use crate::audit::{self, Change};
use crate::auth::Ctx;
use crate::db::{Arg, Where};
use crate::error::{ApiError, ApiResult};
use crate::http::{Body, QueryMap, ok, path_id};
use crate::ids::{now_ms, rfc3339};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/platform/blacklist", get(list).post(create))
        .route("/api/v2/platform/blacklist/{id}", delete(remove))
}

/// One blacklist entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    id: String,
    kind: String,
    value: String,
    reason: String,
    created_at: String,
}

fn entry(r: &AnyRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        id: r.try_get::<i64, _>("id")?.to_string(),
        kind: r.try_get("kind")?,
        value: r.try_get("value")?,
        reason: r.try_get("reason")?,
        created_at: rfc3339(r.try_get("created_ms")?),
    })
}

async fn list(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:blacklist:query").await?;
    let mut w = Where::new();
    if let Some(k) = q.one_of("kind", &["user", "address"])? {
        w.and("kind = ?", [Arg::Text(k)]);
    }
    let page = q.page()?;
    q.finish()?;
    paged(&ctx, page, "blacklist", w, "created_ms", entry).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    kind: String,
    value: String,
    #[serde(default)]
    reason: String,
}

async fn create(ctx: Ctx, Body(b): Body<Input>) -> ApiResult<Response> {
    ctx.require("platform:blacklist:edit").await?;
    let value = match b.kind.as_str() {
        "address" => b
            .value
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| ApiError::invalid("value must be an IP address"))?
            .to_string(),
        "user" => text("value", &b.value, 1, 64)?,
        _ => return Err(ApiError::invalid("kind must be user or address")),
    };
    if b.kind == "user" && value == ctx.principal.username {
        return Err(ApiError::precondition("you cannot blacklist yourself"));
    }
    let reason = text("reason", &b.reason, 0, 200)?;
    let id = ctx.app.ids.next();
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO blacklist (id, kind, value, reason, created_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(b.kind)
    .bind(value)
    .bind(reason)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    let after = by_id(&mut tx, "blacklist", id, "blacklist entry", entry).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("blacklist.create", "blacklist", &after.id).after(&after),
    )
    .await?;
    ok(after)
}

async fn remove(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:blacklist:delete").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = by_id(&mut tx, "blacklist", id, "blacklist entry", entry).await?;
    sqlx::query("DELETE FROM blacklist WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("blacklist.delete", "blacklist", &before.id).before(&before),
    )
    .await?;
    ok(())
}
