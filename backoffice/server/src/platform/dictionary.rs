//! The data dictionary (code lists the console and services share, seed 001 §6.5.6 "system
//! business parameters") and the i18n entries (zh-CN and en texts that override the console's
//! shipped bundles; `GET /api/v2/i18n/{locale}` serves them without a session).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::rows::{by_id, paged};
use super::{code, text};
use crate::app::AppState;
use crate::audit::{self, Change};
use crate::auth::Ctx;
use crate::db::{Arg, Where, like_escape};
use crate::error::{ApiError, ApiResult};
use crate::http::{Body, QueryMap, ok, path_id};

/// The console's languages.
pub const LOCALES: [&str; 2] = ["zh-CN", "en"];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/platform/dicts", get(list_dicts).post(create_dict))
        .route(
            "/api/v2/platform/dicts/{id}",
            put(update_dict).delete(remove_dict),
        )
        .route("/api/v2/platform/i18n", get(list_i18n).post(create_i18n))
        .route(
            "/api/v2/platform/i18n/{id}",
            put(update_i18n).delete(remove_i18n),
        )
        .route("/api/v2/i18n/{locale}", get(bundle))
}

/// One dictionary item.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DictItem {
    id: String,
    dict_type: String,
    code: String,
    label: String,
    sort: i64,
}

fn dict_item(r: &AnyRow) -> Result<DictItem, sqlx::Error> {
    Ok(DictItem {
        id: r.try_get::<i64, _>("id")?.to_string(),
        dict_type: r.try_get("dict_type")?,
        code: r.try_get("code")?,
        label: r.try_get("label")?,
        sort: r.try_get("sort")?,
    })
}

async fn list_dicts(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:dict:query").await?;
    let mut w = Where::new();
    if let Some(t) = q.text("dictType")? {
        w.and("dict_type = ?", [Arg::Text(t)]);
    }
    let page = q.page()?;
    q.finish()?;
    paged(&ctx, page, "dict_items", w, "dict_type", dict_item).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DictInput {
    dict_type: String,
    code: String,
    label: String,
    #[serde(default)]
    sort: i64,
}

fn check_dict(b: DictInput) -> ApiResult<DictInput> {
    Ok(DictInput {
        dict_type: code("dictType", &b.dict_type, 64)?,
        code: code("code", &b.code, 64)?,
        label: text("label", &b.label, 1, 200)?,
        sort: b.sort.clamp(-100_000, 100_000),
    })
}

async fn load_dict(conn: &mut AnyConnection, id: i64) -> ApiResult<DictItem> {
    by_id(conn, "dict_items", id, "dictionary item", dict_item).await
}

async fn create_dict(ctx: Ctx, Body(b): Body<DictInput>) -> ApiResult<Response> {
    ctx.require("platform:dict:edit").await?;
    let b = check_dict(b)?;
    let id = ctx.app.ids.next();
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO dict_items (id, dict_type, code, label, sort) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(b.dict_type)
    .bind(b.code)
    .bind(b.label)
    .bind(b.sort)
    .execute(&mut *tx)
    .await?;
    let after = load_dict(&mut tx, id).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("dict.create", "dict", &after.id).after(&after),
    )
    .await?;
    ok(after)
}

async fn update_dict(
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body<DictInput>,
) -> ApiResult<Response> {
    ctx.require("platform:dict:edit").await?;
    let id = path_id(&id)?;
    let b = check_dict(b)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = load_dict(&mut tx, id).await?;
    sqlx::query(
        "UPDATE dict_items SET dict_type = $1, code = $2, label = $3, sort = $4 WHERE id = $5",
    )
    .bind(b.dict_type)
    .bind(b.code)
    .bind(b.label)
    .bind(b.sort)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let after = load_dict(&mut tx, id).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("dict.update", "dict", &after.id)
            .before(&before)
            .after(&after),
    )
    .await?;
    ok(after)
}

async fn remove_dict(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:dict:delete").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = load_dict(&mut tx, id).await?;
    sqlx::query("DELETE FROM dict_items WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("dict.delete", "dict", &before.id).before(&before),
    )
    .await?;
    ok(())
}

