use std::time::Duration;

use openteller_proto::device::v1::{
    CancelRequest, Card, CardReaderCommand, CardReaderReset, CardReaderSimAction, CompletionCode,
    DeleteCard, DeviceState, Eject, InsertCard, ListCards, MagneticCard, MediaStatus, NotTakeCard,
    PutCard, ReadRawData, ResetAction, SetError, SetRetainTimeout, SubscribeRequest, TakeCard,
    card, card_reader_command::Command as Idc, card_reader_event::Event as IdcEvent,
    card_reader_result, card_reader_sim_action::Action as SimIdc, command, command_completion,
    device_event, device_status, notice, simulator_reply, simulator_request::Action,
};

use crate::support::*;

fn idc(c: Idc) -> command::Command {
    command::Command::CardReader(CardReaderCommand { command: Some(c) })
}

fn read() -> command::Command {
    idc(Idc::ReadRawData(ReadRawData {
        track1: true,
        track2: true,
        track3: true,
        chip: false,
    }))
}

fn sim(a: SimIdc) -> Action {
    Action::CardReader(CardReaderSimAction { action: Some(a) })
}

fn insert(name: &str) -> Action {
    sim(SimIdc::InsertCard(InsertCard {
        library_name: name.into(),
        card: None,
    }))
}

fn media(s: &openteller_proto::device::v1::DeviceStatus) -> MediaStatus {
    match s.detail.as_ref().expect("detail") {
        device_status::Detail::CardReader(c) => c.media(),
        _ => panic!("not a card reader"),
    }
}

fn retain_count(s: &openteller_proto::device::v1::DeviceStatus) -> u32 {
    match s.detail.as_ref().expect("detail") {
        device_status::Detail::CardReader(c) => c.retain_count,
        _ => panic!("not a card reader"),
    }
}

/// Inserts `name` into a waiting read and returns the read's events and completion.
async fn read_card(
    p: &Proxy,
    name: &str,
) -> (
    Vec<openteller_proto::device::v1::DeviceEvent>,
    openteller_proto::device::v1::CommandCompletion,
) {
    let client = p.device();
    let reading = tokio::spawn(async move { execute(client, "read-1", 10_000, read()).await });
    control_until_ok(p, insert(name)).await;
    reading.await.expect("read task")
}

fn idc_events(events: &[openteller_proto::device::v1::DeviceEvent]) -> Vec<IdcEvent> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(device_event::Event::CardReader(c)) => c.event,
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn insert_read_eject_take_with_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CardReader", dir.path()).await;
    let mut notices = p
        .device()
        .subscribe(SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();

    // Inserting while nothing waits for a card is refused and changes nothing.
    let refused = p.control(insert("debit-zhang")).await;
    assert_eq!(sim_code(&refused), CompletionCode::SequenceError);
    assert_eq!(media(&p.status().await), MediaStatus::NotPresent);

    let (events, done) = read_card(&p, "debit-zhang").await;
    assert_eq!(code(&done), CompletionCode::Success);
    let kinds = idc_events(&events);
    assert!(
        matches!(
            kinds.as_slice(),
            [IdcEvent::InsertCard(_), IdcEvent::MediaInserted(_)]
        ),
        "{kinds:?}"
    );
    let Some(command_completion::Result::CardReader(r)) = done.result else {
        panic!("no result")
    };
    let Some(card_reader_result::Result::ReadRawData(data)) = r.result else {
        panic!("no data")
    };
    assert_eq!(
        data.track2.unwrap().data,
        "6222020200112233445=4912101000000000"
    );
    assert_eq!(
        data.track3.unwrap().status(),
        openteller_proto::device::v1::DataStatus::Missing
    );
    assert_eq!(media(&p.status().await), MediaStatus::Present);

    let (_, ejected) = p.execute("eject-1", 0, idc(Idc::Eject(Eject {}))).await;
    assert_eq!(code(&ejected), CompletionCode::Success);
    assert_eq!(media(&p.status().await), MediaStatus::Entering);
    assert_eq!(
        sim_code(&p.control(sim(SimIdc::TakeCard(TakeCard {}))).await),
        CompletionCode::Success
    );
    assert_eq!(media(&p.status().await), MediaStatus::NotPresent);

    // The subscription saw: read started/finished, eject started/finished, then media removed.
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &String| s == "MediaRemoved") {
        let n = tokio::time::timeout(Duration::from_secs(5), notices.message())
            .await
            .expect("notice")
            .unwrap()
            .unwrap();
        match n.notice.unwrap() {
            notice::Notice::CommandStarted(c) => seen.push(format!("start {}", c.command)),
            notice::Notice::CommandFinished(c) => seen.push(format!("end {}", c.command)),
            notice::Notice::Event(e) => {
                if let Some(device_event::Event::CardReader(c)) = e.event
                    && let Some(IdcEvent::MediaRemoved(_)) = c.event
                {
                    seen.push("MediaRemoved".into());
                }
            }
        }
    }
    assert_eq!(
        seen,
        [
            "start CardReader.ReadRawData",
            "end CardReader.ReadRawData",
            "start CardReader.Eject",
            "end CardReader.Eject",
            "MediaRemoved"
        ]
    );
}

