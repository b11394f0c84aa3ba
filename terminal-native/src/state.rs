//! The durable transaction log (invariant 2) and the dispense authorisations (invariant 1):
//! one entry per financial transaction of this terminal, kept in memory and persisted in
//! `<state dir>/transactions.json` with atomic replacement (temp file, fsync, rename, fsync of
//! the directory), so `kill -9` at any moment leaves the old or the new table, never a torn one.
//!
//! Every step is saved **before** it is taken:
//!
//! ```text
//! requested ─▶ approved ─▶ dispensed ─▶ presented ─▶ completed       (withdrawal)
//!     │            │           │            │
//!     └────────────┴───────────┴────────────┴──▶ reversal_pending ─▶ reversed
//! requested ─▶ completed | declined | reversal_pending                 (transfer, PIN change)
//! ```
//!
//! - `requested`: the 0200 is about to be sent (its STAN, date and time are here, so it can be
//!   reversed whatever happens next);
//! - `approved`: the host approved a withdrawal: the authorisation a dispense must name;
//! - `dispensed` / `presented`: a dispense / present was sent (the claim is saved before the
//!   command goes to the dispenser, so a crash can never make the authorisation usable again);
//!   `outcome` records how the command ended;
//! - `reversal_pending`: a durable reversal queue entry (amount the customer got, attempts,
//!   next attempt); `reversed` when online-txn acknowledged it; `unresolved` when the log
//!   cannot tell and an operator must (e.g. an authorisation written by a tool without its 8583
//!   identity that was then dispensed and failed). Such tool-written approvals are left as they
//!   are at start-up.
//!
//! Only the transaction client creates entries ([`TxnTable::log_request`], and
//! [`TxnTable::approve`] for tests and tools); nothing a page sends can reach them.
//!
//! **Test hook.** With `OPENTELLER_TEST_CRASH_AT=<step>` in the environment, the process kills
//! itself with SIGKILL right after the save of that step ([`crash_point`]): `requested`,
//! `approved`, `dispensing`, `dispensed`, `presenting`, `completed`, `reversal_queued`,
//! `reversal_sending`. Never set it in production.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name inside the state directory.
pub const STATE_FILE: &str = "transactions.json";
/// The environment variable of the crash test hook.
pub const CRASH_VAR: &str = "OPENTELLER_TEST_CRASH_AT";
/// Final entries (completed, declined, reversed) kept in the file; older ones are dropped.
const KEEP_FINAL: usize = 500;

/// Kills the process (SIGKILL, no clean-up) when [`CRASH_VAR`] names `step`: the test hook for
/// crash recovery. Does nothing otherwise.
pub fn crash_point(step: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_VAR).ok().filter(|s| !s.is_empty()));
    if at.as_deref() == Some(step) {
        eprintln!("terminal-native: {CRASH_VAR}={step}: killing myself");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort();
    }
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthState {
    /// The request is about to be sent; no answer yet.
    Requested,
    /// A withdrawal approved by the host; nothing dispensed yet.
    Approved,
    /// A dispense was sent to the dispenser (notes stacked, or the attempt failed).
    Dispensed,
    /// The notes were presented to the customer (or the present was sent).
    Presented,
    /// Done: notes taken, transfer or PIN change approved.
    Completed,
    /// The host declined; nothing to undo.
    Declined,
    /// A reversal is queued (see `reversal`).
    ReversalPending,
    /// online-txn acknowledged the reversal.
    Reversed,
    /// The log cannot settle it; an operator must reconcile it.
    Unresolved,
}

impl AuthState {
    /// Nothing is left to do.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            AuthState::Completed
                | AuthState::Declined
                | AuthState::Reversed
                | AuthState::Unresolved
        )
    }
}

/// What kind of financial transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TxnKind {
    /// F3 01: cash withdrawal (the only kind that authorises a dispense).
    #[default]
    Withdrawal,
    /// F3 40: transfer.
    Transfer,
    /// F3 70: PIN change.
    PinChange,
}

/// The 8583 identity of the original request, what a reversal names (no PAN, no PIN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Original {
    /// F11.
    pub stan: String,
    /// F12 hhmmss.
    pub time: String,
    /// F13 MMDD.
    pub date: String,
    /// F3.
    pub processing_code: String,
    /// F49 (numeric), when the request had one.
    pub currency_numeric: Option<String>,
}

