//! The safe host side: load a service provider, open sessions, run requests.
//!
//! Ownership and lifetimes, which every `unsafe` block below relies on:
//! - [`Provider`] owns the loaded library behind an `Arc<Api>`; every [`Session`] keeps that
//!   `Arc`, so the library stays loaded (and `LFSCleanUp` is not called) while a session lives.
//! - A session's callback context (`Shared`) is an `Arc`; one reference is handed to the SP as the
//!   `user` pointer at `LFSOpen` and taken back only after `LFSClose` returned `LFS_SUCCESS`
//!   (after which the SP promises no callback runs). If `LFSClose` fails the reference is leaked
//!   on purpose: a few bytes are better than a callback into freed memory.
//! - The callbacks copy each result into owned values, then call `LFSFreeResult` exactly once,
//!   and catch every panic so none unwinds into the SP.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use libloading::Library;
use tokio::sync::{mpsc, watch};

use crate::ffi::{self, LfsHResult, LfsHService, LfsResult, LfsVersion};
use crate::types::{
    self, Completion, Data, Event, IdcCommand, IdcInfo, MAX_DATA_LEN, Owned, describe,
};

/// Why a service provider could not be loaded, started or opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The library file is not there.
    #[error("service provider library {} does not exist", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The dynamic loader refused the file.
    #[error("cannot load service provider library {}: {source}", path.display())]
    Load {
        /// The path given.
        path: PathBuf,
        /// The loader's reason.
        #[source]
        source: libloading::Error,
    },
    /// The library lacks an SPI function.
    #[error(
        "{} is not an OpenTeller LFS service provider: it does not export {symbol} (see openteller_lfs.h)",
        path.display()
    )]
    MissingSymbol {
        /// The library.
        path: PathBuf,
        /// The missing function.
        symbol: &'static str,
        /// The loader's reason.
        #[source]
        source: libloading::Error,
    },
    /// The SP implements another major version of the ABI.
    #[error(
        "{} implements LFS ABI {offered}; this host implements {} and needs the same major version",
        path.display(),
        version_text(ffi::LFS_ABI_VERSION)
    )]
    VersionMismatch {
        /// The library.
        path: PathBuf,
        /// What the SP reported, e.g. "2.0 (supports 2.0..2.1)".
        offered: String,
    },
    /// `LFSStartUp` failed for another reason.
    #[error("LFSStartUp of {} failed with {}", path.display(), describe(*hresult))]
    StartUp {
        /// The library.
        path: PathBuf,
        /// The SP's error.
        hresult: LfsHResult,
    },
    /// The logical name cannot be passed to C.
    #[error("logical name {0:?} contains a NUL character")]
    InvalidLogicalName(String),
    /// `LFSOpen` failed.
    #[error("LFSOpen({logical_name:?}) failed with {}", describe(*hresult))]
    Open {
        /// The logical name.
        logical_name: String,
        /// The SP's error.
        hresult: LfsHResult,
    },
}

/// An SPI call the SP refused at once (no completion follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{function} failed with {}", describe(*hresult))]
pub struct CallError {
    /// The SPI function, e.g. `LFSAsyncExecute`.
    pub function: &'static str,
    /// Its error (`LFS_ERR_INVALID_DATA` is also used when the host cannot pass the input).
    pub hresult: LfsHResult,
}

fn version_text(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xFFFF)
}

fn check(function: &'static str, hresult: LfsHResult) -> Result<(), CallError> {
    if hresult == ffi::LFS_SUCCESS {
        Ok(())
    } else {
        Err(CallError { function, hresult })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The resolved SPI of a started library.
struct Api {
    path: PathBuf,
    version: SpVersion,
    cleanup: ffi::LfsCleanUpFn,
    open: ffi::LfsOpenFn,
    register: ffi::LfsRegisterFn,
    execute: ffi::LfsAsyncExecuteFn,
    get_info: ffi::LfsAsyncGetInfoFn,
    cancel: ffi::LfsCancelAsyncRequestFn,
    close: ffi::LfsCloseFn,
    free: ffi::LfsFreeResultFn,
    /// Declared last: dropped (unloaded) after `Drop::drop` below has run `LFSCleanUp`.
    _library: Library,
}

impl Drop for Api {
    fn drop(&mut self) {
        // SAFETY: the library is still loaded (`_library` drops after this), `LFSStartUp`
        // succeeded for this Api, and every session (which holds an Arc<Api>) is gone, so this is
        // the matching `LFSCleanUp` the header asks for.
        unsafe {
            (self.cleanup)();
        }
    }
}

/// What the SP said about itself in `LFSStartUp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpVersion {
    /// The ABI version in use (`major << 16 | minor`).
    pub version: u32,
    /// Lowest supported.
    pub low_version: u32,
    /// Highest supported.
    pub high_version: u32,
    /// The SP's description.
    pub description: String,
}

/// A loaded and started service provider library.
pub struct Provider {
    api: Arc<Api>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("path", &self.api.path)
            .field("version", &self.api.version)
            .finish()
    }
}

