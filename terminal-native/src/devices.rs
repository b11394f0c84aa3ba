//! The device manager: one gRPC client per configured driver-proxy.
//!
//! Each device has a link task that subscribes to the proxy's notices (connecting lazily, and
//! again with capped back-off after the stream breaks — a proxy restarted by the keeper is
//! picked up by itself), keeps the device's last status, forwards unsolicited events and
//! status changes to every page, and journals losing and regaining a device. Commands, status
//! and capability queries go straight to the proxy on the same channel.
//!
//! The manager never decides whether a command is allowed: that is [`crate::rules`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openteller_proto::device::v1::{
    CancelRequest, Capabilities, Command, CommandReply, DeviceState, DeviceStatus,
    GetCapabilitiesRequest, GetStatusRequest, Notice, SubscribeRequest,
    device_client::DeviceClient, device_event, notice,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;

use crate::config::{DeviceSpec, class_name};
use crate::journal::EJournal;

/// Unary calls and opening a stream give up after this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect back-off: first delay and cap.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why a device call failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No device of that name is configured.
    #[error("no device named {0:?}")]
    Unknown(String),
    /// The proxy cannot be reached (not running, restarting, no answer in time).
    #[error("device {device} is unavailable: {reason}")]
    Unavailable {
        /// The device.
        device: String,
        /// What the transport said.
        reason: String,
    },
    /// The proxy answered with a gRPC error.
    #[error("device {device} answered {code:?}: {message}")]
    Rpc {
        /// The device.
        device: String,
        /// gRPC code.
        code: tonic::Code,
        /// gRPC message.
        message: String,
    },
}

/// How usable a device is, for pages and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Connected and online (or busy with a command).
    Online,
    /// Not connected, or the device reports offline / powered off / missing.
    Offline,
    /// The device reports a hardware error.
    HardwareError,
    /// The device reports a user error (e.g. notes not taken).
    UserError,
    /// The proxy serves a device of another class than configured.
    Misconfigured,
}

/// One device as `device.list` and `terminal.status` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    /// Configured name.
    pub name: String,
    /// `CardReader`…
    pub class: &'static str,
    /// Counts for the in-service decision.
    pub critical: bool,
    /// The notice stream is up.
    pub connected: bool,
    /// Derived health.
    pub health: Health,
    /// Since when (ms since the epoch) the health is what it is.
    pub since_ms: u64,
    /// Why it is not online, when known.
    pub reason: Option<String>,
}

#[derive(Debug)]
struct LinkState {
    connected: bool,
    status: Option<DeviceStatus>,
    health: Health,
    since_ms: u64,
    reason: Option<String>,
}

#[derive(Debug)]
struct Link {
    spec: DeviceSpec,
    channel: Channel,
    state: Mutex<LinkState>,
}

impl Link {
    fn view(&self) -> DeviceView {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        DeviceView {
            name: self.spec.name.clone(),
            class: class_name(self.spec.class),
            critical: self.spec.critical,
            connected: s.connected,
            health: s.health,
            since_ms: s.since_ms,
            reason: s.reason.clone(),
        }
    }

    fn client(&self) -> DeviceClient<Channel> {
        DeviceClient::new(self.channel.clone())
    }
}

fn health_of(spec: &DeviceSpec, status: &DeviceStatus) -> (Health, Option<String>) {
    if status.device_class != spec.class as i32 {
        return (
            Health::Misconfigured,
            Some(format!(
                "the proxy serves class {}, configured {}",
                status.device_class,
                class_name(spec.class)
            )),
        );
    }
    match DeviceState::try_from(status.device) {
        Ok(DeviceState::Online | DeviceState::Busy) => (Health::Online, None),
        Ok(DeviceState::HardwareError) => (Health::HardwareError, Some("hardware error".into())),
        Ok(DeviceState::UserError) => (Health::UserError, Some("user error".into())),
        Ok(other) => (Health::Offline, Some(other.as_str_name().to_owned())),
        Err(_) => (Health::Offline, Some(format!("state {}", status.device))),
    }
}

fn classify(device: &str, status: tonic::Status) -> DeviceError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            DeviceError::Unavailable {
                device: device.to_owned(),
                reason: status.message().to_owned(),
            }
        }
        tonic::Code::Unknown if status.message().contains("transport") => {
            DeviceError::Unavailable {
                device: device.to_owned(),
                reason: status.message().to_owned(),
            }
        }
        code => DeviceError::Rpc {
            device: device.to_owned(),
            code,
            message: status.message().to_owned(),
        },
    }
}

