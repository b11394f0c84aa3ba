//! The `lfs:PATH` backend: a vendor's service provider (SP) loaded from a shared library through
//! the OpenTeller LFS ABI (`driver-proxy/lfs-abi/include/openteller_lfs.h`, `docs/lfs.md`) and
//! mapped onto the device API.
//!
//! - Commands become `LFSAsyncExecute` requests; their `LFS_EXECUTE_EVENT`s become intermediate
//!   events of the command, their completion the command's completion. An SP error number is
//!   looked up among the CEN/XFS 3.x generic and IDC errors ([`codes::lookup`]); an unknown one
//!   ends the command with `INTERNAL_ERROR` and the number in the description.
//! - The execute future is cancel-safe: when the queue drops it (cancel, timeout) the SP request
//!   is canceled and handed to a background task that waits for its completion, then refreshes
//!   the status.
//! - Service and user events (media removed, card action, retain bin threshold) are published
//!   on the [`Hub`]; after every command and event the status is asked again
//!   (`LFS_INF_IDC_STATUS`) and cached, so [`Backend::status`] answers at once.
//! - A background thread (`lfs-events`) with its own small runtime receives the SP's events and
//!   refreshes the status; it ends when the backend is dropped, which closes the session
//!   (`LFSClose`) and, last, the library (`LFSCleanUp`).
//!
//! Only the card reader is mapped for now. Track data is never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use openteller_lfs_abi::{self as abi, Data, EventKind, IdcCommand, IdcInfo, RequestMessage, ffi};
use openteller_proto::device::v1::Capabilities;
use openteller_proto::device::v1::{
    CardAction, CardActionEvent, CardReaderEvent, CardReaderResult, CardReaderStatus, ChipIoResult,
    ChipState, CompletionCode, DataStatus, DeviceClass, DeviceState, DeviceStatus, MediaStatus,
    ReadRawData, ReadRawDataResult, ResetAction, RetainBinState, RetainBinThreshold, RetainResult,
    TrackData, card_reader_command::Command as Idc, card_reader_event::Event as IdcEvent,
    card_reader_result, command, command_completion, device_event, device_status,
};
use tokio::sync::{Notify, mpsc};

use crate::backend::{
    Backend, CommandContext, Failure, Hub, Outcome, class_commands, command_name,
};
use crate::codes;

