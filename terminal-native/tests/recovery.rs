//! Crash recovery (invariant 2) end to end: the real terminal-native is killed at each step of
//! a withdrawal — by its own test hook (`OPENTELLER_TEST_CRASH_AT`, SIGKILL right after the
//! step is saved) or by `kill -9` from outside while the notes wait in the shutter — and
//! restarted; afterwards the bank's balance (host-sim), the cassettes (driver-proxy) and the
//! electronic journal must agree.

mod common;

use std::time::{Duration, Instant};

use common::host::{
    HostSide, START_BALANCE, cdm_status, enter_pin, insert_card, load_tmk, notes, online_config,
    start_host_side, take_notes, wait_balance, wait_in_service,
};
use common::{Native, Page, Proxy};
use openteller_proto::device::v1::{
    CardReaderCommand, CardReaderSimAction, Command, TakeCard, card_reader_command,
    card_reader_sim_action, command, simulator_request,
};
use serde_json::{Value, json};

struct Rig {
    dir: tempfile::TempDir,
    host: HostSide,
    idc: Proxy,
    pin: Proxy,
    cdm: Proxy,
    config: String,
}

async fn rig() -> Rig {
    let dir = tempfile::Builder::new()
        .prefix("tn-recovery-")
        .tempdir()
        .unwrap();
    let host = start_host_side(dir.path());
    let idc = Proxy::start(dir.path(), "idc", "CardReader").await;
    let pin = Proxy::start(dir.path(), "pin", "PinPad").await;
    let cdm = Proxy::start(dir.path(), "cdm", "CashDispenser").await;
    load_tmk(&pin).await;
    let config = online_config(dir.path(), &host, &[&idc, &pin, &cdm], "");
    Rig {
        dir,
        host,
        idc,
        pin,
        cdm,
        config,
    }
}

impl Rig {
    async fn start(&self, crash_at: Option<&str>) -> (Native, Page) {
        let env: Vec<(&str, &str)> = crash_at
            .map(|s| vec![("OPENTELLER_TEST_CRASH_AT", s)])
            .unwrap_or_default();
        let native = Native::start_env(self.dir.path(), &self.config, &env);
        let mut page = native.page().await;
        wait_in_service(&mut page).await;
        (native, page)
    }

    /// The card left in the reader by a dead session goes back to the customer.
    async fn clear_reader(&self) {
        let done = self
            .idc
            .execute(Command {
                request_id: format!("test-eject-{}", openteller_keeper::unix_ms()),
                timeout_ms: 0,
                command: Some(command::Command::CardReader(CardReaderCommand {
                    command: Some(card_reader_command::Command::Eject(Default::default())),
                })),
            })
            .await;
        if done.completion.is_some_and(|c| c.code == 1) {
            self.idc
                .control(simulator_request::Action::CardReader(CardReaderSimAction {
                    action: Some(card_reader_sim_action::Action::TakeCard(TakeCard {})),
                }))
                .await;
        }
    }
}

