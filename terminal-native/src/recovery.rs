//! Settling withdrawals that did not end as planned (invariant 2), and the host's own device
//! commands.
//!
//! The **settler** looks at every withdrawal whose dispense or present failed, ended without a
//! completion, ended ITEMSNOTTAKEN, or was interrupted by a restart
//! ([`crate::state::TxnTable::recover_after_restart`]). It reads the dispenser's status (cash
//! units, output position, notes at the output), works out what the customer got, clears the
//! output (`Retract` presented notes, `Reject` stacked ones, `Reset` a jam), and then either
//! completes the withdrawal (the customer took everything) or queues a reversal for the rest
//! (full, or partial with the delivered amount). It runs when the gate signals a failed money
//! command, after a start, and on every self-check, until nothing is left to settle.
//!
//! [`host_command`] runs a device command for the host itself (transaction client, settler,
//! card retention, self-check) through the gate, journaled like a page's.

use std::sync::Arc;
use std::time::Duration;

use openteller_proto::device::v1::{
    CardReaderCommand, CashDispenserCommand, CashDispenserReset, CashDispenserStatus, CashUnitType,
    Command, CommandCompletion, CompletionCode, DeviceClass, OutputPosition, Reject, Retain,
    Retract, card_reader_command, cash_dispenser_command, command, command_reply, device_status,
};
use tokio_util::sync::CancellationToken;

use crate::Terminal;
use crate::devices::DeviceManager;
use crate::state::{AuthState, Authorization, StateError, UnitCount, crash_point};

/// How long the settler waits before looking again while work is left (dispenser away).
const RETRY: Duration = Duration::from_secs(2);
/// Device command limit for the host's own commands.
const HOST_COMMAND_MS: u32 = 30_000;

/// A request id for a host command: `<prefix>-<n>`, n counting from 1 in this process.
pub fn host_request_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "{prefix}-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// The first configured device of `class`.
pub fn device_of(t: &Terminal, class: DeviceClass) -> Option<String> {
    t.settings()
        .devices
        .iter()
        .find(|d| d.class == class)
        .map(|d| d.name.clone())
}

/// Why a host command has no completion.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostCommandError {
    /// The gate refused it (out of sequence, …).
    #[error("{0}")]
    Refused(String),
    /// The device could not be reached, or its stream broke.
    #[error("{0}")]
    Device(String),
}

/// Runs `c` on `device` for the host, through the gate (journaled); answers the completion
/// (whatever its code) or why there is none.
pub async fn host_command(
    t: &Terminal,
    device: &str,
    request_id: String,
    timeout_ms: u32,
    c: command::Command,
    counters: Option<Vec<UnitCount>>,
) -> Result<CommandCompletion, HostCommandError> {
    let devices = t.devices();
    let spec = devices
        .spec(device)
        .map_err(|e| HostCommandError::Device(e.to_string()))?
        .clone();
    let cmd = Command {
        request_id,
        timeout_ms,
        command: Some(c),
    };
    let gate = t.gate();
    let admitted = gate
        .admit_counted(&spec, &cmd, None, counters)
        .await
        .map_err(|e| HostCommandError::Refused(e.to_string()))?;
    let mut stream = match devices.execute(&spec.name, cmd).await {
        Ok(s) => s,
        Err(e) => {
            gate.abandon(admitted, &e.to_string()).await;
            return Err(HostCommandError::Device(e.to_string()));
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(reply)) => {
                if let Some(command_reply::Reply::Completion(mut c)) = reply.reply {
                    gate.finish(admitted, &mut c).await;
                    return Ok(c);
                }
            }
            Ok(None) => {
                let why = "the stream ended without a completion";
                gate.abandon(admitted, why).await;
                return Err(HostCommandError::Device(why.into()));
            }
            Err(status) => {
                let e = DeviceManager::stream_error(&spec.name, status);
                gate.abandon(admitted, &e.to_string()).await;
                return Err(HostCommandError::Device(e.to_string()));
            }
        }
    }
}

