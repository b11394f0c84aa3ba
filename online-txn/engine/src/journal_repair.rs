//! Journal reads and conditional writes for the repair service ([`crate::repair`], seed 002).
//!
//! The writes do not go through the group-commit writer: they are rare, operator-paced, and
//! each is one conditional statement (or one short transaction) that applies only if the row
//! and its reversal are still in the state the repair was decided on, so they cannot race the
//! reversal worker (which only touches `PENDING` reversals) into a wrong state.

use std::time::Duration;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::journal::{Journal, JournalError, TxnState, now_ms, reversal_state};
use crate::repair::{FixResult, JournalView, RepairItem, ReversalInfo, mask};

/// Journal rows in doubt needing repair: of the `host` back end without a pending reversal; of
/// other back ends (reversed by their own worker, `backends::reversal`, without a queue row)
/// once that worker gave up and left its `FAILED` mark.
const ITEMS_FROM: &str = "FROM txn_journal j LEFT JOIN reversal_queue q ON q.journal_id = j.id \
     WHERE j.state = 'IN_DOUBT' AND ((j.backend = 'host' AND (q.id IS NULL OR q.state <> 'PENDING')) \
     OR (j.backend <> 'host' AND q.id IS NOT NULL AND q.state <> 'PENDING'))";

const VIEW_COLUMNS: &str = "j.id, j.backend, j.terminal_id, j.stan, j.txn_date, j.mti, j.processing_code, j.amount_minor, \
     j.currency, j.pan_masked, j.state, j.response_code, j.rrn, j.auth_code, j.created_ms, j.updated_ms, \
     q.id AS qid, q.state AS qstate, q.reason AS qreason, q.attempts AS qattempts, q.last_result AS qresult, \
     q.expires_ms AS qexpires, q.updated_ms AS qupdated, q.replacement_minor AS qreplacement, \
     COALESCE(q.reversed_minor, j.amount_minor) AS qreversed";

fn view_row(r: &AnyRow) -> Result<JournalView, JournalError> {
    let state: String = r.try_get("state")?;
    let qid: Option<i64> = r.try_get("qid")?;
    let reversal = match qid {
        None => None,
        Some(id) => Some(ReversalInfo {
            id,
            state: r.try_get("qstate")?,
            reason: r.try_get("qreason")?,
            attempts: r.try_get("qattempts")?,
            last_result: r.try_get("qresult")?,
            expires_ms: r.try_get("qexpires")?,
            updated_ms: r.try_get("qupdated")?,
            replacement_minor: r.try_get("qreplacement")?,
            reversed_minor: r.try_get("qreversed")?,
        }),
    };
    let pan: String = r.try_get("pan_masked")?;
    Ok(JournalView {
        id: r.try_get("id")?,
        terminal_id: r.try_get("terminal_id")?,
        stan: r.try_get("stan")?,
        txn_date: r.try_get("txn_date")?,
        mti: r.try_get("mti")?,
        processing_code: r.try_get("processing_code")?,
        amount_minor: r.try_get("amount_minor")?,
        currency: r.try_get("currency")?,
        pan_masked: mask(&pan),
        state: state.parse::<TxnState>()?.as_str().to_owned(),
        response_code: r.try_get("response_code")?,
        rrn: r.try_get("rrn")?,
        auth_code: r.try_get("auth_code")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        backend: r.try_get("backend")?,
        reversal,
    })
}

fn item(journal: JournalView) -> RepairItem {
    let kind = match journal.reversal.as_ref().map(|r| r.state.as_str()) {
        None => "NO_REVERSAL",
        Some(reversal_state::DONE) => "REVERSAL_DONE",
        Some(_) => "REVERSAL_FAILED",
    };
    RepairItem {
        kind: kind.to_owned(),
        system_group: crate::repair::group_of(&journal.backend),
        journal,
    }
}

