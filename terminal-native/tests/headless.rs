//! End to end: real driver-proxies, the real `terminal-native --headless`, a WebSocket page.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Native, Page, Proxy, config, health, run_native};
use openteller_proto::device::v1::{
    Card, CashDispenserStatus, InsertCard, MagneticCard, TakeCard, card, card_reader_sim_action,
    device_status, simulator_request,
};
use serde_json::{Value, json};

const TRACK2: &str = "6225880123451234=25121010000000000";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tn-")
        .tempdir()
        .expect("temp dir")
}

async fn wait_online(page: &mut Page, devices: &[&str]) {
    page.wait_status("devices online", |s| {
        devices.iter().all(|d| health(s, d) == "online")
    })
    .await;
}

fn counters(s: &CashDispenserStatus) -> Vec<(u32, u32, u32)> {
    s.units
        .iter()
        .map(|u| (u.number, u.count, u.dispensed_count))
        .collect()
}

async fn cdm_status(p: &Proxy) -> CashDispenserStatus {
    match p.status().await.detail {
        Some(device_status::Detail::CashDispenser(s)) => s,
        other => panic!("not a dispenser status: {other:?}"),
    }
}

#[test]
fn bad_configuration_exits_64_before_binding() {
    let dir = tempdir();
    let (code, err) = run_native(&["--config", "/nonexistent/native.toml", "--headless"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cannot read"), "{err}");

    let bad = [
        (
            "unknown field",
            config(dir.path(), &[], "colour = \"blue\"\n"),
        ),
        (
            "must be a loopback",
            config(dir.path(), &[], "").replace("127.0.0.1:0", "0.0.0.0:0"),
        ),
        (
            "class",
            config(
                dir.path(),
                &[],
                "[devices.x]\nclass = \"Toaster\"\nendpoint = \"unix:/tmp/x.sock\"\n",
            ),
        ),
    ];
    for (why, text) in bad {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (code, err) = run_native(&["--config", path.to_str().unwrap(), "--headless"]);
        assert_eq!(code, 64, "{why}: {err}");
        assert!(err.contains(why), "{why}: {err}");
    }
    // A business package with a broken manifest: refused like a bad configuration.
    let broken = dir.path().join("broken-package");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("openteller-package.json"), "{\"name\": 1}").unwrap();
    let text = config(dir.path(), &[], "").replace(
        &format!(
            "business_package = \"{}\"",
            dir.path().join("package").display()
        ),
        &format!("business_package = \"{}\"", broken.display()),
    );
    assert!(text.contains("broken-package"), "{text}");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let (code, err) = run_native(&["--config", path.to_str().unwrap(), "--headless"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("openteller-package.json"), "{err}");

    // A good file without --headless, in a build without the `window` feature: refused.
    let path = dir.path().join("good.toml");
    std::fs::write(&path, config(dir.path(), &[], "")).unwrap();
    let (code, err) = run_native(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--headless") && err.contains("wry"), "{err}");
    // Nothing ran: no journal, no state.
    assert!(!dir.path().join("ej").exists());

    // A corrupt transaction-state table is refused (78), never silently emptied.
    write_state_raw(
        &dir.path().join("native-state"),
        "{\"version\": 1, \"authorizations\": [",
    );
    let (code, err) = run_native(&["--config", path.to_str().unwrap(), "--headless"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("corrupt"), "{err}");
}

fn write_state_raw(native_state: &std::path::Path, text: &str) {
    std::fs::create_dir_all(native_state).unwrap();
    std::fs::write(native_state.join("transactions.json"), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_devices_and_answers_typed_errors() {
    let dir = tempdir();
    let idc = Proxy::start(dir.path(), "idc", "CardReader").await;
    let cdm = Proxy::start(dir.path(), "cdm", "CashDispenser").await;
    let native = Native::start(dir.path(), &config(dir.path(), &[&idc, &cdm], ""));
    let mut page = native.page().await;
    wait_online(&mut page, &["idc", "cdm"]).await;

    let list = page.call("device.list", json!({})).await.unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("cdm"), json!("idc")]);
    assert_eq!(list[1]["class"], "CardReader");

    let st = page
        .call("device.status", json!({"device": "idc"}))
        .await
        .unwrap();
    assert_eq!(st["health"], "online");
    assert_eq!(st["status"]["deviceClass"], "DEVICE_CLASS_CARD_READER");
    assert_eq!(st["status"]["device"], "DEVICE_STATE_ONLINE");

    let caps = page
        .call("device.capabilities", json!({"device": "cdm"}))
        .await
        .unwrap();
    assert_eq!(caps["backend"], "virtual");
    assert!(
        caps["commands"]
            .as_array()
            .unwrap()
            .contains(&json!("CashDispenser.Dispense"))
    );

    let ts = page.call("terminal.status", json!({})).await.unwrap();
    assert_eq!(ts["inService"], true, "{ts}");
    assert_eq!(ts["terminalId"], "T0001");
    assert_eq!(
        ts["businessPackage"],
        json!({"name": "test-package", "version": "1.0.0"}),
        "{ts}"
    );

    let before = idc.status().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("device.status", json!({"device": "nope"}), "UNKNOWN_DEVICE"),
        (
            "device.execute",
            json!({"device": "nope", "command": {"cardReader": {"eject": {}}}}),
            "UNKNOWN_DEVICE",
        ),
        (
            "device.execute",
            json!({"device": "idc", "command": {"cashDispenser": {"reset": {}}}}),
            "INVALID_ARGUMENT",
        ),
        (
            "device.execute",
            json!({"device": "idc", "command": {"cardReader": {"readRawData": {"track2": "yes"}}}}),
            "INVALID_ARGUMENT",
        ),
        (
            "device.execute",
            json!({"device": "idc", "command": {"cardReader": {}}}),
            "INVALID_ARGUMENT",
        ),
        (
            "device.execute",
            json!({"device": "idc", "command": {"cardReader": {"ejectt": {}}}}),
            "INVALID_ARGUMENT",
        ),
        (
            "device.execute",
            json!({"device": "idc", "command": "eject"}),
            "INVALID_ARGUMENT",
        ),
        (
            "device.execute",
            json!({"device": "idc", "requestId": "has space", "command": {"cardReader": {"eject": {}}}}),
            "INVALID_ARGUMENT",
        ),
        ("device.status", json!({"device": 7}), "INVALID_ARGUMENT"),
        ("device.status", json!({}), "INVALID_ARGUMENT"),
        ("device.list", json!({"extra": 1}), "INVALID_ARGUMENT"),
        ("device.format", json!({}), "UNKNOWN_METHOD"),
        // Transactions need [online]; bad parameters are refused first.
        (
            "txn.transfer",
            json!({"toAccount": "6222020200112233446", "amount": 100, "currency": "CNY"}),
            "NOT_CONFIGURED",
        ),
        (
            "txn.pinChange",
            json!({"step": "current"}),
            "NOT_CONFIGURED",
        ),
        ("journal.write", json!({"text": ""}), "INVALID_ARGUMENT"),
        ("journal.write", json!({}), "INVALID_ARGUMENT"),
        ("log.write", json!({"level": "info"}), "INVALID_ARGUMENT"),
        ("data.set", json!({"key": "k"}), "INVALID_ARGUMENT"),
        ("data.get", json!({"key": ""}), "INVALID_ARGUMENT"),
        (
            "data.delete",
            json!({"key": "k", "extra": 1}),
            "INVALID_ARGUMENT",
        ),
        (
            "device.execute",
            json!({"device": "idc", "command": {"cardReader": {"eject": {}}}, "sneaky": true}),
            "INVALID_ARGUMENT",
        ),
    ];
    for (method, params, code) in cases {
        let e = page.call(method, params.clone()).await.unwrap_err();
        assert_eq!(e["code"], code, "{method} {params}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for (raw, code) in [
        ("{not json", "PARSE_ERROR"),
        ("[]", "INVALID_REQUEST"),
        (r#"{"id": 99}"#, "INVALID_REQUEST"),
    ] {
        page.send_raw(raw).await;
        let v = page
            .event("error answer", |v| v.get("error").is_some())
            .await;
        assert_eq!(v["error"]["code"], code, "{raw}");
    }
    // None of it reached the device.
    let after = idc.status().await;
    assert_eq!(before.detail, after.detail);
    assert_eq!(after.queued_commands, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_read_streams_events_then_the_masked_completion() {
    let dir = tempdir();
    let idc = Proxy::start(dir.path(), "idc", "CardReader").await;
    let pin = Proxy::start(dir.path(), "pin", "PinPad").await;
    let native = Native::start(dir.path(), &config(dir.path(), &[&idc, &pin], ""));
    let mut page = native.page().await;
    wait_online(&mut page, &["idc", "pin"]).await;

    // PIN entry before any card is out of sequence.
    let e = page
        .call(
            "device.execute",
            json!({"device": "pin", "command": {"pinPad": {"getPin": {"minLength": 4, "maxLength": 6}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "SEQUENCE_ERROR", "{e}");

    let id = page
        .send(
            "device.execute",
            json!({"device": "idc", "requestId": "read-1", "timeoutMs": 20000,
                   "command": {"cardReader": {"readRawData": {"track1": true, "track2": true}}}}),
        )
        .await;
    let prompt = page
        .event("insert card prompt", |v| {
            v["event"] == "device.event" && v["data"]["requestId"] == "read-1"
        })
        .await;
    assert_eq!(prompt["data"]["device"], "idc");
    assert!(
        prompt["data"]["event"]["cardReader"]
            .get("insertCard")
            .is_some(),
        "{prompt}"
    );
    // While the read waits, a second one is refused: one session at a time.
    let e = page
        .call(
            "device.execute",
            json!({"device": "idc", "command": {"cardReader": {"readRawData": {"track2": true}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "SEQUENCE_ERROR");

    let reply = idc
        .control(simulator_request::Action::CardReader(
            openteller_proto::device::v1::CardReaderSimAction {
                action: Some(card_reader_sim_action::Action::InsertCard(InsertCard {
                    library_name: String::new(),
                    card: Some(Card {
                        name: String::new(),
                        kind: Some(card::Kind::Magnetic(MagneticCard {
                            track1: "B6225880123451234^ZHANG/SAN^2512101".into(),
                            track2: TRACK2.into(),
                            track3: String::new(),
                        })),
                    }),
                })),
            },
        ))
        .await;
    assert_eq!(reply.result.unwrap().code, 1, "InsertCard accepted");
    let answer = page.answer(id).await;
    let result = &answer["result"];
    assert_eq!(
        result["completion"]["code"], "COMPLETION_CODE_SUCCESS",
        "{answer}"
    );
    assert_eq!(result["requestId"], "read-1");
    let raw = &result["cardReader"]["readRawData"];
    assert_eq!(raw["track2"]["data"], "622588******1234", "{answer}");
    assert_eq!(raw["track1"]["data"], "622588******1234", "{answer}");
    let text = answer.to_string();
    assert!(
        !text.contains("6225880123451234") && !text.contains("ZHANG"),
        "{text}"
    );
    // The intermediate events came before the completion.
    assert!(
        page.events
            .iter()
            .all(|v| v["event"] != "device.event" || v["data"]["requestId"] == "read-1")
    );

    let ts = page.call("terminal.status", json!({})).await.unwrap();
    assert_eq!(ts["session"]["card"], "card_in");
    assert_eq!(ts["session"]["maskedPan"], "622588******1234");

    // Eject ends the session; a new read is allowed again (canceled here by request id).
    page.call(
        "device.execute",
        json!({"device": "idc", "command": {"cardReader": {"eject": {}}}}),
    )
    .await
    .expect("eject");
    idc.control(simulator_request::Action::CardReader(
        openteller_proto::device::v1::CardReaderSimAction {
            action: Some(card_reader_sim_action::Action::TakeCard(TakeCard {})),
        },
    ))
    .await;
    let id = page
        .send(
            "device.execute",
            json!({"device": "idc", "requestId": "read-2",
                   "command": {"cardReader": {"readRawData": {"track2": true}}}}),
        )
        .await;
    page.event("second prompt", |v| v["data"]["requestId"] == "read-2")
        .await;
    let c = page
        .call(
            "device.cancel",
            json!({"device": "idc", "requestId": "read-2"}),
        )
        .await
        .unwrap();
    assert_eq!(c["canceled"], json!(["read-2"]));
    let a = page.answer(id).await;
    assert_eq!(a["error"]["code"], "COMMAND_FAILED", "{a}");
    assert_eq!(a["error"]["completion"], "CANCELED", "{a}");

    let journal = native.journal();
    assert!(
        journal.contains("idc CardReader.ReadRawData read-1 SUCCESS card=622588******1234"),
        "{journal}"
    );
    assert!(
        journal.contains("idc CardReader.ReadRawData read-2 CANCELED"),
        "{journal}"
    );
    assert!(
        !journal.contains("6225880123451234") && !journal.contains("2512101"),
        "{journal}"
    );
}

fn write_state(native_state: &std::path::Path, auths: Value) {
    std::fs::create_dir_all(native_state).unwrap();
    let file = json!({"version": 1, "authorizations": auths});
    std::fs::write(native_state.join("transactions.json"), file.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispense_needs_a_matching_authorisation_and_happens_once() {
    let dir = tempdir();
    let cdm = Proxy::start(dir.path(), "cdm", "CashDispenser").await;
    // The test-only path: the approval is in the state table before the host starts.
    write_state(
        &dir.path().join("native-state"),
        json!([
            {"reference": "R-OK", "terminal_id": "T0001", "amount": 30000, "currency": "CNY",
             "state": "approved", "approved_at_ms": 1},
            {"reference": "R-OTHER", "terminal_id": "T0002", "amount": 10000, "currency": "CNY",
             "state": "approved", "approved_at_ms": 1}
        ]),
    );
    let native = Native::start(dir.path(), &config(dir.path(), &[&cdm], ""));
    let mut page = native.page().await;
    wait_online(&mut page, &["cdm"]).await;
    let before = counters(&cdm_status(&cdm).await);

    let dispense = |amount: u64, currency: &str, auth: Option<&str>, rid: &str| {
        let mut p = json!({"device": "cdm", "requestId": rid,
            "command": {"cashDispenser": {"dispense": {"currency": currency, "amount": amount}}}});
        if let Some(a) = auth {
            p["authorization"] = json!(a);
        }
        p
    };
    let refused = [
        dispense(30000, "CNY", None, "d-none"),
        dispense(30000, "CNY", Some("R-NOPE"), "d-unknown"),
        dispense(40000, "CNY", Some("R-OK"), "d-amount"),
        dispense(30000, "USD", Some("R-OK"), "d-currency"),
        dispense(10000, "CNY", Some("R-OTHER"), "d-other"),
    ];
    for p in refused {
        let e = page.call("device.execute", p.clone()).await.unwrap_err();
        assert_eq!(e["code"], "DISPENSE_REFUSED", "{p}: {e}");
    }
    // Present of nothing stacked, and explicit note items, are refused too.
    let e = page
        .call(
            "device.execute",
            json!({"device": "cdm", "authorization": "R-OK",
                   "command": {"cashDispenser": {"present": {}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DISPENSE_REFUSED");
    let e = page
        .call(
            "device.execute",
            json!({"device": "cdm", "authorization": "R-OK", "command": {"cashDispenser":
                {"dispense": {"currency": "CNY", "amount": 30000, "items": [{"unitNumber": 1, "count": 40}]}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DISPENSE_REFUSED");

    let alarm = page
        .event("fraud alarm", |v| v["event"] == "terminal.alarm")
        .await;
    assert_eq!(alarm["data"]["kind"], "fraud_attempt");
    assert_eq!(alarm["data"]["severity"], "critical");
    assert_eq!(counters(&cdm_status(&cdm).await), before, "nothing moved");
    let journal = native.journal();
    assert!(
        journal.contains(
            "cdm CashDispenser.Dispense d-none REFUSED amount=30000 CNY without an authorisation"
        ),
        "{journal}"
    );
    assert!(journal.contains("d-amount REFUSED ref=R-OK"), "{journal}");

    // The approved one, once.
    let ok = page
        .call(
            "device.execute",
            dispense(30000, "CNY", Some("R-OK"), "d-ok"),
        )
        .await
        .unwrap();
    assert_eq!(ok["completion"]["code"], "COMPLETION_CODE_SUCCESS", "{ok}");
    let after = cdm_status(&cdm).await;
    let moved: u32 = after.units.iter().map(|u| u.dispensed_count).sum();
    assert_eq!(moved, 3, "3 x 100 CNY: {after:?}");
    let e = page
        .call(
            "device.execute",
            dispense(30000, "CNY", Some("R-OK"), "d-again"),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DISPENSE_REFUSED");
    assert!(
        e["message"].as_str().unwrap().contains("dispensed already"),
        "{e}"
    );
    assert_eq!(counters(&cdm_status(&cdm).await), counters(&after));

    // Present the stacked notes against the same authorisation (and only once).
    let id = page
        .send(
            "device.execute",
            json!({"device": "cdm", "authorization": "R-OK", "requestId": "p-1",
                   "command": {"cashDispenser": {"present": {"takeTimeoutMs": 200}}}}),
        )
        .await;
    let a = page.answer(id).await;
    assert_eq!(a["error"]["xfsCode"], -335, "notes not taken: {a}");
    let e = page
        .call(
            "device.execute",
            json!({"device": "cdm", "authorization": "R-OK",
                   "command": {"cashDispenser": {"present": {}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DISPENSE_REFUSED");

    // The host retracts the notes the customer left; a hand-written authorisation has no 8583
    // identity to reverse with, so it is left for an operator.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let state = loop {
        let state: Value = serde_json::from_str(
            &std::fs::read_to_string(native.state_dir.join("transactions.json")).unwrap(),
        )
        .unwrap();
        if state["authorizations"][0]["state"] == "unresolved" {
            break state;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        state["authorizations"][0]["outcome"],
        "needs reconciliation: COMMAND_ERROR -335 ITEMSNOTTAKEN",
        "{state}"
    );
    let journal = native.journal();
    assert!(
        journal.contains("cdm CashDispenser.Retract settle-"),
        "{journal}"
    );
    assert!(
        journal.contains("d-ok SENT ref=R-OK amount=30000 CNY"),
        "{journal}"
    );
    assert!(journal.contains("d-ok SUCCESS ref=R-OK"), "{journal}");
    assert!(journal.contains("d-again REFUSED"), "{journal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_proxy_is_killed_and_restarted() {
    let dir = tempdir();
    let mut idc = Proxy::start(dir.path(), "idc", "CardReader").await;
    let ptr = Proxy::start(dir.path(), "ptr", "ReceiptPrinter").await;
    let cfg = config(dir.path(), &[&idc], "")
        + &format!(
            "[devices.ptr]\nclass = \"ReceiptPrinter\"\nendpoint = \"{}\"\ncritical = false\n",
            ptr.endpoint()
        );
    let native = Native::start(dir.path(), &cfg);
    let mut page = native.page().await;
    wait_online(&mut page, &["idc", "ptr"]).await;

    idc.kill9();
    let down = page
        .wait_status("idc offline", |s| health(s, "idc") == "offline")
        .await;
    assert_eq!(down["inService"], false);
    assert!(
        down["outOfServiceReasons"][0]
            .as_str()
            .unwrap()
            .contains("idc")
    );
    page.event("terminal.status event", |v| {
        v["event"] == "terminal.status" && v["data"]["inService"] == false
    })
    .await;
    let e = page
        .call("device.status", json!({"device": "idc"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DEVICE_UNAVAILABLE", "{e}");

    idc.restart().await;
    let up = page
        .wait_status("idc online again", |s| health(s, "idc") == "online")
        .await;
    assert_eq!(up["inService"], true);
    page.call("device.status", json!({"device": "idc"}))
        .await
        .expect("status after restart");
    // A non-critical device does not take the terminal out of service.
    drop(ptr);
    page.wait_status("ptr offline", |s| health(s, "ptr") == "offline")
        .await;
    let s = page.call("terminal.status", json!({})).await.unwrap();
    assert_eq!(s["inService"], true, "{s}");
    let journal = native.journal();
    assert!(journal.contains("idc DEVICE CONNECTION LOST"), "{journal}");
    assert_eq!(
        journal.matches("idc DEVICE CONNECTED").count(),
        2,
        "{journal}"
    );
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_package_and_refuses_path_escapes() {
    let dir = tempdir();
    let cfg = config(dir.path(), &[], "");
    let package = dir.path().join("package");
    std::fs::write(package.join("index.html"), "<h1>kiosk</h1>").unwrap();
    std::fs::create_dir_all(package.join("js")).unwrap();
    std::fs::write(package.join("js/sjsl.js"), "export const v = 1;").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "TOP SECRET").unwrap();
    let native = Native::start(dir.path(), &cfg);
    let addr = native.addr.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(http_get(&addr, "/"), (200, "<h1>kiosk</h1>".into()));
        assert_eq!(http_get(&addr, "/js/sjsl.js").1, "export const v = 1;");
        for path in [
            "/../secret.txt",
            "/js/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/js/%2E%2E/%2E%2E/secret.txt",
            "/..%2fsecret.txt",
            "//etc/passwd",
            "/js/",
            "/missing.html",
        ] {
            let (status, body) = http_get(&addr, path);
            assert_eq!(status, 404, "{path}: {body}");
            assert!(
                !body.contains("TOP SECRET") && !body.contains("sjsl.js"),
                "{path}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_to_the_keeper_and_follows_its_pause() {
    use openteller_keeper::client;
    use openteller_keeper::config::{Config, ControlAddr};

    let dir = tempdir();
    let idc = Proxy::start(dir.path(), "idc", "CardReader").await;
    // A real keeper, in process, supervising a stand-in "native" process; the real
    // terminal-native binary heartbeats to it under that name.
    let socket = dir.path().join("keeper.sock");
    let keeper_cfg = dir.path().join("keeper.toml");
    std::fs::write(
        &keeper_cfg,
        format!(
            "[control]\nlisten = \"unix:{}\"\n\n[[process]]\nname = \"native\"\ncommand = \"/bin/sleep\"\nargs = [\"600\"]\n",
            socket.display()
        ),
    )
    .unwrap();
    let settings = Config::load(&keeper_cfg).expect("keeper config");
    let stop = tokio_util::sync::CancellationToken::new();
    let keeper = tokio::spawn(openteller_keeper::run(settings, Vec::new(), stop.clone()));
    let control = ControlAddr::Unix(socket.clone());
    let call = |method: &'static str, path: &'static str, body: Option<Value>| {
        let control = control.clone();
        async move {
            client::request(&control, method, path, body.as_ref())
                .await
                .expect("keeper API")
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client::request(&control, "GET", "/api/v1/service", None)
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "keeper API not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let extra = format!(
        "[keeper]\ncontrol = \"unix:{}\"\nprocess = \"native\"\nheartbeat_interval_ms = 200\n",
        socket.display()
    );
    let native = Native::start(dir.path(), &config(dir.path(), &[&idc], &extra));
    let mut page = native.page().await;
    wait_online(&mut page, &["idc"]).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = call("GET", "/api/v1/processes/native", None).await;
        let service = call("GET", "/api/v1/service", None).await;
        if p.data()["health"]["last_heartbeat_ms"].is_u64()
            && service.data()["terminal_idle"] == json!(true)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeat: {}",
            p.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    call(
        "POST",
        "/api/v1/service/pause",
        Some(json!({"reason": "cash replenishment"})),
    )
    .await;
    let ev = page
        .event("paused terminal.status", |v| {
            v["event"] == "terminal.status" && v["data"]["paused"] == true
        })
        .await;
    assert_eq!(ev["data"]["inService"], false);
    assert_eq!(ev["data"]["pauseReason"], "cash replenishment");
    let e = page
        .call(
            "device.execute",
            json!({"device": "idc", "command": {"cardReader": {"readRawData": {"track2": true}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "OUT_OF_SERVICE", "{e}");

    call("POST", "/api/v1/service/resume", None).await;
    page.wait_status("resumed", |s| s["inService"] == true)
        .await;
    assert!(
        native
            .journal()
            .contains("SERVICE PAUSED by the keeper: cash replenishment")
    );

    drop(page);
    drop(native);
    stop.cancel();
    keeper.await.unwrap().expect("keeper stopped cleanly");
}