/// The environment variable naming the SP's logical device; default [`DEFAULT_LOGICAL_NAME`].
pub const LOGICAL_NAME_VAR: &str = "OPENTELLER_LFS_LOGICAL_NAME";
/// The logical name opened when [`LOGICAL_NAME_VAR`] is not set.
pub const DEFAULT_LOGICAL_NAME: &str = "CardReader";
/// How long `open` waits for the SP's capabilities and first status.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a status or capabilities request may take.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a canceled request may take to complete before the status is refreshed anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an LFS service provider cannot be used (the CLI exits with `EXIT_CONFIG`).
#[derive(Debug, thiserror::Error)]
pub enum LfsError {
    /// Another device class was asked for.
    #[error(
        "the lfs backend serves only --class CardReader for now, not {0}; use --backend virtual for this device"
    )]
    UnsupportedClass(&'static str),
    /// Loading, starting or opening the SP failed (the message names the library and the step).
    #[error(transparent)]
    Provider(#[from] abi::Error),
    /// `LFSRegister` failed.
    #[error("service provider {}: {source}", path.display())]
    Register {
        /// The library.
        path: PathBuf,
        /// The SP's error.
        source: abi::CallError,
    },
    /// The SP did not answer a request made while opening it.
    #[error("service provider {} did not answer {what} within {} s", path.display(), OPEN_TIMEOUT.as_secs())]
    NoAnswer {
        /// The library.
        path: PathBuf,
        /// What was asked.
        what: &'static str,
    },
    /// The SP refused or botched a request made while opening it.
    #[error("service provider {} failed {what}: {detail}", path.display())]
    Info {
        /// The library.
        path: PathBuf,
        /// What was asked.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// The logical name belongs to another kind of device.
    #[error(
        "service provider {}: logical name {logical_name:?} is service class {class}, not a card reader (IDC, {}); set {LOGICAL_NAME_VAR}",
        path.display(),
        ffi::LFS_SERVICE_CLASS_IDC
    )]
    WrongClass {
        /// The library.
        path: PathBuf,
        /// The logical name opened.
        logical_name: String,
        /// The class the SP reported.
        class: u16,
    },
    /// The background thread could not be started.
    #[error("cannot start the LFS event thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Opens the SP at `path` as a device of `class` (only `CardReader`), publishing its events and
/// status changes on `hub`. Blocks until the SP has answered its capabilities and first status.
pub fn open(path: &Path, class: DeviceClass, hub: Arc<Hub>) -> Result<Arc<dyn Backend>, LfsError> {
    if class != DeviceClass::CardReader {
        return Err(LfsError::UnsupportedClass(class_label(class)));
    }
    let provider = abi::Provider::load(path)?;
    let logical_name = std::env::var(LOGICAL_NAME_VAR)
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| DEFAULT_LOGICAL_NAME.to_owned());
    let (session, events) = provider.open(&logical_name)?;
    session
        .register(ffi::LFS_SERVICE_EVENTS | ffi::LFS_USER_EVENTS | ffi::LFS_SYSTEM_EVENTS)
        .map_err(|source| LfsError::Register {
            path: path.to_path_buf(),
            source,
        })?;
    let (refresh, refresh_rx) = mpsc::unbounded_channel();
    let inner = Arc::new(Inner {
        path: path.to_path_buf(),
        logical_name,
        sp_description: provider.version().description.clone(),
        hub,
        session,
        _provider: provider,
        caps: Mutex::new(abi::IdcCaps::default()),
        cache: Mutex::new(Cache::default()),
        refresh,
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let weak = Arc::downgrade(&inner);
    std::thread::Builder::new()
        .name("lfs-events".into())
        .spawn(move || background(weak, events, refresh_rx, ready_tx))
        .map_err(LfsError::Thread)?;
    match ready_rx.recv_timeout(OPEN_TIMEOUT + INFO_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(LfsError::NoAnswer {
                path: inner.path.clone(),
                what: "its first status",
            });
        }
    }
    tracing::info!(
        library = %inner.path.display(),
        logical_name = inner.logical_name,
        provider = inner.sp_description,
        "LFS service provider opened"
    );
    Ok(Arc::new(LfsBackend { inner }))
}

fn class_label(class: DeviceClass) -> &'static str {
    match class {
        DeviceClass::CardReader => "CardReader",
        DeviceClass::PinPad => "PinPad",
        DeviceClass::CashDispenser => "CashDispenser",
        DeviceClass::ReceiptPrinter => "ReceiptPrinter",
        DeviceClass::Unspecified => "an unspecified class",
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last status the SP reported.
#[derive(Debug, Default)]
struct Cache {
    status: Option<abi::IdcStatus>,
    /// False while the SP fails to answer status requests: the device is reported offline.
    answering: bool,
    /// Request id of the status in `status`: older answers arriving late are ignored.
    applied: u64,
}

enum Refresh {
    /// Refresh the status soon.
    Now,
    /// A command was dropped (canceled, timed out): wait for the SP to end it, then refresh.
    Settle(abi::Request),
}

struct Inner {
    path: PathBuf,
    logical_name: String,
    sp_description: String,
    hub: Arc<Hub>,
    /// Declared before `_provider`: closed before the library is cleaned up.
    session: abi::Session,
    _provider: abi::Provider,
    caps: Mutex<abi::IdcCaps>,
    cache: Mutex<Cache>,
    refresh: mpsc::UnboundedSender<Refresh>,
}

impl Inner {
    /// Capabilities and first status; run on the background thread while `open` waits.
    async fn initialize(&self) -> Result<(), LfsError> {
        let caps = match self.info(IdcInfo::Capabilities, "its capabilities").await? {
            Data::Capabilities(caps) => caps,
            other => return Err(self.info_error("its capabilities", &other)),
        };
        if caps.dev_class != ffi::LFS_SERVICE_CLASS_IDC {
            return Err(LfsError::WrongClass {
                path: self.path.clone(),
                logical_name: self.logical_name.clone(),
                class: caps.dev_class,
            });
        }
        *lock(&self.caps) = caps;
        match self.info(IdcInfo::Status, "its status").await? {
            Data::Status(status) => {
                let mut cache = lock(&self.cache);
                cache.status = Some(status);
                cache.answering = true;
            }
            other => return Err(self.info_error("its status", &other)),
        }
        Ok(())
    }

    async fn info(&self, category: IdcInfo, what: &'static str) -> Result<Data, LfsError> {
        let request = self
            .session
            .get_info(category, OPEN_TIMEOUT.as_millis() as u32)
            .map_err(|e| LfsError::Info {
                path: self.path.clone(),
                what,
                detail: e.to_string(),
            })?;
        let Ok(completion) = tokio::time::timeout(OPEN_TIMEOUT, request.completion()).await else {
            return Err(LfsError::NoAnswer {
                path: self.path.clone(),
                what,
            });
        };
        if completion.hresult != ffi::LFS_SUCCESS {
            return Err(LfsError::Info {
                path: self.path.clone(),
                what,
                detail: abi::describe(completion.hresult),
            });
        }
        Ok(completion.data)
    }

    fn info_error(&self, what: &'static str, data: &Data) -> LfsError {
        let detail = match data {
            Data::Malformed(m) => format!("malformed answer: {m}"),
            _ => "the answer carries no data of the expected kind".to_owned(),
        };
        LfsError::Info {
            path: self.path.clone(),
            what,
            detail,
        }
    }

    /// Asks the SP for its status, caches it and publishes a change.
    async fn refresh_status(&self) {
        let answer = match self
            .session
            .get_info(IdcInfo::Status, INFO_TIMEOUT.as_millis() as u32)
        {
            Ok(request) => {
                let id = request.id();
                match tokio::time::timeout(INFO_TIMEOUT, request.completion()).await {
                    Ok(c) if c.hresult == ffi::LFS_SUCCESS => match c.data {
                        Data::Status(s) => Ok((id, s)),
                        Data::Malformed(m) => Err(format!("malformed status: {m}")),
                        _ => Err("a status answer without a status".to_owned()),
                    },
                    Ok(c) => Err(format!(
                        "status request failed with {}",
                        abi::describe(c.hresult)
                    )),
                    Err(_) => Err(format!(
                        "no status answer within {} s",
                        INFO_TIMEOUT.as_secs()
                    )),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        {
            let mut cache = lock(&self.cache);
            match answer {
                Ok((id, status)) if id > cache.applied => {
                    cache.applied = id;
                    cache.status = Some(status);
                    cache.answering = true;
                }
                Ok(_) => {}
                Err(reason) => {
                    if cache.answering {
                        tracing::warn!(library = %self.path.display(), reason, "LFS service provider does not report its status; device offline");
                    }
                    cache.answering = false;
                }
            }
        }
        self.hub.status(self.device_status());
    }

    fn request_refresh(&self) {
        let _ = self.refresh.send(Refresh::Now);
    }

    fn device_status(&self) -> DeviceStatus {
        let cache = lock(&self.cache);
        let capacity = lock(&self.caps).cards;
        let status = cache.status.unwrap_or_default();
        let device = if cache.answering && cache.status.is_some() {
            device_state(status.device)
        } else {
            DeviceState::Offline
        };
        let detail = match cache.status {
            Some(s) => CardReaderStatus {
                media: media_status(s.media) as i32,
                retain_bin: retain_bin_state(s.retain_bin) as i32,
                retain_count: s.cards,
                retain_capacity: capacity,
                chip: chip_state(s.chip_power) as i32,
            },
            None => CardReaderStatus {
                media: MediaStatus::Unknown as i32,
                retain_capacity: capacity,
                ..CardReaderStatus::default()
            },
        };
        DeviceStatus {
            device_class: DeviceClass::CardReader as i32,
            device: device as i32,
            queued_commands: 0,
            detail: Some(device_status::Detail::CardReader(detail)),
        }
    }

    fn media(&self) -> Option<u16> {
        lock(&self.cache).status.map(|s| s.media)
    }

    /// Publishes an unsolicited event of the SP.
    fn on_event(&self, event: &abi::Event) {
        let published = match (event.kind, event.id, &event.data) {
            (EventKind::Service, ffi::LFS_SRVE_IDC_MEDIAREMOVED, _) => {
                Some(IdcEvent::MediaRemoved(Default::default()))
            }
            (EventKind::Service, ffi::LFS_SRVE_IDC_CARDACTION, Data::CardAction(a)) => {
                match a.action {
                    ffi::LFS_IDC_CARDRETAINED => Some(CardAction::Retained),
                    ffi::LFS_IDC_CARDEJECTED => Some(CardAction::Ejected),
                    _ => None,
                }
                .map(|action| {
                    IdcEvent::CardAction(CardActionEvent {
                        action: action as i32,
                    })
                })
            }
            (
                EventKind::User,
                ffi::LFS_USRE_IDC_RETAINBINTHRESHOLD,
                Data::RetainBinThreshold(state),
            ) => Some(IdcEvent::RetainBinThreshold(RetainBinThreshold {
                state: retain_bin_state(*state) as i32,
            })),
            _ => None,
        };
        match published {
            Some(e) => self.hub.event(idc_event(e)),
            None => {
                tracing::debug!(kind = ?event.kind, id = event.id, "LFS event without a device API equivalent")
            }
        }
    }

    /// The failure for an SP error number.
    fn failure(name: &str, hresult: i32) -> Failure {
        match codes::lookup(DeviceClass::CardReader, hresult) {
            Some(error) => Failure::xfs(
                error,
                format!(
                    "the service provider ended {name} with {}",
                    abi::describe(hresult)
                ),
            ),
            None => Failure::new(
                CompletionCode::InternalError,
                format!(
                    "the service provider ended {name} with error number {hresult}, which is not a CEN/XFS 3.x \
                     generic or card reader error"
                ),
            ),
        }
    }

    /// The LFS command for a device API command.
    fn to_lfs(&self, command: &Idc) -> Result<IdcCommand, Failure> {
        Ok(match command {
            Idc::ReadRawData(r) => {
                let mut sources = 0;
                for (wanted, source) in [
                    (r.track1, ffi::LFS_IDC_TRACK1),
                    (r.track2, ffi::LFS_IDC_TRACK2),
                    (r.track3, ffi::LFS_IDC_TRACK3),
                    (r.chip, ffi::LFS_IDC_CHIP),
                ] {
                    if wanted {
                        sources |= source;
                    }
                }
                if sources == 0 {
                    return Err(Failure::invalid_data(
                        "ReadRawData must ask for at least one track or the chip",
                    ));
                }
                IdcCommand::ReadRawData { sources }
            }
            Idc::Eject(_) => IdcCommand::EjectCard,
            Idc::Retain(_) => IdcCommand::RetainCard,
            Idc::Reset(r) => IdcCommand::Reset {
                action: match ResetAction::try_from(r.action) {
                    Ok(ResetAction::Unspecified) => None,
                    Ok(ResetAction::NoAction) => Some(ffi::LFS_IDC_NOACTION),
                    Ok(ResetAction::Eject) => Some(ffi::LFS_IDC_EJECT),
                    Ok(ResetAction::Retain) => Some(ffi::LFS_IDC_RETAIN),
                    Err(_) => {
                        return Err(Failure::invalid_data(format!(
                            "unknown reset action {}",
                            r.action
                        )));
                    }
                },
            },
            Idc::ChipIo(io) => {
                let protocols = lock(&self.caps).chip_protocols;
                let protocol = if protocols & ffi::LFS_IDC_CHIPT0 != 0 {
                    ffi::LFS_IDC_CHIPT0
                } else if protocols & ffi::LFS_IDC_CHIPT1 != 0 {
                    ffi::LFS_IDC_CHIPT1
                } else {
                    return Err(Failure::unsupported("this card reader has no chip unit"));
                };
                if io.command_apdu.is_empty() {
                    return Err(Failure::invalid_data("ChipIo needs a command APDU"));
                }
                if io.command_apdu.len() > abi::MAX_DATA_LEN as usize {
                    return Err(Failure::invalid_data(format!(
                        "the command APDU is {} bytes; at most {} are accepted",
                        io.command_apdu.len(),
                        abi::MAX_DATA_LEN
                    )));
                }
                IdcCommand::ChipIo {
                    protocol,
                    apdu: io.command_apdu.clone(),
                }
            }
        })
    }

    /// The outcome of a completed command.
    fn outcome(&self, name: &str, command: &Idc, completion: abi::Completion) -> Outcome {
        if completion.hresult != ffi::LFS_SUCCESS {
            return Self::failure(name, completion.hresult).into();
        }
        let malformed = |what: &str| -> Outcome {
            let detail = match &completion.data {
                Data::Malformed(m) => m.clone(),
                _ => format!("no {what} in the completion"),
            };
            Failure::xfs(
                codes::generic::INTERNAL_ERROR,
                format!("the service provider's {name} result is unusable: {detail}"),
            )
            .into()
        };
        match command {
            Idc::ReadRawData(r) => match &completion.data {
                Data::CardData(items) => Outcome::ok(idc_result(
                    card_reader_result::Result::ReadRawData(read_result(r, items)),
                )),
                _ => malformed("card data"),
            },
            Idc::Retain(_) => {
                let count = match &completion.data {
                    Data::RetainCard(r) => r.count,
                    Data::Malformed(_) => return malformed("retain count"),
                    // The count is optional in practice: take it from the refreshed status.
                    _ => lock(&self.cache).status.map_or(0, |s| s.cards),
                };
                Outcome::ok(idc_result(card_reader_result::Result::Retain(
                    RetainResult {
                        retain_count: count,
                    },
                )))
            }
            Idc::ChipIo(_) => match &completion.data {
                Data::ChipIo(io) => Outcome::ok(idc_result(card_reader_result::Result::ChipIo(
                    ChipIoResult {
                        response_apdu: io.data.clone(),
                    },
                ))),
                _ => malformed("response APDU"),
            },
            Idc::Eject(_) | Idc::Reset(_) => Outcome::done(),
        }
    }
}

/// The background thread: the SP's unsolicited events and status refreshes.
fn background(
    weak: Weak<Inner>,
    mut events: abi::Events,
    mut refresh: mpsc::UnboundedReceiver<Refresh>,
    ready: std::sync::mpsc::Sender<Result<(), LfsError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(LfsError::Thread(e)));
            return;
        }
    };
    runtime.block_on(async move {
        let init = match weak.upgrade() {
            Some(inner) => inner.initialize().await,
            None => return,
        };
        let ok = init.is_ok();
        let _ = ready.send(init);
        if !ok {
            return;
        }
        // One refresher, woken by a permit: bursts of triggers coalesce into one status request.
        let wake = Arc::new(Notify::new());
        tokio::spawn({
            let (weak, wake) = (weak.clone(), Arc::clone(&wake));
            async move {
                loop {
                    wake.notified().await;
                    let Some(inner) = weak.upgrade() else { break };
                    inner.refresh_status().await;
                }
            }
        });
        loop {
            tokio::select! {
                event = events.recv() => {
                    // None: the session was closed.
                    let Some(event) = event else { break };
                    let Some(inner) = weak.upgrade() else { break };
                    inner.on_event(&event);
                    wake.notify_one();
                }
                r = refresh.recv() => match r {
                    // None: the backend was dropped.
                    None => break,
                    Some(Refresh::Now) => wake.notify_one(),
                    Some(Refresh::Settle(request)) => {
                        let wake = Arc::clone(&wake);
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(SETTLE_TIMEOUT, request.completion()).await;
                            wake.notify_one();
                        });
                    }
                },
            }
        }
    });
}

