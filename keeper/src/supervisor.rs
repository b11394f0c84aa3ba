//! The supervisor: one task per process that starts it when its dependencies are healthy and
//! the host passes its hard minimums, watches it (exit, gRPC health, heartbeats), restarts it with
//! back-off within its budget, and stops it on request. A monitor task re-checks the host.
//!
//! Every child is spawned as the leader of its own process group, so stopping it reaches the
//! helpers it forked too, and `kill_on_drop` covers a runner dropped without a clean stop. No
//! task here outlives [`Keeper::shutdown`], which stops processes in reverse start order.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use openteller_proto::Endpoint;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::alarms::{AlarmKind, AlarmSink, Alarms, Severity};
use crate::backoff::{Decision, RestartTracker};
use crate::config::{EnvironmentConfig, ProcessSpec, Settings};
use crate::environment::{self, Finding, Reading};
use crate::unix_ms;

/// How many restart times are kept per process in its status.
const RESTART_HISTORY: usize = 32;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    /// Not started yet: waiting for dependencies or for the host to pass its checks.
    Waiting,
    /// Running.
    Running,
    /// Ended unexpectedly; restart scheduled.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Stopped by the keeper's shutdown.
    Stopped,
    /// Given up on (permanent exit code or restart budget spent); needs `restart`.
    Failed,
}

/// The answer of the last gRPC health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpcHealth {
    /// Not checked yet in this run.
    Unknown,
    /// `SERVING`.
    Serving,
    /// Answered, but not `SERVING`.
    NotServing,
    /// No answer (connection refused, timeout).
    Unreachable,
}

/// Health of a process.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Running and every configured probe passes (the condition dependents wait for).
    pub healthy: bool,
    /// Last gRPC answer; absent when no gRPC probe is configured.
    pub grpc: Option<GrpcHealth>,
    /// When gRPC was last checked, unix ms.
    pub grpc_checked_at_ms: Option<u64>,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// Last heartbeat in this run, unix ms.
    pub last_heartbeat_ms: Option<u64>,
}

/// How a process last ended.
#[derive(Debug, Clone, Serialize)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if it was killed.
    pub signal: Option<i32>,
    /// When, unix ms.
    pub at_ms: u64,
    /// Why, in words (`exited with code 1`, `killed: heartbeat missed`, …).
    pub reason: String,
}

/// What the control API shows of a process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    /// Name.
    pub name: String,
    /// State.
    pub state: ProcState,
    /// PID while running.
    pub pid: Option<u32>,
    /// When the current run started, unix ms.
    pub started_at_ms: Option<u64>,
    /// How many times the keeper started it again (automatic and manual).
    pub restarts: u64,
    /// When the most recent restarts happened, unix ms, oldest first (at most 32).
    pub restart_times_ms: Vec<u64>,
    /// When the scheduled restart is due, unix ms (state `backoff`).
    pub next_restart_at_ms: Option<u64>,
    /// The last exit.
    pub last_exit: Option<ExitInfo>,
    /// Health.
    pub health: Health,
    /// What it waits for, or why it failed.
    pub detail: Option<String>,
}

/// The service flag terminal-native reads to show its out-of-service screen.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    /// True while out of service.
    pub paused: bool,
    /// Why (set on pause).
    pub reason: Option<String>,
    /// `operator` or `keeper` (escalation).
    pub paused_by: Option<String>,
    /// Since when the current state holds, unix ms.
    pub since_ms: u64,
    /// The terminal's own report (heartbeat `idle`): no customer session in progress.
    pub terminal_idle: Option<bool>,
}

/// The last host check.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentState {
    /// The sample.
    pub reading: Reading,
    /// Thresholds crossed.
    pub findings: Vec<Finding>,
    /// True while a hard minimum is violated: processes are not (re)started.
    pub blocked: bool,
}

