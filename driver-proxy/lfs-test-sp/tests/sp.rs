//! Loads the built `libopenteller_lfs_test_sp.so` through the safe host of `openteller-lfs-abi`
//! and drives the card reader: the ABI, the loader and the test SP checked together.
//!
//! Each test configures its own reader through logical-name options (not the environment,
//! which the tests of this process share).

use std::path::PathBuf;
use std::time::Duration;

use openteller_lfs_abi::ffi::*;
use openteller_lfs_abi::{
    CardAction, CardData, Data, Error, EventKind, Events, IdcCommand, IdcInfo, IdcStatus, Provider,
    RequestMessage, Session,
};
use tokio::time::timeout;

const TRACK2: &str = "6222020200112233445=49121010000000000000";

/// The cdylib cargo built for this test: `target/<profile>/` (or its `deps/`).
fn sp_path() -> PathBuf {
    let name = format!(
        "{}openteller_lfs_test_sp{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    let candidates = [
        deps.parent().expect("profile dir").join(&name),
        deps.join(&name),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("{name} not found in {candidates:?}"))
}

fn open(options: &str) -> (Provider, Session, Events) {
    let provider = Provider::load(sp_path()).expect("load the test SP");
    let (session, events) = provider
        .open(&format!("CardReader;{options}"))
        .expect("open");
    session
        .register(LFS_SERVICE_EVENTS | LFS_USER_EVENTS | LFS_SYSTEM_EVENTS)
        .expect("register");
    (provider, session, events)
}

async fn status(session: &Session) -> IdcStatus {
    let c = session
        .get_info(IdcInfo::Status, 0)
        .expect("get_info")
        .completion()
        .await;
    assert_eq!(c.hresult, LFS_SUCCESS);
    match c.data {
        Data::Status(s) => s,
        other => panic!("not a status: {other:?}"),
    }
}

async fn run(session: &Session, command: IdcCommand) -> (Vec<u32>, openteller_lfs_abi::Completion) {
    let mut request = session.execute(&command, 0).expect("execute");
    let mut events = Vec::new();
    loop {
        match timeout(Duration::from_secs(5), request.recv())
            .await
            .expect("SP answers")
            .expect("a completion")
        {
            RequestMessage::Event(e) => {
                assert_eq!(e.kind, EventKind::Execute);
                events.push(e.id);
            }
            RequestMessage::Completion(c) => return (events, c),
        }
    }
}

async fn next_event(events: &mut Events) -> openteller_lfs_abi::Event {
    timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event in time")
        .expect("session open")
}

#[tokio::test]
async fn startup_reports_version_and_description() {
    let provider = Provider::load(sp_path()).unwrap();
    assert_eq!(provider.version().version, LFS_ABI_VERSION);
    assert!(
        provider
            .version()
            .description
            .starts_with("OpenTeller test card reader SP")
    );
}

