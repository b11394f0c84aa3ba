//! Reversal delivery for channel transactions on back ends other than `host`.
//!
//! The terminals' reversal worker ([`crate::reversal`]) and its durable queue speak to the
//! `[host]` link only. A channel transaction routed elsewhere that is left in doubt is journaled
//! `IN_DOUBT` **without** a queue row, and this worker finds it there: it resolves the row's
//! back end (channel by its `terminal_prefix`, then the routes, on the row's MTI and
//! processing code), sends the reversal (0400 first, 0401 for repeats, MAC'd for ISO 8583 back
//! ends) and moves the row to `REVERSED` once the back end answers 00 or 25. It retries like the
//! reversal worker (`[reversal]` `retry_ms`, `max_attempts`, `ttl_s`, `retryable_codes`); a
//! reversal given up is logged and left `IN_DOUBT` for repair.
//!
//! The state is the journal itself (rows `IN_DOUBT` without a queue row), so it survives
//! restarts; attempt counts are kept in memory (after a restart the first repeat is a 0400
//! again, which hosts treat idempotently). At start, before the journal's own recovery, rows of
//! these back ends still `SENT` are moved to `IN_DOUBT` ([`claim_sent`]) so that the recovery
//! does not queue their reversals to `host`.
//!
//! The journal records the back end of these rows (`txn_journal.backend`). A reversal this
//! worker gives up stays `IN_DOUBT` and gets a `FAILED` reversal row (reason `BACKEND`) as a
//! durable mark: the row is then a repair item of its back end's system group (seed 002), and
//! this worker leaves it alone — also after a restart — until a repair plan's
//! `REVERSAL_RETRY` removes the mark (the worker then tries again) or an operator's
//! `MARK_REVERSED_MANUALLY` closes it. The host's reversal worker only delivers `PENDING` rows,
//! so the mark never sends anything to `host`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backends::{Backend, fit_message, response_code};
use crate::config::ReversalConfig;
use crate::engine::reversal_message;
use crate::journal::{Answer, Journal, TxnRecord, TxnState, now_ms};
use crate::security::SecurityModule;

/// Finds the back end of a journal row (`None`: not a channel row, or one on `host`).
pub type Resolver = Arc<dyn Fn(&TxnRecord) -> Option<Arc<Backend>> + Send + Sync>;

