use std::time::Duration;

use openteller_proto::device::v1::{
    CashDispenserCommand, CashDispenserSimAction, CashUnit, CashUnitType, CompletionCode,
    DenominationItem, Dispense, MixAlgorithm, OutputPosition, Present, Retract, SetCashUnits,
    SetError, SubscribeRequest, TakeItems, cash_dispenser_command::Command as Cdm,
    cash_dispenser_event::Event as CdmEvent, cash_dispenser_result,
    cash_dispenser_sim_action::Action as SimCdm, command, command_completion, device_event,
    device_status, notice, simulator_request::Action,
};

use crate::support::*;

fn cdm(c: Cdm) -> command::Command {
    command::Command::CashDispenser(CashDispenserCommand { command: Some(c) })
}

fn sim(a: SimCdm) -> Action {
    Action::CashDispenser(CashDispenserSimAction { action: Some(a) })
}

fn dispense(amount: u64, present: bool) -> command::Command {
    cdm(Cdm::Dispense(Dispense {
        currency: "CNY".into(),
        amount,
        mix: MixAlgorithm::MinimumNotes as i32,
        items: vec![],
        present,
        take_timeout_ms: 0,
    }))
}

fn units(s: &openteller_proto::device::v1::DeviceStatus) -> (Vec<CashUnit>, OutputPosition) {
    match s.detail.as_ref().unwrap() {
        device_status::Detail::CashDispenser(d) => (d.units.clone(), d.output()),
        _ => panic!(),
    }
}

fn unit(u: &[CashUnit], n: u32) -> CashUnit {
    u.iter().find(|x| x.number == n).unwrap().clone()
}

#[tokio::test]
async fn dispense_present_take_counts_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CashDispenser", dir.path()).await;
    let mut notices = p
        .device()
        .subscribe(SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();
    let (before, _) = units(&p.status().await);

    let client = p.device();
    let run =
        tokio::spawn(async move { execute(client, "wd", 10_000, dispense(37_000, true)).await });
    control_until_ok(&p, sim(SimCdm::TakeItems(TakeItems {}))).await;
    let (events, done) = run.await.unwrap();
    assert_eq!(
        code(&done),
        CompletionCode::Success,
        "{:?}",
        done.completion
    );
    assert!(events.iter().any(|e| matches!(&e.event, Some(device_event::Event::CashDispenser(c)) if matches!(c.event, Some(CdmEvent::ItemsPresented(_))))));
    let Some(command_completion::Result::CashDispenser(r)) = done.result else {
        panic!()
    };
    let Some(cash_dispenser_result::Result::Dispense(d)) = r.result else {
        panic!()
    };
    let d = d.dispensed.unwrap();
    assert_eq!(d.amount, 37_000);
    // 3×100 + 1×50 + 1×20 = 370 yuan in five notes.
    assert_eq!(d.items.iter().map(|i| i.count).sum::<u32>(), 5);

    let (after, output) = units(&p.status().await);
    assert_eq!(output, OutputPosition::Empty);
    let moved: u64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| u64::from(b.count - a.count) * b.denomination)
        .sum();
    assert_eq!(moved, 37_000);
    assert_eq!(after.iter().map(|u| u.dispensed_count).sum::<u32>(), 5);
    assert_eq!(after.iter().map(|u| u.presented_count).sum::<u32>(), 5);

    let taken = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(notice::Notice::Event(e)) = notices.message().await.unwrap().unwrap().notice
                && let Some(device_event::Event::CashDispenser(c)) = e.event
                && matches!(c.event, Some(CdmEvent::ItemsTaken(_)))
            {
                return true;
            }
        }
    })
    .await
    .unwrap();
    assert!(taken);
}

#[tokio::test]
async fn notes_not_taken_time_out_and_are_retracted() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CashDispenser", dir.path()).await;
    let (_, d) = p.execute("wd", 0, dispense(20_000, false)).await;
    assert_eq!(code(&d), CompletionCode::Success);
    assert_eq!(units(&p.status().await).1, OutputPosition::Stacked);
    let (_, pr) = p
        .execute(
            "present",
            0,
            cdm(Cdm::Present(Present {
                take_timeout_ms: 300,
            })),
        )
        .await;
    assert_eq!(code(&pr), CompletionCode::CommandError);
    assert_eq!(error_code(&pr), -335);
    assert_eq!(pr.completion.as_ref().unwrap().error_name, "ITEMSNOTTAKEN");
    assert_eq!(units(&p.status().await).1, OutputPosition::Presented);

    let (_, r) = p.execute("retract", 0, cdm(Cdm::Retract(Retract {}))).await;
    assert_eq!(code(&r), CompletionCode::Success);
    let (u, out) = units(&p.status().await);
    assert_eq!(out, OutputPosition::Empty);
    let retract = u
        .iter()
        .find(|x| x.unit_type() == CashUnitType::Retract)
        .unwrap();
    assert_eq!((retract.count, retract.retracted_count), (2, 2));
}