#[tokio::test]
async fn read_waits_for_the_card_then_eject_and_the_customer_takes_it() {
    let (_p, session, mut events) = open(&format!(
        "card={TRACK2};insert_delay_ms=50;take_delay_ms=100"
    ));
    assert_eq!(status(&session).await.media, LFS_IDC_MEDIANOTPRESENT);

    let (seen, c) = run(
        &session,
        IdcCommand::ReadRawData {
            sources: LFS_IDC_TRACK1 | LFS_IDC_TRACK2,
        },
    )
    .await;
    assert_eq!(seen, vec![LFS_EXEE_IDC_MEDIAINSERTED]);
    assert_eq!(c.hresult, LFS_SUCCESS);
    assert_eq!(c.code, LFS_CMD_IDC_READ_RAW_DATA);
    assert_eq!(
        c.data,
        Data::CardData(vec![
            CardData {
                source: LFS_IDC_TRACK1,
                status: LFS_IDC_DATAMISSING,
                data: vec![]
            },
            CardData {
                source: LFS_IDC_TRACK2,
                status: LFS_IDC_DATAOK,
                data: TRACK2.as_bytes().to_vec()
            },
        ])
    );
    assert_eq!(status(&session).await.media, LFS_IDC_MEDIAPRESENT);

    // A second read with the card inside reads at once, without a new MEDIAINSERTED.
    let (seen, c) = run(
        &session,
        IdcCommand::ReadRawData {
            sources: LFS_IDC_TRACK2,
        },
    )
    .await;
    assert!(seen.is_empty());
    assert_eq!(c.hresult, LFS_SUCCESS);

    let (_, c) = run(&session, IdcCommand::EjectCard).await;
    assert_eq!(c.hresult, LFS_SUCCESS);
    assert_eq!(status(&session).await.media, LFS_IDC_MEDIAENTERING);
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.kind, e.id),
        (EventKind::Service, LFS_SRVE_IDC_MEDIAREMOVED)
    );
    assert_eq!(status(&session).await.media, LFS_IDC_MEDIANOTPRESENT);

    // Nothing to eject any more.
    let (_, c) = run(&session, IdcCommand::EjectCard).await;
    assert_eq!(c.hresult, LFS_ERR_IDC_NOMEDIA);
}

#[tokio::test]
async fn cancel_of_a_waiting_read_completes_it_canceled() {
    let (_p, session, _events) = open("card=");
    let request = session
        .execute(
            &IdcCommand::ReadRawData {
                sources: LFS_IDC_TRACK2,
            },
            0,
        )
        .unwrap();
    // Status is answered while the read waits.
    assert_eq!(status(&session).await.media, LFS_IDC_MEDIANOTPRESENT);
    assert_eq!(session.open_requests(), 1);
    request.canceller().cancel().unwrap();
    let c = timeout(Duration::from_secs(5), request.completion())
        .await
        .unwrap();
    assert_eq!(c.hresult, LFS_ERR_CANCELED);
    assert_eq!(session.open_requests(), 0);

    // Dropping a request cancels it in the SP too.
    let request = session
        .execute(
            &IdcCommand::ReadRawData {
                sources: LFS_IDC_TRACK2,
            },
            0,
        )
        .unwrap();
    let canceller = request.canceller();
    drop(request);
    timeout(Duration::from_secs(5), session.idle())
        .await
        .expect("the SP completed the dropped request");
    assert_eq!(
        canceller.cancel().unwrap_err().hresult,
        LFS_ERR_INVALID_REQ_ID
    );

    // A read with a time limit and no card times out.
    let (_, c) = timeout(Duration::from_secs(5), async {
        let r = session
            .execute(
                &IdcCommand::ReadRawData {
                    sources: LFS_IDC_TRACK2,
                },
                100,
            )
            .unwrap();
        ((), r.completion().await)
    })
    .await
    .unwrap();
    assert_eq!(c.hresult, LFS_ERR_TIMEOUT);
}

#[tokio::test]
async fn failing_eject_jams_and_reset_frees_the_card() {
    let (_p, session, mut events) = open(&format!(
        "card={TRACK2};insert_delay_ms=0;fail_eject=-200;take_delay_ms=50"
    ));
    assert_eq!(
        run(
            &session,
            IdcCommand::ReadRawData {
                sources: LFS_IDC_TRACK2
            }
        )
        .await
        .1
        .hresult,
        LFS_SUCCESS
    );
    let (_, c) = run(&session, IdcCommand::EjectCard).await;
    assert_eq!(c.hresult, LFS_ERR_IDC_MEDIAJAM);
    assert_eq!(status(&session).await.media, LFS_IDC_MEDIAJAMMED);

    let (_, c) = run(&session, IdcCommand::Reset { action: None }).await;
    assert_eq!(c.hresult, LFS_SUCCESS);
    let e = next_event(&mut events).await;
    assert_eq!(e.id, LFS_SRVE_IDC_CARDACTION);
    assert_eq!(
        e.data,
        Data::CardAction(CardAction {
            action: LFS_IDC_CARDEJECTED,
            position: LFS_IDC_MEDIAPRESENT
        })
    );
    let e = next_event(&mut events).await;
    assert_eq!(e.id, LFS_SRVE_IDC_MEDIAREMOVED);

    let (_, c) = run(&session, IdcCommand::Reset { action: Some(9) }).await;
    assert_eq!(c.hresult, LFS_ERR_INVALID_DATA);
}