impl Provider {
    /// Loads the library at `path`, resolves the nine SPI functions and calls `LFSStartUp`.
    ///
    /// A path with a directory part must exist; a bare file name is looked up by the dynamic
    /// loader (`LD_LIBRARY_PATH`, system directories).
    pub fn load(path: impl AsRef<Path>) -> Result<Provider, Error> {
        let path = path.as_ref().to_path_buf();
        let has_dir = path.parent().is_some_and(|p| !p.as_os_str().is_empty());
        if has_dir && !path.exists() {
            return Err(Error::NotFound { path });
        }
        // SAFETY: loading a library runs its initialisers. Loading the operator-configured
        // service provider into this process is the purpose of the lfs backend (it is the
        // vendor's device driver); driver-proxy runs one process per device so a faulty SP only
        // takes down its own device.
        let library = unsafe { Library::new(&path) }.map_err(|source| Error::Load {
            path: path.clone(),
            source,
        })?;

        macro_rules! resolve {
            ($name:expr, $ty:ty) => {{
                // SAFETY: the symbol is declared in openteller_lfs.h with exactly the C signature
                // `$ty` mirrors; an SP exporting a different signature under this name breaks the
                // published ABI (checked by the version handshake below as far as possible). The
                // fn pointer is copied out and only called while `library` (moved into Api) is
                // loaded.
                let symbol = unsafe { library.get::<$ty>($name) };
                match symbol {
                    Ok(s) => *s,
                    Err(source) => {
                        let symbol = std::str::from_utf8(&$name[..$name.len() - 1]).unwrap_or("?");
                        return Err(Error::MissingSymbol {
                            path,
                            symbol,
                            source,
                        });
                    }
                }
            }};
        }
        use ffi::symbols as s;
        let startup = resolve!(s::STARTUP, ffi::LfsStartUpFn);
        let cleanup = resolve!(s::CLEANUP, ffi::LfsCleanUpFn);
        let open = resolve!(s::OPEN, ffi::LfsOpenFn);
        let register = resolve!(s::REGISTER, ffi::LfsRegisterFn);
        let execute = resolve!(s::ASYNC_EXECUTE, ffi::LfsAsyncExecuteFn);
        let get_info = resolve!(s::ASYNC_GET_INFO, ffi::LfsAsyncGetInfoFn);
        let cancel = resolve!(s::CANCEL_ASYNC_REQUEST, ffi::LfsCancelAsyncRequestFn);
        let close = resolve!(s::CLOSE, ffi::LfsCloseFn);
        let free = resolve!(s::FREE_RESULT, ffi::LfsFreeResultFn);

        let mut v = LfsVersion::zeroed();
        // SAFETY: `startup` comes from the loaded library; `v` is a valid, writable LFSVERSION
        // that outlives the call.
        let hresult = unsafe { startup(ffi::LFS_ABI_VERSION, &mut v) };
        let offered = || {
            format!(
                "{} (supports {}..{})",
                version_text(v.version),
                version_text(v.low_version),
                version_text(v.high_version)
            )
        };
        if hresult == ffi::LFS_ERR_SPI_VER_TOO_HIGH || hresult == ffi::LFS_ERR_SPI_VER_TOO_LOW {
            return Err(Error::VersionMismatch {
                path,
                offered: offered(),
            });
        }
        if hresult != ffi::LFS_SUCCESS {
            return Err(Error::StartUp { path, hresult });
        }
        if v.version >> 16 != u32::from(ffi::LFS_ABI_VERSION_MAJOR) {
            // SAFETY: StartUp succeeded, so one CleanUp is owed; nothing else was opened.
            unsafe {
                cleanup();
            }
            return Err(Error::VersionMismatch {
                path,
                offered: offered(),
            });
        }
        let version = SpVersion {
            version: v.version,
            low_version: v.low_version,
            high_version: v.high_version,
            description: ffi::read_text(&v.description),
        };
        let api = Api {
            path,
            version,
            cleanup,
            open,
            register,
            execute,
            get_info,
            cancel,
            close,
            free,
            _library: library,
        };
        Ok(Provider { api: Arc::new(api) })
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.api.path
    }