#[tokio::test]
async fn jam_mid_dispense_reports_the_partial_pick_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proxy::start("CashDispenser", dir.path()).await;
    let armed = p
        .control(Action::SetError(SetError {
            command: "CashDispenser.Dispense".into(),
            error_code: -14,
            count: 1,
        }))
        .await;
    assert_eq!(sim_code(&armed), CompletionCode::Success);
    let (_, d) = p.execute("wd", 0, dispense(40_000, true)).await;
    assert_eq!(code(&d), CompletionCode::HardwareError);
    let Some(command_completion::Result::CashDispenser(r)) = d.result else {
        panic!("a failed dispense still says what was picked")
    };
    let Some(cash_dispenser_result::Result::Dispense(picked)) = r.result else {
        panic!()
    };
    let picked = picked.dispensed.unwrap();
    assert_eq!(picked.amount, 20_000);
    let (u, out) = units(&p.status().await);
    assert_eq!(out, OutputPosition::Jammed);
    let dispensed: u32 = u.iter().map(|x| x.dispensed_count).sum();
    assert_eq!(dispensed, 2);

    p.kill9();
    let p = Proxy::start("CashDispenser", dir.path()).await;
    let (u2, out2) = units(&p.status().await);
    assert_eq!(out2, OutputPosition::Jammed);
    assert_eq!(
        u2.iter().map(|x| x.count).collect::<Vec<_>>(),
        u.iter().map(|x| x.count).collect::<Vec<_>>()
    );
    // Reset clears the transport into the reject bin.
    let (_, r) = p
        .execute("reset", 0, cdm(Cdm::Reset(Default::default())))
        .await;
    assert_eq!(code(&r), CompletionCode::Success);
    let (u3, out3) = units(&p.status().await);
    assert_eq!(out3, OutputPosition::Empty);
    assert_eq!(
        u3.iter()
            .find(|x| x.unit_type() == CashUnitType::Reject)
            .unwrap()
            .rejected_count,
        2
    );
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CashDispenser", dir.path()).await;
    let before = units(&p.status().await);
    let (_, r) = p
        .execute(
            "usd",
            0,
            cdm(Cdm::Dispense(Dispense {
                currency: "USD".into(),
                amount: 10_000,
                ..Default::default()
            })),
        )
        .await;
    assert_eq!(error_code(&r), -300);
    let (_, r) = p.execute("odd", 0, dispense(1_234, false)).await;
    assert_eq!(error_code(&r), -306);
    assert_eq!(r.completion.as_ref().unwrap().error_name, "NOTDISPENSABLE");
    let (_, r) = p.execute("many", 0, dispense(10_000_000, false)).await;
    assert_eq!(error_code(&r), -307);
    let explicit = Dispense {
        currency: "CNY".into(),
        amount: 10_000,
        items: vec![DenominationItem {
            unit_number: 9,
            count: 1,
        }],
        ..Default::default()
    };
    let (_, r) = p.execute("unit9", 0, cdm(Cdm::Dispense(explicit))).await;
    assert_eq!(code(&r), CompletionCode::CommandError);
    let mut bad = before.0.clone();
    bad[0].count = bad[0].capacity + 1;
    let r = p
        .control(sim(SimCdm::SetCashUnits(SetCashUnits { units: bad })))
        .await;
    assert_eq!(sim_code(&r), CompletionCode::InvalidData);
    let (_, r) = p
        .execute("present", 0, cdm(Cdm::Present(Present::default())))
        .await;
    assert_eq!(error_code(&r), -316);
    assert_eq!(units(&p.status().await), before);

    // A valid replenishment restarts the counters.
    let mut fresh = before.0.clone();
    fresh[0].count = 500;
    let r = p
        .control(sim(SimCdm::SetCashUnits(SetCashUnits { units: fresh })))
        .await;
    assert_eq!(sim_code(&r), CompletionCode::Success);
    assert_eq!(unit(&units(&p.status().await).0, 1).initial_count, 500);
}
