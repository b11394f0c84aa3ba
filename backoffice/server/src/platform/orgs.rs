//! The organisation tree: head office → branch → sub-branch → outlet. Each organisation keeps
//! its materialised path (`/id/…/id/`) so data scopes are one prefix test.

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{code, parse_id, text};
use crate::app::AppState;
use crate::audit::{self, Change};
use crate::auth::{Ctx, bump_epoch};
use crate::error::{ApiError, ApiResult};
use crate::http::{Body, ok, path_id};
use crate::ids::now_ms;

const LEVELS: [&str; 4] = ["head_office", "branch", "sub_branch", "outlet"];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/platform/orgs", get(list).post(create))
        .route("/api/v2/platform/orgs/{id}", put(update).delete(remove))
}

/// An organisation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Org {
    id: String,
    parent_id: Option<String>,
    code: String,
    name: String,
    level: String,
    pub(crate) path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<Vec<Org>>,
}

fn org(r: &AnyRow) -> Result<Org, sqlx::Error> {
    Ok(Org {
        id: r.try_get::<i64, _>("id")?.to_string(),
        parent_id: r
            .try_get::<Option<i64>, _>("parent_id")?
            .map(|v| v.to_string()),
        code: r.try_get("code")?,
        name: r.try_get("name")?,
        level: r.try_get("level")?,
        path: r.try_get("path")?,
        children: None,
    })
}

/// Loads one organisation.
pub(crate) async fn load(ctx: &Ctx, id: i64) -> ApiResult<Option<Org>> {
    let row = sqlx::query("SELECT * FROM orgs WHERE id = $1")
        .bind(id)
        .fetch_optional(ctx.app.db.pool())
        .await?;
    Ok(row.map(|r| org(&r)).transpose()?)
}

async fn list(ctx: Ctx) -> ApiResult<Response> {
    ctx.require("platform:org:query").await?;
    let rows = sqlx::query("SELECT * FROM orgs ORDER BY path")
        .fetch_all(ctx.app.db.pool())
        .await?;
    let mut visible = Vec::new();
    for r in &rows {
        let o = org(r)?;
        if ctx.org_in_scope(r.try_get("id")?, &o.path) {
            visible.push(o);
        }
    }
    ok(tree(visible))
}

/// Nests organisations under their parents; those whose parent is not visible become roots.
fn tree(orgs: Vec<Org>) -> Vec<Org> {
    fn children_of(id: &str, all: &[Org]) -> Vec<Org> {
        all.iter()
            .filter(|o| o.parent_id.as_deref() == Some(id))
            .map(|o| Org {
                children: Some(children_of(&o.id, all)),
                ..o.clone()
            })
            .collect()
    }
    orgs.iter()
        .filter(|o| {
            o.parent_id
                .as_ref()
                .is_none_or(|p| !orgs.iter().any(|x| &x.id == p))
        })
        .map(|o| Org {
            children: Some(children_of(&o.id, &orgs)),
            ..o.clone()
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewOrg {
    parent_id: String,
    code: String,
    name: String,
    level: String,
}

async fn create(ctx: Ctx, Body(b): Body<NewOrg>) -> ApiResult<Response> {
    ctx.require("platform:org:edit").await?;
    let parent_id = parse_id(&b.parent_id, "parentId")?;
    let code = code("code", &b.code, 32)?;
    let name = text("name", &b.name, 1, 64)?;
    let rank = LEVELS.iter().position(|l| *l == b.level).ok_or_else(|| {
        ApiError::invalid("level must be head_office, branch, sub_branch or outlet")
    })?;
    let parent = load(&ctx, parent_id)
        .await?
        .ok_or_else(|| ApiError::not_found("parent organisation"))?;
    ctx.require_org(parent_id, &parent.path)?;
    let parent_rank = LEVELS.iter().position(|l| *l == parent.level).unwrap_or(0);
    if rank <= parent_rank {
        return Err(ApiError::invalid(format!(
            "a {} cannot sit under a {}",
            b.level, parent.level
        )));
    }
    let id = ctx.app.ids.next();
    let now = now_ms();
    let created = Org {
        id: id.to_string(),
        parent_id: Some(parent_id.to_string()),
        code,
        name,
        level: b.level,
        path: format!("{}{id}/", parent.path),
        children: None,
    };
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO orgs (id, parent_id, code, name, level, path, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(id)
    .bind(parent_id)
    .bind(created.code.clone())
    .bind(created.name.clone())
    .bind(created.level.clone())
    .bind(created.path.clone())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("org.create", "org", &created.id).after(&created),
    )
    .await?;
    ok(created)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OrgEdit {
    code: String,
    name: String,
}

async fn update(ctx: Ctx, Path(id): Path<String>, Body(b): Body<OrgEdit>) -> ApiResult<Response> {
    ctx.require("platform:org:edit").await?;
    let id = path_id(&id)?;
    let code = code("code", &b.code, 32)?;
    let name = text("name", &b.name, 1, 64)?;
    let before = load(&ctx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    ctx.require_org(id, &before.path)?;
    let after = Org {
        code,
        name,
        ..before.clone()
    };
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query("UPDATE orgs SET code = $1, name = $2, updated_ms = $3 WHERE id = $4")
        .bind(after.code.clone())
        .bind(after.name.clone())
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("org.update", "org", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    ok(after)
}

async fn remove(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:org:delete").await?;
    let id = path_id(&id)?;
    let before = load(&ctx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    ctx.require_org(id, &before.path)?;
    if before.parent_id.is_none() {
        return Err(ApiError::precondition("the head office cannot be deleted"));
    }
    let mut tx = ctx.app.db.pool().begin().await?;
    let in_use: i64 = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM orgs WHERE parent_id = $1) + \
         (SELECT COUNT(*) FROM users WHERE org_id = $1) AS n",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?
    .try_get("n")?;
    if in_use > 0 {
        return Err(ApiError::conflict(
            "the organisation still has sub-organisations or users",
        ));
    }
    sqlx::query("DELETE FROM orgs WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("org.delete", "org", id).before(&before),
    )
    .await?;
    bump_epoch(&ctx.app).await?;
    ok(())
}
