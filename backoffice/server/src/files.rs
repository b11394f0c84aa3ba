//! The file service (seed 001 §6.1.4, §6.8.2): uploads limited by type (checked against the
//! content, not only the name), size and name; stored in the object store under a generated
//! key without the client's name or extension; served back only as attachments with
//! `nosniff` and a sandbox policy, so nothing uploaded ever runs in the console's origin.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::app::AppState;
use crate::audit::{self, Change};
use crate::auth::Ctx;
use crate::db::Where;
use crate::error::{ApiError, ApiResult, Code};
use crate::http::{QueryMap, ok, path_id};
use crate::ids::{now_ms, rfc3339};
use crate::platform::rows::{by_id, paged};

/// Extensions accepted, with the content type they are served as.
const TYPES: [(&str, &str); 7] = [
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("zip", "application/zip"),
];

/// The file routes; `max_upload` bounds the request body.
pub fn routes(max_upload: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v2/files",
            get(list)
                .post(upload)
                .layer(DefaultBodyLimit::max(max_upload + 64 * 1024)),
        )
        .route("/api/v2/files/{id}", get(download).delete(remove))
}

/// A stored file.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    id: String,
    name: String,
    content_type: String,
    size: i64,
    created_at: String,
    #[serde(skip)]
    object_key: String,
}

fn info(r: &AnyRow) -> Result<FileInfo, sqlx::Error> {
    Ok(FileInfo {
        id: r.try_get::<i64, _>("id")?.to_string(),
        name: r.try_get("name")?,
        content_type: r.try_get("content_type")?,
        size: r.try_get("size")?,
        created_at: rfc3339(r.try_get("created_ms")?),
        object_key: r.try_get("object_key")?,
    })
}

/// Checks a client file name: a plain name (no path), 1–100 characters, no control
/// characters, with an accepted extension. Returns the content type.
pub fn check_name(name: &str) -> ApiResult<&'static str> {
    let ok_chars = !name.is_empty()
        && name.chars().count() <= 100
        && !name.chars().any(|c| {
            c.is_control() || matches!(c, '/' | '\\' | ':' | '"' | '<' | '>' | '|' | '*' | '?')
        })
        && !name.starts_with('.');
    if !ok_chars {
        return Err(ApiError::invalid(
            "the file name must be a plain name of 1 to 100 characters",
        ));
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            ApiError::new(
                Code::UnsupportedMediaType,
                "only png, jpg, pdf, txt, csv and zip files are accepted",
            )
        })
}

/// Whether `data` really is of `content_type` (magic numbers; text must be UTF-8 without NUL).
pub fn content_matches(content_type: &str, data: &[u8]) -> bool {
    match content_type {
        "image/png" => data.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => data.starts_with(&[0xFF, 0xD8, 0xFF]),
        "application/pdf" => data.starts_with(b"%PDF-"),
        "application/zip" => data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06"),
        t if t.starts_with("text/") => std::str::from_utf8(data).is_ok() && !data.contains(&0),
        _ => false,
    }
}

async fn upload(ctx: Ctx, mut form: Multipart) -> ApiResult<Response> {
    ctx.require("files:file:upload").await?;
    let max = ctx.app.config.files.max_upload_bytes;
    let mut found: Option<(String, &'static str, Bytes)> = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(e.status(), &e.body_text()))?
    {
        if field.name() != Some("file") {
            return Err(ApiError::invalid("the only form field is `file`"));
        }
        if found.is_some() {
            return Err(ApiError::invalid("one file per upload"));
        }
        let name = field.file_name().unwrap_or_default().to_owned();
        let content_type = check_name(&name)?;
        let data = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), &e.body_text()))?;
        found = Some((name, content_type, data));
    }
    let (name, content_type, data) = found.ok_or_else(|| ApiError::invalid("no `file` field"))?;
    if data.len() > max {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!("files are limited to {max} bytes"),
        ));
    }
    if data.is_empty() || !content_matches(content_type, &data) {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "the content does not match the file type",
        ));
    }
    let id = ctx.app.ids.next();
    let now = now_ms();
    let key = format!("uploads/{id}");
    ctx.app
        .objects
        .put(&key, data.clone(), content_type)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "object store");
            ApiError::new(Code::Unavailable, "the object store failed")
        })?;
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO files (id, name, content_type, size, object_key, created_by, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(name)
    .bind(content_type)
    .bind(data.len() as i64)
    .bind(key)
    .bind(ctx.principal.user_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let created = by_id(&mut tx, "files", id, "file", info).await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("file.upload", "file", &created.id).after(&created),
    )
    .await?;
    ok(created)
}

fn multipart_error(status: axum::http::StatusCode, text: &str) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(Code::PayloadTooLarge, "the upload is too large")
    } else {
        ApiError::invalid(format!("bad multipart body: {text}"))
    }
}

async fn list(ctx: Ctx, mut q: QueryMap) -> ApiResult<Response> {
    ctx.require("files:file:query").await?;
    let page = q.page()?;
    q.finish()?;
    paged(&ctx, page, "files", Where::new(), "created_ms", info).await
}

async fn load(ctx: &Ctx, id: i64) -> ApiResult<FileInfo> {
    let mut conn = ctx.app.db.pool().acquire().await?;
    by_id(&mut conn, "files", id, "file", info).await
}

async fn download(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("files:file:query").await?;
    let f = load(&ctx, path_id(&id)?).await?;
    let (data, _) = ctx
        .app
        .objects
        .get(&f.object_key)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "object store");
            ApiError::new(Code::Unavailable, "the object store failed")
        })?
        .ok_or_else(|| ApiError::not_found("file content"))?;
    let disposition = format!(
        "attachment; filename=\"download\"; filename*=UTF-8''{}",
        percent_encode(&f.name)
    );
    let mut response = data.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&f.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    Ok(response)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn remove(ctx: Ctx, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.require("files:file:delete").await?;
    let before = load(&ctx, path_id(&id)?).await?;
    let mut tx = ctx.app.db.pool().begin().await?;
    sqlx::query("DELETE FROM files WHERE id = $1")
        .bind(path_id(&before.id)?)
        .execute(&mut *tx)
        .await?;
    audit::commit(
        &ctx,
        tx,
        Change::new("file.delete", "file", &before.id).before(&before),
    )
    .await?;
    // The row is gone first: a failure here leaves an unreachable object, never a dangling row.
    if let Err(e) = ctx.app.objects.delete(&before.object_key).await {
        tracing::warn!(error = %e, key = %before.object_key, "object left behind");
    }
    ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_contents_are_checked() {
        assert_eq!(check_name("report.PDF").unwrap(), "application/pdf");
        for bad in [
            "../etc/passwd.txt",
            "a\\b.txt",
            ".htaccess",
            "x.exe",
            "x.html",
            "x.svg",
            "",
            "noext",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(content_matches("application/pdf", b"%PDF-1.7 ..."));
        assert!(!content_matches("image/png", b"<script>alert(1)</script>"));
        assert!(!content_matches("text/plain; charset=utf-8", b"a\0b"));
        assert!(content_matches(
            "text/csv; charset=utf-8",
            "a,b\n1,2".as_bytes()
        ));
    }
}
