//! End to end: a terminal (test client) → the real `online-txn` → the real `host-sim`.
//! Money invariants: approvals move balances once, retries get the first answer, and a
//! withdrawal the host applied but did not answer in time is reversed exactly once.

mod support;

use support::{
    HostSim, LI, MASTER, Proc, TMK, ZAK, ZHANG, ZPK, import_key, spawn, start_host_sim, word,
};

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use openteller_codec::{FieldValue, Message};
use openteller_host_sim::client::{HostClient, Terminal};
use openteller_host_sim::wire::MacCheck;
use openteller_online_txn::journal::{Journal, TxnState};
use serde_json::{Value, json};

struct Stack {
    dir: tempfile::TempDir,
    _host: HostSim,
    engine: Option<Proc>,
    control: String,
    host_addr: String,
    engine_addr: SocketAddr,
    http: reqwest::Client,
}

impl Stack {
    fn start(host_timeout_ms: u64) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let host = start_host_sim(dir.path());
        let (control, host_addr) = (host.control.clone(), host.addr.clone());

        let cfg = dir.path().join("online-txn.toml");
        std::fs::write(
            &cfg,
            format!(
                "[journal]\nurl = \"sqlite://{}\"\n[keys]\nfile = \"{}\"\n[terminals]\nlisten = \"127.0.0.1:0\"\n\
                 [host]\naddress = \"{host_addr}\"\ntimeout_ms = {host_timeout_ms}\n[reversal]\nmax_attempts = 50\nretry_ms = 200\nttl_s = 3600\nretryable_codes = [\"91\", \"96\"]\n",
                dir.path().join("journal.db").display(),
                dir.path().join("keys.json").display()
            ),
        )
        .unwrap();
        for (name, usage, value) in [
            ("term/T0000001/TMK", "kek", TMK),
            ("host/ZPK", "pin", ZPK),
            ("host/ZAK", "mac", ZAK),
        ] {
            import_key(&cfg, name, usage, value, &[]);
        }
        let keyfile = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(
            !keyfile.contains(TMK) && !keyfile.contains(ZPK),
            "keys are sealed at rest"
        );
        let mut stack = Stack {
            dir,
            _host: host,
            engine: None,
            control,
            host_addr,
            engine_addr: "127.0.0.1:1".parse().unwrap(),
            http: reqwest::Client::new(),
        };
        stack.start_engine();
        stack
    }

    fn start_engine(&mut self) {
        let mut cmd = Command::new(support::engine_bin());
        cmd.args(["serve", "--config"])
            .arg(self.dir.path().join("online-txn.toml"))
            .env("OPENTELLER_MASTER_KEY", MASTER);
        let (engine, line) = spawn(
            cmd,
            &self
                .dir
                .path()
                .join(format!("engine-{}.log", std::process::id())),
        );
        self.engine_addr = word(&line, "terminals=").parse().unwrap();
        self.engine = Some(engine);
    }

    fn kill_engine(&mut self) {
        self.engine = None;
    }

    fn journal_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("journal.db").display())
    }

    async fn available(&self, pan: &str) -> i64 {
        support::available(&self.http, &self.control, pan).await
    }

    async fn faults(&self, body: Value) {
        support::set_faults(&self.http, &self.control, body).await;
    }

    async fn clear_faults(&self) {
        support::clear_faults(&self.http, &self.control).await;
    }

    /// Signs terminal T0000001 on and returns a client holding its new working keys.
    async fn sign_on(&self) -> (HostClient, Terminal) {
        support::sign_on(self.engine_addr, TMK).await
    }
}

fn rc(m: &Message) -> &str {
    m.get(39).and_then(FieldValue::as_text).unwrap_or("")
}

async fn exchange(client: &mut HostClient, t: &Terminal, msg: &mut Message) -> (Message, Vec<u8>) {
    let bytes = t.seal(msg).unwrap();
    client.send(&bytes).await.unwrap();
    let payload = client.recv_payload().await.unwrap().expect("answer");
    let (answer, check) = t.open(&payload).unwrap();
    assert_eq!(
        check,
        MacCheck::Valid,
        "the engine's answer carries a MAC under the TAK"
    );
    (answer, bytes)
}

