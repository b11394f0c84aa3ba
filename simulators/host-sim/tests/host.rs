//! The 8583 side of the real `host-sim` binary: transactions, PINs, MACs, retransmissions,
//! reversals, pipelining, short connections and malformed input.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use openteller_codec::Message;
use openteller_host_sim::wire::{self, Balance, MacCheck};

#[tokio::test]
async fn inquiry_with_the_right_pin_returns_the_balance() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00001");
    let mut req = t.inquiry(ZHANG, "1234");
    let resp = call(&mut c, &t, &mut req).await;
    assert_eq!(resp.mti, "0210");
    assert_eq!(code(&resp), "00");
    assert_eq!(resp.text(11), req.text(11));
    assert_eq!(resp.text(41), Some("ATM00001"));
    assert_eq!(resp.text(2), Some(ZHANG));
    assert_eq!(resp.text(37).map(str::len), Some(12));
    let f54 = Balance::parse_all(resp.text(54).unwrap());
    assert_eq!(f54.len(), 1);
    assert_eq!(f54[0].amount_type, wire::AMOUNT_TYPE_AVAILABLE);
    assert_eq!(f54[0].currency, "156");
    assert_eq!(f54[0].amount, 100_000_000);
    // TPDU addresses swapped.
    assert_eq!(
        resp.tpdu.as_deref(),
        Some(&[0x60, 0x00, 0x00, 0x00, 0x01][..])
    );
}

#[tokio::test]
async fn three_wrong_pins_lock_the_card_until_unlocked() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00001");
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(code(&ask(&mut c, &mut t, |t| t.inquiry(LI, "9999")).await).to_owned());
    }
    assert_eq!(codes, ["55", "55", "75"]);
    let resp = ask(&mut c, &mut t, |t| t.inquiry(LI, "1234")).await;
    assert_eq!(code(&resp), "75", "stays locked with the right PIN");
    assert_eq!(sim.account(LI).await["status"], "locked");

    let (status, v) = sim.post(&format!("/accounts/{LI}/unlock"), "").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "active");
    assert_eq!(v["pan"], "622202*********5432");
    let resp = ask(&mut c, &mut t, |t| t.inquiry(LI, "1234")).await;
    assert_eq!(code(&resp), "00");
}

#[tokio::test]
async fn a_right_pin_resets_the_wrong_pin_count() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00001");
    for pin in ["0000", "0000", "1234", "0000", "0000"] {
        ask(&mut c, &mut t, |t| t.inquiry(WANG, pin)).await;
    }
    assert_eq!(sim.account(WANG).await["status"], "active");
    assert_eq!(sim.account(WANG).await["pin_tries"], 2);
}

#[tokio::test]
async fn withdrawal_debits_once_and_a_retransmission_gets_the_same_answer() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00001");
    let mut req = t.withdrawal(ZHANG, "1234", 50_000);
    let bytes = t.seal(&mut req).unwrap();
    c.send(&bytes).await.unwrap();
    let first = recv(&mut c, &t).await;
    assert_eq!(code(&first), "00");
    assert_eq!(first.text(38).map(str::len), Some(6));
    assert_eq!(first.text(37).map(str::len), Some(12));
    assert_eq!(first.text(4), Some("000000050000"));
    let f54 = Balance::parse(first.text(54).unwrap()).unwrap();
    assert_eq!(f54.amount, 100_000_000 - 50_000);
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 50_000);

    // The same bytes again, on another connection: same RRN, nothing applied twice.
    let mut c2 = sim.client().await;
    c2.send(&bytes).await.unwrap();
    let again = recv(&mut c2, &t).await;
    assert_eq!(again, first);
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 50_000);

    // Same F41 + F11 + F13 with other content: duplicate transmission, nothing applied.
    let mut other = req.clone().with(4, "000000060000");
    let dup = call(&mut c, &t, &mut other).await;
    assert_eq!(code(&dup), "94");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 50_000);

    let tx = sim.transactions().await;
    assert_eq!(tx["transactions"].as_array().unwrap().len(), 1);
    assert_eq!(tx["transactions"][0]["kind"], "withdrawal");
    assert_eq!(tx["transactions"][0]["amount"], 50_000);
    assert_eq!(tx["transactions"][0]["terminal"], "ATM00001");
    assert_eq!(tx["transactions"][0]["stan"], req.text(11).unwrap());
    assert_eq!(tx["transactions"][0]["rrn"], first.text(37).unwrap());
    assert_eq!(tx["transactions"][0]["pan"], "622202*********3445");
    assert_eq!(tx["summary"]["retransmissions"], 1);
    assert_eq!(tx["summary"]["withdrawals"]["amount"], 50_000);
}

