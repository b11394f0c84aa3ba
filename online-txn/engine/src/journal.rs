//! The durable transaction journal and reversal queue (SQLite by default, PostgreSQL by URL).
//!
//! Every financial request is written before anything is sent: as `SENT` in one insert once
//! the request to the host is ready ([`Journal::begin_sent`], the common path), or as
//! `RECEIVED` ([`Journal::begin`]) and moved to `SENT` before the bytes leave. It ends
//! `APPROVED`, `DECLINED` or `IN_DOUBT`; an in-doubt or
//! reversed-by-terminal approval ends `REVERSED` once the host acknowledged the reversal.
//! Writes go through one writer task that commits them in groups (group commit): callers wait
//! for their own commit, many callers share one fsync.
//!
//! Rows are keyed by (terminal, STAN, date), which makes a retransmission find its original.
//! The journal never stores a PIN block, a track or a full PAN.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

/// The state of one journaled transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    /// Written, not yet sent to the host.
    Received,
    /// Sent to the host, no answer yet.
    Sent,
    /// The host approved it.
    Approved,
    /// The host (or the engine, before sending) declined it.
    Declined,
    /// No answer in time: the outcome at the host is unknown, a reversal is queued.
    InDoubt,
    /// The host acknowledged a reversal.
    Reversed,
}

impl TxnState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Received => "RECEIVED",
            TxnState::Sent => "SENT",
            TxnState::Approved => "APPROVED",
            TxnState::Declined => "DECLINED",
            TxnState::InDoubt => "IN_DOUBT",
            TxnState::Reversed => "REVERSED",
        }
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: TxnState) -> bool {
        use TxnState::*;
        matches!(
            (self, next),
            (Received, Sent | Declined | InDoubt)
                | (Sent, Approved | Declined | InDoubt)
                // A terminal reverses an approval it could not honour (dispense fault).
                | (Approved, InDoubt | Reversed)
                | (InDoubt, Reversed | InDoubt)
        )
    }

    /// Final for the request/response exchange (a retry gets the stored answer).
    pub fn is_answered(self) -> bool {
        !matches!(self, TxnState::Received | TxnState::Sent)
    }
}

impl FromStr for TxnState {
    type Err = JournalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "RECEIVED" => TxnState::Received,
            "SENT" => TxnState::Sent,
            "APPROVED" => TxnState::Approved,
            "DECLINED" => TxnState::Declined,
            "IN_DOUBT" => TxnState::InDoubt,
            "REVERSED" => TxnState::Reversed,
            other => return Err(JournalError::Corrupt(format!("unknown state {other:?}"))),
        })
    }
}

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The database failed.
    #[error("journal database: {0}")]
    Database(#[from] sqlx::Error),
    /// The URL names no supported database.
    #[error("journal URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// A transition the state machine forbids.
    #[error("journal row {id}: {from} cannot become {to}")]
    BadTransition {
        /// Row.
        id: i64,
        /// Current state.
        from: &'static str,
        /// Requested state.
        to: &'static str,
    },
    /// No such row.
    #[error("journal row {0} does not exist")]
    NotFound(i64),
    /// A stored value is not what the engine writes.
    #[error("journal data is corrupt: {0}")]
    Corrupt(String),
    /// The writer task is gone (shutting down).
    #[error("the journal is shutting down")]
    Closed,
    /// The group this write belonged to could not be committed; nothing of it was written.
    #[error("the journal could not commit; nothing was written")]
    Unavailable,
}

/// A new journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTxn {
    /// Card acceptor terminal id (F41).
    pub terminal_id: String,
    /// System trace audit number (F11).
    pub stan: String,
    /// Transmission date MMDD (F13) — part of the idempotency key.
    pub txn_date: String,
    /// Message type of the request.
    pub mti: String,
    /// Processing code (F3).
    pub processing_code: String,
    /// Amount in minor units (F4), 0 when none.
    pub amount_minor: i64,
    /// Currency (F49).
    pub currency: String,
    /// PAN masked to first 6 / last 4.
    pub pan_masked: String,
    /// Digest of the request's business content, to tell a retransmission from a clash.
    pub request_digest: String,
}

/// A journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    /// Row id.
    pub id: i64,
    /// The request's identity and content.
    pub txn: NewTxn,
    /// Current state.
    pub state: TxnState,
    /// F39 of the answer, once there is one.
    pub response_code: Option<String>,
    /// F37.
    pub rrn: Option<String>,
    /// F38.
    pub auth_code: Option<String>,
    /// The answer's fields as JSON, replayed to a retransmission.
    pub response_json: Option<String>,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Last change, ms since the epoch.
    pub updated_ms: i64,
}

