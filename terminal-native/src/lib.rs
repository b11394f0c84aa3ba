//! terminal-native: the native host of an OpenTeller terminal (see docs/terminal-native.md).
//!
//! The business pages talk to the host through the SJSL bridge ([`bridge::Bridge`]: JSON
//! messages with request ids, transport-agnostic). Headless, the bridge is served over a
//! WebSocket next to the business package's static files ([`server`]); the windowed tao + wry
//! host will feed the same `Bridge` from wry's IPC handler.
//!
//! Behind the bridge: the device manager ([`devices`]: gRPC clients of the driver-proxies,
//! reconnecting, aggregated health), the safety gate ([`rules`] over the transaction-state table
//! in [`state`]), the electronic journal ([`journal`]), alarms ([`alarms`]) and, optionally,
//! heartbeats to the keeper. [`Terminal`] ties them together; [`run`] serves it until shutdown.

#![forbid(unsafe_code)]

pub mod alarms;
pub mod bridge;
pub mod config;
pub mod devices;
pub mod journal;
mod keeper;
pub mod package;
pub mod recovery;
pub mod rules;
pub mod selfcheck;
pub mod server;
pub mod state;
pub mod txn;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alarms::{Alarm, AlarmSink, LogSink};
use crate::config::Settings;
use crate::devices::{DeviceManager, DeviceView, Health, Outlets};
use crate::journal::EJournal;
use crate::rules::{Gate, SessionView};
use crate::state::TxnTable;
use crate::txn::TxnClient;

/// Exit code: stopped cleanly.
pub const EXIT_OK: i32 = 0;
/// Exit code: a runtime failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code (`EX_USAGE`): bad command line or configuration; nothing was bound.
pub const EXIT_USAGE: i32 = 64;
/// Exit code (`EX_UNAVAILABLE`): the listen address cannot be bound.
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code (`EX_CONFIG`): the journal or state directory is unusable, or the state corrupt.
pub const EXIT_STATE: i32 = 78;

/// Why the terminal could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The electronic journal directory is unusable.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// The transaction state is unusable.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The transaction client could not be created.
    #[error("transaction client: {0}")]
    Txn(String),
    /// A device client could not be created.
    #[error(transparent)]
    Device(#[from] devices::DeviceError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("headless server: {0}")]
    Serve(std::io::Error),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Journal(_) | RunError::State(_) => EXIT_STATE,
            RunError::Device(_) | RunError::Txn(_) => EXIT_USAGE,
            RunError::Bind { .. } => EXIT_UNAVAILABLE,
            RunError::Serve(_) => EXIT_FAILURE,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Service {
    paused: bool,
    reason: Option<String>,
}

/// The aggregated status `terminal.status` answers and the `terminal.status` event carries.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalStatus {
    /// This terminal.
    pub terminal_id: String,
    /// Every critical device online and the service not paused.
    pub in_service: bool,
    /// Paused by the keeper (operator or escalation).
    pub paused: bool,
    /// The keeper's reason.
    pub pause_reason: Option<String>,
    /// Why the terminal is out of service (empty when in service).
    pub out_of_service_reasons: Vec<String>,
    /// Every device.
    pub devices: Vec<DeviceView>,
    /// The customer session.
    pub session: SessionView,
    /// The business package being served (see [`package`]).
    pub business_package: package::PackageInfo,
}

/// Sends fraud and other alarms to every connected page as `terminal.alarm`.
struct PageSink(broadcast::Sender<String>);

impl AlarmSink for PageSink {
    fn deliver(&self, alarm: &Alarm) {
        let _ = self
            .0
            .send(json!({"event": "terminal.alarm", "data": alarm}).to_string());
    }
}

/// One terminal host: settings, device manager, safety gate, page events, background tasks.
pub struct Terminal {
    settings: Settings,
    devices: DeviceManager,
    gate: Gate,
    txn: Option<TxnClient>,
    events: broadcast::Sender<String>,
    service: Mutex<Service>,
    changed: Arc<Notify>,
    data: bridge::DataPool,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("terminal_id", &self.settings.terminal_id)
            .finish_non_exhaustive()
    }
}

impl Terminal {
    /// Opens the journal and the state table, starts the device links, the status watcher
    /// and (if configured) the keeper heartbeats. Extra alarm sinks come after the log and
    /// page sinks.
    pub fn start(
        settings: Settings,
        extra_sinks: Vec<Arc<dyn AlarmSink>>,
    ) -> Result<Arc<Terminal>, RunError> {
        let journal = EJournal::open(&settings.journal_dir, &settings.terminal_id)?;
        let table = Arc::new(TxnTable::load(&settings.state_dir, &settings.terminal_id)?);
        // Invariant 2: before anything can use the log, what a crash left open is decided.
        let recovered = table.recover_after_restart()?;
        let (events, _) = broadcast::channel(1024);
        let changed = Arc::new(Notify::new());
        let mut sinks: Vec<Arc<dyn AlarmSink>> =
            vec![Arc::new(LogSink), Arc::new(PageSink(events.clone()))];
        sinks.extend(extra_sinks);
        let gate = Gate::new(table, journal.clone(), sinks, settings.max_pin_attempts);
        let devices = DeviceManager::start(
            &settings.devices,
            Outlets {
                events: events.clone(),
                changed: changed.clone(),
                journal,
            },
        )?;
        let txn = match &settings.online {
            Some(o) => Some(
                TxnClient::new(o.clone(), &settings.terminal_id, settings.state_dir.clone())
                    .map_err(RunError::Txn)?,
            ),
            None => None,
        };
        let terminal = Arc::new(Terminal {
            settings,
            devices,
            gate,
            txn,
            events,
            service: Mutex::new(Service::default()),
            changed,
            data: bridge::DataPool::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        });
        terminal
            .tasks
            .spawn(watch_status(terminal.clone(), terminal.stop.clone()));
        {
            let t = terminal.clone();
            terminal.tasks.spawn(async move {
                t.gate
                    .journal()
                    .note(format!("PACKAGE {}", t.settings.package.label()))
                    .await;
                for line in recovered {
                    t.gate.journal().note(line).await;
                }
                recovery::run_settler(t.clone(), t.stop.clone()).await;
            });
        }
        terminal
            .tasks
            .spawn(selfcheck::run(terminal.clone(), terminal.stop.clone()));
        if terminal.txn.is_some() {
            let t = terminal.clone();
            terminal.tasks.spawn(async move {
                if let Some(client) = t.txn() {
                    client.run_reversals(t.clone(), t.stop.clone()).await;
                }
            });
            terminal.tasks.spawn(selfcheck::run_sign_on(
                terminal.clone(),
                terminal.stop.clone(),
            ));
        }
        if let Some(k) = terminal.settings.keeper.clone() {
            terminal
                .tasks
                .spawn(keeper::run(terminal.clone(), k, terminal.stop.clone()));
        }
        Ok(terminal)
    }