/// Cancels the SP request of a dropped execute future and lets the background settle it.
struct Settle {
    request: Option<abi::Request>,
    refresh: mpsc::UnboundedSender<Refresh>,
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            let _ = request.canceller().cancel();
            // If the background is gone the request is dropped here, which cancels it too.
            let _ = self.refresh.send(Refresh::Settle(request));
        }
    }
}

/// A card reader driven by an LFS service provider.
pub struct LfsBackend {
    inner: Arc<Inner>,
}

#[async_trait]
impl Backend for LfsBackend {
    fn device_class(&self) -> DeviceClass {
        DeviceClass::CardReader
    }

    fn capabilities(&self) -> Capabilities {
        let caps = lock(&self.inner.caps).clone();
        let commands = class_commands(DeviceClass::CardReader)
            .iter()
            .filter(|c| **c != "CardReader.ChipIo" || caps.chip_protocols != 0)
            .map(|c| (*c).to_owned())
            .collect();
        let or = |text: String, fallback: &str| {
            if text.is_empty() {
                fallback.to_owned()
            } else {
                text
            }
        };
        Capabilities {
            device_class: DeviceClass::CardReader as i32,
            backend: format!("lfs:{}", self.inner.path.display()),
            vendor: or(caps.vendor, &self.inner.sp_description),
            model: or(caps.model, &self.inner.logical_name),
            firmware: caps.firmware,
            commands,
            simulator_actions: Vec::new(),
        }
    }