/// Everything the status endpoint returns.
#[derive(Debug, Clone, Serialize)]
pub struct KeeperStatus {
    /// Service flag.
    pub service: ServiceState,
    /// Host.
    pub environment: EnvironmentState,
    /// Processes in start order.
    pub processes: Vec<ProcessStatus>,
}

/// Why a restart request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// No process of that name.
    #[error("no process named {0:?}")]
    UnknownProcess(String),
    /// The keeper is shutting down.
    #[error("the keeper is shutting down")]
    ShuttingDown,
}

enum Cmd {
    Restart,
}

struct Entry {
    spec: ProcessSpec,
    status: watch::Sender<ProcessStatus>,
    heartbeat: watch::Sender<Option<Instant>>,
    cmd: mpsc::Sender<Cmd>,
}

struct Shared {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    service: watch::Sender<ServiceState>,
    environment: watch::Sender<EnvironmentState>,
    alarms: Alarms,
}

/// A handle on a running keeper: what the control API talks to. Cheap to clone.
#[derive(Clone)]
pub struct KeeperHandle {
    shared: Arc<Shared>,
}

/// A running keeper: owns its tasks; [`Keeper::shutdown`] stops everything in order.
pub struct Keeper {
    handle: KeeperHandle,
    runners: Vec<(CancellationToken, JoinHandle<()>)>,
    monitor: (CancellationToken, JoinHandle<()>),
}

impl Keeper {
    /// Checks the host, then starts the monitor and one runner per process. Runners wait for
    /// their dependencies (and for the host to pass its hard minimums) before spawning.
    pub fn start(settings: Settings, sinks: Vec<Arc<dyn AlarmSink>>) -> Keeper {
        let alarms = Alarms::new(settings.alarm_history, sinks);
        let first = check_environment(&settings.environment);
        if first.blocked {
            let why: Vec<&str> = first
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Critical)
                .map(|f| f.message.as_str())
                .collect();
            alarms.raise(
                Severity::Critical,
                AlarmKind::EnvironmentRefused,
                "host",
                format!("not starting processes: {}", why.join("; ")),
            );
        }
        for f in first
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
        {
            alarms.raise(f.severity, f.kind, "host", f.message.clone());
        }
        let (environment, _) = watch::channel(first);
        let (service, _) = watch::channel(ServiceState {
            paused: false,
            reason: None,
            paused_by: None,
            since_ms: unix_ms(),
            terminal_idle: None,
        });
        let mut entries = Vec::new();
        let mut receivers = Vec::new();
        for spec in settings.processes {
            let (status, _) = watch::channel(initial_status(&spec));
            let (heartbeat, _) = watch::channel(None);
            let (cmd, rx) = mpsc::channel(8);
            receivers.push(rx);
            entries.push(Entry {
                spec,
                status,
                heartbeat,
                cmd,
            });
        }
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.spec.name.clone(), i))
            .collect();
        let shared = Arc::new(Shared {
            entries,
            index,
            service,
            environment,
            alarms,
        });
        let monitor_token = CancellationToken::new();
        let monitor = tokio::spawn(monitor_environment(
            shared.clone(),
            settings.environment,
            monitor_token.clone(),
        ));
        let runners = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let token = CancellationToken::new();
                let task = tokio::spawn(run_process(shared.clone(), i, rx, token.clone()));
                (token, task)
            })
            .collect();
        Keeper {
            handle: KeeperHandle { shared },
            runners,
            monitor: (monitor_token, monitor),
        }
    }

    /// The handle for the control API.
    pub fn handle(&self) -> KeeperHandle {
        self.handle.clone()
    }

    /// Stops every process in reverse start order (SIGTERM to its group, SIGKILL after its
    /// `stop_timeout_ms`), then the monitor.
    pub async fn shutdown(self) {
        tracing::info!("stopping processes in reverse start order");
        for (token, task) in self.runners.into_iter().rev() {
            token.cancel();
            if let Err(e) = task.await {
                tracing::error!("a process runner panicked: {e}");
            }
        }
        self.monitor.0.cancel();
        let _ = self.monitor.1.await;
    }
}