/// True when the completion is `SUCCESS`.
pub fn succeeded(c: &CommandCompletion) -> bool {
    c.completion
        .as_ref()
        .is_some_and(|d| d.code == CompletionCode::Success as i32)
}

/// The dispenser's live status.
pub async fn dispenser_status(t: &Terminal, device: &str) -> Result<CashDispenserStatus, String> {
    let status = t
        .devices()
        .status(device)
        .await
        .map_err(|e| e.to_string())?;
    match status.detail {
        Some(device_status::Detail::CashDispenser(s)) => Ok(s),
        _ => Err(format!("{device} did not answer a dispenser status")),
    }
}

/// The counters recorded with a dispense's claim.
pub fn unit_counts(s: &CashDispenserStatus) -> Vec<UnitCount> {
    s.units
        .iter()
        .filter(|u| u.unit_type() == CashUnitType::BillCassette)
        .map(|u| UnitCount {
            number: u.number,
            denomination: u.denomination,
            presented: u.presented_count,
            dispensed: u.dispensed_count,
        })
        .collect()
}

/// What the customer got of a withdrawal whose dispense / present did not end as planned, from
/// the dispenser's status before the output is cleared:
///
/// - notes presented for it: the rise of the cassettes' presented counters since
///   `before`;
/// - minus the notes still in the open shutter (they are retracted).
///
/// Stacked or jammed notes never reached the customer.
///
/// Without `before` (an entry from before the counters were required) only the output can
/// tell: nothing if the notes were never to be presented (`presented` false) or are still
/// stacked, the amount less what is in the open shutter if they are presented, and `None`
/// (nobody can tell: an operator must count) otherwise — an empty output is no proof that
/// the customer took anything.
pub fn delivered(
    amount: u64,
    presented: bool,
    before: Option<&[UnitCount]>,
    now: &CashDispenserStatus,
) -> Option<u64> {
    let denomination = |number: u32| {
        now.units
            .iter()
            .find(|u| u.number == number)
            .map_or(0, |u| u.denomination)
    };
    let presented_value = match before {
        Some(before) => now
            .units
            .iter()
            .filter(|u| u.unit_type() == CashUnitType::BillCassette)
            .map(|u| {
                let was = before
                    .iter()
                    .find(|b| b.number == u.number)
                    .map_or(u.presented_count, |b| b.presented);
                u64::from(u.presented_count.saturating_sub(was)) * u.denomination
            })
            .sum(),
        None if !presented => 0,
        None => match now.output() {
            OutputPosition::Presented => amount,
            OutputPosition::Stacked => 0,
            _ => return None,
        },
    };
    let in_shutter: u64 = if now.output() == OutputPosition::Presented {
        now.at_output
            .iter()
            .map(|i| u64::from(i.count) * denomination(i.unit_number))
            .sum()
    } else {
        0
    };
    Some(presented_value.saturating_sub(in_shutter).min(amount))
}

/// The states of a withdrawal the settler reverses from.
const UNSETTLED: &[AuthState] = &[AuthState::Dispensed, AuthState::Presented];

/// Entries the settler must look at.
fn needs_settling(a: &Authorization) -> bool {
    match (a.state, a.outcome.as_deref()) {
        (AuthState::Dispensed, Some("SUCCESS")) => false,
        (AuthState::Dispensed | AuthState::Presented, Some(_)) => true,
        _ => false,
    }
}

fn cdm(c: cash_dispenser_command::Command) -> command::Command {
    command::Command::CashDispenser(CashDispenserCommand { command: Some(c) })
}

