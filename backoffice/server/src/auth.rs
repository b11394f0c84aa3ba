//! Authentication and authorisation: the password policy and argon2 hashes, login with lockout
//! and freeze (seed 001 §6.6.6), blacklists (§6.6.7), sessions with an idle timeout kept in the
//! cache (so every backoffice process sees them), and [`Ctx`], the authenticated caller every
//! protected handler takes, which checks permissions and data scope and logs each check in the
//! access-authorisation log (§6.5.8).
//!
//! Never log a password or a token: only the session id (which is not the token) appears in
//! logs and in the audit log.

use std::collections::BTreeSet;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::http::RequestMeta;
use crate::ids::now_ms;

/// Checks the password policy: 8–128 characters with an upper-case letter, a lower-case letter,
/// a digit and a special character, not containing the user name.
pub fn check_password_policy(password: &str, username: &str) -> ApiResult<()> {
    let weak = |m: &str| Err(ApiError::new(Code::WeakPassword, m));
    let len = password.chars().count();
    if !(8..=128).contains(&len) {
        return weak("the password must have 8 to 128 characters");
    }
    if !password.chars().any(|c| c.is_uppercase())
        || !password.chars().any(|c| c.is_lowercase())
        || !password.chars().any(|c| c.is_ascii_digit())
        || !password
            .chars()
            .any(|c| !c.is_alphanumeric() && !c.is_whitespace())
    {
        return weak(
            "the password needs an upper-case letter, a lower-case letter, a digit and a special character",
        );
    }
    if !username.is_empty() && password.to_lowercase().contains(&username.to_lowercase()) {
        return weak("the password must not contain the user name");
    }
    Ok(())
}

/// Hashes a password with argon2id (PHC string).
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| ApiError::new(Code::Internal, format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::new(Code::Internal, format!("hashing: {e}")))
    })
    .await
    .map_err(|e| ApiError::new(Code::Internal, format!("hashing task: {e}")))?
}

/// Verifies `password` against a PHC hash; a malformed hash never matches.
pub async fn verify_password(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash of a password nobody has, verified against for unknown users so that a login's
/// timing does not tell whether the user exists.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$M5vTF8zmt5m0y0P4G0lqtqKs1S6Y7r3fHcO7RPdfL9E";

/// How far a user's roles let him see and change organisational data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only his own organisation.
    OwnOrg,
    /// His organisation and everything under it.
    OrgSubtree,
    /// Everything.
    All,
}

impl Scope {
    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "own_org" => Some(Scope::OwnOrg),
            "org_subtree" => Some(Scope::OrgSubtree),
            "all" => Some(Scope::All),
            _ => None,
        }
    }
}

/// What a user is allowed, as loaded from the database and cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Principal {
    /// User id.
    pub user_id: i64,
    /// Login name.
    pub username: String,
    /// Shown name.
    pub display_name: String,
    /// `technical` or `business`.
    pub kind: String,
    /// His organisation.
    pub org_id: i64,
    /// Its materialised path (`/id/id/`).
    pub org_path: String,
    /// The widest scope of his enabled roles (own organisation when he has none).
    pub scope: Scope,
    /// Permissions of his enabled roles.
    pub permissions: BTreeSet<String>,
    /// Whether the account may be used.
    pub enabled: bool,
    /// The permission epoch this was loaded at.
    pub epoch: i64,
}

const EPOCH_KEY: &str = "perm-epoch";

/// Invalidates every cached [`Principal`] (after any change to users, roles or organisations).
pub async fn bump_epoch(app: &AppState) -> ApiResult<()> {
    app.cache.incr(EPOCH_KEY, None).await?;
    Ok(())
}