impl KeeperHandle {
    /// The whole status.
    pub fn status(&self) -> KeeperStatus {
        KeeperStatus {
            service: self.service(),
            environment: self.shared.environment.borrow().clone(),
            processes: self
                .shared
                .entries
                .iter()
                .map(|e| e.status.borrow().clone())
                .collect(),
        }
    }

    /// One process's status.
    pub fn process(&self, name: &str) -> Option<ProcessStatus> {
        let i = *self.shared.index.get(name)?;
        Some(self.shared.entries[i].status.borrow().clone())
    }

    /// The service flag.
    pub fn service(&self) -> ServiceState {
        self.shared.service.borrow().clone()
    }

    /// The alarm book.
    pub fn alarms(&self) -> &Alarms {
        &self.shared.alarms
    }

    /// The last host check.
    pub fn environment(&self) -> EnvironmentState {
        self.shared.environment.borrow().clone()
    }

    /// Asks for a restart: a running process is stopped and started at once, one in back-off
    /// is started now, a failed one gets a fresh restart budget.
    pub fn restart(&self, name: &str) -> Result<(), RequestError> {
        let i = *self
            .shared
            .index
            .get(name)
            .ok_or_else(|| RequestError::UnknownProcess(name.to_owned()))?;
        match self.shared.entries[i].cmd.try_send(Cmd::Restart) {
            // A full queue already holds a restart: the request is served by it.
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RequestError::ShuttingDown),
        }
    }

    /// Records a heartbeat; `idle` (from terminal-native) updates the service state.
    pub fn heartbeat(&self, name: &str, idle: Option<bool>) -> Result<ProcState, RequestError> {
        let i = *self
            .shared
            .index
            .get(name)
            .ok_or_else(|| RequestError::UnknownProcess(name.to_owned()))?;
        let entry = &self.shared.entries[i];
        entry.heartbeat.send_replace(Some(Instant::now()));
        if let Some(idle) = idle {
            self.shared
                .service
                .send_if_modified(|s| s.terminal_idle.replace(idle) != Some(idle));
        }
        Ok(entry.status.borrow().state)
    }

    /// Takes the terminal out of service.
    pub fn pause(&self, reason: Option<String>, by: &str) -> ServiceState {
        pause_service(&self.shared, reason, by);
        self.service()
    }

    /// Puts the terminal back in service. Processes the keeper gave up on stay failed until
    /// restarted by name.
    pub fn resume(&self) -> ServiceState {
        let resumed = self.shared.service.send_if_modified(|s| {
            if !s.paused {
                return false;
            }
            s.paused = false;
            s.reason = None;
            s.paused_by = None;
            s.since_ms = unix_ms();
            true
        });
        if resumed {
            tracing::info!("service resumed");
        }
        self.service()
    }
}

fn pause_service(shared: &Shared, reason: Option<String>, by: &str) {
    let paused = shared.service.send_if_modified(|s| {
        if s.paused {
            return false;
        }
        s.paused = true;
        s.reason = reason.clone();
        s.paused_by = Some(by.to_owned());
        s.since_ms = unix_ms();
        true
    });
    if paused {
        shared.alarms.raise(
            if by == "keeper" {
                Severity::Critical
            } else {
                Severity::Warning
            },
            AlarmKind::ServicePaused,
            "service",
            format!(
                "service paused by {by}: {}",
                reason.as_deref().unwrap_or("no reason given")
            ),
        );
    }
}

fn initial_status(spec: &ProcessSpec) -> ProcessStatus {
    ProcessStatus {
        name: spec.name.clone(),
        state: ProcState::Waiting,
        pid: None,
        started_at_ms: None,
        restarts: 0,
        restart_times_ms: Vec::new(),
        next_restart_at_ms: None,
        last_exit: None,
        health: Health {
            healthy: false,
            grpc: spec.grpc.as_ref().map(|_| GrpcHealth::Unknown),
            grpc_checked_at_ms: None,
            consecutive_failures: 0,
            last_heartbeat_ms: None,
        },
        detail: None,
    }
}