    fn status(&self) -> DeviceStatus {
        self.inner.device_status()
    }

    async fn execute(&self, command: command::Command, ctx: &CommandContext) -> Outcome {
        let name = command_name(&command);
        let command::Command::CardReader(c) = command else {
            return Failure::unsupported(format!("{name} is not a card reader command")).into();
        };
        let Some(c) = c.command else {
            return Failure::new(CompletionCode::InvalidCommand, "the command is empty").into();
        };
        let lfs_command = match self.inner.to_lfs(&c) {
            Ok(cmd) => cmd,
            Err(f) => return f.into(),
        };
        if matches!(c, Idc::ReadRawData(_))
            && self.inner.media() == Some(ffi::LFS_IDC_MEDIANOTPRESENT)
        {
            // LFS has no "insert card" event; the reader is empty, so the customer is asked.
            ctx.emit(idc_event(IdcEvent::InsertCard(Default::default())));
        }
        let request = match self
            .inner
            .session
            .execute(&lfs_command, ffi::LFS_INDEFINITE_WAIT)
        {
            Ok(r) => r,
            Err(e) => {
                self.inner.request_refresh();
                return Inner::failure(name, e.hresult).into();
            }
        };
        let mut settle = Settle {
            request: Some(request),
            refresh: self.inner.refresh.clone(),
        };
        let completion = loop {
            let Some(request) = settle.request.as_mut() else {
                return Failure::new(CompletionCode::InternalError, "the request vanished").into();
            };
            match request.recv().await {
                Some(RequestMessage::Event(event)) => {
                    match event.id {
                        ffi::LFS_EXEE_IDC_MEDIAINSERTED => {
                            ctx.emit(idc_event(IdcEvent::MediaInserted(Default::default())))
                        }
                        ffi::LFS_EXEE_IDC_INVALIDMEDIA => {
                            ctx.emit(idc_event(IdcEvent::InvalidMedia(Default::default())))
                        }
                        other => tracing::debug!(
                            command = name,
                            event = other,
                            "LFS execute event without a device API equivalent"
                        ),
                    }
                    self.inner.request_refresh();
                }
                Some(RequestMessage::Completion(completion)) => break completion,
                None => {
                    return Failure::new(
                        CompletionCode::InternalError,
                        "the service provider ended the request without a completion",
                    )
                    .into();
                }
            }
        };
        // Completed: nothing to cancel any more.
        settle.request = None;
        self.inner.refresh_status().await;
        self.inner.outcome(name, &c, completion)
    }
}