async fn bounded<T>(
    device: &str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, DeviceError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(classify(device, status)),
        Err(_) => Err(DeviceError::Unavailable {
            device: device.to_owned(),
            reason: format!("no answer within {} ms", CALL_TIMEOUT.as_millis()),
        }),
    }
}

/// The manager; owns one link task per device.
#[derive(Debug)]
pub struct DeviceManager {
    links: Vec<Arc<Link>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// Where the manager reports to.
#[derive(Debug, Clone)]
pub struct Outlets {
    /// Page events (serialized `{"event", "data"}` messages) for every connected page.
    pub events: broadcast::Sender<String>,
    /// Poked on every health change, for the terminal status watcher.
    pub changed: Arc<Notify>,
    /// The electronic journal (device lost / back / errors).
    pub journal: EJournal,
}

impl DeviceManager {
    /// Creates the clients and starts one link task per device.
    pub fn start(devices: &[DeviceSpec], outlets: Outlets) -> Result<DeviceManager, DeviceError> {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let mut links = Vec::new();
        for spec in devices {
            let channel = spec
                .endpoint
                .channel()
                .map_err(|e| DeviceError::Unavailable {
                    device: spec.name.clone(),
                    reason: e.to_string(),
                })?;
            let link = Arc::new(Link {
                spec: spec.clone(),
                channel,
                state: Mutex::new(LinkState {
                    connected: false,
                    status: None,
                    health: Health::Offline,
                    since_ms: openteller_keeper::unix_ms(),
                    reason: Some("not connected yet".into()),
                }),
            });
            tasks.spawn(run_link(link.clone(), outlets.clone(), stop.clone()));
            links.push(link);
        }
        tasks.close();
        Ok(DeviceManager { links, tasks, stop })
    }

    /// Stops the link tasks and waits for them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }

    fn link(&self, name: &str) -> Result<&Arc<Link>, DeviceError> {
        self.links
            .iter()
            .find(|l| l.spec.name == name)
            .ok_or_else(|| DeviceError::Unknown(name.to_owned()))
    }

    /// The configuration of device `name`.
    pub fn spec(&self, name: &str) -> Result<&DeviceSpec, DeviceError> {
        Ok(&self.link(name)?.spec)
    }

    /// Every device, in configuration (name) order.
    pub fn views(&self) -> Vec<DeviceView> {
        self.links.iter().map(|l| l.view()).collect()
    }

    /// The last status seen on device `name`'s notice stream.
    pub fn cached_status(&self, name: &str) -> Result<Option<DeviceStatus>, DeviceError> {
        let link = self.link(name)?;
        let s = link.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.status.clone())
    }

    /// `Device.GetStatus`, live.
    pub async fn status(&self, name: &str) -> Result<DeviceStatus, DeviceError> {
        let link = self.link(name)?;
        bounded(name, link.client().get_status(GetStatusRequest {})).await
    }

    /// `Device.GetCapabilities`.
    pub async fn capabilities(&self, name: &str) -> Result<Capabilities, DeviceError> {
        let link = self.link(name)?;
        bounded(
            name,
            link.client().get_capabilities(GetCapabilitiesRequest {}),
        )
        .await
    }

    /// `Device.Cancel`; answers the request ids found.
    pub async fn cancel(
        &self,
        name: &str,
        request_ids: Vec<String>,
    ) -> Result<Vec<String>, DeviceError> {
        let link = self.link(name)?;
        let reply = bounded(name, link.client().cancel(CancelRequest { request_ids })).await?;
        Ok(reply.canceled)
    }

    /// `Device.Execute`; the time limit applies to opening the stream only.
    pub async fn execute(
        &self,
        name: &str,
        command: Command,
    ) -> Result<tonic::Streaming<CommandReply>, DeviceError> {
        let link = self.link(name)?;
        bounded(name, link.client().execute(command)).await
    }

    /// Turns a stream error into a [`DeviceError`].
    pub fn stream_error(name: &str, status: tonic::Status) -> DeviceError {
        classify(name, status)
    }
}

