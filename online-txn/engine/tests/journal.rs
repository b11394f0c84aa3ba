//! The journal's suite, run against SQLite and against a fresh PostgreSQL database.

mod support;

use std::time::Duration;

use openteller_online_txn::journal::{Answer, Begin, Journal, JournalError, NewTxn, TxnState};

fn txn(stan: &str, amount: i64) -> NewTxn {
    NewTxn {
        terminal_id: "T0000001".into(),
        stan: stan.into(),
        txn_date: "1121".into(),
        mti: "0200".into(),
        processing_code: "010000".into(),
        amount_minor: amount,
        currency: "156".into(),
        pan_masked: "622202*********3445".into(),
        request_digest: format!("digest-{amount}"),
    }
}

async fn suite(j: Journal) {
    // Journal before send, idempotent on the key.
    let Begin::New(id) = j.begin(txn("000001", 30_000)).await.unwrap() else {
        panic!("new")
    };
    let Begin::Existing(again) = j.begin(txn("000001", 30_000)).await.unwrap() else {
        panic!("existing")
    };
    assert_eq!(again.id, id);
    assert_eq!(again.state, TxnState::Received);
    let Begin::Clash(_) = j.begin(txn("000001", 99_900)).await.unwrap() else {
        panic!("clash")
    };

    // The state machine refuses skips and backwards moves, and the refusal changes nothing.
    let err = j
        .transition(id, TxnState::Reversed, Answer::default())
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::BadTransition { .. }), "{err}");
    j.transition(id, TxnState::Sent, Answer::default())
        .await
        .unwrap();
    let approved = Answer {
        response_code: Some("00".into()),
        rrn: Some("000000000001".into()),
        auth_code: Some("123456".into()),
        response_json: Some("{}".into()),
    };
    j.transition(id, TxnState::Approved, approved)
        .await
        .unwrap();
    assert!(
        j.transition(id, TxnState::Sent, Answer::default())
            .await
            .is_err()
    );
    let r = j.get(id).await.unwrap();
    assert_eq!(
        (r.state, r.rrn.as_deref(), r.response_code.as_deref()),
        (TxnState::Approved, Some("000000000001"), Some("00"))
    );

    // A reversal is queued once, moves the row to IN_DOUBT, and is due at once.
    assert!(
        j.queue_reversal(id, "TERMINAL", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        !j.queue_reversal(id, "TERMINAL", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(j.get(id).await.unwrap().state, TxnState::InDoubt);
    let due = j.due_reversals(10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].journal.id, id);
    // A failed attempt schedules a retry later; then the acknowledgement ends it.
    j.reversal_attempt(due[0].id, "timeout", None, i64::MAX / 2)
        .await
        .unwrap();
    assert!(j.due_reversals(10).await.unwrap().is_empty());
    assert_eq!(
        j.reversal_of(id).await.unwrap(),
        Some(("PENDING".into(), 1))
    );
    j.reversal_attempt(due[0].id, "host answered 00", Some(true), 0)
        .await
        .unwrap();
    assert_eq!(j.reversal_of(id).await.unwrap(), Some(("DONE".into(), 2)));
    assert_eq!(j.get(id).await.unwrap().state, TxnState::Reversed);
    // Recording again after DONE changes nothing.
    j.reversal_attempt(due[0].id, "again", Some(true), 0)
        .await
        .unwrap();
    assert_eq!(j.reversal_of(id).await.unwrap(), Some(("DONE".into(), 2)));

    // Recovery: never-sent rows are declined, sent-but-unanswered ones reversed.
    let Begin::New(received) = j.begin(txn("000002", 10_000)).await.unwrap() else {
        panic!()
    };
    let Begin::New(sent) = j.begin(txn("000003", 20_000)).await.unwrap() else {
        panic!()
    };
    j.transition(sent, TxnState::Sent, Answer::default())
        .await
        .unwrap();
    assert_eq!(j.recover(Duration::from_secs(60)).await.unwrap(), (1, 1));
    assert_eq!(j.get(received).await.unwrap().state, TxnState::Declined);
    assert_eq!(j.get(sent).await.unwrap().state, TxnState::InDoubt);
    assert_eq!(
        j.reversal_of(sent).await.unwrap().map(|r| r.0),
        Some("PENDING".into())
    );

    // A timeout's answer is stored in the same commit as its reversal, so the reversal worker
    // can never close the row before the answer is on it.
    let Begin::New(timed_out) = j.begin(txn("000004", 40_000)).await.unwrap() else {
        panic!()
    };
    j.transition(timed_out, TxnState::Sent, Answer::default())
        .await
        .unwrap();
    let told = Answer {
        response_code: Some("98".into()),
        response_json: Some("{\"39\":\"98\"}".into()),
        ..Answer::default()
    };
    assert!(
        j.queue_reversal_answered(timed_out, "TIMEOUT", Duration::from_secs(60), told)
            .await
            .unwrap()
    );
    let r = j.get(timed_out).await.unwrap();
    assert_eq!(
        (r.state, r.response_code.as_deref()),
        (TxnState::InDoubt, Some("98"))
    );
    assert_eq!(
        j.reversal_of(timed_out).await.unwrap().map(|r| r.0),
        Some("PENDING".into())
    );

    // A partial reversal keeps the amount that stands and the amount it gives back; a full
    // one gives back the row's amount; a second queueing changes neither.
    let full = j.reversal_amounts(timed_out).await.unwrap().unwrap();
    assert_eq!(
        (
            full.reason.as_str(),
            full.replacement_minor,
            full.reversed_minor
        ),
        ("TIMEOUT", None, 40_000)
    );
    let Begin::New(dispensed) = j.begin_sent(txn("000005", 50_000), "host").await.unwrap() else {
        panic!()
    };
    j.transition(dispensed, TxnState::Approved, Answer::default())
        .await
        .unwrap();
    assert!(
        j.queue_partial_reversal(dispensed, "TERMINAL", Duration::from_secs(60), 20_000)
            .await
            .unwrap()
    );
    assert!(
        !j.queue_reversal(dispensed, "TERMINAL", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let partial = j.reversal_amounts(dispensed).await.unwrap().unwrap();
    assert_eq!(
        (partial.replacement_minor, partial.reversed_minor),
        (Some(20_000), 30_000)
    );
    let due = j.due_reversals(100).await.unwrap();
    let mine = due.iter().find(|r| r.journal.id == dispensed).unwrap();
    assert_eq!(mine.replacement_minor, Some(20_000));
    assert!(
        due.iter()
            .filter(|r| r.journal.id != dispensed)
            .all(|r| r.replacement_minor.is_none())
    );
    assert_eq!(j.reversal_amounts(received).await.unwrap(), None);

    // Group commit: many concurrent writers, every one committed.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let j = j.clone();
            tokio::spawn(async move { j.begin(txn(&format!("1{i:05}"), 100 + i)).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap().unwrap(), Begin::New(_)));
    }
    assert_eq!(j.in_state(TxnState::Received).await.unwrap().len(), 200);
}

#[tokio::test]
async fn journal_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    suite(Journal::open(&url).await.unwrap()).await;
    // Reopening runs no migration twice and keeps the rows.
    let j = Journal::open(&url).await.unwrap();
    assert_eq!(j.in_state(TxnState::Reversed).await.unwrap().len(), 1);
}

#[tokio::test]
async fn journal_on_postgres() {
    let db = support::FreshPostgres::create("ot_journal").await;
    suite(Journal::open(&db.url).await.unwrap()).await;
    db.drop_db().await;
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    assert!(matches!(
        Journal::open("mysql://x").await,
        Err(JournalError::UnsupportedUrl(_))
    ));
}