fn idc_event(event: IdcEvent) -> device_event::Event {
    device_event::Event::CardReader(CardReaderEvent { event: Some(event) })
}

fn idc_result(result: card_reader_result::Result) -> command_completion::Result {
    command_completion::Result::CardReader(CardReaderResult {
        result: Some(result),
    })
}

/// The ReadRawData result: every requested track (missing when the SP returned none), the ATR
/// when the chip was asked for and read.
fn read_result(request: &ReadRawData, items: &[abi::CardData]) -> ReadRawDataResult {
    let find = |source: u16| items.iter().find(|d| d.source == source);
    let track = |wanted: bool, source: u16| {
        wanted.then(|| match find(source) {
            Some(d) => track_data(d),
            None => TrackData {
                status: DataStatus::Missing as i32,
                data: String::new(),
            },
        })
    };
    ReadRawDataResult {
        track1: track(request.track1, ffi::LFS_IDC_TRACK1),
        track2: track(request.track2, ffi::LFS_IDC_TRACK2),
        track3: track(request.track3, ffi::LFS_IDC_TRACK3),
        atr: match find(ffi::LFS_IDC_CHIP) {
            Some(d) if request.chip && d.status == ffi::LFS_IDC_DATAOK => d.data.clone(),
            _ => Vec::new(),
        },
    }
}

