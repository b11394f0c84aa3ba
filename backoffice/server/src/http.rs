//! HTTP conventions of seed 001 §6.3.1: the `{code, message, data}` envelope, paging, strict
//! JSON bodies and query strings, and the per-request metadata (trace id, transaction-group id,
//! client address) every handler and the audit log use.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::error::{ApiError, ApiResult, Code};

/// Largest page size.
pub const MAX_PAGE_SIZE: i64 = 200;

/// Writes an envelope with `status`.
pub fn envelope(status: StatusCode, code: &str, message: &str, data: Value) -> Response {
    let body = json!({"code": code, "message": message, "data": data});
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A successful answer carrying `data`.
pub fn ok<T: Serialize>(data: T) -> ApiResult<Response> {
    let data = serde_json::to_value(data)
        .map_err(|e| ApiError::new(Code::Internal, format!("serialising the answer: {e}")))?;
    Ok(envelope(StatusCode::OK, "OK", "ok", data))
}

/// A JSON request body that must be an object matching `T` exactly (unknown fields refused by
/// `T`'s `deny_unknown_fields`).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or_default().trim();
                mime.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                Code::UnsupportedMediaType,
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(Code::PayloadTooLarge, "the body is too large")
            } else {
                ApiError::invalid(format!("cannot read the body: {e}"))
            }
        })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::invalid("the body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| ApiError::invalid(format!("invalid body: {e}")))
    }
}

/// The query string as named values; handlers take what they know and [`QueryMap::finish`]
/// refuses the rest, so a misspelt filter is an error rather than silently ignored.
#[derive(Debug, Default)]
pub struct QueryMap(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded_pairs(parts.uri.query().unwrap_or_default())? {
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::invalid(format!(
                    "query parameter {k} given twice"
                )));
            }
        }
        Ok(QueryMap(map))
    }
}

fn form_urlencoded_pairs(query: &str) -> ApiResult<Vec<(String, String)>> {
    serde_urlencoded_pairs(query).map_err(|e| ApiError::invalid(format!("bad query string: {e}")))
}

fn serde_urlencoded_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "bad percent escape".to_owned())?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_owned())
}

impl QueryMap {
    /// A text filter; empty means absent.
    pub fn text(&mut self, name: &str) -> ApiResult<Option<String>> {
        match self.0.remove(name) {
            Some(v) if v.is_empty() => Ok(None),
            Some(v) if v.chars().count() > 200 => {
                Err(ApiError::invalid(format!("{name} is too long")))
            }
            other => Ok(other),
        }
    }

    /// An integer filter (ids are decimal strings).
    pub fn id(&mut self, name: &str) -> ApiResult<Option<i64>> {
        self.text(name)?
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid(format!("{name} must be a decimal id")))
            })
            .transpose()
    }

    /// A boolean filter (`true` / `false`).
    pub fn flag(&mut self, name: &str) -> ApiResult<Option<bool>> {
        self.text(name)?
            .map(|v| match v.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ApiError::invalid(format!("{name} must be true or false"))),
            })
            .transpose()
    }

    /// An RFC 3339 time filter, as Unix ms.
    pub fn time(&mut self, name: &str) -> ApiResult<Option<i64>> {
        self.text(name)?
            .map(|v| {
                crate::ids::parse_rfc3339(&v)
                    .ok_or_else(|| ApiError::invalid(format!("{name} must be an RFC 3339 time")))
            })
            .transpose()
    }

    /// A value that must be one of `allowed`.
    pub fn one_of(&mut self, name: &str, allowed: &[&str]) -> ApiResult<Option<String>> {
        match self.text(name)? {
            Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::invalid(format!(
                "{name} must be one of {}",
                allowed.join(", ")
            ))),
            other => Ok(other),
        }
    }

    /// The paging parameters (`pageNo`, `pageSize`, `sortOrder`).
    pub fn page(&mut self) -> ApiResult<PageRequest> {
        let number = |v: Option<String>, name: &str, default: i64, max: i64| -> ApiResult<i64> {
            match v {
                None => Ok(default),
                Some(v) => match v.parse::<i64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(ApiError::invalid(format!("{name} must be 1..={max}"))),
                },
            }
        };
        let page_no = number(self.text("pageNo")?, "pageNo", 1, 1_000_000)?;
        let page_size = number(self.text("pageSize")?, "pageSize", 20, MAX_PAGE_SIZE)?;
        let ascending = self.one_of("sortOrder", &["asc", "desc"])?.as_deref() == Some("asc");
        Ok(PageRequest {
            page_no,
            page_size,
            ascending,
        })
    }

    /// Refuses parameters nobody took.
    pub fn finish(self) -> ApiResult<()> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::invalid(format!("unknown query parameter {k}"))),
        }
    }
}

