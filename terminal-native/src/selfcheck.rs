//! The periodic self-check (seed 001 §8.1) and the automatic sign-on.
//!
//! **Self-check** (every `[self_check] interval_s`, default 360 s): for each device that is not
//! online it asks the proxy for the live status and, when the terminal is idle (no card
//! session, no command running) and the device reports a hardware or user error, sends the
//! class's `Reset`; it signs on again when the working keys are missing; it wakes the settler
//! and the reversal queue. The terminal returns to service by itself when every critical
//! device is online again (the health follows the proxies' status notices). Each check is one
//! journal line: `SELF-CHECK in service`, or `SELF-CHECK out of service: <reasons>; actions:
//! <what was tried>; now in service` (or `still out of service: <reasons>`).
//!
//! **Sign-on** (with `[online]`): at start, as soon as the EPP is online, then again whenever
//! the working keys are lost — online-txn answered A0 (MAC error) or A7 (not signed on), or a
//! sign-on failed — with back-off 1 s → 60 s. Until signed on the terminal is out of service.

use std::sync::Arc;
use std::time::Duration;

use openteller_proto::device::v1::{
    CardReaderCommand, CashDispenserCommand, DeviceClass, DeviceState, PinPadCommand,
    ReceiptPrinterCommand, card_reader_command, cash_dispenser_command, command, pin_pad_command,
    receipt_printer_command,
};
use tokio_util::sync::CancellationToken;

use crate::Terminal;
use crate::devices::Health;
use crate::recovery::{host_command, succeeded};

const SIGN_ON_BACKOFF_MIN: Duration = Duration::from_secs(1);
const SIGN_ON_BACKOFF_MAX: Duration = Duration::from_secs(60);

fn reset_command(class: DeviceClass) -> Option<command::Command> {
    Some(match class {
        DeviceClass::CardReader => command::Command::CardReader(CardReaderCommand {
            command: Some(card_reader_command::Command::Reset(Default::default())),
        }),
        DeviceClass::PinPad => command::Command::PinPad(PinPadCommand {
            command: Some(pin_pad_command::Command::Reset(Default::default())),
        }),
        DeviceClass::CashDispenser => command::Command::CashDispenser(CashDispenserCommand {
            command: Some(cash_dispenser_command::Command::Reset(Default::default())),
        }),
        DeviceClass::ReceiptPrinter => command::Command::ReceiptPrinter(ReceiptPrinterCommand {
            command: Some(receipt_printer_command::Command::Reset(Default::default())),
        }),
        _ => return None,
    })
}

/// One self-check; answers the journal line it wrote.
pub async fn check(t: &Arc<Terminal>) -> String {
    let before = t.status();
    let mut actions: Vec<String> = Vec::new();
    let devices = t.devices();
    for view in devices.views() {
        if view.health == Health::Online {
            continue;
        }
        let status = match devices.status(&view.name).await {
            Ok(s) => s,
            Err(e) => {
                actions.push(format!("{}: unreachable ({e})", view.name));
                continue;
            }
        };
        let state = DeviceState::try_from(status.device).unwrap_or(DeviceState::Unspecified);
        let resettable = matches!(state, DeviceState::HardwareError | DeviceState::UserError);
        if !resettable {
            actions.push(format!("{}: {}", view.name, state.as_str_name()));
            continue;
        }
        if !t.gate().idle() {
            actions.push(format!(
                "{}: {} (not reset: a session or command is running)",
                view.name,
                state.as_str_name()
            ));
            continue;
        }
        let Ok(spec) = devices.spec(&view.name) else {
            continue;
        };
        let Some(c) = reset_command(spec.class) else {
            continue;
        };
        // The same rule as for pages: the settler alone clears the output of a withdrawal
        // not yet settled (a reset would make retracted notes look taken).
        if spec.class == DeviceClass::CashDispenser
            && let Some(a) = t.gate().table().unsettled_withdrawal().await
        {
            actions.push(format!(
                "{}: {} (not reset: withdrawal {} is not settled)",
                view.name,
                state.as_str_name(),
                a.reference
            ));
            continue;
        }
        let rid = crate::recovery::host_request_id("selfcheck");
        let outcome = match host_command(t, &view.name, rid, 30_000, c, None).await {
            Ok(done) if succeeded(&done) => "reset".to_owned(),
            Ok(done) => format!("reset failed: {}", crate::rules::completion_text(&done)),
            Err(e) => format!("reset failed: {e}"),
        };
        actions.push(format!(
            "{}: {} → {outcome}",
            view.name,
            state.as_str_name()
        ));
    }
    if let Some(client) = t.txn()
        && !client.signed_on()
    {
        let outcome = match client.sign_on(t).await {
            Ok(o) if o.approved => "signed on".to_owned(),
            Ok(o) => format!("sign-on declined {}", o.response_code),
            Err(e) => format!("sign-on failed: {e}"),
        };
        t.poke_status();
        actions.push(format!("keys missing → {outcome}"));
    }
    let abandoned = crate::recovery::abandon_stale(t).await;
    if abandoned > 0 {
        actions.push(format!("{abandoned} abandoned withdrawal(s) to reverse"));
    }
    t.gate().settle_signal().notify_one();
    if let Some(client) = t.txn() {
        client.wake_reversals();
    }
    let after = t.status();
    let line = if before.in_service && actions.is_empty() {
        "SELF-CHECK in service".to_owned()
    } else {
        format!(
            "SELF-CHECK {}; actions: {}; {}",
            if before.in_service {
                "in service".to_owned()
            } else {
                format!(
                    "out of service: {}",
                    before.out_of_service_reasons.join("; ")
                )
            },
            if actions.is_empty() {
                "none".to_owned()
            } else {
                actions.join("; ")
            },
            if after.in_service {
                "now in service".to_owned()
            } else {
                format!(
                    "still out of service: {}",
                    after.out_of_service_reasons.join("; ")
                )
            }
        )
    };
    t.gate().journal().note(line.clone()).await;
    line
}

/// The self-check task.
pub async fn run(t: Arc<Terminal>, stop: CancellationToken) {
    let interval = t.settings().self_check_interval;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        check(&t).await;
    }
}

/// The automatic sign-on task (with `[online]`).
pub async fn run_sign_on(t: Arc<Terminal>, stop: CancellationToken) {
    let Some(client) = t.txn() else { return };
    let wanted = client.sign_on_wanted();
    let mut backoff = SIGN_ON_BACKOFF_MIN;
    loop {
        if client.signed_on() {
            backoff = SIGN_ON_BACKOFF_MIN;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wanted.notified() => {}
            }
            continue;
        }
        let pinpad_online = t
            .devices()
            .views()
            .iter()
            .any(|v| v.name == client.pinpad_name() && v.health == Health::Online);
        if pinpad_online {
            match client.sign_on(&t).await {
                Ok(o) if o.approved => {
                    t.poke_status();
                    client.wake_reversals();
                    continue;
                }
                Ok(o) => tracing::warn!(code = %o.response_code, "automatic sign-on declined"),
                Err(e) => tracing::warn!(error = %e, "automatic sign-on failed"),
            }
            t.poke_status();
        }
        let wait = if pinpad_online {
            backoff
        } else {
            Duration::from_millis(200)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if pinpad_online {
            backoff = (backoff * 2).min(SIGN_ON_BACKOFF_MAX);
        }
    }
}