/// One i18n entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct I18nEntry {
    id: String,
    locale: String,
    key: String,
    text: String,
}

fn i18n_entry(r: &AnyRow) -> Result<I18nEntry, sqlx::Error> {
    Ok(I18nEntry {
        id: r.try_get::<i64, _>("id")?.to_string(),
        locale: r.try_get("locale")?,
        key: r.try_get("msg_key")?,
        text: r.try_get("text")?,
    })
}

async fn bundle(
    axum::extract::State(app): axum::extract::State<AppState>,
    Path(locale): Path<String>,
) -> ApiResult<Response> {
    if !LOCALES.contains(&locale.as_str()) {
        return Err(ApiError::not_found("locale"));
    }
    let rows = sqlx::query("SELECT msg_key, text FROM i18n_entries WHERE locale = $1")
        .bind(locale)
        .fetch_all(app.db.pool())
        .await?;
    let mut out = BTreeMap::new();
    for r in rows {
        out.insert(
            r.try_get::<String, _>("msg_key")?,
            r.try_get::<String, _>("text")?,
        );
    }
    ok(out)
}

async fn list_i18n(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:i18n:query").await?;
    let mut w = Where::new();
    if let Some(l) = q.one_of("locale", &LOCALES)? {
        w.and("locale = ?", [Arg::Text(l)]);
    }
    if let Some(k) = q.text("keyword")? {
        let p = format!("%{}%", like_escape(&k));
        w.and(
            "(msg_key LIKE ? ESCAPE '\\' OR text LIKE ? ESCAPE '\\')",
            [Arg::Text(p.clone()), Arg::Text(p)],
        );
    }
    let page = q.page()?;
    q.finish()?;
    paged(&ctx, page, "i18n_entries", w, "msg_key", i18n_entry).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct I18nInput {
    locale: String,
    key: String,
    text: String,
}

fn check_i18n(b: I18nInput) -> ApiResult<I18nInput> {
    if !LOCALES.contains(&b.locale.as_str()) {
        return Err(ApiError::invalid("locale must be zh-CN or en"));
    }
    Ok(I18nInput {
        locale: b.locale,
        key: code("key", &b.key, 128)?,
        text: text("text", &b.text, 1, 500)?,
    })
}

async fn load_i18n(conn: &mut AnyConnection, id: i64) -> ApiResult<I18nEntry> {
    by_id(conn, "i18n_entries", id, "i18n entry", i18n_entry).await
}

async fn create_i18n(ctx: Ctx, Body(b): Body<I18nInput>) -> ApiResult<Response> {
    ctx.require("platform:i18n:edit").await?;
    let b = check_i18n(b)?;
    let id = ctx.app.ids.next();
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query("INSERT INTO i18n_entries (id, locale, msg_key, text) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(b.locale)
        .bind(b.key)
        .bind(b.text)
        .execute(&mut *tx)
        .await?;
    let after = load_i18n(&mut tx, id).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("i18n.create", "i18n", &after.id).after(&after),
    )
    .await?;
    ok(after)
}

async fn update_i18n(
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body<I18nInput>,
) -> ApiResult<Response> {
    ctx.require("platform:i18n:edit").await?;
    let id = path_id(&id)?;
    let b = check_i18n(b)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = load_i18n(&mut tx, id).await?;
    sqlx::query("UPDATE i18n_entries SET locale = $1, msg_key = $2, text = $3 WHERE id = $4")
        .bind(b.locale)
        .bind(b.key)
        .bind(b.text)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let after = load_i18n(&mut tx, id).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("i18n.update", "i18n", &after.id)
            .before(&before)
            .after(&after),
    )
    .await?;
    ok(after)
}

async fn remove_i18n(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:i18n:delete").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = load_i18n(&mut tx, id).await?;
    sqlx::query("DELETE FROM i18n_entries WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("i18n.delete", "i18n", &before.id).before(&before),
    )
    .await?;
    ok(())
}
