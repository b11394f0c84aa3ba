#![allow(unreachable_pub, dead_code)]
//! Test support: spawns the real `backoffice` binary on a free port against SQLite (a temp
//! file) or PostgreSQL (a fresh database), with the cache in-process or on Redis, and talks to
//! it over HTTP.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The initial administrator's password in every test.
pub const INIT_PASSWORD: &str = "Init#Admin2026";
/// A password that meets the policy.
pub const PASSWORD: &str = "Str0ng#Pass";

/// Which database a backoffice uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// A temp SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A database for one test.
pub struct TestDb {
    /// Its URL.
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn admin_url() -> String {
    std::env::var("OPENTELLER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    /// Creates the database.
    pub async fn create(kind: DbKind, name: &str) -> TestDb {
        match kind {
            DbKind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                TestDb {
                    url: format!("sqlite://{}", dir.path().join("bo.db").display()),
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            DbKind::Postgres => {
                sqlx::any::install_default_drivers();
                let db = format!("bo_{name}_{}", std::process::id());
                let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url())
                    .await
                    .expect("PostgreSQL must run for this test (deploy/local/test.sh starts it)");
                sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                sqlx::query(&format!("CREATE DATABASE {db}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let url = format!("{}/{db}", admin_url().rsplit_once('/').unwrap().0);
                TestDb {
                    url,
                    pg_name: Some(db),
                    _dir: None,
                }
            }
        }
    }

    /// A direct connection (to look behind the API).
    pub async fn connect(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        <sqlx::AnyConnection as sqlx::Connection>::connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let _ = Command::new("psql")
                .args([
                    &admin_url(),
                    "-q",
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A running backoffice.
pub struct Backoffice {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_backoffice"))
}

impl Backoffice {
    /// Starts a backoffice on `db` with extra TOML (appended to the generated file) and
    /// `--service` names (empty: all).
    pub async fn start(db: &TestDb, extra_toml: &str, services: &[&str]) -> Backoffice {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let toml = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[database]\nurl = \"{}\"\n[objects]\ndir = \"{}\"\n{extra_toml}\n",
            db.url,
            dir.path().join("objects").display()
        );
        let config = dir.path().join("bo.toml");
        std::fs::write(&config, toml).unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("serve").arg("--config").arg(&config);
        for s in services {
            cmd.args(["--service", s]);
        }
        let mut child = cmd
            .env("OPENTELLER_INIT_ADMIN_PASSWORD", INIT_PASSWORD)
            .env("RUST_LOG", "info")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        let bo = Backoffice {
            child,
            base,
            stderr,
            _dir: dir,
        };
        bo.wait_ready().await;
        bo
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "backoffice not ready: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// A client without a session.
    pub fn anonymous(&self) -> Client {
        Client {
            base: self.base.clone(),
            token: None,
            http: reqwest::Client::new(),
            group: None,
        }
    }

    /// Signs in; panics unless it works.
    pub async fn login(&self, username: &str, password: &str) -> Client {
        let mut c = self.anonymous();
        let (status, body) = c
            .post(
                "/api/v2/auth/login",
                json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, 200, "login {username}: {body}");
        c.token = Some(body["data"]["token"].as_str().unwrap().to_owned());
        c
    }

    /// Signs in as the initial administrator.
    pub async fn admin(&self) -> Client {
        self.login("sysadmin", INIT_PASSWORD).await
    }
}

impl Drop for Backoffice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client, signed in or not.
#[derive(Clone)]
pub struct Client {
    base: String,
    /// The bearer token.
    pub token: Option<String>,
    http: reqwest::Client,
    group: Option<String>,
}

impl Client {
    /// Sends `X-Txn-Group-Id: group` with the following requests.
    pub fn group(&mut self, group: &str) -> &mut Client {
        self.group = Some(group.to_owned());
        self
    }

    /// A request builder with the session.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(g) = &self.group {
            r = r.header("x-txn-group-id", g);
        }
        r
    }

    /// Sends and reads the envelope.
    pub async fn send(&self, r: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    /// PUT JSON.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// `data` of a successful answer; panics with the answer otherwise.
    pub async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, answer) = match method {
            "GET" => self.get(path).await,
            "POST" => self.post(path, body).await,
            "PUT" => self.put(path, body).await,
            "DELETE" => self.delete(path).await,
            _ => unreachable!(),
        };
        assert_eq!(status, 200, "{method} {path}: {answer}");
        assert_eq!(answer["code"], "OK", "{answer}");
        answer["data"].clone()
    }
}

/// Asserts an error answer's status and code.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["code"], code, "{}", answer.1);
    assert!(answer.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// The head office's id.
pub async fn head_office(admin: &Client) -> String {
    let tree = admin.ok("GET", "/api/v2/platform/orgs", Value::Null).await;
    tree[0]["id"].as_str().unwrap().to_owned()
}

/// The id of the role with `code`.
pub async fn role_id(admin: &Client, code: &str) -> String {
    let page = admin
        .ok("GET", "/api/v2/platform/roles?pageSize=200", Value::Null)
        .await;
    page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code)
        .unwrap_or_else(|| panic!("no role {code}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Hands business administration over: the initial administrator creates `biz` with the
/// built-in `bizadmin` role; returns biz's session.
pub async fn business_admin(bo: &Backoffice, admin: &Client) -> Client {
    let ho = head_office(admin).await;
    let role = role_id(admin, "bizadmin").await;
    admin
        .ok(
            "POST",
            "/api/v2/platform/users",
            json!({"kind": "business", "username": "biz", "displayName": "Business admin",
                   "password": PASSWORD, "orgId": ho, "roleIds": [role]}),
        )
        .await;
    bo.login("biz", PASSWORD).await
}
