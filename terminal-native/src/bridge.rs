//! The SJSL bridge: one page's channel of JSON messages to the host, independent of the
//! transport (the headless WebSocket today, wry's IPC handler in the windowed host later).
//!
//! A transport creates one [`Bridge`] per page, feeds it every text message with
//! [`Bridge::handle`], and forwards two streams to the page: the bridge's own replies and
//! per-request events (the `mpsc` receiver given at creation) and the terminal-wide events
//! ([`Bridge::events`]). Protocol (docs/terminal-native.md):
//!
//! - page → host: `{"id": n, "method": "...", "params": {...}}`
//! - host → page: `{"id": n, "result": ...}` or
//!   `{"id": n, "error": {"code", "message", "completion"?, "xfsCode"?, "data"?}}`
//! - host → page, unsolicited: `{"event": "...", "data": ...}`
//!
//! Bad input never reaches a device: the message, the parameters and the command are parsed
//! and checked (device known, class right, command complete, rules of [`crate::rules`]) first.
//! Nothing here may panic on input.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openteller_proto::device::v1::{Command, CommandCompletion, CompletionCode, command_reply};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Terminal;
use crate::config::class_name;
use crate::devices::{DeviceError, DeviceManager};
use crate::rules::{RuleError, command_class, command_name};

/// Requests one page may have running at once; more are answered `BUSY`.
const MAX_CONCURRENT: usize = 32;

/// A typed error for the page.
#[derive(Debug, Clone)]
pub struct BridgeError {
    /// Stable code (see docs/terminal-native.md).
    pub code: &'static str,
    /// Human-readable.
    pub message: String,
    /// For `COMMAND_FAILED`: the completion code, e.g. `COMMAND_ERROR`, `TIME_OUT`.
    pub completion: Option<String>,
    /// For `COMMAND_FAILED` with a class error: the CEN/XFS 3.x number, e.g. -200.
    pub xfs_code: Option<i32>,
    /// Extra data (the full completion of a failed command).
    pub data: Option<Value>,
}