/// The outcome written with a state change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// F39.
    pub response_code: Option<String>,
    /// F37.
    pub rrn: Option<String>,
    /// F38.
    pub auth_code: Option<String>,
    /// The answer's fields as JSON.
    pub response_json: Option<String>,
}

/// Result of [`Journal::begin`] and [`Journal::begin_sent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// A new row: in state RECEIVED ([`Journal::begin`]) or SENT ([`Journal::begin_sent`]).
    New(i64),
    /// The same request was seen before (retransmission).
    Existing(TxnRecord),
    /// The key was used before for different content.
    Clash(TxnRecord),
}

/// A reversal waiting for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reversal {
    /// Queue row.
    pub id: i64,
    /// The journal row it reverses.
    pub journal: TxnRecord,
    /// Why: "TIMEOUT", "TERMINAL", "LATE".
    pub reason: String,
    /// Attempts so far (the first is sent as 0400, repeats as 0401).
    pub attempts: i64,
    /// When it gives up.
    pub expires_ms: i64,
    /// A partial reversal: the amount that stands (ISO 8583 F95, e.g. the notes actually
    /// dispensed); `None`: the whole amount is reversed.
    pub replacement_minor: Option<i64>,
}

/// Why and for how much a reversal was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalAmounts {
    /// Why: "TIMEOUT", "TERMINAL", "CHANNEL", ...
    pub reason: String,
    /// The amount that stands (F95 of a partial reversal); `None`: a full reversal.
    pub replacement_minor: Option<i64>,
    /// The amount the reversal gives back.
    pub reversed_minor: i64,
}

/// Reversal queue states.
pub mod reversal_state {
    /// Waiting for an attempt.
    pub const PENDING: &str = "PENDING";
    /// Acknowledged by the host.
    pub const DONE: &str = "DONE";
    /// Given up (expired or out of retries): needs repair (seed 002).
    pub const FAILED: &str = "FAILED";
}