fn check_environment(config: &EnvironmentConfig) -> EnvironmentState {
    let reading = environment::read(config);
    let findings = environment::evaluate(config, &reading);
    EnvironmentState {
        blocked: environment::blocks_start(&findings),
        reading,
        findings,
    }
}

/// Re-checks the host every interval; raises an alarm when a check gets worse (not on every
/// sample), logs when it recovers.
async fn monitor_environment(
    shared: Arc<Shared>,
    config: EnvironmentConfig,
    token: CancellationToken,
) {
    let interval = Duration::from_millis(config.interval_ms);
    let mut previous: HashMap<String, Severity> = shared
        .environment
        .borrow()
        .findings
        .iter()
        .map(|f| (f.check.clone(), f.severity))
        .collect();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = sleep(interval) => {}
        }
        let state = check_environment(&config);
        let mut now: HashMap<String, Severity> = HashMap::new();
        for f in &state.findings {
            let worse = match previous.get(&f.check) {
                None => true,
                Some(Severity::Warning) => f.severity == Severity::Critical,
                Some(Severity::Critical) => false,
            };
            if worse {
                shared
                    .alarms
                    .raise(f.severity, f.kind, "host", f.message.clone());
            }
            now.insert(f.check.clone(), f.severity);
        }
        for check in previous.keys().filter(|k| !now.contains_key(*k)) {
            tracing::info!(check = %check, "host check back within limits");
        }
        let was_blocked = shared.environment.borrow().blocked;
        if was_blocked && !state.blocked {
            tracing::info!("host passes its hard minimums again; starting processes");
        } else if !was_blocked && state.blocked {
            tracing::error!("host below a hard minimum: processes that stop are not restarted");
        }
        previous = now;
        shared.environment.send_replace(state);
    }
}

/// How one run of a process ended.
enum RunEnd {
    /// It exited by itself, or was killed by the keeper for failing a probe (`killed_for`).
    Ended {
        status: Option<ExitStatus>,
        killed_for: Option<String>,
    },
    /// An operator asked for a restart; it was stopped.
    Restart,
    /// The keeper is shutting down; it was stopped.
    Shutdown,
}

