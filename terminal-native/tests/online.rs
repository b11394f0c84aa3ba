//! End to end with the real host side: host-sim (the bank) ← online-txn (8583 engine) ← the
//! real `terminal-native --headless` (transaction client) with real driver-proxies (card reader,
//! EPP, dispenser), driven over the WebSocket like a page.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Native, Page, Proc, Proxy, config, health, spawn_listening, word, workspace_bin};
use openteller_proto::device::v1::{
    Card, CashDispenserStatus, CompletionCode, ImportKeyComponents, InsertCard, KeyAlgorithm,
    KeyUsage, MagneticCard, PinPadCommand, PinPadSimAction, PressKeys, card,
    card_reader_sim_action, command, device_status, pin_pad_command, pin_pad_sim_action,
    simulator_request,
};
use serde_json::{Value, json};

const MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TMK: &str = "0123456789ABCDEFFEDCBA9876543210";
const ZPK: &str = "11111111111111112222222222222222";
const ZAK: &str = "33333333333333334444444444444444";
const PAN: &str = "6222020200112233445";
const TRACK2: &str = "6222020200112233445=49121010000000000";

struct HostSide {
    _host: Proc,
    _engine: Proc,
    control: String,
    terminals: String,
}

fn start_host_side(dir: &Path) -> HostSide {
    std::fs::write(
        dir.join("accounts.toml"),
        format!("[[account]]\npan = \"{PAN}\"\npin = \"1234\"\nbalance = 100000000\n"),
    )
    .unwrap();
    let host_cfg = dir.join("host-sim.toml");
    std::fs::write(
        &host_cfg,
        format!("listen = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\naccounts = \"accounts.toml\"\n[keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(workspace_bin("host-sim", "openteller-host-sim"));
    cmd.args(["serve", "--config"]).arg(&host_cfg);
    let (host, line) = spawn_listening(cmd, &dir.join("host.log"));
    let control = word(&line, "control=").to_owned();
    let host_addr = word(&line, "iso8583=").to_owned();

    let engine_bin = workspace_bin("online-txn", "openteller-online-txn");
    let cfg = dir.join("online-txn.toml");
    std::fs::write(
        &cfg,
        format!(
            "[journal]\nurl = \"sqlite://{}\"\n[keys]\nfile = \"{}\"\n[terminals]\nlisten = \"127.0.0.1:0\"\n\
             [host]\naddress = \"{host_addr}\"\ntimeout_ms = 5000\n",
            dir.join("journal.db").display(),
            dir.join("keys.json").display()
        ),
    )
    .unwrap();
    for (name, usage, value) in [
        ("term/T0000001/TMK", "kek", TMK),
        ("host/ZPK", "pin", ZPK),
        ("host/ZAK", "mac", ZAK),
    ] {
        let out = Command::new(&engine_bin)
            .args(["keys", "--config"])
            .arg(&cfg)
            .args(["import", "--name", name, "--usage", usage, "--hex", value])
            .env("OPENTELLER_MASTER_KEY", MASTER)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = Command::new(&engine_bin);
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .env("OPENTELLER_MASTER_KEY", MASTER);
    let (engine, line) = spawn_listening(cmd, &dir.join("engine.log"));
    let terminals = word(&line, "terminals=").to_owned();
    HostSide {
        _host: host,
        _engine: engine,
        control,
        terminals,
    }
}

/// host-sim's control API (plain HTTP/1.1 on loopback): the account's available balance.
fn available(control: &str) -> i64 {
    let addr = control.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /state/accounts/{PAN} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body = body.trim();
    // Tolerate chunked encoding: the JSON object is between the first '{' and the last '}'.
    let json_text = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let v: Value = serde_json::from_str(json_text).unwrap();
    v["available"].as_i64().unwrap_or_else(|| panic!("{v}"))
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

/// The key ceremony: the TMK into the EPP as two clear components (XOR), never through
/// terminal-native.
async fn load_tmk(pin: &Proxy) {
    let tmk = hex::decode(TMK).unwrap();
    let c1: Vec<u8> = (0..16u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let c2: Vec<u8> = tmk.iter().zip(&c1).map(|(a, b)| a ^ b).collect();
    let c = pin
        .execute(openteller_proto::device::v1::Command {
            request_id: "ceremony-1".into(),
            timeout_ms: 0,
            command: Some(command::Command::PinPad(PinPadCommand {
                command: Some(pin_pad_command::Command::ImportKeyComponents(
                    ImportKeyComponents {
                        name: "TMK".into(),
                        usage: KeyUsage::KeyEncryption as i32,
                        algorithm: KeyAlgorithm::Tdes as i32,
                        components: vec![c1, c2],
                        expected_kcv: String::new(),
                    },
                )),
            })),
        })
        .await;
    assert_eq!(
        c.completion.unwrap().code,
        CompletionCode::Success as i32,
        "TMK loaded"
    );
}

async fn enter_pin(page: &mut Page, pin: &Proxy, digits: &str, rid: &str) {
    let id = page
        .send(
            "device.execute",
            json!({"device": "pin", "requestId": rid, "timeoutMs": 20000,
                   "command": {"pinPad": {"getPin": {"minLength": 4, "maxLength": 6}}}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut keys: Vec<String> = digits.chars().map(|c| c.to_string()).collect();
    keys.push("ENTER".into());
    let reply = pin
        .control(simulator_request::Action::PinPad(PinPadSimAction {
            action: Some(pin_pad_sim_action::Action::PressKeys(PressKeys { keys })),
        }))
        .await;
    assert_eq!(reply.result.unwrap().code, 1, "keys pressed");
    let a = page.answer(id).await;
    assert!(a.get("result").is_some(), "GetPin: {a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_on_inquiry_withdrawal_and_dispense_once() {
    let dir = tempfile::Builder::new()
        .prefix("tn-online-")
        .tempdir()
        .unwrap();
    let host = start_host_side(dir.path());
    let idc = Proxy::start(dir.path(), "idc", "CardReader").await;
    let pin = Proxy::start(dir.path(), "pin", "PinPad").await;
    let cdm = Proxy::start(dir.path(), "cdm", "CashDispenser").await;
    load_tmk(&pin).await;

    let text = config(
        dir.path(),
        &[&idc, &pin, &cdm],
        &format!(
            "[online]\naddress = \"{}\"\npinpad = \"pin\"\nresponse_timeout_ms = 10000\n",
            host.terminals
        ),
    )
    .replace("\"T0001\"", "\"T0000001\"");
    let native = Native::start(dir.path(), &text);
    let mut page = native.page().await;
    page.wait_status("devices online", |s| {
        ["idc", "pin", "cdm"]
            .iter()
            .all(|d| health(s, d) == "online")
    })
    .await;

    // Pages cannot touch the EPP's keys or MAC with them.
    let e = page
        .call(
            "device.execute",
            json!({"device": "pin", "command": {"pinPad": {"generateMac": {
                "keyName": "TAK", "algorithm": "MAC_ALGORITHM_X9_19", "data": "AAAA"}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "FORBIDDEN", "{e}");
    let e = page
        .call(
            "device.execute",
            json!({"device": "pin", "command": {"pinPad": {"deleteKey": {"name": "TMK"}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "FORBIDDEN", "{e}");

    // Nothing before sign-on and a card.
    let e = page
        .call("txn.inquiry", json!({"pinBlockFrom": "pinpad"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "SEQUENCE_ERROR", "{e}");

    // Sign-on: working keys into the EPP under the TMK.
    let r = page.call("txn.signOn", json!({})).await.unwrap();
    assert_eq!(r, json!({"responseCode": "00", "approved": true}));
    let stan: Value =
        serde_json::from_str(&std::fs::read_to_string(native.state_dir.join("stan.json")).unwrap())
            .unwrap();
    assert_eq!(stan["last"], 1, "STAN persisted");

    // The card.
    let id = page
        .send(
            "device.execute",
            json!({"device": "idc", "requestId": "read-1", "timeoutMs": 20000,
                   "command": {"cardReader": {"readRawData": {"track2": true}}}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = idc
        .control(simulator_request::Action::CardReader(
            openteller_proto::device::v1::CardReaderSimAction {
                action: Some(card_reader_sim_action::Action::InsertCard(InsertCard {
                    library_name: String::new(),
                    card: Some(Card {
                        name: String::new(),
                        kind: Some(card::Kind::Magnetic(MagneticCard {
                            track1: String::new(),
                            track2: TRACK2.into(),
                            track3: String::new(),
                        })),
                    }),
                })),
            },
        ))
        .await;
    assert_eq!(reply.result.unwrap().code, 1, "InsertCard accepted");
    let read = page.answer(id).await;
    assert!(read.get("result").is_some(), "{read}");

    // A wrong PIN: declined 55, counted by the gate.
    enter_pin(&mut page, &pin, "9999", "pin-1").await;
    let r = page
        .call("txn.inquiry", json!({"pinBlockFrom": "pinpad"}))
        .await
        .unwrap();
    assert_eq!(r["responseCode"], "55", "{r}");
    assert_eq!(r["approved"], false);
    assert_eq!(r["pinTriesLeft"], 2, "{r}");

    // The right PIN: the balance from host-sim.
    enter_pin(&mut page, &pin, "1234", "pin-2").await;
    let r = page
        .call("txn.inquiry", json!({"pinBlockFrom": "pinpad"}))
        .await
        .unwrap();
    assert_eq!(r["responseCode"], "00", "{r}");
    assert_eq!(r["approved"], true);
    assert_eq!(r["balance"]["available"], 100_000_000, "{r}");
    assert_eq!(available(&host.control), 100_000_000);

    // Withdrawal: approved, the authorisation registered, the host balance down.
    let r = page
        .call(
            "txn.withdrawal",
            json!({"amount": 30000, "currency": "CNY"}),
        )
        .await
        .unwrap();
    assert_eq!(r["responseCode"], "00", "{r}");
    assert_eq!(r["approved"], true);
    let reference = r["authorization"]
        .as_str()
        .expect("authorization")
        .to_owned();
    assert!(!r.to_string().contains(PAN), "no PAN to the page: {r}");
    assert_eq!(available(&host.control), 100_000_000 - 30_000);

    // A bad parameter is refused before anything is sent.
    let e = page
        .call("txn.withdrawal", json!({"amount": 100, "currency": "XXX"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "INVALID_ARGUMENT", "{e}");

    // Dispense against it: once.
    let before = counters(&cdm_status(&cdm).await);
    let dispense = |rid: &str| {
        json!({"device": "cdm", "requestId": rid, "authorization": reference,
               "command": {"cashDispenser": {"dispense": {"currency": "CNY", "amount": 30000}}}})
    };
    let ok = page.call("device.execute", dispense("d-1")).await.unwrap();
    assert_eq!(ok["completion"]["code"], "COMPLETION_CODE_SUCCESS", "{ok}");
    let after = cdm_status(&cdm).await;
    assert_ne!(counters(&after), before, "the cassettes counted down");
    let moved: u32 = after.units.iter().map(|u| u.dispensed_count).sum();
    assert_eq!(moved, 3, "3 x 100 CNY: {after:?}");
    let e = page
        .call("device.execute", dispense("d-2"))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DISPENSE_REFUSED", "{e}");
    assert_eq!(counters(&cdm_status(&cdm).await), counters(&after));

    // The journal has the steps, never the PAN.
    let journal = native.journal();
    assert!(journal.contains("TXN SIGN-ON"), "{journal}");
    // (The journal's scrubber masks every 12-19 digit run, the 12-digit RRN included.)
    assert!(
        journal.contains("TXN WITHDRAWAL stan=000004 amount=30000 CNY rc=00 ref="),
        "{journal}"
    );
    assert!(
        journal.contains("TXN INQUIRY stan=000002 rc=55"),
        "{journal}"
    );
    assert!(!journal.contains(PAN), "{journal}");
    assert!(!native.log().contains(PAN));
}