enum Op {
    SetBackend {
        id: i64,
        backend: String,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Begin {
        txn: NewTxn,
        /// `Some(back end)`: the row starts SENT to it; `None`: RECEIVED (to `host`).
        sent_to: Option<String>,
        reply: oneshot::Sender<Result<Begin, JournalError>>,
    },
    Transition(
        i64,
        TxnState,
        Answer,
        oneshot::Sender<Result<(), JournalError>>,
    ),
    QueueReversal {
        id: i64,
        reason: String,
        expires_ms: i64,
        replacement: Option<i64>,
        answer: Answer,
        reply: oneshot::Sender<Result<bool, JournalError>>,
    },
    ReversalAttempt {
        queue_id: i64,
        result: String,
        done: Option<bool>,
        retry_at_ms: i64,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

/// The journal: a pool for reads and a group-committing writer.
#[derive(Clone)]
pub struct Journal {
    pool: AnyPool,
    writer: mpsc::Sender<Op>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

const MAX_GROUP: usize = 256;

impl Journal {
    /// Opens (and migrates) the journal at `url`: `sqlite://PATH` (created if missing) or
    /// `postgres://...`. Spawns the writer task, which ends when every handle is dropped.
    pub async fn open(url: &str) -> Result<Journal, JournalError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres:") && !url.starts_with("postgresql:") {
            return Err(JournalError::UnsupportedUrl(url.to_owned()));
        }
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_owned()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets readers run beside the writer; FULL makes each group commit
                        // durable against power loss, not only against a killed process.
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=FULL",
                            "PRAGMA busy_timeout=5000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        migrate(
            &pool,
            if sqlite {
                SQLITE_MIGRATIONS
            } else {
                POSTGRES_MIGRATIONS
            },
        )
        .await?;
        let (writer, rx) = mpsc::channel(4096);
        tokio::spawn(write_loop(pool.clone(), rx));
        Ok(Journal { pool, writer })
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Op,
    ) -> Result<T, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Journals a request before it is processed (RECEIVED), or finds its earlier copy.
    pub async fn begin(&self, txn: NewTxn) -> Result<Begin, JournalError> {
        self.call(|reply| Op::Begin {
            txn,
            sent_to: None,
            reply,
        })
        .await
    }

    /// Journals a request whose message to back end `backend` (`host` for the `[host]` link)
    /// is ready, directly as SENT, or finds its earlier copy. One commit instead of
    /// [`Journal::begin`] + SENT: the row is durable before the caller sends anything
    /// (journal before send), and after a crash it is reversed like any SENT row.
    pub async fn begin_sent(&self, txn: NewTxn, backend: &str) -> Result<Begin, JournalError> {
        self.call(|reply| Op::Begin {
            txn,
            sent_to: Some(backend.to_owned()),
            reply,
        })
        .await
    }

    /// Moves a row to `state` with its answer, if the state machine allows it.
    pub async fn transition(
        &self,
        id: i64,
        state: TxnState,
        answer: Answer,
    ) -> Result<(), JournalError> {
        self.call(|tx| Op::Transition(id, state, answer, tx)).await
    }

    /// Queues a reversal of row `id` (idempotent: a second call changes nothing and returns
    /// false). The row moves to IN_DOUBT in the same commit.
    pub async fn queue_reversal(
        &self,
        id: i64,
        reason: &str,
        ttl: Duration,
    ) -> Result<bool, JournalError> {
        self.queue_reversal_answered(id, reason, ttl, Answer::default())
            .await
    }

    /// [`Journal::queue_reversal`], storing `answer` (what the requester was told) on the row
    /// in the same commit — before the reversal worker can see, deliver and close the row.
    pub async fn queue_reversal_answered(
        &self,
        id: i64,
        reason: &str,
        ttl: Duration,
        answer: Answer,
    ) -> Result<bool, JournalError> {
        self.queue(id, reason, ttl, None, answer).await
    }

    /// The one queueing operation behind the `queue_*reversal` methods.
    async fn queue(
        &self,
        id: i64,
        reason: &str,
        ttl: Duration,
        replacement: Option<i64>,
        answer: Answer,
    ) -> Result<bool, JournalError> {
        let expires_ms = now_ms() + ttl.as_millis() as i64;
        self.call(|reply| Op::QueueReversal {
            id,
            reason: reason.to_owned(),
            expires_ms,
            replacement,
            answer,
            reply,
        })
        .await
    }

    /// Queues a **partial** reversal of row `id`: `replacement_minor` is the amount that
    /// stands (F95; the caller checked it is above 0 and below the row's amount), the
    /// reversal gives back the rest. Otherwise as [`Journal::queue_reversal`]: idempotent
    /// (false when the row already has a reversal, whatever its amount), the row moves to
    /// IN_DOUBT in the same commit.
    pub async fn queue_partial_reversal(
        &self,
        id: i64,
        reason: &str,
        ttl: Duration,
        replacement_minor: i64,
    ) -> Result<bool, JournalError> {
        self.queue(id, reason, ttl, Some(replacement_minor), Answer::default())
            .await
    }

    /// Why and for how much the reversal of row `journal_id` was queued, if it was.
    pub async fn reversal_amounts(
        &self,
        journal_id: i64,
    ) -> Result<Option<ReversalAmounts>, JournalError> {
        let row = sqlx::query(
            "SELECT q.reason, q.replacement_minor, COALESCE(q.reversed_minor, j.amount_minor) AS reversed \
             FROM reversal_queue q JOIN txn_journal j ON j.id = q.journal_id WHERE q.journal_id = $1",
        )
        .bind(journal_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ReversalAmounts {
                reason: r.try_get("reason")?,
                replacement_minor: r.try_get("replacement_minor")?,
                reversed_minor: r.try_get("reversed")?,
            })
        })
        .transpose()
    }

    /// Records one reversal attempt: `done = Some(true)` acknowledged (row → REVERSED),
    /// `Some(false)` given up, `None` retry at `retry_at_ms`.
    pub async fn reversal_attempt(
        &self,
        queue_id: i64,
        result: &str,
        done: Option<bool>,
        retry_at_ms: i64,
    ) -> Result<(), JournalError> {
        self.call(|reply| Op::ReversalAttempt {
            queue_id,
            result: result.to_owned(),
            done,
            retry_at_ms,
            reply,
        })
        .await
    }

    /// Reversals due now, oldest first.
    pub async fn due_reversals(&self, limit: i64) -> Result<Vec<Reversal>, JournalError> {
        let rows = sqlx::query(&format!(
            "SELECT q.id AS qid, q.reason, q.attempts, q.expires_ms, q.replacement_minor, {JOURNAL_COLUMNS} FROM reversal_queue q \
             JOIN txn_journal j ON j.id = q.journal_id \
             WHERE q.state = 'PENDING' AND q.next_attempt_ms <= $1 ORDER BY q.next_attempt_ms LIMIT $2"
        ))
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Reversal {
                    id: r.try_get("qid")?,
                    reason: r.try_get("reason")?,
                    attempts: r.try_get("attempts")?,
                    expires_ms: r.try_get("expires_ms")?,
                    replacement_minor: r.try_get("replacement_minor")?,
                    journal: record(r)?,
                })
            })
            .collect()
    }

    /// Reads one row.
    pub async fn get(&self, id: i64) -> Result<TxnRecord, JournalError> {
        let row = sqlx::query(&format!(
            "SELECT {JOURNAL_COLUMNS} FROM txn_journal j WHERE j.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(JournalError::NotFound(id))?;
        record(&row)
    }

    /// Finds a row by its idempotency key.
    pub async fn find(
        &self,
        terminal_id: &str,
        stan: &str,
        txn_date: &str,
    ) -> Result<Option<TxnRecord>, JournalError> {
        let row = sqlx::query(&format!(
            "SELECT {JOURNAL_COLUMNS} FROM txn_journal j WHERE j.terminal_id = $1 AND j.stan = $2 AND j.txn_date = $3"
        ))
        .bind(terminal_id)
        .bind(stan)
        .bind(txn_date)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record).transpose()
    }

    /// Rows in a state (for recovery and reconciliation).
    pub async fn in_state(&self, state: TxnState) -> Result<Vec<TxnRecord>, JournalError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOURNAL_COLUMNS} FROM txn_journal j WHERE j.state = $1 ORDER BY j.id"
        ))
        .bind(state.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// The state of the reversal of row `journal_id`, if one was queued, and its attempts.
    pub async fn reversal_of(
        &self,
        journal_id: i64,
    ) -> Result<Option<(String, i64)>, JournalError> {
        let row = sqlx::query("SELECT state, attempts FROM reversal_queue WHERE journal_id = $1")
            .bind(journal_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("state")?, r.try_get("attempts")?)))
            .transpose()
    }

    /// Records that row `id` goes to back end `backend` instead of `host`; called before the
    /// row is marked SENT, so reversal and repair never act on it as a `host` row.
    pub async fn set_backend(&self, id: i64, backend: &str) -> Result<(), JournalError> {
        self.call(|reply| Op::SetBackend {
            id,
            backend: backend.to_owned(),
            reply,
        })
        .await
    }

    /// After a restart: requests journaled but never sent are declined (nothing reached the
    /// host); requests sent without an answer are in doubt and get a reversal. Returns how
    /// many rows each rule touched.
    pub async fn recover(&self, reversal_ttl: Duration) -> Result<(usize, usize), JournalError> {
        let received = self.in_state(TxnState::Received).await?;
        for r in &received {
            let answer = Answer {
                response_code: Some("96".into()),
                ..Answer::default()
            };
            self.transition(r.id, TxnState::Declined, answer).await?;
        }
        let sent = self.in_state(TxnState::Sent).await?;
        for r in &sent {
            self.queue_reversal(r.id, "RECOVERY", reversal_ttl).await?;
        }
        Ok((received.len(), sent.len()))
    }
}

