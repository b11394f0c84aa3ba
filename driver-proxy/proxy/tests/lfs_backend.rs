//! `driver-proxy --backend lfs:` against the workspace's test service provider
//! (`libopenteller_lfs_test_sp.so`, built by this test with the same cargo, profile and target
//! directory): the real binary, the real socket, the real C ABI.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use openteller_proto::Endpoint;
use openteller_proto::device::v1::{
    CancelRequest, CardReaderCommand, Command, CommandCompletion, CompletionCode, DeviceEvent,
    DeviceState, Eject, GetCapabilitiesRequest, GetStatusRequest, MediaStatus, PinPadCommand,
    ReadRawData, Retain, SubscribeRequest, card_reader_command, card_reader_event,
    card_reader_result, command, command_completion, command_reply, device_client::DeviceClient,
    device_event, device_status, notice, pin_pad_command,
};
use tokio::time::timeout;
use tonic::transport::Channel;

const TRACK2: &str = "6222020200112233445=49121010000000000000";
const WAIT: Duration = Duration::from_secs(15);
const SP_VARS: [&str; 7] = [
    "OPENTELLER_TEST_SP_CARD",
    "OPENTELLER_TEST_SP_INSERT_DELAY_MS",
    "OPENTELLER_TEST_SP_TAKE_DELAY_MS",
    "OPENTELLER_TEST_SP_FAIL_EJECT",
    "OPENTELLER_TEST_SP_ATR",
    "OPENTELLER_TEST_SP_RETAIN_CAPACITY",
    "OPENTELLER_LFS_LOGICAL_NAME",
];

/// Builds the test SP (a no-op when it is up to date) and returns its path.
fn sp_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_driver-proxy"));
        let profile_dir = bin.parent().expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let name = format!(
            "{}openteller_lfs_test_sp{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        );
        let lib = profile_dir.join(name);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Process::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "openteller-lfs-test-sp",
                "--profile",
                &profile,
                "--manifest-path",
            ])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .status();
        match status {
            Ok(s) if s.success() => {}
            other if lib.exists() => eprintln!(
                "building the test SP failed ({other:?}); using the existing {}",
                lib.display()
            ),
            other => panic!(
                "cannot build the test SP (cargo build -p openteller-lfs-test-sp): {other:?}"
            ),
        }
        assert!(lib.exists(), "{} was not built", lib.display());
        lib
    })
}

/// A running driver-proxy, killed on drop.
struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn start(env: &[(&str, &str)]) -> (Proxy, DeviceClient<Channel>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("idc.sock");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = Process::new(env!("CARGO_BIN_EXE_driver-proxy"));
        cmd.args(["--class", "CardReader", "--backend"])
            .arg(format!("lfs:{}", sp_library().display()))
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--state-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for var in SP_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("spawn driver-proxy");
        let mut proxy = Proxy { child, dir, socket };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("driver-proxy exited early ({status}):\n{}", proxy.stderr());
            }
            if proxy.socket.exists() && tokio::net::UnixStream::connect(&proxy.socket).await.is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "driver-proxy did not serve in time:\n{}",
                proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let channel = Endpoint::Unix(proxy.socket.clone()).channel().unwrap();
        (proxy, DeviceClient::new(channel))
    }
}

fn idc(command: card_reader_command::Command) -> Option<command::Command> {
    Some(command::Command::CardReader(CardReaderCommand {
        command: Some(command),
    }))
}

fn read_track2() -> Option<command::Command> {
    idc(card_reader_command::Command::ReadRawData(ReadRawData {
        track2: true,
        ..Default::default()
    }))
}