    /// What the SP reported in `LFSStartUp`.
    pub fn version(&self) -> &SpVersion {
        &self.api.version
    }

    /// Opens a session on the device `logical_name`. The returned [`Events`] receives the
    /// unsolicited events of the classes later chosen with [`Session::register`].
    pub fn open(&self, logical_name: &str) -> Result<(Session, Events), Error> {
        let name = CString::new(logical_name)
            .map_err(|_| Error::InvalidLogicalName(logical_name.to_owned()))?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            free: self.api.free,
            requests: Mutex::new(HashMap::new()),
            open_requests: watch::Sender::new(0),
            events: events_tx,
        });
        let user = Arc::into_raw(Arc::clone(&shared))
            .cast_mut()
            .cast::<c_void>();
        let mut service: LfsHService = 0;
        // SAFETY: `open` is the library's LFSOpen; `name` is a NUL-terminated string alive for the
        // call; the callbacks are `extern "C"` functions that never unwind; `user` is a strong
        // Arc<Shared> reference that stays valid until we reclaim it after LFSClose; `service`
        // is writable.
        let hresult = unsafe {
            (self.api.open)(
                name.as_ptr(),
                Some(on_result),
                Some(on_result),
                user,
                &mut service,
            )
        };
        if hresult != ffi::LFS_SUCCESS {
            // SAFETY: the open failed, so the SP keeps no reference to `user` and calls no
            // callback with it; this takes back the reference created by Arc::into_raw above.
            unsafe { drop(Arc::from_raw(user.cast_const().cast::<Shared>())) };
            return Err(Error::Open {
                logical_name: logical_name.to_owned(),
                hresult,
            });
        }
        let inner = SessionInner {
            api: Arc::clone(&self.api),
            service,
            logical_name: logical_name.to_owned(),
            shared,
            next_id: AtomicU64::new(1),
        };
        Ok((
            Session {
                inner: Arc::new(inner),
            },
            Events { rx: events_rx },
        ))
    }
}

/// A message of a running request: its intermediate events, then its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestMessage {
    /// An `LFS_EXECUTE_EVENT` of this request.
    Event(Event),
    /// The completion; nothing follows it.
    Completion(Completion),
}

/// The callback context of one session.
struct Shared {
    free: ffi::LfsFreeResultFn,
    /// Open requests: where their events and completion go.
    requests: Mutex<HashMap<u64, mpsc::UnboundedSender<RequestMessage>>>,
    /// The number of open requests, for [`Session::idle`].
    open_requests: watch::Sender<usize>,
    events: mpsc::UnboundedSender<Event>,
}

impl Shared {
    fn deliver(&self, owned: Owned) {
        match owned {
            Owned::Completion(c) => {
                let tx = {
                    let mut requests = lock(&self.requests);
                    let tx = requests.remove(&c.request_id);
                    self.open_requests.send_replace(requests.len());
                    tx
                };
                // A dropped Request no longer listens: its completion is discarded.
                if let Some(tx) = tx {
                    let _ = tx.send(RequestMessage::Completion(c));
                }
            }
            Owned::Event(e) if e.kind == types::EventKind::Execute => {
                if let Some(tx) = lock(&self.requests).get(&e.request_id) {
                    let _ = tx.send(RequestMessage::Event(e));
                }
            }
            Owned::Event(e) => {
                let _ = self.events.send(e);
            }
            Owned::Unknown => {}
        }
    }
}

/// The completion and event callback of every session (the `message` field tells them apart).
unsafe extern "C" fn on_result(result: *const LfsResult, user: *mut c_void) {
    if result.is_null() || user.is_null() {
        return;
    }
    // SAFETY: `user` is the Arc<Shared> reference given to LFSOpen; it is reclaimed only after
    // LFSClose returned, and the SP invokes no callback after that, so it is alive here. Only
    // shared access is made (all mutation goes through its Mutex and channels).
    let shared = unsafe { &*user.cast_const().cast::<Shared>() };
    // SAFETY: the SP passes a live result that stays valid until we free it just below.
    let owned = catch_unwind(AssertUnwindSafe(|| unsafe { types::decode(result) }));
    // SAFETY: `result` is a live result of this SP, freed exactly once, after the last read of it
    // (the decoded values are owned copies).
    unsafe {
        (shared.free)(result);
    }
    if let Ok(owned) = owned {
        let _ = catch_unwind(AssertUnwindSafe(|| shared.deliver(owned)));
    }
}