    /// Stops the background tasks and device links.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.devices.shutdown().await;
    }

    /// The configuration.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The device manager.
    pub fn devices(&self) -> &DeviceManager {
        &self.devices
    }

    /// The safety gate (and through it the state table and the journal).
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The pages' data pool (`data.*`).
    pub fn data(&self) -> &bridge::DataPool {
        &self.data
    }

    /// The transaction client, when `[online]` is configured.
    pub fn txn(&self) -> Option<&TxnClient> {
        self.txn.as_ref()
    }

    /// Terminal-wide page events.
    pub fn subscribe_events(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// Sends `{"event": name, "data": data}` to every page.
    pub fn page_event(&self, name: &str, data: serde_json::Value) {
        let _ = self
            .events
            .send(json!({"event": name, "data": data}).to_string());
    }

    /// Asks the status watcher to look again (something the status depends on changed).
    pub fn poke_status(&self) {
        self.changed.notify_one();
    }

    /// The aggregated status.
    pub fn status(&self) -> TerminalStatus {
        let devices = self.devices.views();
        let service = self
            .service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut reasons = Vec::new();
        if service.paused {
            reasons.push(format!(
                "paused by the keeper{}",
                service
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
        }
        if self.txn.as_ref().is_some_and(|c| !c.signed_on()) {
            reasons.push("not signed on to online-txn".to_owned());
        }
        for d in devices
            .iter()
            .filter(|d| d.critical && d.health != Health::Online)
        {
            reasons.push(format!(
                "{} is {}",
                d.name,
                serde_json::to_value(d.health)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ));
        }
        TerminalStatus {
            terminal_id: self.settings.terminal_id.clone(),
            in_service: reasons.is_empty(),
            paused: service.paused,
            pause_reason: service.reason,
            out_of_service_reasons: reasons,
            devices,
            session: self.gate.session(),
            business_package: self.settings.package.clone(),
        }
    }

    /// Follows the keeper's service flag.
    pub(crate) async fn set_service_paused(&self, paused: bool, reason: Option<String>) {
        let next = Service {
            paused,
            reason: if paused { reason } else { None },
        };
        let changed = {
            let mut s = self.service.lock().unwrap_or_else(|p| p.into_inner());
            let changed = s.paused != next.paused;
            *s = next.clone();
            changed
        };
        if changed {
            self.gate.set_paused(paused);
            let what = if paused { "PAUSED" } else { "RESUMED" };
            self.gate
                .journal()
                .note(format!(
                    "SERVICE {what} by the keeper{}",
                    next.reason.map(|r| format!(": {r}")).unwrap_or_default()
                ))
                .await;
            self.changed.notify_one();
        }
    }
}

/// Emits `terminal.status` whenever the in-service decision, the pause flag or a device's
/// health changes.
async fn watch_status(terminal: Arc<Terminal>, stop: CancellationToken) {
    let key = |s: &TerminalStatus| {
        (
            s.in_service,
            s.paused,
            s.devices
                .iter()
                .map(|d| (d.connected, d.health))
                .collect::<Vec<_>>(),
        )
    };
    let mut last = key(&terminal.status());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = terminal.changed.notified() => {}
        }
        let status = terminal.status();
        let k = key(&status);
        if k != last {
            if k.0 != last.0 {
                tracing::info!(in_service = status.in_service, reasons = ?status.out_of_service_reasons, "terminal service state changed");
            }
            last = k;
            let _ = terminal
                .events
                .send(json!({"event": "terminal.status", "data": status}).to_string());
        }
    }
}

/// Starts the terminal, binds the headless bridge on `settings.listen`, reports the bound
/// address through `bound`, and serves until `shutdown`.
pub async fn run(
    settings: Settings,
    shutdown: CancellationToken,
    bound: impl FnOnce(SocketAddr),
) -> Result<(), RunError> {
    let addr = settings.listen;
    let terminal = Terminal::start(settings, Vec::new())?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(source) => {
            terminal.shutdown().await;
            return Err(RunError::Bind { addr, source });
        }
    };
    let local = listener.local_addr().map_err(RunError::Serve)?;
    bound(local);
    tracing::info!(%local, terminal = %terminal.settings.terminal_id, "headless bridge listening");
    let served = axum::serve(listener, server::router(terminal.clone()))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    terminal.shutdown().await;
    served.map_err(RunError::Serve)
}