#[tokio::test]
async fn retain_counts_cards_and_reports_the_bin_threshold() {
    let (_p, session, mut events) = open(&format!(
        "card={TRACK2};insert_delay_ms=0;retain_capacity=2"
    ));
    for expected in 1..=2 {
        assert_eq!(
            run(
                &session,
                IdcCommand::ReadRawData {
                    sources: LFS_IDC_TRACK2
                }
            )
            .await
            .1
            .hresult,
            LFS_SUCCESS
        );
        let (_, c) = run(&session, IdcCommand::RetainCard).await;
        assert_eq!(c.hresult, LFS_SUCCESS);
        let Data::RetainCard(r) = c.data else {
            panic!("{:?}", c.data)
        };
        assert_eq!(r.count, expected);
        assert_eq!(r.position, LFS_IDC_MEDIANOTPRESENT);
    }
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.kind, e.id),
        (EventKind::User, LFS_USRE_IDC_RETAINBINTHRESHOLD)
    );
    assert_eq!(e.data, Data::RetainBinThreshold(LFS_IDC_RETAINBINFULL));
    let s = status(&session).await;
    assert_eq!((s.cards, s.retain_bin), (2, LFS_IDC_RETAINBINFULL));

    assert_eq!(
        run(
            &session,
            IdcCommand::ReadRawData {
                sources: LFS_IDC_TRACK2
            }
        )
        .await
        .1
        .hresult,
        LFS_SUCCESS
    );
    assert_eq!(
        run(&session, IdcCommand::RetainCard).await.1.hresult,
        LFS_ERR_IDC_RETAINBINFULL
    );
}

#[tokio::test]
async fn chip_cards_answer_atr_and_apdus() {
    let (_p, session, _events) = open(&format!(
        "card={TRACK2};insert_delay_ms=0;atr=3B6800000073C84013009000"
    ));
    let (_, c) = run(
        &session,
        IdcCommand::ReadRawData {
            sources: LFS_IDC_CHIP,
        },
    )
    .await;
    let Data::CardData(items) = c.data else {
        panic!()
    };
    assert_eq!(items[0].source, LFS_IDC_CHIP);
    assert_eq!(items[0].data[0], 0x3B);
    assert_eq!(status(&session).await.chip_power, LFS_IDC_CHIPONLINE);
    let apdu = vec![0x00, 0xA4, 0x04, 0x00, 0x00];
    let (_, c) = run(
        &session,
        IdcCommand::ChipIo {
            protocol: LFS_IDC_CHIPT0,
            apdu: apdu.clone(),
        },
    )
    .await;
    assert_eq!(c.hresult, LFS_SUCCESS);
    let Data::ChipIo(io) = c.data else { panic!() };
    assert_eq!(io.data, vec![0x90, 0x00]);
    let (_, c) = run(
        &session,
        IdcCommand::ChipIo {
            protocol: 0x40,
            apdu,
        },
    )
    .await;
    assert_eq!(c.hresult, LFS_ERR_IDC_PROTOCOLNOTSUPP);

    // A magnetic-only card has no chip.
    let (_p2, plain, _e2) = open(&format!("card={TRACK2};insert_delay_ms=0"));
    let (_, c) = run(
        &plain,
        IdcCommand::ReadRawData {
            sources: LFS_IDC_CHIP,
        },
    )
    .await;
    let Data::CardData(items) = c.data else {
        panic!()
    };
    assert_eq!(items[0].status, LFS_IDC_DATASRCMISSING);
    let (_, c) = run(
        &plain,
        IdcCommand::ChipIo {
            protocol: LFS_IDC_CHIPT0,
            apdu: vec![0, 0xA4, 4, 0],
        },
    )
    .await;
    assert_eq!(c.hresult, LFS_ERR_IDC_INVALIDMEDIA);
}

