//! One watcher per device: keeps a `Subscribe` stream open to the proxy (reconnecting with
//! back-off when it restarts), remembers what the page needs on arrival (connection, status,
//! capabilities, running commands, recent notices) and fans the notices out to the pages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openteller_proto::device::v1::{
    Capabilities, DeviceClass, DeviceStatus, Notice, device_event, notice,
};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::conn::DeviceConn;

/// Notices kept for a page that opens later.
const RECENT: usize = 200;
/// First and longest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the pages receive, already in JSON.
#[derive(Debug, Clone)]
pub(crate) enum Update {
    /// The device view changed (connection, capabilities) or a page lagged: a [`DeviceView`].
    Device(Arc<str>),
    /// One notice of the proxy, as proto3 JSON.
    Notice(Arc<str>),
}

/// A command that started and has not finished.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Running {
    /// The requester's id.
    pub(crate) request_id: String,
    /// e.g. `CardReader.ReadRawData`.
    pub(crate) command: String,
}

#[derive(Debug, Default)]
struct Shared {
    connected: bool,
    error: Option<String>,
    capabilities: Option<Capabilities>,
    status: Option<DeviceStatus>,
    running: Vec<Running>,
    recent: VecDeque<Arc<str>>,
}

/// What the panel tells about a device (`GET /api/devices`, the `device` SSE event).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceView<'a> {
    name: &'a str,
    endpoint: String,
    connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<&'a Capabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a DeviceStatus>,
    running: &'a [Running],
    #[serde(skip_serializing_if = "Option::is_none")]
    missed_notices: Option<u64>,
}

/// One device of the panel.
pub(crate) struct Device {
    /// The name used in URLs.
    pub(crate) name: String,
    /// Clients of its proxy.
    pub(crate) conn: DeviceConn,
    shared: Mutex<Shared>,
    updates: broadcast::Sender<Update>,
}

impl Device {
    /// A device not connected yet; [`Device::watch`] connects it.
    pub(crate) fn new(name: String, conn: DeviceConn) -> Self {
        Device {
            name,
            conn,
            shared: Mutex::new(Shared::default()),
            updates: broadcast::channel(256).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn view<'a>(&'a self, s: &'a Shared, missed_notices: Option<u64>) -> DeviceView<'a> {
        let class = s
            .capabilities
            .as_ref()
            .map(|c| c.device_class)
            .or_else(|| s.status.as_ref().map(|st| st.device_class))
            .and_then(|c| DeviceClass::try_from(c).ok())
            .filter(|c| *c != DeviceClass::Unspecified)
            .map(|c| c.as_str_name());
        DeviceView {
            name: &self.name,
            endpoint: self.conn.endpoint().to_string(),
            connected: s.connected,
            error: s.error.as_deref(),
            device_class: class,
            capabilities: s.capabilities.as_ref(),
            status: s.status.as_ref(),
            running: &s.running,
            missed_notices,
        }
    }

    /// The view as JSON.
    pub(crate) fn view_json(&self, missed_notices: Option<u64>) -> serde_json::Value {
        let s = self.lock();
        serde_json::to_value(self.view(&s, missed_notices)).unwrap_or_else(|e| {
            serde_json::json!({ "name": self.name, "connected": false, "error": format!("cannot show the device: {e}") })
        })
    }

    fn view_text(&self, s: &Shared, missed_notices: Option<u64>) -> Arc<str> {
        match serde_json::to_string(&self.view(s, missed_notices)) {
            Ok(t) => t.into(),
            Err(e) => serde_json::json!({ "name": self.name, "connected": false, "error": format!("cannot show the device: {e}") })
                .to_string()
                .into(),
        }
    }

    /// A page arrives: the current view and the recent notices, then everything new. Taken
    /// under one lock so nothing is lost or repeated in between.
    pub(crate) fn attach(&self) -> (Vec<Update>, broadcast::Receiver<Update>) {
        let s = self.lock();
        let receiver = self.updates.subscribe();
        let mut first = vec![Update::Device(self.view_text(&s, None))];
        first.extend(s.recent.iter().cloned().map(Update::Notice));
        (first, receiver)
    }

    /// The view for a page that missed `n` updates.
    pub(crate) fn lagged(&self, n: u64) -> Update {
        let s = self.lock();
        Update::Device(self.view_text(&s, Some(n)))
    }

    fn publish_view(&self, s: &Shared) {
        let _ = self.updates.send(Update::Device(self.view_text(s, None)));
    }

    fn on_connected(&self, capabilities: Option<Capabilities>) {
        let mut s = self.lock();
        s.connected = true;
        s.error = None;
        s.capabilities = capabilities;
        // A new proxy process (or a new stream) has no commands we know of.
        s.running.clear();
        self.publish_view(&s);
        tracing::info!(device = %self.name, endpoint = %self.conn.endpoint(), "connected");
    }

    fn on_disconnected(&self, reason: String) {
        let mut s = self.lock();
        let changed = s.connected || s.error.is_none();
        if s.connected {
            tracing::warn!(device = %self.name, %reason, "disconnected");
        } else if s.error.is_none() {
            tracing::warn!(device = %self.name, %reason, "cannot connect; retrying");
        }
        s.connected = false;
        s.running.clear();
        s.error = Some(reason);
        if changed {
            self.publish_view(&s);
        }
    }

    fn on_notice(&self, n: &Notice) {
        let text: Arc<str> = match serde_json::to_string(n) {
            Ok(t) => t.into(),
            Err(e) => {
                tracing::warn!(device = %self.name, error = %e, "a notice cannot be shown as JSON");
                return;
            }
        };
        let mut s = self.lock();
        match &n.notice {
            Some(notice::Notice::Event(e)) => {
                if let Some(device_event::Event::StatusChanged(status)) = &e.event {
                    s.status = Some(status.clone());
                }
            }
            Some(notice::Notice::CommandStarted(c)) => {
                s.running.retain(|r| r.request_id != c.request_id);
                s.running.push(Running {
                    request_id: c.request_id.clone(),
                    command: c.command.clone(),
                });
            }
            Some(notice::Notice::CommandFinished(c)) => {
                s.running.retain(|r| r.request_id != c.request_id)
            }
            None => {}
        }
        if s.recent.len() == RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back(Arc::clone(&text));
        let _ = self.updates.send(Update::Notice(text));
    }

    /// Follows the proxy until `shutdown` turns true.
    pub(crate) async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut was_connected = false;
            let session = async {
                let mut stream = self.conn.subscribe().await.map_err(|e| e.to_string())?;
                let capabilities = match self.conn.capabilities().await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(device = %self.name, error = %e, "no capabilities");
                        None
                    }
                };
                self.on_connected(capabilities);
                was_connected = true;
                loop {
                    match stream.message().await {
                        Ok(Some(n)) => self.on_notice(&n),
                        Ok(None) => {
                            return Err::<(), _>("the proxy ended the notice stream".to_owned());
                        }
                        Err(status) => return Err(self.conn.stream_error(&status).to_string()),
                    }
                }
            };
            tokio::select! {
                result = session => {
                    if let Err(reason) = result {
                        self.on_disconnected(reason);
                    }
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if was_connected {
                backoff = MIN_BACKOFF;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