/// The schema, one script per version, per database (SQL lives in `.sql` files).
const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_journal.sql"),
    include_str!("../migrations/sqlite/0002_repair.sql"),
    include_str!("../migrations/sqlite/0003_backend.sql"),
    include_str!("../migrations/sqlite/0004_partial_reversal.sql"),
];
const POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_journal.sql"),
    include_str!("../migrations/postgres/0002_repair.sql"),
    include_str!("../migrations/postgres/0003_backend.sql"),
    include_str!("../migrations/postgres/0004_partial_reversal.sql"),
];

/// Applies the scripts not applied yet, each in its own transaction with its version row.
async fn migrate(pool: &AnyPool, scripts: &[&str]) -> Result<(), JournalError> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY)")
        .execute(pool)
        .await?;
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        .fetch_one(pool)
        .await?;
    let current: i64 = row.try_get("v")?;
    for (i, script) in scripts.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= current {
            continue;
        }
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(script).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

const JOURNAL_COLUMNS: &str = "j.id, j.terminal_id, j.stan, j.txn_date, j.mti, j.processing_code, j.amount_minor, \
     j.currency, j.pan_masked, j.request_digest, j.state, j.response_code, j.rrn, j.auth_code, j.response_json, \
     j.created_ms, j.updated_ms";