impl BridgeError {
    fn new(code: &'static str, message: impl Into<String>) -> BridgeError {
        BridgeError {
            code,
            message: message.into(),
            completion: None,
            xfs_code: None,
            data: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(c) = &self.completion {
            e["completion"] = json!(c);
        }
        if let Some(x) = self.xfs_code {
            e["xfsCode"] = json!(x);
        }
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }
}

impl From<DeviceError> for BridgeError {
    fn from(e: DeviceError) -> Self {
        let code = match &e {
            DeviceError::Unknown(_) => "UNKNOWN_DEVICE",
            DeviceError::Unavailable { .. } => "DEVICE_UNAVAILABLE",
            DeviceError::Rpc { code, .. } if *code == tonic::Code::InvalidArgument => {
                "INVALID_ARGUMENT"
            }
            DeviceError::Rpc { .. } => "DEVICE_ERROR",
        };
        BridgeError::new(code, e.to_string())
    }
}

impl From<RuleError> for BridgeError {
    fn from(e: RuleError) -> Self {
        let code = match &e {
            RuleError::DispenseRefused(_) => "DISPENSE_REFUSED",
            RuleError::Sequence(_) => "SEQUENCE_ERROR",
            RuleError::OutOfService(_) => "OUT_OF_SERVICE",
        };
        BridgeError::new(code, e.to_string())
    }
}

fn invalid(message: impl Into<String>) -> BridgeError {
    BridgeError::new("INVALID_ARGUMENT", message)
}

fn params<T: for<'de> Deserialize<'de>>(p: Value) -> Result<T, BridgeError> {
    serde_json::from_value(p).map_err(|e| invalid(format!("params: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceParams {
    device: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExecuteParams {
    device: String,
    request_id: Option<String>,
    timeout_ms: Option<u32>,
    command: Value,
    authorization: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CancelParams {
    device: String,
    request_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InquiryParams {
    #[serde(default = "pinpad")]
    pin_block_from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WithdrawalParams {
    amount: u64,
    currency: String,
    #[serde(default = "pinpad")]
    pin_block_from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TransferParams {
    to_account: String,
    amount: u64,
    currency: String,
    #[serde(default = "pinpad")]
    pin_block_from: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinChangeParams {
    step: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalParams {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    level: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataParams {
    key: String,
    value: Option<Value>,
}

fn pinpad() -> String {
    "pinpad".into()
}

/// Longest `journal.write` text.
pub const MAX_JOURNAL_TEXT: usize = 512;
/// Longest `log.write` text.
pub const MAX_LOG_TEXT: usize = 2048;
/// Total size of the data pool (keys plus JSON values).
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// The small per-terminal data pool behind `data.get` / `data.set` / `data.delete` (SJSL's
/// `data` object): JSON values under 1-64 character keys, in memory only, at most
/// [`MAX_DATA_BYTES`] in all.
#[derive(Debug, Default)]
pub struct DataPool {
    values: std::sync::Mutex<std::collections::BTreeMap<String, (Value, usize)>>,
}

impl DataPool {
    fn check_key(key: &str) -> Result<(), BridgeError> {
        if (1..=64).contains(&key.chars().count()) && !key.chars().any(char::is_control) {
            Ok(())
        } else {
            Err(invalid(
                "key must be 1-64 characters without control characters",
            ))
        }
    }

    /// The value under `key` (null when absent).
    pub fn get(&self, key: &str) -> Result<Value, BridgeError> {
        Self::check_key(key)?;
        let v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        Ok(v.get(key).map(|(v, _)| v.clone()).unwrap_or(Value::Null))
    }

    /// Stores `value` under `key`; refused (nothing changed) beyond the size cap.
    pub fn set(&self, key: &str, value: Value) -> Result<(), BridgeError> {
        Self::check_key(key)?;
        let size = key.len() + value.to_string().len();
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let used: usize = v
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .map(|(_, (_, n))| n)
            .sum();
        if used + size > MAX_DATA_BYTES {
            return Err(BridgeError::new(
                "DATA_FULL",
                format!("the data pool holds at most {MAX_DATA_BYTES} bytes"),
            ));
        }
        v.insert(key.to_owned(), (value, size));
        Ok(())
    }

    /// Removes `key`; answers whether it was there.
    pub fn delete(&self, key: &str) -> Result<bool, BridgeError> {
        Self::check_key(key)?;
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        Ok(v.remove(key).is_some())
    }
}

/// The PIN block can only come from the EPP (the PIN entered with `PinPad.GetPin`).
fn check_pin_source(source: &str) -> Result<(), BridgeError> {
    if source == "pinpad" {
        Ok(())
    } else {
        Err(invalid("pinBlockFrom must be \"pinpad\""))
    }
}

static NEXT_PAGE: AtomicU64 = AtomicU64::new(1);

/// One page's bridge.
pub struct Bridge {
    terminal: Arc<Terminal>,
    out: mpsc::Sender<String>,
    page: u64,
    seq: AtomicU64,
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("page", &self.page).finish()
    }
}

fn check_request_id(id: &str) -> Result<(), BridgeError> {
    let ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "requestId must be 1-64 printable ASCII characters without spaces",
        ))
    }
}

impl Bridge {
    /// A bridge for one page; replies and per-request events go to `out`.
    pub fn new(terminal: Arc<Terminal>, out: mpsc::Sender<String>) -> Bridge {
        Bridge {
            terminal,
            out,
            page: NEXT_PAGE.fetch_add(1, Ordering::Relaxed),
            seq: AtomicU64::new(1),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Terminal-wide events (`device.status`, `device.notice`, `terminal.status`,
    /// `terminal.alarm`) as serialized messages, for the transport to forward.
    pub fn events(&self) -> broadcast::Receiver<String> {
        self.terminal.subscribe_events()
    }

    /// Handles one message from the page. Answers come through `out`; a request that takes
    /// time (every device call) runs in a task of this bridge, so the next message is read at
    /// once (a `device.cancel` must get through while a `device.execute` waits for a card).
    ///
    /// Never waits for room in `out`: the transport that drains `out` is usually the very
    /// loop calling this, so even the refusal of a bad message is sent from a task (a flood
    /// of bad messages cannot make the loop wait on itself).
    pub async fn handle(&self, text: &str) {
        let (id, method, params) = match parse_request(text) {
            Ok(r) => r,
            Err((id, e)) => {
                self.reply_later(json!({"id": id, "error": e}));
                return;
            }
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let e = BridgeError::new(
                "BUSY",
                format!("more than {MAX_CONCURRENT} requests running"),
            );
            self.reply_later(json!({"id": id, "error": e.to_json()}));
            return;
        };
        let terminal = self.terminal.clone();
        let out = self.out.clone();
        let stop = self.stop.clone();
        let generated = format!(
            "page{}-{}",
            self.page,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        self.tasks.spawn(async move {
            let answer = dispatch(&terminal, &out, &stop, &method, params, generated).await;
            let msg = match answer {
                Ok(result) => json!({"id": id, "result": result}),
                Err(e) => json!({"id": id, "error": e.to_json()}),
            };
            send(&out, msg).await;
            drop(permit);
        });
    }

    /// Sends `msg` to the page from a task of this bridge.
    fn reply_later(&self, msg: Value) {
        let out = self.out.clone();
        self.tasks.spawn(async move { send(&out, msg).await });
    }

    /// The page went away: cancel its running commands (money commands run to their end) and
    /// wait for its tasks.
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn send(out: &mpsc::Sender<String>, msg: Value) {
    // The page may be gone; there is nobody to tell then.
    let _ = out.send(msg.to_string()).await;
}

type ParseFailure = (Value, Value);

fn parse_request(text: &str) -> Result<(Value, String, Value), ParseFailure> {
    let err = |id: Value, code, msg: &str| (id, BridgeError::new(code, msg).to_json());
    let v: Value = serde_json::from_str(text)
        .map_err(|e| err(Value::Null, "PARSE_ERROR", &format!("not JSON: {e}")))?;
    let Value::Object(mut m) = v else {
        return Err(err(
            Value::Null,
            "INVALID_REQUEST",
            "a request is a JSON object",
        ));
    };
    let id = m.remove("id").unwrap_or(Value::Null);
    if !(id.is_number() || id.is_string()) {
        return Err(err(
            Value::Null,
            "INVALID_REQUEST",
            "id must be a number or a string",
        ));
    }
    let Some(Value::String(method)) = m.remove("method") else {
        return Err(err(id, "INVALID_REQUEST", "method must be a string"));
    };
    let params = m.remove("params").unwrap_or_else(|| json!({}));
    if !params.is_object() {
        return Err(err(id, "INVALID_ARGUMENT", "params must be an object"));
    }
    if let Some(k) = m.keys().next() {
        return Err(err(id, "INVALID_REQUEST", &format!("unknown member {k:?}")));
    }
    Ok((id, method, params))
}

async fn dispatch(
    terminal: &Arc<Terminal>,
    out: &mpsc::Sender<String>,
    stop: &CancellationToken,
    method: &str,
    p: Value,
    generated_id: String,
) -> Result<Value, BridgeError> {
    let devices = terminal.devices();
    match method {
        "device.list" => {
            let NoParams {} = params(p)?;
            Ok(json!(devices.views()))
        }
        "device.status" => {
            let DeviceParams { device } = params(p)?;
            let spec = devices.spec(&device)?;
            let status = devices.status(&device).await?;
            let view = devices
                .views()
                .into_iter()
                .find(|v| v.name == spec.name)
                .ok_or_else(|| BridgeError::from(DeviceError::Unknown(device.clone())))?;
            Ok(
                json!({"device": device, "class": class_name(spec.class), "health": view.health,
                      "connected": view.connected, "status": status}),
            )
        }
        "device.capabilities" => {
            let DeviceParams { device } = params(p)?;
            devices.spec(&device)?;
            Ok(json!(devices.capabilities(&device).await?))
        }
        "device.cancel" => {
            let CancelParams { device, request_id } = params(p)?;
            devices.spec(&device)?;
            check_request_id(&request_id)?;
            let canceled = devices.cancel(&device, vec![request_id]).await?;
            Ok(json!({"canceled": canceled}))
        }
        "device.execute" => {
            let ep: ExecuteParams = params(p)?;
            execute(terminal, out, stop, ep, generated_id).await
        }
        "terminal.status" => {
            let NoParams {} = params(p)?;
            Ok(json!(terminal.status()))
        }
        "journal.write" => {
            let JournalParams { text } = params(p)?;
            if text.trim().is_empty() || text.chars().count() > MAX_JOURNAL_TEXT {
                return Err(invalid(format!(
                    "text must be 1-{MAX_JOURNAL_TEXT} characters"
                )));
            }
            // One line of the page's own: no line breaks or other control characters that
            // could make it look like several lines, or like the host's.
            if text
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
            {
                return Err(invalid("text must not contain control characters"));
            }
            // Scrubbed here as log.write does (the journal scrubs every line again).
            let text = crate::journal::scrub(&text);
            terminal
                .gate()
                .journal()
                .write(format!("PAGE {text}"))
                .await
                .map_err(|e| BridgeError::new("JOURNAL_ERROR", e.to_string()))?;
            Ok(json!({}))
        }
        "log.write" => {
            let LogParams { level, text } = params(p)?;
            if text.chars().count() > MAX_LOG_TEXT {
                return Err(invalid(format!(
                    "text must be at most {MAX_LOG_TEXT} characters"
                )));
            }
            let text = crate::journal::scrub(&text);
            match level.as_str() {
                "error" => tracing::error!(target: "page", "{text}"),
                "warn" => tracing::warn!(target: "page", "{text}"),
                "info" => tracing::info!(target: "page", "{text}"),
                "debug" => tracing::debug!(target: "page", "{text}"),
                _ => return Err(invalid("level must be error, warn, info or debug")),
            }
            Ok(json!({}))
        }
        "data.get" => {
            let DataParams { key, value } = params(p)?;
            if value.is_some() {
                return Err(invalid("data.get takes no value"));
            }
            Ok(json!({"value": terminal.data().get(&key)?}))
        }
        "data.set" => {
            let DataParams { key, value } = params(p)?;
            let value = value.ok_or_else(|| invalid("data.set needs a value"))?;
            terminal.data().set(&key, value)?;
            Ok(json!({}))
        }
        "data.delete" => {
            let DataParams { key, value } = params(p)?;
            if value.is_some() {
                return Err(invalid("data.delete takes no value"));
            }
            Ok(json!({"deleted": terminal.data().delete(&key)?}))
        }
        "txn.signOn" | "txn.inquiry" | "txn.withdrawal" | "txn.transfer" | "txn.pinChange" => {
            let client = terminal.txn().ok_or_else(|| {
                BridgeError::new(
                    "NOT_CONFIGURED",
                    "no transaction client: [online] is not configured",
                )
            })?;
            let outcome = match method {
                "txn.signOn" => {
                    let NoParams {} = params(p)?;
                    client.sign_on(terminal).await
                }
                "txn.inquiry" => {
                    let InquiryParams { pin_block_from } = params(p)?;
                    check_pin_source(&pin_block_from)?;
                    client.inquiry(terminal).await
                }
                "txn.transfer" => {
                    let TransferParams {
                        to_account,
                        amount,
                        currency,
                        pin_block_from,
                    } = params(p)?;
                    check_pin_source(&pin_block_from)?;
                    client
                        .transfer(terminal, &to_account, amount, &currency)
                        .await
                }
                "txn.pinChange" => {
                    let PinChangeParams { step } = params(p)?;
                    return client
                        .pin_change(terminal, &step)
                        .await
                        .map_err(|e| BridgeError::new(e.code(), e.to_string()));
                }
                _ => {
                    let WithdrawalParams {
                        amount,
                        currency,
                        pin_block_from,
                    } = params(p)?;
                    check_pin_source(&pin_block_from)?;
                    client.withdrawal(terminal, amount, &currency).await
                }
            };
            outcome
                .map(|o| json!(o))
                .map_err(|e| BridgeError::new(e.code(), e.to_string()))
        }
        other => Err(BridgeError::new(
            "UNKNOWN_METHOD",
            format!("no method {other:?}"),
        )),
    }
}

fn short_code(code: i32) -> String {
    CompletionCode::try_from(code)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("COMPLETION_CODE_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("CODE_{code}"))
}

async fn execute(
    terminal: &Arc<Terminal>,
    out: &mpsc::Sender<String>,
    stop: &CancellationToken,
    p: ExecuteParams,
    generated_id: String,
) -> Result<Value, BridgeError> {
    let devices = terminal.devices();
    let spec = devices.spec(&p.device)?.clone();
    let mut command: Command =
        serde_json::from_value(p.command).map_err(|e| invalid(format!("command: {e}")))?;
    if !command.request_id.is_empty() || command.timeout_ms != 0 {
        return Err(invalid(
            "pass requestId and timeoutMs in params, not inside the command",
        ));
    }
    let class = command_class(&command).ok_or_else(|| {
        invalid("command: no command given (e.g. {\"cardReader\": {\"eject\": {}}})")
    })?;
    if class != spec.class {
        return Err(invalid(format!(
            "device {} is a {}; the command is for a {}",
            spec.name,
            class_name(spec.class),
            class_name(class)
        )));
    }
    let name = command_name(&command).ok_or_else(|| {
        invalid(format!(
            "command: the {} command is empty",
            class_name(class)
        ))
    })?;
    if matches!(
        name,
        "PinPad.ImportKey"
            | "PinPad.ImportKeyComponents"
            | "PinPad.DeleteKey"
            | "PinPad.GenerateMac"
    ) {
        return Err(BridgeError::new(
            "FORBIDDEN",
            format!("{name} is reserved to the host's transaction client and the key ceremony"),
        ));
    }
    let request_id = p.request_id.unwrap_or(generated_id);
    check_request_id(&request_id)?;
    command.request_id = request_id.clone();
    command.timeout_ms = p.timeout_ms.unwrap_or(0);

    let gate = terminal.gate();
    // The dispenser's counters before a dispense go into the log with the claim: after a
    // crash they tell what was presented. Without them nobody could tell later, so no
    // dispense goes ahead when they cannot be read.
    let counters = if name == "CashDispenser.Dispense" {
        match crate::recovery::dispenser_status(terminal, &spec.name).await {
            Ok(s) => Some(crate::recovery::unit_counts(&s)),
            Err(e) => {
                let message = format!(
                    "{name} refused: the counters of {} cannot be read before it ({e})",
                    spec.name
                );
                gate.journal()
                    .note(format!(
                        "DISPENSE REFUSED ref={:?} {message}",
                        p.authorization.as_deref().unwrap_or("-")
                    ))
                    .await;
                return Err(BridgeError::new("DEVICE_UNAVAILABLE", message));
            }
        }
    } else {
        None
    };
    gate.check_page_command(name).await?;
    let admitted = gate
        .admit_counted(&spec, &command, p.authorization.as_deref(), counters)
        .await?;
    // Money commands run to their end even when the page goes away; others are canceled at
    // the proxy by dropping the stream.
    let cancel_on_close = !matches!(name, "CashDispenser.Dispense" | "CashDispenser.Present");
    let mut stream = match devices.execute(&spec.name, command).await {
        Ok(s) => s,
        Err(e) => {
            gate.abandon(admitted, &e.to_string()).await;
            return Err(e.into());
        }
    };
    loop {
        let next = tokio::select! {
            _ = stop.cancelled(), if cancel_on_close => {
                gate.abandon(admitted, "the page went away").await;
                return Err(BridgeError::new("CANCELED", "the page went away"));
            }
            n = stream.message() => n,
        };
        let reply = match next {
            Ok(Some(r)) => r,
            Ok(None) => {
                let e = DeviceError::Unavailable {
                    device: spec.name.clone(),
                    reason: "the stream ended without a completion".into(),
                };
                gate.abandon(admitted, &e.to_string()).await;
                return Err(e.into());
            }
            Err(status) => {
                let e = DeviceManager::stream_error(&spec.name, status);
                gate.abandon(admitted, &e.to_string()).await;
                return Err(e.into());
            }
        };
        match reply.reply {
            Some(command_reply::Reply::Event(ev)) => {
                send(
                    out,
                    json!({"event": "device.event",
                           "data": {"device": spec.name, "requestId": request_id, "event": ev}}),
                )
                .await;
            }
            Some(command_reply::Reply::Completion(mut c)) => {
                gate.finish(admitted, &mut c).await;
                return completion_answer(&request_id, c);
            }
            None => {}
        }
    }
}

fn completion_answer(request_id: &str, c: CommandCompletion) -> Result<Value, BridgeError> {
    let mut body = json!(c);
    body["requestId"] = json!(request_id);
    let done = c.completion.unwrap_or_default();
    if done.code == CompletionCode::Success as i32 {
        return Ok(body);
    }
    let message = if done.description.is_empty() {
        format!("the command ended {}", short_code(done.code))
    } else {
        done.description.clone()
    };
    Err(BridgeError {
        code: "COMMAND_FAILED",
        message,
        completion: Some(short_code(done.code)),
        xfs_code: (done.error_code != 0).then_some(done.error_code),
        data: Some(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_refuses_junk() {
        let (id, m, p) = parse_request(r#"{"id": 7, "method": "device.list"}"#).unwrap();
        assert_eq!((id, m.as_str(), p), (json!(7), "device.list", json!({})));
        for (text, code) in [
            ("nope", "PARSE_ERROR"),
            ("[1]", "INVALID_REQUEST"),
            (r#"{"method": "x"}"#, "INVALID_REQUEST"),
            (r#"{"id": 1}"#, "INVALID_REQUEST"),
            (
                r#"{"id": 1, "method": "x", "params": 3}"#,
                "INVALID_ARGUMENT",
            ),
            (r#"{"id": 1, "method": "x", "extra": 3}"#, "INVALID_REQUEST"),
        ] {
            let (_, e) = parse_request(text).unwrap_err();
            assert_eq!(e["code"], code, "{text}");
        }
    }

    #[test]
    fn request_ids_are_checked() {
        assert!(check_request_id("r-1").is_ok());
        assert!(check_request_id("").is_err());
        assert!(check_request_id("a b").is_err());
        assert!(check_request_id(&"x".repeat(65)).is_err());
    }
}
