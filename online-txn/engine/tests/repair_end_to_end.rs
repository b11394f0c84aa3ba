//! End to end with the real binaries: a withdrawal the host applied but never answered, whose
//! reversal the host refused (96) until the engine gave up, is repaired through the admin API
//! (a manual REVERSAL_RETRY plan) once the host is healthy: the host balance is restored and
//! the attempt is visible. Bad requests get 400 with a stable code and change nothing.

mod support;

use support::{HostSim, LI, MASTER, Proc, TMK, ZAK, ZPK, import_key, spawn, start_host_sim, word};

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use openteller_host_sim::client::{HostClient, Terminal};
use serde_json::{Value, json};

struct Stack {
    dir: tempfile::TempDir,
    _host: HostSim,
    engine: Option<Proc>,
    control: String,
    engine_addr: SocketAddr,
    admin: String,
    http: reqwest::Client,
    starts: u32,
}

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let host = start_host_sim(dir.path());
        let (control, host_addr) = (host.control.clone(), host.addr.clone());

        // The engine waits long for the host (the test kills it while it waits); reversals
        // give up after 2 attempts, 96 being retryable.
        let cfg = dir.path().join("online-txn.toml");
        std::fs::write(
            &cfg,
            format!(
                "[journal]\nurl = \"sqlite://{}\"\n[keys]\nfile = \"{}\"\n[terminals]\nlisten = \"127.0.0.1:0\"\n\
                 [host]\naddress = \"{host_addr}\"\ntimeout_ms = 60000\n\
                 [reversal]\nmax_attempts = 2\nretry_ms = 100\nttl_s = 3600\nretryable_codes = [\"96\"]\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n",
                dir.path().join("journal.db").display(),
                dir.path().join("keys.json").display()
            ),
        )
        .unwrap();
        for (name, usage, value) in [
            ("term/T0000001/TMK", "kek", TMK),
            ("host/ZPK", "pin", ZPK),
            ("host/ZAK", "mac", ZAK),
        ] {
            import_key(&cfg, name, usage, value, &[]);
        }
        let mut stack = Stack {
            dir,
            _host: host,
            engine: None,
            control,
            engine_addr: "127.0.0.1:1".parse().unwrap(),
            admin: String::new(),
            http: reqwest::Client::new(),
            starts: 0,
        };
        stack.start_engine();
        stack
    }

    fn start_engine(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(support::engine_bin());
        cmd.args(["serve", "--config"])
            .arg(self.dir.path().join("online-txn.toml"))
            .env("OPENTELLER_MASTER_KEY", MASTER);
        let (engine, line) = spawn(
            cmd,
            &self.dir.path().join(format!("engine-{}.log", self.starts)),
        );
        self.engine_addr = word(&line, "terminals=").parse().unwrap();
        self.admin = format!("http://{}/api/v2", word(&line, "admin="));
        self.engine = Some(engine);
    }

    fn kill_engine(&mut self) {
        self.engine = None;
    }

    async fn available(&self, pan: &str) -> i64 {
        support::available(&self.http, &self.control, pan).await
    }

    async fn faults(&self, body: Value) {
        support::set_faults(&self.http, &self.control, body).await;
    }

    async fn clear_faults(&self) {
        support::clear_faults(&self.http, &self.control).await;
    }

    /// An admin API call: (HTTP status, envelope).
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.admin);
        let req = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            "DELETE" => self.http.delete(url),
            other => panic!("{other}"),
        };
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// A raw body (for malformed requests).
    async fn post_raw(&self, path: &str, content_type: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.admin))
            .body(body.to_owned());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Signs terminal T0000001 on and returns a client holding its new working keys.
    async fn sign_on(&self) -> (HostClient, Terminal) {
        support::sign_on(self.engine_addr, TMK).await
    }
}

/// Polls `check` every 100 ms until it holds or `secs` pass.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_error(resp: &(u16, Value), status: u16, code: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["code"], code, "{}", resp.1);
    assert!(
        resp.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        resp.1
    );
}

