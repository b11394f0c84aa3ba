//! The host side for end-to-end transaction tests: host-sim (the bank) and online-txn (the
//! 8583 engine) as real processes, the key ceremony for the virtual EPP, and helpers that
//! drive the virtual devices like a customer.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use openteller_proto::device::v1::{
    Card, CardReaderSimAction, CashDispenserSimAction, CashDispenserStatus, CompletionCode,
    ImportKeyComponents, InsertCard, KeyAlgorithm, KeyUsage, MagneticCard, PinPadCommand,
    PinPadSimAction, PressKeys, TakeItems, card, card_reader_sim_action, cash_dispenser_sim_action,
    command, device_status, pin_pad_command, pin_pad_sim_action, simulator_request,
};
use serde_json::{Value, json};

use super::{Page, Proc, Proxy, spawn_listening, word, workspace_bin};

pub const MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
pub const TMK: &str = "0123456789ABCDEFFEDCBA9876543210";
pub const ZPK: &str = "11111111111111112222222222222222";
pub const ZAK: &str = "33333333333333334444444444444444";
pub const PAN: &str = "6222020200112233445";
pub const TRACK2: &str = "6222020200112233445=49121010000000000";
/// The transfer destination.
pub const PAN2: &str = "6222020200112233446";
pub const START_BALANCE: i64 = 100_000_000;

pub struct HostSide {
    _host: Proc,
    _engine: Proc,
    pub control: String,
    pub terminals: String,
}

pub fn start_host_side(dir: &Path) -> HostSide {
    std::fs::write(
        dir.join("accounts.toml"),
        format!(
            "[[account]]\npan = \"{PAN}\"\npin = \"1234\"\nbalance = {START_BALANCE}\n\
             [[account]]\npan = \"{PAN2}\"\npin = \"1234\"\nbalance = {START_BALANCE}\n"
        ),
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
             [host]\naddress = \"{host_addr}\"\ntimeout_ms = 5000\n[reversal]\nmax_attempts = 50\nretry_ms = 500\nttl_s = 86400\nretryable_codes = [\"91\", \"96\", \"98\"]\n",
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

/// One plain HTTP/1.1 request to host-sim's control API; answers the JSON body.
pub fn control_http(control: &str, method: &str, path: &str, body: Option<&str>) -> Value {
    let addr = control.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    // Tolerate chunked encoding: the JSON object is between the first '{' and the last '}'.
    let (Some(a), Some(b)) = (body.find('{'), body.rfind('}')) else {
        panic!("no JSON in {text}");
    };
    serde_json::from_str(&body[a..=b]).unwrap()
}

/// The available balance of `pan` at host-sim.
pub fn available_of(control: &str, pan: &str) -> i64 {
    let v = control_http(control, "GET", &format!("/state/accounts/{pan}"), None);
    v["available"].as_i64().unwrap_or_else(|| panic!("{v}"))
}

/// The available balance of the test card's account.
pub fn available(control: &str) -> i64 {
    available_of(control, PAN)
}

/// Polls until the card's available balance is `want` (reversals are asynchronous at
/// online-txn); panics with the last value after 60 s.
pub async fn wait_balance(control: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = available(control);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the balance stayed {now}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sets host-sim faults (`{"delay_ms": 3000}`), or clears them with `None`.
pub fn faults(control: &str, faults: Option<&str>) {
    match faults {
        Some(f) => control_http(control, "POST", "/faults", Some(f)),
        None => control_http(control, "DELETE", "/faults", None),
    };
}

/// (unit number, count, dispensed, presented, rejected, retracted) of every cash unit.
pub fn counters(s: &CashDispenserStatus) -> Vec<(u32, u32, u32, u32, u32, u32)> {
    s.units
        .iter()
        .map(|u| {
            (
                u.number,
                u.count,
                u.dispensed_count,
                u.presented_count,
                u.rejected_count,
                u.retracted_count,
            )
        })
        .collect()
}

/// Notes in every bill cassette, and in the reject and retract bins.
pub fn notes(s: &CashDispenserStatus) -> (u32, u32, u32) {
    use openteller_proto::device::v1::CashUnitType;
    let sum = |t: CashUnitType| {
        s.units
            .iter()
            .filter(|u| u.unit_type() == t)
            .map(|u| u.count)
            .sum()
    };
    (
        sum(CashUnitType::BillCassette),
        sum(CashUnitType::Reject),
        sum(CashUnitType::Retract),
    )
}

pub async fn cdm_status(p: &Proxy) -> CashDispenserStatus {
    match p.status().await.detail {
        Some(device_status::Detail::CashDispenser(s)) => s,
        other => panic!("not a dispenser status: {other:?}"),
    }
}

/// The key ceremony: the TMK into the EPP as two clear components (XOR), never through
/// terminal-native.
pub async fn load_tmk(pin: &Proxy) {
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

/// `PinPad.GetPin` from the page, the digits pressed on the virtual EPP.
pub async fn enter_pin(page: &mut Page, pin: &Proxy, digits: &str, rid: &str) {
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

/// `CardReader.ReadRawData` from the page, the test card inserted on the virtual reader.
pub async fn insert_card(page: &mut Page, idc: &Proxy, rid: &str) {
    let id = page
        .send(
            "device.execute",
            json!({"device": "idc", "requestId": rid, "timeoutMs": 20000,
                   "command": {"cardReader": {"readRawData": {"track2": true}}}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = idc
        .control(simulator_request::Action::CardReader(CardReaderSimAction {
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
        }))
        .await;
    assert_eq!(reply.result.unwrap().code, 1, "InsertCard accepted");
    let read = page.answer(id).await;
    assert!(read.get("result").is_some(), "{read}");
}

/// The customer takes the presented notes.
pub async fn take_notes(cdm: &Proxy) {
    let reply = cdm
        .control(simulator_request::Action::CashDispenser(
            CashDispenserSimAction {
                action: Some(cash_dispenser_sim_action::Action::TakeItems(TakeItems {})),
            },
        ))
        .await;
    assert_eq!(reply.result.unwrap().code, 1, "TakeItems accepted");
}

/// The terminal configuration for the three proxies and online-txn, F41 `T0000001`, short
/// timeouts for tests.
pub fn online_config(dir: &Path, host: &HostSide, proxies: &[&Proxy], extra: &str) -> String {
    super::config(
        dir,
        proxies,
        &format!(
            "[online]\naddress = \"{}\"\npinpad = \"pin\"\nresponse_timeout_ms = 10000\n\
             reversal_retry_ms = 300\nreversal_max_retry_ms = 2000\n{extra}",
            host.terminals
        ),
    )
    .replace("\"T0001\"", "\"T0000001\"")
}

/// Waits until the terminal is in service (devices online and signed on).
pub async fn wait_in_service(page: &mut Page) -> Value {
    page.wait_status("in service", |s| s["inService"] == true)
        .await
}