/// A queued reversal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reversal {
    /// Why (journaled).
    pub reason: String,
    /// Minor units the customer did get (0 = full reversal; less than the amount: partial,
    /// sent in F95).
    pub delivered: u64,
    /// Attempts sent so far (the first is a 0400, repeats are 0401).
    pub attempts: u32,
    /// Not before (ms since the epoch).
    pub next_at_ms: u64,
    /// When it was queued.
    pub queued_at_ms: u64,
    /// What the last attempt got.
    pub last_result: Option<String>,
    /// F39 of the reversal, decided when it was queued: `98` when the request has no
    /// recorded answer (none came, it was bad, or it could not be saved), `06` otherwise.
    /// Absent in entries written by older versions (then guessed from `reason`).
    #[serde(default)]
    pub reason_code: Option<String>,
}

/// The reversal reason code (F39) for an entry queued from `state`: `98` when the request
/// has no recorded answer, `06` otherwise.
pub fn reversal_reason_code(state: AuthState) -> &'static str {
    if state == AuthState::Requested {
        "98"
    } else {
        "06"
    }
}

/// Cash unit counters of the dispenser, taken just before a dispense: after a crash they tell
/// how many notes were presented for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitCount {
    /// Cash unit number.
    pub number: u32,
    /// Note value in minor units.
    pub denomination: u64,
    /// Cumulative presented counter.
    pub presented: u32,
    /// Cumulative dispensed counter.
    pub dispensed: u32,
}

/// One transaction of this terminal (for a withdrawal: the authorisation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// Unique per terminal: `F41-F11-F13` for the transaction client's entries; the
    /// authorisation a dispense names.
    pub reference: String,
    /// The terminal the host approved it for.
    pub terminal_id: String,
    /// Minor units (0 for a PIN change).
    pub amount: u64,
    /// ISO 4217.
    pub currency: String,
    /// Where it stands.
    pub state: AuthState,
    /// When it was logged (requested, or approved for [`TxnTable::approve`]) (ms since the
    /// epoch).
    pub approved_at_ms: u64,
    /// When the dispense was sent.
    #[serde(default)]
    pub dispensed_at_ms: Option<u64>,
    /// How the dispense / present ended (`SUCCESS`, `COMMAND_ERROR -335 ITEMSNOTTAKEN`,
    /// `unknown: …`, `interrupted: …`).
    #[serde(default)]
    pub outcome: Option<String>,
    /// Withdrawal, transfer or PIN change.
    #[serde(default)]
    pub kind: TxnKind,
    /// The request's 8583 identity (absent for hand-written authorisations).
    #[serde(default)]
    pub original: Option<Original>,
    /// The host's F37.
    #[serde(default)]
    pub rrn: Option<String>,
    /// The dispenser's counters before the dispense.
    #[serde(default)]
    pub counters_before: Option<Vec<UnitCount>>,
    /// The reversal, once queued.
    #[serde(default)]
    pub reversal: Option<Reversal>,
    /// What the settler found delivered (minor units), saved before it clears the output:
    /// once the output is cleared the counters can no longer tell, so a later pass uses
    /// this value instead of counting again.
    #[serde(default)]
    pub settling_delivered: Option<u64>,
}

impl Authorization {
    /// True once a dispense was sent against it.
    pub fn dispensed(&self) -> bool {
        self.state != AuthState::Approved
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    version: u32,
    authorizations: Vec<Authorization>,
}

/// Why the state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O on the state directory.
    #[error("transaction state {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a table this version understands.
    #[error("transaction state {path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// `approve` with a reference already in the table.
    #[error("authorisation {0} exists already")]
    Duplicate(String),
    /// `approve` with an empty reference or currency, or a zero amount.
    #[error("invalid authorisation: {0}")]
    Invalid(String),
    /// No entry of that reference.
    #[error("no transaction {0} in the log")]
    Unknown(String),
    /// The entry is no longer in the state the change expected (something else moved it
    /// meanwhile); nothing was changed.
    #[error("transaction {reference} is {state:?} now: left as it is")]
    Moved {
        /// The entry.
        reference: String,
        /// Where it stands.
        state: AuthState,
    },
}

