//! Fault injection and the control API of the real `host-sim` binary.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn delayed_response_is_applied_before_it_is_sent() {
    let sim = Sim::start("");
    let (status, f) = sim.post("/faults", r#"{"delay_ms": 1500}"#).await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["delay_ms"], 1500);
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00101");
    let mut req = t.withdrawal(ZHANG, "1234", 10_000);
    let started = Instant::now();
    c.send(&t.seal(&mut req).unwrap()).await.unwrap();
    // Applied at once, answered later: poll the books until the debit shows.
    let mut applied = false;
    for _ in 0..100 {
        if sim.available(ZHANG).await == 100_000_000 - 10_000 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        applied,
        "the withdrawal is applied before the delayed answer"
    );
    let resp = recv(&mut c, &t).await;
    assert_eq!(code(&resp), "00");
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn a_delayed_answer_does_not_hold_up_later_ones_after_the_delay_is_cleared() {
    let sim = Sim::start("");
    sim.post("/faults", r#"{"delay_ms": 3000}"#).await;
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00102");
    let mut slow = t.inquiry(ZHANG, "1234");
    c.send(&t.seal(&mut slow).unwrap()).await.unwrap();
    // Make sure the slow one was processed with the delay before clearing it.
    for _ in 0..100 {
        let tx = sim.transactions().await;
        if tx["summary"]["requests"].as_u64() == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.delete("/faults").await;
    let mut fast = t.inquiry(ZHANG, "1234");
    c.send(&t.seal(&mut fast).unwrap()).await.unwrap();
    let first = recv(&mut c, &t).await;
    assert_eq!(
        first.text(11),
        fast.text(11),
        "answers go out as soon as they are done"
    );
    let second = recv(&mut c, &t).await;
    assert_eq!(second.text(11), slow.text(11));
}

#[tokio::test]
async fn dropped_response_is_applied_and_can_be_reversed() {
    let sim = Sim::start("");
    sim.post("/faults", r#"{"drop_rate": 1.0}"#).await;
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00103");
    let mut w = t.withdrawal(ZHANG, "1234", 25_000);
    c.send(&t.seal(&mut w).unwrap()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(500), c.recv_payload()).await;
    assert!(r.is_err(), "no answer while dropping");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 25_000);
    let tx = sim.transactions().await;
    assert_eq!(tx["summary"]["dropped"], 1);

    // The engine's move: reverse the in-doubt withdrawal once the host answers again.
    let (_, f) = sim.delete("/faults").await;
    assert_eq!(f["drop_rate"], 0.0);
    let mut rev = t.reversal_of(&w);
    assert_eq!(code(&call(&mut c, &t, &mut rev).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000);

    // Reconciliation from the summary alone.
    let tx = sim.transactions().await;
    let s = &tx["summary"];
    let (_, accounts) = sim.get("/state/accounts").await;
    let seeded = 102 * 100_000_000 + 50_000_000 + 2 * 10_000;
    assert_eq!(
        accounts["totals"]["available"].as_i64().unwrap(),
        seeded - s["withdrawals"]["amount"].as_i64().unwrap()
            + s["withdrawals_reversed"]["amount"].as_i64().unwrap()
    );
    assert_eq!(s["withdrawals_reversed"]["count"], 1);
}

#[tokio::test]
async fn injected_response_code_applies_nothing() {
    let sim = Sim::start("");
    let (status, _) = sim
        .post(
            "/faults",
            r#"{"response_code": "96", "response_rate": 1.0}"#,
        )
        .await;
    assert_eq!(status, 200);
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00104");
    let mut w = t.withdrawal(ZHANG, "1234", 10_000);
    let resp = call(&mut c, &t, &mut w).await;
    assert_eq!(code(&resp), "96");
    assert!(!resp.has(38));
    let mut rev = t.reversal_of(&w);
    assert_eq!(code(&call(&mut c, &t, &mut rev).await), "96");
    assert_eq!(sim.available(ZHANG).await, 100_000_000);
    let tx = sim.transactions().await;
    assert_eq!(tx["transactions"].as_array().unwrap().len(), 0);
    assert_eq!(tx["summary"]["injected"], 2);

    // Once cleared, the same request is processed for real (it was never remembered).
    sim.delete("/faults").await;
    assert_eq!(code(&call(&mut c, &t, &mut w).await), "00");
    assert_eq!(sim.available(ZHANG).await, 100_000_000 - 10_000);
}

#[tokio::test]
async fn post_disconnect_closes_current_connections() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00105");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(ZHANG, "1234")).await),
        "00"
    );
    let (status, v) = sim.post("/disconnect", "").await;
    assert_eq!(status, 200);
    assert_eq!(v["closed"], 1);
    let r = tokio::time::timeout(Duration::from_secs(5), c.recv_payload())
        .await
        .expect("closed within 5 s");
    assert!(matches!(r, Ok(None) | Err(_)));
    let mut c2 = sim.client().await;
    assert_eq!(
        code(&ask(&mut c2, &mut t, |t| t.inquiry(ZHANG, "1234")).await),
        "00"
    );
}

#[tokio::test]
async fn disconnect_fault_keeps_the_link_down_until_cleared() {
    let sim = Sim::start("");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00106");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(ZHANG, "1234")).await),
        "00"
    );
    sim.post("/faults", r#"{"disconnect": true}"#).await;
    let r = tokio::time::timeout(Duration::from_secs(5), c.recv_payload())
        .await
        .expect("closed within 5 s");
    assert!(matches!(r, Ok(None) | Err(_)));
    // New connections are closed at once; their requests are not processed.
    let mut c2 = sim.client().await;
    let mut w = t.withdrawal(ZHANG, "1234", 10_000);
    let _ = c2.send(&t.seal(&mut w).unwrap()).await;
    let r = tokio::time::timeout(Duration::from_secs(5), c2.recv_payload())
        .await
        .expect("closed within 5 s");
    assert!(matches!(r, Ok(None) | Err(_)));
    assert_eq!(sim.available(ZHANG).await, 100_000_000);
    sim.post("/faults", r#"{"disconnect": false}"#).await;
    let mut c3 = sim.client().await;
    assert_eq!(code(&call(&mut c3, &t, &mut w).await), "00");
}

#[tokio::test]
async fn control_api_validates_and_reports_errors() {
    let sim = Sim::start("");
    for (body, code) in [
        ("not json", "BAD_JSON"),
        (r#"{"delay": 5}"#, "BAD_JSON"),
        (r#"{"delay_ms": -5}"#, "BAD_JSON"),
        (r#"{"drop_rate": 1.5}"#, "INVALID_FAULTS"),
        (r#"{"response_rate": 0.5}"#, "INVALID_FAULTS"),
        (r#"{"response_code": "9"}"#, "INVALID_FAULTS"),
        (r#"{"delay_ms": 99999999}"#, "INVALID_FAULTS"),
    ] {
        let (status, v) = sim.post("/faults", body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["code"], code, "{body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Partial updates keep the other fields; nothing was changed by the refusals.
    let (_, f) = sim.get("/faults").await;
    assert_eq!(f["delay_ms"], 0);
    sim.post("/faults", r#"{"delay_ms": 5}"#).await;
    let (_, f) = sim
        .post(
            "/faults",
            r#"{"response_code": "91", "response_rate": 0.25}"#,
        )
        .await;
    assert_eq!(f["delay_ms"], 5);
    assert_eq!(f["response_code"], "91");
    assert_eq!(f["response_rate"], 0.25);
    let (_, f) = sim.delete("/faults").await;
    assert_eq!(f["response_code"], serde_json::Value::Null);

    let (status, v) = sim.post("/accounts/6222020200999999999/unlock", "").await;
    assert_eq!((status, v["code"].as_str()), (404, Some("UNKNOWN_ACCOUNT")));
    let (status, v) = sim.get("/state/accounts/123").await;
    assert_eq!((status, v["code"].as_str()), (404, Some("UNKNOWN_ACCOUNT")));
    let (status, v) = sim.get("/nope").await;
    assert_eq!((status, v["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, v) = sim.delete("/disconnect").await;
    assert_eq!(
        (status, v["code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED"))
    );
    let (status, v) = sim.get("/state/transactions?limit=0").await;
    assert_eq!((status, v["code"].as_str()), (400, Some("BAD_QUERY")));
    let (status, v) = sim.get("/state/transactions?since=x").await;
    assert_eq!((status, v["code"].as_str()), (400, Some("BAD_QUERY")));
    let (status, v) = sim.get("/healthz").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    assert_eq!(v["accounts"], 105);
}

#[tokio::test]
async fn state_api_masks_pans_and_pages_transactions() {
    let sim = Sim::start("");
    let (_, v) = sim.get("/state/accounts").await;
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 105);
    assert!(!v.to_string().contains(ZHANG));
    assert!(accounts.iter().all(|a| a.get("pin").is_none()));
    assert_eq!(v["totals"]["accounts"], 105);

    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00107");
    for _ in 0..5 {
        assert_eq!(
            code(&ask(&mut c, &mut t, |t| t.withdrawal(LI, "1234", 100)).await),
            "00"
        );
    }
    let (_, page) = sim.get("/state/transactions?since=1&limit=2").await;
    assert_eq!(page["transactions"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], 3);
    let (_, page) = sim.get("/state/transactions?since=3&limit=10").await;
    let seqs: Vec<u64> = page["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(page["next"], 6);
    assert_eq!(page["summary"]["responses"]["00"], 5);
}

#[tokio::test]
async fn faults_from_the_config_file_are_active_at_start() {
    let sim = Sim::start("[faults]\nresponse_code = \"91\"\nresponse_rate = 1.0\n");
    let (_, f) = sim.get("/faults").await;
    assert_eq!(f["response_code"], "91");
    let mut c = sim.client().await;
    let mut t = sim.terminal("ATM00108");
    assert_eq!(
        code(&ask(&mut c, &mut t, |t| t.inquiry(ZHANG, "1234")).await),
        "91"
    );
}
