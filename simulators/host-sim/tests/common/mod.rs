//! Spawns the real `host-sim` binary on free ports with a temporary config.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openteller_codec::Message;
use openteller_host_sim::HostKeys;
use openteller_host_sim::client::{HostClient, Terminal};
use serde_json::Value;

pub const ZPK: &str = "0123456789ABCDEFFEDCBA9876543210";
pub const ZAK: &str = "89ABCDEF0123456776543210FEDCBA98";

pub const ZHANG: &str = "6222020200112233445";
pub const LI: &str = "6222020200198765432";
pub const WANG: &str = "6222020200155550000";
pub const POOR: &str = "6222020200100000001";
pub const EXPIRED: &str = "6222020200100000002";

/// Accounts every test host starts with (balances in minor units).
pub const ACCOUNTS: &str = r#"
[[account]]
pan = "6222020200112233445"
pin = "1234"
balance = 100000000
daily_limit = 2000000

[[account]]
pan = "6222020200198765432"
pin = "1234"
balance = 100000000

[[account]]
pan = "6222020200155550000"
pin = "1234"
balance = 50000000

[[account]]
pan = "6222020200100000001"
pin = "1234"
balance = 10000

[[account]]
pan = "6222020200100000002"
pin = "1234"
balance = 10000
expiry = "2001"

[[generate]]
prefix = "6222020299"
count = 100
pin = "1234"
balance = 100000000
"#;

pub fn keys() -> HostKeys {
    HostKeys::from_hex("tdes", ZPK, ZAK, None, None).unwrap()
}

pub struct Sim {
    child: Child,
    _stdout: BufReader<std::process::ChildStdout>,
    pub addr: SocketAddr,
    pub control: String,
    pub dir: tempfile::TempDir,
    /// The `host-sim listening: ...` line.
    pub line: String,
    http: reqwest::Client,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_host-sim")
}

impl Sim {
    /// Starts a host; `extra` is appended to the config's top level (before `[keys]`).
    pub fn start(extra: &str) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("accounts.toml"), ACCOUNTS).unwrap();
        let config = format!(
            "listen = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\naccounts = \"accounts.toml\"\n{extra}\n\
             [keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n"
        );
        let path = dir.path().join("host-sim.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        if line.is_empty() {
            let _ = child.wait();
            let err = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            panic!("host-sim did not start: {err}");
        }
        // host-sim listening: iso8583=127.0.0.1:PORT control=http://127.0.0.1:PORT
        let mut addr = None;
        let mut control = None;
        for word in line.split_whitespace() {
            if let Some(a) = word.strip_prefix("iso8583=") {
                addr = Some(a.parse().unwrap());
            }
            if let Some(c) = word.strip_prefix("control=") {
                control = Some(c.to_owned());
            }
        }
        Sim {
            child,
            _stdout: stdout,
            addr: addr.expect("8583 address"),
            control: control.expect("control address"),
            dir,
            line,
            http: reqwest::Client::new(),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("journal.jsonl")
    }

    pub async fn client(&self) -> HostClient {
        HostClient::connect(self.addr).await.unwrap()
    }

    pub fn terminal(&self, id: &str) -> Terminal {
        Terminal::new(id, "OPENTELLER00001", keys())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.control))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.control))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.control))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The account's available balance, from the control API.
    pub async fn available(&self, pan: &str) -> i64 {
        let (status, v) = self.get(&format!("/state/accounts/{pan}")).await;
        assert_eq!(status, 200, "{v}");
        v["available"].as_i64().unwrap()
    }

    pub async fn account(&self, pan: &str) -> Value {
        self.get(&format!("/state/accounts/{pan}")).await.1
    }

    pub async fn transactions(&self) -> Value {
        self.get("/state/transactions").await.1
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seals `msg` with `t`, sends it and returns the decoded response (MAC checked).
pub async fn call(client: &mut HostClient, t: &Terminal, msg: &mut Message) -> Message {
    let bytes = t.seal(msg).unwrap();
    client.send(&bytes).await.unwrap();
    recv(client, t).await
}

/// Receives one response within 5 s and checks its MAC.
pub async fn recv(client: &mut HostClient, t: &Terminal) -> Message {
    let payload = tokio::time::timeout(Duration::from_secs(5), client.recv_payload())
        .await
        .expect("a response within 5 s")
        .unwrap()
        .expect("a response, not a close");
    let (msg, check) = t.open(&payload).unwrap();
    assert_eq!(
        check,
        openteller_host_sim::wire::MacCheck::Valid,
        "response MAC: {msg:?}"
    );
    msg
}

pub fn code(m: &Message) -> &str {
    m.text(39).unwrap_or("")
}

/// Builds a request with `t`, then sends it like [`call`].
pub async fn ask(
    client: &mut HostClient,
    t: &mut Terminal,
    build: impl FnOnce(&mut Terminal) -> Message,
) -> Message {
    let mut msg = build(t);
    call(client, t, &mut msg).await
}