/// Why a dispense or present was refused by the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such reference.
    #[error("no approved authorisation {0}")]
    Unknown(String),
    /// Approved for another terminal.
    #[error("authorisation {0} belongs to another terminal")]
    OtherTerminal(String),
    /// Amount or currency differ from the approval.
    #[error("authorisation {reference} is for {approved}, the command asks for {asked}")]
    Mismatch {
        /// The reference.
        reference: String,
        /// `10000 CNY`.
        approved: String,
        /// What the command asked.
        asked: String,
    },
    /// A dispense was already sent against it.
    #[error("authorisation {0} was dispensed already")]
    AlreadyDispensed(String),
    /// Not (or no longer) an approved withdrawal: requested, declined, reversed, a transfer…
    #[error("transaction {0} is not an approved withdrawal (state {1:?})")]
    NotApproved(String, AuthState),
    /// Present without a dispense of this authorisation waiting in the stacker.
    #[error("authorisation {0} has no stacked notes to present")]
    NothingStacked(String),
    /// The table could not be persisted, so nothing was allowed.
    #[error("transaction state not saved: {0}")]
    NotSaved(String),
}

/// The table; all changes are serialised through one async lock held across the save, so two
/// concurrent dispenses of one authorisation cannot both pass.
#[derive(Debug)]
pub struct TxnTable {
    dir: PathBuf,
    terminal_id: String,
    inner: tokio::sync::Mutex<Vec<Authorization>>,
}

fn now_ms() -> u64 {
    openteller_keeper::unix_ms()
}