/// One pass over the log; answers true when something is left (the dispenser could not be
/// reached or the output not cleared).
pub async fn settle_pass(t: &Arc<Terminal>) -> bool {
    let table = t.gate().table().clone();
    let todo: Vec<Authorization> = table
        .all()
        .await
        .into_iter()
        .filter(needs_settling)
        .collect();
    if todo.is_empty() {
        return false;
    }
    let Some(device) = device_of(t, DeviceClass::CashDispenser) else {
        // No dispenser configured: nothing can have been dispensed here.
        for a in todo {
            queue(t, &a, "no dispenser configured", 0, UNSETTLED).await;
        }
        return false;
    };
    let mut left = false;
    for a in todo {
        let status = match dispenser_status(t, &device).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, reference = %a.reference, "cannot settle yet");
                left = true;
                continue;
            }
        };
        // What was delivered is decided (and saved) before the output is cleared: once it
        // is cleared, the counters alone would count the retracted notes as taken.
        let got = match a.settling_delivered {
            Some(saved) => saved,
            None => {
                let Some(got) = delivered(
                    a.amount,
                    a.state == AuthState::Presented,
                    a.counters_before.as_deref(),
                    &status,
                ) else {
                    unresolved(t, &a, "no counters from before the dispense and nothing at the output: what the customer got is unknown").await;
                    continue;
                };
                let saved = table
                    .update(&a.reference, |e| e.settling_delivered = Some(got))
                    .await;
                if let Err(e) = saved {
                    settle_failed(t, &a, &format!("cannot save what was delivered: {e}")).await;
                    left = true;
                    continue;
                }
                crash_point("settle_decided");
                got
            }
        };
        let clear = match status.output() {
            OutputPosition::Presented => Some((
                "Retract",
                cdm(cash_dispenser_command::Command::Retract(Retract {})),
            )),
            OutputPosition::Stacked => Some((
                "Reject",
                cdm(cash_dispenser_command::Command::Reject(Reject {})),
            )),
            OutputPosition::Jammed => Some((
                "Reset",
                cdm(cash_dispenser_command::Command::Reset(
                    CashDispenserReset {},
                )),
            )),
            _ => None,
        };
        let mut cleared = String::from("output empty");
        if let Some((what, c)) = clear {
            let rid = host_request_id("settle");
            match host_command(t, &device, rid, HOST_COMMAND_MS, c, None).await {
                Ok(done) if succeeded(&done) => {
                    crash_point("settle_cleared");
                    cleared = format!("{what} done");
                }
                Ok(done) => {
                    let text = crate::rules::completion_text(&done);
                    settle_failed(t, &a, &format!("{what} failed: {text}")).await;
                    left = true;
                    continue;
                }
                Err(e) => {
                    settle_failed(t, &a, &format!("{what} failed: {e}")).await;
                    left = true;
                    continue;
                }
            }
        }
        let why = a.outcome.clone().unwrap_or_default();
        if got >= a.amount {
            let r = table
                .update(&a.reference, |e| e.state = AuthState::Completed)
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot record the settlement");
                left = true;
                continue;
            }
            t.gate()
                .journal()
                .note(format!(
                    "TXN SETTLED ref={} after {why}: {cleared}; the customer took {} {}: completed",
                    a.reference, got, a.currency
                ))
                .await;
        } else {
            t.gate()
                .journal()
                .note(format!(
                    "TXN SETTLED ref={} after {why}: {cleared}; delivered {got} of {} {}: {} reversal",
                    a.reference,
                    a.amount,
                    a.currency,
                    match (a.original.is_some(), got) {
                        (false, _) => "no 8583 identity, needs reconciliation instead of a",
                        (true, 0) => "full",
                        (true, _) => "partial",
                    }
                ))
                .await;
            queue(t, &a, &why, got, UNSETTLED).await;
        }
    }
    left
}

/// Hands a withdrawal the settler cannot decide to an operator: `unresolved`, output left
/// as found, journaled and alarmed.
async fn unresolved(t: &Terminal, a: &Authorization, what: &str) {
    let note = format!("needs reconciliation: {what}");
    let saved = t
        .gate()
        .table()
        .update(&a.reference, |e| {
            if matches!(e.state, AuthState::Dispensed | AuthState::Presented) {
                e.state = AuthState::Unresolved;
                e.outcome = Some(note.clone());
            }
        })
        .await;
    let saved = match saved {
        Ok(_) => String::new(),
        Err(e) => format!(" (NOT SAVED: {e})"),
    };
    t.gate()
        .journal()
        .note(format!(
            "TXN SETTLE ref={} UNRESOLVED: {what}{saved}",
            a.reference
        ))
        .await;
    t.gate().alarm(
        "settle_unresolved",
        "txn",
        format!("withdrawal {} needs an operator: {what}", a.reference),
    );
}