struct SessionInner {
    api: Arc<Api>,
    service: LfsHService,
    logical_name: String,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl SessionInner {
    fn cancel(&self, request_id: u64) -> Result<(), CallError> {
        // SAFETY: the library is loaded (self.api) and the session is open until drop.
        check("LFSCancelAsyncRequest", unsafe {
            (self.api.cancel)(self.service, request_id)
        })
    }

    /// Registers a request id before the SPI call, so a completion arriving before the call
    /// returns finds its receiver.
    fn begin(self: &Arc<Self>) -> (u64, mpsc::UnboundedReceiver<RequestMessage>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut requests = lock(&self.shared.requests);
        requests.insert(id, tx);
        self.shared.open_requests.send_replace(requests.len());
        (id, rx)
    }

    fn abandon(&self, id: u64) {
        let mut requests = lock(&self.shared.requests);
        requests.remove(&id);
        self.shared.open_requests.send_replace(requests.len());
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // SAFETY: the library is loaded (self.api outlives this call) and the session is open;
        // no Request or Canceller remains (they hold an Arc<SessionInner>).
        let hresult = unsafe { (self.api.close)(self.service) };
        if hresult == ffi::LFS_SUCCESS {
            // SAFETY: LFSClose returned, so no callback is running or will run with this `user`
            // pointer; this takes back the reference created by Arc::into_raw in open().
            unsafe { drop(Arc::from_raw(Arc::as_ptr(&self.shared))) };
        }
        // Otherwise the SP may still hold the pointer: leak that reference (see module docs).
    }
}

/// An open session (`LFSHSERVICE`). Cloning shares it; `LFSClose` is called when the last clone
/// and every [`Request`] of it are dropped.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("service", &self.inner.service)
            .field("logical_name", &self.inner.logical_name)
            .finish()
    }
}

impl Session {
    /// The SP's handle of this session.
    pub fn service(&self) -> LfsHService {
        self.inner.service
    }

    /// The logical name it was opened with.
    pub fn logical_name(&self) -> &str {
        &self.inner.logical_name
    }

    /// Chooses the unsolicited event classes delivered to [`Events`] (mask of
    /// `LFS_SERVICE_EVENTS | LFS_USER_EVENTS | LFS_SYSTEM_EVENTS`).
    pub fn register(&self, event_classes: u32) -> Result<(), CallError> {
        // SAFETY: the library is loaded and the session open for as long as `self` lives.
        check("LFSRegister", unsafe {
            (self.inner.api.register)(self.inner.service, event_classes)
        })
    }

    /// Starts a command. Dropping the returned [`Request`] before its completion cancels it.
    pub fn execute(&self, command: &IdcCommand, timeout_ms: u32) -> Result<Request, CallError> {
        const F: &str = "LFSAsyncExecute";
        let word: u16;
        let chip: ffi::LfsIdcChipIo;
        let (data, len): (*const c_void, u32) = match command {
            IdcCommand::ReadRawData { sources } => {
                word = *sources;
                (std::ptr::from_ref(&word).cast(), 2)
            }
            IdcCommand::Reset {
                action: Some(action),
            } => {
                word = *action;
                (std::ptr::from_ref(&word).cast(), 2)
            }
            IdcCommand::Reset { action: None } | IdcCommand::EjectCard | IdcCommand::RetainCard => {
                (std::ptr::null(), 0)
            }
            IdcCommand::ChipIo { protocol, apdu } => {
                let Ok(length) = u32::try_from(apdu.len()) else {
                    return Err(CallError {
                        function: F,
                        hresult: ffi::LFS_ERR_INVALID_DATA,
                    });
                };
                if length > MAX_DATA_LEN {
                    return Err(CallError {
                        function: F,
                        hresult: ffi::LFS_ERR_INVALID_DATA,
                    });
                }
                chip = ffi::LfsIdcChipIo {
                    chip_protocol: *protocol,
                    reserved: 0,
                    chip_data_length: length,
                    chip_data: apdu.as_ptr(),
                };
                (
                    std::ptr::from_ref(&chip).cast(),
                    size_of::<ffi::LfsIdcChipIo>() as u32,
                )
            }
        };
        let (id, rx) = self.inner.begin();
        // SAFETY: the library is loaded and the session open; `data` points to `len` bytes
        // (`word`, `chip` and the APDU it points to) that live until after the call returns,
        // and the header makes the SP copy what it keeps.
        let hresult = unsafe {
            (self.inner.api.execute)(
                self.inner.service,
                command.code(),
                data,
                len,
                timeout_ms,
                id,
            )
        };
        self.finish_start(F, hresult, id, rx)
    }

