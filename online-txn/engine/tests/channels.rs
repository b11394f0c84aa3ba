//! Channels end to end: internal bank systems (test clients) → the real `online-txn` with
//! `[[channels]]` → back ends: the real `host-sim`, an in-test JSON host, an in-test "two in,
//! two out" relay. Each front (HTTP JSON, HTTP XML, TCP fixed-width, TCP delimited, TCP 8583)
//! does balance inquiries and transfers; bad input is refused clearly and journaled; the circuit
//! breaker opens and recovers; transactions left in doubt on other back ends are reversed.

mod support;

use support::{
    HostSim, LI, MASTER, Proc, ZAK, ZHANG, ZPK, import_key, spawn, start_host_sim_with, word,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::{FieldValue, Message, Spec};
use openteller_crypto::{self as crypto, Algorithm, Key, PinBlockFormat};
use openteller_online_txn::journal::{Journal, TxnState};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The channels' PIN key (shared with the internal systems).
const PIK: &str = "5555555555555555AAAAAAAAAAAAAAAA";
/// The JSON host's PIN key.
const CORE_ZPK: &str = "7777777777777777BBBBBBBBBBBBBBBB";
const SECRET: &str = "mobile-channel-shared-secret-0001";
const CORE_SECRET: &str = "core-json-host-secret";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/channels")
}

/// The channels every stack has; routes and back ends vary per test.
fn channels_toml() -> String {
    let ex = examples();
    let ex = ex.display();
    format!(
        r#"
[[channels]]
name = "mobile"
kind = "http_json"
listen = "127.0.0.1:0"
path = "/txn"
format = "{ex}/mobile-json.toml"
mapping = {{ request = "{ex}/request-map.toml", response = "{ex}/response-map.toml" }}
terminal_prefix = "MB"
pin_key = "chan/PIK"
processing_codes = ["31", "40"]
auth = {{ header = "x-openteller-key", secret_env = "OT_TEST_MOBILE_KEY" }}
max_message_bytes = 4096

[[channels]]
name = "branch"
kind = "http_xml"
listen = "127.0.0.1:0"
format = "{ex}/branch-xml-request.toml"
response_format = "{ex}/branch-xml-response.toml"
mapping = {{ request = "{ex}/request-map.toml", response = "{ex}/response-map.toml" }}
terminal_prefix = "BX"
pin_key = "chan/PIK"
connection = "short"
max_in_flight = 2

[[channels]]
name = "kiosk"
kind = "tcp_fixed"
listen = "127.0.0.1:0"
framing = "ascii4"
connection = "short"
format = "{ex}/kiosk-fixed-request.toml"
response_format = "{ex}/kiosk-fixed-response.toml"
mapping = {{ request = "{ex}/request-map.toml", response = "{ex}/response-map.toml" }}
terminal_prefix = "KF"
pin_key = "chan/PIK"

[[channels]]
name = "teller"
kind = "tcp_delimited"
listen = "127.0.0.1:0"
format = "{ex}/teller-delimited-request.toml"
response_format = "{ex}/teller-delimited-response.toml"
mapping = {{ request = "{ex}/request-map.toml", response = "{ex}/response-map.toml" }}
terminal_prefix = "TD"
pin_key = "chan/PIK"
pinless = ["31"]
max_message_bytes = 512

[[channels]]
name = "switch"
kind = "tcp_8583"
listen = "127.0.0.1:0"
format = "iso87-ascii"
framing = "ascii4"
terminal_prefix = "SW"
pin_key = "chan/PIK"
"#
    )
}

struct Stack {
    dir: tempfile::TempDir,
    _host: HostSim,
    _engine: Proc,
    control: String,
    addrs: std::collections::HashMap<String, SocketAddr>,
    engine_log: PathBuf,
    http: reqwest::Client,
}

static STAN: AtomicU32 = AtomicU32::new(1);

fn stan() -> String {
    format!("{:06}", STAN.fetch_add(1, Ordering::Relaxed))
}

impl Stack {
    /// host-sim and the engine; `extra` is appended to the engine's configuration (routes,
    /// back ends; `HOST` in it is replaced by host-sim's address).
    fn start(host_timeout_ms: u64, extra: &str) -> Stack {
        Stack::start_full(host_timeout_ms, "", |_| extra.to_owned())
    }

    /// [`Stack::start`] with `host_extra` in host-sim's configuration, and the engine's
    /// `extra` made knowing host-sim (its listening line).
    fn start_full(
        host_timeout_ms: u64,
        host_extra: &str,
        extra: impl FnOnce(&HostSim) -> String,
    ) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let host = start_host_sim_with(dir.path(), host_extra);
        let (control, host_addr) = (host.control.clone(), host.addr.clone());
        let extra = extra(&host);

