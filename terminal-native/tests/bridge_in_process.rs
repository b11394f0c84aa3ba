//! The transport-agnostic `Bridge` driven in process, with an approval made through the
//! library API (the only way one is created; pages have no method for it).

mod common;

use std::time::Duration;

use common::{Proxy, config};
use openteller_terminal_native::Terminal;
use openteller_terminal_native::bridge::Bridge;
use openteller_terminal_native::config::Settings;
use serde_json::{Value, json};
use tokio::sync::mpsc;

async fn answer(rx: &mut mpsc::Receiver<String>, id: u64) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("an answer within 20 s")
            .expect("bridge open");
        let v: Value = serde_json::from_str(&msg).unwrap();
        if v["id"] == json!(id) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_approval_allows_exactly_one_dispense() {
    let dir = tempfile::tempdir().unwrap();
    let cdm = Proxy::start(dir.path(), "cdm", "CashDispenser").await;
    let settings = Settings::parse(&config(dir.path(), &[&cdm], "")).unwrap();
    let terminal = Terminal::start(settings, Vec::new()).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let bridge = Bridge::new(terminal.clone(), tx);

    // No page method creates or changes an authorisation.
    bridge
        .handle(r#"{"id": 1, "method": "transaction.approve", "params": {"reference": "R9"}}"#)
        .await;
    assert_eq!(answer(&mut rx, 1).await["error"]["code"], "UNKNOWN_METHOD");

    terminal
        .gate()
        .table()
        .approve("R9", 5000, "CNY")
        .await
        .unwrap();
    let dispense = |id: u64| {
        json!({"id": id, "method": "device.execute", "params": {"device": "cdm",
            "authorization": "R9",
            "command": {"cashDispenser": {"dispense": {"currency": "CNY", "amount": 5000}}}}})
        .to_string()
    };
    bridge.handle(&dispense(2)).await;
    let ok = answer(&mut rx, 2).await;
    assert_eq!(
        ok["result"]["completion"]["code"], "COMPLETION_CODE_SUCCESS",
        "{ok}"
    );
    bridge.handle(&dispense(3)).await;
    let again = answer(&mut rx, 3).await;
    assert_eq!(again["error"]["code"], "DISPENSE_REFUSED", "{again}");
    let auth = terminal.gate().table().get("R9").await.unwrap();
    assert!(auth.dispensed());
    assert_eq!(auth.outcome.as_deref(), Some("SUCCESS"));

    bridge.close().await;
    terminal.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_messages_never_blocks_the_caller() {
    // The transport's loop both calls `handle` and drains the replies: `handle` must return
    // even when nobody has read the replies yet (here: a queue of one, never read until the
    // end).
    let dir = tempfile::tempdir().unwrap();
    let cdm = Proxy::start(dir.path(), "cdm", "CashDispenser").await;
    let settings = Settings::parse(&config(dir.path(), &[&cdm], "")).unwrap();
    let terminal = Terminal::start(settings, Vec::new()).unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let bridge = Bridge::new(terminal.clone(), tx);
    let flood = async {
        for _ in 0..50 {
            bridge.handle("not json").await;
        }
    };
    // A deadlock guard, not a timing assertion.
    tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("handle returned without its replies being read");
    for _ in 0..50 {
        let msg = rx.recv().await.expect("bridge open");
        let v: Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(v["error"]["code"], "PARSE_ERROR", "{v}");
    }
    bridge.close().await;
    terminal.shutdown().await;
}