/// Paging asked for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    /// 1-based page number.
    pub page_no: i64,
    /// Rows per page.
    pub page_size: i64,
    /// Oldest first (else newest first).
    pub ascending: bool,
}

impl PageRequest {
    /// Rows to skip.
    pub fn offset(&self) -> i64 {
        (self.page_no - 1) * self.page_size
    }

    /// `ASC` or `DESC`.
    pub fn order(&self) -> &'static str {
        if self.ascending { "ASC" } else { "DESC" }
    }

    /// Wraps one page of rows.
    pub fn page<T: Serialize>(&self, total: i64, rows: Vec<T>) -> Page<T> {
        Page {
            page_no: self.page_no,
            page_size: self.page_size,
            total_count: total,
            total_pages: (total + self.page_size - 1) / self.page_size,
            rows,
        }
    }
}

/// The paging structure of seed 001 §6.3.1.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// This page's number.
    pub page_no: i64,
    /// Rows per page.
    pub page_size: i64,
    /// Rows in all pages.
    pub total_count: i64,
    /// Number of pages.
    pub total_pages: i64,
    /// This page's rows.
    pub rows: Vec<T>,
}

/// A path id (decimal).
pub fn path_id(raw: &str) -> ApiResult<i64> {
    raw.parse()
        .map_err(|_| ApiError::invalid("the id in the path must be a decimal number"))
}

/// Who asked and how, for logs and the audit log.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// 32 hex digits, also sent back as `X-Trace-Id`.
    pub trace_id: String,
    /// The client's `X-Txn-Group-Id`, else the trace id.
    pub txn_group_id: String,
    /// The peer address (IP only).
    pub address: String,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestMeta>()
            .cloned()
            .ok_or_else(|| ApiError::new(Code::Internal, "request metadata missing"))
    }
}

fn header_token(parts: &Request, name: &str) -> Option<String> {
    let v = parts.headers().get(name)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| v.to_owned())
}

/// Middleware: assigns the trace id, reads the transaction group and address, runs the request
/// in a span carrying them, counts it, and sends `X-Trace-Id` back.
pub async fn request_meta(mut req: Request, next: Next) -> Response {
    let trace_id = header_token(&req, "x-trace-id")
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
    let txn_group_id = header_token(&req, "x-txn-group-id").unwrap_or_else(|| trace_id.clone());
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    req.extensions_mut().insert(RequestMeta {
        trace_id: trace_id.clone(),
        txn_group_id,
        address,
    });
    let span = tracing::info_span!("request", trace_id = %trace_id, %method, %path);
    let started = std::time::Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    crate::metrics::record_request(status, started.elapsed());
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "done"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-trace-id", v);
    }
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_and_unknown_parameters_are_refused() {
        let pairs = serde_urlencoded_pairs("a=1&b=x%20y+z&c=").unwrap();
        assert_eq!(pairs[1], ("b".into(), "x y z".into()));
        assert!(serde_urlencoded_pairs("a=%zz").is_err());
        assert!(serde_urlencoded_pairs("a=%ff").is_err());
        let mut q = QueryMap(pairs.into_iter().collect());
        assert_eq!(q.id("a").unwrap(), Some(1));
        assert_eq!(q.text("c").unwrap(), None);
        assert!(
            q.finish()
                .unwrap_err()
                .message
                .contains("unknown query parameter b")
        );
    }

    proptest::proptest! {
        /// Any query string, however hostile, is parsed or refused without a panic, and
        /// every filter accessor answers with a value or an INVALID_ARGUMENT.
        #[test]
        fn arbitrary_query_strings_never_panic(query in "\\PC{0,200}", raw in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            for q in [query.clone(), String::from_utf8_lossy(&raw).into_owned()] {
                if let Ok(pairs) = serde_urlencoded_pairs(&q) {
                    let mut map = QueryMap(pairs.into_iter().collect());
                    let _ = map.page();
                    let _ = map.id("id");
                    let _ = map.time("from");
                    let _ = map.flag("allowed");
                    let _ = map.finish();
                }
            }
        }
    }

    #[test]
    fn paging_is_checked() {
        let q = |s: &str| QueryMap(serde_urlencoded_pairs(s).unwrap().into_iter().collect());
        let p = q("pageNo=3&pageSize=10&sortOrder=asc").page().unwrap();
        assert_eq!((p.offset(), p.order()), (20, "ASC"));
        assert_eq!(p.page(21, Vec::<i64>::new()).total_pages, 3);
        for bad in [
            "pageNo=0",
            "pageSize=201",
            "pageSize=x",
            "sortOrder=up",
            "pageNo=-1",
        ] {
            assert!(q(bad).page().is_err(), "{bad}");
        }
    }
}