/// Runs a command to its completion; returns its events and completion.
async fn run(
    client: &mut DeviceClient<Channel>,
    request_id: &str,
    command: Option<command::Command>,
) -> (Vec<DeviceEvent>, CommandCompletion) {
    let request = Command {
        request_id: request_id.into(),
        timeout_ms: 0,
        command,
    };
    let mut stream = timeout(WAIT, client.execute(request))
        .await
        .expect("execute in time")
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    loop {
        let reply = timeout(WAIT, stream.message())
            .await
            .expect("a reply in time")
            .unwrap()
            .expect("a completion");
        assert_eq!(reply.request_id, request_id);
        match reply.reply.unwrap() {
            command_reply::Reply::Event(e) => events.push(e),
            command_reply::Reply::Completion(c) => return (events, c),
        }
    }
}

fn code(c: &CommandCompletion) -> CompletionCode {
    CompletionCode::try_from(c.completion.as_ref().unwrap().code).unwrap()
}

fn idc_event(e: &DeviceEvent) -> Option<&card_reader_event::Event> {
    match &e.event {
        Some(device_event::Event::CardReader(c)) => c.event.as_ref(),
        _ => None,
    }
}

async fn media(client: &mut DeviceClient<Channel>) -> MediaStatus {
    let status = client
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.device, DeviceState::Online as i32);
    match status.detail {
        Some(device_status::Detail::CardReader(r)) => MediaStatus::try_from(r.media).unwrap(),
        other => panic!("not a card reader status: {other:?}"),
    }
}

