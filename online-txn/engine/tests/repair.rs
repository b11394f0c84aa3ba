//! In-doubt repair plans (seed 002), run against SQLite and against a fresh PostgreSQL
//! database: plan validation, manual runs re-queueing failed reversals, max retries, invalid
//! plans, operator-confirmed reversals, and the cron scheduler.

mod support;

use std::time::{Duration, Instant};

use openteller_online_txn::journal::{Answer, Begin, Journal, NewTxn, TxnState};
use openteller_online_txn::repair::{
    AttemptFilter, PageRequest, PlanInput, Repair, RepairError, RunOptions,
};
use tokio_util::sync::CancellationToken;

fn txn(stan: &str) -> NewTxn {
    NewTxn {
        terminal_id: "T0000001".into(),
        stan: stan.into(),
        txn_date: "1121".into(),
        mti: "0200".into(),
        processing_code: "010000".into(),
        amount_minor: 50_000,
        currency: "156".into(),
        pan_masked: "622202*********3445".into(),
        request_digest: format!("digest-{stan}"),
    }
}

/// A withdrawal sent without an answer, whose reversal the worker gave up: needs repair.
async fn failed_reversal(j: &Journal, stan: &str) -> i64 {
    let Begin::New(id) = j.begin(txn(stan)).await.unwrap() else {
        panic!("new row")
    };
    j.transition(id, TxnState::Sent, Answer::default())
        .await
        .unwrap();
    assert!(
        j.queue_reversal(id, "TIMEOUT", Duration::from_secs(60))
            .await
            .unwrap()
    );
    fail_again(j, id).await;
    id
}

/// The worker's attempt at the (re-queued) reversal of `id` fails for good.
async fn fail_again(j: &Journal, id: i64) {
    let due = j.due_reversals(1_000).await.unwrap();
    let r = due
        .iter()
        .find(|r| r.journal.id == id)
        .expect("the reversal is due");
    j.reversal_attempt(r.id, "host answered 96", Some(false), 0)
        .await
        .unwrap();
    assert_eq!(j.reversal_of(id).await.unwrap().unwrap().0, "FAILED");
}

fn plan(group: &str, fix: &str) -> PlanInput {
    PlanInput {
        system_group: Some(group.into()),
        fix_code: Some(fix.into()),
        ..PlanInput::default()
    }
}

fn field(e: &RepairError) -> &'static str {
    match e {
        RepairError::InvalidArgument { field, .. } => field,
        other => panic!("expected INVALID_ARGUMENT, got {} {other}", other.code()),
    }
}

async fn attempts(r: &Repair, plan_id: i64) -> Vec<(String, String, i64)> {
    let page = r
        .attempts(
            AttemptFilter {
                plan_id: Some(plan_id),
                journal_id: None,
            },
            PageRequest::new(None, Some(100)).unwrap(),
        )
        .await
        .unwrap();
    page.rows
        .into_iter()
        .rev()
        .map(|a| (a.outcome, a.trigger, a.journal_id))
        .collect()
}

