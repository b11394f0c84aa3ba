//! First-start and every-start work: the built-in menus and roles follow the catalogue, the head
//! office exists, and the initial system administrator is created once (seed 001 §6.6.8) with
//! the password from `OPENTELLER_INIT_ADMIN_PASSWORD` or a one-time password printed once.

use sqlx::Row;

use crate::app::AppState;
use crate::auth::{check_password_policy, hash_password};
use crate::catalogue::{MENUS, PERMISSIONS};
use crate::ids::now_ms;

/// The initial administrator's user name.
pub const INIT_ADMIN: &str = "sysadmin";

/// Runs the bootstrap; idempotent.
pub async fn run(app: &AppState) -> anyhow::Result<()> {
    let now = now_ms();
    let init_password = std::env::var("OPENTELLER_INIT_ADMIN_PASSWORD").ok();
    let pool = app.db.pool();
    let mut tx = pool.begin().await?;
    if app.db.is_postgres() {
        sqlx::query("SELECT pg_advisory_xact_lock(4242002)")
            .execute(&mut *tx)
            .await?;
    }
    for m in MENUS {
        let exists = sqlx::query("SELECT id FROM menus WHERE code = $1")
            .bind(m.code)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            continue;
        }
        let parent: Option<i64> = match m.parent {
            Some(code) => sqlx::query("SELECT id FROM menus WHERE code = $1")
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("id"))
                .transpose()?,
            None => None,
        };
        sqlx::query(
            "INSERT INTO menus (id, parent_id, code, name_key, path, kind, sort, builtin) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
        )
        .bind(app.ids.next())
        .bind(parent)
        .bind(m.code)
        .bind(format!("menu.{}", m.code))
        .bind(m.path)
        .bind(m.kind)
        .bind(m.sort)
        .execute(&mut *tx)
        .await?;
    }
    for (code, name, domain) in [
        ("sysadmin", "System administrator", "technical"),
        ("bizadmin", "Business administrator", "business"),
    ] {
        let id: i64 = match sqlx::query("SELECT id FROM roles WHERE code = $1")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?
        {
            Some(r) => r.try_get("id")?,
            None => {
                let id = app.ids.next();
                sqlx::query(
                    "INSERT INTO roles (id, code, name, domain, data_scope, status, builtin, \
                     created_ms, updated_ms) VALUES ($1, $2, $3, $4, 'all', 'enabled', 1, $5, $5)",
                )
                .bind(id)
                .bind(code)
                .bind(name)
                .bind(domain)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        // Built-in roles always hold the whole catalogue of their domain.
        sqlx::query("DELETE FROM role_permissions WHERE role_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for p in PERMISSIONS.iter().filter(|p| p.domain.fits(domain)) {
            sqlx::query("INSERT INTO role_permissions (role_id, permission) VALUES ($1, $2)")
                .bind(id)
                .bind(p.code)
                .execute(&mut *tx)
                .await?;
        }
    }
    let head: i64 =
        match sqlx::query("SELECT id FROM orgs WHERE parent_id IS NULL ORDER BY id LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?
        {
            Some(r) => r.try_get("id")?,
            None => {
                let id = app.ids.next();
                sqlx::query(
                "INSERT INTO orgs (id, parent_id, code, name, level, path, created_ms, updated_ms) \
                 VALUES ($1, NULL, 'HO', 'Head Office', 'head_office', $2, $3, $3)",
            )
            .bind(id)
            .bind(format!("/{id}/"))
            .bind(now)
            .execute(&mut *tx)
            .await?;
                id
            }
        };
    let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
    if users == 0 {
        let (password, printed) = match init_password {
            Some(p) => {
                check_password_policy(&p, INIT_ADMIN).map_err(|e| {
                    anyhow::anyhow!("OPENTELLER_INIT_ADMIN_PASSWORD: {}", e.message)
                })?;
                (p, false)
            }
            None => (one_time_password(), true),
        };
        let hash = hash_password(password.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let id = app.ids.next();
        sqlx::query(
            "INSERT INTO users (id, username, display_name, password_hash, org_id, kind, enabled, \
             builtin, created_ms, updated_ms) \
             VALUES ($1, $2, 'Initial system administrator', $3, $4, 'technical', 1, 1, $5, $5)",
        )
        .bind(id)
        .bind(INIT_ADMIN)
        .bind(hash)
        .bind(head)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO user_roles (user_id, role_id) SELECT $1, id FROM roles WHERE code = 'sysadmin'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if printed {
            // Printed once, on the terminal only; never to the log.
            eprintln!(
                "\nbackoffice: first start. Initial administrator: {INIT_ADMIN}\n\
                 backoffice: one-time password (shown only now): {password}\n"
            );
        }
    }
    crate::platform::tasks::seed_builtin(&mut tx, app, now).await?;
    tx.commit().await?;
    Ok(())
}

fn one_time_password() -> String {
    use base64::Engine;
    let random =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>());
    // The fixed tail guarantees the policy's four character classes.
    format!("{random}#Aa7")
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_time_passwords_meet_the_policy() {
        for _ in 0..50 {
            let p = super::one_time_password();
            crate::auth::check_password_policy(&p, super::INIT_ADMIN).unwrap();
        }
    }
}