#[tokio::test]
async fn reversal_restores_once_and_repeats_change_nothing() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00002");
    let mut w = t.withdrawal(ZHANG, "1234", 30_000);
    assert_eq!(code(&call(&mut c, &t, &mut w).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 30_000);

    let mut rev = t.reversal_of(&w);
    let r1 = call(&mut c, &t, &mut rev).await;
    assert_eq!(r1.mti, "0410");
    assert_eq!(code(&r1), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000);
    assert_eq!(sim.account(ZHANG).await["withdrawn_today"], 0);

    // A repeat (0401, same STAN) and a new reversal (new STAN) of the same original.
    let mut repeat = rev.clone();
    repeat.mti = "0401".into();
    assert_eq!(code(&call(&mut c, &t, &mut repeat).await), "00");
    let mut again = t.reversal_of(&w);
    assert_eq!(code(&call(&mut c, &t, &mut again).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000);

    // CUP style: a reversal without F90 carries the original's own F11 and F13.
    let mut w2 = t.withdrawal(ZHANG, "1234", 10_000);
    assert_eq!(code(&call(&mut c, &t, &mut w2).await), "00");
    let mut cup_rev = Message::new("0400")
        .with_tpdu(t.tpdu.clone())
        .with_header(t.header.clone());
    for n in [2, 3, 4, 11, 12, 13, 41, 42, 49] {
        cup_rev.set(n, w2.get(n).unwrap().clone());
    }
    assert_eq!(code(&call(&mut c, &t, &mut cup_rev).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000);

    let tx = sim.transactions().await;
    let kinds: Vec<&str> = tx["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["withdrawal", "reversal", "withdrawal", "reversal"]);
    assert_eq!(
        tx["transactions"][1]["original"]["stan"],
        w.text(11).unwrap()
    );
    assert_eq!(tx["summary"]["reversals"]["count"], 2);
    assert_eq!(tx["summary"]["reversals"]["amount"], 40_000);
}

#[tokio::test]
async fn reversal_of_unknown_or_declined_originals() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00003");

    // Unknown original: 25, and the original is then refused if it arrives late.
    let mut never_sent = t.withdrawal(ZHANG, "1234", 10_000);
    let mut rev = t.reversal_of(&never_sent);
    assert_eq!(code(&call(&mut c, &t, &mut rev).await), "25");
    assert_eq!(code(&call(&mut c, &t, &mut never_sent).await), "12");
    assert_eq!(sim.available(ZHANG).await, 100_000_000);

    // Declined original (insufficient funds): nothing to undo, 00.
    let mut declined = t.withdrawal(POOR, "1234", 20_000);
    assert_eq!(code(&call(&mut c, &t, &mut declined).await), "51");
    let mut rev = t.reversal_of(&declined);
    assert_eq!(code(&call(&mut c, &t, &mut rev).await), "00");
    assert_eq!(sim.available(POOR).await, 10_000);

    // A reversal whose amount is not the original's: 13, nothing restored.
    let mut w = t.withdrawal(WANG, "1234", 5_000);
    assert_eq!(code(&call(&mut c, &t, &mut w).await), "00");
    let mut wrong = t.reversal_of(&w).with(4, "000000004000");
    assert_eq!(code(&call(&mut c, &t, &mut wrong).await), "13");
    assert_eq!(sim.available(WANG).await, 50_000_000 - 5_000);
}

#[tokio::test]
async fn partial_reversal_restores_only_the_difference_once() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00012");
    let mut w = t.withdrawal(ZHANG, "1234", 50_000);
    assert_eq!(code(&call(&mut c, &t, &mut w).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 50_000);

    // F95 at or above the original amount gives nothing back: 13, nothing changes.
    for stands in [50_000, 60_000] {
        let mut over = t.partial_reversal_of(&w, stands);
        assert_eq!(code(&call(&mut c, &t, &mut over).await), "13");
    }
    // Malformed F95: 30.
    let mut bad = t.reversal_of(&w).with(95, format!("AB{}", "0".repeat(40)));
    assert_eq!(code(&call(&mut c, &t, &mut bad).await), "30");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 50_000);

    // 200.00 of the 500.00 were dispensed: 300.00 come back, the day's usage too.
    let mut partial = t.partial_reversal_of(&w, 20_000);
    let answer = call(&mut c, &t, &mut partial).await;
    assert_eq!(code(&answer), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 20_000);
    assert_eq!(sim.account(ZHANG).await["withdrawn_today"], 20_000);

    // Repeats — 0401 of the same reversal, a new reversal, a full one — change nothing more.
    let mut repeat = partial.clone();
    repeat.mti = "0401".into();
    assert_eq!(code(&call(&mut c, &t, &mut repeat).await), "00");
    let mut again = t.partial_reversal_of(&w, 20_000);
    assert_eq!(code(&call(&mut c, &t, &mut again).await), "00");
    let mut full = t.reversal_of(&w);
    assert_eq!(code(&call(&mut c, &t, &mut full).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 20_000);

    // F95 of zero: nothing stands, a full reversal.
    let mut w2 = t.withdrawal(ZHANG, "1234", 7_000);
    assert_eq!(code(&call(&mut c, &t, &mut w2).await), "00");
    let mut zero = t.partial_reversal_of(&w2, 0);
    assert_eq!(code(&call(&mut c, &t, &mut zero).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 20_000);

    let tx = sim.transactions().await;
    let entries = tx["transactions"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{tx}");
    assert_eq!(entries[1]["kind"], "reversal");
    assert_eq!(entries[1]["amount"], 30_000);
    assert_eq!(entries[1]["replacement"], 20_000);
    assert_eq!(entries[3]["amount"], 7_000);
    assert!(entries[3].get("replacement").is_none());
    assert_eq!(tx["summary"]["withdrawals_reversed"]["amount"], 37_000);
    assert_eq!(tx["summary"]["partial_reversals"]["count"], 1);
    assert_eq!(tx["summary"]["partial_reversals"]["amount"], 30_000);
}

#[tokio::test]
async fn declines_for_cards_amounts_and_formats() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00004");
    let cases: Vec<(Message, &str)> = vec![
        (t.inquiry("6222020200999999999", "1234"), "14"),
        (t.inquiry(EXPIRED, "1234"), "54"),
        (t.withdrawal(POOR, "1234", 10_001), "51"),
        (t.withdrawal(ZHANG, "1234", 2_000_001), "61"),
        (t.withdrawal(ZHANG, "1234", 0), "13"),
        (t.inquiry(ZHANG, "1234").with(14, "2512"), "54"),
        (t.inquiry(ZHANG, "1234").with(49, "840"), "13"),
        (t.inquiry(ZHANG, "1234").with(3, "990000"), "12"),
        (
            {
                let mut m = t.inquiry(ZHANG, "1234");
                m.remove(52);
                m
            },
            "30",
        ),
        (
            {
                let mut m = t.withdrawal(ZHANG, "1234", 100);
                m.remove(11);
                m
            },
            "30",
        ),
        (t.transfer(ZHANG, "1234", "6222020200999999999", 100), "14"),
        (t.transfer(ZHANG, "1234", ZHANG, 100), "12"),
    ];
    for (mut req, expected) in cases {
        let resp = call(&mut c, &t, &mut req).await;
        assert_eq!(code(&resp), expected, "{req:?}");
        assert!(!resp.has(38), "no auth code on a decline");
    }
    assert_eq!(sim.available(ZHANG).await, 100_000_000);
    assert_eq!(sim.available(POOR).await, 10_000);
    // The daily limit counts what was withdrawn today.
    let mut a = t.withdrawal(ZHANG, "1234", 1_500_000);
    assert_eq!(code(&call(&mut c, &t, &mut a).await), "00");
    let mut b = t.withdrawal(ZHANG, "1234", 600_000);
    assert_eq!(code(&call(&mut c, &t, &mut b).await), "61");
}

#[tokio::test]
async fn bad_mac_is_a0_and_changes_nothing() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00005");
    let mut req = t.withdrawal(ZHANG, "1234", 10_000);
    let mut bytes = t.seal(&mut req).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x01;
    c.send(&bytes).await.unwrap();
    let resp = recv(&mut c, &t).await;
    assert_eq!(code(&resp), "A0");
    assert!(!resp.has(38));
    assert_eq!(sim.available(ZHANG).await, 100_000_000);

    // Without any MAC: also A0 (require_mac = true).
    let mut bare = t.withdrawal(ZHANG, "1234", 10_000);
    let plain = c.spec().encode(&bare).unwrap();
    c.send(&plain).await.unwrap();
    assert_eq!(code(&recv(&mut c, &t).await), "A0");

    // The same request with a good MAC is then processed normally.
    assert_eq!(code(&call(&mut c, &t, &mut req).await), "00");
    assert_eq!(code(&call(&mut c, &t, &mut bare).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 20_000);
}

#[tokio::test]
async fn transfer_moves_money_and_its_reversal_moves_it_back() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00006");
    let mut req = t.transfer(LI, "1234", WANG, 123_456);
    let resp = call(&mut c, &t, &mut req).await;
    assert_eq!(code(&resp), "00");
    assert!(!resp.has(103), "responses never carry fields above 64");
    assert!(resp.has(64));
    assert_eq!(sim.available(LI).await, 100_000_000 - 123_456);
    assert_eq!(sim.available(WANG).await, 50_000_000 + 123_456);

    // F102 = the card's own account is accepted; another account is not.
    let mut own = t.transfer(LI, "1234", WANG, 1).with(102, LI);
    assert_eq!(code(&call(&mut c, &t, &mut own).await), "00");
    let mut foreign = t.transfer(LI, "1234", WANG, 1).with(102, ZHANG);
    assert_eq!(code(&call(&mut c, &t, &mut foreign).await), "12");

    let mut rev = t.reversal_of(&req);
    assert_eq!(code(&call(&mut c, &t, &mut rev).await), "00");
    assert_eq!(sim.available(LI).await, 100_000_000 - 1);
    assert_eq!(sim.available(WANG).await, 50_000_000 + 1);
}

#[tokio::test]
async fn pin_change_then_inquiry_with_the_new_pin() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00007");
    let mut change = t.pin_change(WANG, "1234", "864213");
    assert_eq!(code(&call(&mut c, &t, &mut change).await), "00");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(WANG, "864213")).await),
        "00"
    );
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(WANG, "1234")).await),
        "55"
    );
    // A PIN change with the wrong current PIN changes nothing.
    let mut bad = t.pin_change(WANG, "1234", "1111");
    assert_eq!(code(&call(&mut c, &t, &mut bad).await), "55");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(WANG, "864213")).await),
        "00"
    );
    let tx = sim.transactions().await;
    assert_eq!(tx["transactions"][0]["kind"], "pin_change");
    assert!(!tx.to_string().contains("864213"));
}

