//! The keeper's TOML configuration: what to run, in which order, how to watch it and which host
//! limits to enforce. Parsing is strict (unknown fields are refused) and [`Config::load`] checks
//! everything that can be checked before a process is started, so a bad file exits 64 with a
//! message instead of half-starting a terminal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use openteller_proto::Endpoint;
use serde::Deserialize;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The file parsed but says something impossible.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The local control API.
    #[serde(default)]
    pub control: ControlConfig,
    /// Restart policy defaults; a process may override any field in its own `restart` table.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Host checks before start and while running.
    #[serde(default)]
    pub environment: EnvironmentConfig,
    /// Alarm history.
    #[serde(default)]
    pub alarms: AlarmConfig,
    /// The supervised processes, started in dependency order.
    #[serde(default, rename = "process")]
    pub processes: Vec<ProcessConfig>,
}

/// Where the control API listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// `tcp:127.0.0.1:PORT` (loopback only) or `unix:PATH`.
    #[serde(default = "default_control")]
    pub listen: String,
}

fn default_control() -> String {
    "tcp:127.0.0.1:7700".to_owned()
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: default_control(),
        }
    }
}

/// How restarts are paced and bounded.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub initial_backoff_ms: u64,
    /// The cap of the exponential delay.
    pub max_backoff_ms: u64,
    /// Growth factor per consecutive failure (≥ 1).
    pub multiplier: f64,
    /// Relative jitter in `[0, 1)`: a delay `d` becomes uniform in `[d·(1−j), d]`.
    pub jitter: f64,
    /// How many restarts are allowed within `window_ms` before the keeper gives up on the
    /// process, pauses the service and raises an alarm.
    pub budget: u32,
    /// The sliding window of the budget.
    pub window_ms: u64,
    /// A run at least this long resets the back-off to `initial_backoff_ms`.
    pub stable_after_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            multiplier: 2.0,
            jitter: 0.2,
            budget: 5,
            window_ms: 300_000,
            stable_after_ms: 60_000,
        }
    }
}

/// A partial [`RestartPolicy`]: the fields a process overrides.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartOverride {
    /// See [`RestartPolicy::initial_backoff_ms`].
    pub initial_backoff_ms: Option<u64>,
    /// See [`RestartPolicy::max_backoff_ms`].
    pub max_backoff_ms: Option<u64>,
    /// See [`RestartPolicy::multiplier`].
    pub multiplier: Option<f64>,
    /// See [`RestartPolicy::jitter`].
    pub jitter: Option<f64>,
    /// See [`RestartPolicy::budget`].
    pub budget: Option<u32>,
    /// See [`RestartPolicy::window_ms`].
    pub window_ms: Option<u64>,
    /// See [`RestartPolicy::stable_after_ms`].
    pub stable_after_ms: Option<u64>,
}

impl RestartPolicy {
    fn apply(self, o: RestartOverride) -> RestartPolicy {
        RestartPolicy {
            initial_backoff_ms: o.initial_backoff_ms.unwrap_or(self.initial_backoff_ms),
            max_backoff_ms: o.max_backoff_ms.unwrap_or(self.max_backoff_ms),
            multiplier: o.multiplier.unwrap_or(self.multiplier),
            jitter: o.jitter.unwrap_or(self.jitter),
            budget: o.budget.unwrap_or(self.budget),
            window_ms: o.window_ms.unwrap_or(self.window_ms),
            stable_after_ms: o.stable_after_ms.unwrap_or(self.stable_after_ms),
        }
    }

    fn validate(&self, whose: &str) -> Result<(), ConfigError> {
        if self.initial_backoff_ms == 0 || self.max_backoff_ms < self.initial_backoff_ms {
            return Err(invalid(format!(
                "{whose}: restart needs 0 < initial_backoff_ms <= max_backoff_ms"
            )));
        }
        if !(self.multiplier >= 1.0 && self.multiplier <= 100.0) {
            return Err(invalid(format!(
                "{whose}: restart.multiplier must be in [1, 100]"
            )));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(invalid(format!(
                "{whose}: restart.jitter must be in [0, 1)"
            )));
        }
        if self.budget == 0 || self.window_ms == 0 {
            return Err(invalid(format!(
                "{whose}: restart.budget and restart.window_ms must be positive"
            )));
        }
        Ok(())
    }
}