fn record(r: &AnyRow) -> Result<TxnRecord, JournalError> {
    let state: String = r.try_get("state")?;
    Ok(TxnRecord {
        id: r.try_get("id")?,
        txn: NewTxn {
            terminal_id: r.try_get("terminal_id")?,
            stan: r.try_get("stan")?,
            txn_date: r.try_get("txn_date")?,
            mti: r.try_get("mti")?,
            processing_code: r.try_get("processing_code")?,
            amount_minor: r.try_get("amount_minor")?,
            currency: r.try_get("currency")?,
            pan_masked: r.try_get("pan_masked")?,
            request_digest: r.try_get("request_digest")?,
        },
        state: state.parse()?,
        response_code: r.try_get("response_code")?,
        rrn: r.try_get("rrn")?,
        auth_code: r.try_get("auth_code")?,
        response_json: r.try_get("response_json")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

/// The writer: takes whatever ops are waiting (up to [`MAX_GROUP`]), applies them in one
/// database transaction, commits once, then answers each caller.
async fn write_loop(pool: AnyPool, mut rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut batch, MAX_GROUP).await > 0 {
        let mut replies: Vec<Box<dyn FnOnce(bool) + Send>> = Vec::with_capacity(batch.len());
        let result: Result<(), sqlx::Error> = async {
            let mut tx = pool.begin().await?;
            for op in batch.drain(..) {
                replies.push(apply(&mut tx, op).await?);
            }
            tx.commit().await
        }
        .await;
        let committed = match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "journal group commit failed; the whole group is refused");
                false
            }
        };
        for reply in replies {
            reply(committed);
        }
        // Ops whose apply() never ran (the group failed before them) were dropped with
        // `batch.drain`; their callers see `Closed` and refuse the transaction.
        batch.clear();
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// Applies one op inside the group's transaction and returns how to answer its caller once the
/// group's fate is known. Domain refusals (bad transition) are answered without failing the
/// group; database errors fail the group.
async fn apply(tx: &mut Tx<'_>, op: Op) -> Result<Box<dyn FnOnce(bool) + Send>, sqlx::Error> {
    fn answer<T: Send + 'static>(
        reply: oneshot::Sender<Result<T, JournalError>>,
        value: Result<T, JournalError>,
    ) -> Box<dyn FnOnce(bool) + Send> {
        Box::new(move |committed| {
            let _ = reply.send(if committed {
                value
            } else {
                Err(JournalError::Unavailable)
            });
        })
    }
    let now = now_ms();
    Ok(match op {
        Op::Begin {
            txn,
            sent_to,
            reply,
        } => {
            // The common case (a new request) is one statement; only a retransmission or a
            // clash needs the lookup.
            let state = if sent_to.is_some() {
                TxnState::Sent
            } else {
                TxnState::Received
            };
            let inserted = sqlx::query(
                "INSERT INTO txn_journal (terminal_id, stan, txn_date, mti, processing_code, amount_minor, currency, \
                 pan_masked, request_digest, state, backend, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
                 ON CONFLICT (terminal_id, stan, txn_date) DO NOTHING RETURNING id",
            )
            .bind(&txn.terminal_id)
            .bind(&txn.stan)
            .bind(&txn.txn_date)
            .bind(&txn.mti)
            .bind(&txn.processing_code)
            .bind(txn.amount_minor)
            .bind(&txn.currency)
            .bind(&txn.pan_masked)
            .bind(&txn.request_digest)
            .bind(state.as_str())
            .bind(sent_to.as_deref().unwrap_or(crate::router::DEFAULT_BACKEND))
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
            let value = match inserted {
                Some(row) => Ok(Begin::New(row.try_get("id")?)),
                None => {
                    let existing = sqlx::query(&format!(
                        "SELECT {JOURNAL_COLUMNS} FROM txn_journal j WHERE j.terminal_id = $1 AND j.stan = $2 AND j.txn_date = $3"
                    ))
                    .bind(&txn.terminal_id)
                    .bind(&txn.stan)
                    .bind(&txn.txn_date)
                    .fetch_one(&mut **tx)
                    .await?;
                    record(&existing).map(|r| {
                        if r.txn.request_digest == txn.request_digest {
                            Begin::Existing(r)
                        } else {
                            Begin::Clash(r)
                        }
                    })
                }
            };
            answer(reply, value)
        }
        Op::SetBackend { id, backend, reply } => {
            sqlx::query("UPDATE txn_journal SET backend = $1 WHERE id = $2 AND state = 'RECEIVED'")
                .bind(&backend)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            answer(reply, Ok(()))
        }
        Op::Transition(id, state, a, reply) => {
            let value = transition(tx, id, state, &a, now).await?;
            answer(reply, value)
        }
        Op::QueueReversal {
            id,
            reason,
            expires_ms,
            replacement,
            answer: queued_answer,
            reply,
        } => {
            let exists = sqlx::query("SELECT id FROM reversal_queue WHERE journal_id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            let value = if exists.is_some() {
                Ok(false)
            } else {
                match transition(tx, id, TxnState::InDoubt, &queued_answer, now).await? {
                    Err(e) => Err(e),
                    Ok(()) => {
                        // The amount reversed: the row's, less what stands (F95).
                        sqlx::query(
                            "INSERT INTO reversal_queue (journal_id, reason, state, attempts, next_attempt_ms, expires_ms, \
                             replacement_minor, reversed_minor, created_ms, updated_ms) \
                             SELECT $1, $2, 'PENDING', 0, $3, $4, $5, j.amount_minor - $6, $3, $3 FROM txn_journal j WHERE j.id = $1",
                        )
                        .bind(id)
                        .bind(&reason)
                        .bind(now)
                        .bind(expires_ms)
                        .bind(replacement)
                        .bind(replacement.unwrap_or(0))
                        .execute(&mut **tx)
                        .await?;
                        Ok(true)
                    }
                }
            };
            answer(reply, value)
        }
        Op::ReversalAttempt {
            queue_id,
            result,
            done,
            retry_at_ms,
            reply,
        } => {
            let state = match done {
                Some(true) => reversal_state::DONE,
                Some(false) => reversal_state::FAILED,
                None => reversal_state::PENDING,
            };
            let row = sqlx::query(
                "UPDATE reversal_queue SET attempts = attempts + 1, state = $1, last_result = $2, next_attempt_ms = $3, updated_ms = $4 \
                 WHERE id = $5 AND state = 'PENDING' RETURNING journal_id",
            )
            .bind(state)
            .bind(&result)
            .bind(retry_at_ms)
            .bind(now)
            .bind(queue_id)
            .fetch_optional(&mut **tx)
            .await?;
            let value = match (row, done) {
                (None, _) => Ok(()),
                (Some(r), Some(true)) => {
                    let journal_id: i64 = r.try_get("journal_id")?;
                    transition(tx, journal_id, TxnState::Reversed, &Answer::default(), now).await?
                }
                (Some(_), _) => Ok(()),
            };
            answer(reply, value)
        }
    })
}

