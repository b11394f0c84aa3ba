//! Users: creation under the password policy, role assignment (own kind only, no mutually
//! exclusive pair), unlock / unfreeze, password reset, and the retirement of the initial
//! administrator once a bank administrator has signed in (seed 001 §6.6.8).

use axum::Router;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::bootstrap::INIT_ADMIN;
use super::{parse_id, text};
use crate::app::AppState;
use crate::audit::{self, Actor, Change};
use crate::auth::{Ctx, bump_epoch, check_password_policy, hash_password};
use crate::db::{Arg, Where, like_escape};
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{Body, QueryMap, RequestMeta, ok, path_id};
use crate::ids::{now_ms, rfc3339};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/platform/users", get(list).post(create))
        .route("/api/v2/platform/users/{id}", put(update).delete(remove))
        .route("/api/v2/platform/users/{id}/unlock", post(unlock))
        .route("/api/v2/platform/users/{id}/password", post(reset_password))
}

/// A role as shown with a user.
#[derive(Debug, Clone, Serialize)]
pub struct RoleRef {
    id: String,
    code: String,
    name: String,
}

/// A user as the API shows it (never a password or hash).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    id: String,
    username: String,
    display_name: String,
    org_id: String,
    org_name: String,
    kind: String,
    enabled: bool,
    status: &'static str,
    role_ids: Vec<String>,
    roles: Vec<RoleRef>,
    created_at: String,
    last_login_at: Option<String>,
    #[serde(skip)]
    org_path: String,
    #[serde(skip)]
    builtin: bool,
}

const USER_COLUMNS: &str = "u.id, u.username, u.display_name, u.org_id, u.kind, u.enabled, \
    u.builtin, u.frozen, u.locked_until_ms, u.created_ms, u.last_login_ms, o.name AS org_name, \
    o.path AS org_path";