/// One track: its characters without sentinels; data that is not printable ASCII is invalid.
fn track_data(d: &abi::CardData) -> TrackData {
    let invalid = TrackData {
        status: DataStatus::Invalid as i32,
        data: String::new(),
    };
    match d.status {
        ffi::LFS_IDC_DATAOK => {
            let mut bytes = d.data.as_slice();
            if let [b'%' | b';', rest @ ..] = bytes {
                bytes = rest;
            }
            if let [rest @ .., b'?'] = bytes {
                bytes = rest;
            }
            if bytes.is_empty() {
                return TrackData {
                    status: DataStatus::Missing as i32,
                    data: String::new(),
                };
            }
            match std::str::from_utf8(bytes) {
                Ok(text) if text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => TrackData {
                    status: DataStatus::Ok as i32,
                    data: text.to_owned(),
                },
                _ => invalid,
            }
        }
        ffi::LFS_IDC_DATAMISSING | ffi::LFS_IDC_DATASRCMISSING | ffi::LFS_IDC_DATASRCNOTSUPP => {
            TrackData {
                status: DataStatus::Missing as i32,
                data: String::new(),
            }
        }
        _ => invalid,
    }
}

fn device_state(v: u16) -> DeviceState {
    match v {
        ffi::LFS_IDC_DEVONLINE => DeviceState::Online,
        ffi::LFS_IDC_DEVOFFLINE => DeviceState::Offline,
        ffi::LFS_IDC_DEVPOWEROFF => DeviceState::PowerOff,
        ffi::LFS_IDC_DEVNODEVICE => DeviceState::NoDevice,
        ffi::LFS_IDC_DEVHWERROR => DeviceState::HardwareError,
        ffi::LFS_IDC_DEVUSERERROR => DeviceState::UserError,
        ffi::LFS_IDC_DEVBUSY => DeviceState::Busy,
        _ => DeviceState::Offline,
    }
}

