//! The session endpoints: login, logout, the current session (user, permissions, the menus he
//! may use) and changing one's own password.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::AppState;
use crate::auth::{self, Ctx, Principal};
use crate::catalogue::{is_builtin_menu, menu_permissions};
use crate::error::{ApiError, ApiResult};
use crate::http::{Body, RequestMeta, ok};
use crate::platform::menus::{MenuNode, tree};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/auth/login", post(login))
        .route("/api/v2/auth/logout", post(logout))
        .route("/api/v2/auth/session", get(session))
        .route("/api/v2/auth/password", post(change_password))
}

/// The signed-in user as the console sees him.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    user: serde_json::Value,
    permissions: Vec<String>,
    menus: Vec<MenuNode>,
    idle_minutes: f64,
}

async fn view(app: &AppState, p: &Principal) -> ApiResult<SessionView> {
    let mut conn = app.db.pool().acquire().await?;
    let menus = tree(&mut conn, |code| {
        // Custom pages (links) are shown to everyone; built-in ones need a permission.
        !is_builtin_menu(code) || menu_permissions(code).any(|perm| p.permissions.contains(perm))
    })
    .await?;
    Ok(SessionView {
        user: json!({
            "id": p.user_id.to_string(),
            "username": p.username,
            "displayName": p.display_name,
            "orgId": p.org_id.to_string(),
            "kind": p.kind,
        }),
        permissions: p.permissions.iter().cloned().collect(),
        menus,
        idle_minutes: app.config.security.session_idle_minutes,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(
    State(app): State<AppState>,
    meta: RequestMeta,
    Body(c): Body<Credentials>,
) -> ApiResult<Response> {
    let done = auth::login(&app, &meta, c.username.trim(), &c.password).await?;
    let p = auth::principal(&app, done.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    ok(json!({"token": done.token, "session": view(&app, &p).await?}))
}

async fn logout(ctx: Ctx) -> ApiResult<Response> {
    ctx.logout().await?;
    ok(())
}

async fn session(ctx: Ctx) -> ApiResult<Response> {
    ok(view(&ctx.app, &ctx.principal).await?)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

async fn change_password(ctx: Ctx, Body(b): Body<PasswordChange>) -> ApiResult<Response> {
    crate::platform::users::change_own_password(&ctx, &b.old_password, &b.new_password).await?;
    ok(())
}
