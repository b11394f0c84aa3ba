//! Test harness: real `driver-proxy` processes with virtual devices, the `devsim` binary and
//! the panel server, each cleaned up on drop.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `driver-proxy` binary next to this test's profile directory, built first when missing.
pub fn driver_proxy() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf();
    let binary = profile_dir.join(format!("driver-proxy{}", std::env::consts::EXE_SUFFIX));
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
        let status = cargo
            .status()
            .expect("run cargo build -p openteller-driver-proxy");
        assert!(
            status.success(),
            "cargo build -p openteller-driver-proxy failed"
        );
    }
    assert!(
        binary.exists(),
        "{} is missing after the build",
        binary.display()
    );
    binary
}

/// One virtual device served by a `driver-proxy` process.
pub struct Proxy {
    child: Option<Child>,
    /// `unix:PATH` of its socket.
    pub endpoint: String,
    socket: PathBuf,
    state_dir: PathBuf,
    class: String,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts a virtual device of `class` (CardReader, PinPad, CashDispenser, ReceiptPrinter)
    /// in a fresh directory and waits until it accepts connections.
    pub fn start(class: &str) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("devsim-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("dev.sock");
        let mut proxy = Proxy {
            child: None,
            endpoint: format!("unix:{}", socket.display()),
            socket,
            state_dir: dir.path().join("state"),
            class: class.to_owned(),
            log: dir.path().join("proxy.log"),
            dir,
        };
        proxy.spawn();
        proxy
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(driver_proxy())
            .args([
                "--class",
                &self.class,
                "--backend",
                "virtual",
                "--listen",
                &self.endpoint,
                "--state-dir",
            ])
            .arg(&self.state_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn driver-proxy");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("driver-proxy exited with {status}: {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "driver-proxy did not listen in time: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (the socket stays unusable until [`Proxy::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same socket and state.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// What the proxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The temporary directory of this proxy.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `devsim ARGS` to completion.
pub fn devsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devsim"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run devsim")
}

/// Runs `devsim --device ENDPOINT ARGS` to completion.
pub fn devsim_on(endpoint: &str, args: &[&str]) -> Output {
    let mut all = vec!["--device", endpoint];
    all.extend_from_slice(args);
    devsim(&all)
}

/// The exit code, the stdout and the stderr of a run, for assertions.
pub fn explain(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The first stdout line as JSON.
pub fn json_line(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no output; {}", explain(output)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// A `devsim panel` process.
pub struct Panel {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Panel {
    /// Starts the panel on a free loopback port for `NAME=ENDPOINT` devices.
    pub fn start(devices: &[(&str, &str)]) -> Panel {
        let dir = tempfile::Builder::new()
            .prefix("devsim-panel-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("panel.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_devsim"));
        command.args(["panel", "--listen", "127.0.0.1:0"]);
        for (name, endpoint) in devices {
            command.arg("--device").arg(format!("{name}={endpoint}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn devsim panel");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the panel's first line");
        let Some(address) = line.trim().strip_prefix("devsim panel listening on ") else {
            let _ = child.kill();
            panic!(
                "unexpected first line {line:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let base = address.trim_end_matches('/').to_owned();
        Panel {
            child,
            _stdout: stdout,
            base,
            log,
            _dir: dir,
        }
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// What the panel logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Panel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retries `probe` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads Server-Sent Events from a streaming response.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The `event:` field.
    pub event: String,
    /// The `data:` lines joined.
    pub data: String,
}

impl SseReader {
    /// Wraps a response whose body is an event stream.
    pub fn new(response: reqwest::Response) -> Self {
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the stream ends or `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: "message".to_owned(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until one satisfies `wanted`.
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut wanted: impl FnMut(&SseEvent) -> bool,
    ) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await?;
            if wanted(&event) {
                return Some(event);
            }
        }
    }
}
