//! Roles: permission sets with a domain (technical or business) and a data scope. A new or
//! changed role is `pending` until another administrator reviews it (seed 001 §6.6.3); only
//! enabled roles grant anything. Roles may be declared mutually exclusive.

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::{code, parse_id, text};
use crate::app::AppState;
use crate::audit::{self, Change};
use crate::auth::{Ctx, Scope, bump_epoch};
use crate::catalogue::{PERMISSIONS, permission};
use crate::db::{Arg, Where};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{Body, QueryMap, ok, path_id};
use crate::ids::{now_ms, rfc3339};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/platform/roles", get(list).post(create))
        .route("/api/v2/platform/roles/{id}", put(update).delete(remove))
        .route("/api/v2/platform/roles/{id}/review", post(review))
        .route("/api/v2/platform/permissions", get(catalogue))
}

/// A role as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    id: String,
    code: String,
    name: String,
    domain: String,
    data_scope: String,
    permissions: Vec<String>,
    exclusive_with: Vec<String>,
    status: String,
    builtin: bool,
    created_by: Option<String>,
    reviewed_by: Option<String>,
    review_comment: Option<String>,
    created_at: String,
}

async fn load(conn: &mut AnyConnection, id: i64) -> ApiResult<Option<Role>> {
    let Some(r) = sqlx::query("SELECT * FROM roles WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let permissions = sqlx::query(
        "SELECT permission FROM role_permissions WHERE role_id = $1 ORDER BY permission",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get("permission"))
    .collect::<Result<Vec<String>, _>>()?;
    let exclusive_with =
        sqlx::query("SELECT other_id FROM role_exclusions WHERE role_id = $1 ORDER BY other_id")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("other_id").map(|v| v.to_string()))
            .collect::<Result<Vec<String>, _>>()?;
    Ok(Some(Role {
        id: id.to_string(),
        code: r.try_get("code")?,
        name: r.try_get("name")?,
        domain: r.try_get("domain")?,
        data_scope: r.try_get("data_scope")?,
        permissions,
        exclusive_with,
        status: r.try_get("status")?,
        builtin: r.try_get::<i64, _>("builtin")? == 1,
        created_by: r
            .try_get::<Option<i64>, _>("created_by")?
            .map(|v| v.to_string()),
        reviewed_by: r
            .try_get::<Option<i64>, _>("reviewed_by")?
            .map(|v| v.to_string()),
        review_comment: r.try_get("review_comment")?,
        created_at: rfc3339(r.try_get("created_ms")?),
    }))
}

async fn catalogue(ctx: Ctx) -> ApiResult<Response> {
    ctx.require("platform:role:query").await?;
    ok(PERMISSIONS)
}

async fn list(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:role:query").await?;
    let page = q.page()?;
    let mut w = Where::new();
    if let Some(s) = q.one_of("status", &["pending", "enabled", "rejected"])? {
        w.and("status = ?", [Arg::Text(s)]);
    }
    if let Some(d) = q.one_of("domain", &["technical", "business"])? {
        w.and("domain = ?", [Arg::Text(d)]);
    }
    q.finish()?;
    let mut conn = ctx.app.db.pool().acquire().await?;
    let total: i64 = w
        .bind(sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM roles{}",
            w.sql()
        )))
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    let n = w.next_placeholder();
    let ids: Vec<i64> = w
        .bind(sqlx::query(&format!(
            "SELECT id FROM roles{} ORDER BY id {} LIMIT ${n} OFFSET ${}",
            w.sql(),
            page.order(),
            n + 1
        )))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = load(&mut conn, id).await? {
            rows.push(r);
        }
    }
    ok(page.page(total, rows))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RoleInput {
    code: String,
    name: String,
    #[serde(default)]
    domain: Option<String>,
    data_scope: String,
    permissions: Vec<String>,
    #[serde(default)]
    exclusive_with: Vec<String>,
}

struct Checked {
    code: String,
    name: String,
    data_scope: String,
    permissions: Vec<String>,
    exclusive_with: Vec<i64>,
}

fn check(input: RoleInput, domain: &str) -> ApiResult<Checked> {
    let code = code("code", &input.code, 32)?;
    let name = text("name", &input.name, 1, 64)?;
    if Scope::parse(&input.data_scope).is_none() {
        return Err(ApiError::invalid(
            "dataScope must be own_org, org_subtree or all",
        ));
    }
    let mut permissions = input.permissions;
    permissions.sort();
    permissions.dedup();
    for p in &permissions {
        let def =
            permission(p).ok_or_else(|| ApiError::invalid(format!("unknown permission {p}")))?;
        if !def.domain.fits(domain) {
            return Err(ApiError::new(
                Code::DomainMismatch,
                format!("a {domain} role cannot hold {p}"),
            ));
        }
    }
    let mut exclusive_with = input
        .exclusive_with
        .iter()
        .map(|r| parse_id(r, "exclusiveWith"))
        .collect::<ApiResult<Vec<_>>>()?;
    exclusive_with.sort_unstable();
    exclusive_with.dedup();
    Ok(Checked {
        code,
        name,
        data_scope: input.data_scope,
        permissions,
        exclusive_with,
    })
}