#[tokio::test]
async fn pin_less_requests_only_from_points_without_pin_entry() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("MB000001");
    let no_pin = |mut m: Message, entry: &str| {
        m.remove(52);
        m.with(22, entry)
    };
    // F22 "012": manual PAN entry, no PIN entry capability (a channel): inquiry and transfer
    // are processed without a PIN.
    let mut inquiry = no_pin(t.inquiry(ZHANG, "1234"), "012");
    let resp = call(&mut c, &t, &mut inquiry).await;
    assert_eq!(code(&resp), "00");
    assert!(resp.has(54));
    let mut transfer = no_pin(t.transfer(ZHANG, "1234", LI, 1_000), "012");
    assert_eq!(code(&call(&mut c, &t, &mut transfer).await), "00");
    assert_eq!(sim.available(LI).await, 100_000_000 + 1_000);
    // A withdrawal needs the cardholder's PIN: 55, nothing moves, no wrong-PIN counted.
    let mut withdrawal = no_pin(t.withdrawal(ZHANG, "1234", 1_000), "012");
    assert_eq!(code(&call(&mut c, &t, &mut withdrawal).await), "55");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 1_000);
    assert_eq!(sim.account(ZHANG).await["pin_tries"], 0);
    // A PIN change needs the current PIN: 30.
    let mut change = t.pin_change(ZHANG, "1234", "5555");
    change.remove(52);
    change.set(22, "012");
    assert_eq!(code(&call(&mut c, &t, &mut change).await), "30");
    // A point of service that can take a PIN (F22 "..1") but sent none, or no F22: 30.
    for entry in ["021", ""] {
        let mut inquiry = t.inquiry(ZHANG, "1234");
        inquiry.remove(52);
        if entry.is_empty() {
            inquiry.remove(22);
        } else {
            inquiry.set(22, entry);
        }
        assert_eq!(code(&call(&mut c, &t, &mut inquiry).await), "30");
    }
}

