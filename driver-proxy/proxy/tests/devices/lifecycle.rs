use std::process::Command;

use openteller_proto::device::v1::{
    CardReaderCommand, CompletionCode, GetCapabilitiesRequest, GetKeyDetail, PinPadCommand,
    SimulatorRequest, command, pin_pad_command,
};

use crate::support::*;

#[test]
fn bad_arguments_exit_64_with_a_message() {
    for args in [
        vec!["--class", "Scanner", "--listen", "unix:/tmp/x.sock"],
        vec!["--class", "CardReader", "--listen", "/tmp/x.sock"],
        vec!["--class", "CardReader", "--listen", "tcp:localhost"],
        vec![
            "--class",
            "CardReader",
            "--backend",
            "magic",
            "--listen",
            "unix:/tmp/x.sock",
        ],
        vec!["--class", "CardReader"],
    ] {
        let out = Command::new(binary()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proxy::start("ReceiptPrinter", dir.path()).await;
    let caps = p
        .device()
        .get_capabilities(GetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.backend, "virtual");
    assert!(
        caps.commands
            .contains(&"ReceiptPrinter.PrintForm".to_owned())
    );
    let status = p.terminate();
    assert_eq!(status.code(), Some(0));
    assert!(!p.socket.exists());
}

#[tokio::test]
async fn a_second_proxy_on_a_live_socket_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("PinPad", dir.path()).await;
    let out = Command::new(binary())
        .args(["--class", "PinPad", "--listen"])
        .arg(format!("unix:{}", p.socket.display()))
        .arg("--state-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    // The first one still serves.
    assert!(p.status().await.device > 0);
}

#[tokio::test]
async fn malformed_commands_get_clear_completions() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("CardReader", dir.path()).await;
    let pin = command::Command::PinPad(PinPadCommand {
        command: Some(pin_pad_command::Command::GetKeyDetail(GetKeyDetail {})),
    });
    let (_, c) = p.execute("wrong-class", 0, pin.clone()).await;
    assert_eq!(code(&c), CompletionCode::UnsupportedCommand);
    let (_, c) = p.execute("", 0, pin.clone()).await;
    assert_eq!(code(&c), CompletionCode::InvalidRequestId);
    let (_, c) = p.execute(&"x".repeat(65), 0, pin).await;
    assert_eq!(code(&c), CompletionCode::InvalidRequestId);
    let (_, c) = p
        .execute(
            "empty",
            0,
            command::Command::CardReader(CardReaderCommand { command: None }),
        )
        .await;
    assert_eq!(code(&c), CompletionCode::InvalidCommand);
    // An empty simulator request is a gRPC INVALID_ARGUMENT.
    let err = p
        .sim()
        .control(SimulatorRequest { action: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Garbage bytes on the socket do not bring the proxy down.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::UnixStream::connect(&p.socket).await.unwrap();
        let _ = s
            .write_all(b"\x00\x01garbage that is not HTTP/2\r\n\r\n")
            .await;
    }
    assert!(p.status().await.device > 0);
}
