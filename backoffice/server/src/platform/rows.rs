//! Shared row access of the simple aggregates: a paged `SELECT *` with filters, and one row by
//! id (`NOT_FOUND` when missing).

use axum::response::Response;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::auth::Ctx;
use crate::db::Where;
use crate::error::{ApiError, ApiResult};
use crate::http::{PageRequest, ok};

/// Maps a row to its API form.
pub(crate) type MapRow<T> = fn(&AnyRow) -> Result<T, sqlx::Error>;

/// Runs a paged `SELECT *` over `table` with `w`, ordered by `order`.
pub(crate) async fn paged<T: Serialize>(
    ctx: &Ctx,
    page: PageRequest,
    table: &str,
    w: Where,
    order: &str,
    map: MapRow<T>,
) -> ApiResult<Response> {
    let pool = ctx.app.db.pool();
    let total: i64 = w
        .bind(sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM {table}{}",
            w.sql()
        )))
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    let n = w.next_placeholder();
    let sql = format!(
        "SELECT * FROM {table}{} ORDER BY {order} {}, id LIMIT ${n} OFFSET ${}",
        w.sql(),
        page.order(),
        n + 1
    );
    let rows = w
        .bind(sqlx::query(&sql))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(pool)
        .await?;
    let rows = rows.iter().map(map).collect::<Result<Vec<_>, _>>()?;
    ok(page.page(total, rows))
}

/// The row of `table` with `id`, mapped; `NOT_FOUND` ("no such `what`") when there is none.
pub(crate) async fn by_id<T>(
    conn: &mut AnyConnection,
    table: &str,
    id: i64,
    what: &str,
    map: MapRow<T>,
) -> ApiResult<T> {
    let row = sqlx::query(&format!("SELECT * FROM {table} WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found(what))?;
    Ok(map(&row)?)
}
