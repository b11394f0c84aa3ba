//! Spawns real `driver-proxy` processes on Unix sockets for the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use openteller_proto::Endpoint;
use openteller_proto::device::v1::{
    Command as DeviceCommand, CommandCompletion, CompletionCode, DeviceEvent, DeviceStatus,
    GetStatusRequest, SimulatorReply, SimulatorRequest, command, command_reply,
    device_client::DeviceClient, simulator_client::SimulatorClient, simulator_request,
};
use tonic::transport::Channel;

pub struct Proxy {
    child: Option<Child>,
    pub class: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    channel: Channel,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_driver-proxy")
}

impl Proxy {
    /// Starts a virtual device with its state and socket under `dir`.
    pub async fn start(class: &str, dir: &Path) -> Proxy {
        Self::start_with(class, dir, &[]).await
    }

    pub async fn start_with(class: &str, dir: &Path, extra: &[&str]) -> Proxy {
        let socket = dir.join(format!("{class}.sock"));
        let state_dir = dir.join(format!("{class}-state"));
        let child = Command::new(binary())
            .args(["--class", class, "--backend", "virtual", "--listen"])
            .arg(format!("unix:{}", socket.display()))
            .arg("--state-dir")
            .arg(&state_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn driver-proxy");
        let channel = Endpoint::Unix(socket.clone()).channel().expect("channel");
        let proxy = Proxy {
            child: Some(child),
            class: class.into(),
            state_dir,
            socket,
            channel,
        };
        proxy.wait_ready().await;
        proxy
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.socket.exists() {
                let mut health =
                    tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
                let req = tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                };
                if let Ok(r) = health.check(req).await
                    && r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "driver-proxy {} did not become ready",
                self.class
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn device(&self) -> DeviceClient<Channel> {
        DeviceClient::new(self.channel.clone())
    }

    pub fn sim(&self) -> SimulatorClient<Channel> {
        SimulatorClient::new(self.channel.clone())
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub async fn status(&self) -> DeviceStatus {
        self.device()
            .get_status(GetStatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }

    /// Runs one simulator action.
    pub async fn control(&self, action: simulator_request::Action) -> SimulatorReply {
        self.sim()
            .control(SimulatorRequest {
                action: Some(action),
            })
            .await
            .expect("simulator call")
            .into_inner()
    }

    /// Runs a command to its completion; returns its intermediate events and completion.
    pub async fn execute(
        &self,
        request_id: &str,
        timeout_ms: u32,
        cmd: command::Command,
    ) -> (Vec<DeviceEvent>, CommandCompletion) {
        execute(self.device(), request_id, timeout_ms, cmd).await
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "driver-proxy did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn execute(
    mut client: DeviceClient<Channel>,
    request_id: &str,
    timeout_ms: u32,
    cmd: command::Command,
) -> (Vec<DeviceEvent>, CommandCompletion) {
    let request = DeviceCommand {
        request_id: request_id.into(),
        timeout_ms,
        command: Some(cmd),
    };
    let mut stream = client.execute(request).await.expect("execute").into_inner();
    let mut events = Vec::new();
    while let Some(reply) = stream.message().await.expect("reply stream") {
        assert_eq!(reply.request_id, request_id);
        match reply.reply.expect("reply body") {
            command_reply::Reply::Event(e) => events.push(e),
            command_reply::Reply::Completion(c) => {
                assert!(
                    stream.message().await.expect("end of stream").is_none(),
                    "nothing after the completion"
                );
                return (events, c);
            }
        }
    }
    panic!("the stream ended without a completion");
}

pub fn code(c: &CommandCompletion) -> CompletionCode {
    CompletionCode::try_from(c.completion.as_ref().expect("completion").code).expect("known code")
}

pub fn error_code(c: &CommandCompletion) -> i32 {
    c.completion.as_ref().expect("completion").error_code
}

pub fn sim_code(r: &SimulatorReply) -> CompletionCode {
    CompletionCode::try_from(r.result.as_ref().expect("result").code).expect("known code")
}

/// Retries a simulator action until it succeeds (e.g. InsertCard racing the read that waits).
pub async fn control_until_ok(proxy: &Proxy, action: simulator_request::Action) -> SimulatorReply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = proxy.control(action.clone()).await;
        if sim_code(&r) == CompletionCode::Success {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "simulator action kept failing: {:?}",
            r.result
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