#[tokio::test]
async fn pin_change_reversal_restores_the_old_pin_once() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00013");
    let mut change = t.pin_change(WANG, "1234", "2468");
    assert_eq!(code(&call(&mut c, &t, &mut change).await), "00");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(WANG, "2468")).await),
        "00"
    );

    let mut rev = t.reversal_of(&change);
    assert_eq!(code(&call(&mut c, &t, &mut rev).await), "00");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(WANG, "1234")).await),
        "00",
        "the old PIN is back"
    );
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(WANG, "2468")).await),
        "55"
    );
    // Repeats change nothing: the old PIN stays.
    let mut repeat = rev.clone();
    repeat.mti = "0401".into();
    assert_eq!(code(&call(&mut c, &t, &mut repeat).await), "00");
    let mut again = t.reversal_of(&change);
    assert_eq!(code(&call(&mut c, &t, &mut again).await), "00");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(WANG, "1234")).await),
        "00"
    );

    // A change that was followed by another one is not undone: the later PIN stands.
    let mut first = t.pin_change(WANG, "1234", "1357");
    assert_eq!(code(&call(&mut c, &t, &mut first).await), "00");
    let mut second = t.pin_change(WANG, "1357", "9753");
    assert_eq!(code(&call(&mut c, &t, &mut second).await), "00");
    let mut late = t.reversal_of(&first);
    assert_eq!(code(&call(&mut c, &t, &mut late).await), "00");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(WANG, "9753")).await),
        "00"
    );

    let tx = sim.transactions().await;
    let kinds: Vec<&str> = tx["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["pin_change", "reversal", "pin_change", "pin_change"]
    );
    assert_eq!(tx["transactions"][1]["original"]["kind"], "pin_change");
    assert_eq!(tx["summary"]["pin_changes_reversed"], 1);
    assert!(!tx.to_string().contains("2468"));
}

