//! Customer flows end to end with the real host side (host-sim ← online-txn) and real
//! driver-proxies: transfer, PIN change, card retention after the PIN limit, notes not taken
//! (retracted and reversed by the host itself), a host timeout (reversed), and the pages'
//! journal / data / log methods.

mod common;

use std::time::Duration;

use common::host::{
    HostSide, PAN2, START_BALANCE, available, available_of, cdm_status, enter_pin, faults,
    insert_card, load_tmk, notes, online_config, start_host_side, wait_balance, wait_in_service,
};
use common::{Native, Page, Proxy};
use openteller_proto::device::v1::device_status;
use serde_json::json;

struct Rig {
    host: HostSide,
    idc: Proxy,
    pin: Proxy,
    cdm: Proxy,
    native: Native,
    _dir: tempfile::TempDir,
}

async fn rig(extra: &str) -> (Rig, Page) {
    let dir = tempfile::Builder::new()
        .prefix("tn-flow-")
        .tempdir()
        .unwrap();
    let host = start_host_side(dir.path());
    let idc = Proxy::start(dir.path(), "idc", "CardReader").await;
    let pin = Proxy::start(dir.path(), "pin", "PinPad").await;
    let cdm = Proxy::start(dir.path(), "cdm", "CashDispenser").await;
    load_tmk(&pin).await;
    let text = online_config(dir.path(), &host, &[&idc, &pin, &cdm], "");
    // `extra` may replace the default response timeout.
    let text = match extra.strip_prefix("response_timeout_ms = ") {
        Some(ms) => text.replace(
            "response_timeout_ms = 10000",
            &format!("response_timeout_ms = {}", ms.trim()),
        ),
        None => format!("{text}{extra}"),
    };
    let native = Native::start(dir.path(), &text);
    let mut page = native.page().await;
    wait_in_service(&mut page).await;
    (
        Rig {
            host,
            idc,
            pin,
            cdm,
            native,
            _dir: dir,
        },
        page,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_moves_money_and_checks_its_input() {
    let (r, mut page) = rig("").await;
    insert_card(&mut page, &r.idc, "read-1").await;
    enter_pin(&mut page, &r.pin, "1234", "pin-1").await;

    // Bad input changes nothing and sends nothing.
    for bad in [
        json!({"toAccount": "12ab", "amount": 100, "currency": "CNY"}),
        json!({"toAccount": "", "amount": 100, "currency": "CNY"}),
        json!({"toAccount": "1".repeat(29), "amount": 100, "currency": "CNY"}),
        json!({"toAccount": PAN2, "amount": 0, "currency": "CNY"}),
        json!({"toAccount": PAN2, "amount": "100", "currency": "CNY"}),
        json!({"toAccount": PAN2, "amount": 100}),
        json!({"toAccount": PAN2, "amount": 100, "currency": "CNY", "extra": 1}),
    ] {
        let e = page.call("txn.transfer", bad.clone()).await.unwrap_err();
        assert_eq!(e["code"], "INVALID_ARGUMENT", "{bad}: {e}");
    }
    assert_eq!(available(&r.host.control), START_BALANCE);

    let res = page
        .call(
            "txn.transfer",
            json!({"toAccount": PAN2, "amount": 12345, "currency": "CNY"}),
        )
        .await
        .unwrap();
    assert_eq!(res["responseCode"], "00", "{res}");
    assert_eq!(res["approved"], true);
    assert_eq!(res["balance"]["available"], START_BALANCE - 12345, "{res}");
    assert!(
        res.get("authorization").is_none(),
        "a transfer authorises no dispense"
    );
    assert_eq!(available(&r.host.control), START_BALANCE - 12345);
    assert_eq!(available_of(&r.host.control, PAN2), START_BALANCE + 12345);
    let journal = r.native.journal();
    assert!(
        journal.contains("TXN TRANSFER stan=000002 amount=12345 CNY to=622202*********3446 rc=00"),
        "{journal}"
    );
    assert!(!journal.contains(PAN2), "{journal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_change_then_the_new_pin_works() {
    let (r, mut page) = rig("").await;
    insert_card(&mut page, &r.idc, "read-1").await;

    // Out of sequence: nothing captured yet.
    let e = page
        .call("txn.pinChange", json!({"step": "confirm"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "SEQUENCE_ERROR", "{e}");
    let e = page
        .call("txn.pinChange", json!({"step": "later"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "INVALID_ARGUMENT", "{e}");

    enter_pin(&mut page, &r.pin, "1234", "pin-1").await;
    let res = page
        .call("txn.pinChange", json!({"step": "current"}))
        .await
        .unwrap();
    assert_eq!(res, json!({"step": "current", "captured": true}));
    enter_pin(&mut page, &r.pin, "4321", "pin-2").await;
    let res = page
        .call("txn.pinChange", json!({"step": "new"}))
        .await
        .unwrap();
    assert_eq!(res, json!({"step": "new", "captured": true}));
    // A different confirmation: PIN_MISMATCH, the page asks for the new PIN again.
    enter_pin(&mut page, &r.pin, "5555", "pin-3").await;
    let e = page
        .call("txn.pinChange", json!({"step": "confirm"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "PIN_MISMATCH", "{e}");
    let e = page
        .call("txn.pinChange", json!({"step": "confirm"}))
        .await
        .unwrap_err();
    assert_eq!(
        e["code"], "SEQUENCE_ERROR",
        "the new PIN was forgotten: {e}"
    );
    enter_pin(&mut page, &r.pin, "4321", "pin-4").await;
    page.call("txn.pinChange", json!({"step": "new"}))
        .await
        .unwrap();
    enter_pin(&mut page, &r.pin, "4321", "pin-5").await;
    let res = page
        .call("txn.pinChange", json!({"step": "confirm"}))
        .await
        .unwrap();
    assert_eq!(res["responseCode"], "00", "{res}");
    assert_eq!(res["approved"], true, "{res}");

    // The old PIN is refused, the new one works.
    enter_pin(&mut page, &r.pin, "1234", "pin-6").await;
    let res = page.call("txn.inquiry", json!({})).await.unwrap();
    assert_eq!(res["responseCode"], "55", "{res}");
    enter_pin(&mut page, &r.pin, "4321", "pin-7").await;
    let res = page.call("txn.inquiry", json!({})).await.unwrap();
    assert_eq!(res["responseCode"], "00", "{res}");
    assert_eq!(res["balance"]["available"], START_BALANCE, "{res}");
    assert!(r.native.journal().contains("TXN PIN-CHANGE stan="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pins_up_to_the_limit_retain_the_card() {
    let (r, mut page) = rig("[rules]\nmax_pin_attempts = 2\n").await;
    let retained_before = match r.idc.status().await.detail {
        Some(device_status::Detail::CardReader(s)) => s.retain_count,
        other => panic!("{other:?}"),
    };
    insert_card(&mut page, &r.idc, "read-1").await;
    enter_pin(&mut page, &r.pin, "9999", "pin-1").await;
    let res = page.call("txn.inquiry", json!({})).await.unwrap();
    assert_eq!(res["responseCode"], "55", "{res}");
    assert_eq!(res["pinTriesLeft"], 1, "{res}");
    assert!(res.get("cardRetained").is_none(), "{res}");
    enter_pin(&mut page, &r.pin, "8888", "pin-2").await;
    let res = page
        .call(
            "txn.withdrawal",
            json!({"amount": 10000, "currency": "CNY"}),
        )
        .await
        .unwrap();
    assert_eq!(res["responseCode"], "55", "{res}");
    assert_eq!(res["pinTriesLeft"], 0, "{res}");
    assert_eq!(res["cardRetained"], true, "{res}");
    assert!(res.get("authorization").is_none());

    // The reader kept it; the session is over; nothing more on this card.
    match r.idc.status().await.detail {
        Some(device_status::Detail::CardReader(s)) => {
            assert_eq!(s.retain_count, retained_before + 1, "{s:?}")
        }
        other => panic!("{other:?}"),
    }
    let status = page.call("terminal.status", json!({})).await.unwrap();
    assert_eq!(status["session"]["card"], "idle", "{status}");
    let e = page
        .call(
            "device.execute",
            json!({"device": "pin", "command": {"pinPad": {"getPin": {"minLength": 4, "maxLength": 6}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "SEQUENCE_ERROR", "{e}");
    let e = page.call("txn.inquiry", json!({})).await.unwrap_err();
    assert_eq!(e["code"], "SEQUENCE_ERROR", "{e}");
    assert_eq!(available(&r.host.control), START_BALANCE);
    let journal = r.native.journal();
    assert!(journal.contains("CardReader.Retain retain-"), "{journal}");
    assert!(
        journal.contains("CARD RETAINED by the host (2 wrong PINs, limit 2 (rc=55)): retained"),
        "{journal}"
    );
    assert!(journal.contains("rc=55 ref="), "{journal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_not_taken_are_retracted_and_reversed() {
    let (r, mut page) = rig("").await;
    insert_card(&mut page, &r.idc, "read-1").await;
    enter_pin(&mut page, &r.pin, "1234", "pin-1").await;
    let res = page
        .call(
            "txn.withdrawal",
            json!({"amount": 30000, "currency": "CNY"}),
        )
        .await
        .unwrap();
    assert_eq!(res["approved"], true, "{res}");
    let reference = res["authorization"].as_str().unwrap().to_owned();
    assert_eq!(available(&r.host.control), START_BALANCE - 30000);
    let (cassettes, _, retract_bin) = notes(&cdm_status(&r.cdm).await);

    let ok = page
        .call(
            "device.execute",
            json!({"device": "cdm", "requestId": "d-1", "authorization": reference,
                   "command": {"cashDispenser": {"dispense": {"currency": "CNY", "amount": 30000}}}}),
        )
        .await
        .unwrap();
    assert_eq!(ok["completion"]["code"], "COMPLETION_CODE_SUCCESS", "{ok}");
    // The notes of an unsettled withdrawal are the host's: a page clearing them first would
    // make them look delivered to the settler.
    for clear in ["retract", "reject", "reset"] {
        let e = page
            .call(
                "device.execute",
                json!({"device": "cdm", "command": {"cashDispenser": {clear: {}}}}),
            )
            .await
            .unwrap_err();
        assert_eq!(e["code"], "SEQUENCE_ERROR", "{clear}: {e}");
    }
    assert_eq!(
        notes(&cdm_status(&r.cdm).await),
        (cassettes - 3, 0, retract_bin),
        "the stacked notes stay where they are"
    );
    // The customer walks away: ITEMSNOTTAKEN after the (short) take timeout.
    let e = page
        .call(
            "device.execute",
            json!({"device": "cdm", "requestId": "p-1", "authorization": reference,
                   "command": {"cashDispenser": {"present": {"takeTimeoutMs": 1000}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "COMMAND_FAILED", "{e}");
    assert_eq!(e["xfsCode"], -335, "{e}");

    // The host retracts and reverses by itself; the page hears of it.
    wait_balance(&r.host.control, START_BALANCE).await;
    let ev = page
        .event("txn.reversal", |v| {
            v["event"] == "txn.reversal" && v["data"]["state"] == "reversed"
        })
        .await;
    assert_eq!(ev["data"]["authorization"], reference.as_str());
    assert_eq!(ev["data"]["delivered"], 0);
    let after = notes(&cdm_status(&r.cdm).await);
    assert_eq!(
        after,
        (cassettes - 3, 0, retract_bin + 3),
        "3 notes retracted"
    );
    let journal = r.native.journal();
    assert!(
        journal.contains("CashDispenser.Retract settle-"),
        "{journal}"
    );
    assert!(
        journal.contains(&format!(
            "TXN SETTLED ref={reference} after COMMAND_ERROR -335"
        )),
        "{journal}"
    );
    assert!(
        journal.contains("delivered 0 of 30000 CNY: full reversal"),
        "{journal}"
    );
    assert!(
        journal.contains(&format!("TXN REVERSAL 0400 ref={reference}")),
        "{journal}"
    );
    // A second present or dispense of it is refused.
    let e = page
        .call(
            "device.execute",
            json!({"device": "cdm", "authorization": reference,
                   "command": {"cashDispenser": {"present": {}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DISPENSE_REFUSED", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_timeout_is_reversed() {
    let (r, mut page) = rig("response_timeout_ms = 1500\n").await;
    insert_card(&mut page, &r.idc, "read-1").await;
    enter_pin(&mut page, &r.pin, "1234", "pin-1").await;
    // The bank answers after 3 s (within online-txn's 5 s); the terminal waits 1.5 s.
    faults(&r.host.control, Some(r#"{"delay_ms": 3000}"#));
    let id = page
        .send(
            "txn.withdrawal",
            json!({"amount": 20000, "currency": "CNY"}),
        )
        .await;
    // No second transaction while one is open.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = page.call("txn.inquiry", json!({})).await.unwrap_err();
    assert_eq!(e["code"], "SEQUENCE_ERROR", "{e}");
    let a = page.answer(id).await;
    assert_eq!(a["error"]["code"], "HOST_TIMEOUT", "{a}");
    faults(&r.host.control, None);
    // Whatever the bank did with it, the reversal undoes it.
    wait_balance(&r.host.control, START_BALANCE).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let journal = r.native.journal();
        if journal.contains("TXN REVERSAL 04") && journal.contains("DONE") {
            assert!(
                journal.contains("TXN REVERSAL QUEUED ref=T0000001-000002-"),
                "{journal}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{journal}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_write_the_journal_log_and_data_pool() {
    let (r, mut page) = rig("").await;
    let res = page
        .call(
            "journal.write",
            json!({"text": "CUSTOMER chose withdrawal 6222020200112233445"}),
        )
        .await
        .unwrap();
    assert_eq!(res, json!({}));
    let journal = r.native.journal();
    assert!(
        journal.contains("PAGE CUSTOMER chose withdrawal 622202*********3445"),
        "{journal}"
    );
    for bad in [
        json!({"text": ""}),
        json!({"text": "x".repeat(513)}),
        json!({"text": 5}),
        // A forged second line, and other control characters.
        json!({"text": "ok\n2026-11-22T05:00:00.000+00:00 T0000001 TXN SETTLED ref=x"}),
        json!({"text": "ok\rTXN"}),
        json!({"text": "ok\u{1b}[2K"}),
        json!({"text": "ok\u{2028}TXN"}),
    ] {
        let e = page.call("journal.write", bad).await.unwrap_err();
        assert_eq!(e["code"], "INVALID_ARGUMENT", "{e}");
    }
    let journal = r.native.journal();
    assert!(
        !journal.contains("ref=x"),
        "nothing of a refused text: {journal}"
    );
    page.call(
        "log.write",
        json!({"level": "info", "text": "page says hello"}),
    )
    .await
    .unwrap();
    let e = page
        .call("log.write", json!({"level": "loud", "text": "x"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "INVALID_ARGUMENT", "{e}");

    assert_eq!(
        page.call("data.get", json!({"key": "lang"})).await.unwrap(),
        json!({"value": null})
    );
    page.call(
        "data.set",
        json!({"key": "lang", "value": {"code": "zh", "n": 1}}),
    )
    .await
    .unwrap();
    assert_eq!(
        page.call("data.get", json!({"key": "lang"})).await.unwrap(),
        json!({"value": {"code": "zh", "n": 1}})
    );
    // Over the cap (64 KiB in all): refused, the old values stay.
    page.call(
        "data.set",
        json!({"key": "big", "value": "x".repeat(40_000)}),
    )
    .await
    .unwrap();
    let e = page
        .call(
            "data.set",
            json!({"key": "big2", "value": "x".repeat(40_000)}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DATA_FULL", "{e}");
    assert_eq!(
        page.call("data.get", json!({"key": "big2"})).await.unwrap(),
        json!({"value": null})
    );
    for bad in [
        json!({"key": ""}),
        json!({"key": "k".repeat(65)}),
        json!({"key": 3}),
        json!({"key": "a", "value": 1}),
    ] {
        let e = page.call("data.get", bad).await.unwrap_err();
        assert_eq!(e["code"], "INVALID_ARGUMENT", "{e}");
    }
    let e = page
        .call("data.set", json!({"key": "a"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "INVALID_ARGUMENT", "{e}");
    assert_eq!(
        page.call("data.get", json!({"key": "lang"})).await.unwrap()["value"]["code"],
        "zh"
    );
    assert_eq!(
        page.call("data.delete", json!({"key": "lang"}))
            .await
            .unwrap(),
        json!({"deleted": true})
    );
    assert_eq!(
        page.call("data.delete", json!({"key": "lang"}))
            .await
            .unwrap(),
        json!({"deleted": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_jam_is_journaled_and_the_self_check_brings_the_reader_back() {
    use openteller_proto::device::v1::{SetError, simulator_request};
    let (r, mut page) = rig("[self_check]\ninterval_s = 1\n").await;
    let retained_before = match r.idc.status().await.detail {
        Some(device_status::Detail::CardReader(s)) => s.retain_count,
        other => panic!("{other:?}"),
    };
    insert_card(&mut page, &r.idc, "read-1").await;
    let reply = r
        .idc
        .control(simulator_request::Action::SetError(SetError {
            command: "CardReader.Eject".into(),
            error_code: -200,
            count: 1,
        }))
        .await;
    assert_eq!(reply.result.unwrap().code, 1, "error preset");
    // Only what follows counts (start-up had its own status events).
    page.events.clear();
    let e = page
        .call(
            "device.execute",
            json!({"device": "idc", "requestId": "eject-1",
                   "command": {"cardReader": {"eject": {}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "COMMAND_FAILED", "{e}");
    assert_eq!(e["xfsCode"], -200, "{e}");
    let alarm = page
        .event("card_jam alarm", |v| {
            v["event"] == "terminal.alarm" && v["data"]["kind"] == "card_jam"
        })
        .await;
    assert_eq!(alarm["data"]["source"], "idc", "{alarm}");
    // The reader's hardware error takes the terminal out of service ...
    page.event("out of service", |v| {
        v["event"] == "terminal.status" && v["data"]["inService"] == false
    })
    .await;
    // ... until the self-check resets the reader (which keeps the jammed card).
    page.event("back in service", |v| {
        v["event"] == "terminal.status" && v["data"]["inService"] == true
    })
    .await;
    let status = page.call("terminal.status", json!({})).await.unwrap();
    assert_eq!(status["session"]["card"], "idle", "{status}");
    match r.idc.status().await.detail {
        Some(device_status::Detail::CardReader(s)) => {
            assert_eq!(s.retain_count, retained_before + 1, "{s:?}")
        }
        other => panic!("{other:?}"),
    }
    // The check's journal line follows the reset (and the status event) shortly.
    let wanted = "SELF-CHECK out of service: idc is hardware_error; actions: idc: \
                  DEVICE_STATE_HARDWARE_ERROR → reset; now in service";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !r.native.journal().contains(wanted) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            r.native.journal()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let journal = r.native.journal();
    assert!(
        journal.contains("idc CardReader.Eject eject-1 COMMAND_ERROR -200"),
        "{journal}"
    );
    assert!(journal.contains("CARD JAMMED: session ended"), "{journal}");
    assert!(
        journal.contains("idc CardReader.Reset selfcheck-"),
        "{journal}"
    );
    // Every check is journaled.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !r.native.journal().contains("SELF-CHECK in service") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            r.native.journal()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_the_page_never_dispenses_is_reversed() {
    let (r, mut page) = rig("[self_check]\ninterval_s = 1\n[rules]\nabandon_after_s = 2\n").await;
    insert_card(&mut page, &r.idc, "read-1").await;
    enter_pin(&mut page, &r.pin, "1234", "pin-1").await;
    let res = page
        .call(
            "txn.withdrawal",
            json!({"amount": 10000, "currency": "CNY"}),
        )
        .await
        .unwrap();
    let reference = res["authorization"].as_str().unwrap().to_owned();
    assert_eq!(available(&r.host.control), START_BALANCE - 10000);
    // While the card session is open nothing is abandoned; after the eject the page is gone.
    page.call(
        "device.execute",
        json!({"device": "idc", "command": {"cardReader": {"eject": {}}}}),
    )
    .await
    .unwrap();
    wait_balance(&r.host.control, START_BALANCE).await;
    let journal = r.native.journal();
    assert!(
        journal.contains(&format!(
            "TXN ABANDONED ref={reference} abandoned: approved, not dispensed within 2 s"
        )),
        "{journal}"
    );
    // Too late to dispense now.
    let e = page
        .call(
            "device.execute",
            json!({"device": "cdm", "authorization": reference,
                   "command": {"cashDispenser": {"dispense": {"currency": "CNY", "amount": 10000}}}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "DISPENSE_REFUSED", "{e}");
}

/// A sign-on for this terminal that the terminal did not make: online-txn now has working
/// keys the EPP does not.
fn sign_on_behind_its_back(terminals: &str) {
    use openteller_codec::framing::{Framer, LengthPrefix};
    use openteller_codec::{FieldValue, Message, Spec, Subfield};
    use std::io::{Read, Write};
    let spec = Spec::builtin("cup").unwrap();
    let m = Message::new("0800")
        .with_tpdu(vec![0x60, 0x00, 0x01, 0x00, 0x00])
        .with_header(vec![0x60, 0x31, 0x00, 0x00, 0x00, 0x00])
        .with(11, "999999")
        .with(12, "120000")
        .with(13, "0101")
        .with(41, "T0000001")
        .with(42, "OPENTELLER00001")
        .with(
            60,
            FieldValue::Subfields(vec![
                Subfield::new("1", "00"),
                Subfield::new("2", "000001"),
                Subfield::new("3", "003"),
            ]),
        );
    let framed = Framer::new(LengthPrefix::Binary2, 4096)
        .frame(&spec.encode(&m).unwrap())
        .unwrap();
    let mut s = std::net::TcpStream::connect(terminals).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).unwrap();
    let answer = spec.decode(&body).unwrap();
    assert_eq!(answer.get(39).and_then(FieldValue::as_text), Some("00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_working_keys_are_replaced_by_an_automatic_sign_on() {
    let (r, mut page) = rig("").await;
    insert_card(&mut page, &r.idc, "read-1").await;
    enter_pin(&mut page, &r.pin, "1234", "pin-1").await;
    sign_on_behind_its_back(&r.host.terminals);
    // The answer's MAC is not under our TAK: refused, and the keys count as lost.
    let e = page.call("txn.inquiry", json!({})).await.unwrap_err();
    assert_eq!(e["code"], "HOST_ERROR", "{e}");
    // The sign-on task brings new keys; the customer's next try works.
    wait_in_service(&mut page).await;
    let journal = r.native.journal();
    assert_eq!(journal.matches("TXN SIGN-ON").count(), 2, "{journal}");
    enter_pin(&mut page, &r.pin, "1234", "pin-2").await;
    let res = page.call("txn.inquiry", json!({})).await.unwrap();
    assert_eq!(res["responseCode"], "00", "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_change_without_an_answer_is_reversed_and_the_old_pin_stays() {
    use common::host::control_http;
    let (r, mut page) = rig("response_timeout_ms = 1500\n").await;
    insert_card(&mut page, &r.idc, "read-1").await;
    enter_pin(&mut page, &r.pin, "1234", "pin-1").await;
    page.call("txn.pinChange", json!({"step": "current"}))
        .await
        .unwrap();
    enter_pin(&mut page, &r.pin, "4321", "pin-2").await;
    page.call("txn.pinChange", json!({"step": "new"}))
        .await
        .unwrap();
    enter_pin(&mut page, &r.pin, "4321", "pin-3").await;
    faults(&r.host.control, Some(r#"{"delay_ms": 3000}"#));
    let e = page
        .call("txn.pinChange", json!({"step": "confirm"}))
        .await
        .unwrap_err();
    assert_eq!(e["code"], "HOST_TIMEOUT", "{e}");
    faults(&r.host.control, None);
    // The bank applied the change, then its reversal (which restores the old PIN).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t = control_http(&r.host.control, "GET", "/state/transactions", None);
        let undone = t.to_string().contains("\"pin_change\"")
            && t["transactions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x["kind"] == "reversal" && x["original"]["kind"] == "pin_change");
        if undone {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    enter_pin(&mut page, &r.pin, "1234", "pin-4").await;
    let res = page.call("txn.inquiry", json!({})).await.unwrap();
    assert_eq!(res["responseCode"], "00", "the old PIN again: {res}");
    let journal = r.native.journal();
    assert!(
        journal.contains("TXN REVERSAL QUEUED ref=T0000001-000002-"),
        "{journal}"
    );
}