/// Updates a link's state; returns true when the health or connection changed.
fn update(
    link: &Link,
    connected: bool,
    status: Option<DeviceStatus>,
    unreachable: Option<String>,
) -> bool {
    let mut s = link.state.lock().unwrap_or_else(|p| p.into_inner());
    let (health, reason) = match (&status, unreachable) {
        (_, Some(reason)) => (Health::Offline, Some(reason)),
        (Some(st), None) => health_of(&link.spec, st),
        (None, None) => (s.health, s.reason.clone()),
    };
    let changed = s.connected != connected || s.health != health;
    if changed {
        s.since_ms = openteller_keeper::unix_ms();
    }
    s.connected = connected;
    s.health = health;
    s.reason = reason;
    if status.is_some() {
        s.status = status;
    }
    changed
}

fn emit(outlets: &Outlets, event: &str, data: serde_json::Value) {
    // No receiver (no page connected) is fine.
    let _ = outlets
        .events
        .send(json!({"event": event, "data": data}).to_string());
}

fn emit_status(link: &Link, outlets: &Outlets) {
    let view = link.view();
    let status = link
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .status
        .clone();
    emit(
        outlets,
        "device.status",
        json!({"device": view.name, "connected": view.connected, "health": view.health,
               "reason": view.reason, "status": status}),
    );
}

async fn run_link(link: Arc<Link>, outlets: Outlets, stop: CancellationToken) {
    let name = link.spec.name.clone();
    let mut backoff = BACKOFF_MIN;
    let mut was_connected = false;
    let mut last_error: Option<String> = None;
    loop {
        let mut client = link.client();
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            r = bounded(&name, client.subscribe(SubscribeRequest {})) => r,
        };
        let reason = match opened {
            Ok(mut stream) => loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = stream.message() => n,
                };
                match next {
                    Ok(Some(n)) => {
                        if !was_connected {
                            was_connected = true;
                            backoff = BACKOFF_MIN;
                            last_error = None;
                            tracing::info!(device = %name, endpoint = %link.spec.endpoint, "device connected");
                            outlets
                                .journal
                                .note(format!("{name} DEVICE CONNECTED {}", link.spec.endpoint))
                                .await;
                        }
                        handle_notice(&link, &outlets, n).await;
                    }
                    Ok(None) => break "the proxy closed the notice stream".to_owned(),
                    Err(status) => break classify(&name, status).to_string(),
                }
            },
            Err(e) => e.to_string(),
        };
        if update(&link, false, None, Some(reason.clone())) {
            emit_status(&link, &outlets);
            outlets.changed.notify_one();
        }
        if was_connected {
            was_connected = false;
            tracing::warn!(device = %name, %reason, "device connection lost");
            outlets
                .journal
                .note(format!("{name} DEVICE CONNECTION LOST: {reason}"))
                .await;
        } else if last_error.as_deref() != Some(reason.as_str()) {
            tracing::debug!(device = %name, %reason, "device not reachable");
        }
        last_error = Some(reason);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn handle_notice(link: &Link, outlets: &Outlets, n: Notice) {
    let name = &link.spec.name;
    match n.notice {
        Some(notice::Notice::Event(ev)) => match ev.event {
            Some(device_event::Event::StatusChanged(status)) => {
                let before = link.view().health;
                let changed = update(link, true, Some(status), None);
                emit_status(link, outlets);
                if changed {
                    outlets.changed.notify_one();
                    let after = link.view();
                    if after.health != before && after.health != Health::Online {
                        outlets
                            .journal
                            .note(format!(
                                "{name} DEVICE {:?}: {}",
                                after.health,
                                after.reason.unwrap_or_default()
                            ))
                            .await;
                    }
                }
            }
            Some(other) => emit(
                outlets,
                "device.notice",
                json!({"device": name, "sequence": n.sequence, "atMs": n.at_unix_ms,
                       "event": openteller_proto::device::v1::DeviceEvent { event: Some(other) }}),
            ),
            None => {}
        },
        Some(notice::Notice::CommandFinished(f)) => {
            let failed = f.completion.as_ref().is_some_and(|c| {
                c.code == openteller_proto::device::v1::CompletionCode::HardwareError as i32
            });
            if failed {
                outlets
                    .journal
                    .note(format!(
                        "{name} {} {} HARDWARE_ERROR",
                        f.command, f.request_id
                    ))
                    .await;
            }
        }
        Some(notice::Notice::CommandStarted(_)) | None => {}
    }
}
