//! The transaction-state table: the host-approved withdrawal authorisations this terminal may
//! dispense against (invariant 1), kept in memory and persisted in `<state dir>/transactions.json`
//! with atomic replacement (temp file, fsync, rename, fsync of the directory), so `kill -9` at
//! any moment leaves the old or the new table, never a torn one.
//!
//! An authorisation moves `approved → dispensed → presented` (or straight to `presented` for a
//! dispense that presents at once). The move is persisted **before** the command goes to the
//! dispenser, so a crash during a dispense can never make the same authorisation usable again.
//!
//! Only the transaction client (phase 2) creates authorisations, through [`TxnTable::approve`];
//! nothing a page sends can reach it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name inside the state directory.
pub const STATE_FILE: &str = "transactions.json";

/// Where an authorisation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthState {
    /// Approved by the host; nothing dispensed yet.
    Approved,
    /// A dispense was sent to the dispenser (notes stacked, or the attempt failed).
    Dispensed,
    /// The notes were presented to the customer.
    Presented,
}

/// One host-approved withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The host's approval reference (e.g. RRN + auth code), unique per terminal.
    pub reference: String,
    /// The terminal the host approved it for.
    pub terminal_id: String,
    /// Minor units.
    pub amount: u64,
    /// ISO 4217.
    pub currency: String,
    /// Where it stands.
    pub state: AuthState,
    /// When it was approved (ms since the epoch).
    pub approved_at_ms: u64,
    /// When the dispense was sent.
    #[serde(default)]
    pub dispensed_at_ms: Option<u64>,
    /// How the dispense ended (`SUCCESS`, `COMMAND_ERROR -306 NOTDISPENSABLE`, `unknown: …`).
    #[serde(default)]
    pub outcome: Option<String>,
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

    /// Records a host approval for this terminal. Phase 2's transaction client is the only
    /// production caller; tests use it through the library.
    pub async fn approve(
        &self,
        reference: &str,
        amount: u64,
        currency: &str,
    ) -> Result<Authorization, StateError> {
        if reference.is_empty() || reference.len() > 64 {
            return Err(StateError::Invalid(
                "reference must be 1-64 characters".into(),
            ));
        }
        if amount == 0 || currency.len() != 3 {
            return Err(StateError::Invalid(
                "amount must be > 0 and currency an ISO 4217 code".into(),
            ));
        }
        let mut auths = self.inner.lock().await;
        if auths.iter().any(|a| a.reference == reference) {
            return Err(StateError::Duplicate(reference.to_owned()));
        }
        let auth = Authorization {
            reference: reference.to_owned(),
            terminal_id: self.terminal_id.clone(),
            amount,
            currency: currency.to_owned(),
            state: AuthState::Approved,
            approved_at_ms: now_ms(),
            dispensed_at_ms: None,
            outcome: None,
        };
        let mut next = auths.clone();
        next.push(auth.clone());
        self.save(&next).await?;
        *auths = next;
        Ok(auth)
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

    /// Checks a dispense of `amount currency` against `reference` and, if allowed, marks it
    /// dispensed (or presented, with `present`) and saves that before returning.
    pub async fn claim_dispense(
        &self,
        reference: &str,
        amount: u64,
        currency: &str,
        present: bool,
    ) -> Result<(), Refusal> {
        let mut auths = self.inner.lock().await;
        let Some(i) = auths.iter().position(|a| a.reference == reference) else {
            return Err(Refusal::Unknown(reference.to_owned()));
        };
        let a = &auths[i];
        if a.terminal_id != self.terminal_id {
            return Err(Refusal::OtherTerminal(reference.to_owned()));
        }
        if a.dispensed() {
            return Err(Refusal::AlreadyDispensed(reference.to_owned()));
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
        self.save(&next)
            .await
            .map_err(|e| Refusal::NotSaved(e.to_string()))?;
        *auths = next;
        Ok(())
    }

    /// Checks a present of the notes stacked for `reference` and marks it presented.
    pub async fn claim_present(&self, reference: &str) -> Result<(), Refusal> {
        let mut auths = self.inner.lock().await;
        let Some(i) = auths.iter().position(|a| a.reference == reference) else {
            return Err(Refusal::Unknown(reference.to_owned()));
        };
        if auths[i].terminal_id != self.terminal_id {
            return Err(Refusal::OtherTerminal(reference.to_owned()));
        }
        if auths[i].state != AuthState::Dispensed {
            return Err(Refusal::NothingStacked(reference.to_owned()));
        }
        let mut next = auths.clone();
        next[i].state = AuthState::Presented;
        self.save(&next)
            .await
            .map_err(|e| Refusal::NotSaved(e.to_string()))?;
        *auths = next;
        Ok(())
    }

    /// Records how a dispense or present ended (kept for the phase-2 reconciliation).
    pub async fn record_outcome(&self, reference: &str, outcome: &str) -> Result<(), StateError> {
        let mut auths = self.inner.lock().await;
        let Some(i) = auths.iter().position(|a| a.reference == reference) else {
            return Ok(());
        };
        let mut next = auths.clone();
        next[i].outcome = Some(outcome.to_owned());
        self.save(&next).await?;
        *auths = next;
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
        again.claim_present("R1").await.unwrap();
        assert!(again.claim_present("R1").await.is_err());
        assert!(matches!(
            again.claim_dispense("R2", 1, "CNY", true).await,
            Err(Refusal::Unknown(_))
        ));
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