fn media_status(v: u16) -> MediaStatus {
    match v {
        ffi::LFS_IDC_MEDIAPRESENT => MediaStatus::Present,
        ffi::LFS_IDC_MEDIANOTPRESENT => MediaStatus::NotPresent,
        ffi::LFS_IDC_MEDIAJAMMED => MediaStatus::Jammed,
        ffi::LFS_IDC_MEDIAENTERING => MediaStatus::Entering,
        ffi::LFS_IDC_MEDIALATCHED => MediaStatus::Latched,
        _ => MediaStatus::Unknown,
    }
}

fn retain_bin_state(v: u16) -> RetainBinState {
    match v {
        ffi::LFS_IDC_RETAINBINOK => RetainBinState::Ok,
        ffi::LFS_IDC_RETAINBINHIGH => RetainBinState::High,
        ffi::LFS_IDC_RETAINBINFULL => RetainBinState::Full,
        _ => RetainBinState::Unspecified,
    }
}

fn chip_state(v: u16) -> ChipState {
    match v {
        ffi::LFS_IDC_CHIPONLINE | ffi::LFS_IDC_CHIPBUSY => ChipState::Online,
        ffi::LFS_IDC_CHIPPOWEREDOFF => ChipState::PoweredOff,
        ffi::LFS_IDC_CHIPNOCARD => ChipState::NoCard,
        ffi::LFS_IDC_CHIPNODEVICE | ffi::LFS_IDC_CHIPNOTSUPP | ffi::LFS_IDC_CHIPHWERROR => {
            ChipState::NoDevice
        }
        _ => ChipState::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(source: u16, status: u16, bytes: &[u8]) -> abi::CardData {
        abi::CardData {
            source,
            status,
            data: bytes.to_vec(),
        }
    }

    #[test]
    fn sp_errors_map_to_xfs_failures() {
        let f = Inner::failure("CardReader.Eject", -200);
        assert_eq!(f.code, CompletionCode::CommandError);
        assert_eq!(f.error, Some(codes::idc::MEDIAJAM));
        assert!(
            f.description.contains("LFS_ERR_IDC_MEDIAJAM (-200)"),
            "{}",
            f.description
        );
        let f = Inner::failure("CardReader.ReadRawData", -4);
        assert_eq!(f.code, CompletionCode::Canceled);
        let f = Inner::failure("CardReader.ReadRawData", -48);
        assert_eq!(f.code, CompletionCode::TimeOut);
        let f = Inner::failure("CardReader.Retain", -999);
        assert_eq!(f.code, CompletionCode::InternalError);
        assert_eq!(f.error, None);
        assert!(f.description.contains("-999"), "{}", f.description);
        // A PinPad number is not a card reader error.
        assert_eq!(
            Inner::failure("CardReader.Reset", -400).code,
            CompletionCode::InternalError
        );
    }

    #[test]
    fn tracks_are_stripped_checked_and_completed() {
        let t = track_data(&data(
            ffi::LFS_IDC_TRACK2,
            ffi::LFS_IDC_DATAOK,
            b";6222020200112233445=4912?",
        ));
        assert_eq!(
            (t.status, t.data.as_str()),
            (DataStatus::Ok as i32, "6222020200112233445=4912")
        );
        let t = track_data(&data(
            ffi::LFS_IDC_TRACK2,
            ffi::LFS_IDC_DATAOK,
            b"62\x00\xff",
        ));
        assert_eq!(
            (t.status, t.data.as_str()),
            (DataStatus::Invalid as i32, "")
        );
        let t = track_data(&data(
            ffi::LFS_IDC_TRACK1,
            ffi::LFS_IDC_DATATOOSHORT,
            b"B6222",
        ));
        assert_eq!(t.status, DataStatus::Invalid as i32);
        let t = track_data(&data(ffi::LFS_IDC_TRACK3, ffi::LFS_IDC_DATASRCNOTSUPP, b""));
        assert_eq!(t.status, DataStatus::Missing as i32);

        let request = ReadRawData {
            track1: true,
            track2: true,
            track3: false,
            chip: true,
        };
        let items = [
            data(ffi::LFS_IDC_TRACK2, ffi::LFS_IDC_DATAOK, b"6222=49"),
            data(ffi::LFS_IDC_CHIP, ffi::LFS_IDC_DATAOK, &[0x3B, 0x00]),
        ];
        let r = read_result(&request, &items);
        assert_eq!(r.track1.unwrap().status, DataStatus::Missing as i32);
        assert_eq!(r.track2.unwrap().data, "6222=49");
        assert!(r.track3.is_none());
        assert_eq!(r.atr, vec![0x3B, 0x00]);
    }

    #[test]
    fn status_values_map_to_the_device_api() {
        assert_eq!(
            device_state(ffi::LFS_IDC_DEVHWERROR),
            DeviceState::HardwareError
        );
        assert_eq!(device_state(99), DeviceState::Offline);
        assert_eq!(
            media_status(ffi::LFS_IDC_MEDIAENTERING),
            MediaStatus::Entering
        );
        assert_eq!(
            media_status(ffi::LFS_IDC_MEDIANOTSUPP),
            MediaStatus::Unknown
        );
        assert_eq!(
            retain_bin_state(ffi::LFS_IDC_RETAINBINHIGH),
            RetainBinState::High
        );
        assert_eq!(chip_state(ffi::LFS_IDC_CHIPNOCARD), ChipState::NoCard);
    }

    #[test]
    fn open_refuses_other_classes_and_missing_libraries_clearly() {
        let hub = Arc::new(Hub::new());
        let e = open(
            Path::new("/x/libvendor.so"),
            DeviceClass::PinPad,
            Arc::clone(&hub),
        )
        .err()
        .unwrap();
        assert!(matches!(e, LfsError::UnsupportedClass("PinPad")));
        assert!(e.to_string().contains("--backend virtual"), "{e}");
        let e = open(
            Path::new("/nonexistent/libvendor.so"),
            DeviceClass::CardReader,
            hub,
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "service provider library /nonexistent/libvendor.so does not exist"
        );
    }
}
