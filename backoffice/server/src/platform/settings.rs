//! System settings kept in the database (name → value), e.g. whether the initial administrator
//! has been retired.

use sqlx::{AnyConnection, Row};

use crate::error::ApiResult;

/// Reads a setting.
pub(crate) async fn get(conn: &mut AnyConnection, name: &str) -> ApiResult<Option<String>> {
    Ok(sqlx::query("SELECT value FROM settings WHERE name = $1")
        .bind(name.to_owned())
        .fetch_optional(conn)
        .await?
        .map(|r| r.try_get("value"))
        .transpose()?)
}

/// Writes a setting.
pub(crate) async fn set(conn: &mut AnyConnection, name: &str, value: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM settings WHERE name = $1")
        .bind(name.to_owned())
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2)")
        .bind(name.to_owned())
        .bind(value.to_owned())
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether the initial administrator is disabled for good.
pub(crate) async fn init_admin_retired(conn: &mut AnyConnection) -> ApiResult<bool> {
    Ok(get(conn, "init_admin_retired").await?.as_deref() == Some("1"))
}
