//! Host commands (seed 001 §4.3.1 (2) 6): instructions from the backoffice that the keeper carries
//! out when the terminal is idle — never in the middle of a customer's transaction.
//!
//! This module is the seam only. The command set is fixed here so the backoffice, the control
//! API and the executors agree on it; each kind is implemented by a later issue as a
//! [`HostCommandExecutor`]. Until one is registered for a kind, the control API answers
//! `501 NOT_IMPLEMENTED` for it instead of queueing something nobody would run. Idleness is
//! reported by terminal-native in its heartbeats (`{"idle": true}`) and kept in the service
//! state; the future dispatcher waits for it before running a queued command.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// A command from the backoffice to this terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostCommand {
    /// Stop every process in order, then reboot the machine.
    Reboot,
    /// Stop every process in order, then power off.
    Shutdown,
    /// Capture the customer screen and upload it.
    Screenshot,
    /// Upload one file (an e-journal, a log) to the backoffice.
    FetchFile {
        /// The file on this terminal.
        path: PathBuf,
    },
    /// Install a version: back up, stop, replace, start, health-check, commit or roll back.
    Update {
        /// The version the backoffice assigned.
        version: String,
    },
    /// Go back to a previously installed version.
    Rollback {
        /// The version to return to.
        version: String,
    },
}

impl HostCommand {
    /// The command's kind as a stable string (`reboot`, `fetch_file`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            HostCommand::Reboot => "reboot",
            HostCommand::Shutdown => "shutdown",
            HostCommand::Screenshot => "screenshot",
            HostCommand::FetchFile { .. } => "fetch_file",
            HostCommand::Update { .. } => "update",
            HostCommand::Rollback { .. } => "rollback",
        }
    }
}

/// The result of an executed command, reported back to the backoffice.
pub type HostCommandResult = Result<serde_json::Value, String>;

/// Carries out some kinds of [`HostCommand`]. Registered with the keeper by the issue that
/// implements the kind; called only while the terminal reports itself idle.
pub trait HostCommandExecutor: Send + Sync {
    /// Whether this executor handles `command`.
    fn handles(&self, command: &HostCommand) -> bool;
    /// Runs `command` to completion.
    fn execute(
        &self,
        command: HostCommand,
    ) -> Pin<Box<dyn Future<Output = HostCommandResult> + Send + '_>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let c: HostCommand =
            serde_json::from_str(r#"{"kind":"fetch_file","path":"/var/ej/1.txt"}"#).unwrap();
        assert_eq!(c.kind(), "fetch_file");
        assert_eq!(
            serde_json::to_value(HostCommand::Reboot).unwrap(),
            serde_json::json!({"kind": "reboot"})
        );
        assert!(serde_json::from_str::<HostCommand>(r#"{"kind":"format_disk"}"#).is_err());
    }
}