async fn run_process(
    shared: Arc<Shared>,
    i: usize,
    mut cmd: mpsc::Receiver<Cmd>,
    token: CancellationToken,
) {
    let entry = &shared.entries[i];
    let spec = &entry.spec;
    let mut tracker = RestartTracker::new(spec.restart);
    let mut first_start = true;
    loop {
        // Gate: the host and the dependencies.
        let gate = wait_ready(&shared, spec);
        tokio::pin!(gate);
        loop {
            tokio::select! {
                _ = token.cancelled() => {
                    set_stopped(entry);
                    return;
                }
                _ = &mut gate => break,
                // Nothing to restart while waiting; drop the request.
                Some(Cmd::Restart) = cmd.recv() => {}
            }
        }
        if !first_start {
            entry.status.send_modify(|s| {
                s.restarts += 1;
                s.restart_times_ms.push(unix_ms());
                if s.restart_times_ms.len() > RESTART_HISTORY {
                    s.restart_times_ms.remove(0);
                }
            });
        }
        first_start = false;
        let started = Instant::now();
        let end = match spawn(spec) {
            Ok(child) => supervise(&shared, entry, child, &mut cmd, &token).await,
            Err(e) => {
                shared.alarms.raise(
                    Severity::Critical,
                    AlarmKind::SpawnFailed,
                    &spec.name,
                    format!("cannot start {}: {e}", spec.command.display()),
                );
                RunEnd::Ended {
                    status: None,
                    killed_for: Some(format!("spawn failed: {e}")),
                }
            }
        };
        let (status, killed_for) = match end {
            RunEnd::Shutdown => {
                set_stopped(entry);
                return;
            }
            RunEnd::Restart => continue,
            RunEnd::Ended { status, killed_for } => (status, killed_for),
        };
        let exit = exit_info(status, killed_for.as_deref());
        let code = exit.code;
        let reason = exit.reason.clone();
        entry.status.send_modify(|s| {
            s.pid = None;
            s.started_at_ms = None;
            s.health.healthy = false;
            s.last_exit = Some(exit);
        });
        let permanent =
            killed_for.is_none() && code.is_some_and(|c| spec.permanent_exit_codes.contains(&c));
        let give_up_reason = if permanent {
            shared.alarms.raise(
                Severity::Critical,
                AlarmKind::PermanentFailure,
                &spec.name,
                format!("{reason}: a permanent failure, not restarted"),
            );
            Some(format!("{reason} (permanent failure)"))
        } else {
            match tracker.on_exit(Instant::now(), started.elapsed(), rand::random::<f64>()) {
                Decision::GiveUp => {
                    let window = spec.restart.window_ms / 1000;
                    let budget = spec.restart.budget;
                    shared.alarms.raise(
                        Severity::Critical,
                        AlarmKind::RestartBudgetExhausted,
                        &spec.name,
                        format!("{reason}; {budget} restarts within {window} s already: giving up"),
                    );
                    pause_service(
                        &shared,
                        Some(format!("process {} keeps failing", spec.name)),
                        "keeper",
                    );
                    Some(format!("{reason}; restart budget spent"))
                }
                Decision::RestartAfter(delay) => {
                    shared.alarms.raise(
                        Severity::Warning,
                        AlarmKind::ProcessExited,
                        &spec.name,
                        format!("{reason}; restarting in {} ms", delay.as_millis()),
                    );
                    entry.status.send_modify(|s| {
                        s.state = ProcState::Backoff;
                        s.next_restart_at_ms = Some(unix_ms() + delay.as_millis() as u64);
                        s.detail = Some(reason.clone());
                    });
                    tokio::select! {
                        _ = token.cancelled() => {
                            set_stopped(entry);
                            return;
                        }
                        _ = sleep(delay) => {}
                        Some(Cmd::Restart) = cmd.recv() => {}
                    }
                    entry.status.send_modify(|s| {
                        s.next_restart_at_ms = None;
                        s.state = ProcState::Waiting;
                    });
                    None
                }
            }
        };
        if let Some(detail) = give_up_reason {
            entry.status.send_modify(|s| {
                s.state = ProcState::Failed;
                s.detail = Some(detail);
            });
            tokio::select! {
                _ = token.cancelled() => {
                    set_stopped(entry);
                    return;
                }
                Some(Cmd::Restart) = cmd.recv() => {
                    tracing::info!(process = %spec.name, "restart requested; restart budget reset");
                    tracker.reset();
                    entry.status.send_modify(|s| s.state = ProcState::Waiting);
                }
            }
        }
    }
}

fn set_stopped(entry: &Entry) {
    entry.status.send_modify(|s| {
        s.state = ProcState::Stopped;
        s.pid = None;
        s.health.healthy = false;
        s.next_restart_at_ms = None;
        s.detail = None;
    });
}

/// Resolves once the host passes its hard minimums and every dependency is healthy, showing
/// what is awaited in the status.
async fn wait_ready(shared: &Shared, spec: &ProcessSpec) {
    let entry = &shared.entries[shared.index[&spec.name]];
    loop {
        let mut env = shared.environment.subscribe();
        if env.borrow().blocked {
            entry.status.send_modify(|s| {
                s.state = ProcState::Waiting;
                s.detail = Some("host below a hard minimum".into());
            });
            let _ = env.wait_for(|e| !e.blocked).await;
        }
        for dep in &spec.depends_on {
            let mut rx = shared.entries[shared.index[dep]].status.subscribe();
            if !rx.borrow().health.healthy {
                entry.status.send_modify(|s| {
                    s.state = ProcState::Waiting;
                    s.detail = Some(format!("waiting for {dep} to be healthy"));
                });
                let _ = rx.wait_for(|s| s.health.healthy).await;
            }
        }
        let deps_ok = spec.depends_on.iter().all(|d| {
            shared.entries[shared.index[d]]
                .status
                .borrow()
                .health
                .healthy
        });
        if deps_ok && !shared.environment.borrow().blocked {
            return;
        }
    }
}