async fn write_details(conn: &mut AnyConnection, id: i64, c: &Checked) -> ApiResult<()> {
    sqlx::query("DELETE FROM role_permissions WHERE role_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for p in &c.permissions {
        sqlx::query("INSERT INTO role_permissions (role_id, permission) VALUES ($1, $2)")
            .bind(id)
            .bind(p.clone())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM role_exclusions WHERE role_id = $1 OR other_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for other in &c.exclusive_with {
        if *other == id {
            return Err(ApiError::invalid("a role cannot exclude itself"));
        }
        let exists = sqlx::query("SELECT 1 AS x FROM roles WHERE id = $1")
            .bind(*other)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(ApiError::not_found("role in exclusiveWith"));
        }
        let co_held = sqlx::query(
            "SELECT 1 AS x FROM user_roles a JOIN user_roles b ON a.user_id = b.user_id \
             WHERE a.role_id = $1 AND b.role_id = $2",
        )
        .bind(id)
        .bind(*other)
        .fetch_optional(&mut *conn)
        .await?;
        if co_held.is_some() {
            return Err(ApiError::new(
                Code::RoleConflict,
                "a user holds both roles already; take one away first",
            ));
        }
        for (a, b) in [(id, *other), (*other, id)] {
            sqlx::query("INSERT INTO role_exclusions (role_id, other_id) VALUES ($1, $2)")
                .bind(a)
                .bind(b)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

async fn create(ctx: Ctx, Body(b): Body<RoleInput>) -> ApiResult<Response> {
    ctx.require("platform:role:edit").await?;
    let domain = b
        .domain
        .clone()
        .unwrap_or_else(|| ctx.principal.kind.clone());
    if domain != "technical" && domain != "business" {
        return Err(ApiError::invalid("domain must be technical or business"));
    }
    if domain != ctx.principal.kind {
        return Err(ApiError::new(
            Code::DomainMismatch,
            format!(
                "a {} administrator cannot create {domain} roles",
                ctx.principal.kind
            ),
        ));
    }
    let c = check(b, &domain)?;
    let id = ctx.app.ids.next();
    let now = now_ms();
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO roles (id, code, name, domain, data_scope, status, builtin, created_by, \
         created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $7)",
    )
    .bind(id)
    .bind(c.code.clone())
    .bind(c.name.clone())
    .bind(domain)
    .bind(c.data_scope.clone())
    .bind(ctx.principal.user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    write_details(&mut tx, id, &c).await?;
    let created = load(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    audit::commit(
        &ctx,
        tx,
        Change::new("role.create", "role", &created.id).after(&created),
    )
    .await?;
    ok(created)
}

async fn editable(ctx: &Ctx, conn: &mut AnyConnection, id: i64) -> ApiResult<Role> {
    let role = load(conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    if role.builtin {
        return Err(ApiError::precondition("built-in roles cannot be changed"));
    }
    if role.domain != ctx.principal.kind {
        return Err(ApiError::new(
            Code::DomainMismatch,
            format!(
                "a {} administrator cannot manage {} roles",
                ctx.principal.kind, role.domain
            ),
        ));
    }
    Ok(role)
}

async fn update(ctx: Ctx, Path(id): Path<String>, Body(b): Body<RoleInput>) -> ApiResult<Response> {
    ctx.require("platform:role:edit").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = editable(&ctx, &mut tx, id).await?;
    if b.domain.as_deref().is_some_and(|d| d != before.domain) {
        return Err(ApiError::invalid("a role's domain cannot change"));
    }
    let c = check(b, &before.domain)?;
    // A changed role must be reviewed again before it grants anything.
    sqlx::query(
        "UPDATE roles SET code = $1, name = $2, data_scope = $3, status = 'pending', \
         created_by = $4, reviewed_by = NULL, review_comment = NULL, updated_ms = $5 WHERE id = $6",
    )
    .bind(c.code.clone())
    .bind(c.name.clone())
    .bind(c.data_scope.clone())
    .bind(ctx.principal.user_id)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    write_details(&mut tx, id, &c).await?;
    let after = load(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    audit::commit(
        &ctx,
        tx,
        Change::new("role.update", "role", &after.id)
            .before(&before)
            .after(&after),
    )
    .await?;
    bump_epoch(&ctx.app).await?;
    ok(after)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Review {
    approve: bool,
    #[serde(default)]
    comment: String,
}

async fn review(ctx: Ctx, Path(id): Path<String>, Body(b): Body<Review>) -> ApiResult<Response> {
    ctx.require("platform:role:review").await?;
    let id = path_id(&id)?;
    let comment = text("comment", &b.comment, 0, 200)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = editable(&ctx, &mut tx, id).await?;
    if before.status != "pending" {
        return Err(ApiError::precondition(
            "only a pending role can be reviewed",
        ));
    }
    if before.created_by.as_deref() == Some(ctx.principal.user_id.to_string().as_str()) {
        return Err(ApiError::precondition(
            "a role must be reviewed by another administrator than its author",
        ));
    }
    sqlx::query(
        "UPDATE roles SET status = $1, reviewed_by = $2, review_comment = $3, updated_ms = $4 \
         WHERE id = $5",
    )
    .bind(if b.approve { "enabled" } else { "rejected" })
    .bind(ctx.principal.user_id)
    .bind(comment)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let after = load(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    let action = if b.approve {
        "role.approve"
    } else {
        "role.reject"
    };
    audit::commit(
        &ctx,
        tx,
        Change::new(action, "role", &after.id)
            .before(&before)
            .after(&after),
    )
    .await?;
    bump_epoch(&ctx.app).await?;
    ok(after)
}

async fn remove(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:role:delete").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = editable(&ctx, &mut tx, id).await?;
    let holders: i64 = sqlx::query("SELECT COUNT(*) AS n FROM user_roles WHERE role_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
    if holders > 0 {
        return Err(ApiError::conflict("users still hold this role"));
    }
    for sql in [
        "DELETE FROM role_permissions WHERE role_id = $1",
        "DELETE FROM role_exclusions WHERE role_id = $1 OR other_id = $1",
        "DELETE FROM roles WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    audit::commit(
        &ctx,
        tx,
        Change::new("role.delete", "role", id).before(&before),
    )
    .await?;
    bump_epoch(&ctx.app).await?;
    ok(())
}