#[tokio::test]
async fn read_waits_for_the_card_then_eject_and_the_customer_takes_it() {
    // The customer takes the card 3 s after the eject: far longer than one
    // status query, so the "card in the slot" state is seen even on a loaded
    // machine.
    let (proxy, mut client) = Proxy::start(&[
        ("OPENTELLER_TEST_SP_CARD", TRACK2),
        ("OPENTELLER_TEST_SP_TAKE_DELAY_MS", "3000"),
    ])
    .await;
    let caps = client
        .get_capabilities(GetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.backend, format!("lfs:{}", sp_library().display()));
    assert_eq!(caps.vendor, "OpenTeller");
    assert!(caps.commands.iter().any(|c| c == "CardReader.ReadRawData"));
    assert!(caps.simulator_actions.is_empty());
    assert_eq!(media(&mut client).await, MediaStatus::NotPresent);
    let mut notices = client
        .subscribe(SubscribeRequest {})
        .await
        .unwrap()
        .into_inner();

    let (events, completion) = run(&mut client, "read-1", read_track2()).await;
    let kinds: Vec<_> = events.iter().filter_map(idc_event).collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [
                card_reader_event::Event::InsertCard(_),
                card_reader_event::Event::MediaInserted(_)
            ]
        ),
        "{kinds:?}"
    );
    assert_eq!(code(&completion), CompletionCode::Success, "{completion:?}");
    let Some(command_completion::Result::CardReader(r)) = &completion.result else {
        panic!("{completion:?}")
    };
    let Some(card_reader_result::Result::ReadRawData(read)) = &r.result else {
        panic!("{r:?}")
    };
    assert_eq!(read.track2.as_ref().unwrap().data, TRACK2);
    assert!(read.track1.is_none());
    assert_eq!(media(&mut client).await, MediaStatus::Present);

    let (_, completion) = run(
        &mut client,
        "eject-1",
        idc(card_reader_command::Command::Eject(Eject {})),
    )
    .await;
    assert_eq!(code(&completion), CompletionCode::Success, "{completion:?}");
    assert_eq!(media(&mut client).await, MediaStatus::Entering);

    // The customer takes the card: a MEDIAREMOVED notice.
    let removed = timeout(WAIT, async {
        while let Some(n) = notices.message().await.unwrap() {
            if let Some(notice::Notice::Event(e)) = &n.notice
                && matches!(
                    idc_event(e),
                    Some(card_reader_event::Event::MediaRemoved(_))
                )
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("MEDIAREMOVED in time");
    assert!(removed);
    let deadline = Instant::now() + WAIT;
    while media(&mut client).await != MediaStatus::NotPresent {
        assert!(
            Instant::now() < deadline,
            "the status never showed the card taken"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Read again and retain: the count comes back and shows in the status.
    assert_eq!(
        code(&run(&mut client, "read-2", read_track2()).await.1),
        CompletionCode::Success
    );
    let (_, completion) = run(
        &mut client,
        "retain-1",
        idc(card_reader_command::Command::Retain(Retain {})),
    )
    .await;
    let Some(command_completion::Result::CardReader(r)) = &completion.result else {
        panic!("{completion:?}")
    };
    assert!(
        matches!(r.result, Some(card_reader_result::Result::Retain(ref x)) if x.retain_count == 1),
        "{r:?}"
    );
    let status = client
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let Some(device_status::Detail::CardReader(s)) = status.detail else {
        panic!()
    };
    assert_eq!((s.retain_count, s.retain_capacity), (1, 50));
    assert!(
        !proxy.stderr().contains(TRACK2),
        "the track must never be logged"
    );
}

#[tokio::test]
async fn a_failing_eject_completes_with_mediajam() {
    let (_proxy, mut client) = Proxy::start(&[
        ("OPENTELLER_TEST_SP_CARD", TRACK2),
        ("OPENTELLER_TEST_SP_INSERT_DELAY_MS", "0"),
        ("OPENTELLER_TEST_SP_FAIL_EJECT", "-200"),
    ])
    .await;
    assert_eq!(
        code(&run(&mut client, "read", read_track2()).await.1),
        CompletionCode::Success
    );
    let (_, completion) = run(
        &mut client,
        "eject",
        idc(card_reader_command::Command::Eject(Eject {})),
    )
    .await;
    let c = completion.completion.unwrap();
    assert_eq!(c.code, CompletionCode::CommandError as i32, "{c:?}");
    assert_eq!((c.error_code, c.error_name.as_str()), (-200, "MEDIAJAM"));
    assert!(
        c.description.contains("CardReader.Eject"),
        "{}",
        c.description
    );
    assert_eq!(media(&mut client).await, MediaStatus::Jammed);
}

#[tokio::test]
async fn cancel_of_a_waiting_read_completes_it_canceled() {
    // No card: the read waits until canceled.
    let (_proxy, client) = Proxy::start(&[]).await;
    let mut runner = client.clone();
    let read = tokio::spawn(async move { run(&mut runner, "wait-read", read_track2()).await });
    let mut client = client;
    // Cancel once the read is running (the queue then knows the id).
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = client
            .cancel(CancelRequest {
                request_ids: vec!["wait-read".into()],
            })
            .await
            .unwrap()
            .into_inner();
        if reply.canceled == ["wait-read"] {
            break;
        }
        assert!(Instant::now() < deadline, "the read never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, completion) = timeout(WAIT, read).await.unwrap().unwrap();
    assert_eq!(
        code(&completion),
        CompletionCode::Canceled,
        "{completion:?}"
    );

    // The device goes on: the next command runs (behind the SP's canceled read).
    let reset = idc(card_reader_command::Command::Reset(Default::default()));
    assert_eq!(
        code(&run(&mut client, "reset", reset).await.1),
        CompletionCode::Success
    );
    assert_eq!(media(&mut client).await, MediaStatus::NotPresent);
}

#[tokio::test]
async fn a_pin_pad_command_is_unsupported() {
    let (_proxy, mut client) = Proxy::start(&[]).await;
    let pin = Some(command::Command::PinPad(PinPadCommand {
        command: Some(pin_pad_command::Command::Reset(Default::default())),
    }));
    let (_, completion) = run(&mut client, "pin", pin).await;
    assert_eq!(code(&completion), CompletionCode::UnsupportedCommand);
}

#[test]
fn a_missing_library_exits_78_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libvendor_missing.so");
    let out = Process::new(env!("CARGO_BIN_EXE_driver-proxy"))
        .args(["--class", "CardReader", "--backend"])
        .arg(format!("lfs:{}", missing.display()))
        .arg("--listen")
        .arg(format!("unix:{}", dir.path().join("idc.sock").display()))
        .arg("--state-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "service provider library {} does not exist",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("idc.sock").exists());
}
