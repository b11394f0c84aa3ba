//! The reversal store-and-forward worker: delivers queued reversals to the host (0400 first,
//! 0401 for repeats) until the host acknowledges (00, or 25 "original not found": nothing to
//! undo), retrying on no answer and on retryable codes; a reversal out of attempts or past its
//! expiry is marked FAILED for the repair service (seed 002). The queue lives in the journal
//! database, so it survives restarts; the host treats repeats idempotently.

use std::sync::Arc;
use std::time::Duration;

use openteller_codec::FieldValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ReversalConfig;
use crate::engine::{encode_with_mac, reversal_message};
use crate::host::HostLink;
use crate::journal::{Journal, now_ms};
use crate::security::SecurityModule;

/// What the worker needs.
pub struct ReversalWorker {
    /// The queue.
    pub journal: Journal,
    /// The host.
    pub host: Arc<HostLink>,
    /// For the MAC under the ZAK.
    pub hsm: Arc<dyn SecurityModule>,
    /// ZAK name.
    pub zak: String,
    /// Retry policy.
    pub policy: ReversalConfig,
    /// Host answer time limit.
    pub timeout: Duration,
    /// Wakes the worker when something is queued.
    pub wake: Arc<Notify>,
}

impl ReversalWorker {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.journal.due_reversals(64).await {
                Ok(due) if !due.is_empty() => {
                    // Deliver concurrently: one slow reversal must not hold up the rest.
                    let tasks: Vec<_> = due.into_iter().map(|r| self.deliver(r)).collect();
                    futures::future::join_all(tasks).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot read the reversal queue"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn deliver(&self, r: crate::journal::Reversal) {
        let mut message = reversal_message(&r.journal, r.attempts, r.replacement_minor);
        let outcome =
            match encode_with_mac(self.host.spec(), self.hsm.as_ref(), &self.zak, &mut message) {
                Ok(bytes) => self
                    .host
                    .exchange(&message, &bytes, self.timeout)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot build the reversal: {e}")),
            };
        let code = outcome
            .as_ref()
            .ok()
            .and_then(|a| a.get(39).and_then(FieldValue::as_text).map(str::to_owned));
        let now = now_ms();
        let out_of_time =
            r.attempts + 1 >= i64::from(self.policy.max_attempts) || now >= r.expires_ms;
        let retryable = |c: &str| self.policy.retryable_codes.iter().any(|x| x == c);
        let (done, result) = match (&outcome, code.as_deref()) {
            (Ok(_), Some(c @ ("00" | "25"))) => (Some(true), format!("host answered {c}")),
            // A refusal that asking again cannot change: leave it to repair.
            (Ok(_), Some(c)) if !retryable(c) => (Some(false), format!("host answered {c}")),
            (Ok(_), c) => (
                out_of_time.then_some(false),
                format!("host answered {}", c.unwrap_or("without F39")),
            ),
            (Err(e), _) => (out_of_time.then_some(false), e.clone()),
        };
        let retry_at = now + self.policy.retry_ms as i64;
        match done {
            Some(true) => tracing::info!(
                journal_id = r.journal.id,
                attempts = r.attempts + 1,
                "reversal acknowledged"
            ),
            Some(false) => tracing::error!(
                journal_id = r.journal.id,
                result,
                "reversal given up; needs repair"
            ),
            None => tracing::warn!(
                journal_id = r.journal.id,
                result,
                "reversal not acknowledged; will retry"
            ),
        }
        if let Err(e) = self
            .journal
            .reversal_attempt(r.id, &result, done, retry_at)
            .await
        {
            tracing::error!(error = %e, "cannot record a reversal attempt");
        }
    }
}