fn table(native: &Native) -> Vec<Value> {
    let text = std::fs::read_to_string(native.state_dir.join("transactions.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["authorizations"].as_array().unwrap().clone()
}

/// Waits until the newest entry of the log is final; answers it.
async fn settled(native: &Native) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let entries = table(native);
        if let Some(last) = entries.last()
            && ["reversed", "completed"].contains(&last["state"].as_str().unwrap_or(""))
        {
            return last.clone();
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {entries:?}\n{}",
            native.journal()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const DISPENSE: fn(&str) -> Value = |reference| {
    json!({"device": "cdm", "requestId": "d-1", "authorization": reference,
           "command": {"cashDispenser": {"dispense": {"currency": "CNY", "amount": 30000}}}})
};
const PRESENT: fn(&str) -> Value = |reference| {
    json!({"device": "cdm", "requestId": "p-1", "authorization": reference,
           "command": {"cashDispenser": {"present": {"takeTimeoutMs": 60000}}}})
};

/// Runs a withdrawal of 300.00 CNY until the process dies at `step`.
async fn withdraw_until(r: &Rig, page: &mut Page, step: &str) {
    insert_card(page, &r.idc, "read-1").await;
    enter_pin(page, &r.pin, "1234", "pin-1").await;
    let w = page
        .call_or_gone(
            "txn.withdrawal",
            json!({"amount": 30000, "currency": "CNY"}),
        )
        .await;
    let Some(w) = w else {
        assert!(["requested", "approved"].contains(&step), "died at {step}");
        return;
    };
    let w = w.unwrap();
    assert_eq!(w["approved"], true, "{w}");
    let reference = w["authorization"].as_str().unwrap().to_owned();
    let d = page
        .call_or_gone("device.execute", DISPENSE(&reference))
        .await;
    let Some(d) = d else {
        assert!(
            ["dispensing", "dispensed"].contains(&step),
            "died at {step}"
        );
        return;
    };
    assert!(d.is_ok(), "{d:?}");
    if step == "completed" {
        let id = page.send("device.execute", PRESENT(&reference)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        take_notes(&r.cdm).await;
        let _ = id;
    } else {
        let p = page
            .call_or_gone("device.execute", PRESENT(&reference))
            .await;
        assert!(p.is_none(), "died at {step}: {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_step_of_a_withdrawal_is_settled_after_restart() {
    let r = rig().await;
    let mut balance = START_BALANCE;
    for step in [
        "requested",
        "approved",
        "dispensing",
        "dispensed",
        "presenting",
        "completed",
    ] {
        let (before_cassettes, before_reject, before_retract) = notes(&cdm_status(&r.cdm).await);
        let (mut native, mut page) = r.start(Some(step)).await;
        withdraw_until(&r, &mut page, step).await;
        assert!(native.wait_killed(), "{step}: killed by its own hook");
        drop(page);

        if step == "approved" {
            // Once more with a crash right after the first reversal attempt is saved: the
            // next run sends it again as a 0401.
            let mut crashed = Native::start_env(
                r.dir.path(),
                &r.config,
                &[("OPENTELLER_TEST_CRASH_AT", "reversal_sending")],
            );
            assert!(crashed.wait_killed(), "killed before sending the reversal");
            drop(crashed);
        }

        let (native2, _page) = r.start(None).await;
        let entry = settled(&native2).await;
        r.clear_reader().await;
        let journal = native2.journal();
        let reference = entry["reference"].as_str().unwrap();
        if step == "completed" {
            // Saved complete before the crash: nothing to recover.
            assert!(
                journal.contains(&format!(
                    "CashDispenser.Present p-1 SUCCESS ref={reference}"
                )),
                "{step}: {journal}"
            );
            assert!(!journal.contains(&format!("RECOVERY ref={reference}")));
        } else {
            assert!(
                journal.contains(&format!("RECOVERY ref={reference}")),
                "{step}: {journal}"
            );
        }
        let after = notes(&cdm_status(&r.cdm).await);
        if step == "completed" {
            balance -= 30000;
            assert_eq!(entry["state"], "completed", "{step}: {entry}");
            assert_eq!(after, (before_cassettes - 3, before_reject, before_retract));
        } else {
            assert_eq!(entry["state"], "reversed", "{step}: {entry}");
            assert_eq!(entry["reversal"]["delivered"], 0, "{step}: {entry}");
            assert!(
                journal.contains(&format!("ref={reference} stan="))
                    && journal.contains("full attempt"),
                "{step}: {journal}"
            );
            let stacked = ["dispensed", "presenting"].contains(&step);
            let expected = if stacked {
                // The stacked notes went to the reject bin.
                (before_cassettes - 3, before_reject + 3, before_retract)
            } else {
                (before_cassettes, before_reject, before_retract)
            };
            assert_eq!(after, expected, "{step}");
            if stacked {
                assert!(
                    journal.contains("CashDispenser.Reject settle-"),
                    "{step}: {journal}"
                );
            }
        }
        if step == "approved" {
            assert!(
                journal.contains(&format!("TXN REVERSAL 0401 ref={reference}")),
                "the repeat is a 0401: {journal}"
            );
        }
        wait_balance(&r.host.control, balance).await;
        drop(native2);
        let _ = &mut native;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_notes_wait_in_the_shutter() {
    notes_in_the_shutter(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_the_settler_retracts_still_reverses() {
    // The settler saves what was delivered before it retracts: after a crash between the
    // retract and the reversal, the empty shutter and the risen counters must not read as
    // "the customer took it all".
    notes_in_the_shutter(true).await;
}

async fn notes_in_the_shutter(crash_after_retract: bool) {
    let r = rig().await;
    let (mut native, mut page) = r.start(None).await;
    insert_card(&mut page, &r.idc, "read-1").await;
    enter_pin(&mut page, &r.pin, "1234", "pin-1").await;
    let w = page
        .call(
            "txn.withdrawal",
            json!({"amount": 30000, "currency": "CNY"}),
        )
        .await
        .unwrap();
    let reference = w["authorization"].as_str().unwrap().to_owned();
    assert_eq!(
        common::host::available(&r.host.control),
        START_BALANCE - 30000
    );
    let (cassettes, reject, retract) = notes(&cdm_status(&r.cdm).await);
    page.call("device.execute", DISPENSE(&reference))
        .await
        .unwrap();
    // The present is held by the dispenser (waiting for the customer) when the host dies.
    page.send("device.execute", PRESENT(&reference)).await;
    page.event("items presented", |v| {
        v["event"] == "device.event" && v["data"]["requestId"] == "p-1"
    })
    .await;
    native.kill9();
    drop(page);

    if crash_after_retract {
        let mut crashed = Native::start_env(
            r.dir.path(),
            &r.config,
            &[("OPENTELLER_TEST_CRASH_AT", "settle_cleared")],
        );
        assert!(crashed.wait_killed(), "killed right after the retract");
        drop(crashed);
    }
    let (native2, _page) = r.start(None).await;
    let entry = settled(&native2).await;
    assert_eq!(entry["reference"], reference.as_str());
    assert_eq!(entry["state"], "reversed", "{entry}");
    assert_eq!(entry["settling_delivered"], 0, "{entry}");
    wait_balance(&r.host.control, START_BALANCE).await;
    assert_eq!(
        notes(&cdm_status(&r.cdm).await),
        (cassettes - 3, reject, retract + 3),
        "the presented notes were retracted"
    );
    let journal = native2.journal();
    assert!(
        journal.contains("CashDispenser.Retract settle-"),
        "{journal}"
    );
    assert!(
        journal.contains("delivered 0 of 30000 CNY: full reversal"),
        "{journal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_reversal_gives_back_only_what_the_customer_did_not_get() {
    // The virtual dispenser never hands over part of a bundle, so the log is edited between a
    // crash and the restart: of the approved 300.00, the customer got 100.00.
    let r = rig().await;
    let (mut native, mut page) = r.start(Some("approved")).await;
    withdraw_until(&r, &mut page, "approved").await;
    assert!(native.wait_killed());
    drop(page);
    wait_balance(&r.host.control, START_BALANCE - 30000).await;
    let path = native.state_dir.join("transactions.json");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let entry = file["authorizations"]
        .as_array_mut()
        .unwrap()
        .last_mut()
        .unwrap();
    assert_eq!(entry["state"], "approved");
    let reference = entry["reference"].as_str().unwrap().to_owned();
    entry["state"] = json!("reversal_pending");
    entry["reversal"] = json!({"reason": "test: 1 of 3 notes taken", "delivered": 10000,
        "attempts": 0, "next_at_ms": 0, "queued_at_ms": 0, "last_result": null});
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();

    let (native2, _page) = r.start(None).await;
    let entry = settled(&native2).await;
    assert_eq!(entry["reference"], reference.as_str());
    // F95 = 000000010000 + 30 zeros: the bank gives back 200.00.
    wait_balance(&r.host.control, START_BALANCE - 10000).await;
    let journal = native2.journal();
    assert!(
        journal.contains(&format!(
            "TXN REVERSAL 0400 ref={reference} stan=000002 partial (delivered 10000) attempt 1"
        )),
        "{journal}"
    );
    r.clear_reader().await;
}