#[tokio::test]
async fn a_failed_reversal_is_repaired_through_the_admin_api() {
    let mut stack = Stack::start();
    let (mut client, mut t) = stack.sign_on().await;
    let before = stack.available(LI).await;

    // The host applies the withdrawal but its answer is late; the engine dies while waiting,
    // leaving the row SENT (fate unknown).
    stack.faults(json!({"delay_ms": 600_000})).await;
    let mut withdrawal = t.withdrawal(LI, "1234", 50_000);
    client
        .send(&t.seal(&mut withdrawal).unwrap())
        .await
        .unwrap();
    eventually(10, "the host applied the withdrawal", || async {
        stack.available(LI).await == before - 50_000
    })
    .await;
    stack.kill_engine();

    // Restarted, the engine reverses the row, but the host answers 96 to everything: after
    // 2 attempts the reversal is given up and needs repair.
    stack
        .faults(json!({"delay_ms": 0, "response_code": "96", "response_rate": 1.0}))
        .await;
    stack.start_engine();
    let deadline = Instant::now() + Duration::from_secs(15);
    let item = loop {
        let (status, v) = stack.api("GET", "/repair/items", None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["code"], "OK");
        if v["data"]["totalCount"] == 1 && v["data"]["rows"][0]["kind"] == "REVERSAL_FAILED" {
            break v["data"]["rows"][0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the reversal was not given up: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let journal_id = item["journal"]["id"].as_i64().unwrap();
    assert_eq!(item["systemGroup"], "HOST");
    assert_eq!(item["journal"]["panMasked"], "622202*********5432");
    assert_eq!(item["journal"]["state"], "IN_DOUBT");
    assert_eq!(item["journal"]["reversal"]["attempts"], 2);
    assert!(
        !item.to_string().contains(LI),
        "no full PAN leaves the engine"
    );
    assert_eq!(stack.available(LI).await, before - 50_000, "still debited");

    // The host is healthy again; an operator creates a manual plan and runs it.
    stack.clear_faults().await;
    let (status, created) = stack
        .api(
            "POST",
            "/repair/plans",
            Some(json!({
                "systemGroup": "HOST",
                "fixCode": "REVERSAL_RETRY",
                "maxRetries": 3,
                "cron": "0 0/10 * * * ?",
                "mode": "MANUAL",
                "importance": "CRITICAL",
                "description": "冲正失败重发"
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["code"], "OK");
    let plan_id = created["data"]["id"].as_i64().unwrap();
    assert_eq!(created["data"]["mode"], "MANUAL");
    assert_eq!(created["data"]["nextRunMs"], Value::Null, "manual");

    let (status, run) = stack
        .api("POST", &format!("/repair/plans/{plan_id}/run"), None)
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["data"]["trigger"], "MANUAL");
    assert_eq!(run["data"]["succeeded"], 1, "{run}");
    assert_eq!(run["data"]["attempts"][0]["journalId"], journal_id);

    // The worker delivers the re-queued reversal: the money is back, the row REVERSED.
    eventually(15, "the repaired reversal restored the balance", || async {
        stack.available(LI).await == before
    })
    .await;
    eventually(5, "the row is REVERSED", || async {
        let (_, v) = stack
            .api("GET", &format!("/journal/{journal_id}"), None)
            .await;
        v["data"]["state"] == "REVERSED" && v["data"]["reversal"]["state"] == "DONE"
    })
    .await;
    let (_, items) = stack.api("GET", "/repair/items", None).await;
    assert_eq!(items["data"]["totalCount"], 0);
    let (status, log) = stack
        .api(
            "GET",
            &format!("/repair/attempts?planId={plan_id}&pageNo=1&pageSize=10"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(
        (
            &log["data"]["pageNo"],
            &log["data"]["pageSize"],
            &log["data"]["totalCount"],
            &log["data"]["totalPages"]
        ),
        (&json!(1), &json!(10), &json!(1), &json!(1))
    );
    let attempt = &log["data"]["rows"][0];
    assert_eq!(attempt["outcome"], "SUCCESS");
    assert_eq!(attempt["journalId"], journal_id);
    assert_eq!(attempt["fixCode"], "REVERSAL_RETRY");
    assert!(
        attempt["detail"]
            .as_str()
            .unwrap()
            .contains("after 2 attempts")
    );
    // Money moved back exactly once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.available(LI).await, before);

    // Bad requests: 400 (or 404/405/409) with a stable code, and nothing changes.
    let (_, plan_before) = stack
        .api("GET", &format!("/repair/plans/{plan_id}"), None)
        .await;
    assert_error(
        &stack
            .post_raw("/repair/plans", Some("application/json"), "{not json")
            .await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &stack
            .post_raw(
                "/repair/plans",
                None,
                r#"{"systemGroup":"X","fixCode":"REVERSAL_RETRY"}"#,
            )
            .await,
        400,
        "INVALID_ARGUMENT",
    );
    let unknown = stack
        .api(
            "POST",
            "/repair/plans",
            Some(json!({"systemGroup": "X", "fixCode": "REVERSAL_RETRY", "retryInterval": "1m"})),
        )
        .await;
    assert_error(&unknown, 400, "INVALID_ARGUMENT");
    assert!(
        unknown.1["message"]
            .as_str()
            .unwrap()
            .contains("retryInterval")
    );
    let range = stack
        .api(
            "POST",
            "/repair/plans",
            Some(json!({"systemGroup": "X", "fixCode": "REVERSAL_RETRY", "maxRetries": 100})),
        )
        .await;
    assert_error(&range, 400, "INVALID_ARGUMENT");
    assert_eq!(range.1["data"]["field"], "maxRetries");
    let cron = stack
        .api(
            "PUT",
            &format!("/repair/plans/{plan_id}"),
            Some(json!({"maxRetries": 5, "cron": "0 0/10 * *"})),
        )
        .await;
    assert_error(&cron, 400, "INVALID_ARGUMENT");
    assert_eq!(cron.1["data"]["field"], "cron");
    assert_error(
        &stack
            .api(
                "POST",
                &format!("/repair/plans/{plan_id}/run"),
                Some(json!({"force": true})),
            )
            .await,
        400,
        "INVALID_ARGUMENT",
    );
    for query in [
        "pageSize=1000",
        "pageSize=0",
        "pageNo=0",
        "pageNo=abc",
        "planId=-1",
        "sort=id",
    ] {
        assert_error(
            &stack
                .api("GET", &format!("/repair/attempts?{query}"), None)
                .await,
            400,
            "INVALID_ARGUMENT",
        );
    }
    assert_error(
        &stack.api("GET", "/repair/items?planId=1", None).await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &stack.api("GET", "/repair/plans/abc", None).await,
        400,
        "INVALID_ARGUMENT",
    );
    assert_error(
        &stack.api("GET", "/repair/plans/999999", None).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &stack.api("GET", "/journal/999999", None).await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &stack
            .api(
                "POST",
                "/repair/plans",
                Some(json!({"systemGroup": "HOST", "fixCode": "REVERSAL_RETRY"})),
            )
            .await,
        409,
        "CONFLICT",
    );
    assert_error(
        &stack.api("DELETE", "/repair/items", None).await,
        405,
        "METHOD_NOT_ALLOWED",
    );
    assert_error(&stack.api("GET", "/nothing", None).await, 404, "NOT_FOUND");
    let (_, plan_after) = stack
        .api("GET", &format!("/repair/plans/{plan_id}"), None)
        .await;
    assert_eq!(plan_after["data"], plan_before["data"], "nothing changed");
    let (_, plans) = stack.api("GET", "/repair/plans", None).await;
    assert_eq!(plans["data"]["totalCount"], 1);

    // An invalid (失效) plan refuses to run.
    let (status, v) = stack
        .api(
            "PUT",
            &format!("/repair/plans/{plan_id}"),
            Some(json!({"valid": false})),
        )
        .await;
    assert_eq!((status, &v["data"]["valid"]), (200, &json!(false)), "{v}");
    assert_error(
        &stack
            .api("POST", &format!("/repair/plans/{plan_id}/run"), None)
            .await,
        409,
        "FAILED_PRECONDITION",
    );
    let (status, v) = stack
        .api("DELETE", &format!("/repair/plans/{plan_id}"), None)
        .await;
    assert_eq!((status, &v["code"]), (200, &json!("OK")));
    let (_, log) = stack
        .api("GET", &format!("/repair/attempts?planId={plan_id}"), None)
        .await;
    assert_eq!(log["data"]["totalCount"], 1, "attempts outlive their plan");
}

#[test]
fn the_admin_api_binds_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("online-txn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[journal]\nurl = \"sqlite://{}\"\n[keys]\nfile = \"{}\"\n[terminals]\nlisten = \"127.0.0.1:0\"\n\
             [host]\naddress = \"127.0.0.1:9\"\n[admin]\nlisten = \"0.0.0.0:0\"\n",
            dir.path().join("journal.db").display(),
            dir.path().join("keys.json").display()
        ),
    )
    .unwrap();
    let out = Command::new(support::engine_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("OPENTELLER_MASTER_KEY", MASTER)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no authentication"));
    assert!(out.stdout.is_empty(), "nothing listened");
}
