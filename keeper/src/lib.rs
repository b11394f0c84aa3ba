//! The keeper: the one supervisor of an OpenTeller terminal (seed 001 §4.3.1 (2)).
//!
//! It starts the terminal's processes (the driver-proxies, then terminal-native) in dependency
//! order, watches them through their exit status, `grpc.health.v1` and heartbeats, restarts them
//! with capped, jittered exponential back-off inside a restart budget, escalates (service paused,
//! alarm) when the budget is spent, checks the host before start and while running, and offers a
//! local control API and CLI. See `docs/keeper.md`.
//!
//! Layout: [`config`] (the TOML file, validated up front), [`backoff`] (pure restart pacing),
//! [`environment`] (host checks), [`alarms`] (history + the [`alarms::AlarmSink`] seam),
//! [`supervisor`] (the runners), [`api`] (HTTP control API), [`client`] (its client, for the CLI),
//! [`host_commands`] (the seam for backoffice commands). [`run`] ties them together.
//!
//! Unix only: processes are managed through process groups and signals.

#![forbid(unsafe_code)]

pub mod alarms;
pub mod api;
pub mod backoff;
pub mod client;
pub mod config;
pub mod environment;
pub mod host_commands;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::alarms::AlarmSink;
use crate::config::{ControlAddr, Settings};
use crate::supervisor::Keeper;

/// Exit code: the keeper stopped cleanly.
pub const EXIT_OK: i32 = 0;
/// Exit code: a runtime failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code (`EX_USAGE`): bad command line or configuration; nothing was started.
pub const EXIT_USAGE: i32 = 64;
/// Exit code (`EX_UNAVAILABLE`): the control address is taken by a live keeper, or (CLI) the
/// keeper cannot be reached.
pub const EXIT_UNAVAILABLE: i32 = 69;

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The control address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A live process already serves the control socket.
    #[error("another live process serves {0}")]
    InUse(String),
    /// The control API failed while running.
    #[error("control API: {0}")]
    Serve(std::io::Error),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Bind { .. } | RunError::InUse(_) => EXIT_UNAVAILABLE,
            RunError::Serve(_) => EXIT_FAILURE,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

async fn bind(addr: &ControlAddr) -> Result<Listener, RunError> {
    let bind_err = |source| RunError::Bind {
        addr: addr.to_string(),
        source,
    };
    match addr {
        ControlAddr::Tcp(a) => Ok(Listener::Tcp(
            tokio::net::TcpListener::bind(a).await.map_err(bind_err)?,
        )),
        ControlAddr::Unix(path) => {
            if path.exists() {
                // A socket file left by a killed keeper is replaced; a live one is refused.
                if tokio::net::UnixStream::connect(path).await.is_ok() {
                    return Err(RunError::InUse(addr.to_string()));
                }
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            let l = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
            Ok(Listener::Unix(l, path.clone()))
        }
    }
}

/// Runs a keeper until `shutdown` fires: binds the control API first (so a second keeper fails
/// before starting anything), starts the processes, and on shutdown stops them in reverse order
/// before closing the API.
pub async fn run(
    settings: Settings,
    sinks: Vec<Arc<dyn AlarmSink>>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let listener = bind(&settings.control).await?;
    tracing::info!(control = %settings.control, "control API listening");
    let keeper = Keeper::start(settings, sinks);
    let router = api::router(keeper.handle());
    let api_stop = CancellationToken::new();
    let stop = api_stop.clone();
    let (server, socket) = match listener {
        Listener::Tcp(l) => (
            tokio::spawn(async move {
                axum::serve(l, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }),
            None,
        ),
        Listener::Unix(l, path) => (
            tokio::spawn(async move {
                axum::serve(l, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }),
            Some(path),
        ),
    };
    let mut server = server;
    let served = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut server => Some(r),
    };
    keeper.shutdown().await;
    api_stop.cancel();
    let result = match served {
        Some(r) => r,
        None => server.await,
    };
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Serve(e)),
        Err(e) => Err(RunError::Serve(std::io::Error::other(e))),
    }
}