impl Journal {
    /// How many rows need repair.
    pub(crate) async fn repair_item_count(&self) -> Result<i64, JournalError> {
        let row = sqlx::query(&format!("SELECT COUNT(*) AS n {ITEMS_FROM}"))
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Rows needing repair, oldest first.
    pub(crate) async fn repair_items(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<RepairItem>, JournalError> {
        self.repair_items_of(None, limit, offset).await
    }

    /// Rows of back end `backend` (all: `None`) needing repair, oldest first.
    pub(crate) async fn repair_items_of(
        &self,
        backend: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<RepairItem>, JournalError> {
        let rows = match backend {
            None => {
                sqlx::query(&format!(
                    "SELECT {VIEW_COLUMNS} {ITEMS_FROM} ORDER BY j.id LIMIT $1 OFFSET $2"
                ))
                .bind(limit)
                .bind(offset)
                .fetch_all(self.pool())
                .await?
            }
            Some(b) => {
                sqlx::query(&format!(
                    "SELECT {VIEW_COLUMNS} {ITEMS_FROM} AND j.backend = $3 ORDER BY j.id LIMIT $1 OFFSET $2"
                ))
                .bind(limit)
                .bind(offset)
                .bind(b)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(|r| view_row(r).map(item)).collect()
    }

    /// Marks the reversal of row `journal_id` (a back end other than `host`) as given up by
    /// that back end's reversal worker: a `FAILED` reversal row with `result` and `attempts`,
    /// so that the row is a repair item and stays out of the worker's hands — also across
    /// restarts — until a repair hands it back. Changes nothing if the row has one already.
    pub async fn mark_backend_reversal_failed(
        &self,
        journal_id: i64,
        result: &str,
        attempts: i64,
    ) -> Result<(), JournalError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO reversal_queue (journal_id, reason, state, attempts, next_attempt_ms, expires_ms, \
             last_result, reversed_minor, created_ms, updated_ms) \
             SELECT j.id, 'BACKEND', 'FAILED', $2, $3, $3, $4, j.amount_minor, $3, $3 FROM txn_journal j \
             WHERE j.id = $1 AND j.state = 'IN_DOUBT' \
             AND NOT EXISTS (SELECT 1 FROM reversal_queue q WHERE q.journal_id = $1)",
        )
        .bind(journal_id)
        .bind(attempts)
        .bind(now)
        .bind(result)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Row `id` if it needs repair.
    pub(crate) async fn repair_item(&self, id: i64) -> Result<Option<RepairItem>, JournalError> {
        let row = sqlx::query(&format!("SELECT {VIEW_COLUMNS} {ITEMS_FROM} AND j.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(|r| view_row(r).map(item)).transpose()
    }

    /// Row `id` with its reversal, for display.
    pub(crate) async fn journal_view(&self, id: i64) -> Result<JournalView, JournalError> {
        let row = sqlx::query(&format!(
            "SELECT {VIEW_COLUMNS} FROM txn_journal j LEFT JOIN reversal_queue q ON q.journal_id = j.id \
             WHERE j.id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(JournalError::NotFound(id))?;
        view_row(&row)
    }

    /// Whether row `id` exists.
    pub(crate) async fn journal_exists(&self, id: i64) -> Result<bool, JournalError> {
        Ok(sqlx::query("SELECT id FROM txn_journal WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .is_some())
    }

    /// `REVERSAL_RETRY`: the row's given-up reversal is queued again (attempts reset, expiry
    /// renewed to `ttl` from now), or a reversal is queued if it never had one. Applies only
    /// while the row is in doubt and its reversal not pending.
    pub(crate) async fn requeue_reversal(
        &self,
        journal_id: i64,
        ttl: Duration,
        by: &str,
    ) -> Result<FixResult, JournalError> {
        let Some(current) = self.repair_item(journal_id).await? else {
            return Ok(FixResult::NotNeeded(format!(
                "journal row {journal_id} no longer needs repair"
            )));
        };
        if current.journal.backend != crate::router::DEFAULT_BACKEND {
            return self.hand_back(journal_id, &current.journal).await;
        }
        let Some(rev) = current.journal.reversal else {
            // In doubt and never reversed: queue one (the row stays IN_DOUBT).
            return match self.queue_reversal(journal_id, "REPAIR", ttl).await {
                Ok(true) => {
                    let id = sqlx::query("SELECT id FROM reversal_queue WHERE journal_id = $1")
                        .bind(journal_id)
                        .fetch_optional(self.pool())
                        .await?
                        .map(|r| r.try_get::<i64, _>("id"))
                        .transpose()?;
                    Ok(FixResult::Applied(
                        id,
                        "reversal queued (the row had none)".into(),
                    ))
                }
                Ok(false) => Ok(FixResult::NotNeeded(
                    "a reversal was queued meanwhile".into(),
                )),
                Err(JournalError::BadTransition { from, .. }) => Ok(FixResult::NotNeeded(format!(
                    "journal row {journal_id} is {from} now"
                ))),
                Err(e) => Err(e),
            };
        };
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE reversal_queue SET state = 'PENDING', attempts = 0, next_attempt_ms = $1, expires_ms = $2, \
             last_result = $3, updated_ms = $1 WHERE id = $4 AND state = $5 \
             AND EXISTS (SELECT 1 FROM txn_journal j WHERE j.id = $6 AND j.state = 'IN_DOUBT')",
        )
        .bind(now)
        .bind(now.saturating_add(ttl.as_millis() as i64))
        .bind(format!("re-queued by {by}"))
        .bind(rev.id)
        .bind(&rev.state)
        .bind(journal_id)
        .execute(self.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(FixResult::NotNeeded(
                "the row or its reversal changed meanwhile".into(),
            ));
        }
        Ok(FixResult::Applied(
            Some(rev.id),
            format!(
                "reversal re-queued (was {} after {} attempts, last result: {}); attempts reset, \
                 deliverable for {} s",
                rev.state,
                rev.attempts,
                rev.last_result.as_deref().unwrap_or("none"),
                ttl.as_secs()
            ),
        ))
    }

    /// `REVERSAL_RETRY` for a row of a back end other than `host`: its `FAILED` mark is
    /// removed (while the row is still in doubt), so that its back end's reversal worker
    /// delivers the reversal again.
    async fn hand_back(
        &self,
        journal_id: i64,
        row: &crate::repair::JournalView,
    ) -> Result<FixResult, JournalError> {
        let Some(rev) = &row.reversal else {
            return Ok(FixResult::NotNeeded(format!(
                "journal row {journal_id} is with back end {}'s reversal worker",
                row.backend
            )));
        };
        let deleted = sqlx::query(
            "DELETE FROM reversal_queue WHERE id = $1 AND state = $2 \
             AND EXISTS (SELECT 1 FROM txn_journal j WHERE j.id = $3 AND j.state = 'IN_DOUBT')",
        )
        .bind(rev.id)
        .bind(&rev.state)
        .bind(journal_id)
        .execute(self.pool())
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(FixResult::NotNeeded(
                "the row or its reversal changed meanwhile".into(),
            ));
        }
        // The worker measures the reversal TTL from the row's last change: a handed-back
        // reversal gets a whole TTL again, not only what was left of the first.
        sqlx::query("UPDATE txn_journal SET updated_ms = $1 WHERE id = $2")
            .bind(crate::journal::now_ms())
            .bind(journal_id)
            .execute(self.pool())
            .await?;
        Ok(FixResult::Applied(
            None,
            format!(
                "handed back to back end {}'s reversal worker (was {} after {} attempts, last result: {})",
                row.backend,
                rev.state,
                rev.attempts,
                rev.last_result.as_deref().unwrap_or("none")
            ),
        ))
    }

    /// `MARK_REVERSED_MANUALLY`: an operator confirmed with the host that the transaction is
    /// reversed (or never happened): the reversal becomes DONE (created if there was none) and
    /// the row REVERSED, in one transaction. Refused while a reversal is pending.
    pub(crate) async fn mark_reversed_manually(
        &self,
        journal_id: i64,
        note: &str,
    ) -> Result<FixResult, JournalError> {
        let now = now_ms();
        let result = format!("marked reversed by an operator: {note}");
        let mut tx = self.pool().begin().await?;
        let moved = sqlx::query(
            "UPDATE txn_journal SET state = 'REVERSED', updated_ms = $1 WHERE id = $2 AND state = 'IN_DOUBT' \
             AND NOT EXISTS (SELECT 1 FROM reversal_queue q WHERE q.journal_id = $2 AND q.state = 'PENDING')",
        )
        .bind(now)
        .bind(journal_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            let view = self.journal_view(journal_id).await?;
            let why = match view.reversal {
                Some(r) if r.state == reversal_state::PENDING => {
                    "its reversal is pending; wait for the worker".to_owned()
                }
                _ => format!("journal row {journal_id} is {}, not IN_DOUBT", view.state),
            };
            return Ok(FixResult::NotNeeded(why));
        }
        let existing = sqlx::query(
            "UPDATE reversal_queue SET state = 'DONE', last_result = $1, updated_ms = $2 WHERE journal_id = $3 \
             RETURNING id",
        )
        .bind(&result)
        .bind(now)
        .bind(journal_id)
        .fetch_optional(&mut *tx)
        .await?;
        let reversal_id: i64 = match existing {
            Some(r) => r.try_get("id")?,
            None => sqlx::query(
                "INSERT INTO reversal_queue (journal_id, reason, state, attempts, next_attempt_ms, expires_ms, \
                 last_result, created_ms, updated_ms) VALUES ($1, 'REPAIR', 'DONE', 0, $2, $2, $3, $2, $2) RETURNING id",
            )
            .bind(journal_id)
            .bind(now)
            .bind(&result)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?,
        };
        tx.commit().await?;
        Ok(FixResult::Applied(
            Some(reversal_id),
            format!("row marked REVERSED and its reversal DONE; note: {note}"),
        ))
    }
}