#[tokio::test]
async fn withdrawal_inquiry_retry_and_wrong_pin() {
    let stack = Stack::start(3_000);
    let (mut client, mut t) = stack.sign_on().await;
    let before = stack.available(ZHANG).await;

    let mut inquiry = t.inquiry(ZHANG, "1234");
    let (answer, _) = exchange(&mut client, &t, &mut inquiry).await;
    assert_eq!(rc(&answer), "00");
    assert!(answer.get(54).is_some(), "balance in F54");

    let mut withdrawal = t.withdrawal(ZHANG, "1234", 30_000);
    let (answer, sent) = exchange(&mut client, &t, &mut withdrawal).await;
    assert_eq!(rc(&answer), "00");
    let rrn = answer
        .get(37)
        .and_then(FieldValue::as_text)
        .unwrap()
        .to_owned();
    assert_eq!(stack.available(ZHANG).await, before - 30_000);

    // The terminal retries (its answer was lost): same answer, money moved once.
    client.send(&sent).await.unwrap();
    let (again, check) = t
        .open(&client.recv_payload().await.unwrap().unwrap())
        .unwrap();
    assert_eq!(check, MacCheck::Valid);
    assert_eq!(
        again.get(37).and_then(FieldValue::as_text),
        Some(rrn.as_str())
    );
    assert_eq!(stack.available(ZHANG).await, before - 30_000);

    let mut wrong = t.withdrawal(ZHANG, "9999", 10_000);
    let (answer, _) = exchange(&mut client, &t, &mut wrong).await;
    assert_eq!(rc(&answer), "55");
    assert_eq!(stack.available(ZHANG).await, before - 30_000);

    // A bad MAC is refused before anything reaches the host.
    let mut tampered = t.withdrawal(ZHANG, "1234", 10_000);
    let mut bytes = t.seal(&mut tampered).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    client.send(&bytes).await.unwrap();
    let (answer, _) = t
        .open(&client.recv_payload().await.unwrap().unwrap())
        .unwrap();
    assert_eq!(rc(&answer), "A0");
    assert_eq!(stack.available(ZHANG).await, before - 30_000);

    // The journal holds masked PANs only, and the states that happened.
    let journal = Journal::open(&stack.journal_url()).await.unwrap();
    let approved = journal.in_state(TxnState::Approved).await.unwrap();
    assert_eq!(approved.len(), 2);
    assert!(
        approved
            .iter()
            .all(|r| r.txn.pan_masked == "622202*********3445")
    );
    assert_eq!(journal.in_state(TxnState::Declined).await.unwrap().len(), 2);
}