async fn current_epoch(app: &AppState) -> ApiResult<i64> {
    Ok(app
        .cache
        .get(EPOCH_KEY)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Loads a user's principal, from the cache when it is current.
pub async fn principal(app: &AppState, user_id: i64) -> ApiResult<Option<Principal>> {
    let epoch = current_epoch(app).await?;
    let key = format!("principal:{user_id}");
    if let Some(cached) = app.cache.get(&key).await?
        && let Ok(p) = serde_json::from_str::<Principal>(&cached)
        && p.epoch == epoch
    {
        return Ok(Some(p));
    }
    let Some(row) = sqlx::query(
        "SELECT u.username, u.display_name, u.kind, u.org_id, u.enabled, o.path \
         FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.id = $1",
    )
    .bind(user_id)
    .fetch_optional(app.db.pool())
    .await?
    else {
        return Ok(None);
    };
    let kind: String = row.try_get("kind")?;
    let roles = sqlx::query(
        "SELECT r.data_scope, rp.permission FROM user_roles ur \
         JOIN roles r ON r.id = ur.role_id \
         LEFT JOIN role_permissions rp ON rp.role_id = r.id \
         WHERE ur.user_id = $1 AND r.status = 'enabled' AND r.domain = $2",
    )
    .bind(user_id)
    .bind(kind.clone())
    .fetch_all(app.db.pool())
    .await?;
    let mut scope = Scope::OwnOrg;
    let mut permissions = BTreeSet::new();
    for r in roles {
        let s: String = r.try_get("data_scope")?;
        scope = scope.max(Scope::parse(&s).unwrap_or(Scope::OwnOrg));
        if let Some(p) = r.try_get::<Option<String>, _>("permission")? {
            permissions.insert(p);
        }
    }
    let p = Principal {
        user_id,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        kind,
        org_id: row.try_get("org_id")?,
        org_path: row.try_get("path")?,
        scope,
        permissions,
        enabled: row.try_get::<i64, _>("enabled")? == 1,
        epoch,
    };
    if let Ok(text) = serde_json::to_string(&p) {
        app.cache
            .set(&key, &text, Some(Duration::from_secs(600)))
            .await?;
    }
    Ok(Some(p))
}

/// Whether the address or the user name is blacklisted.
pub async fn blacklisted(app: &AppState, address: &str, username: &str) -> ApiResult<bool> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM blacklist \
         WHERE (kind = 'address' AND value = $1) OR (kind = 'user' AND value = $2)",
    )
    .bind(address.to_owned())
    .bind(username.to_owned())
    .fetch_one(app.db.pool())
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    sid: String,
    uid: i64,
}