fn spawn(spec: &ProcessSpec) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        // Its own group: a stop reaches whatever it forked, and a Ctrl-C meant for the keeper
        // does not hit the children before the keeper can stop them in order.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd.spawn()
}

async fn supervise(
    shared: &Shared,
    entry: &Entry,
    mut child: Child,
    cmd: &mut mpsc::Receiver<Cmd>,
    token: &CancellationToken,
) -> RunEnd {
    let spec = &entry.spec;
    let pid = child.id();
    let spawned = Instant::now();
    let mut heartbeat = entry.heartbeat.subscribe();
    heartbeat.borrow_and_update();
    let mut last_heartbeat: Option<Instant> = None;
    let mut grpc_ok = spec.grpc.is_none();
    let mut ever_healthy = false;
    let mut failures = 0u32;
    let mut next_check = spawned + Duration::from_millis(100).min(spec.health_interval);
    tracing::info!(process = %spec.name, pid, "started");
    entry.status.send_modify(|s| {
        s.state = ProcState::Running;
        s.pid = pid;
        s.started_at_ms = Some(unix_ms());
        s.detail = None;
        s.health.healthy = false;
        s.health.grpc = spec.grpc.as_ref().map(|_| GrpcHealth::Unknown);
        s.health.grpc_checked_at_ms = None;
        s.health.consecutive_failures = 0;
        s.health.last_heartbeat_ms = None;
    });
    let publish = |grpc_ok: bool, last_heartbeat: Option<Instant>| {
        let hb_ok = spec.heartbeat_timeout.is_none() || last_heartbeat.is_some();
        let healthy = grpc_ok && hb_ok;
        entry.status.send_if_modified(|s| {
            let changed = s.health.healthy != healthy;
            s.health.healthy = healthy;
            changed
        });
        healthy
    };
    ever_healthy |= publish(grpc_ok, last_heartbeat);
    loop {
        let heartbeat_due = spec.heartbeat_timeout.map(|t| match last_heartbeat {
            Some(at) => at + t,
            None => spawned + spec.start_grace.max(t),
        });
        let killed_for: String = tokio::select! {
            status = child.wait() => {
                kill_group(pid, rustix::process::Signal::KILL);
                return RunEnd::Ended { status: status.ok(), killed_for: None };
            }
            _ = token.cancelled() => {
                stop(entry, &mut child).await;
                return RunEnd::Shutdown;
            }
            Some(Cmd::Restart) = cmd.recv() => {
                tracing::info!(process = %spec.name, "restart requested");
                stop(entry, &mut child).await;
                return RunEnd::Restart;
            }
            Ok(()) = heartbeat.changed() => {
                last_heartbeat = *heartbeat.borrow_and_update();
                entry.status.send_modify(|s| s.health.last_heartbeat_ms = Some(unix_ms()));
                ever_healthy |= publish(grpc_ok, last_heartbeat);
                continue;
            }
            _ = sleep_until(heartbeat_due.unwrap_or(spawned)), if heartbeat_due.is_some() => {
                let t = spec.heartbeat_timeout.unwrap_or_default().as_millis();
                let msg = if last_heartbeat.is_some() {
                    format!("no heartbeat for {t} ms: hung")
                } else {
                    "no heartbeat since start: hung".to_owned()
                };
                shared.alarms.raise(Severity::Critical, AlarmKind::HeartbeatMissed, &spec.name, format!("{msg}; restarting"));
                msg
            }
            _ = sleep_until(next_check), if spec.grpc.is_some() => {
                next_check = Instant::now() + spec.health_interval;
                let Some(endpoint) = &spec.grpc else { continue };
                let answer = grpc_check(endpoint, &spec.grpc_service, spec.health_timeout).await;
                grpc_ok = answer == GrpcHealth::Serving;
                failures = if grpc_ok { 0 } else { failures + 1 };
                entry.status.send_modify(|s| {
                    s.health.grpc = Some(answer);
                    s.health.grpc_checked_at_ms = Some(unix_ms());
                    s.health.consecutive_failures = failures;
                });
                ever_healthy |= publish(grpc_ok, last_heartbeat);
                let verdict = if ever_healthy && failures >= spec.health_failures {
                    Some(format!("{failures} failed health checks in a row (last: {answer:?})"))
                } else if !ever_healthy && spawned.elapsed() >= spec.start_grace {
                    Some(format!("not healthy within {} ms of start (last: {answer:?})", spec.start_grace.as_millis()))
                } else {
                    None
                };
                let Some(msg) = verdict else { continue };
                shared.alarms.raise(Severity::Critical, AlarmKind::HealthCheckFailed, &spec.name, format!("{msg}; restarting"));
                msg
            }
        };
        let status = stop(entry, &mut child).await;
        return RunEnd::Ended {
            status,
            killed_for: Some(killed_for),
        };
    }
}