        let cfg = dir.path().join("online-txn.toml");
        std::fs::write(
            &cfg,
            format!(
                "[journal]\nurl = \"sqlite://{}\"\n[keys]\nfile = \"{}\"\n[terminals]\nlisten = \"127.0.0.1:0\"\n\
                 [host]\naddress = \"{host_addr}\"\ntimeout_ms = {host_timeout_ms}\n[reversal]\nmax_attempts = 100\nretry_ms = 200\nttl_s = 3600\nretryable_codes = [\"91\", \"96\"]\n{}\n{}",
                dir.path().join("journal.db").display(),
                dir.path().join("keys.json").display(),
                channels_toml(),
                extra.replace("HOST", &host_addr),
            ),
        )
        .unwrap();
        for (name, usage, value) in [
            ("host/ZPK", "pin", ZPK),
            ("host/ZAK", "mac", ZAK),
            ("chan/PIK", "pin", PIK),
            ("core/ZPK", "pin", CORE_ZPK),
        ] {
            import_key(
                &cfg,
                name,
                usage,
                value,
                &[
                    ("OT_TEST_MOBILE_KEY", SECRET),
                    ("OT_TEST_CORE_KEY", CORE_SECRET),
                ],
            );
        }
        let engine_log = dir.path().join("engine.log");
        let mut cmd = Command::new(support::engine_bin());
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .env("OPENTELLER_MASTER_KEY", MASTER)
            .env("OT_TEST_MOBILE_KEY", SECRET)
            .env("OT_TEST_CORE_KEY", CORE_SECRET);
        let (engine, _) = spawn(cmd, &engine_log);
        // Each channel logs "channel listening: NAME=ADDR" before the engine reports ready.
        let log = std::fs::read_to_string(&engine_log).unwrap();
        let mut addrs = std::collections::HashMap::new();
        for line in log.lines() {
            if let Some(rest) = line.split("channel listening: ").nth(1) {
                let pair = rest.split_whitespace().next().unwrap();
                let (name, addr) = pair.split_once('=').unwrap();
                addrs.insert(name.to_owned(), addr.parse().unwrap());
            }
        }
        assert_eq!(addrs.len(), 5, "{log}");
        Stack {
            dir,
            _host: host,
            _engine: engine,
            control,
            addrs,
            engine_log,
            http: reqwest::Client::new(),
        }
    }

    fn addr(&self, channel: &str) -> SocketAddr {
        self.addrs[channel]
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.engine_log).unwrap_or_default()
    }

    async fn journal(&self) -> Journal {
        Journal::open(&format!(
            "sqlite://{}",
            self.dir.path().join("journal.db").display()
        ))
        .await
        .unwrap()
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

    async fn post(&self, channel: &str, path: &str, body: impl Into<String>) -> (u16, String) {
        let r = self
            .http
            .post(format!("http://{}{path}", self.addr(channel)))
            .header("x-openteller-key", SECRET)
            .body(body.into())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits until `pan`'s available balance is `want`.
    async fn wait_balance(&self, pan: &str, want: i64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let have = self.available(pan).await;
            if have == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: balance {have}, want {want}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn pin_block(pan: &str, key: &str) -> String {
    let k = Key::from_hex(Algorithm::Tdes, key).unwrap();
    hex::encode_upper(crypto::encrypt_pin_block(PinBlockFormat::Iso0, "1234", pan, &k).unwrap())
}

/// One request as the record-format channels name its fields.
#[derive(Clone)]
struct Req {
    code: &'static str,
    terminal: String,
    stan: String,
    pan: String,
    amount: Option<String>,
    to: Option<String>,
    pin: bool,
}

impl Req {
    fn inquiry(terminal: &str) -> Req {
        Req {
            code: "310000",
            terminal: terminal.into(),
            stan: stan(),
            pan: ZHANG.into(),
            amount: None,
            to: None,
            pin: true,
        }
    }

    fn transfer(terminal: &str, minor: i64) -> Req {
        Req {
            code: "400000",
            amount: Some(format!("{}.{:02}", minor / 100, minor % 100)),
            to: Some(LI.into()),
            ..Req::inquiry(terminal)
        }
    }

    fn pin(&self) -> String {
        if self.pin {
            pin_block(&self.pan, PIK)
        } else {
            String::new()
        }
    }

    fn json(&self) -> String {
        let mut txn = json!({"code": self.code, "terminal": self.terminal, "stan": self.stan, "currency": "156"});
        if let Some(a) = &self.amount {
            txn["amount"] = json!(a);
        }
        if let Some(t) = &self.to {
            txn["to_account"] = json!(t);
        }
        let mut card = json!({"pan": self.pan});
        if self.pin {
            card["pin_block"] = json!(self.pin());
        }
        json!({"txn": txn, "card": card}).to_string()
    }

    fn xml(&self) -> String {
        let mut s = format!(
            "<?xml version=\"1.0\"?><Request type=\"0200\"><Header><Code>{}</Code><Terminal>{}</Terminal><Stan>{}</Stan></Header><Card><Pan>{}</Pan>",
            self.code, self.terminal, self.stan, self.pan
        );
        if self.pin {
            s += &format!("<PinBlock>{}</PinBlock>", self.pin());
        }
        s += "</Card>";
        if let Some(a) = &self.amount {
            s += &format!("<Amount currency=\"156\">{a}</Amount>");
        }
        if let Some(t) = &self.to {
            s += &format!("<ToAccount>{t}</ToAccount>");
        }
        s + "</Request>"
    }

    fn fixed(&self) -> String {
        format!(
            "{:6}{:8}{:6}{:4}{:19}{:>12}{:3}{:19}{:16}",
            self.code,
            self.terminal,
            self.stan,
            "",
            self.pan,
            self.amount.clone().unwrap_or_default(),
            "156",
            self.to.clone().unwrap_or_default(),
            self.pin()
        )
    }

    fn delimited(&self) -> String {
        format!(
            "{}|{}|{}||{}|{}|156|{}|{}",
            self.code,
            self.terminal,
            self.stan,
            self.pan,
            self.amount.clone().unwrap_or_default(),
            self.to.clone().unwrap_or_default(),
            self.pin()
        )
    }
}

/// A framed TCP client.
struct Tcp {
    stream: TcpStream,
    framer: Framer,
    buf: BytesMut,
}

impl Tcp {
    async fn connect(addr: SocketAddr, prefix: LengthPrefix) -> Tcp {
        Tcp {
            stream: TcpStream::connect(addr).await.unwrap(),
            framer: Framer::new(prefix, 65_535),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, payload: &[u8]) {
        let frame = self.framer.frame(payload).unwrap();
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next answer; `None` when the engine closed the connection.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(p) = self.framer.decode_frame(&mut self.buf).unwrap() {
                return Some(p.to_vec());
            }
            let n =
                tokio::time::timeout(Duration::from_secs(15), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("an answer in time")
                    .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    async fn call(&mut self, payload: &[u8]) -> String {
        self.send(payload).await;
        String::from_utf8(self.recv().await.expect("an answer")).unwrap()
    }

    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// The answer fields every front reports.
#[derive(Debug, Default)]
struct Ans {
    rc: String,
    stan: String,
    rrn: String,
    balance: String,
}

fn field(s: &str, start: usize, width: usize) -> String {
    s.chars()
        .skip(start)
        .take(width)
        .collect::<String>()
        .trim()
        .to_owned()
}

fn xml_text(doc: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    doc.split(&open)
        .nth(1)
        .and_then(|r| r.split(&format!("</{tag}>")).next())
        .unwrap_or_default()
        .to_owned()
}

async fn call(stack: &Stack, channel: &str, req: &Req) -> Ans {
    match channel {
        "mobile" => {
            let (status, body) = stack.post("mobile", "/txn", req.json()).await;
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            Ans {
                rc: v["result"]["code"].as_str().unwrap().into(),
                stan: v["txn"]["stan"].as_str().unwrap().into(),
                rrn: v["result"]["rrn"].as_str().unwrap_or_default().into(),
                balance: v["result"]["balance"].as_str().unwrap_or_default().into(),
            }
        }
        "branch" => {
            let (status, body) = stack.post("branch", "/", req.xml()).await;
            assert_eq!(status, 200, "{body}");
            let rc = body
                .split("code=\"")
                .nth(1)
                .and_then(|r| r.get(..2))
                .unwrap_or_default()
                .to_owned();
            Ans {
                rc,
                stan: xml_text(&body, "Stan"),
                rrn: xml_text(&body, "Rrn"),
                balance: xml_text(&body, "Balance"),
            }
        }
        "kiosk" => {
            let mut c = Tcp::connect(stack.addr("kiosk"), LengthPrefix::Ascii4).await;
            let a = c.call(req.fixed().as_bytes()).await;
            assert_eq!(a.chars().count(), 66, "{a:?}");
            assert!(
                c.closed().await,
                "short connection: closed after the answer"
            );
            Ans {
                rc: field(&a, 0, 2),
                stan: field(&a, 2, 6),
                rrn: field(&a, 16, 12),
                balance: field(&a, 46, 20),
            }
        }
        "teller" => {
            let mut c = Tcp::connect(stack.addr("teller"), LengthPrefix::Binary2).await;
            let a = c.call(req.delimited().as_bytes()).await;
            let f: Vec<&str> = a.split('|').collect();
            assert_eq!(f.len(), 7, "{a:?}");
            Ans {
                rc: f[0].into(),
                stan: f[1].into(),
                rrn: f[3].into(),
                balance: f[6].into(),
            }
        }
        "switch" => {
            let spec = Spec::builtin("iso87-ascii").unwrap();
            let mut m = Message::new("0200")
                .with(2, req.pan.as_str())
                .with(3, req.code)
                .with(11, req.stan.as_str())
                .with(41, req.terminal.as_str())
                .with(49, "156");
            if req.pin {
                m.set(52, hex::decode(req.pin()).unwrap());
            }
            if let Some(a) = &req.amount {
                let minor: i64 = a.replace('.', "").parse().unwrap();
                m.set(4, format!("{minor:012}"));
            }
            if let Some(t) = &req.to {
                m.set(103, t.as_str());
            }
            let mut c = Tcp::connect(stack.addr("switch"), LengthPrefix::Ascii4).await;
            c.send(&spec.encode(&m).unwrap()).await;
            let a = spec.decode(&c.recv().await.unwrap()).unwrap();
            assert_eq!(a.mti, "0210");
            let t = |n| {
                a.get(n)
                    .and_then(FieldValue::as_text)
                    .unwrap_or_default()
                    .to_owned()
            };
            Ans {
                rc: t(39),
                stan: t(11),
                rrn: t(37),
                balance: t(54),
            }
        }
        other => panic!("{other}"),
    }
}

const TERMINALS: [(&str, &str); 5] = [
    ("mobile", "MB000001"),
    ("branch", "BX000001"),
    ("kiosk", "KF000001"),
    ("teller", "TD000001"),
    ("switch", "SW000001"),
];

#[tokio::test]
async fn every_front_does_inquiries_and_transfers() {
    let stack = Stack::start(3_000, "");
    let (zhang, li) = (stack.available(ZHANG).await, stack.available(LI).await);
    let mut moved = 0;
    for (i, (channel, terminal)) in TERMINALS.iter().enumerate() {
        let inquiry = Req::inquiry(terminal);
        let a = call(&stack, channel, &inquiry).await;
        assert_eq!(a.rc, "00", "{channel} inquiry");
        assert_eq!(a.stan, inquiry.stan, "{channel}");
        assert!(a.balance.starts_with("1002156C"), "{channel}: {a:?}");
        assert_eq!(a.rrn.len(), 12, "{channel}: {a:?}");

        let amount = 100 * (i as i64 + 1);
        let transfer = Req::transfer(terminal, amount);
        let a = call(&stack, channel, &transfer).await;
        assert_eq!(a.rc, "00", "{channel} transfer");
        moved += amount;
        assert_eq!(stack.available(ZHANG).await, zhang - moved, "{channel}");
        assert_eq!(stack.available(LI).await, li + moved, "{channel}");

        // A retransmission gets the first answer; the money moves once.
        let again = call(&stack, channel, &transfer).await;
        assert_eq!(
            (again.rc.as_str(), again.rrn.as_str()),
            ("00", a.rrn.as_str())
        );
        assert_eq!(stack.available(ZHANG).await, zhang - moved, "{channel}");
    }

    // A wrong PIN is the host's decline, passed through.
    let mut wrong = Req::inquiry("MB000001");
    wrong.pan = LI.into();
    let bad_pin = {
        let k = Key::from_hex(Algorithm::Tdes, PIK).unwrap();
        hex::encode_upper(crypto::encrypt_pin_block(PinBlockFormat::Iso0, "9999", LI, &k).unwrap())
    };
    let body = wrong.json().replace(&wrong.pin(), &bad_pin);
    let (status, body) = stack.post("mobile", "/txn", body).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"code\":\"55\""), "{body}");

    // Without a PIN: teller allows inquiries (pinless = ["31"]) — sent with F22 "..2" (no PIN
    // entry capability), which host-sim accepts for inquiries — but not transfers, which the
    // engine declines 55 without sending.
    let mut pinless = Req::inquiry("TD000001");
    pinless.pin = false;
    assert_eq!(call(&stack, "teller", &pinless).await.rc, "00");
    let mut pinless = Req::transfer("TD000001", 100);
    pinless.pin = false;
    assert_eq!(call(&stack, "teller", &pinless).await.rc, "55");
    // mobile allows 31 and 40 only.
    let mut withdrawal = Req::transfer("MB000001", 100);
    withdrawal.code = "010000";
    assert_eq!(call(&stack, "mobile", &withdrawal).await.rc, "12");
    assert_eq!(stack.available(ZHANG).await, zhang - moved);

    // The journal has them, PANs masked, and the terminals' namespace is untouched.
    let journal = stack.journal().await;
    let approved = journal.in_state(TxnState::Approved).await.unwrap();
    assert_eq!(
        approved.len(),
        11,
        "an inquiry and a transfer per front, and the PIN-less inquiry"
    );
    assert!(
        approved
            .iter()
            .all(|r| r.txn.pan_masked == "622202*********3445")
    );
    let declined = journal.in_state(TxnState::Declined).await.unwrap();
    let codes: Vec<_> = declined
        .iter()
        .map(|r| r.response_code.clone().unwrap_or_default())
        .collect();
    assert_eq!(codes.len(), 3, "{codes:?}");
    for want in ["55", "12"] {
        assert!(codes.iter().any(|c| c == want), "{codes:?}");
    }
    let never_sent = declined
        .iter()
        .find(|r| r.response_code.as_deref() == Some("55") && r.txn.processing_code == "400000")
        .unwrap();
    assert_eq!(never_sent.txn.terminal_id, "TD000001");
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_journaled() {
    let stack = Stack::start(3_000, "");
    let journal = stack.journal().await;

    // HTTP JSON.
    let (status, body) = stack.post("mobile", "/txn", "{not json").await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "CODEC_BAD_JSON", "{body}");
    assert!(v["message"].as_str().unwrap().len() > 5);
    let (status, body) = stack.post("mobile", "/txn", "x".repeat(10_000)).await;
    assert_eq!((status, body.contains("TOO_LARGE")), (413, true), "{body}");
    let (status, body) = stack.post("mobile", "/other", "{}").await;
    assert_eq!((status, body.contains("NOT_FOUND")), (404, true));
    let r = stack
        .http
        .get(format!("http://{}/txn", stack.addr("mobile")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let r = stack
        .http
        .post(format!("http://{}/txn", stack.addr("mobile")))
        .header("x-openteller-key", "wrong")
        .body(Req::inquiry("MB000001").json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A malformed amount with a known identity: 400, and journaled DECLINED 30.
    let mut bad_amount = Req::transfer("MB000002", 100);
    bad_amount.amount = Some("1.234".into());
    let (status, body) = stack.post("mobile", "/txn", bad_amount.json()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("CODEC_MAPPING"), "{body}");
    let row = journal
        .find("MB000002", &bad_amount.stan, &today())
        .await
        .unwrap()
        .expect("journaled");
    assert_eq!(row.state, TxnState::Declined);
    assert_eq!(row.response_code.as_deref(), Some("30"));
    // No STAN: nothing to journal under.
    let (status, body) = stack
        .post(
            "mobile",
            "/txn",
            json!({"txn": {"code": "310000", "terminal": "MB000003"}, "card": {"pan": ZHANG}})
                .to_string(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("BAD_REQUEST") && body.contains("F11"),
        "{body}"
    );
    // Another channel's (or a terminal's) id: refused, not journaled under it.
    let foreign = Req::inquiry("T0000001");
    let (status, body) = stack.post("mobile", "/txn", foreign.json()).await;
    assert_eq!(status, 400);
    assert!(body.contains("terminal_prefix"), "{body}");
    assert!(
        journal
            .find("T0000001", &foreign.stan, &today())
            .await
            .unwrap()
            .is_none()
    );
    // A short PAN with an identity: journaled 30.
    let mut short_pan = Req::inquiry("MB000004");
    short_pan.pan = "12345".into();
    short_pan.pin = false;
    let (status, _) = stack.post("mobile", "/txn", short_pan.json()).await;
    assert_eq!(status, 400);
    let row = journal
        .find("MB000004", &short_pan.stan, &today())
        .await
        .unwrap()
        .expect("journaled");
    assert_eq!(row.response_code.as_deref(), Some("30"));

    // HTTP XML: an XML error document.
    let (status, body) = stack.post("branch", "/", "<Request><Header>").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("<Error><Code>CODEC_BAD_XML</Code><Message>"),
        "{body}"
    );
    let (status, body) = stack.post("branch", "/", "<Other/>").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("<?xml"), "{body}");

    // TCP fixed width: a wrong length answers F39 = 30 in the response layout.
    let mut c = Tcp::connect(stack.addr("kiosk"), LengthPrefix::Ascii4).await;
    let a = c.call(b"310000KF000001").await;
    assert_eq!(a.chars().count(), 66);
    assert_eq!(field(&a, 0, 2), "30");
    assert!(c.closed().await);
    // A malformed ASCII length prefix: answered 30, then closed.
    let mut c = Tcp::connect(stack.addr("kiosk"), LengthPrefix::Ascii4).await;
    c.stream.write_all(b"12x4hello").await.unwrap();
    let a = String::from_utf8(c.recv().await.expect("an error answer")).unwrap();
    assert_eq!(field(&a, 0, 2), "30");
    assert!(c.closed().await);

    // TCP delimited, long connection: a wrong field count answers 30 and the connection stays
    // usable; an oversized frame answers 30 and closes.
    let mut c = Tcp::connect(stack.addr("teller"), LengthPrefix::Binary2).await;
    let a = c.call(b"310000|TD000009").await;
    assert!(a.starts_with("30|"), "{a}");
    let ok = Req::inquiry("TD000009");
    let a = c.call(ok.delimited().as_bytes()).await;
    assert!(a.starts_with("00|"), "{a}");
    // Identity known, amount malformed: the answer echoes it and the row is journaled.
    let mut bad = Req::transfer("TD000009", 100);
    bad.amount = Some("ten".into());
    let a = c.call(bad.delimited().as_bytes()).await;
    assert!(a.starts_with(&format!("30|{}|TD000009|", bad.stan)), "{a}");
    assert!(
        journal
            .find("TD000009", &bad.stan, &today())
            .await
            .unwrap()
            .is_some()
    );
    c.stream.write_all(&[0x04, 0x00]).await.unwrap(); // 1024 > max_message_bytes 512
    let a = String::from_utf8(c.recv().await.expect("an error answer")).unwrap();
    assert!(a.starts_with("30|"), "{a}");
    assert!(c.closed().await);

    // TCP 8583: undecodable bytes answer a 0210 with F39 = 30.
    let mut c = Tcp::connect(stack.addr("switch"), LengthPrefix::Ascii4).await;
    c.send(b"0200ZZZZ").await;
    let spec = Spec::builtin("iso87-ascii").unwrap();
    let a = spec.decode(&c.recv().await.unwrap()).unwrap();
    assert_eq!(a.get(39).and_then(FieldValue::as_text), Some("30"));

    // Nothing crashed: every front still works.
    for (channel, terminal) in TERMINALS {
        assert_eq!(
            call(&stack, channel, &Req::inquiry(terminal)).await.rc,
            "00",
            "{channel}"
        );
    }
}

#[tokio::test]
async fn mutated_requests_never_break_a_front() {
    use rand::{Rng, SeedableRng};
    let stack = Stack::start(3_000, "");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0123_4567);
    let mut mutate = |bytes: &[u8]| -> Vec<u8> {
        let mut b = bytes.to_vec();
        match rng.random_range(0..4) {
            0 => b.truncate(rng.random_range(0..b.len())),
            _ => {
                for _ in 0..rng.random_range(1..4) {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
            }
        }
        b
    };
    // A bad MTI and a bad amount at once: still a 400, not a failure.
    let mut odd: Value = serde_json::from_str(&Req::transfer("MB000001", 1).json()).unwrap();
    odd["mti"] = json!("!!!!");
    odd["txn"]["amount"] = json!("x");
    let (status, body) = stack.post("mobile", "/txn", odd.to_string()).await;
    assert_eq!(status, 400, "{body}");
    let spec = Spec::builtin("iso87-ascii").unwrap();
    for _ in 0..40 {
        let mut q = Req::inquiry("MB000001");
        q.pan = LI.into();
        for (channel, base) in [
            ("mobile", q.json()),
            ("branch", q.xml().replace("MB", "BX")),
        ] {
            let body = mutate(base.as_bytes());
            let r = stack
                .http
                .post(format!(
                    "http://{}{}",
                    stack.addr(channel),
                    if channel == "mobile" { "/txn" } else { "/" }
                ))
                .header("x-openteller-key", SECRET)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert!(status == 200 || status == 400, "{channel}: {status} {text}");
        }
        let kiosk = mutate(q.fixed().replace("MB", "KF").as_bytes());
        let mut c = Tcp::connect(stack.addr("kiosk"), LengthPrefix::Ascii4).await;
        c.send(&kiosk).await;
        let a = c.recv().await.expect("an answer");
        assert_eq!(a.len(), 66, "{}", String::from_utf8_lossy(&a));
        let teller = mutate(q.delimited().replace("MB", "TD").as_bytes());
        let mut c = Tcp::connect(stack.addr("teller"), LengthPrefix::Binary2).await;
        c.send(&teller).await;
        let a = String::from_utf8(c.recv().await.expect("an answer")).unwrap();
        assert_eq!(a.split('|').count(), 7, "{a}");
        let m = Message::new("0200")
            .with(2, LI)
            .with(3, "310000")
            .with(11, stan())
            .with(41, "SW000001")
            .with(52, hex::decode(q.pin()).unwrap());
        let switch = mutate(&spec.encode(&m).unwrap());
        let mut c = Tcp::connect(stack.addr("switch"), LengthPrefix::Ascii4).await;
        c.send(&switch).await;
        let a = c.recv().await.expect("an answer");
        assert!(spec.decode(&a).is_ok());
    }
    assert!(!stack.log().contains("panicked"), "{}", stack.log());
    for (channel, terminal) in TERMINALS {
        assert_eq!(
            call(&stack, channel, &Req::inquiry(terminal)).await.rc,
            "00",
            "{channel}"
        );
    }
}

fn today() -> String {
    // The engine fills F13 with today's UTC date when a channel request has none.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let z = secs / 86_400 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    format!("{m:02}{d:02}")
}

#[tokio::test]
async fn circuit_breaker_opens_on_timeouts_and_recovers_and_in_doubt_is_reversed() {
    let stack = Stack::start(
        3_000,
        r#"
[[backends]]
name = "hostb"
kind = "tcp_8583"
address = "HOST"
connections = 1
timeout_ms = 500
breaker = { failures = 2, cooldown_ms = 1500 }

[[routes]]
channel = "teller"
backend = "hostb"

[[routes]]
backend = "host"
"#,
    );
    let (zhang, li) = (stack.available(ZHANG).await, stack.available(LI).await);
    let t = "TD000001";
    assert_eq!(call(&stack, "teller", &Req::inquiry(t)).await.rc, "00");

    // The host applies the transfers but answers too late: in doubt (98), twice — the
    // breaker opens.
    stack.faults(json!({"delay_ms": 2000})).await;
    let a = Req::transfer(t, 1_000);
    let b = Req::transfer(t, 2_000);
    assert_eq!(call(&stack, "teller", &a).await.rc, "98");
    assert_eq!(call(&stack, "teller", &b).await.rc, "98");
    // Open: declined 91 at once, never sent.
    let c = Req::transfer(t, 4_000);
    let started = Instant::now();
    assert_eq!(call(&stack, "teller", &c).await.rc, "91");
    assert!(started.elapsed() < Duration::from_millis(400));
    stack.clear_faults().await;
    let d = Req::transfer(t, 8_000);
    assert_eq!(call(&stack, "teller", &d).await.rc, "91", "still open");
    // The other channels' route (host) is not affected.
    assert_eq!(
        call(&stack, "mobile", &Req::inquiry("MB000001")).await.rc,
        "00"
    );

    // After the cool-down a probe goes through and closes the breaker.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let e = Req::transfer(t, 100);
    assert_eq!(call(&stack, "teller", &e).await.rc, "00");
    let f = Req::transfer(t, 200);
    assert_eq!(call(&stack, "teller", &f).await.rc, "00");

    // The two in-doubt transfers are reversed on hostb by the back ends' reversal worker;
    // the refused ones never reached the host.
    stack
        .wait_balance(ZHANG, zhang - 300, "in-doubt transfers reversed")
        .await;
    stack
        .wait_balance(LI, li + 300, "in-doubt transfers reversed")
        .await;
    let journal = stack.journal().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reversed = journal.in_state(TxnState::Reversed).await.unwrap();
        if reversed.len() == 2 {
            assert!(reversed.iter().all(|r| r.txn.terminal_id == t));
            // Not through the terminals' queue.
            for r in &reversed {
                assert!(journal.reversal_of(r.id).await.unwrap().is_none());
            }
            break;
        }
        assert!(Instant::now() < deadline, "{reversed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for x in [&c, &d] {
        let row = journal.find(t, &x.stan, &today()).await.unwrap().unwrap();
        assert_eq!(row.state, TxnState::Declined);
        assert_eq!(row.response_code.as_deref(), Some("91"));
    }
    assert!(stack.log().contains("circuit breaker open"));
    assert!(stack.log().contains("circuit breaker closed"));
}

#[tokio::test]
async fn breaker_opens_when_the_host_disconnects() {
    let stack = Stack::start(
        3_000,
        r#"
[[backends]]
name = "hostb"
kind = "tcp_8583"
address = "HOST"
timeout_ms = 500
breaker = { failures = 3, cooldown_ms = 1000 }

[[routes]]
channel = "kiosk"
backend = "hostb"

[[routes]]
backend = "host"
"#,
    );
    let t = "KF000001";
    assert_eq!(call(&stack, "kiosk", &Req::inquiry(t)).await.rc, "00");
    stack.faults(json!({"disconnect": true})).await;
    // Not sent (91), or — when the link was up for an instant — in doubt (98).
    for _ in 0..5 {
        let rc = call(&stack, "kiosk", &Req::inquiry(t)).await.rc;
        assert!(rc == "91" || rc == "98", "{rc}");
    }
    let started = Instant::now();
    assert_eq!(call(&stack, "kiosk", &Req::inquiry(t)).await.rc, "91");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "open: refused at once"
    );
    assert!(
        stack.log().contains("circuit breaker open"),
        "{}",
        stack.log()
    );
    stack.clear_faults().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rc = call(&stack, "kiosk", &Req::inquiry(t)).await.rc;
        if rc == "00" {
            break;
        }
        assert!(rc == "91" || rc == "98", "{rc}");
        assert!(Instant::now() < deadline, "the breaker did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An in-test JSON host: answers 0200 with a balance, 0400 with 00; records what it got.
#[derive(Default)]
struct JsonHost {
    got: Mutex<Vec<(Message, Option<String>)>>,
    delay_ms: AtomicU64,
}

async fn json_host(state: Arc<JsonHost>) -> SocketAddr {
    use axum::extract::State;
    use axum::http::HeaderMap;
    async fn handle(State(s): State<Arc<JsonHost>>, headers: HeaderMap, body: String) -> String {
        let m = Message::from_json(&body).unwrap();
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        s.got.lock().unwrap().push((m.clone(), key));
        let delay = s.delay_ms.load(Ordering::Relaxed);
        if delay > 0 && m.mti == "0200" {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut a = Message::new(if m.mti == "0200" { "0210" } else { "0410" });
        for n in [3, 4, 11, 41] {
            if let Some(v) = m.get(n) {
                a.set(n, v.clone());
            }
        }
        a.set(39, "00");
        a.set(37, "JSON00000001");
        if m.mti == "0200" {
            a.set(54, "1002156C000012345600");
        }
        a.to_json()
    }
    let app = axum::Router::new()
        .route("/iso", axum::routing::post(handle))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn http_json_back_end_with_pin_translation_and_reversal() {
    let host = Arc::new(JsonHost::default());
    let addr = json_host(Arc::clone(&host)).await;
    let stack = Stack::start(
        3_000,
        &format!(
            r#"
[[backends]]
name = "core-json"
kind = "http_json"
url = "http://{addr}/iso"
headers = {{ "x-api-key" = "env:OT_TEST_CORE_KEY" }}
zpk = "core/ZPK"
timeout_ms = 500

[[routes]]
channel = "mobile"
processing_code = "31"
backend = "core-json"

[[routes]]
channel = "branch"
backend = "core-json"

[[routes]]
backend = "host"
"#
        ),
    );
    let inquiry = Req::inquiry("MB000001");
    let a = call(&stack, "mobile", &inquiry).await;
    assert_eq!(a.rc, "00");
    assert_eq!(a.balance, "1002156C000012345600", "the JSON host's answer");
    {
        let got = host.got.lock().unwrap();
        let (m, key) = &got[0];
        assert_eq!(m.mti, "0200");
        assert_eq!(key.as_deref(), Some(CORE_SECRET));
        assert_eq!(
            m.get(11).and_then(FieldValue::as_text),
            Some(inquiry.stan.as_str())
        );
        // The PIN block arrives under the JSON host's key, not the channel's.
        let block = m.get(52).and_then(FieldValue::as_bytes).unwrap();
        let k = Key::from_hex(Algorithm::Tdes, CORE_ZPK).unwrap();
        let pin = crypto::extract_pin(PinBlockFormat::Iso0, block, ZHANG, &k).unwrap();
        assert_eq!(pin.as_str(), "1234");
        assert!(
            m.get(64).is_none() && m.get(128).is_none(),
            "no MAC on HTTP"
        );
    }
    // Transfers still go to host-sim.
    let zhang = stack.available(ZHANG).await;
    assert_eq!(
        call(&stack, "mobile", &Req::transfer("MB000001", 500))
            .await
            .rc,
        "00"
    );
    assert_eq!(stack.available(ZHANG).await, zhang - 500);

    // Too slow: in doubt, and the reversal is POSTed to the JSON host.
    host.delay_ms.store(1_500, Ordering::Relaxed);
    let slow = Req::inquiry("MB000001");
    assert_eq!(call(&stack, "mobile", &slow).await.rc, "98");
    let journal = stack.journal().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reversed = host.got.lock().unwrap().iter().any(|(m, _)| {
            m.mti == "0400" && m.get(11).and_then(FieldValue::as_text) == Some(slow.stan.as_str())
        });
        let row = journal
            .find("MB000001", &slow.stan, &today())
            .await
            .unwrap()
            .unwrap();
        if reversed && row.state == TxnState::Reversed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reversed: {row:?}\n{}",
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Back-pressure: branch allows 2 requests in flight; a third at the same time gets 503.
    let posts: Vec<_> = (0..3)
        .map(|_| {
            let req = Req::inquiry("BX000001");
            let stack = &stack;
            async move { stack.post("branch", "/", req.xml()).await }
        })
        .collect();
    let mut statuses: Vec<u16> = futures::future::join_all(posts)
        .await
        .into_iter()
        .map(|(status, body)| {
            if status == 503 {
                assert!(body.contains("<Code>OVERLOADED</Code>"), "{body}");
            }
            status
        })
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503]);
    host.delay_ms.store(0, Ordering::Relaxed);

    // Reversals from the channel (0400, the original's F11): of a transfer on `host` (through
    // the terminals' reversal queue) and of an inquiry on the JSON host (its own worker).
    let zhang = stack.available(ZHANG).await;
    let transfer = Req::transfer("MB000005", 2_500);
    assert_eq!(call(&stack, "mobile", &transfer).await.rc, "00");
    assert_eq!(stack.available(ZHANG).await, zhang - 2_500);
    let inquiry = Req::inquiry("MB000005");
    assert_eq!(call(&stack, "mobile", &inquiry).await.rc, "00");
    for original in [&transfer, &inquiry] {
        let mut body: Value = serde_json::from_str(&original.json()).unwrap();
        body["mti"] = json!("0400");
        let (status, answer) = stack.post("mobile", "/txn", body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["mti"], "0410", "{answer}");
        assert_eq!(v["result"]["code"], "00", "{answer}");
    }
    stack
        .wait_balance(ZHANG, zhang, "the channel's reversal")
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = journal
            .find("MB000005", &transfer.stan, &today())
            .await
            .unwrap()
            .unwrap();
        let i = journal
            .find("MB000005", &inquiry.stan, &today())
            .await
            .unwrap()
            .unwrap();
        let posted = host.got.lock().unwrap().iter().any(|(m, _)| {
            m.mti == "0400"
                && m.get(11).and_then(FieldValue::as_text) == Some(inquiry.stan.as_str())
        });
        if t.state == TxnState::Reversed && i.state == TxnState::Reversed && posted {
            break;
        }
        assert!(Instant::now() < deadline, "{t:?} {i:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An unknown original: 25.
    let mut body: Value = serde_json::from_str(&Req::inquiry("MB000005").json()).unwrap();
    body["mti"] = json!("0400");
    let (_, answer) = stack.post("mobile", "/txn", body.to_string()).await;
    assert!(answer.contains("\"code\":\"25\""), "{answer}");
}

/// "Two in, two out": an in-test relay between the engine and host-sim. The engine's send
/// connections come in on `listener`; requests are passed to host-sim, and host-sim's answers
/// are delivered on a separate connection the relay opens to the engine's `receive_listen`.
async fn split_relay(listener: TcpListener, host_sim: String, answers_to: SocketAddr) {
    let framer = Framer::new(LengthPrefix::Binary2, 8192);
    let back = TcpStream::connect(answers_to).await.unwrap();
    let back = Arc::new(tokio::sync::Mutex::new(back));
    loop {
        let (mut engine, _) = listener.accept().await.unwrap();
        let host = TcpStream::connect(&host_sim).await.unwrap();
        let (mut host_read, mut host_write) = host.into_split();
        // Engine → host.
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                while let Ok(Some(p)) = framer.decode_frame(&mut buf) {
                    if host_write
                        .write_all(&framer.frame(&p).unwrap())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if matches!(engine.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                    return;
                }
            }
        });
        // Host → the engine's receive connection (never the send connection).
        let back = Arc::clone(&back);
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                while let Ok(Some(p)) = framer.decode_frame(&mut buf) {
                    let frame = framer.frame(&p).unwrap();
                    if back.lock().await.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                if matches!(host_read.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                    return;
                }
            }
        });
    }
}

#[tokio::test]
async fn two_in_two_out_back_ends() {
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let stack = Stack::start(
        3_000,
        &format!(
            r#"
[[backends]]
name = "cups"
kind = "tcp_8583_split"
send_address = "{relay_addr}"
send_connections = 2
receive_listen = "127.0.0.1:0"

[[backends]]
name = "same-conn"
kind = "tcp_8583_split"
send_address = "HOST"

[[routes]]
channel = "switch"
backend = "cups"

[[routes]]
channel = "teller"
backend = "same-conn"

[[routes]]
backend = "host"
"#
        ),
    );
    let log = stack.log();
    let answers_to: SocketAddr = log
        .lines()
        .find(|l| l.contains("split back end listening"))
        .map(|l| word(l, "cups=").parse().unwrap())
        .unwrap_or_else(|| panic!("{log}"));
    let host_sim = {
        let line = std::fs::read_to_string(stack.dir.path().join("online-txn.toml")).unwrap();
        line.lines()
            .find_map(|l| l.strip_prefix("address = \""))
            .unwrap()
            .trim_end_matches('"')
            .to_owned()
    };
    tokio::spawn(split_relay(relay, host_sim, answers_to));

    let (zhang, li) = (stack.available(ZHANG).await, stack.available(LI).await);
    // Answers on the separate receive connection (the switch channel → cups). The send side
    // may still be connecting: 91 (not sent) until it is up.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rc = call(&stack, "switch", &Req::inquiry("SW000001")).await.rc;
        if rc == "00" {
            break;
        }
        assert_eq!(rc, "91");
        assert!(Instant::now() < deadline, "{}", stack.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        call(&stack, "switch", &Req::transfer("SW000001", 700))
            .await
            .rc,
        "00"
    );
    // A host that answers on the sending connection (host-sim itself) is tolerated.
    assert_eq!(
        call(&stack, "teller", &Req::inquiry("TD000001")).await.rc,
        "00"
    );
    assert_eq!(
        call(&stack, "teller", &Req::transfer("TD000001", 300))
            .await
            .rc,
        "00"
    );
    assert_eq!(stack.available(ZHANG).await, zhang - 1_000);
    assert_eq!(stack.available(LI).await, li + 1_000);
    // Several at once over the split link, matched by key.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let req = Req::inquiry("SW000002");
            let stack = &stack;
            async move { call(stack, "switch", &req).await }
        })
        .collect();
    for a in futures::future::join_all(tasks).await {
        assert_eq!(a.rc, "00");
    }
}

/// host-sim's format listeners (its shipped `formats/`), TCP ones on long connections.
fn host_listeners() -> String {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../simulators/host-sim/formats");
    let f = f.display();
    let maps = format!(
        "mapping = {{ request = \"{f}/request-map.toml\", response = \"{f}/response-map.toml\" }}"
    );
    format!(
        "[[listeners]]\nname = \"json\"\nkind = \"http_json\"\nlisten = \"127.0.0.1:0\"\npath = \"/iso\"\n\
         [[listeners]]\nname = \"xml\"\nkind = \"http_xml\"\nlisten = \"127.0.0.1:0\"\npath = \"/iso\"\n\
         format = \"{f}/xml-request.toml\"\nresponse_format = \"{f}/xml-response.toml\"\n{maps}\n\
         [[listeners]]\nname = \"fixed\"\nkind = \"tcp_fixed\"\nlisten = \"127.0.0.1:0\"\nframing = \"ascii4\"\n\
         format = \"{f}/fixed-request.toml\"\nresponse_format = \"{f}/fixed-response.toml\"\n{maps}\n\
         [[listeners]]\nname = \"delimited\"\nkind = \"tcp_delimited\"\nlisten = \"127.0.0.1:0\"\n\
         format = \"{f}/delimited-request.toml\"\nresponse_format = \"{f}/delimited-response.toml\"\n{maps}\n"
    )
}

/// The engine's same-format back ends in front of those listeners; the JSON one over HTTPS.
fn same_format_backends(host: &HostSim, tls: SocketAddr) -> String {
    let listener = |name: &str| -> String {
        host.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {}", host.line))
            .to_owned()
    };
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../simulators/host-sim/formats");
    let f = f.display();
    let b = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/backends");
    let b = b.display();
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let maps = format!(
        "mapping = {{ request = \"{b}/request-map.toml\", response = \"{b}/response-map.toml\" }}"
    );
    format!(
        r#"
[[backends]]
name = "json-tls"
kind = "http_json"
url = "https://localhost:{tls_port}/iso"
ca_file = "{ca}"
zpk = "host/ZPK"

[[backends]]
name = "xml"
kind = "http_xml"
url = "http://{xml}/iso"
format = "{f}/xml-request.toml"
response_format = "{f}/xml-response.toml"
{maps}
zpk = "host/ZPK"

[[backends]]
name = "fixed"
kind = "tcp_fixed"
address = "{fixed}"
framing = "ascii4"
connections = 2
format = "{f}/fixed-request.toml"
response_format = "{f}/fixed-response.toml"
{maps}
zpk = "host/ZPK"

[[backends]]
name = "delimited"
kind = "tcp_delimited"
address = "{delimited}"
format = "{f}/delimited-request.toml"
response_format = "{f}/delimited-response.toml"
{maps}
zpk = "host/ZPK"

[[routes]]
channel = "mobile"
backend = "json-tls"
[[routes]]
channel = "branch"
backend = "xml"
[[routes]]
channel = "kiosk"
backend = "fixed"
[[routes]]
channel = "teller"
backend = "delimited"
"#,
        tls_port = tls.port(),
        ca = ca.display(),
        xml = listener("xml"),
        fixed = listener("fixed"),
        delimited = listener("delimited"),
    )
}

/// A TLS-terminating proxy (the test certificate for localhost) in front of `to`.
async fn tls_proxy(listener: TcpListener, to: String) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (acceptor, to) = (acceptor.clone(), to.clone());
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let Ok(mut plain) = TcpStream::connect(&to).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        });
    }
}

