//! The menu tree (seed 001 §6.5.6). Built-in entries come from the catalogue and cannot be
//! deleted; administrators may add directories and pages (for example links to other systems).

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::rows::by_id;
use super::{code, parse_id, text};
use crate::app::AppState;
use crate::audit::{self, Change};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::http::{Body, ok, path_id};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/platform/menus", get(list).post(create))
        .route("/api/v2/platform/menus/{id}", put(update).delete(remove))
}

/// A menu entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MenuNode {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    code: String,
    name_key: String,
    path: String,
    kind: String,
    sort: i64,
    builtin: bool,
    children: Vec<MenuNode>,
}

fn node(r: &AnyRow) -> Result<MenuNode, sqlx::Error> {
    Ok(MenuNode {
        id: r.try_get::<i64, _>("id")?.to_string(),
        parent_id: r
            .try_get::<Option<i64>, _>("parent_id")?
            .map(|v| v.to_string()),
        code: r.try_get("code")?,
        name_key: r.try_get("name_key")?,
        path: r.try_get("path")?,
        kind: r.try_get("kind")?,
        sort: r.try_get("sort")?,
        builtin: r.try_get::<i64, _>("builtin")? == 1,
        children: Vec::new(),
    })
}

/// Every menu, as a tree, keeping only the pages `visible` accepts and the directories that
/// keep a child.
pub(crate) async fn tree(
    conn: &mut AnyConnection,
    visible: impl Fn(&str) -> bool,
) -> ApiResult<Vec<MenuNode>> {
    let rows = sqlx::query("SELECT * FROM menus ORDER BY sort, code")
        .fetch_all(conn)
        .await?;
    let all = rows.iter().map(node).collect::<Result<Vec<_>, _>>()?;
    fn build(
        parent: Option<&str>,
        all: &[MenuNode],
        visible: &dyn Fn(&str) -> bool,
    ) -> Vec<MenuNode> {
        all.iter()
            .filter(|m| m.parent_id.as_deref() == parent)
            .filter_map(|m| {
                let children = build(Some(&m.id), all, visible);
                let keep = if m.kind == "dir" {
                    !children.is_empty()
                } else {
                    visible(&m.code)
                };
                keep.then(|| MenuNode {
                    children,
                    ..m.clone()
                })
            })
            .collect()
    }
    Ok(build(None, &all, &visible))
}

async fn list(ctx: Ctx) -> ApiResult<Response> {
    ctx.require("platform:menu:query").await?;
    let mut conn = ctx.app.db.pool().acquire().await?;
    ok(tree(&mut conn, |_| true).await?)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MenuInput {
    #[serde(default)]
    parent_id: Option<String>,
    code: String,
    name_key: String,
    #[serde(default)]
    path: String,
    kind: String,
    #[serde(default)]
    sort: i64,
}

struct Checked {
    parent_id: Option<i64>,
    code: String,
    name_key: String,
    path: String,
    kind: String,
    sort: i64,
}

async fn check(conn: &mut AnyConnection, b: MenuInput) -> ApiResult<Checked> {
    let code = code("code", &b.code, 64)?;
    let name_key = code_key(&b.name_key)?;
    if b.kind != "dir" && b.kind != "page" {
        return Err(ApiError::invalid("kind must be dir or page"));
    }
    let path = text("path", &b.path, 0, 200)?;
    let safe_path = path.is_empty()
        || path.starts_with('/') && !path.starts_with("//")
        || path.starts_with("https://");
    if !safe_path || (b.kind == "page" && path.is_empty()) {
        return Err(ApiError::invalid(
            "path must be a console route (/…) or an https:// address; pages need one",
        ));
    }
    let parent_id = b
        .parent_id
        .as_deref()
        .map(|p| parse_id(p, "parentId"))
        .transpose()?;
    if let Some(p) = parent_id {
        let kind: Option<String> = sqlx::query("SELECT kind FROM menus WHERE id = $1")
            .bind(p)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.try_get("kind"))
            .transpose()?;
        match kind.as_deref() {
            None => return Err(ApiError::not_found("parent menu")),
            Some("dir") => {}
            Some(_) => return Err(ApiError::invalid("the parent must be a directory")),
        }
    }
    if !(-100_000..=100_000).contains(&b.sort) {
        return Err(ApiError::invalid("sort must be -100000..=100000"));
    }
    Ok(Checked {
        parent_id,
        code,
        name_key,
        path,
        kind: b.kind,
        sort: b.sort,
    })
}

fn code_key(v: &str) -> ApiResult<String> {
    code("nameKey", v, 128)
}

async fn load(conn: &mut AnyConnection, id: i64) -> ApiResult<MenuNode> {
    by_id(conn, "menus", id, "menu", node).await
}

async fn create(ctx: Ctx, Body(b): Body<MenuInput>) -> ApiResult<Response> {
    ctx.require("platform:menu:edit").await?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let c = check(&mut tx, b).await?;
    let id = ctx.app.ids.next();
    sqlx::query(
        "INSERT INTO menus (id, parent_id, code, name_key, path, kind, sort, builtin) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
    )
    .bind(id)
    .bind(c.parent_id)
    .bind(c.code)
    .bind(c.name_key)
    .bind(c.path)
    .bind(c.kind)
    .bind(c.sort)
    .execute(&mut *tx)
    .await?;
    let created = load(&mut tx, id).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("menu.create", "menu", &created.id).after(&created),
    )
    .await?;
    ok(created)
}

async fn update(ctx: Ctx, Path(id): Path<String>, Body(b): Body<MenuInput>) -> ApiResult<Response> {
    ctx.require("platform:menu:edit").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = load(&mut tx, id).await?;
    let c = check(&mut tx, b).await?;
    if before.builtin && (c.code != before.code || c.kind != before.kind || c.path != before.path) {
        return Err(ApiError::precondition(
            "a built-in menu keeps its code, kind and path; only its name key and order change",
        ));
    }
    if c.parent_id == Some(id) {
        return Err(ApiError::invalid("a menu cannot be its own parent"));
    }
    sqlx::query(
        "UPDATE menus SET parent_id = $1, code = $2, name_key = $3, path = $4, kind = $5, \
         sort = $6 WHERE id = $7",
    )
    .bind(c.parent_id)
    .bind(c.code)
    .bind(c.name_key)
    .bind(c.path)
    .bind(c.kind)
    .bind(c.sort)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let after = load(&mut tx, id).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("menu.update", "menu", &after.id)
            .before(&before)
            .after(&after),
    )
    .await?;
    ok(after)
}

async fn remove(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:menu:delete").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = load(&mut tx, id).await?;
    if before.builtin {
        return Err(ApiError::precondition("built-in menus cannot be deleted"));
    }
    let children: i64 = sqlx::query("SELECT COUNT(*) AS n FROM menus WHERE parent_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
    if children > 0 {
        return Err(ApiError::conflict("the menu still has entries under it"));
    }
    sqlx::query("DELETE FROM menus WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("menu.delete", "menu", id).before(&before),
    )
    .await?;
    ok(())
}