#[tokio::test]
async fn capabilities_describe_the_reader() {
    let (_p, session, _events) = open("retain_capacity=7");
    let c = session
        .get_info(IdcInfo::Capabilities, 0)
        .unwrap()
        .completion()
        .await;
    let Data::Capabilities(caps) = c.data else {
        panic!("{:?}", c.data)
    };
    assert_eq!(caps.dev_class, LFS_SERVICE_CLASS_IDC);
    assert_eq!(caps.cards, 7);
    assert_eq!(caps.vendor, "OpenTeller");
    assert_eq!(caps.chip_protocols, LFS_IDC_CHIPT0 | LFS_IDC_CHIPT1);
}

#[tokio::test]
async fn unregistered_sessions_get_no_service_events() {
    let provider = Provider::load(sp_path()).unwrap();
    let (session, mut events) = provider
        .open(&format!(
            "CardReader;card={TRACK2};insert_delay_ms=0;take_delay_ms=10"
        ))
        .unwrap();
    run(
        &session,
        IdcCommand::ReadRawData {
            sources: LFS_IDC_TRACK2,
        },
    )
    .await;
    run(&session, IdcCommand::EjectCard).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&session).await.media, LFS_IDC_MEDIANOTPRESENT);
    assert!(events.try_recv().is_none());
    assert_eq!(
        session.register(0x100).unwrap_err().hresult,
        LFS_ERR_INVALID_EVENT_CLASS
    );
}

#[tokio::test]
async fn closing_the_session_cancels_what_is_open() {
    let provider = Provider::load(sp_path()).unwrap();
    let (session, mut events) = provider.open("CardReader;card=").unwrap();
    let request = session
        .execute(
            &IdcCommand::ReadRawData {
                sources: LFS_IDC_TRACK2,
            },
            0,
        )
        .unwrap();
    let id = request.id();
    drop(request);
    drop(session);
    // The session is closed (LFSClose ran): the event stream ends.
    assert!(
        timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .is_none(),
        "request {id}"
    );
}

#[test]
fn load_errors_are_typed_and_clear() {
    let missing = Provider::load("/nonexistent/libvendor.so").unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }));
    assert_eq!(
        missing.to_string(),
        "service provider library /nonexistent/libvendor.so does not exist"
    );

    let not_a_library =
        Provider::load(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap_err();
    assert!(
        matches!(not_a_library, Error::Load { .. }),
        "{not_a_library}"
    );
    assert!(
        not_a_library
            .to_string()
            .starts_with("cannot load service provider library")
    );

    // A real library that is not a service provider.
    let libc = Provider::load("libc.so.6").unwrap_err();
    assert!(
        matches!(
            libc,
            Error::MissingSymbol {
                symbol: "LFSStartUp",
                ..
            }
        ),
        "{libc}"
    );
    assert!(
        libc.to_string().contains("does not export LFSStartUp"),
        "{libc}"
    );

    let provider = Provider::load(sp_path()).unwrap();
    let bad = provider
        .open("CardReader;insert_delay_ms=soon")
        .unwrap_err();
    assert!(
        matches!(
            bad,
            Error::Open {
                hresult: LFS_ERR_INVALID_DATA,
                ..
            }
        ),
        "{bad}"
    );
    assert!(
        bad.to_string().contains("LFS_ERR_INVALID_DATA (-52)"),
        "{bad}"
    );
    assert!(matches!(
        provider.open("Card\0Reader"),
        Err(Error::InvalidLogicalName(_))
    ));
}