/// HTTPS back ends verify the host's certificate: the test server's certificate (issued by
/// the fixtures' private CA) is refused by a client that trusts only the public roots, and
/// accepted once `ca_file` names that CA. A refused handshake is a connect error: the request
/// was not sent (91), never in doubt.
#[tokio::test]
async fn https_back_ends_refuse_a_certificate_of_an_unknown_ca() {
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = plain.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}/iso", tls.local_addr().unwrap().port());
    tokio::spawn(tls_proxy(tls, plain_addr));

    let public_roots_only = openteller_online_txn::backends::http::client(None).unwrap();
    let e = public_roots_only
        .post(&url)
        .body("{}")
        .send()
        .await
        .expect_err("a certificate of an unknown CA must be refused");
    assert!(
        e.is_connect(),
        "a refused handshake is a connect error: {e:?}"
    );

    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem");
    let trusting = openteller_online_txn::backends::http::client(Some(&ca)).unwrap();
    let answer = trusting.post(&url).body("{}").send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn same_format_back_ends_behind_every_front() {
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls.local_addr().unwrap();
    let mut json_listener = String::new();
    let stack = Stack::start_full(1_500, &host_listeners(), |host| {
        json_listener = host
            .line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("json="))
            .unwrap()
            .to_owned();
        same_format_backends(host, tls_addr)
    });
    tokio::spawn(tls_proxy(tls, json_listener));
    let zhang = stack.available(ZHANG).await;
    let li = stack.available(LI).await;

    // HTTP JSON → HTTPS JSON, HTTP XML → HTTP XML, fixed → fixed, delimited → delimited.
    let mut moved = 0;
    for (channel, prefix) in [
        ("mobile", "MB"),
        ("branch", "BX"),
        ("kiosk", "KF"),
        ("teller", "TD"),
    ] {
        let terminal = format!("{prefix}000009");
        let a = call(&stack, channel, &Req::inquiry(&terminal)).await;
        assert_eq!(a.rc, "00", "{channel} inquiry\n{}", stack.log());
        assert!(
            a.balance.ends_with(&format!("{:012}", zhang - moved)),
            "{channel}: {a:?}"
        );
        let a = call(&stack, channel, &Req::transfer(&terminal, 100)).await;
        assert_eq!(a.rc, "00", "{channel} transfer\n{}", stack.log());
        assert_eq!(a.rrn.len(), 12);
        moved += 100;
    }
    assert_eq!(stack.available(ZHANG).await, zhang - moved);
    assert_eq!(stack.available(LI).await, li + moved);
    let journal = stack.journal().await;
    assert_eq!(journal.in_state(TxnState::Approved).await.unwrap().len(), 8);

    // The host applies a transfer but answers too late: in doubt on the fixed-width back end,
    // reversed there with a 0400 in the same format.
    stack.faults(json!({"delay_ms": 3000})).await;
    let a = call(&stack, "kiosk", &Req::transfer("KF000009", 5_000)).await;
    assert_eq!(a.rc, "98");
    stack.clear_faults().await;
    stack
        .wait_balance(
            LI,
            li + moved,
            "the in-doubt transfer was reversed on its back end",
        )
        .await;
    stack
        .wait_balance(ZHANG, zhang - moved, "and the money is back")
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while journal.in_state(TxnState::Reversed).await.unwrap().len() != 1 {
        assert!(Instant::now() < deadline, "{}", stack.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