    /// Starts an information request (answered without waiting behind running commands).
    pub fn get_info(&self, category: IdcInfo, timeout_ms: u32) -> Result<Request, CallError> {
        let (id, rx) = self.inner.begin();
        // SAFETY: the library is loaded and the session open; the IDC categories take no query.
        let hresult = unsafe {
            (self.inner.api.get_info)(
                self.inner.service,
                category.code(),
                std::ptr::null(),
                0,
                timeout_ms,
                id,
            )
        };
        self.finish_start("LFSAsyncGetInfo", hresult, id, rx)
    }

    fn finish_start(
        &self,
        function: &'static str,
        hresult: LfsHResult,
        id: u64,
        rx: mpsc::UnboundedReceiver<RequestMessage>,
    ) -> Result<Request, CallError> {
        if let Err(e) = check(function, hresult) {
            self.inner.abandon(id);
            return Err(e);
        }
        Ok(Request {
            id,
            rx,
            done: false,
            session: Arc::clone(&self.inner),
        })
    }

    /// Asks the SP to cancel every open request of this session.
    pub fn cancel_all(&self) -> Result<(), CallError> {
        self.inner.cancel(0)
    }

    /// Requests accepted by the SP and not yet completed (also those whose [`Request`] was
    /// dropped: they stay open until the SP completes them).
    pub fn open_requests(&self) -> usize {
        *self.inner.shared.open_requests.borrow()
    }

    /// Waits until no request of this session is open.
    pub async fn idle(&self) {
        let mut rx = self.inner.shared.open_requests.subscribe();
        // The sender lives in `Shared`, which `self` keeps alive, so this ends only at zero.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Cancels one request; cheap to clone and usable from any thread.
#[derive(Clone)]
pub struct Canceller {
    session: Arc<SessionInner>,
    id: u64,
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canceller")
            .field("request_id", &self.id)
            .finish()
    }
}

impl Canceller {
    /// `LFSCancelAsyncRequest`: the completion will say `LFS_ERR_CANCELED` unless it was too late
    /// (`LFS_ERR_INVALID_REQ_ID` then).
    pub fn cancel(&self) -> Result<(), CallError> {
        self.session.cancel(self.id)
    }
}

/// A request the SP accepted: yields its intermediate events, then its completion. Dropping it
/// before the completion cancels the request in the SP.
pub struct Request {
    id: u64,
    rx: mpsc::UnboundedReceiver<RequestMessage>,
    done: bool,
    session: Arc<SessionInner>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

impl Request {
    /// The request id given to the SP.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A handle that cancels this request.
    pub fn canceller(&self) -> Canceller {
        Canceller {
            session: Arc::clone(&self.session),
            id: self.id,
        }
    }

    /// The next event, or the completion; `None` after the completion. Cancel-safe.
    pub async fn recv(&mut self) -> Option<RequestMessage> {
        if self.done {
            return None;
        }
        let message = self.rx.recv().await;
        match &message {
            Some(RequestMessage::Completion(_)) | None => self.done = true,
            Some(RequestMessage::Event(_)) => {}
        }
        message
    }

    /// Waits for the completion, skipping events.
    pub async fn completion(mut self) -> Completion {
        while let Some(message) = self.recv().await {
            if let RequestMessage::Completion(c) = message {
                return c;
            }
        }
        // Unreachable while the SP keeps its promise of one completion per accepted request: the
        // sender lives until that completion arrives.
        Completion {
            request_id: self.id,
            hresult: ffi::LFS_ERR_INTERNAL_ERROR,
            code: 0,
            timestamp_ms: 0,
            data: Data::Malformed("the request ended without a completion".into()),
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.done {
            // Too late is fine (LFS_ERR_INVALID_REQ_ID): the completion is then discarded.
            let _ = self.session.cancel(self.id);
        }
    }
}

/// The unsolicited events of a session (service, user and system classes).
#[derive(Debug)]
pub struct Events {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the session is closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// An event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}
