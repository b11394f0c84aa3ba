//! Assembles the routes of the services this process runs, adds health, readiness, metrics
//! and the OpenAPI document, and serves until shutdown (then drains for a bounded time).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::error::{ApiError, Code};
use crate::http::envelope;

/// The router of `app`'s services.
pub fn router(app: AppState) -> Router {
    let mut r = Router::new()
        .route(
            "/healthz",
            get(|| async { envelope(StatusCode::OK, "OK", "alive", json!(null)) }),
        )
        .route("/readyz", get(ready))
        .route("/metrics", get(|| async { crate::metrics::render() }))
        .route(
            "/api/v2/openapi.json",
            get(|| async { axum::Json(crate::openapi::document()) }),
        );
    if app.runs("platform") {
        r = r
            .merge(crate::session::routes())
            .merge(crate::platform::routes());
    }
    if app.runs("audit") {
        r = r.merge(crate::audit::routes());
    }
    if app.runs("files") {
        r = r.merge(crate::files::routes(app.config.files.max_upload_bytes));
    }
    r = r.method_not_allowed_fallback(|| async {
        ApiError::new(Code::InvalidArgument, "method not allowed on this path").into_response()
    });
    #[cfg(feature = "console")]
    if app.runs("console") {
        r = r.fallback(crate::console::serve);
    }
    #[cfg(feature = "console")]
    let console = app.runs("console");
    #[cfg(not(feature = "console"))]
    let console = false;
    if !console {
        r = r.fallback(|| async { ApiError::not_found("route").into_response() });
    }
    r.layer(DefaultBodyLimit::max(app.config.http.max_body_bytes))
        .layer(axum::middleware::from_fn(crate::http::request_meta))
        .with_state(app)
}

async fn ready(State(app): State<AppState>) -> Response {
    let db = app.db.ping().await.is_ok();
    let cache = app.cache.ping().await.is_ok();
    let status = if db && cache {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let code = if status == StatusCode::OK {
        "OK"
    } else {
        "UNAVAILABLE"
    };
    envelope(
        status,
        code,
        "readiness",
        json!({"database": db, "cache": cache}),
    )
}

/// Serves `app` on `listener` until `shutdown`, then drains open requests for up to 10 s.
pub async fn serve(
    app: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let scheduler = app.runs("platform").then(|| {
        tokio::spawn(crate::platform::tasks::scheduler(
            app.clone(),
            shutdown.child_token(),
        ))
    });
    let router = router(app);
    let drain = shutdown.clone();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { drain.cancelled().await });
    let server = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("requests still open after 10 s; stopping anyway"),
    }
    if let Some(s) = scheduler {
        s.abort();
    }
    Ok(())
}