async fn settle_failed(t: &Terminal, a: &Authorization, what: &str) {
    t.gate()
        .journal()
        .note(format!("TXN SETTLE ref={} NOT DONE: {what}", a.reference))
        .await;
    t.gate().alarm(
        "settle_failed",
        "txn",
        format!("withdrawal {} cannot be settled: {what}", a.reference),
    );
}

/// Queues the reversal of `a` if it is still in one of the states `from`; answers whether
/// it was queued.
async fn queue(
    t: &Terminal,
    a: &Authorization,
    why: &str,
    delivered: u64,
    from: &[AuthState],
) -> bool {
    match t
        .gate()
        .table()
        .queue_reversal(&a.reference, why, delivered, from)
        .await
    {
        Ok(q) => {
            t.page_event(
                "txn.reversal",
                serde_json::json!({"authorization": q.reference, "reason": why,
                                   "delivered": delivered, "state": q.state}),
            );
            if let Some(c) = t.txn() {
                c.wake_reversals();
            }
            true
        }
        Err(e @ StateError::Moved { .. }) => {
            tracing::info!(error = %e, "reversal not queued");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot queue the reversal");
            false
        }
    }
}

/// Withdrawals a page left behind (the page died or forgot): an approval never dispensed, or
/// notes stacked and never presented, older than `[rules] abandon_after_s`, while the terminal
/// is idle (no card session, no command, no transaction exchange) — and requests of any kind
/// whose answer could not be recorded (still `requested` that long after). Those and the
/// approval are reversed; the stacked notes are
/// handed to the settler (rejected, then reversed). Answers how many were abandoned.
pub async fn abandon_stale(t: &Terminal) -> usize {
    if !t.gate().idle() || t.txn().is_some_and(|c| !c.idle()) {
        return 0;
    }
    let table = t.gate().table().clone();
    let limit = t.settings().abandon_after.as_millis() as u64;
    let now = openteller_keeper::unix_ms();
    let mut n = 0;
    for a in table.all().await {
        let since = a.dispensed_at_ms.unwrap_or(a.approved_at_ms);
        if now.saturating_sub(since) < limit || a.original.is_none() {
            continue;
        }
        let secs = limit / 1000;
        match (a.state, a.outcome.as_deref()) {
            // The exchange ended long ago without its answer recorded (it could not be
            // saved): the host may have approved it.
            (AuthState::Requested, _) => {
                let why = format!("abandoned: no recorded answer after {secs} s");
                if queue(t, &a, &why, 0, &[AuthState::Requested]).await {
                    t.gate()
                        .journal()
                        .note(format!("TXN ABANDONED ref={} {why}", a.reference))
                        .await;
                    n += 1;
                }
            }
            (AuthState::Approved, _) => {
                let why = format!("abandoned: approved, not dispensed within {secs} s");
                // Only if no page claimed the dispense meanwhile.
                if queue(t, &a, &why, 0, &[AuthState::Approved]).await {
                    t.gate()
                        .journal()
                        .note(format!("TXN ABANDONED ref={} {why}", a.reference))
                        .await;
                    n += 1;
                }
            }
            (AuthState::Dispensed, Some("SUCCESS")) => {
                let why = format!("abandoned: stacked, not presented within {secs} s");
                let handed = table
                    .try_update(&a.reference, |e| {
                        // Only if the notes are still stacked and nobody presented them
                        // meanwhile.
                        if e.state != AuthState::Dispensed
                            || e.outcome.as_deref() != Some("SUCCESS")
                        {
                            return Err(StateError::Moved {
                                reference: e.reference.clone(),
                                state: e.state,
                            });
                        }
                        e.outcome = Some(why.clone());
                        Ok(())
                    })
                    .await;
                if handed.is_ok() {
                    t.gate()
                        .journal()
                        .note(format!("TXN ABANDONED ref={} {why}", a.reference))
                        .await;
                    t.gate().settle_signal().notify_one();
                    n += 1;
                }
            }
            _ => {}
        }
    }
    n
}