#[tokio::test]
async fn echo_test_is_answered() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00008");
    let req = t.echo();
    let bytes = c.spec().encode(&req).unwrap();
    let resp = c.call(&bytes).await.unwrap();
    assert_eq!(resp.mti, "0810");
    assert_eq!(code(&resp), "00");
    assert_eq!(resp.text(11), req.text(11));
    // With a MAC, the answer carries one too.
    let mut sealed = t.echo();
    let resp = call(&mut c, &t, &mut sealed).await;
    assert_eq!(code(&resp), "00");
}

#[tokio::test]
async fn unsupported_requests_get_12_and_responses_get_nothing() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00014");
    let mut auth = t.inquiry(ZHANG, "1234");
    auth.mti = "0100".into();
    let resp = call(&mut c, &t, &mut auth).await;
    assert_eq!((resp.mti.as_str(), code(&resp)), ("0110", "12"));
    // A response MTI is not answered; the next request still is.
    let mut stray = t.inquiry(ZHANG, "1234");
    stray.mti = "0210".into();
    c.send(&t.seal(&mut stray).unwrap()).await.unwrap();
    let mut next = t.inquiry(ZHANG, "1234");
    let resp = call(&mut c, &t, &mut next).await;
    assert_eq!(resp.text(11), next.text(11));
    assert_eq!(code(&resp), "00");
}

