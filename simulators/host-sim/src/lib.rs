//! # openteller-host-sim
//!
//! A simulated bank host for OpenTeller's online transaction engine (seed 001 §13, "host
//! 仿真主机"): ISO 8583 over TCP in the `cup` profile, accounts seeded from a file, PIN
//! verification under the ZPK, MAC checks under the ZAK, balance inquiry, withdrawal,
//! transfer, PIN change, idempotent retransmissions and reversals, and fault injection
//! (delay, dropped responses, forced response codes, disconnects) through a control API.
//!
//! Layout:
//! * [`wire`]: the wire contract as code: framing, [`wire::mac_input`], [`wire::MacKey`],
//!   F54 / F90 layouts, response codes. The engine can reuse it.
//! * [`client`]: a small framed client and a test [`client::Terminal`] that builds requests.
//! * [`config`], [`accounts`], [`faults`]: the configuration, the accounts file and the
//!   fault settings, all validated before anything is bound.
//! * [`HostSim`]: binds the 8583 and control ports and runs until told to stop.
//! * [`cli`]: the `host-sim` binary (`serve`, `faults`, `disconnect`, `accounts`, ...).
//!
//! What it must never do: panic on any input bytes, hold its state lock across an
//! `.await`, or log a PIN, a key or a full PAN (PANs are masked: first 6, last 4).

#![forbid(unsafe_code)]

pub mod accounts;
pub mod cli;
pub mod client;
mod clock;
pub mod config;
mod control;
pub mod faults;
mod host;
mod journal;
pub mod listeners;
mod server;
mod state;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

pub use config::{Config, ConfigError, HostKeys};
pub use faults::{Faults, FaultsUpdate};
pub use state::{AccountView, JournalEntry, OriginalRef, Summary, Totals, TxnKind};
pub use wire::mac_input;

use crate::host::Host;
use crate::journal::JournalWriter;

/// Errors starting or running the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The journal file cannot be opened.
    #[error("journal {path}: {source}")]
    Journal {
        /// The journal path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A port cannot be bound.
    #[error("cannot bind the {what} address {addr}: {source}")]
    Bind {
        /// `8583` or `control`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A host with its ports bound, ready to [`run`](HostSim::run).
pub struct HostSim {
    host: Arc<Host>,
    listener: TcpListener,
    control: TcpListener,
    formats: Vec<listeners::Bound>,
    journal: Option<JournalWriter>,
    max_connections: usize,
}

impl HostSim {
    /// Opens the journal and binds both ports (port 0 picks a free one).
    pub async fn bind(config: Config) -> Result<HostSim, Error> {
        let spec = wire::spec().map_err(|e| ConfigError(format!("codec profile: {e}")))?;
        let (journal, tx) = match &config.journal {
            Some(path) => {
                let (w, tx) = JournalWriter::open(path).map_err(|source| Error::Journal {
                    path: path.display().to_string(),
                    source,
                })?;
                (Some(w), Some(tx))
            }
            None => (None, None),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                what: "8583",
                addr: config.listen,
                source,
            })?;
        let control = TcpListener::bind(config.control)
            .await
            .map_err(|source| Error::Bind {
                what: "control",
                addr: config.control,
                source,
            })?;
        let mut formats = Vec::new();
        for l in &config.listeners {
            let listener = TcpListener::bind(l.listen)
                .await
                .map_err(|source| Error::Bind {
                    what: "format listener",
                    addr: l.listen,
                    source,
                })?;
            formats.push(listeners::Bound {
                config: l.clone(),
                listener,
            });
        }
        if !config.control.ip().is_loopback() {
            tracing::warn!(addr = %config.control, "the control API has no authentication and is not on loopback");
        }
        info!(
            accounts = config.accounts.len(),
            zpk_kcv = %openteller_crypto::kcv_hex(&config.keys.zpk),
            zak_kcv = %config.keys.mac.kcv_hex(),
            mac = ?config.keys.mac.algorithm(),
            "host ready"
        );
        Ok(HostSim {
            host: Arc::new(Host::new(&config, spec, tx)),
            listener,
            control,
            formats,
            journal,
            max_connections: config.max_connections,
        })
    }

    /// The bound format listeners: `(name, address)`, in configuration order.
    pub fn format_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.formats
            .iter()
            .filter_map(|b| Some((b.config.name.clone(), b.listener.local_addr().ok()?)))
            .collect()
    }

    /// The bound 8583 address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound control API address.
    pub fn control_addr(&self) -> std::io::Result<SocketAddr> {
        self.control.local_addr()
    }

    /// Serves until `shutdown` completes, then closes every connection, stops the control
    /// API and flushes the journal.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let HostSim {
            host,
            listener,
            control,
            formats,
            journal,
            max_connections,
        } = self;
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let format_tasks: Vec<_> = formats
            .into_iter()
            .map(|b| {
                tokio::spawn(listeners::serve(
                    b,
                    host.clone(),
                    token.clone(),
                    tracker.clone(),
                ))
            })
            .collect();
        let accept = tokio::spawn(server::serve(
            listener,
            host.clone(),
            token.clone(),
            tracker.clone(),
            Arc::new(Semaphore::new(max_connections)),
        ));
        let api = {
            let token = token.clone();
            let router = control::router(host.clone());
            tokio::spawn(async move {
                axum::serve(control, router)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
            })
        };
        shutdown.await;
        info!("shutting down");
        token.cancel();
        let _ = accept.await;
        for t in format_tasks {
            let _ = t.await;
        }
        tracker.close();
        tracker.wait().await;
        match api.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "control API failed"),
            Err(e) => error!(error = %e, "control API task failed"),
        }
        host.lock().close_journal();
        if let Some(j) = journal {
            let _ = tokio::task::spawn_blocking(move || j.finish()).await;
        }
        Ok(())
    }

    /// Binds and runs in a background task; for tests and embedding.
    pub async fn spawn(config: Config) -> Result<RunningHostSim, Error> {
        let sim = HostSim::bind(config).await?;
        let addr = sim.local_addr()?;
        let control_addr = sim.control_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(sim.run(stop.clone().cancelled_owned()));
        Ok(RunningHostSim {
            addr,
            control_addr,
            stop,
            task,
        })
    }
}

/// A host running in a background task ([`HostSim::spawn`]).
pub struct RunningHostSim {
    addr: SocketAddr,
    control_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl RunningHostSim {
    /// The 8583 address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The control API address.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Stops it and waits until the journal is flushed.
    pub async fn stop(self) -> Result<(), Error> {
        self.stop.cancel();
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Io(std::io::Error::other(e))),
        }
    }
}