fn session_key(token: &str) -> String {
    format!("session:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

fn idle(app: &AppState) -> Duration {
    Duration::from_secs_f64(app.config.security.session_idle_minutes * 60.0)
}

/// Starts a session for `user_id`; returns (token, session id).
pub async fn start_session(app: &AppState, user_id: i64) -> ApiResult<(String, String)> {
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let sid = hex::encode(rand::random::<[u8; 12]>());
    let stored = serde_json::to_string(&StoredSession {
        sid: sid.clone(),
        uid: user_id,
    })
    .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
    app.cache
        .set(&session_key(&token), &stored, Some(idle(app)))
        .await?;
    Ok((token, sid))
}

/// Ends the session of `token`.
pub async fn end_session(app: &AppState, token: &str) -> ApiResult<()> {
    app.cache.del(&session_key(token)).await?;
    Ok(())
}

/// Records a login attempt in the login log and the metrics.
pub async fn log_login(
    app: &AppState,
    username: &str,
    user_id: Option<i64>,
    address: &str,
    outcome: &str,
) -> ApiResult<()> {
    crate::metrics::record_login(outcome);
    tracing::info!(username, outcome, address, "login");
    sqlx::query(
        "INSERT INTO login_log (id, at_ms, username, user_id, address, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(app.ids.next())
    .bind(now_ms())
    .bind(truncate(username, 64))
    .bind(user_id)
    .bind(address.to_owned())
    .bind(outcome.to_owned())
    .execute(app.db.pool())
    .await?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The result of a successful login.
#[derive(Debug)]
pub struct LoggedIn {
    /// The bearer token (shown to the client once).
    pub token: String,
    /// The session id.
    pub session_id: String,
    /// The user.
    pub user_id: i64,
}

/// Checks credentials, applies lockout, freeze and blacklist rules, logs the attempt, and
/// starts a session.
pub async fn login(
    app: &AppState,
    meta: &RequestMeta,
    username: &str,
    password: &str,
) -> ApiResult<LoggedIn> {
    let sec = &app.config.security;
    let address = meta.address.as_str();
    if username.is_empty() || username.chars().count() > 64 || password.len() > 1024 {
        return Err(ApiError::invalid("username and password are required"));
    }
    if blacklisted(app, address, username).await? {
        log_login(app, username, None, address, "blacklisted").await?;
        return Err(ApiError::new(Code::Blacklisted, "access refused"));
    }
    let row = sqlx::query(
        "SELECT id, password_hash, enabled, frozen, locked_until_ms, failed_count, \
         lockout_count, lockout_window_ms FROM users WHERE username = $1",
    )
    .bind(username.to_owned())
    .fetch_optional(app.db.pool())
    .await?;
    let Some(row) = row else {
        verify_password(DUMMY_HASH.to_owned(), password.to_owned()).await;
        log_login(app, username, None, address, "bad_credentials").await?;
        return Err(bad_credentials());
    };
    let user_id: i64 = row.try_get("id")?;
    let now = now_ms();
    if row.try_get::<i64, _>("frozen")? == 1 {
        log_login(app, username, Some(user_id), address, "frozen").await?;
        return Err(ApiError::new(
            Code::AccountFrozen,
            "the account is frozen after repeated lockouts; an administrator must unfreeze it",
        ));
    }
    let locked_until: i64 = row.try_get("locked_until_ms")?;
    if locked_until > now {
        log_login(app, username, Some(user_id), address, "locked").await?;
        return Err(
            ApiError::new(Code::AccountLocked, "too many failed logins; try later")
                .with_data(json!({"until": crate::ids::rfc3339(locked_until)})),
        );
    }
    let hash: String = row.try_get("password_hash")?;
    if !verify_password(hash, password.to_owned()).await {
        let failed = row.try_get::<i64, _>("failed_count")? + 1;
        if failed >= i64::from(sec.lockout_failures) {
            let window: i64 = row.try_get("lockout_window_ms")?;
            let (count, window) = if now - window > 24 * 3600 * 1000 {
                (1, now)
            } else {
                (row.try_get::<i64, _>("lockout_count")? + 1, window)
            };
            let frozen = count >= i64::from(sec.freeze_after_lockouts);
            sqlx::query(
                "UPDATE users SET failed_count = 0, locked_until_ms = $1, lockout_count = $2, \
                 lockout_window_ms = $3, frozen = $4, updated_ms = $5 WHERE id = $6",
            )
            .bind(now + i64::from(sec.lockout_minutes) * 60_000)
            .bind(count)
            .bind(window)
            .bind(i64::from(frozen))
            .bind(now)
            .bind(user_id)
            .execute(app.db.pool())
            .await?;
            bump_epoch(app).await?;
        } else {
            sqlx::query("UPDATE users SET failed_count = $1 WHERE id = $2")
                .bind(failed)
                .bind(user_id)
                .execute(app.db.pool())
                .await?;
        }
        log_login(app, username, Some(user_id), address, "bad_credentials").await?;
        return Err(bad_credentials());
    }
    if row.try_get::<i64, _>("enabled")? != 1 {
        log_login(app, username, Some(user_id), address, "disabled").await?;
        return Err(ApiError::new(
            Code::AccountDisabled,
            "the account is disabled",
        ));
    }
    sqlx::query("UPDATE users SET failed_count = 0, last_login_ms = $1 WHERE id = $2")
        .bind(now)
        .bind(user_id)
        .execute(app.db.pool())
        .await?;
    let (token, session_id) = start_session(app, user_id).await?;
    log_login(app, username, Some(user_id), address, "success").await?;
    crate::platform::users::retire_init_admin_if_due(app, meta, user_id, username, &session_id)
        .await?;
    Ok(LoggedIn {
        token,
        session_id,
        user_id,
    })
}

fn bad_credentials() -> ApiError {
    ApiError::new(Code::BadCredentials, "wrong user name or password")
}

/// The authenticated caller of a protected endpoint.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The application.
    pub app: AppState,
    /// Who.
    pub principal: Principal,
    /// The session (not the token).
    pub session_id: String,
    /// The token (for logout only; never logged).
    token: String,
    /// Trace id, transaction group, address.
    pub meta: RequestMeta,
    method: String,
    path: String,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::from_request_parts(parts, app).await?;
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 128)
            .ok_or_else(|| ApiError::new(Code::Unauthenticated, "sign in first"))?
            .to_owned();
        let key = session_key(&token);
        let stored = app
            .cache
            .get(&key)
            .await?
            .and_then(|v| serde_json::from_str::<StoredSession>(&v).ok())
            .ok_or_else(|| {
                ApiError::new(Code::Unauthenticated, "the session ended or never existed")
            })?;
        let principal = principal(app, stored.uid)
            .await?
            .filter(|p| p.enabled)
            .ok_or_else(|| ApiError::new(Code::Unauthenticated, "the account is not usable"))?;
        if blacklisted(app, &meta.address, &principal.username).await? {
            return Err(ApiError::new(Code::Blacklisted, "access refused"));
        }
        // Sliding idle timeout: each use extends the session.
        app.cache.expire(&key, idle(app)).await?;
        Ok(Ctx {
            app: app.clone(),
            principal,
            session_id: stored.sid,
            token,
            meta,
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        })
    }
}

impl Ctx {
    /// Refuses with `PERMISSION_DENIED` unless the caller holds `permission`; logs the check.
    pub async fn require(&self, permission: &str) -> ApiResult<()> {
        let allowed = self.principal.permissions.contains(permission);
        sqlx::query(
            "INSERT INTO access_log (id, at_ms, user_id, username, method, path, permission, allowed) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(self.app.ids.next())
        .bind(now_ms())
        .bind(self.principal.user_id)
        .bind(self.principal.username.clone())
        .bind(self.method.clone())
        .bind(truncate(&self.path, 256))
        .bind(permission.to_owned())
        .bind(i64::from(allowed))
        .execute(self.app.db.pool())
        .await?;
        if allowed {
            Ok(())
        } else {
            tracing::warn!(user = %self.principal.username, permission, "permission denied");
            Err(ApiError::denied(format!(
                "you lack the permission {permission}"
            )))
        }
    }

    /// Whether the organisation with `org_path` (and id `org_id`) is within the caller's scope.
    pub fn org_in_scope(&self, org_id: i64, org_path: &str) -> bool {
        match self.principal.scope {
            Scope::All => true,
            Scope::OrgSubtree => org_path.starts_with(&self.principal.org_path),
            Scope::OwnOrg => org_id == self.principal.org_id,
        }
    }

    /// Refuses with `PERMISSION_DENIED` unless the organisation is within scope.
    pub fn require_org(&self, org_id: i64, org_path: &str) -> ApiResult<()> {
        if self.org_in_scope(org_id, org_path) {
            Ok(())
        } else {
            Err(ApiError::denied(
                "the organisation is outside your data scope",
            ))
        }
    }

    /// Ends this session.
    pub async fn logout(&self) -> ApiResult<()> {
        end_session(&self.app, &self.token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(check_password_policy("Str0ng#Pass", "alice").is_ok());
        for weak in [
            "short1A!",
            "alllower1!",
            "ALLUPPER1!",
            "NoDigits!!",
            "NoSpecial12",
            "Alice#12345",
        ] {
            let r = check_password_policy(weak, "alice");
            if weak == "short1A!" {
                assert!(r.is_ok(), "8 characters are enough");
                continue;
            }
            assert_eq!(r.unwrap_err().code, Code::WeakPassword, "{weak}");
        }
        assert!(check_password_policy("Sh0rt!a", "x").is_err());
    }

    #[tokio::test]
    async fn hashes_verify_and_the_dummy_hash_is_well_formed() {
        let h = hash_password("Str0ng#Pass".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(h.clone(), "Str0ng#Pass".into()).await);
        assert!(!verify_password(h, "Str0ng#Pasz".into()).await);
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password("garbage".into(), "x".into()).await);
    }
}