#[tokio::test]
async fn pipelined_requests_on_one_connection_all_get_answers() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00009");
    let mut sent = HashSet::new();
    let mut burst = Vec::new();
    for i in 0..200u64 {
        let pan = format!("62220202990000000{:02}", i % 100);
        let mut req = if i.is_multiple_of(2) {
            t.withdrawal(&pan, "1234", 100)
        } else {
            t.inquiry(&pan, "1234")
        };
        sent.insert(req.text(11).unwrap().to_owned());
        burst.extend(wire::framer().frame(&t.seal(&mut req).unwrap()).unwrap());
    }
    c.send_raw(&burst).await.unwrap();
    let mut got = HashSet::new();
    for _ in 0..200 {
        let resp = recv(&mut c, &t).await;
        assert_eq!(code(&resp), "00");
        got.insert(resp.text(11).unwrap().to_owned());
    }
    assert_eq!(got, sent);
    let tx = sim.transactions().await;
    assert_eq!(tx["summary"]["withdrawals"]["count"], 100);
    let (_, accounts) = sim.get("/state/accounts").await;
    assert_eq!(
        accounts["totals"]["available"].as_i64().unwrap(),
        100 * 100_000_000 + 2 * 100_000_000 + 50_000_000 + 2 * 10_000 - 100 * 100
    );
}

#[tokio::test]
async fn short_connection_gets_its_answer_after_half_close() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00010");
    let mut req = t.inquiry(ZHANG, "1234");
    c.send(&t.seal(&mut req).unwrap()).await.unwrap();
    c.shutdown_write().await.unwrap();
    assert_eq!(code(&recv(&mut c, &t).await), "00");
    let end = tokio::time::timeout(Duration::from_secs(5), c.recv_payload())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none(), "the host closes after answering");
}

#[tokio::test]
async fn malformed_input_closes_the_connection_and_the_host_lives_on() {
    let sim = Sim::start("");
    let t = sim.terminal("ATM00011");
    for garbage in [
        &b"\x00\x05hello"[..],
        &b"\xff\xff"[..],
        &b"\x00\x0b\x60\x00\x01\x00\x00\x60\x31\x00\x00\x00\x00"[..],
    ] {
        let mut c = sim.client().await;
        c.send_raw(garbage).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), c.recv_payload())
            .await
            .expect("closed within 5 s");
        assert!(matches!(r, Ok(None) | Err(_)), "{r:?}");
    }
    let mut c = sim.client().await;
    let mut t = t;
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(ZHANG, "1234")).await),
        "00"
    );
}

#[tokio::test]
async fn responses_verify_with_the_shared_mac_rule() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00012");
    let mut req = t.inquiry(ZHANG, "1234");
    c.send(&t.seal(&mut req).unwrap()).await.unwrap();
    let payload = c.recv_payload().await.unwrap().unwrap();
    // MAC = X9.19 under the ZAK over mac_input(payload), in the last 8 bytes (F64).
    let mac = keys().mac.compute(wire::mac_input(&payload)).unwrap();
    assert_eq!(&payload[payload.len() - 8..], &mac);
    let (_, check) = t.open(&payload).unwrap();
    assert_eq!(check, MacCheck::Valid);
}

#[tokio::test]
async fn journal_file_records_applied_transactions() {
    let sim = Sim::start("journal = \"journal.jsonl\"");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00013");
    let mut w = t.withdrawal(ZHANG, "1234", 700);
    assert_eq!(code(&call(&mut c, &t, &mut w).await), "00");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(ZHANG, "1234")).await),
        "00"
    );
    let mut rev = t.reversal_of(&w);
    assert_eq!(code(&call(&mut c, &t, &mut rev).await), "00");
    let mut lines = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(sim.journal_path()).unwrap_or_default();
        lines = text.lines().map(str::to_owned).collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(first["kind"], "withdrawal");
    assert_eq!(first["amount"], 700);
    assert_eq!(second["kind"], "reversal");
    assert_eq!(second["original"]["stan"], w.text(11).unwrap());
    assert!(!lines.join("\n").contains(ZHANG), "PANs are masked");
}