async fn user(conn: &mut AnyConnection, r: &AnyRow) -> ApiResult<User> {
    let id: i64 = r.try_get("id")?;
    let now = now_ms();
    let status = if r.try_get::<i64, _>("enabled")? != 1 {
        "disabled"
    } else if r.try_get::<i64, _>("frozen")? == 1 {
        "frozen"
    } else if r.try_get::<i64, _>("locked_until_ms")? > now {
        "locked"
    } else {
        "active"
    };
    let roles = sqlx::query(
        "SELECT r.id, r.code, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id \
         WHERE ur.user_id = $1 ORDER BY r.code",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(RoleRef {
            id: r.try_get::<i64, _>("id")?.to_string(),
            code: r.try_get("code")?,
            name: r.try_get("name")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(User {
        id: id.to_string(),
        username: r.try_get("username")?,
        display_name: r.try_get("display_name")?,
        org_id: r.try_get::<i64, _>("org_id")?.to_string(),
        org_name: r.try_get("org_name")?,
        kind: r.try_get("kind")?,
        enabled: r.try_get::<i64, _>("enabled")? == 1,
        status,
        role_ids: roles.iter().map(|r| r.id.clone()).collect(),
        roles,
        created_at: rfc3339(r.try_get("created_ms")?),
        last_login_at: r.try_get::<Option<i64>, _>("last_login_ms")?.map(rfc3339),
        org_path: r.try_get("org_path")?,
        builtin: r.try_get::<i64, _>("builtin")? == 1,
    })
}

async fn load(conn: &mut AnyConnection, id: i64) -> ApiResult<Option<User>> {
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => Ok(Some(user(conn, &r).await?)),
        None => Ok(None),
    }
}

/// Loads a user the caller may manage: in his data scope and of his kind.
async fn managed(ctx: &Ctx, conn: &mut AnyConnection, id: i64) -> ApiResult<User> {
    let u = load(conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    ctx.require_org(parse_id(&u.org_id, "orgId")?, &u.org_path)?;
    if u.kind != ctx.principal.kind {
        return Err(ApiError::new(
            Code::DomainMismatch,
            format!(
                "a {} administrator cannot manage {} users",
                ctx.principal.kind, u.kind
            ),
        ));
    }
    Ok(u)
}

fn scope_filter(ctx: &Ctx, w: &mut Where) {
    match ctx.principal.scope {
        crate::auth::Scope::All => {}
        crate::auth::Scope::OrgSubtree => {
            w.and(
                "o.path LIKE ? ESCAPE '\\'",
                [Arg::Text(format!(
                    "{}%",
                    like_escape(&ctx.principal.org_path)
                ))],
            );
        }
        crate::auth::Scope::OwnOrg => {
            w.and("u.org_id = ?", [Arg::I64(ctx.principal.org_id)]);
        }
    }
}

async fn list(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("platform:user:query").await?;
    let page = q.page()?;
    let mut w = Where::new();
    scope_filter(&ctx, &mut w);
    if let Some(org) = q.id("orgId")? {
        w.and("u.org_id = ?", [Arg::I64(org)]);
    }
    if let Some(k) = q.text("keyword")? {
        let pattern = format!("%{}%", like_escape(&k));
        w.and(
            "(u.username LIKE ? ESCAPE '\\' OR u.display_name LIKE ? ESCAPE '\\')",
            [Arg::Text(pattern.clone()), Arg::Text(pattern)],
        );
    }
    let now = now_ms();
    match q
        .one_of("status", &["active", "locked", "frozen", "disabled"])?
        .as_deref()
    {
        Some("disabled") => {
            w.and("u.enabled = 0", []);
        }
        Some("frozen") => {
            w.and("u.enabled = 1 AND u.frozen = 1", []);
        }
        Some("locked") => {
            w.and(
                "u.enabled = 1 AND u.frozen = 0 AND u.locked_until_ms > ?",
                [Arg::I64(now)],
            );
        }
        Some(_) => {
            w.and(
                "u.enabled = 1 AND u.frozen = 0 AND u.locked_until_ms <= ?",
                [Arg::I64(now)],
            );
        }
        None => {}
    }
    q.finish()?;
    let mut conn = ctx.app.db.pool().acquire().await?;
    let from = " FROM users u JOIN orgs o ON o.id = u.org_id";
    let total: i64 = w
        .bind(sqlx::query(&format!(
            "SELECT COUNT(*) AS n{from}{}",
            w.sql()
        )))
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    let n = w.next_placeholder();
    let sql = format!(
        "SELECT {USER_COLUMNS}{from}{} ORDER BY u.id {} LIMIT ${n} OFFSET ${}",
        w.sql(),
        page.order(),
        n + 1
    );
    let rows = w
        .bind(sqlx::query(&sql))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(user(&mut conn, r).await?);
    }
    ok(page.page(total, out))
}

/// Checks that `role_ids` exist, are of `kind`'s domain, are not rejected, and contain no
/// mutually exclusive pair.
pub(crate) async fn check_roles(
    conn: &mut AnyConnection,
    kind: &str,
    role_ids: &[i64],
) -> ApiResult<()> {
    for id in role_ids {
        let row = sqlx::query("SELECT domain, status FROM roles WHERE id = $1")
            .bind(*id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| ApiError::not_found("role"))?;
        if row.try_get::<String, _>("domain")? != kind {
            return Err(ApiError::new(
                Code::DomainMismatch,
                format!("a {kind} user can only hold {kind} roles"),
            ));
        }
        if row.try_get::<String, _>("status")? == "rejected" {
            return Err(ApiError::precondition("a rejected role cannot be assigned"));
        }
    }
    for (i, a) in role_ids.iter().enumerate() {
        for b in &role_ids[i + 1..] {
            let clash = sqlx::query(
                "SELECT 1 AS x FROM role_exclusions WHERE role_id = $1 AND other_id = $2",
            )
            .bind(*a)
            .bind(*b)
            .fetch_optional(&mut *conn)
            .await?;
            if clash.is_some() {
                return Err(ApiError::new(
                    Code::RoleConflict,
                    "the roles are mutually exclusive and cannot be held together",
                ));
            }
        }
    }
    Ok(())
}

/// Whether a technical administrator hands business administration over (seed 001 §6.5.5,
/// §6.6.8): the new business user gets exactly the built-in `bizadmin` role.
async fn handover(conn: &mut AnyConnection, actor_kind: &str, roles: &[i64]) -> ApiResult<bool> {
    if actor_kind != "technical" || roles.len() != 1 {
        return Ok(false);
    }
    let code: Option<String> = sqlx::query("SELECT code FROM roles WHERE id = $1 AND builtin = 1")
        .bind(roles[0])
        .fetch_optional(conn)
        .await?
        .map(|r| r.try_get("code"))
        .transpose()?;
    Ok(code.as_deref() == Some("bizadmin"))
}

fn role_ids(raw: &[String]) -> ApiResult<Vec<i64>> {
    let mut ids = raw
        .iter()
        .map(|r| parse_id(r, "roleIds"))
        .collect::<ApiResult<Vec<_>>>()?;
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > 50 {
        return Err(ApiError::invalid("at most 50 roles"));
    }
    Ok(ids)
}

async fn set_roles(conn: &mut AnyConnection, user_id: i64, role_ids: &[i64]) -> ApiResult<()> {
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for r in role_ids {
        sqlx::query("INSERT INTO user_roles (user_id, role_id) VALUES ($1, $2)")
            .bind(user_id)
            .bind(*r)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn org_in_scope(ctx: &Ctx, org_id: i64) -> ApiResult<()> {
    let org = super::orgs::load(ctx, org_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    ctx.require_org(org_id, &org.path)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewUser {
    #[serde(default)]
    kind: Option<String>,
    username: String,
    display_name: String,
    password: String,
    org_id: String,
    #[serde(default)]
    role_ids: Vec<String>,
}

async fn create(ctx: Ctx, Body(b): Body<NewUser>) -> ApiResult<Response> {
    ctx.require("platform:user:edit").await?;
    let username = b.username.trim().to_owned();
    let valid = (3..=32).contains(&username.len())
        && username
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if !valid {
        return Err(ApiError::invalid(
            "username must be 3 to 32 letters, digits, '_', '.' or '-'",
        ));
    }
    let display_name = text("displayName", &b.display_name, 1, 64)?;
    check_password_policy(&b.password, &username)?;
    let org_id = parse_id(&b.org_id, "orgId")?;
    let roles = role_ids(&b.role_ids)?;
    org_in_scope(&ctx, org_id).await?;
    let kind = b.kind.unwrap_or_else(|| ctx.principal.kind.clone());
    if kind != "technical" && kind != "business" {
        return Err(ApiError::invalid("kind must be technical or business"));
    }
    let hash = hash_password(b.password).await?;
    let id = ctx.app.ids.next();
    let now = now_ms();
    let mut tx = ctx.app.db.pool().begin().await?;
    if kind != ctx.principal.kind && !handover(&mut tx, &ctx.principal.kind, &roles).await? {
        return Err(ApiError::new(
            Code::DomainMismatch,
            "a technical administrator creates business users only as business administrators \
             (role bizadmin alone); other business users are created by business administrators",
        ));
    }
    check_roles(&mut tx, &kind, &roles).await?;
    sqlx::query(
        "INSERT INTO users (id, username, display_name, password_hash, org_id, kind, enabled, \
         created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
    )
    .bind(id)
    .bind(username)
    .bind(display_name)
    .bind(hash)
    .bind(org_id)
    .bind(kind)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    set_roles(&mut tx, id, &roles).await?;
    let created = load(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    audit::commit(
        &ctx,
        tx,
        Change::new("user.create", "user", &created.id).after(&created),
    )
    .await?;
    ok(created)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserEdit {
    display_name: String,
    org_id: String,
    role_ids: Vec<String>,
    enabled: bool,
}

async fn update(ctx: Ctx, Path(id): Path<String>, Body(b): Body<UserEdit>) -> ApiResult<Response> {
    ctx.require("platform:user:edit").await?;
    let id = path_id(&id)?;
    let display_name = text("displayName", &b.display_name, 1, 64)?;
    let org_id = parse_id(&b.org_id, "orgId")?;
    let roles = role_ids(&b.role_ids)?;
    org_in_scope(&ctx, org_id).await?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = managed(&ctx, &mut tx, id).await?;
    if id == ctx.principal.user_id && !b.enabled {
        return Err(ApiError::precondition("you cannot disable yourself"));
    }
    if before.builtin && b.enabled && super::settings::init_admin_retired(&mut tx).await? {
        return Err(ApiError::precondition(
            "the initial administrator is disabled for good",
        ));
    }
    check_roles(&mut tx, &before.kind, &roles).await?;
    sqlx::query(
        "UPDATE users SET display_name = $1, org_id = $2, enabled = $3, updated_ms = $4 WHERE id = $5",
    )
    .bind(display_name)
    .bind(org_id)
    .bind(i64::from(b.enabled))
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    set_roles(&mut tx, id, &roles).await?;
    let after = load(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    audit::commit(
        &ctx,
        tx,
        Change::new("user.update", "user", &after.id)
            .before(&before)
            .after(&after),
    )
    .await?;
    bump_epoch(&ctx.app).await?;
    ok(after)
}

async fn remove(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:user:delete").await?;
    let id = path_id(&id)?;
    if id == ctx.principal.user_id {
        return Err(ApiError::precondition("you cannot delete yourself"));
    }
    let mut tx = ctx.app.db.pool().begin().await?;
    let before = managed(&ctx, &mut tx, id).await?;
    if before.builtin {
        return Err(ApiError::precondition(
            "the initial administrator cannot be deleted",
        ));
    }
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("user.delete", "user", id).before(&before),
    )
    .await?;
    bump_epoch(&ctx.app).await?;
    ok(())
}

async fn unlock(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("platform:user:unlock").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    // Unlocking grants nothing, so it crosses the technical/business line (a locked-out
    // business administrator must not depend on another business administrator).
    let before = load(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    ctx.require_org(parse_id(&before.org_id, "orgId")?, &before.org_path)?;
    sqlx::query(
        "UPDATE users SET failed_count = 0, locked_until_ms = 0, lockout_count = 0, frozen = 0, \
         updated_ms = $1 WHERE id = $2",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let after = load(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    audit::commit(
        &ctx,
        tx,
        Change::new("user.unlock", "user", &after.id)
            .before(&before)
            .after(&after),
    )
    .await?;
    bump_epoch(&ctx.app).await?;
    ok(after)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn reset_password(
    ctx: Ctx,
    Path(id): Path<String>,
    Body(b): Body<NewPassword>,
) -> ApiResult<Response> {
    ctx.require("platform:user:edit").await?;
    let id = path_id(&id)?;
    let mut tx = ctx.app.db.pool().begin().await?;
    let target = managed(&ctx, &mut tx, id).await?;
    check_password_policy(&b.password, &target.username)?;
    let hash = hash_password(b.password).await?;
    sqlx::query("UPDATE users SET password_hash = $1, updated_ms = $2 WHERE id = $3")
        .bind(hash)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("user.reset-password", "user", id).after(&json!({"password": "changed"})),
    )
    .await?;
    ok(())
}

/// Changes the caller's own password after checking the old one.
pub(crate) async fn change_own_password(ctx: &Ctx, old: &str, new: &str) -> ApiResult<()> {
    let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
        .bind(ctx.principal.user_id)
        .fetch_one(ctx.app.db.pool())
        .await?;
    if !crate::auth::verify_password(row.try_get("password_hash")?, old.to_owned()).await {
        return Err(ApiError::new(
            Code::BadCredentials,
            "the current password is wrong",
        ));
    }
    check_password_policy(new, &ctx.principal.username)?;
    let hash = hash_password(new.to_owned()).await?;
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query("UPDATE users SET password_hash = $1, updated_ms = $2 WHERE id = $3")
        .bind(hash)
        .bind(now_ms())
        .bind(ctx.principal.user_id)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        ctx,
        tx,
        Change::new("user.change-password", "user", ctx.principal.user_id)
            .after(&json!({"password": "changed"})),
    )
    .await?;
    Ok(())
}

/// After `user_id` signed in: when he is a bank system administrator (holds the enabled
/// built-in `sysadmin` role and is not the initial administrator), the initial administrator is
/// disabled for good (seed 001 §6.6.8).
pub(crate) async fn retire_init_admin_if_due(
    app: &AppState,
    meta: &RequestMeta,
    user_id: i64,
    username: &str,
    session_id: &str,
) -> ApiResult<()> {
    if username == INIT_ADMIN {
        return Ok(());
    }
    let mut tx = app.db.pool().begin().await?;
    if super::settings::init_admin_retired(&mut tx).await? {
        return Ok(());
    }
    let is_admin = sqlx::query(
        "SELECT 1 AS x FROM user_roles ur JOIN roles r ON r.id = ur.role_id JOIN users u ON u.id = ur.user_id \
         WHERE ur.user_id = $1 AND r.code = 'sysadmin' AND r.builtin = 1 AND r.status = 'enabled' \
         AND u.builtin = 0",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if !is_admin {
        return Ok(());
    }
    sqlx::query("UPDATE users SET enabled = 0, updated_ms = $1 WHERE builtin = 1")
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    super::settings::set(&mut tx, "init_admin_retired", "1").await?;
    audit::record(
        &mut tx,
        app,
        &Actor {
            user_id: Some(user_id),
            username: username.to_owned(),
            session_id: Some(session_id.to_owned()),
            meta: meta.clone(),
        },
        Change {
            action: "user.retire-initial-admin",
            target_type: "user",
            target_id: None,
            before: Some(json!({"username": INIT_ADMIN, "enabled": true})),
            after: Some(json!({"username": INIT_ADMIN, "enabled": false})),
        },
    )
    .await?;
    tx.commit().await?;
    bump_epoch(app).await?;
    tracing::info!(
        by = username,
        "the initial administrator is retired for good"
    );
    Ok(())
}
