//! Test harness: real `driver-proxy` processes (virtual backends) on Unix sockets, the real
//! `terminal-native --headless` binary configured for them, and a WebSocket page client.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod host;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use openteller_proto::Endpoint;
use openteller_proto::device::v1::{
    DeviceStatus, GetStatusRequest, SimulatorReply, SimulatorRequest, device_client::DeviceClient,
    simulator_client::SimulatorClient, simulator_request,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The `driver-proxy` binary of this target directory (built as [`workspace_bin`] does).
pub fn driver_proxy() -> PathBuf {
    workspace_bin("driver-proxy", "openteller-driver-proxy")
}

/// A binary of another workspace package next to `terminal-native`. `cargo build` runs once per
/// test process for each (a no-op when it is fresh), so a stale binary left by an older
/// checkout is never what a test talks to.
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let native = PathBuf::from(env!("CARGO_BIN_EXE_terminal-native"));
    let profile_dir = native.parent().expect("target/<profile>").to_path_buf();
    let binary = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == name) {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "-q", "-p", package, "--bin", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        if let Some(target_dir) = profile_dir.parent() {
            cargo.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
        built.push(name.to_owned());
    }
    binary
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a server and reads its first stdout line (`... listening: name=ADDR ...`).
pub fn spawn_listening(mut cmd: Command, log: &Path) -> (Proc, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log"))
        .env("RUST_LOG", "info")
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(
        !line.is_empty(),
        "server did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (Proc(child), line)
}

/// The value after `key` in a listening line.
pub fn word<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

/// A virtual device served by a real driver-proxy.
pub struct Proxy {
    child: Option<Child>,
    pub name: String,
    pub class: String,
    pub socket: PathBuf,
    state: PathBuf,
}

impl Proxy {
    pub async fn start(dir: &Path, name: &str, class: &str) -> Proxy {
        let mut p = Proxy {
            child: None,
            name: name.into(),
            class: class.into(),
            socket: dir.join(format!("{name}.sock")),
            state: dir.join(format!("{name}-state")),
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let child = Command::new(driver_proxy())
            .args(["--class", &self.class, "--backend", "virtual", "--listen"])
            .arg(format!("unix:{}", self.socket.display()))
            .arg("--state-dir")
            .arg(&self.state)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn driver-proxy");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() && self.try_status().await.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "driver-proxy {} not ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn channel(&self) -> tonic::transport::Channel {
        Endpoint::Unix(self.socket.clone())
            .channel()
            .expect("channel")
    }

    async fn try_status(&self) -> Option<DeviceStatus> {
        let mut c = DeviceClient::new(self.channel());
        tokio::time::timeout(Duration::from_secs(2), c.get_status(GetStatusRequest {}))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }

    /// The device's status straight from the proxy.
    pub async fn status(&self) -> DeviceStatus {
        self.try_status().await.expect("proxy status")
    }

    /// One simulator action.
    pub async fn control(&self, action: simulator_request::Action) -> SimulatorReply {
        SimulatorClient::new(self.channel())
            .control(SimulatorRequest {
                action: Some(action),
            })
            .await
            .expect("simulator call")
            .into_inner()
    }

    /// One command straight at the proxy (what a key ceremony tool does), bypassing the host.
    pub async fn execute(
        &self,
        command: openteller_proto::device::v1::Command,
    ) -> openteller_proto::device::v1::CommandCompletion {
        use openteller_proto::device::v1::command_reply::Reply;
        let mut stream = DeviceClient::new(self.channel())
            .execute(command)
            .await
            .expect("execute")
            .into_inner();
        while let Some(r) = stream.message().await.expect("stream") {
            if let Some(Reply::Completion(c)) = r.reply {
                return c;
            }
        }
        panic!("no completion");
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The real `terminal-native --headless`.
pub struct Native {
    child: Option<Child>,
    pub addr: String,
    pub journal_dir: PathBuf,
    pub state_dir: PathBuf,
    pub package_dir: PathBuf,
    log: PathBuf,
}

/// A configuration for `proxies` (all critical) under `dir`, with `extra` TOML appended.
pub fn config(dir: &Path, proxies: &[&Proxy], extra: &str) -> String {
    let package = dir.join("package");
    std::fs::create_dir_all(&package).expect("package dir");
    std::fs::write(
        package.join("openteller-package.json"),
        r#"{"name": "test-package", "version": "1.0.0"}"#,
    )
    .expect("package manifest");
    let mut text = format!(
        "terminal_id = \"T0001\"\nbusiness_package = \"{}\"\njournal_dir = \"{}\"\nstate_dir = \"{}\"\n\
         [headless]\nlisten = \"127.0.0.1:0\"\n",
        package.display(),
        dir.join("ej").display(),
        dir.join("native-state").display()
    );
    for p in proxies {
        text.push_str(&format!(
            "[devices.{}]\nclass = \"{}\"\nendpoint = \"{}\"\n",
            p.name,
            p.class,
            p.endpoint()
        ));
    }
    text.push_str(extra);
    text
}

/// Runs the binary with `args`; returns exit code and stderr.
pub fn run_native(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_terminal-native"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run terminal-native");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Native {
    /// Writes `config_text` to `dir/native.toml` and starts the binary; waits for its address.
    pub fn start(dir: &Path, config_text: &str) -> Native {
        Native::start_env(dir, config_text, &[])
    }

    /// [`Native::start`] with extra environment variables (the crash test hook). The log of
    /// each run is appended to `dir/native.log`.
    pub fn start_env(dir: &Path, config_text: &str, env: &[(&str, &str)]) -> Native {
        let path = dir.join("native.toml");
        std::fs::write(&path, config_text).expect("write config");
        let log = dir.join("native.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_terminal-native"));
        cmd.arg("--config")
            .arg(&path)
            .arg("--headless")
            .env("RUST_LOG", "info")
            .env_remove("OPENTELLER_TEST_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn terminal-native");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let addr = line
            .trim()
            .strip_prefix("terminal-native listening on http://")
            .and_then(|a| a.strip_suffix('/'))
            .unwrap_or_else(|| {
                panic!(
                    "no address line: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        Native {
            child: Some(child),
            addr,
            journal_dir: dir.join("ej"),
            state_dir: dir.join("native-state"),
            package_dir: dir.join("package"),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` from outside.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (up to 30 s) for the process to end by itself; answers whether it was killed by
    /// a signal (the crash hook's SIGKILL).
    pub fn wait_killed(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.signal().is_some();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("terminal-native did not stop");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything in the electronic journal so far.
    pub fn journal(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.journal_dir) {
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                text.push_str(&std::fs::read_to_string(p).unwrap_or_default());
            }
        }
        text
    }

    pub async fn page(&self) -> Page {
        let url = format!("ws://{}/bridge", self.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect the bridge");
        Page {
            ws,
            next_id: 1,
            events: Vec::new(),
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- terminal-native log ---\n{}", self.log());
        }
    }
}

/// A page on the bridge.
pub struct Page {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    /// Unsolicited messages seen while waiting for answers, oldest first.
    pub events: Vec<Value>,
}

impl Page {
    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .expect("a message within 20 s")
                .expect("open")
                .expect("message");
            if let Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).expect("JSON from the host");
            }
        }
    }

    /// One call that may not be answered because the host died (crash tests): `None` when
    /// the connection closed first.
    pub async fn call_or_gone(
        &mut self,
        method: &str,
        params: Value,
    ) -> Option<Result<Value, Value>> {
        let id = self.send(method, params).await;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("a message or the end within 30 s");
            let msg = match next {
                None | Some(Err(_)) => return None,
                Some(Ok(m)) => m,
            };
            let Message::Text(t) = msg else {
                if matches!(msg, Message::Close(_)) {
                    return None;
                }
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON from the host");
            if v["id"] == json!(id) {
                return Some(match v.get("result") {
                    Some(r) => Ok(r.clone()),
                    None => Err(v["error"].clone()),
                });
            }
            self.events.push(v);
        }
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.send_raw(&msg.to_string()).await;
        id
    }

    /// Waits for the answer to `id`, keeping everything else in `events`.
    pub async fn answer(&mut self, id: u64) -> Value {
        loop {
            let v = self.recv().await;
            if v["id"] == json!(id) {
                return v;
            }
            self.events.push(v);
        }
    }

    /// One call: `Ok(result)` or `Err(error)`.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.send(method, params).await;
        let a = self.answer(id).await;
        match a.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(a["error"].clone()),
        }
    }

    /// Waits for an unsolicited message matching `pred` (seen before or arriving).
    pub async fn event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.events.iter().position(&pred) {
            return self.events.remove(i);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no {what} event");
            let v = self.recv().await;
            if pred(&v) {
                return v;
            }
            self.events.push(v);
        }
    }

    /// Polls `terminal.status` until `pred` holds.
    pub async fn wait_status(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self
                .call("terminal.status", json!({}))
                .await
                .expect("status");
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The health of `device` in a `terminal.status` answer.
pub fn health<'a>(status: &'a Value, device: &str) -> &'a str {
    status["devices"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["name"] == device))
        .and_then(|d| d["health"].as_str())
        .unwrap_or("missing")
}