/// The settler task: settles at start, whenever the gate signals, and retries while work is
/// left.
pub async fn run_settler(t: Arc<Terminal>, stop: CancellationToken) {
    let signal = t.gate().settle_signal();
    loop {
        let left = settle_pass(&t).await;
        let wait = if left {
            RETRY
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = signal.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Retains the card for the host (PIN limit reached): `CardReader.Retain` through the gate
/// (which ends the session), journaled; true when the reader retained it.
pub async fn retain_card(t: &Terminal, why: &str) -> bool {
    let Some(reader) = device_of(t, DeviceClass::CardReader) else {
        return false;
    };
    let rid = host_request_id("retain");
    let c = command::Command::CardReader(CardReaderCommand {
        command: Some(card_reader_command::Command::Retain(Retain {})),
    });
    let result = host_command(t, &reader, rid, HOST_COMMAND_MS, c, None).await;
    let (ok, what) = match &result {
        Ok(done) if succeeded(done) => (true, "retained".to_owned()),
        Ok(done) => (false, crate::rules::completion_text(done)),
        Err(e) => (false, e.to_string()),
    };
    t.gate()
        .journal()
        .note(format!("CARD RETAINED by the host ({why}): {what}"))
        .await;
    if !ok {
        t.gate().alarm(
            "card_retain_failed",
            &reader,
            format!("the card could not be retained ({why}): {what}"),
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use openteller_proto::device::v1::{CashUnit, DenominationItem};

    fn status(presented: u32, output: OutputPosition, at_output: u32) -> CashDispenserStatus {
        CashDispenserStatus {
            units: vec![CashUnit {
                number: 1,
                unit_type: CashUnitType::BillCassette as i32,
                currency: "CNY".into(),
                denomination: 10000,
                presented_count: presented,
                ..Default::default()
            }],
            output: output as i32,
            at_output: (at_output > 0)
                .then_some(DenominationItem {
                    unit_number: 1,
                    count: at_output,
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn what_the_customer_got() {
        let before = [UnitCount {
            number: 1,
            denomination: 10000,
            presented: 5,
            dispensed: 5,
        }];
        // Presented, nothing taken: all in the shutter.
        let s = status(8, OutputPosition::Presented, 3);
        assert_eq!(delivered(30000, true, Some(&before), &s), Some(0));
        // Presented, one note of three taken.
        let s = status(8, OutputPosition::Presented, 2);
        assert_eq!(delivered(30000, true, Some(&before), &s), Some(10000));
        // Everything taken.
        let s = status(8, OutputPosition::Empty, 0);
        assert_eq!(delivered(30000, true, Some(&before), &s), Some(30000));
        // Never presented (stacked, or the dispense never ran).
        let s = status(5, OutputPosition::Stacked, 3);
        assert_eq!(delivered(30000, false, Some(&before), &s), Some(0));
        let s = status(5, OutputPosition::Empty, 0);
        assert_eq!(delivered(30000, true, Some(&before), &s), Some(0));
        // Without counters: only the output can tell; an empty output proves nothing.
        let s = status(8, OutputPosition::Empty, 0);
        assert_eq!(delivered(30000, true, None, &s), None);
        assert_eq!(delivered(30000, false, None, &s), Some(0));
        let s = status(8, OutputPosition::Presented, 3);
        assert_eq!(delivered(30000, true, None, &s), Some(0));
        let s = status(8, OutputPosition::Presented, 1);
        assert_eq!(delivered(30000, true, None, &s), Some(20000));
        // Presented in the log, but the present failed: still stacked.
        let s = status(5, OutputPosition::Stacked, 3);
        assert_eq!(delivered(30000, true, None, &s), Some(0));
        let s = status(5, OutputPosition::Jammed, 0);
        assert_eq!(delivered(30000, true, None, &s), None);
    }
}