/// Host limits. A `min_*` value is a hard minimum: below it the keeper refuses to start
/// processes (and raises a critical alarm while running); a `warn_*` value only raises a warning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// How often the host is checked while running.
    #[serde(default = "default_env_interval")]
    pub interval_ms: u64,
    /// Hard minimum of available memory (`MemAvailable`), MiB.
    pub min_free_memory_mb: Option<u64>,
    /// Warning threshold of available memory, MiB.
    pub warn_free_memory_mb: Option<u64>,
    /// Warning threshold of the 1-minute load average divided by the CPU count.
    pub warn_load_per_cpu: Option<f64>,
    /// Hard limit of the 1-minute load average per CPU.
    pub max_load_per_cpu: Option<f64>,
    /// Disk space on the given paths.
    #[serde(default)]
    pub disk: Vec<DiskCheck>,
}

fn default_env_interval() -> u64 {
    10_000
}

impl Default for EnvironmentConfig {
    fn default() -> Self {
        EnvironmentConfig {
            interval_ms: default_env_interval(),
            min_free_memory_mb: None,
            warn_free_memory_mb: None,
            warn_load_per_cpu: None,
            max_load_per_cpu: None,
            disk: Vec::new(),
        }
    }
}

/// Free space on one file system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskCheck {
    /// Any path on the file system.
    pub path: PathBuf,
    /// Hard minimum, MiB available to unprivileged users.
    pub min_free_mb: Option<u64>,
    /// Warning threshold, MiB.
    pub warn_free_mb: Option<u64>,
}

/// Alarm history.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// How many alarms are kept in memory (oldest dropped first).
    #[serde(default = "default_alarm_history")]
    pub history: usize,
}

fn default_alarm_history() -> usize {
    500
}

impl Default for AlarmConfig {
    fn default() -> Self {
        AlarmConfig {
            history: default_alarm_history(),
        }
    }
}

/// One supervised process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Unique name: letters, digits, `-` and `_`.
    pub name: String,
    /// The program (absolute, or looked up in `PATH`).
    pub command: PathBuf,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables (the keeper's environment is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Processes that must be healthy before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Exit codes that mean "restarting will not help" (e.g. 64, 69, 78 for driver-proxy).
    #[serde(default)]
    pub permanent_exit_codes: Vec<i32>,
    /// After SIGTERM, how long to wait before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_ms: u64,
    /// Health probes.
    #[serde(default)]
    pub health: HealthConfig,
    /// Overrides of the global restart policy.
    #[serde(default)]
    pub restart: RestartOverride,
}

fn default_stop_timeout() -> u64 {
    10_000
}

/// How a process's health is observed. With no probe, a process is healthy once spawned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `grpc.health.v1.Health/Check` on this endpoint (`unix:PATH` or `tcp:HOST:PORT`).
    pub grpc: Option<String>,
    /// The service name asked for (empty = the whole server).
    #[serde(default)]
    pub grpc_service: String,
    /// Time between gRPC checks.
    #[serde(default = "default_health_interval")]
    pub interval_ms: u64,
    /// Deadline of one check.
    #[serde(default = "default_health_timeout")]
    pub timeout_ms: u64,
    /// Consecutive failed checks (after the process was healthy once) that restart it.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long a new process may take to become healthy before it is restarted.
    #[serde(default = "default_start_grace")]
    pub start_grace_ms: u64,
    /// When set, the process must POST a heartbeat at least this often (the first one within
    /// `start_grace_ms` of the start); a missed heartbeat means hung, and the process is restarted.
    pub heartbeat_timeout_ms: Option<u64>,
}

fn default_health_interval() -> u64 {
    2_000
}
fn default_health_timeout() -> u64 {
    1_000
}
fn default_failures() -> u32 {
    3
}
fn default_start_grace() -> u64 {
    15_000
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            grpc: None,
            grpc_service: String::new(),
            interval_ms: default_health_interval(),
            timeout_ms: default_health_timeout(),
            failures: default_failures(),
            start_grace_ms: default_start_grace(),
            heartbeat_timeout_ms: None,
        }
    }
}