async fn transition(
    tx: &mut Tx<'_>,
    id: i64,
    next: TxnState,
    a: &Answer,
    now: i64,
) -> Result<Result<(), JournalError>, sqlx::Error> {
    // One guarded statement in the common case: the update applies only from a state the
    // machine allows; when it does not apply, the row is read to say why.
    let list = ALL_STATES
        .iter()
        .filter(|s| s.can_become(next))
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let updated = sqlx::query(&format!(
        "UPDATE txn_journal SET state = $1, response_code = COALESCE($2, response_code), rrn = COALESCE($3, rrn), \
         auth_code = COALESCE($4, auth_code), response_json = COALESCE($5, response_json), updated_ms = $6 \
         WHERE id = $7 AND state IN ({list}) RETURNING id"
    ))
    .bind(next.as_str())
    .bind(&a.response_code)
    .bind(&a.rrn)
    .bind(&a.auth_code)
    .bind(&a.response_json)
    .bind(now)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    if updated.is_some() {
        return Ok(Ok(()));
    }
    let Some(row) = sqlx::query("SELECT state FROM txn_journal WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(Err(JournalError::NotFound(id)));
    };
    let current: String = row.try_get("state")?;
    Ok(match current.parse::<TxnState>() {
        Err(e) => Err(e),
        // Asking for the state a row is already in changes nothing.
        Ok(current) if current == next => Ok(()),
        Ok(current) => Err(JournalError::BadTransition {
            id,
            from: current.as_str(),
            to: next.as_str(),
        }),
    })
}

const ALL_STATES: [TxnState; 6] = [
    TxnState::Received,
    TxnState::Sent,
    TxnState::Approved,
    TxnState::Declined,
    TxnState::InDoubt,
    TxnState::Reversed,
];

impl Journal {
    /// The read/write pool, for the repair service's own tables and its conditional updates
    /// (`journal_repair.rs`, `repair.rs`).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
