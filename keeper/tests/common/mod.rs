//! Test harness: the real `keeper` binary with a configuration written to a fresh directory,
//! its control API on a Unix socket there, and real `driver-proxy` processes.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openteller_keeper::client::{self, Answer};
use openteller_keeper::config::ControlAddr;
use serde_json::Value;

/// The `driver-proxy` binary of this target directory, built first when missing.
pub fn driver_proxy() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let keeper = PathBuf::from(env!("CARGO_BIN_EXE_keeper"));
    let profile_dir = keeper.parent().expect("target/<profile>").to_path_buf();
    let binary = profile_dir.join("driver-proxy");
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if !binary.exists() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "-p", "openteller-driver-proxy"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            cargo.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = cargo.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p openteller-driver-proxy failed"
        );
    }
    binary
}

/// A `[[process]]` table running a virtual driver-proxy of `class` on `dir/NAME.sock`, probed
/// through gRPC health.
pub fn proxy_process(dir: &Path, name: &str, class: &str) -> String {
    let socket = dir.join(format!("{name}.sock"));
    let state = dir.join(format!("{name}-state"));
    format!(
        r#"
[[process]]
name = "{name}"
command = "{bin}"
args = ["--class", "{class}", "--backend", "virtual", "--listen", "unix:{socket}", "--state-dir", "{state}"]
env = {{ RUST_LOG = "warn" }}
permanent_exit_codes = [64, 69, 78]
stop_timeout_ms = 5000
restart = {{ initial_backoff_ms = 100, max_backoff_ms = 1000, jitter = 0.0 }}
health = {{ grpc = "unix:{socket}", interval_ms = 200, timeout_ms = 1000, start_grace_ms = 15000 }}
"#,
        bin = driver_proxy().display(),
        socket = socket.display(),
        state = state.display(),
    )
}

/// A running keeper; stopped with SIGTERM (then SIGKILL) on drop.
pub struct Keeper {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub control: ControlAddr,
    log: PathBuf,
}

impl Keeper {
    /// Writes `processes` (TOML `[[process]]` tables and any other sections) after a `[control]`
    /// section pointing at `dir/keeper.sock`, starts the keeper and waits for its API.
    pub async fn start(processes: impl FnOnce(&Path) -> String) -> Keeper {
        let dir = tempfile::Builder::new()
            .prefix("keeper-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("keeper.sock");
        let body = processes(dir.path());
        let config = format!(
            "[control]\nlisten = \"unix:{}\"\n\n{body}",
            socket.display()
        );
        let path = dir.path().join("keeper.toml");
        std::fs::write(&path, config).expect("write config");
        let log = dir.path().join("keeper.log");
        let child = Command::new(env!("CARGO_BIN_EXE_keeper"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn keeper");
        let keeper = Keeper {
            child: Some(child),
            control: ControlAddr::Unix(socket),
            dir,
            log,
        };
        keeper
            .wait_for("the control API", Duration::from_secs(20), || async {
                client::request(&keeper.control, "GET", "/api/v1/service", None)
                    .await
                    .is_ok()
                    .then_some(())
            })
            .await;
        keeper
    }

    /// `--control` for the CLI.
    pub fn control_arg(&self) -> String {
        self.control.to_string()
    }

    /// The keeper's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// PID of the keeper.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// One API call; panics if the API cannot be reached.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        client::request(&self.control, method, path, body.as_ref())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n--- keeper log ---\n{}", self.log()))
    }

    /// `GET /api/v1/processes/NAME` data.
    pub async fn process(&self, name: &str) -> Value {
        self.call("GET", &format!("/api/v1/processes/{name}"), None)
            .await
            .data()
            .clone()
    }

    /// The alarm kinds raised for `source`.
    pub async fn alarm_kinds(&self, source: &str) -> Vec<String> {
        let answer = self.call("GET", "/api/v1/alarms", None).await;
        answer
            .data()
            .as_array()
            .expect("alarm list")
            .iter()
            .filter(|a| a["source"] == source)
            .map(|a| a["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Polls `check` every 50 ms until it returns `Some`, or panics after `within` with the log.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, within: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- keeper log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until process `name` satisfies `pred`; returns its status.
    pub async fn wait_process(
        &self,
        name: &str,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for(what, within, || async {
            let p = self.process(name).await;
            pred(&p).then_some(p)
        })
        .await
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(20));
        }
        if std::thread::panicking() {
            eprintln!("--- keeper log ---\n{}", self.log());
        }
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// True if `pid` is a live process (zombies, waiting for a reaper, count as dead).
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Runs the keeper binary with `args`, returning status, stdout, stderr.
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keeper"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run keeper");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