async fn validation(r: &Repair) {
    let long = "X".repeat(33);
    let cases: Vec<(PlanInput, &str)> = vec![
        (
            PlanInput {
                system_group: None,
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "systemGroup",
        ),
        (
            PlanInput {
                fix_code: None,
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "fixCode",
        ),
        (plan("host", "REVERSAL_RETRY"), "systemGroup"),
        (plan("", "REVERSAL_RETRY"), "systemGroup"),
        (plan(&long, "REVERSAL_RETRY"), "systemGroup"),
        (plan("HOST", "interRechargeFixServiceImpl"), "fixCode"),
        (plan("HOST", "NO_SUCH_FIX"), "fixCode"),
        (
            PlanInput {
                max_retries: Some(-1),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "maxRetries",
        ),
        (
            PlanInput {
                max_retries: Some(100),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "maxRetries",
        ),
        (
            PlanInput {
                cron: Some("every ten minutes".into()),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "cron",
        ),
        (
            PlanInput {
                cron: Some("0 9 * * 1-5".into()),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "cron",
        ),
        (
            PlanInput {
                cron: Some("0 0 0 1 1 ? 2001".into()),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "cron",
        ),
        (
            PlanInput {
                mode: Some("AUTO".into()),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "mode",
        ),
        (
            PlanInput {
                importance: Some("HUGE".into()),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "importance",
        ),
        (
            PlanInput {
                description: Some("说".repeat(201)),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "description",
        ),
        (
            PlanInput {
                description: Some("two\nlines".into()),
                ..plan("HOST", "REVERSAL_RETRY")
            },
            "description",
        ),
        // Operator-confirmed outcomes never run by themselves.
        (plan("HOST", "MARK_REVERSED_MANUALLY"), "mode"),
    ];
    for (input, expected) in cases {
        let e = r.create_plan(input.clone()).await.unwrap_err();
        assert_eq!(field(&e), expected, "{input:?}: {e}");
        assert_eq!(e.code(), "INVALID_ARGUMENT");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        r.plans(PageRequest::default()).await.unwrap().total_count,
        0,
        "nothing stored"
    );
    // Unknown JSON fields are refused when the body is parsed.
    assert!(serde_json::from_str::<PlanInput>(r#"{"systemGroup":"HOST","retries":3}"#).is_err());
    // Seed 002's defaults, and a 200-character Chinese description is fine.
    let p = r
        .create_plan(PlanInput {
            description: Some("说".repeat(200)),
            ..plan("DEFAULTS", "REVERSAL_RETRY")
        })
        .await
        .unwrap();
    assert_eq!(
        (
            p.max_retries,
            p.cron.as_str(),
            p.mode.as_str(),
            p.valid,
            p.importance.as_str()
        ),
        (0, "0 0/2 * * * ?", "AUTOMATIC", true, "CRITICAL")
    );
    assert!(p.next_run_ms.is_some());
    r.delete_plan(p.id).await.unwrap();
    assert_eq!(r.plan(p.id).await.unwrap_err().code(), "NOT_FOUND");
    assert_eq!(r.delete_plan(p.id).await.unwrap_err().code(), "NOT_FOUND");
}

async fn suite(j: Journal) {
    let r = Repair::new(j.clone(), Duration::from_secs(600), None);
    validation(&r).await;

    // A row sent to another back end is never a repair item of the `host` group: its own
    // worker reverses it, and a REVERSAL_RETRY to `host` would "succeed" with 25 while the
    // real back end kept the money.
    let Begin::New(elsewhere) = j.begin(txn("900001")).await.unwrap() else {
        panic!("new row")
    };
    j.set_backend(elsewhere, "core-json").await.unwrap();
    j.transition(elsewhere, TxnState::Sent, Answer::default())
        .await
        .unwrap();
    j.transition(elsewhere, TxnState::InDoubt, Answer::default())
        .await
        .unwrap();
    let items = r
        .items(PageRequest::new(None, None).unwrap())
        .await
        .unwrap();
    assert!(
        items.rows.iter().all(|i| i.journal.id != elsewhere),
        "{:?}",
        items.rows
    );

    // A manual REVERSAL_RETRY plan allowing one retry.
    let retry = r
        .create_plan(PlanInput {
            max_retries: Some(1),
            mode: Some("MANUAL".into()),
            importance: Some("HIGH".into()),
            description: Some("re-send reversals the worker gave up".into()),
            ..plan("HOST", "REVERSAL_RETRY")
        })
        .await
        .unwrap();
    let dup = r
        .create_plan(plan("HOST", "REVERSAL_RETRY"))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), "CONFLICT");
    assert_eq!(
        r.plans(PageRequest::default()).await.unwrap().total_count,
        1
    );
    // A bad update changes nothing.
    let e = r
        .update_plan(
            retry.id,
            PlanInput {
                max_retries: Some(7),
                cron: Some("61 * * * * ?".into()),
                ..PlanInput::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(field(&e), "cron");
    assert_eq!(r.plan(retry.id).await.unwrap(), retry);

    // A failed reversal is an item; the manual run re-queues it.
    let a = failed_reversal(&j, "000001").await;
    let items = r.items(PageRequest::default()).await.unwrap();
    assert_eq!(items.total_count, 1);
    assert_eq!(items.rows[0].kind, "REVERSAL_FAILED");
    assert_eq!(items.rows[0].journal.id, a);
    assert_eq!(items.rows[0].journal.pan_masked, "622202*********3445");
    let run = r.run_plan(retry.id, RunOptions::default()).await.unwrap();
    assert_eq!((run.candidates, run.succeeded, run.failed), (1, 1, 0));
    assert_eq!(
        j.reversal_of(a).await.unwrap(),
        Some(("PENDING".into(), 0)),
        "re-queued with its attempts reset"
    );
    assert_eq!(j.get(a).await.unwrap().state, TxnState::InDoubt);
    assert_eq!(
        r.items(PageRequest::default()).await.unwrap().total_count,
        0
    );
    assert!(r.plan(retry.id).await.unwrap().last_run_ms.is_some());

    // It fails again: one retry is allowed, then the item is skipped (recorded once).
    fail_again(&j, a).await;
    let run = r.run_plan(retry.id, RunOptions::default()).await.unwrap();
    assert_eq!(run.succeeded, 1);
    fail_again(&j, a).await;
    let run = r.run_plan(retry.id, RunOptions::default()).await.unwrap();
    assert_eq!((run.succeeded, run.skipped), (0, 1));
    assert!(run.attempts[0].detail.contains("exhausted"), "{run:?}");
    assert_eq!(j.reversal_of(a).await.unwrap().unwrap().0, "FAILED");
    let run = r.run_plan(retry.id, RunOptions::default()).await.unwrap();
    assert_eq!((run.skipped, run.attempts.len()), (1, 0));
    assert_eq!(
        attempts(&r, retry.id).await,
        vec![
            ("SUCCESS".into(), "MANUAL".into(), a),
            ("SUCCESS".into(), "MANUAL".into(), a),
            ("SKIPPED".into(), "MANUAL".into(), a),
        ]
    );

    // An invalid (失效) plan refuses to run and records nothing.
    let invalid = r
        .update_plan(
            retry.id,
            PlanInput {
                valid: Some(false),
                ..PlanInput::default()
            },
        )
        .await
        .unwrap();
    assert!(!invalid.valid);
    let e = r
        .run_plan(retry.id, RunOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "FAILED_PRECONDITION");
    assert_eq!(attempts(&r, retry.id).await.len(), 3);
    r.update_plan(
        retry.id,
        PlanInput {
            valid: Some(true),
            ..PlanInput::default()
        },
    )
    .await
    .unwrap();

    // A row in doubt that never got a reversal gets one.
    let Begin::New(b) = j.begin(txn("000002")).await.unwrap() else {
        panic!()
    };
    j.transition(b, TxnState::Sent, Answer::default())
        .await
        .unwrap();
    j.transition(b, TxnState::InDoubt, Answer::default())
        .await
        .unwrap();
    let items = r.items(PageRequest::default()).await.unwrap();
    assert_eq!(
        items
            .rows
            .iter()
            .map(|i| (i.journal.id, i.kind.as_str()))
            .collect::<Vec<_>>(),
        vec![(a, "REVERSAL_FAILED"), (b, "NO_REVERSAL")]
    );
    let run = r.run_plan(retry.id, RunOptions::default()).await.unwrap();
    assert_eq!((run.candidates, run.succeeded, run.skipped), (2, 1, 1));
    assert_eq!(j.reversal_of(b).await.unwrap(), Some(("PENDING".into(), 0)));

    // A plan for another system group finds nothing here.
    let other = r
        .create_plan(PlanInput {
            mode: Some("MANUAL".into()),
            ..plan("PBAP", "REVERSAL_RETRY")
        })
        .await
        .unwrap();
    let run = r.run_plan(other.id, RunOptions::default()).await.unwrap();
    assert_eq!(run.candidates, 0);
    assert!(run.note.unwrap().contains("PBAP"));

    // Operator-confirmed: only named rows, with a note, never a pending reversal.
    let manual = r
        .create_plan(PlanInput {
            mode: Some("MANUAL".into()),
            ..plan("HOST", "MARK_REVERSED_MANUALLY")
        })
        .await
        .unwrap();
    let e = r
        .run_plan(manual.id, RunOptions::default())
        .await
        .unwrap_err();
    assert_eq!(field(&e), "journalIds");
    let e = r
        .run_plan(
            manual.id,
            RunOptions {
                journal_ids: vec![a],
                note: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(field(&e), "note");
    let e = r
        .run_plan(
            manual.id,
            RunOptions {
                journal_ids: vec![a, 999_999],
                note: Some("x".into()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "NOT_FOUND");
    assert_eq!(j.get(a).await.unwrap().state, TxnState::InDoubt);
    let run = r
        .run_plan(
            manual.id,
            RunOptions {
                journal_ids: vec![a, b],
                note: Some("host ops (Wang) confirmed: not debited, ticket 42".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!((run.succeeded, run.skipped), (1, 1));
    assert_eq!(j.get(a).await.unwrap().state, TxnState::Reversed);
    assert_eq!(j.reversal_of(a).await.unwrap().unwrap().0, "DONE");
    assert_eq!(
        j.get(b).await.unwrap().state,
        TxnState::InDoubt,
        "its reversal is pending"
    );
    let view = r.journal_entry(a).await.unwrap();
    assert_eq!(view.state, "REVERSED");
    assert!(
        view.reversal
            .unwrap()
            .last_result
            .unwrap()
            .contains("ticket 42")
    );
    assert_eq!(
        r.journal_entry(999_999).await.unwrap_err().code(),
        "NOT_FOUND"
    );

    // An automatic plan on a cron every second runs by itself.
    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(std::sync::Arc::clone(&r).run_scheduler(shutdown.clone()));
    let c = failed_reversal(&j, "000003").await;
    r.update_plan(
        retry.id,
        PlanInput {
            mode: Some("AUTOMATIC".into()),
            cron: Some("* * * * * *".into()),
            max_retries: Some(5),
            ..PlanInput::default()
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = attempts(&r, retry.id).await;
        // The fix and its attempt row are written one after the other: wait for both.
        if j.reversal_of(c).await.unwrap().unwrap().0 == "PENDING"
            && log.contains(&("SUCCESS".into(), "SCHEDULE".into(), c))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the automatic plan did not run: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    scheduler.await.unwrap();

    // Deleting a plan keeps its attempts (they carry its group and fix code).
    let before = attempts(&r, retry.id).await.len();
    r.delete_plan(retry.id).await.unwrap();
    assert_eq!(attempts(&r, retry.id).await.len(), before);
}

#[tokio::test]
async fn repair_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    suite(Journal::open(&url).await.unwrap()).await;
    // Reopening runs no migration twice and keeps the plans.
    let j = Journal::open(&url).await.unwrap();
    let r = Repair::new(j, Duration::from_secs(60), None);
    assert_eq!(
        r.plans(PageRequest::default()).await.unwrap().total_count,
        2
    );
}

#[tokio::test]
async fn repair_on_postgres() {
    let db = support::FreshPostgres::create("ot_repair").await;
    suite(Journal::open(&db.url).await.unwrap()).await;
    db.drop_db().await;
}

/// Rows of back ends other than `host` are repair items of their own system group once their
/// worker gave up (its `FAILED` mark); `REVERSAL_RETRY` hands them back to that worker,
/// `MARK_REVERSED_MANUALLY` closes them, and `HOST` plans never touch them.
async fn other_back_ends(j: Journal) {
    use openteller_online_txn::repair::group_of;
    assert_eq!(group_of("host"), "HOST");
    assert_eq!(group_of("core-json.v2"), "CORE_JSON_V2");
    let r = Repair::with_backends(
        j.clone(),
        Duration::from_secs(600),
        None,
        &["teller-host".to_owned()],
    );
    let in_doubt = |stan: &'static str| {
        let j = j.clone();
        async move {
            let Begin::New(id) = j.begin_sent(txn(stan), "teller-host").await.unwrap() else {
                panic!("new row")
            };
            j.transition(id, TxnState::InDoubt, Answer::default())
                .await
                .unwrap();
            id
        }
    };
    let a = in_doubt("800001").await;
    let b = in_doubt("800002").await;
    // With its worker: not an item.
    assert_eq!(
        r.items(PageRequest::default()).await.unwrap().total_count,
        0
    );
    j.mark_backend_reversal_failed(a, "teller-host answered 96", 20)
        .await
        .unwrap();
    j.mark_backend_reversal_failed(b, "teller-host answered 05", 1)
        .await
        .unwrap();
    // A second mark changes nothing.
    j.mark_backend_reversal_failed(a, "again", 99)
        .await
        .unwrap();
    assert_eq!(j.reversal_of(a).await.unwrap(), Some(("FAILED".into(), 20)));
    // The host's reversal worker never sees these marks.
    assert!(
        j.due_reversals(100)
            .await
            .unwrap()
            .iter()
            .all(|d| d.journal.id != a && d.journal.id != b)
    );
    let items = r.items(PageRequest::default()).await.unwrap();
    assert_eq!(items.total_count, 2);
    assert!(items.rows.iter().all(|i| i.system_group == "TELLER_HOST"
        && i.kind == "REVERSAL_FAILED"
        && i.journal.backend == "teller-host"));

    // A HOST plan finds nothing of theirs, and refuses a named row of another group.
    let host = r.create_plan(plan("HOST", "REVERSAL_RETRY")).await.unwrap();
    let run = r.run_plan(host.id, RunOptions::default()).await.unwrap();
    assert_eq!(run.candidates, 0);
    let run = r
        .run_plan(
            host.id,
            RunOptions {
                journal_ids: vec![a],
                note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((run.succeeded, run.skipped), (0, 1));
    assert!(run.attempts[0].detail.contains("TELLER_HOST"), "{run:?}");
    assert_eq!(j.reversal_of(a).await.unwrap(), Some(("FAILED".into(), 20)));

    // The back end's own plan: REVERSAL_RETRY removes the mark of `a` (its worker takes it
    // again: IN_DOUBT, no queue row)...
    let retry = r
        .create_plan(PlanInput {
            mode: Some("MANUAL".into()),
            ..plan("TELLER_HOST", "REVERSAL_RETRY")
        })
        .await
        .unwrap();
    let run = r
        .run_plan(
            retry.id,
            RunOptions {
                journal_ids: vec![a],
                note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(run.succeeded, 1, "{run:?}");
    assert!(run.attempts[0].detail.contains("handed back"), "{run:?}");
    assert_eq!(j.reversal_of(a).await.unwrap(), None);
    assert_eq!(j.get(a).await.unwrap().state, TxnState::InDoubt);
    // ... and an operator closes `b`.
    let manual = r
        .create_plan(PlanInput {
            mode: Some("MANUAL".into()),
            ..plan("TELLER_HOST", "MARK_REVERSED_MANUALLY")
        })
        .await
        .unwrap();
    let run = r
        .run_plan(
            manual.id,
            RunOptions {
                journal_ids: vec![b],
                note: Some("teller host ops: not applied, ticket 12".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(run.succeeded, 1, "{run:?}");
    assert_eq!(j.get(b).await.unwrap().state, TxnState::Reversed);
    assert_eq!(j.reversal_of(b).await.unwrap().unwrap().0, "DONE");
    assert_eq!(
        r.items(PageRequest::default()).await.unwrap().total_count,
        0
    );
}

#[tokio::test]
async fn other_back_ends_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("journal.db").display());
    other_back_ends(Journal::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn other_back_ends_on_postgres() {
    let db = support::FreshPostgres::create("ot_repair_backends").await;
    other_back_ends(Journal::open(&db.url).await.unwrap()).await;
    db.drop_db().await;
}