impl TxnTable {
    /// Loads the table from `dir` (created if missing; an absent file is an empty table).
    pub fn load(dir: &Path, terminal_id: &str) -> Result<TxnTable, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(STATE_FILE);
        let auths = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: TableFile =
                    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if file.version != 1 {
                    return Err(StateError::Corrupt {
                        path,
                        message: format!("unknown version {}", file.version),
                    });
                }
                file.authorizations
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        Ok(TxnTable {
            dir: dir.to_owned(),
            terminal_id: terminal_id.to_owned(),
            inner: tokio::sync::Mutex::new(auths),
        })
    }

    /// Start-up recovery, before anything else may use the table: a request without a
    /// recorded answer and an approval never dispensed are queued for a full reversal; a
    /// dispense or present under way (or notes stacked) when the process stopped gets the
    /// outcome `interrupted: …` so the settler looks at the dispenser. Answers the journal
    /// lines to write.
    pub fn recover_after_restart(&self) -> Result<Vec<String>, StateError> {
        let Ok(mut auths) = self.inner.try_lock() else {
            return Err(StateError::Invalid("the table is in use".into()));
        };
        let now = now_ms();
        let mut next = auths.clone();
        let mut lines = Vec::new();
        for a in next.iter_mut() {
            let before = a.state;
            match a.state {
                // Written by a tool or a test, not by the transaction client: it has no 8583
                // identity to reverse with, and stays as it was written.
                AuthState::Approved if a.original.is_none() => {}
                AuthState::Requested | AuthState::Approved => {
                    let reason = if a.state == AuthState::Requested {
                        "restart: the request has no recorded answer"
                    } else {
                        "restart: approved, never dispensed"
                    };
                    if a.original.is_some() {
                        let reason_code = reversal_reason_code(a.state).to_owned();
                        a.state = AuthState::ReversalPending;
                        a.reversal = Some(Reversal {
                            reason: reason.into(),
                            delivered: 0,
                            attempts: 0,
                            next_at_ms: now,
                            queued_at_ms: now,
                            last_result: None,
                            reason_code: Some(reason_code),
                        });
                    } else {
                        a.state = AuthState::Unresolved;
                        a.outcome = Some(format!("needs reconciliation: {reason}"));
                    }
                    lines.push(format!(
                        "RECOVERY ref={} {:?} {} {} {before:?} -> {:?}: {reason}",
                        a.reference, a.kind, a.amount, a.currency, a.state
                    ));
                }
                AuthState::Dispensed | AuthState::Presented => {
                    let was = a.outcome.clone().unwrap_or_else(|| "no completion".into());
                    a.outcome = Some(format!("interrupted: restart ({was})"));
                    lines.push(format!(
                        "RECOVERY ref={} {} {} {before:?} ({was}) interrupted: the dispenser decides",
                        a.reference, a.amount, a.currency
                    ));
                }
                AuthState::ReversalPending => lines.push(format!(
                    "RECOVERY ref={} reversal still pending: resent",
                    a.reference
                )),
                _ => {}
            }
        }
        if next != *auths {
            let file = TableFile {
                version: 1,
                authorizations: next.clone(),
            };
            let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Io {
                path: self.dir.join(STATE_FILE),
                source: std::io::Error::other(e),
            })?;
            write_atomic(&self.dir, STATE_FILE, &bytes)?;
            *auths = next;
        }
        Ok(lines)
    }

    fn check_new(reference: &str, currency: &str) -> Result<(), StateError> {
        if reference.is_empty() || reference.len() > 64 {
            return Err(StateError::Invalid(
                "reference must be 1-64 characters".into(),
            ));
        }
        if currency.len() != 3 {
            return Err(StateError::Invalid(
                "currency must be an ISO 4217 code".into(),
            ));
        }
        Ok(())
    }

    async fn insert(&self, auth: Authorization) -> Result<Authorization, StateError> {
        let mut auths = self.inner.lock().await;
        if auths.iter().any(|a| a.reference == auth.reference) {
            return Err(StateError::Duplicate(auth.reference));
        }
        let mut next = auths.clone();
        next.push(auth.clone());
        prune(&mut next);
        self.save(&next).await?;
        *auths = next;
        Ok(auth)
    }

    /// Records a host approval for this terminal without an 8583 identity (tests and tools;
    /// such an authorisation cannot be reversed automatically).
    pub async fn approve(
        &self,
        reference: &str,
        amount: u64,
        currency: &str,
    ) -> Result<Authorization, StateError> {
        Self::check_new(reference, currency)?;
        if amount == 0 {
            return Err(StateError::Invalid("amount must be > 0".into()));
        }
        self.insert(Authorization {
            reference: reference.to_owned(),
            terminal_id: self.terminal_id.clone(),
            amount,
            currency: currency.to_owned(),
            state: AuthState::Approved,
            approved_at_ms: now_ms(),
            dispensed_at_ms: None,
            outcome: None,
            kind: TxnKind::Withdrawal,
            original: None,
            rrn: None,
            counters_before: None,
            settling_delivered: None,
            reversal: None,
        })
        .await
    }

    /// Logs a request about to be sent (state `requested`); crash point `requested`.
    pub async fn log_request(
        &self,
        reference: &str,
        kind: TxnKind,
        amount: u64,
        currency: &str,
        original: Original,
    ) -> Result<Authorization, StateError> {
        Self::check_new(reference, currency)?;
        let a = self
            .insert(Authorization {
                reference: reference.to_owned(),
                terminal_id: self.terminal_id.clone(),
                amount,
                currency: currency.to_owned(),
                state: AuthState::Requested,
                approved_at_ms: now_ms(),
                dispensed_at_ms: None,
                outcome: None,
                kind,
                original: Some(original),
                rrn: None,
                counters_before: None,
                settling_delivered: None,
                reversal: None,
            })
            .await?;
        crash_point("requested");
        Ok(a)
    }

    /// Applies `change` to entry `reference` and saves the result before returning it.
    pub async fn update<F>(&self, reference: &str, change: F) -> Result<Authorization, StateError>
    where
        F: FnOnce(&mut Authorization),
    {
        self.try_update(reference, |a| {
            change(a);
            Ok(())
        })
        .await
    }

    /// [`TxnTable::update`] whose change may refuse (it checks the entry's state under the
    /// table's lock): an error leaves the entry and the file as they were.
    pub async fn try_update<F>(
        &self,
        reference: &str,
        change: F,
    ) -> Result<Authorization, StateError>
    where
        F: FnOnce(&mut Authorization) -> Result<(), StateError>,
    {
        let mut auths = self.inner.lock().await;
        let Some(i) = auths.iter().position(|a| a.reference == reference) else {
            return Err(StateError::Unknown(reference.to_owned()));
        };
        let mut next = auths.clone();
        change(&mut next[i])?;
        let updated = next[i].clone();
        prune(&mut next);
        self.save(&next).await?;
        *auths = next;
        Ok(updated)
    }

    /// The host's answer to a logged request: a withdrawal approved becomes `approved`
    /// (crash point `approved`), a transfer or PIN change approved `completed`, anything
    /// else `declined`.
    pub async fn answered(
        &self,
        reference: &str,
        approved: bool,
        rrn: Option<String>,
    ) -> Result<Authorization, StateError> {
        let a = self
            .update(reference, |a| {
                a.rrn = rrn;
                a.state = match (approved, a.kind) {
                    (false, _) => AuthState::Declined,
                    (true, TxnKind::Withdrawal) => AuthState::Approved,
                    (true, _) => AuthState::Completed,
                };
            })
            .await?;
        if a.state == AuthState::Approved {
            crash_point("approved");
        }
        Ok(a)
    }

    /// Queues a reversal of `reference` (the customer got `delivered` minor units) if it is
    /// still in one of the states `from` (checked under the table's lock, so a dispense
    /// claimed meanwhile is not reversed under the customer's hands:
    /// [`StateError::Moved`]); crash point `reversal_queued`.
    pub async fn queue_reversal(
        &self,
        reference: &str,
        reason: &str,
        delivered: u64,
        from: &[AuthState],
    ) -> Result<Authorization, StateError> {
        let now = now_ms();
        let a = self
            .try_update(reference, |a| {
                if !from.contains(&a.state) {
                    return Err(StateError::Moved {
                        reference: a.reference.clone(),
                        state: a.state,
                    });
                }
                if a.original.is_none() {
                    a.state = AuthState::Unresolved;
                    a.outcome = Some(format!("needs reconciliation: {reason}"));
                    return Ok(());
                }
                let reason_code = reversal_reason_code(a.state).to_owned();
                a.state = AuthState::ReversalPending;
                a.reversal = Some(Reversal {
                    reason: reason.to_owned(),
                    delivered,
                    attempts: 0,
                    next_at_ms: now,
                    queued_at_ms: now,
                    last_result: None,
                    reason_code: Some(reason_code),
                });
                Ok(())
            })
            .await?;
        crash_point("reversal_queued");
        Ok(a)
    }

    /// One authorisation.
    pub async fn get(&self, reference: &str) -> Option<Authorization> {
        self.inner
            .lock()
            .await
            .iter()
            .find(|a| a.reference == reference)
            .cloned()
    }

    /// Every authorisation, oldest first.
    pub async fn all(&self) -> Vec<Authorization> {
        self.inner.lock().await.clone()
    }

    /// The first withdrawal whose notes may still be stacked or presented (dispensed or
    /// presented, not yet settled): while there is one, only the settler may clear the
    /// dispenser's output (`Retract`, `Reject`, `Reset`).
    pub async fn unsettled_withdrawal(&self) -> Option<Authorization> {
        self.inner
            .lock()
            .await
            .iter()
            .find(|a| matches!(a.state, AuthState::Dispensed | AuthState::Presented))
            .cloned()
    }

    /// Checks a dispense of `amount currency` against `reference` and, if allowed, marks it
    /// dispensed (or presented, with `present`) with the dispenser's counters and saves that
    /// before returning; crash point `dispensing`.
    pub async fn claim_dispense(
        &self,
        reference: &str,
        amount: u64,
        currency: &str,
        present: bool,
    ) -> Result<(), Refusal> {
        self.claim_dispense_counted(reference, amount, currency, present, None)
            .await
    }

    /// [`TxnTable::claim_dispense`] recording the dispenser's counters before the dispense.
    pub async fn claim_dispense_counted(
        &self,
        reference: &str,
        amount: u64,
        currency: &str,
        present: bool,
        counters: Option<Vec<UnitCount>>,
    ) -> Result<(), Refusal> {
        let mut auths = self.inner.lock().await;
        let Some(i) = auths.iter().position(|a| a.reference == reference) else {
            return Err(Refusal::Unknown(reference.to_owned()));
        };
        let a = &auths[i];
        if a.terminal_id != self.terminal_id {
            return Err(Refusal::OtherTerminal(reference.to_owned()));
        }
        match a.state {
            AuthState::Approved if a.kind == TxnKind::Withdrawal => {}
            AuthState::Dispensed | AuthState::Presented | AuthState::Completed => {
                return Err(Refusal::AlreadyDispensed(reference.to_owned()));
            }
            AuthState::ReversalPending | AuthState::Reversed if a.dispensed_at_ms.is_some() => {
                return Err(Refusal::AlreadyDispensed(reference.to_owned()));
            }
            other => return Err(Refusal::NotApproved(reference.to_owned(), other)),
        }
        if a.amount != amount || !a.currency.eq_ignore_ascii_case(currency) {
            return Err(Refusal::Mismatch {
                reference: reference.to_owned(),
                approved: format!("{} {}", a.amount, a.currency),
                asked: format!("{amount} {currency}"),
            });
        }
        let mut next = auths.clone();
        next[i].state = if present {
            AuthState::Presented
        } else {
            AuthState::Dispensed
        };
        next[i].dispensed_at_ms = Some(now_ms());
        next[i].counters_before = counters;
        self.save(&next)
            .await
            .map_err(|e| Refusal::NotSaved(e.to_string()))?;
        *auths = next;
        drop(auths);
        crash_point("dispensing");
        Ok(())
    }

    /// Checks a present of the notes stacked for `reference` and marks it presented; crash
    /// point `presenting`.
    pub async fn claim_present(&self, reference: &str) -> Result<(), Refusal> {
        let mut auths = self.inner.lock().await;
        let Some(i) = auths.iter().position(|a| a.reference == reference) else {
            return Err(Refusal::Unknown(reference.to_owned()));
        };
        if auths[i].terminal_id != self.terminal_id {
            return Err(Refusal::OtherTerminal(reference.to_owned()));
        }
        if auths[i].state != AuthState::Dispensed || auths[i].outcome.as_deref() != Some("SUCCESS")
        {
            return Err(Refusal::NothingStacked(reference.to_owned()));
        }
        let mut next = auths.clone();
        next[i].state = AuthState::Presented;
        next[i].outcome = None;
        self.save(&next)
            .await
            .map_err(|e| Refusal::NotSaved(e.to_string()))?;
        *auths = next;
        drop(auths);
        crash_point("presenting");
        Ok(())
    }

    /// Records how a dispense or present ended. A present that succeeded (the customer took
    /// the notes) completes the withdrawal (crash point `completed`); a dispense that stacked
    /// the notes has crash point `dispensed`.
    pub async fn record_outcome(&self, reference: &str, outcome: &str) -> Result<(), StateError> {
        let updated = match self
            .update(reference, |a| {
                a.outcome = Some(outcome.to_owned());
                if a.state == AuthState::Presented && outcome == "SUCCESS" {
                    a.state = AuthState::Completed;
                }
            })
            .await
        {
            Ok(a) => a,
            Err(StateError::Unknown(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        match updated.state {
            AuthState::Completed => crash_point("completed"),
            AuthState::Dispensed if outcome == "SUCCESS" => crash_point("dispensed"),
            _ => {}
        }
        Ok(())
    }

    async fn save(&self, auths: &[Authorization]) -> Result<(), StateError> {
        let file = TableFile {
            version: 1,
            authorizations: auths.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Io {
            path: self.dir.join(STATE_FILE),
            source: std::io::Error::other(e),
        })?;
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || write_atomic(&dir, STATE_FILE, &bytes)).await {
            Ok(r) => r,
            Err(e) => Err(StateError::Io {
                path: self.dir.join(STATE_FILE),
                source: std::io::Error::other(e),
            }),
        }
    }
}

/// Whether an entry is done with for good and may be pruned: completed, declined or
/// reversed. An `unresolved` one waits for an operator and is never dropped.
fn prunable(a: &Authorization) -> bool {
    matches!(
        a.state,
        AuthState::Completed | AuthState::Declined | AuthState::Reversed
    )
}

/// Drops the oldest prunable entries beyond [`KEEP_FINAL`].
fn prune(auths: &mut Vec<Authorization>) {
    let finals = auths.iter().filter(|a| prunable(a)).count();
    let mut drop_n = finals.saturating_sub(KEEP_FINAL);
    if drop_n == 0 {
        return;
    }
    auths.retain(|a| {
        if drop_n > 0 && prunable(a) {
            drop_n -= 1;
            false
        } else {
            true
        }
    });
}

/// Replaces `dir/name` with `bytes`: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| StateError::Io { path: p, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_without_a_recorded_answer_is_reversed_with_98() {
        let dir = tempfile::tempdir().unwrap();
        let t = TxnTable::load(dir.path(), "T1").unwrap();
        let original = Original {
            stan: "000011".into(),
            time: "101500".into(),
            date: "1122".into(),
            processing_code: "010000".into(),
            currency_numeric: Some("156".into()),
        };
        t.log_request("Q1", TxnKind::Withdrawal, 500, "CNY", original.clone())
            .await
            .unwrap();
        t.log_request("Q2", TxnKind::Withdrawal, 500, "CNY", original)
            .await
            .unwrap();
        t.answered("Q2", true, None).await.unwrap();
        let again = TxnTable::load(dir.path(), "T1").unwrap();
        again.recover_after_restart().unwrap();
        let code = |a: Authorization| a.reversal.unwrap().reason_code.unwrap();
        assert_eq!(code(again.get("Q1").await.unwrap()), "98");
        assert_eq!(code(again.get("Q2").await.unwrap()), "06");
    }

    #[tokio::test]
    async fn pruning_keeps_what_waits_for_an_operator() {
        let dir = tempfile::tempdir().unwrap();
        let t = TxnTable::load(dir.path(), "T1").unwrap();
        t.approve("U1", 100, "CNY").await.unwrap();
        t.update("U1", |a| a.state = AuthState::Unresolved)
            .await
            .unwrap();
        for i in 0..KEEP_FINAL + 2 {
            let r = format!("C{i}");
            t.approve(&r, 100, "CNY").await.unwrap();
            t.update(&r, |a| a.state = AuthState::Completed)
                .await
                .unwrap();
        }
        let all = t.all().await;
        assert_eq!(all.len(), KEEP_FINAL + 1, "the oldest completed ones went");
        assert!(t.get("U1").await.is_some(), "the unresolved one stays");
        assert!(t.get("C0").await.is_none() && t.get("C1").await.is_none());
    }

    #[tokio::test]
    async fn an_unsettled_withdrawal_is_one_dispensed_or_presented() {
        let dir = tempfile::tempdir().unwrap();
        let t = TxnTable::load(dir.path(), "T1").unwrap();
        t.approve("R1", 10000, "CNY").await.unwrap();
        assert!(t.unsettled_withdrawal().await.is_none(), "approved only");
        t.claim_dispense("R1", 10000, "CNY", true).await.unwrap();
        assert_eq!(t.unsettled_withdrawal().await.unwrap().reference, "R1");
        t.update("R1", |a| a.state = AuthState::Completed)
            .await
            .unwrap();
        assert!(t.unsettled_withdrawal().await.is_none(), "settled");
    }

    #[tokio::test]
    async fn dispenses_once_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let t = TxnTable::load(dir.path(), "T1").unwrap();
        t.approve("R1", 10000, "CNY").await.unwrap();
        assert!(matches!(
            t.approve("R1", 1, "CNY").await,
            Err(StateError::Duplicate(_))
        ));
        assert!(matches!(
            t.claim_dispense("R1", 20000, "CNY", false).await,
            Err(Refusal::Mismatch { .. })
        ));
        assert!(matches!(
            t.claim_dispense("R1", 10000, "USD", false).await,
            Err(Refusal::Mismatch { .. })
        ));
        assert!(matches!(
            t.claim_present("R1").await,
            Err(Refusal::NothingStacked(_))
        ));
        t.claim_dispense("R1", 10000, "CNY", false).await.unwrap();
        assert_eq!(
            t.claim_dispense("R1", 10000, "CNY", false).await,
            Err(Refusal::AlreadyDispensed("R1".into()))
        );
        let again = TxnTable::load(dir.path(), "T1").unwrap();
        assert_eq!(again.get("R1").await.unwrap().state, AuthState::Dispensed);
        assert!(matches!(
            again.claim_present("R1").await,
            Err(Refusal::NothingStacked(_))
        ));
        again.record_outcome("R1", "SUCCESS").await.unwrap();
        again.claim_present("R1").await.unwrap();
        again.record_outcome("R1", "SUCCESS").await.unwrap();
        assert_eq!(again.get("R1").await.unwrap().state, AuthState::Completed);
        assert!(again.claim_present("R1").await.is_err());
        assert!(matches!(
            again.claim_dispense("R2", 1, "CNY", true).await,
            Err(Refusal::Unknown(_))
        ));
    }

    #[tokio::test]
    async fn logs_requests_answers_and_reversals() {
        let dir = tempfile::tempdir().unwrap();
        let t = TxnTable::load(dir.path(), "T1").unwrap();
        let original = Original {
            stan: "000007".into(),
            time: "101500".into(),
            date: "1122".into(),
            processing_code: "010000".into(),
            currency_numeric: Some("156".into()),
        };
        t.log_request(
            "T1-000007-1122",
            TxnKind::Withdrawal,
            500,
            "CNY",
            original.clone(),
        )
        .await
        .unwrap();
        // Not approved yet: no dispense.
        assert!(matches!(
            t.claim_dispense("T1-000007-1122", 500, "CNY", false).await,
            Err(Refusal::NotApproved(_, AuthState::Requested))
        ));
        let a = t
            .answered("T1-000007-1122", true, Some("000000000042".into()))
            .await
            .unwrap();
        assert_eq!(a.state, AuthState::Approved);
        // Queued only from the state the caller saw: not once a dispense was claimed.
        assert!(matches!(
            t.queue_reversal("T1-000007-1122", "test", 0, &[AuthState::Requested])
                .await,
            Err(StateError::Moved {
                state: AuthState::Approved,
                ..
            })
        ));
        assert_eq!(
            t.get("T1-000007-1122").await.unwrap().state,
            AuthState::Approved
        );
        let q = t
            .queue_reversal("T1-000007-1122", "test", 0, &[AuthState::Approved])
            .await
            .unwrap();
        assert_eq!(q.state, AuthState::ReversalPending);
        assert_eq!(q.reversal.unwrap().reason_code.as_deref(), Some("06"));
        assert!(matches!(
            t.claim_dispense("T1-000007-1122", 500, "CNY", false).await,
            Err(Refusal::NotApproved(_, AuthState::ReversalPending))
        ));
        // A transfer approved is complete; declines are final.
        t.log_request(
            "T1-000008-1122",
            TxnKind::Transfer,
            100,
            "CNY",
            original.clone(),
        )
        .await
        .unwrap();
        assert_eq!(
            t.answered("T1-000008-1122", true, None)
                .await
                .unwrap()
                .state,
            AuthState::Completed
        );
        t.log_request("T1-000009-1122", TxnKind::PinChange, 0, "CNY", original)
            .await
            .unwrap();
        assert_eq!(
            t.answered("T1-000009-1122", false, None)
                .await
                .unwrap()
                .state,
            AuthState::Declined
        );
        // A hand-written authorisation cannot be reversed automatically.
        t.approve("R1", 100, "CNY").await.unwrap();
        assert_eq!(
            t.queue_reversal("R1", "test", 0, &[AuthState::Approved])
                .await
                .unwrap()
                .state,
            AuthState::Unresolved
        );
        let again = TxnTable::load(dir.path(), "T1").unwrap();
        assert_eq!(again.all().await, t.all().await);
    }

    #[test]
    fn prunes_only_final_entries() {
        let entry = |i: usize, state| Authorization {
            reference: format!("R{i}"),
            terminal_id: "T1".into(),
            amount: 1,
            currency: "CNY".into(),
            state,
            approved_at_ms: 0,
            dispensed_at_ms: None,
            outcome: None,
            kind: TxnKind::Withdrawal,
            original: None,
            rrn: None,
            counters_before: None,
            settling_delivered: None,
            reversal: None,
        };
        let mut v: Vec<_> = (0..KEEP_FINAL + 10)
            .map(|i| entry(i, AuthState::Completed))
            .collect();
        v.insert(0, entry(9999, AuthState::ReversalPending));
        prune(&mut v);
        assert_eq!(v.len(), KEEP_FINAL + 1);
        assert_eq!(v[0].reference, "R9999");
        assert_eq!(v[1].reference, "R10");
    }

    #[tokio::test]
    async fn refuses_other_terminals_and_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = TxnTable::load(dir.path(), "T1").unwrap();
        t.approve("R1", 100, "CNY").await.unwrap();
        let other = TxnTable::load(dir.path(), "T2").unwrap();
        assert_eq!(
            other.claim_dispense("R1", 100, "CNY", true).await,
            Err(Refusal::OtherTerminal("R1".into()))
        );
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            TxnTable::load(dir.path(), "T1"),
            Err(StateError::Corrupt { .. })
        ));
    }
}
