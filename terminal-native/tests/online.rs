//! End to end with the real host side: host-sim (the bank) ← online-txn (8583 engine) ← the
//! real `terminal-native --headless` (transaction client) with real driver-proxies (card reader,
//! EPP, dispenser), driven over the WebSocket like a page.

mod common;

use common::host::{
    PAN, available, cdm_status, counters, enter_pin, insert_card, load_tmk, online_config,
    start_host_side, wait_in_service,
};
use common::{Native, Proxy, health};
use serde_json::{Value, json};

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

    let text = online_config(dir.path(), &host, &[&idc, &pin, &cdm], "");
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

    // Automatic sign-on at start: in service once the working keys are in the EPP.
    let status = wait_in_service(&mut page).await;
    assert!(status["outOfServiceReasons"].as_array().unwrap().is_empty());
    assert!(native.journal().contains("TXN SIGN-ON stan=000001 rc=00"));

    // Nothing without a card.
    let e = page
        .call("txn.inquiry", json!({"pinBlockFrom": "pinpad"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "SEQUENCE_ERROR", "{e}");

    // Sign-on on demand: new working keys into the EPP under the TMK.
    let r = page.call("txn.signOn", json!({})).await.unwrap();
    assert_eq!(r, json!({"responseCode": "00", "approved": true}));
    let stan: Value =
        serde_json::from_str(&std::fs::read_to_string(native.state_dir.join("stan.json")).unwrap())
            .unwrap();
    assert_eq!(stan["last"], 2, "STAN persisted");

    // The card.
    insert_card(&mut page, &idc, "read-1").await;

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
    assert!(r.get("cardRetained").is_none(), "{r}");
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
        journal.contains(&format!(
            "TXN WITHDRAWAL stan=000005 amount=30000 CNY rc=00 ref={reference}"
        )),
        "{journal}"
    );
    assert!(
        journal.contains("TXN INQUIRY stan=000003 rc=55"),
        "{journal}"
    );
    assert!(!journal.contains(PAN), "{journal}");
    assert!(!native.log().contains(PAN));
}