#[tokio::test]
async fn jam_on_eject_sets_hardware_error_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CardReader", dir.path()).await;
    let armed = p
        .control(Action::SetError(SetError {
            command: "CardReader.Eject".into(),
            error_code: -200,
            count: 1,
        }))
        .await;
    assert_eq!(sim_code(&armed), CompletionCode::Success);
    let (_, done) = read_card(&p, "debit-li").await;
    assert_eq!(code(&done), CompletionCode::Success);

    let (_, jam) = p.execute("eject-jam", 0, idc(Idc::Eject(Eject {}))).await;
    assert_eq!(code(&jam), CompletionCode::CommandError);
    assert_eq!(error_code(&jam), -200);
    assert_eq!(jam.completion.as_ref().unwrap().error_name, "MEDIAJAM");
    let s = p.status().await;
    assert_eq!(s.device(), DeviceState::HardwareError);
    assert_eq!(media(&s), MediaStatus::Jammed);

    let (_, again) = p.execute("eject-2", 0, idc(Idc::Eject(Eject {}))).await;
    assert_eq!(code(&again), CompletionCode::HardwareError);

    let reset = idc(Idc::Reset(CardReaderReset {
        action: ResetAction::Eject as i32,
    }));
    let (_, r) = p.execute("reset", 0, reset).await;
    assert_eq!(code(&r), CompletionCode::Success);
    let s = p.status().await;
    assert_eq!(s.device(), DeviceState::Online);
    assert_eq!(media(&s), MediaStatus::Entering);

    // Bad presets are refused: unknown command, a dispenser error number, zero count.
    for bad in [
        SetError {
            command: "CardReader.Fly".into(),
            error_code: -200,
            count: 1,
        },
        SetError {
            command: "CardReader.Eject".into(),
            error_code: -306,
            count: 1,
        },
        SetError {
            command: "CardReader.Eject".into(),
            error_code: -200,
            count: 0,
        },
    ] {
        assert_eq!(
            sim_code(&p.control(Action::SetError(bad)).await),
            CompletionCode::InvalidData
        );
    }
}

#[tokio::test]
async fn card_not_taken_is_retained_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CardReader", dir.path()).await;
    let t = p
        .control(sim(SimIdc::SetRetainTimeout(SetRetainTimeout {
            timeout_ms: 300,
        })))
        .await;
    assert_eq!(sim_code(&t), CompletionCode::Success);
    let before = retain_count(&p.status().await);
    let mut notices = p
        .device()
        .subscribe(SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();
    read_card(&p, "debit-zhang").await;
    p.execute("eject", 0, idc(Idc::Eject(Eject {}))).await;
    assert_eq!(
        sim_code(&p.control(sim(SimIdc::NotTakeCard(NotTakeCard {}))).await),
        CompletionCode::Success
    );

    let retained = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = notices.message().await.unwrap().unwrap();
            if let Some(notice::Notice::Event(e)) = n.notice
                && let Some(device_event::Event::CardReader(c)) = e.event
                && let Some(IdcEvent::CardAction(a)) = c.event
            {
                return a.action();
            }
        }
    })
    .await
    .expect("card action event");
    assert_eq!(retained, openteller_proto::device::v1::CardAction::Retained);
    let s = p.status().await;
    assert_eq!(retain_count(&s), before + 1);
    assert_eq!(media(&s), MediaStatus::NotPresent);
}