/// Where the control API listens, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    /// A loopback TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for ControlAddr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid(format!("control address {s:?} has an empty path")));
            }
            return Ok(ControlAddr::Unix(PathBuf::from(path)));
        }
        let addr = s.strip_prefix("tcp:").unwrap_or(s);
        let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
            invalid(format!(
                "control address {s:?} must be tcp:IP:PORT (e.g. tcp:127.0.0.1:7700) or unix:PATH"
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(invalid(format!(
                "control address {s:?} must be a loopback address: the API has no authentication"
            )));
        }
        Ok(ControlAddr::Tcp(addr))
    }
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Tcp(a) => write!(f, "tcp:{a}"),
            ControlAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A process definition after validation, with durations and the effective restart policy.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Unique name.
    pub name: String,
    /// Program.
    pub command: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Must be healthy first.
    pub depends_on: Vec<String>,
    /// Not restarted after these exit codes.
    pub permanent_exit_codes: Vec<i32>,
    /// SIGTERM → SIGKILL delay.
    pub stop_timeout: Duration,
    /// gRPC health endpoint.
    pub grpc: Option<Endpoint>,
    /// gRPC health service name.
    pub grpc_service: String,
    /// Between checks.
    pub health_interval: Duration,
    /// Check deadline.
    pub health_timeout: Duration,
    /// Failed checks before restart.
    pub health_failures: u32,
    /// Time to become healthy.
    pub start_grace: Duration,
    /// Heartbeat deadline, if heartbeats are required.
    pub heartbeat_timeout: Option<Duration>,
    /// Effective restart policy.
    pub restart: RestartPolicy,
}

/// A validated configuration: what the supervisor runs from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Control API address.
    pub control: ControlAddr,
    /// Environment checks.
    pub environment: EnvironmentConfig,
    /// Alarm history length.
    pub alarm_history: usize,
    /// Processes in start order (dependencies first; file order otherwise).
    pub processes: Vec<ProcessSpec>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()
    }

    /// Checks the configuration and orders the processes.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let control: ControlAddr = self.control.listen.parse()?;
        self.restart.validate("[restart]")?;
        if self.alarms.history == 0 {
            return Err(invalid("alarms.history must be positive"));
        }
        if self.environment.interval_ms == 0 {
            return Err(invalid("environment.interval_ms must be positive"));
        }
        if self.processes.is_empty() {
            return Err(invalid("no [[process]] to supervise"));
        }
        let mut names = HashSet::new();
        let mut specs = Vec::with_capacity(self.processes.len());
        for p in &self.processes {
            let valid_name = !p.name.is_empty()
                && p.name.len() <= 64
                && p.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                return Err(invalid(format!(
                    "process name {:?} must be 1-64 letters, digits, '-' or '_'",
                    p.name
                )));
            }
            if !names.insert(p.name.clone()) {
                return Err(invalid(format!("process name {:?} is used twice", p.name)));
            }
            let whose = format!("process {:?}", p.name);
            if p.command.as_os_str().is_empty() {
                return Err(invalid(format!("{whose}: command is empty")));
            }
            let restart = self.restart.apply(p.restart);
            restart.validate(&whose)?;
            let h = &p.health;
            let grpc = match &h.grpc {
                Some(s) => Some(
                    s.parse::<Endpoint>()
                        .map_err(|e| invalid(format!("{whose}: health.grpc: {e}")))?,
                ),
                None => None,
            };
            if h.interval_ms == 0 || h.timeout_ms == 0 || h.failures == 0 {
                return Err(invalid(format!(
                    "{whose}: health interval_ms, timeout_ms and failures must be positive"
                )));
            }
            if h.heartbeat_timeout_ms == Some(0) {
                return Err(invalid(format!(
                    "{whose}: health.heartbeat_timeout_ms must be positive"
                )));
            }
            if p.stop_timeout_ms == 0 {
                return Err(invalid(format!(
                    "{whose}: stop_timeout_ms must be positive"
                )));
            }
            specs.push(ProcessSpec {
                name: p.name.clone(),
                command: p.command.clone(),
                args: p.args.clone(),
                env: p.env.clone(),
                cwd: p.cwd.clone(),
                depends_on: p.depends_on.clone(),
                permanent_exit_codes: p.permanent_exit_codes.clone(),
                stop_timeout: Duration::from_millis(p.stop_timeout_ms),
                grpc,
                grpc_service: h.grpc_service.clone(),
                health_interval: Duration::from_millis(h.interval_ms),
                health_timeout: Duration::from_millis(h.timeout_ms),
                health_failures: h.failures,
                start_grace: Duration::from_millis(h.start_grace_ms),
                heartbeat_timeout: h.heartbeat_timeout_ms.map(Duration::from_millis),
                restart,
            });
        }
        for s in &specs {
            for d in &s.depends_on {
                if !names.contains(d) {
                    return Err(invalid(format!(
                        "process {:?} depends on unknown process {d:?}",
                        s.name
                    )));
                }
                if d == &s.name {
                    return Err(invalid(format!("process {:?} depends on itself", s.name)));
                }
            }
        }
        for d in &self.environment.disk {
            if d.min_free_mb.is_none() && d.warn_free_mb.is_none() {
                return Err(invalid(format!(
                    "environment.disk {}: set min_free_mb and/or warn_free_mb",
                    d.path.display()
                )));
            }
        }
        let processes = start_order(specs)?;
        Ok(Settings {
            control,
            environment: self.environment,
            alarm_history: self.alarms.history,
            processes,
        })
    }
}

