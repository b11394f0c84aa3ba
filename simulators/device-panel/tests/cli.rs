//! The `devsim` command line against real virtual devices: replies as JSON, exit status 0
//! (success), 1 (refused), 2 (unreachable), 64 (bad arguments).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proxy, devsim, devsim_on, explain, json_line};

fn card_names(reply: &serde_json::Value) -> Vec<String> {
    reply["cards"]["cards"]
        .as_array()
        .map(|cards| {
            cards
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn card_put_then_list_round_trip() {
    let idc = Proxy::start("CardReader");
    let put = devsim_on(
        &idc.endpoint,
        &[
            "card",
            "put",
            "--name",
            "test-visa",
            "--track2",
            "4000001234567899=2512",
        ],
    );
    assert_eq!(put.status.code(), Some(0), "{}", explain(&put));

    let list = devsim_on(&idc.endpoint, &["card", "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", explain(&list));
    let reply = json_line(&list);
    assert_eq!(reply["result"]["code"], "COMPLETION_CODE_SUCCESS");
    let card = reply["cards"]["cards"]
        .as_array()
        .and_then(|cards| cards.iter().find(|c| c["name"] == "test-visa"))
        .unwrap_or_else(|| panic!("test-visa not listed: {reply}"));
    assert_eq!(card["magnetic"]["track2"], "4000001234567899=2512");

    let chip = devsim_on(
        &idc.endpoint,
        &[
            "card",
            "put",
            "--name",
            "test-ic",
            "--chip-atr",
            "3B 02 14 50",
            "--apdu",
            "00A4=9000",
            "--track2",
            "1234=5678",
        ],
    );
    assert_eq!(chip.status.code(), Some(0), "{}", explain(&chip));
    let reply = json_line(&devsim_on(&idc.endpoint, &["card", "list"]));
    let card = reply["cards"]["cards"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "test-ic"))
        .cloned();
    let card = card.unwrap_or_else(|| panic!("test-ic not listed: {reply}"));
    assert_eq!(
        card["chip"]["atr"], "OwIUUA==",
        "ATR 3B021450 in base64: {card}"
    );
    assert_eq!(card["chip"]["stripe"]["track2"], "1234=5678");

    let delete = devsim_on(&idc.endpoint, &["card", "delete", "--name", "test-visa"]);
    assert_eq!(delete.status.code(), Some(0), "{}", explain(&delete));
    let names = card_names(&json_line(&devsim_on(&idc.endpoint, &["card", "list"])));
    assert!(
        !names.contains(&"test-visa".to_owned()) && names.contains(&"test-ic".to_owned()),
        "{names:?}"
    );
}

#[test]
fn card_insert_is_refused_when_no_read_waits() {
    let idc = Proxy::start("CardReader");
    let insert = devsim_on(
        &idc.endpoint,
        &["card", "insert", "--track2", "1234567890123456=2512"],
    );
    assert_eq!(insert.status.code(), Some(1), "{}", explain(&insert));
    let reply = json_line(&insert);
    assert_ne!(
        reply["result"]["code"], "COMPLETION_CODE_SUCCESS",
        "{reply}"
    );
    assert!(
        reply["result"]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{reply}"
    );
    assert!(
        String::from_utf8_lossy(&insert.stderr).contains("refused"),
        "{}",
        explain(&insert)
    );
}

#[test]
fn card_insert_completes_a_waiting_read_then_take() {
    let idc = Proxy::start("CardReader");
    let read = Command::new(env!("CARGO_BIN_EXE_devsim"))
        .args([
            "--device",
            &idc.endpoint,
            "exec",
            r#"{"timeoutMs":20000,"cardReader":{"readRawData":{"track2":true}}}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn devsim exec");
    // The read waits for a card once it has started; until then InsertCard is refused.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let insert = devsim_on(
            &idc.endpoint,
            &["card", "insert", "--track2", "6222020200112233445=2512"],
        );
        match insert.status.code() {
            Some(0) => break,
            Some(1) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => panic!("insert never accepted: {}", explain(&insert)),
        }
    }
    let read = read.wait_with_output().expect("devsim exec");
    assert_eq!(read.status.code(), Some(0), "{}", explain(&read));
    let stdout = String::from_utf8_lossy(&read.stdout);
    let completion: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("completion line");
    assert_eq!(
        completion["completion"]["cardReader"]["readRawData"]["track2"]["data"],
        "6222020200112233445=2512",
        "{stdout}"
    );

    let eject = devsim_on(&idc.endpoint, &["exec", r#"{"cardReader":{"eject":{}}}"#]);
    assert_eq!(eject.status.code(), Some(0), "{}", explain(&eject));
    let take = devsim_on(&idc.endpoint, &["card", "take"]);
    assert_eq!(take.status.code(), Some(0), "{}", explain(&take));
    assert_eq!(
        json_line(&take)["status"]["cardReader"]["media"],
        "MEDIA_STATUS_NOT_PRESENT"
    );
}

#[test]
fn error_preset_fails_the_next_command() {
    let idc = Proxy::start("CardReader");
    let set = devsim_on(
        &idc.endpoint,
        &[
            "error",
            "set",
            "--command",
            "CardReader.ReadRawData",
            "--code",
            "-200",
        ],
    );
    assert_eq!(set.status.code(), Some(0), "{}", explain(&set));
    let read = devsim_on(
        &idc.endpoint,
        &["exec", r#"{"cardReader":{"readRawData":{"track2":true}}}"#],
    );
    assert_eq!(read.status.code(), Some(1), "{}", explain(&read));
    assert!(
        String::from_utf8_lossy(&read.stdout).contains("MEDIAJAM"),
        "{}",
        explain(&read)
    );

    let unknown = devsim_on(
        &idc.endpoint,
        &[
            "error",
            "set",
            "--command",
            "CardReader.Fly",
            "--code",
            "-200",
        ],
    );
    assert_eq!(unknown.status.code(), Some(1), "{}", explain(&unknown));
    let clear = devsim_on(&idc.endpoint, &["error", "clear"]);
    assert_eq!(clear.status.code(), Some(0), "{}", explain(&clear));
}

#[test]
fn state_close_and_open() {
    let idc = Proxy::start("CardReader");
    let state = devsim_on(
        &idc.endpoint,
        &["state", "--device", "HARDWARE_ERROR", "--media", "JAMMED"],
    );
    assert_eq!(state.status.code(), Some(0), "{}", explain(&state));
    let status = json_line(&devsim_on(&idc.endpoint, &["status"]));
    assert_eq!(status["device"], "DEVICE_STATE_HARDWARE_ERROR");
    assert_eq!(status["cardReader"]["media"], "MEDIA_STATUS_JAMMED");

    let close = devsim_on(&idc.endpoint, &["close"]);
    assert_eq!(close.status.code(), Some(0), "{}", explain(&close));
    assert_eq!(
        json_line(&close)["status"]["device"],
        "DEVICE_STATE_POWER_OFF"
    );
    let open = devsim_on(&idc.endpoint, &["open"]);
    assert_eq!(open.status.code(), Some(0), "{}", explain(&open));

    let caps = devsim_on(&idc.endpoint, &["capabilities"]);
    assert_eq!(caps.status.code(), Some(0), "{}", explain(&caps));
    assert_eq!(json_line(&caps)["deviceClass"], "DEVICE_CLASS_CARD_READER");

    let events = devsim_on(&idc.endpoint, &["events", "--count", "1"]);
    assert_eq!(events.status.code(), Some(0), "{}", explain(&events));
    assert!(
        json_line(&events)["event"]["statusChanged"].is_object(),
        "{}",
        explain(&events)
    );
}

#[test]
fn pin_keys_are_pressed_and_never_echoed() {
    let pin = Proxy::start("PinPad");
    let refused = devsim_on(&pin.endpoint, &["pin", "press", "4711", "ENTER"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "no entry is active: {}",
        explain(&refused)
    );

    let entry = Command::new(env!("CARGO_BIN_EXE_devsim"))
        .args([
            "--device",
            &pin.endpoint,
            "exec",
            r#"{"timeoutMs":20000,"pinPad":{"getPin":{"minLength":4,"maxLength":6}}}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn devsim exec");
    let deadline = Instant::now() + Duration::from_secs(15);
    let press = loop {
        let press = devsim_on(&pin.endpoint, &["pin", "press", "4711", "enter"]);
        match press.status.code() {
            Some(0) => break press,
            Some(1) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => panic!("keys never accepted: {}", explain(&press)),
        }
    };
    let entry = entry.wait_with_output().expect("devsim exec");
    assert_eq!(entry.status.code(), Some(0), "{}", explain(&entry));
    assert!(
        String::from_utf8_lossy(&entry.stdout).contains(r#""digits":4"#),
        "{}",
        explain(&entry)
    );
    for output in [&refused, &press, &entry] {
        assert!(
            !explain(output).contains("4711"),
            "a PIN was echoed: {}",
            explain(output)
        );
    }
    assert!(!pin.log_text().contains("4711"), "the proxy logged a PIN");
}

#[test]
fn printer_and_dispenser_shortcuts() {
    let ptr = Proxy::start("ReceiptPrinter");
    let paper = devsim_on(&ptr.endpoint, &["paper", "LOW"]);
    assert_eq!(paper.status.code(), Some(0), "{}", explain(&paper));
    assert_eq!(
        json_line(&paper)["status"]["receiptPrinter"]["paper"],
        "PAPER_STATE_LOW"
    );
    let receipts = devsim_on(&ptr.endpoint, &["receipts", "--limit", "5"]);
    assert_eq!(receipts.status.code(), Some(0), "{}", explain(&receipts));
    let take = devsim_on(&ptr.endpoint, &["printer", "take"]);
    assert_eq!(
        take.status.code(),
        Some(1),
        "nothing to take: {}",
        explain(&take)
    );

    let cdm = Proxy::start("CashDispenser");
    let units = r#"[{"number":1,"id":"CST1","unitType":"CASH_UNIT_TYPE_BILL_CASSETTE","currency":"CNY","denomination":"10000","count":500,"capacity":2000,"lowThreshold":50},
                    {"number":2,"id":"REJ","unitType":"CASH_UNIT_TYPE_REJECT","currency":"CNY","capacity":200,"highThreshold":180}]"#;
    let set = devsim_on(&cdm.endpoint, &["cash", "set-units", units]);
    assert_eq!(set.status.code(), Some(0), "{}", explain(&set));
    let status = json_line(&devsim_on(&cdm.endpoint, &["status"]));
    assert_eq!(
        status["cashDispenser"]["units"][0]["count"], 500,
        "{status}"
    );
    let take = devsim_on(&cdm.endpoint, &["cash", "take"]);
    assert_eq!(
        take.status.code(),
        Some(1),
        "no notes presented: {}",
        explain(&take)
    );
}

#[test]
fn unreachable_device_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoint = format!("unix:{}", dir.path().join("absent.sock").display());
    for args in [
        &["status"][..],
        &["card", "list"],
        &["events", "--count", "1"],
    ] {
        let out = devsim_on(&endpoint, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", explain(&out));
    }
}

#[test]
fn bad_arguments_exit_64() {
    let cases: &[&[&str]] = &[
        &["--device", "unix:/tmp/x.sock", "fly"],
        &["status"],
        &["--device", "/tmp/no-scheme.sock", "status"],
        &["--device", "unix:/tmp/x.sock", "sim", "{not json"],
        &[
            "--device",
            "unix:/tmp/x.sock",
            "sim",
            r#"{"openDevice":{},"unknown":1}"#,
        ],
        &["--device", "unix:/tmp/x.sock", "sim", "{}"],
        &["--device", "unix:/tmp/x.sock", "card", "insert"],
        &["--device", "unix:/tmp/x.sock", "state"],
        &["--device", "unix:/tmp/x.sock", "paper", "WET"],
        &[
            "--device",
            "unix:/tmp/x.sock",
            "error",
            "set",
            "--command",
            "CardReader.Eject",
        ],
        &[
            "--device",
            "unix:/tmp/x.sock",
            "cash",
            "set-units",
            "[{\"bogus\":1}]",
        ],
        &["panel"],
    ];
    for args in cases {
        let out = devsim(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", explain(&out));
    }
    let pin = devsim(&["--device", "unix:/tmp/x.sock", "pin", "press", "98a7"]);
    assert_eq!(pin.status.code(), Some(64), "{}", explain(&pin));
    assert!(
        !explain(&pin).contains("98a7"),
        "a key was echoed: {}",
        explain(&pin)
    );
    assert_eq!(devsim(&["--help"]).status.code(), Some(0));
}