#[tokio::test]
async fn cancel_and_timeout_end_a_waiting_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CardReader", dir.path()).await;

    let (_, timed_out) = p.execute("read-timeout", 300, read()).await;
    assert_eq!(code(&timed_out), CompletionCode::TimeOut);

    let client = p.device();
    let waiting = tokio::spawn(async move { execute(client, "read-cancel", 0, read()).await });
    // A second command queues behind the waiting read.
    let client = p.device();
    let queued =
        tokio::spawn(
            async move { execute(client, "eject-queued", 0, idc(Idc::Eject(Eject {}))).await },
        );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while p.status().await.queued_commands < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "commands did not queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A duplicate request id is refused while the first is in flight.
    let (_, dup) = p.execute("read-cancel", 0, read()).await;
    assert_eq!(code(&dup), CompletionCode::InvalidRequestId);

    let canceled = p
        .device()
        .cancel(CancelRequest {
            request_ids: vec!["read-cancel".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(canceled.canceled, ["read-cancel"]);
    let (_, c) = waiting.await.unwrap();
    assert_eq!(code(&c), CompletionCode::Canceled);
    // The queued eject then runs: no card, so NOMEDIA.
    let (_, e) = queued.await.unwrap();
    assert_eq!(code(&e), CompletionCode::CommandError);
    assert_eq!(error_code(&e), -201);
    // Nothing waits any more, so inserting is refused.
    assert_eq!(
        sim_code(&p.control(insert("debit-zhang")).await),
        CompletionCode::SequenceError
    );
}

#[tokio::test]
async fn card_library_validates_and_persists_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proxy::start("CardReader", dir.path()).await;
    let custom = Card {
        name: "my-test-card".into(),
        kind: Some(card::Kind::Magnetic(MagneticCard {
            track1: String::new(),
            track2: "4000001234567899=30121010000000000000".into(),
            track3: String::new(),
        })),
    };
    let put = p
        .control(sim(SimIdc::PutCard(PutCard {
            card: Some(custom.clone()),
        })))
        .await;
    assert_eq!(sim_code(&put), CompletionCode::Success);

    // Malformed track data is refused and the library is unchanged.
    for bad_track2 in ["40000012345678A9=3012", &"1".repeat(38), "4000;0012"] {
        let bad = Card {
            name: "bad".into(),
            kind: Some(card::Kind::Magnetic(MagneticCard {
                track2: bad_track2.into(),
                ..Default::default()
            })),
        };
        let r = p
            .control(sim(SimIdc::PutCard(PutCard { card: Some(bad) })))
            .await;
        assert_eq!(sim_code(&r), CompletionCode::InvalidData, "{bad_track2}");
    }
    let r = p
        .control(sim(SimIdc::DeleteCard(DeleteCard {
            name: "no-such".into(),
        })))
        .await;
    assert_eq!(sim_code(&r), CompletionCode::InvalidData);

    // Retain one card so the bin count is persisted too.
    read_card(&p, "my-test-card").await;
    let (_, r) = p
        .execute(
            "retain",
            0,
            idc(Idc::Retain(openteller_proto::device::v1::Retain {})),
        )
        .await;
    assert_eq!(code(&r), CompletionCode::Success);
    let count = retain_count(&p.status().await);
    assert_eq!(count, 1);

    p.kill9();
    let p = Proxy::start("CardReader", dir.path()).await;
    assert_eq!(retain_count(&p.status().await), count);
    let list = p.control(sim(SimIdc::ListCards(ListCards {}))).await;
    let Some(simulator_reply::Data::Cards(cards)) = list.data else {
        panic!("no cards")
    };
    assert!(cards.cards.contains(&custom));
    assert!(!cards.cards.iter().any(|c| c.name == "bad"));
}

#[tokio::test]
async fn invalid_card_is_refused_with_invalidmedia_and_returned() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CardReader", dir.path()).await;
    let (events, done) = read_card(&p, "invalid").await;
    assert_eq!(code(&done), CompletionCode::CommandError);
    assert_eq!(error_code(&done), -205);
    assert!(
        idc_events(&events)
            .iter()
            .any(|e| matches!(e, IdcEvent::InvalidMedia(_)))
    );
    assert_eq!(media(&p.status().await), MediaStatus::Entering);
}