/// Orders processes so each comes after its dependencies, keeping file order where free
/// (Kahn's algorithm, always picking the earliest ready process).
fn start_order(specs: Vec<ProcessSpec>) -> Result<Vec<ProcessSpec>, ConfigError> {
    let index: HashMap<String, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    let mut placed = vec![false; specs.len()];
    let mut order = Vec::with_capacity(specs.len());
    while order.len() < specs.len() {
        let next = (0..specs.len()).find(|&i| {
            !placed[i]
                && specs[i]
                    .depends_on
                    .iter()
                    .all(|d| placed[index[d.as_str()]])
        });
        let Some(i) = next else {
            let stuck: Vec<&str> = (0..specs.len())
                .filter(|&i| !placed[i])
                .map(|i| specs[i].name.as_str())
                .collect();
            return Err(invalid(format!(
                "dependency cycle among processes {}",
                stuck.join(", ")
            )));
        };
        placed[i] = true;
        order.push(i);
    }
    let mut slots: Vec<Option<ProcessSpec>> = specs.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Settings, ConfigError> {
        toml::from_str::<Config>(s)
            .map_err(|e| invalid(e.to_string()))?
            .validate()
    }

    #[test]
    fn orders_by_dependencies() {
        let s = parse(
            r#"
            [[process]]
            name = "native"
            command = "/bin/true"
            depends_on = ["idc", "pin"]
            [[process]]
            name = "idc"
            command = "/bin/true"
            [[process]]
            name = "pin"
            command = "/bin/true"
            restart = { budget = 2 }
            "#,
        )
        .unwrap();
        let names: Vec<_> = s.processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["idc", "pin", "native"]);
        assert_eq!(s.processes[1].restart.budget, 2);
        assert_eq!(s.processes[0].restart.budget, 5);
        assert_eq!(s.control.to_string(), "tcp:127.0.0.1:7700");
    }

    #[test]
    fn refuses_bad_files() {
        let cases = [
            ("", "no [[process]]"),
            (
                "[[process]]\nname='a'\ncommand='x'\nbogus=1",
                "unknown field",
            ),
            (
                "[[process]]\nname='a'\ncommand='x'\n[[process]]\nname='a'\ncommand='y'",
                "used twice",
            ),
            (
                "[[process]]\nname='a'\ncommand='x'\ndepends_on=['b']",
                "unknown process",
            ),
            (
                "[[process]]\nname='a'\ncommand='x'\ndepends_on=['b']\n[[process]]\nname='b'\ncommand='x'\ndepends_on=['a']",
                "cycle",
            ),
            (
                "[control]\nlisten='tcp:0.0.0.0:1'\n[[process]]\nname='a'\ncommand='x'",
                "loopback",
            ),
            (
                "[[process]]\nname='a'\ncommand='x'\nhealth={grpc='/tmp/x'}",
                "unix: or tcp:",
            ),
            ("[[process]]\nname='a b'\ncommand='x'", "letters, digits"),
            (
                "[restart]\ninitial_backoff_ms=10\nmax_backoff_ms=5\nmultiplier=2.0\njitter=0.1\nbudget=1\nwindow_ms=1\nstable_after_ms=1\n[[process]]\nname='a'\ncommand='x'",
                "initial_backoff_ms",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