/// Moves rows still `SENT` whose back end is not `host` (`elsewhere`) to `IN_DOUBT`, before
/// the journal's recovery would queue their reversals to `host`; returns how many.
pub async fn claim_sent(
    journal: &Journal,
    elsewhere: impl Fn(&TxnRecord) -> bool,
) -> Result<usize, String> {
    let sent = journal
        .in_state(TxnState::Sent)
        .await
        .map_err(|e| e.to_string())?;
    let mut n = 0;
    for r in sent.iter().filter(|r| elsewhere(r)) {
        let answer = Answer {
            response_code: Some(crate::engine::rc::NO_ANSWER.into()),
            ..Answer::default()
        };
        journal
            .transition(r.id, TxnState::InDoubt, answer)
            .await
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// The worker.
pub struct BackendReversals {
    /// The journal.
    pub journal: Journal,
    /// For MACs.
    pub hsm: Arc<dyn SecurityModule>,
    /// Row → back end.
    pub resolve: Resolver,
    /// Retry policy (the `[reversal]` section).
    pub policy: ReversalConfig,
    /// Wakes the worker when a row went in doubt.
    pub wake: Arc<Notify>,
}

struct Progress {
    attempts: i64,
    next_ms: i64,
}

impl BackendReversals {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut progress: HashMap<i64, Progress> = HashMap::new();
        let mut given_up: HashSet<i64> = HashSet::new();
        loop {
            if let Err(e) = self.pass(&mut progress, &mut given_up).await {
                tracing::error!(error = %e, "cannot read in-doubt channel transactions");
            }
            let soonest = progress
                .values()
                .map(|p| p.next_ms)
                .min()
                .map_or(2_000, |t| (t - now_ms()).clamp(10, 2_000));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(soonest as u64)) => {}
            }
        }
    }

    async fn pass(
        &self,
        progress: &mut HashMap<i64, Progress>,
        given_up: &mut HashSet<i64>,
    ) -> Result<(), crate::journal::JournalError> {
        let rows = self.journal.in_state(TxnState::InDoubt).await?;
        let mut due = Vec::new();
        let mut live = HashSet::new();
        for r in rows {
            if given_up.contains(&r.id) {
                continue;
            }
            let Some(backend) = (self.resolve)(&r) else {
                continue;
            };
            if backend.is_default() {
                continue;
            }
            live.insert(r.id);
            if progress.get(&r.id).is_some_and(|p| p.next_ms > now_ms()) {
                continue;
            }
            // A queue row means the terminals' worker (or repair) owns it.
            if self.journal.reversal_of(r.id).await?.is_some() {
                continue;
            }
            due.push((r, backend));
        }
        progress.retain(|id, _| live.contains(id));
        let results = futures::future::join_all(due.into_iter().map(|(r, b)| {
            let attempts = progress.get(&r.id).map_or(0, |p| p.attempts);
            async move {
                let outcome = self.deliver(&r, &b, attempts).await;
                (r, attempts, outcome)
            }
        }))
        .await;
        for (r, attempts, outcome) in results {
            // From the row's last change (in doubt, or handed back by a repair plan).
            let expired = now_ms() >= r.updated_ms + self.policy.ttl_s as i64 * 1_000;
            let out_of_attempts = attempts + 1 >= i64::from(self.policy.max_attempts);
            match outcome {
                Outcome::Done(result) => {
                    // The answer columns are kept (the update only sets what is given).
                    match self
                        .journal
                        .transition(r.id, TxnState::Reversed, Answer::default())
                        .await
                    {
                        Ok(()) => tracing::info!(
                            journal_id = r.id,
                            attempts = attempts + 1,
                            result,
                            "channel reversal acknowledged"
                        ),
                        Err(e) => {
                            tracing::error!(journal_id = r.id, error = %e, "cannot record a channel reversal")
                        }
                    }
                    progress.remove(&r.id);
                }
                Outcome::Refused(result) => {
                    tracing::error!(
                        journal_id = r.id,
                        result,
                        "channel reversal refused; needs repair"
                    );
                    self.give_up(r.id, &result, attempts + 1, given_up).await;
                    progress.remove(&r.id);
                }
                Outcome::Retry(result) if expired || out_of_attempts => {
                    tracing::error!(
                        journal_id = r.id,
                        result,
                        "channel reversal given up; needs repair"
                    );
                    self.give_up(r.id, &result, attempts + 1, given_up).await;
                    progress.remove(&r.id);
                }
                Outcome::Retry(result) => {
                    tracing::warn!(
                        journal_id = r.id,
                        result,
                        "channel reversal not acknowledged; will retry"
                    );
                    progress.insert(
                        r.id,
                        Progress {
                            attempts: attempts + 1,
                            next_ms: now_ms() + self.policy.retry_ms as i64,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Leaves the durable `FAILED` mark that makes row `id` a repair item (and keeps it out of
    /// this worker's hands until a repair removes it); in memory too, in case the mark cannot
    /// be written now.
    async fn give_up(&self, id: i64, result: &str, attempts: i64, given_up: &mut HashSet<i64>) {
        if let Err(e) = self
            .journal
            .mark_backend_reversal_failed(id, result, attempts)
            .await
        {
            tracing::error!(journal_id = id, error = %e, "cannot record a given-up channel reversal");
            given_up.insert(id);
        }
    }

    async fn deliver(&self, r: &TxnRecord, backend: &Backend, attempts: i64) -> Outcome {
        let mut message = reversal_message(r, attempts, None);
        fit_message(&mut message, &backend.spec);
        let prepared = match backend.prepare(self.hsm.as_ref(), &message) {
            Ok(p) => p,
            Err(e) => return Outcome::Retry(format!("cannot build the reversal: {e}")),
        };
        match backend
            .send(self.hsm.as_ref(), &prepared, backend.timeout)
            .await
        {
            Ok(answer) => match response_code(&answer) {
                Some(c @ ("00" | "25")) => Outcome::Done(format!("{} answered {c}", backend.name)),
                Some(c) if !self.policy.retryable_codes.iter().any(|x| x == c) => {
                    Outcome::Refused(format!("{} answered {c}", backend.name))
                }
                c => Outcome::Retry(format!(
                    "{} answered {}",
                    backend.name,
                    c.unwrap_or("without F39")
                )),
            },
            Err(e) => Outcome::Retry(format!("{}: {e}", backend.name)),
        }
    }
}

enum Outcome {
    Done(String),
    Refused(String),
    Retry(String),
}