/// SIGTERM to the process group, SIGKILL after the stop timeout; waits for the leader and
/// sweeps what is left of the group.
async fn stop(entry: &Entry, child: &mut Child) -> Option<ExitStatus> {
    let spec = &entry.spec;
    let pid = child.id();
    entry.status.send_modify(|s| s.state = ProcState::Stopping);
    tracing::info!(process = %spec.name, pid, "stopping (SIGTERM)");
    kill_group(pid, rustix::process::Signal::TERM);
    let status = match tokio::time::timeout(spec.stop_timeout, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(
                process = %spec.name,
                pid,
                "still running {} ms after SIGTERM: SIGKILL",
                spec.stop_timeout.as_millis()
            );
            kill_group(pid, rustix::process::Signal::KILL);
            let _ = child.start_kill();
            child.wait().await.ok()
        }
    };
    kill_group(pid, rustix::process::Signal::KILL);
    tracing::info!(process = %spec.name, pid, ?status, "stopped");
    status
}

/// Signals the group led by `pid` (ours: the child was made its leader). ESRCH — nothing left
/// in the group — is the normal case after the leader exited.
fn kill_group(pid: Option<u32>, signal: rustix::process::Signal) {
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, signal);
}

fn exit_info(status: Option<ExitStatus>, killed_for: Option<&str>) -> ExitInfo {
    let code = status.and_then(|s| s.code());
    let signal = status.and_then(|s| s.signal());
    let reason = match (killed_for, code, signal) {
        (Some(why), _, _) => format!("stopped by the keeper: {why}"),
        (None, Some(c), _) => format!("exited with code {c}"),
        (None, None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None, None) => "ended (status unknown)".to_owned(),
    };
    ExitInfo {
        code,
        signal,
        at_ms: unix_ms(),
        reason,
    }
}

/// One `grpc.health.v1.Health/Check`. A fresh connection each time: simple, and never stuck on
/// a channel to a previous run's socket.
async fn grpc_check(endpoint: &Endpoint, service: &str, timeout: Duration) -> GrpcHealth {
    let Ok(channel) = endpoint.channel() else {
        return GrpcHealth::Unreachable;
    };
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match tokio::time::timeout(timeout, client.check(request)).await {
        Ok(Ok(answer)) if answer.get_ref().status == ServingStatus::Serving as i32 => {
            GrpcHealth::Serving
        }
        Ok(Ok(_)) => GrpcHealth::NotServing,
        Ok(Err(_)) | Err(_) => GrpcHealth::Unreachable,
    }
}