#[tokio::test]
async fn host_timeout_is_reversed_exactly_once_even_across_a_restart() {
    let mut stack = Stack::start(500);
    let (mut client, mut t) = stack.sign_on().await;
    let before = stack.available(LI).await;

    // The host applies the withdrawal but answers after the engine gave up.
    stack.faults(json!({"delay_ms": 2000})).await;
    let mut withdrawal = t.withdrawal(LI, "1234", 50_000);
    let (answer, _) = exchange(&mut client, &t, &mut withdrawal).await;
    assert_eq!(rc(&answer), "98", "no answer in time");
    stack.clear_faults().await;

    // Restart the engine while the reversal may still be pending: it must resume from the
    // durable queue.
    stack.kill_engine();
    stack.start_engine();

    let journal = Journal::open(&stack.journal_url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reversed = journal.in_state(TxnState::Reversed).await.unwrap();
        if reversed.len() == 1 && stack.available(LI).await == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the in-doubt withdrawal was not reversed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = journal.in_state(TxnState::Reversed).await.unwrap()[0].id;
    let (state, _) = journal.reversal_of(id).await.unwrap().unwrap();
    assert_eq!(state, "DONE");
    // Reversed exactly once: the host's account is back to where it was and stays there.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stack.available(LI).await, before);
    let v: Value = stack
        .http
        .get(format!("{}/state/transactions", stack.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reversals = v.to_string().matches("\"reversal\"").count();
    assert!(reversals >= 1, "{v}");
    let _ = stack.host_addr.len();
}

#[tokio::test]
async fn terminal_reversal_after_a_dispense_fault() {
    let stack = Stack::start(3_000);
    let (mut client, mut t) = stack.sign_on().await;
    let before = stack.available(ZHANG).await;
    let mut withdrawal = t.withdrawal(ZHANG, "1234", 20_000);
    let (answer, _) = exchange(&mut client, &t, &mut withdrawal).await;
    assert_eq!(rc(&answer), "00");
    assert_eq!(stack.available(ZHANG).await, before - 20_000);

    // The dispenser jammed: the terminal reverses (F11 and F13 of the original).
    let mut reversal = withdrawal.clone();
    reversal.mti = "0400".into();
    reversal.remove(52);
    let (answer, _) = exchange(&mut client, &t, &mut reversal).await;
    assert_eq!(answer.mti, "0410");
    assert_eq!(rc(&answer), "00");
    let deadline = Instant::now() + Duration::from_secs(20);
    while stack.available(ZHANG).await != before {
        assert!(
            Instant::now() < deadline,
            "the terminal's reversal did not reach the host"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A repeated reversal (0401) is accepted and changes nothing more.
    reversal.mti = "0401".into();
    let (answer, _) = exchange(&mut client, &t, &mut reversal).await;
    assert_eq!(rc(&answer), "00");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.available(ZHANG).await, before);
}

/// The terminal's reversal of `original` as the terminal sends it: the original's F11 and
/// F13, no PIN block, and F95 when part of the notes was dispensed.
fn terminal_reversal(original: &Message, dispensed: Option<i64>) -> Message {
    let mut reversal = original.clone();
    reversal.mti = "0400".into();
    reversal.remove(52);
    if let Some(d) = dispensed {
        reversal.set(95, format!("{d:012}{}", "0".repeat(30)));
    }
    reversal
}

#[tokio::test]
async fn partial_reversal_gives_back_only_what_was_not_dispensed() {
    let stack = Stack::start(3_000);
    let (mut client, mut t) = stack.sign_on().await;
    let journal = Journal::open(&stack.journal_url()).await.unwrap();
    let before = stack.available(ZHANG).await;
    let mut withdrawal = t.withdrawal(ZHANG, "1234", 50_000);
    let (answer, _) = exchange(&mut client, &t, &mut withdrawal).await;
    assert_eq!(rc(&answer), "00");

    // F95 not below the original amount, or malformed: refused, nothing queued.
    for (f95, code) in [
        (format!("{:012}{}", 50_000, "0".repeat(30)), "13"),
        (format!("{:012}{}", 70_000, "0".repeat(30)), "13"),
        (format!("00000002000X{}", "0".repeat(30)), "30"),
    ] {
        let mut bad = terminal_reversal(&withdrawal, None).with(95, f95);
        let (answer, _) = exchange(&mut client, &t, &mut bad).await;
        assert_eq!(rc(&answer), code);
    }
    let row = journal
        .find(
            "T0000001",
            withdrawal.text(11).unwrap(),
            withdrawal.text(13).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, TxnState::Approved);
    assert_eq!(journal.reversal_amounts(row.id).await.unwrap(), None);

    // 200.00 of 500.00 dispensed: 300.00 go back to the account.
    let mut partial = terminal_reversal(&withdrawal, Some(20_000));
    let (answer, _) = exchange(&mut client, &t, &mut partial).await;
    assert_eq!(answer.mti, "0410");
    assert_eq!(rc(&answer), "00");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = journal.get(row.id).await.unwrap();
        if r.state == TxnState::Reversed && stack.available(ZHANG).await == before - 20_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partial reversal did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let amounts = journal.reversal_amounts(row.id).await.unwrap().unwrap();
    assert_eq!(amounts.reason, "TERMINAL");
    assert_eq!(amounts.replacement_minor, Some(20_000));
    assert_eq!(amounts.reversed_minor, 30_000);

    // A repeat with the same F95 is 00, with another one 94; neither moves money.
    partial.mti = "0401".into();
    let (answer, _) = exchange(&mut client, &t, &mut partial).await;
    assert_eq!(rc(&answer), "00");
    let mut other = terminal_reversal(&withdrawal, Some(10_000));
    other.mti = "0401".into();
    let (answer, _) = exchange(&mut client, &t, &mut other).await;
    assert_eq!(rc(&answer), "94");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.available(ZHANG).await, before - 20_000);

    // The host journaled one reversal of 300.00 with the 200.00 that stand.
    let v: Value = stack
        .http
        .get(format!("{}/state/transactions", stack.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reversals: Vec<&Value> = v["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "reversal")
        .collect();
    assert_eq!(reversals.len(), 1, "{v}");
    assert_eq!(reversals[0]["amount"], 30_000);
    assert_eq!(reversals[0]["replacement"], 20_000);
}

/// Waits until `ask` is true (the reversal worker runs on its own).
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut ask: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ask().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pin_change_through_the_engine_and_its_reversal() {
    let stack = Stack::start(3_000);
    let (mut client, mut t) = stack.sign_on().await;

    // F52 (current PIN) and F62 (new PIN) under the TPK, MAC under the TAK: the engine
    // translates both to the ZPK.
    let mut change = t.pin_change(ZHANG, "1234", "4321");
    assert_eq!(
        change
            .get(62)
            .and_then(FieldValue::as_bytes)
            .map(<[u8]>::len),
        Some(8)
    );
    let (answer, _) = exchange(&mut client, &t, &mut change).await;
    assert_eq!(rc(&answer), "00");
    let mut inquiry = t.inquiry(ZHANG, "4321");
    assert_eq!(rc(&exchange(&mut client, &t, &mut inquiry).await.0), "00");
    let mut old = t.inquiry(ZHANG, "1234");
    assert_eq!(rc(&exchange(&mut client, &t, &mut old).await.0), "55");

    // A PIN change without its new PIN block is a format error and reaches nobody.
    let mut missing = t.pin_change(ZHANG, "4321", "1111");
    missing.remove(62);
    assert_eq!(rc(&exchange(&mut client, &t, &mut missing).await.0), "30");

    // The terminal reverses the change (say the card was retained before the receipt): the
    // host restores the old PIN, once.
    let mut reversal = terminal_reversal(&change, None);
    reversal.remove(62);
    let (answer, _) = exchange(&mut client, &t, &mut reversal).await;
    assert_eq!(rc(&answer), "00");
    let journal = Journal::open(&stack.journal_url()).await.unwrap();
    let row = journal
        .find(
            "T0000001",
            change.text(11).unwrap(),
            change.text(13).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    eventually("the PIN change reversal did not complete", || {
        let journal = journal.clone();
        async move { journal.get(row.id).await.unwrap().state == TxnState::Reversed }
    })
    .await;
    let mut back = t.inquiry(ZHANG, "1234");
    assert_eq!(rc(&exchange(&mut client, &t, &mut back).await.0), "00");
    let mut gone = t.inquiry(ZHANG, "4321");
    assert_eq!(rc(&exchange(&mut client, &t, &mut gone).await.0), "55");
}

#[tokio::test]
async fn transfer_through_the_engine_and_its_reversal() {
    let stack = Stack::start(3_000);
    let (mut client, mut t) = stack.sign_on().await;
    let (zhang, li) = (stack.available(ZHANG).await, stack.available(LI).await);
    let mut transfer = t.transfer(ZHANG, "1234", LI, 12_345);
    let (answer, _) = exchange(&mut client, &t, &mut transfer).await;
    assert_eq!(rc(&answer), "00");
    assert_eq!(stack.available(ZHANG).await, zhang - 12_345);
    assert_eq!(stack.available(LI).await, li + 12_345);

    let mut reversal = terminal_reversal(&transfer, None);
    let (answer, _) = exchange(&mut client, &t, &mut reversal).await;
    assert_eq!(rc(&answer), "00");
    eventually("the transfer was not reversed", || async {
        stack.available(ZHANG).await == zhang && stack.available(LI).await == li
    })
    .await;
}

#[tokio::test]
async fn garbage_and_mutated_messages_never_bring_the_engine_down() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stack = Stack::start(3_000);
    let (mut client, mut t) = stack.sign_on().await;
    let mut valid = t.withdrawal(ZHANG, "1234", 100);
    let good = t.seal(&mut valid).unwrap();
    let mut rng = StdRng::seed_from_u64(0x0007_e11e);
    for i in 0..300 {
        let mut bytes = good.clone();
        match i % 4 {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
            }
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            2 => bytes.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
            _ => {
                bytes = (0..rng.random_range(0..300))
                    .map(|_| rng.random::<u8>())
                    .collect()
            }
        }
        // Raw frames, sometimes with a lying length prefix, each on its own connection.
        let mut s = tokio::net::TcpStream::connect(stack.engine_addr)
            .await
            .unwrap();
        let len = if i % 7 == 0 {
            u16::MAX
        } else {
            bytes.len() as u16
        };
        let _ = s.write_all(&len.to_be_bytes()).await;
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    }
    // Still alive, still correct: a real withdrawal goes through and nothing else moved money.
    let before = stack.available(ZHANG).await;
    let mut withdrawal = t.withdrawal(ZHANG, "1234", 10_000);
    let (answer, _) = exchange(&mut client, &t, &mut withdrawal).await;
    assert_eq!(rc(&answer), "00");
    assert_eq!(stack.available(ZHANG).await, before - 10_000);
    let alive = stack
        .engine
        .as_mut()
        .map(|p| p.0.try_wait().unwrap().is_none());
    assert_eq!(alive, Some(true), "the engine must not exit");
    // A panic in a per-request task would not end the process: the log must have none.
    for entry in std::fs::read_dir(stack.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!log.contains("panicked"), "{}: {log}", path.display());
        }
    }
}
