//! A test LFS service provider: a motorised card reader (IDC) implemented in Rust through the
//! OpenTeller LFS ABI (`driver-proxy/lfs-abi/include/openteller_lfs.h`) and built as a shared
//! library, `libopenteller_lfs_test_sp.so`. It is what the `lfs:` backend's integration tests
//! load, and a worked example for vendors.
//!
//! Behaviour, per session (each `LFSOpen` gets its own reader):
//! - `LFS_CMD_IDC_READ_RAW_DATA` waits for a card. The card is "inserted" `insert_delay_ms`
//!   after the read starts; `LFS_EXEE_IDC_MEDIAINSERTED` is sent before the completion. Track 2
//!   is the configured text; tracks 1 and 3 are reported missing; the chip source returns the
//!   configured ATR (missing without one). Without a configured card the read waits until
//!   canceled (`LFS_ERR_CANCELED`) or its timeout (`LFS_ERR_TIMEOUT`).
//! - `LFS_CMD_IDC_EJECT_CARD` moves the card to the exit slot (media `ENTERING`); after
//!   `take_delay_ms` the customer takes it (`LFS_SRVE_IDC_MEDIAREMOVED`). With `fail_eject` set it
//!   fails with that number (−200 `MEDIAJAM` also jams the card).
//! - `LFS_CMD_IDC_RETAIN_CARD` counts the card into the retain bin (threshold user events at 90 %
//!   and full); `LFS_CMD_IDC_RESET` frees a jam and ejects (default), retains or leaves the card,
//!   with `LFS_SRVE_IDC_CARDACTION`; `LFS_CMD_IDC_CHIP_IO` answers `90 00` to any APDU when the
//!   card has a chip.
//! - `LFS_INF_IDC_STATUS` and `LFS_INF_IDC_CAPABILITIES` are answered by their own thread, also
//!   while a read waits.
//!
//! Configuration is read at `LFSOpen` from the environment, then from `key=value` options after
//! the logical name (`"CardReader;card=...;insert_delay_ms=50"`), which win:
//!
//! | variable | option | meaning |
//! | --- | --- | --- |
//! | `OPENTELLER_TEST_SP_CARD` | `card` | track 2 text of the card the customer inserts; empty: none |
//! | `OPENTELLER_TEST_SP_INSERT_DELAY_MS` | `insert_delay_ms` | ms from read start to insertion (200) |
//! | `OPENTELLER_TEST_SP_TAKE_DELAY_MS` | `take_delay_ms` | ms from eject to the card being taken (300) |
//! | `OPENTELLER_TEST_SP_FAIL_EJECT` | `fail_eject` | error number every eject fails with, e.g. -200 (0: none) |
//! | `OPENTELLER_TEST_SP_ATR` | `atr` | hex ATR: the card has a chip |
//! | `OPENTELLER_TEST_SP_RETAIN_CAPACITY` | `retain_capacity` | retain bin capacity (50) |
//!
//! A bad value makes `LFSOpen` fail with `LFS_ERR_INVALID_DATA` and a line on stderr.

// This crate exists to implement a C ABI: it exports `extern "C"` functions and calls the host's
// callbacks. Unsafe code is allowed here (the workspace denies it elsewhere); every block carries
// a SAFETY argument.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openteller_lfs_abi::ffi::{self, LfsHResult, LfsHService, LfsRequestId, LfsResult, LfsVersion};

/// The description reported by `LFSStartUp`.
pub const DESCRIPTION: &str = concat!("OpenTeller test card reader SP ", env!("CARGO_PKG_VERSION"));

/// The test card reader's configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Track 2 of the card the customer inserts; `None`: nobody inserts a card.
    pub card: Option<Vec<u8>>,
    /// The chip's ATR; `None`: magnetic stripe only.
    pub atr: Option<Vec<u8>>,
    /// From read start to insertion.
    pub insert_delay: Duration,
    /// From eject to the card being taken.
    pub take_delay: Duration,
    /// Error number every eject fails with; 0: none.
    pub fail_eject: i32,
    /// Retain bin capacity.
    pub retain_capacity: u32,
}

impl std::fmt::Debug for Config {
    /// Never prints the card's track.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field(
                "card",
                &self.card.as_ref().map(|c| format!("<{} bytes>", c.len())),
            )
            .field("atr", &self.atr.as_ref().map(Vec::len))
            .field("insert_delay", &self.insert_delay)
            .field("take_delay", &self.take_delay)
            .field("fail_eject", &self.fail_eject)
            .field("retain_capacity", &self.retain_capacity)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            card: None,
            atr: None,
            insert_delay: Duration::from_millis(200),
            take_delay: Duration::from_millis(300),
            fail_eject: 0,
            retain_capacity: 50,
        }
    }
}

const SETTINGS: [(&str, &str); 6] = [
    ("card", "OPENTELLER_TEST_SP_CARD"),
    ("insert_delay_ms", "OPENTELLER_TEST_SP_INSERT_DELAY_MS"),
    ("take_delay_ms", "OPENTELLER_TEST_SP_TAKE_DELAY_MS"),
    ("fail_eject", "OPENTELLER_TEST_SP_FAIL_EJECT"),
    ("atr", "OPENTELLER_TEST_SP_ATR"),
    ("retain_capacity", "OPENTELLER_TEST_SP_RETAIN_CAPACITY"),
];

impl Config {
    /// The configuration for `logical_name`: defaults, then the environment, then the name's
    /// `;key=value` options. `env` looks a variable up (the process environment in `LFSOpen`).
    pub fn resolve(
        logical_name: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let mut config = Config::default();
        for (key, var) in SETTINGS {
            if let Some(value) = env(var) {
                config.set(key, &value).map_err(|e| format!("{var}: {e}"))?;
            }
        }
        for option in logical_name.split(';').skip(1).filter(|o| !o.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("option {option:?} is not key=value"))?;
            if !SETTINGS.iter().any(|(k, _)| *k == key) {
                let keys: Vec<_> = SETTINGS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown option {key:?}; known: {}",
                    keys.join(", ")
                ));
            }
            config
                .set(key, value)
                .map_err(|e| format!("option {key}: {e}"))?;
        }
        Ok(config)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let ms = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{v:?} is not a number of milliseconds"))
        };
        match key {
            "card" => {
                if !value.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err("the track must be printable ASCII".into());
                }
                self.card = (!value.is_empty()).then(|| value.as_bytes().to_vec());
            }
            "insert_delay_ms" => self.insert_delay = ms(value)?,
            "take_delay_ms" => self.take_delay = ms(value)?,
            "fail_eject" => {
                let n: i32 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{value:?} is not an error number"))?;
                if n > 0 {
                    return Err(format!(
                        "{n} is not an error number (they are negative, e.g. -200)"
                    ));
                }
                self.fail_eject = n;
            }
            "atr" => {
                self.atr = if value.is_empty() {
                    None
                } else {
                    Some(parse_hex(value)?)
                }
            }
            "retain_capacity" => {
                self.retain_capacity = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{value:?} is not a count"))?;
            }
            _ => return Err(format!("unknown setting {key}")),
        }
        Ok(())
    }
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) || digits.len() > 2 * 64 {
        return Err(format!("{text:?} is not 1..64 hex bytes"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect()
}

// ----- Global state -------------------------------------------------------------------------

struct Global {
    started: u32,
    next_handle: LfsHService,
    services: BTreeMap<LfsHService, Arc<Service>>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    started: 0,
    next_handle: 1,
    services: BTreeMap::new(),
});

/// Addresses of results handed to the host and not yet freed.
static LIVE_RESULTS: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs an SPI entry point, turning a panic into `LFS_ERR_INTERNAL_ERROR` instead of unwinding
/// into the host.
fn guard(f: impl FnOnce() -> LfsHResult) -> LfsHResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(ffi::LFS_ERR_INTERNAL_ERROR)
}

fn service(handle: LfsHService) -> Result<Arc<Service>, LfsHResult> {
    let global = lock(&GLOBAL);
    if global.started == 0 {
        return Err(ffi::LFS_ERR_NOT_STARTED);
    }
    global
        .services
        .get(&handle)
        .cloned()
        .ok_or(ffi::LFS_ERR_INVALID_HSERVICE)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ----- Results --------------------------------------------------------------------------------

/// What a result's buffer points into. Every pointer in a result refers to a heap allocation
/// owned here, so moving a `Payload` never invalidates them.
enum Payload {
    None,
    CardData {
        list: Box<ffi::LfsIdcCardDataList>,
        _items: Vec<ffi::LfsIdcCardData>,
        _bytes: Vec<Vec<u8>>,
    },
    RetainCard(Box<ffi::LfsIdcRetainCard>),
    ChipIo {
        io: Box<ffi::LfsIdcChipIo>,
        _data: Vec<u8>,
    },
    Status(Box<ffi::LfsIdcStatus>),
    Caps(Box<ffi::LfsIdcCaps>),
    CardAct(Box<ffi::LfsIdcCardAct>),
    Word(Box<u16>),
}

impl Payload {
    fn card_data(items: Vec<(u16, u16, Vec<u8>)>) -> Payload {
        let bytes: Vec<Vec<u8>> = items.iter().map(|(_, _, d)| d.clone()).collect();
        let items: Vec<ffi::LfsIdcCardData> = items
            .iter()
            .zip(&bytes)
            .map(|((source, status, _), data)| ffi::LfsIdcCardData {
                data_source: *source,
                status: *status,
                data_length: data.len() as u32,
                data: if data.is_empty() {
                    std::ptr::null()
                } else {
                    data.as_ptr()
                },
            })
            .collect();
        let list = Box::new(ffi::LfsIdcCardDataList {
            count: items.len() as u32,
            reserved: 0,
            items: if items.is_empty() {
                std::ptr::null()
            } else {
                items.as_ptr()
            },
        });
        Payload::CardData {
            list,
            _items: items,
            _bytes: bytes,
        }
    }

    fn chip_io(protocol: u16, data: Vec<u8>) -> Payload {
        let io = Box::new(ffi::LfsIdcChipIo {
            chip_protocol: protocol,
            reserved: 0,
            chip_data_length: data.len() as u32,
            chip_data: data.as_ptr(),
        });
        Payload::ChipIo { io, _data: data }
    }

    fn buffer(&self) -> (*const c_void, u32) {
        fn of<T>(b: &T) -> (*const c_void, u32) {
            (std::ptr::from_ref(b).cast(), size_of::<T>() as u32)
        }
        match self {
            Payload::None => (std::ptr::null(), 0),
            Payload::CardData { list, .. } => of(&**list),
            Payload::RetainCard(b) => of(&**b),
            Payload::ChipIo { io, .. } => of(&**io),
            Payload::Status(b) => of(&**b),
            Payload::Caps(b) => of(&**b),
            Payload::CardAct(b) => of(&**b),
            Payload::Word(b) => of(&**b),
        }
    }
}

/// A result and what it points to. `repr(C)` with the result first, so a pointer to the holder
/// is a pointer to its `LFSRESULT` and back.
#[repr(C)]
struct Holder {
    result: LfsResult,
    _payload: Payload,
}

fn make_result(
    message: u32,
    service: LfsHService,
    request_id: u64,
    hresult: LfsHResult,
    code: u32,
    payload: Payload,
) -> *const LfsResult {
    let (buffer, buffer_len) = payload.buffer();
    let holder = Box::new(Holder {
        result: LfsResult {
            message,
            service,
            request_id,
            timestamp_ms: now_ms(),
            result: hresult,
            code,
            buffer,
            buffer_len,
            reserved: 0,
        },
        _payload: payload,
    });
    let ptr = Box::into_raw(holder);
    lock(&LIVE_RESULTS).insert(ptr as usize);
    ptr.cast_const().cast::<LfsResult>()
}

// ----- One reader -----------------------------------------------------------------------------

type Proc = unsafe extern "C" fn(*const LfsResult, *mut c_void);

struct Callbacks {
    complete: Proc,
    event: Proc,
    /// The host's `user` pointer, kept as an address so the service is Send and Sync; it is
    /// only ever passed back to the host's callbacks.
    user: usize,
}

enum Input {
    None,
    Word(u16),
    ChipIo { protocol: u16, data: Vec<u8> },
}

struct Job {
    id: LfsRequestId,
    code: u32,
    input: Input,
    deadline: Option<Instant>,
}

struct Dev {
    media: u16,
    chip: u16,
    retained: u32,
    closing: bool,
    /// Accepted and not yet completed.
    open: BTreeSet<LfsRequestId>,
    canceled: BTreeSet<LfsRequestId>,
    /// When the card at the exit slot is taken.
    take_at: Option<Instant>,
}

struct Service {
    handle: LfsHService,
    callbacks: Callbacks,
    config: Config,
    registered: AtomicU32,
    state: Mutex<Dev>,
    /// Signalled on every state change (cancel, close, eject, insertion).
    changed: Condvar,
    commands: Mutex<Option<mpsc::Sender<Job>>>,
    infos: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Service {
    fn send(
        &self,
        complete: bool,
        message: u32,
        request_id: u64,
        hresult: LfsHResult,
        code: u32,
        payload: Payload,
    ) {
        let result = make_result(message, self.handle, request_id, hresult, code, payload);
        let proc = if complete {
            self.callbacks.complete
        } else {
            self.callbacks.event
        };
        // SAFETY: the host gave these callbacks and `user` at LFSOpen and keeps them valid until
        // LFSClose returns; every thread that calls this is joined before LFSClose returns.
        // `result` is a live result the host frees with LFSFreeResult.
        unsafe { proc(result, self.callbacks.user as *mut c_void) };
    }

    fn complete(&self, job: &Job, message: u32, hresult: LfsHResult, payload: Payload) {
        {
            let mut st = lock(&self.state);
            st.open.remove(&job.id);
            st.canceled.remove(&job.id);
        }
        self.send(true, message, job.id, hresult, job.code, payload);
    }

    fn execute_event(&self, job: &Job, event: u32) {
        self.send(
            false,
            ffi::LFS_EXECUTE_EVENT,
            job.id,
            ffi::LFS_SUCCESS,
            event,
            Payload::None,
        );
    }

    fn unsolicited(&self, message: u32, class: u32, event: u32, payload: Payload) {
        if self.registered.load(Ordering::Relaxed) & class != 0 {
            self.send(false, message, 0, ffi::LFS_SUCCESS, event, payload);
        }
    }

    fn card_action(&self, action: u16, position: u16) {
        let act = Box::new(ffi::LfsIdcCardAct { action, position });
        self.unsolicited(
            ffi::LFS_SERVICE_EVENT,
            ffi::LFS_SERVICE_EVENTS,
            ffi::LFS_SRVE_IDC_CARDACTION,
            Payload::CardAct(act),
        );
    }

    fn bin_state(&self, retained: u32) -> u16 {
        let capacity = self.config.retain_capacity;
        if capacity == 0 {
            ffi::LFS_IDC_RETAINNOTSUPP
        } else if retained >= capacity {
            ffi::LFS_IDC_RETAINBINFULL
        } else if u64::from(retained) * 10 >= u64::from(capacity) * 9 {
            ffi::LFS_IDC_RETAINBINHIGH
        } else {
            ffi::LFS_IDC_RETAINBINOK
        }
    }

    /// Counts the card inside into the bin; returns the new bin state when it changed.
    fn retain_locked(&self, st: &mut Dev) -> Option<u16> {
        let before = self.bin_state(st.retained);
        st.retained += 1;
        st.media = ffi::LFS_IDC_MEDIANOTPRESENT;
        st.chip = ffi::LFS_IDC_CHIPNOCARD;
        st.take_at = None;
        let after = self.bin_state(st.retained);
        (after != before).then_some(after)
    }

    fn threshold(&self, state: Option<u16>) {
        if let Some(state) = state {
            self.unsolicited(
                ffi::LFS_USER_EVENT,
                ffi::LFS_USER_EVENTS,
                ffi::LFS_USRE_IDC_RETAINBINTHRESHOLD,
                Payload::Word(Box::new(state)),
            );
        }
    }

    fn eject_locked(&self, st: &mut Dev) {
        st.media = ffi::LFS_IDC_MEDIAENTERING;
        st.chip = ffi::LFS_IDC_CHIPNOCARD;
        st.take_at = Some(Instant::now() + self.config.take_delay);
        self.changed.notify_all();
    }

    fn is_canceled(&self, st: &Dev, id: LfsRequestId) -> bool {
        st.closing || st.canceled.contains(&id)
    }

    // --- command thread

    fn run_commands(self: Arc<Self>, jobs: mpsc::Receiver<Job>) {
        for job in jobs {
            if self.is_canceled(&lock(&self.state), job.id) {
                self.complete(
                    &job,
                    ffi::LFS_EXECUTE_COMPLETE,
                    ffi::LFS_ERR_CANCELED,
                    Payload::None,
                );
                continue;
            }
            let (hresult, payload) = match job.code {
                ffi::LFS_CMD_IDC_READ_RAW_DATA => self.read_raw_data(&job),
                ffi::LFS_CMD_IDC_EJECT_CARD => (self.eject(), Payload::None),
                ffi::LFS_CMD_IDC_RETAIN_CARD => self.retain(),
                ffi::LFS_CMD_IDC_RESET => (self.reset(&job), Payload::None),
                ffi::LFS_CMD_IDC_CHIP_IO => self.chip_io(&job),
                _ => (ffi::LFS_ERR_UNSUPP_COMMAND, Payload::None),
            };
            self.complete(&job, ffi::LFS_EXECUTE_COMPLETE, hresult, payload);
        }
    }

    fn read_raw_data(&self, job: &Job) -> (LfsHResult, Payload) {
        let Input::Word(sources) = job.input else {
            return (ffi::LFS_ERR_INVALID_DATA, Payload::None);
        };
        let known =
            ffi::LFS_IDC_TRACK1 | ffi::LFS_IDC_TRACK2 | ffi::LFS_IDC_TRACK3 | ffi::LFS_IDC_CHIP;
        if sources == 0 || sources & !known != 0 {
            return (ffi::LFS_ERR_INVALID_DATA, Payload::None);
        }
        let insert_at = Instant::now() + self.config.insert_delay;
        let mut st = lock(&self.state);
        loop {
            if self.is_canceled(&st, job.id) {
                return (ffi::LFS_ERR_CANCELED, Payload::None);
            }
            match st.media {
                ffi::LFS_IDC_MEDIAPRESENT => break,
                ffi::LFS_IDC_MEDIAJAMMED => return (ffi::LFS_ERR_IDC_MEDIAJAM, Payload::None),
                _ => {}
            }
            let now = Instant::now();
            if self.config.card.is_some() && now >= insert_at {
                st.media = ffi::LFS_IDC_MEDIAPRESENT;
                st.chip = if self.config.atr.is_some() {
                    ffi::LFS_IDC_CHIPPOWEREDOFF
                } else {
                    ffi::LFS_IDC_CHIPNOCARD
                };
                st.take_at = None;
                drop(st);
                self.execute_event(job, ffi::LFS_EXEE_IDC_MEDIAINSERTED);
                st = lock(&self.state);
                continue;
            }
            if job.deadline.is_some_and(|d| now >= d) {
                return (ffi::LFS_ERR_TIMEOUT, Payload::None);
            }
            let mut wait = Duration::from_secs(1);
            if self.config.card.is_some() {
                wait = wait.min(insert_at.saturating_duration_since(now));
            }
            if let Some(d) = job.deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            st = self
                .changed
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let mut items = Vec::new();
        for source in [
            ffi::LFS_IDC_TRACK1,
            ffi::LFS_IDC_TRACK2,
            ffi::LFS_IDC_TRACK3,
            ffi::LFS_IDC_CHIP,
        ] {
            if sources & source == 0 {
                continue;
            }
            let item = match (source, &self.config.card, &self.config.atr) {
                (ffi::LFS_IDC_TRACK2, Some(track), _) => {
                    (source, ffi::LFS_IDC_DATAOK, track.clone())
                }
                (ffi::LFS_IDC_CHIP, _, Some(atr)) => {
                    st.chip = ffi::LFS_IDC_CHIPONLINE;
                    (source, ffi::LFS_IDC_DATAOK, atr.clone())
                }
                (ffi::LFS_IDC_CHIP, _, None) => (source, ffi::LFS_IDC_DATASRCMISSING, Vec::new()),
                _ => (source, ffi::LFS_IDC_DATAMISSING, Vec::new()),
            };
            items.push(item);
        }
        (ffi::LFS_SUCCESS, Payload::card_data(items))
    }

    fn eject(&self) -> LfsHResult {
        let mut st = lock(&self.state);
        if self.config.fail_eject != 0 {
            if self.config.fail_eject == ffi::LFS_ERR_IDC_MEDIAJAM
                && st.media == ffi::LFS_IDC_MEDIAPRESENT
            {
                st.media = ffi::LFS_IDC_MEDIAJAMMED;
            }
            return self.config.fail_eject;
        }
        match st.media {
            ffi::LFS_IDC_MEDIAPRESENT => {
                self.eject_locked(&mut st);
                ffi::LFS_SUCCESS
            }
            ffi::LFS_IDC_MEDIAENTERING => ffi::LFS_SUCCESS,
            ffi::LFS_IDC_MEDIAJAMMED => ffi::LFS_ERR_IDC_MEDIAJAM,
            _ => ffi::LFS_ERR_IDC_NOMEDIA,
        }
    }

    fn retain(&self) -> (LfsHResult, Payload) {
        let mut st = lock(&self.state);
        match st.media {
            ffi::LFS_IDC_MEDIAPRESENT | ffi::LFS_IDC_MEDIAENTERING => {}
            ffi::LFS_IDC_MEDIAJAMMED => return (ffi::LFS_ERR_IDC_MEDIAJAM, Payload::None),
            _ => return (ffi::LFS_ERR_IDC_NOMEDIA, Payload::None),
        }
        if self.config.retain_capacity == 0 {
            return (ffi::LFS_ERR_UNSUPP_COMMAND, Payload::None);
        }
        if st.retained >= self.config.retain_capacity {
            return (ffi::LFS_ERR_IDC_RETAINBINFULL, Payload::None);
        }
        let threshold = self.retain_locked(&mut st);
        let out = ffi::LfsIdcRetainCard {
            count: st.retained,
            position: st.media,
            reserved: 0,
        };
        drop(st);
        self.threshold(threshold);
        (ffi::LFS_SUCCESS, Payload::RetainCard(Box::new(out)))
    }

    fn reset(&self, job: &Job) -> LfsHResult {
        let action = match job.input {
            Input::None => ffi::LFS_IDC_EJECT,
            Input::Word(a @ (ffi::LFS_IDC_NOACTION | ffi::LFS_IDC_EJECT | ffi::LFS_IDC_RETAIN)) => {
                a
            }
            _ => return ffi::LFS_ERR_INVALID_DATA,
        };
        let mut st = lock(&self.state);
        if st.media == ffi::LFS_IDC_MEDIAJAMMED {
            st.media = ffi::LFS_IDC_MEDIAPRESENT;
        }
        let mut act = None;
        let mut threshold = None;
        if st.media == ffi::LFS_IDC_MEDIAPRESENT {
            match action {
                ffi::LFS_IDC_EJECT => {
                    self.eject_locked(&mut st);
                    act = Some(ffi::LFS_IDC_CARDEJECTED);
                }
                ffi::LFS_IDC_RETAIN if st.retained < self.config.retain_capacity => {
                    threshold = self.retain_locked(&mut st);
                    act = Some(ffi::LFS_IDC_CARDRETAINED);
                }
                ffi::LFS_IDC_RETAIN => return ffi::LFS_ERR_IDC_RETAINBINFULL,
                _ => {}
            }
        }
        drop(st);
        if let Some(action) = act {
            self.card_action(action, ffi::LFS_IDC_MEDIAPRESENT);
        }
        self.threshold(threshold);
        ffi::LFS_SUCCESS
    }

    fn chip_io(&self, job: &Job) -> (LfsHResult, Payload) {
        let Input::ChipIo { protocol, data } = &job.input else {
            return (ffi::LFS_ERR_INVALID_DATA, Payload::None);
        };
        if *protocol != ffi::LFS_IDC_CHIPT0 && *protocol != ffi::LFS_IDC_CHIPT1 {
            return (ffi::LFS_ERR_IDC_PROTOCOLNOTSUPP, Payload::None);
        }
        if data.len() < 4 {
            return (ffi::LFS_ERR_INVALID_DATA, Payload::None);
        }
        let mut st = lock(&self.state);
        if st.media != ffi::LFS_IDC_MEDIAPRESENT {
            return (ffi::LFS_ERR_IDC_NOMEDIA, Payload::None);
        }
        if self.config.atr.is_none() {
            return (ffi::LFS_ERR_IDC_INVALIDMEDIA, Payload::None);
        }
        st.chip = ffi::LFS_IDC_CHIPONLINE;
        (
            ffi::LFS_SUCCESS,
            Payload::chip_io(*protocol, vec![0x90, 0x00]),
        )
    }

    // --- information thread

    fn run_infos(self: Arc<Self>, jobs: mpsc::Receiver<Job>) {
        for job in jobs {
            let st = lock(&self.state);
            if self.is_canceled(&st, job.id) {
                drop(st);
                self.complete(
                    &job,
                    ffi::LFS_GETINFO_COMPLETE,
                    ffi::LFS_ERR_CANCELED,
                    Payload::None,
                );
                continue;
            }
            let payload = match job.code {
                ffi::LFS_INF_IDC_STATUS => Payload::Status(Box::new(ffi::LfsIdcStatus {
                    device: ffi::LFS_IDC_DEVONLINE,
                    media: st.media,
                    retain_bin: self.bin_state(st.retained),
                    chip_power: st.chip,
                    cards: st.retained,
                    reserved: 0,
                })),
                _ => Payload::Caps(Box::new(self.capabilities())),
            };
            drop(st);
            self.complete(&job, ffi::LFS_GETINFO_COMPLETE, ffi::LFS_SUCCESS, payload);
        }
    }

    fn capabilities(&self) -> ffi::LfsIdcCaps {
        let mut caps = ffi::LfsIdcCaps {
            dev_class: ffi::LFS_SERVICE_CLASS_IDC,
            r#type: ffi::LFS_IDC_TYPEMOTOR,
            read_tracks: ffi::LFS_IDC_TRACK1 | ffi::LFS_IDC_TRACK2 | ffi::LFS_IDC_TRACK3,
            chip_protocols: ffi::LFS_IDC_CHIPT0 | ffi::LFS_IDC_CHIPT1,
            cards: self.config.retain_capacity,
            vendor: [0; ffi::LFS_IDC_TEXT_LEN + 1],
            model: [0; ffi::LFS_IDC_TEXT_LEN + 1],
            firmware: [0; ffi::LFS_IDC_TEXT_LEN + 1],
        };
        ffi::write_text(&mut caps.vendor, "OpenTeller");
        ffi::write_text(&mut caps.model, "Test card reader SP");
        ffi::write_text(&mut caps.firmware, env!("CARGO_PKG_VERSION"));
        caps
    }

    // --- timer thread: the customer takes an ejected card

    fn run_timer(self: Arc<Self>) {
        let mut st = lock(&self.state);
        loop {
            if st.closing {
                return;
            }
            let now = Instant::now();
            let take_at = st.take_at;
            st = match take_at {
                Some(at) if now >= at => {
                    st.take_at = None;
                    if st.media == ffi::LFS_IDC_MEDIAENTERING {
                        st.media = ffi::LFS_IDC_MEDIANOTPRESENT;
                        drop(st);
                        self.unsolicited(
                            ffi::LFS_SERVICE_EVENT,
                            ffi::LFS_SERVICE_EVENTS,
                            ffi::LFS_SRVE_IDC_MEDIAREMOVED,
                            Payload::None,
                        );
                        lock(&self.state)
                    } else {
                        st
                    }
                }
                Some(at) => {
                    self.changed
                        .wait_timeout(st, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Completes what is open with `LFS_ERR_CANCELED` and joins every thread of this reader.
    fn shut_down(&self) {
        lock(&self.state).closing = true;
        self.changed.notify_all();
        lock(&self.commands).take();
        lock(&self.infos).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    fn accept(
        &self,
        id: LfsRequestId,
        code: u32,
        input: Input,
        timeout_ms: u32,
        info: bool,
    ) -> LfsHResult {
        let mut st = lock(&self.state);
        if id == 0 || st.open.contains(&id) {
            return ffi::LFS_ERR_INVALID_REQ_ID;
        }
        let queue = if info {
            lock(&self.infos)
        } else {
            lock(&self.commands)
        };
        let Some(queue) = queue.as_ref() else {
            return ffi::LFS_ERR_INVALID_HSERVICE;
        };
        let deadline = (timeout_ms != 0)
            .then(|| Instant::now() + Duration::from_millis(u64::from(timeout_ms)));
        st.open.insert(id);
        if queue
            .send(Job {
                id,
                code,
                input,
                deadline,
            })
            .is_err()
        {
            st.open.remove(&id);
            return ffi::LFS_ERR_INVALID_HSERVICE;
        }
        ffi::LFS_SUCCESS
    }
}

fn open_service(logical_name: &str, callbacks: Callbacks) -> Result<LfsHService, LfsHResult> {
    let config = Config::resolve(logical_name, |var| std::env::var(var).ok()).map_err(|e| {
        eprintln!(
            "openteller test SP: cannot open {:?}: {e}",
            logical_name.split(';').next().unwrap_or("")
        );
        ffi::LFS_ERR_INVALID_DATA
    })?;
    let handle = {
        let mut global = lock(&GLOBAL);
        if global.started == 0 {
            return Err(ffi::LFS_ERR_NOT_STARTED);
        }
        let handle = global.next_handle;
        global.next_handle = global.next_handle.checked_add(1).unwrap_or(1);
        handle
    };
    let (commands, command_rx) = mpsc::channel();
    let (infos, info_rx) = mpsc::channel();
    let svc = Arc::new(Service {
        handle,
        callbacks,
        config,
        registered: AtomicU32::new(0),
        state: Mutex::new(Dev {
            media: ffi::LFS_IDC_MEDIANOTPRESENT,
            chip: ffi::LFS_IDC_CHIPNOCARD,
            retained: 0,
            closing: false,
            open: BTreeSet::new(),
            canceled: BTreeSet::new(),
            take_at: None,
        }),
        changed: Condvar::new(),
        commands: Mutex::new(Some(commands)),
        infos: Mutex::new(Some(infos)),
        threads: Mutex::new(Vec::new()),
    });
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(f)
    };
    let started = [
        spawn(
            "lfs-test-sp-cmd",
            Box::new({
                let svc = Arc::clone(&svc);
                move || svc.run_commands(command_rx)
            }),
        ),
        spawn(
            "lfs-test-sp-inf",
            Box::new({
                let svc = Arc::clone(&svc);
                move || svc.run_infos(info_rx)
            }),
        ),
        spawn(
            "lfs-test-sp-timer",
            Box::new({
                let svc = Arc::clone(&svc);
                move || svc.run_timer()
            }),
        ),
    ];
    let mut ok = true;
    for t in started {
        match t {
            Ok(t) => lock(&svc.threads).push(t),
            Err(_) => ok = false,
        }
    }
    if !ok {
        svc.shut_down();
        return Err(ffi::LFS_ERR_OUT_OF_MEMORY);
    }
    lock(&GLOBAL).services.insert(handle, svc);
    Ok(handle)
}

// ----- The SPI --------------------------------------------------------------------------------

/// `LFSStartUp`: see `openteller_lfs.h`.
///
/// # Safety
///
/// `version` is null or points to a writable `LFSVERSION`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn LFSStartUp(abi_version: u32, version: *mut LfsVersion) -> LfsHResult {
    guard(|| {
        if version.is_null() {
            return ffi::LFS_ERR_INVALID_POINTER;
        }
        let mut v = LfsVersion::zeroed();
        v.version = ffi::LFS_ABI_VERSION;
        v.low_version = ffi::LFS_ABI_VERSION;
        v.high_version = ffi::LFS_ABI_VERSION;
        ffi::write_text(&mut v.description, DESCRIPTION);
        // SAFETY: non-null and writable by the caller's contract; write_unaligned assumes no
        // alignment.
        unsafe { version.write_unaligned(v) };
        let major = abi_version >> 16;
        let ours = u32::from(ffi::LFS_ABI_VERSION_MAJOR);
        if major > ours {
            return ffi::LFS_ERR_SPI_VER_TOO_HIGH;
        }
        if major < ours {
            return ffi::LFS_ERR_SPI_VER_TOO_LOW;
        }
        lock(&GLOBAL).started += 1;
        ffi::LFS_SUCCESS
    })
}

/// `LFSCleanUp`: see `openteller_lfs.h`. The last one closes what the host left open.
#[unsafe(no_mangle)]
pub extern "C" fn LFSCleanUp() -> LfsHResult {
    guard(|| {
        let leftovers = {
            let mut global = lock(&GLOBAL);
            if global.started == 0 {
                return ffi::LFS_ERR_NOT_STARTED;
            }
            global.started -= 1;
            if global.started > 0 {
                return ffi::LFS_SUCCESS;
            }
            std::mem::take(&mut global.services)
        };
        for svc in leftovers.values() {
            svc.shut_down();
        }
        ffi::LFS_SUCCESS
    })
}

/// `LFSOpen`: see `openteller_lfs.h`.
///
/// # Safety
///
/// `logical_name` is null or a NUL-terminated string; `service` is null or writable; the
/// callbacks and `user` stay valid until `LFSClose` returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn LFSOpen(
    logical_name: *const c_char,
    on_complete: ffi::LfsCompletionProc,
    on_event: ffi::LfsEventProc,
    user: *mut c_void,
    service: *mut LfsHService,
) -> LfsHResult {
    guard(|| {
        let (Some(complete), Some(event)) = (on_complete, on_event) else {
            return ffi::LFS_ERR_INVALID_POINTER;
        };
        if logical_name.is_null() || service.is_null() {
            return ffi::LFS_ERR_INVALID_POINTER;
        }
        // SAFETY: non-null and NUL-terminated by the caller's contract; copied at once.
        let name = unsafe { CStr::from_ptr(logical_name) }
            .to_string_lossy()
            .into_owned();
        match open_service(
            &name,
            Callbacks {
                complete,
                event,
                user: user as usize,
            },
        ) {
            Ok(handle) => {
                // SAFETY: non-null and writable by the caller's contract.
                unsafe { service.write_unaligned(handle) };
                ffi::LFS_SUCCESS
            }
            Err(e) => e,
        }
    })
}

/// `LFSRegister`: see `openteller_lfs.h`.
#[unsafe(no_mangle)]
pub extern "C" fn LFSRegister(service_handle: LfsHService, event_classes: u32) -> LfsHResult {
    guard(|| {
        let all = ffi::LFS_SERVICE_EVENTS
            | ffi::LFS_USER_EVENTS
            | ffi::LFS_SYSTEM_EVENTS
            | ffi::LFS_EXECUTE_EVENTS;
        if event_classes & !all != 0 {
            return ffi::LFS_ERR_INVALID_EVENT_CLASS;
        }
        match service(service_handle) {
            Ok(svc) => {
                svc.registered.store(event_classes, Ordering::Relaxed);
                ffi::LFS_SUCCESS
            }
            Err(e) => e,
        }
    })
}

/// `LFSAsyncExecute`: see `openteller_lfs.h`.
///
/// # Safety
///
/// `cmd_data` is null or points to `cmd_data_len` readable bytes holding the command's input.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn LFSAsyncExecute(
    service_handle: LfsHService,
    command: u32,
    cmd_data: *const c_void,
    cmd_data_len: u32,
    timeout_ms: u32,
    request_id: LfsRequestId,
) -> LfsHResult {
    guard(|| {
        let svc = match service(service_handle) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let word = || {
            if cmd_data.is_null() || (cmd_data_len as usize) < size_of::<u16>() {
                None
            } else {
                // SAFETY: non-null with at least 2 readable bytes (caller's contract, checked
                // length); read_unaligned assumes no alignment.
                Some(unsafe { cmd_data.cast::<u16>().read_unaligned() })
            }
        };
        let input = match command {
            ffi::LFS_CMD_IDC_READ_RAW_DATA => match word() {
                Some(w) => Input::Word(w),
                None => return ffi::LFS_ERR_INVALID_DATA,
            },
            ffi::LFS_CMD_IDC_RESET => match (cmd_data.is_null(), word()) {
                (true, _) => Input::None,
                (false, Some(w)) => Input::Word(w),
                (false, None) => return ffi::LFS_ERR_INVALID_DATA,
            },
            ffi::LFS_CMD_IDC_CHIP_IO => {
                if cmd_data.is_null() || (cmd_data_len as usize) < size_of::<ffi::LfsIdcChipIo>() {
                    return ffi::LFS_ERR_INVALID_DATA;
                }
                // SAFETY: non-null with a whole LFSIDCCHIPIO readable (checked length).
                let io = unsafe { cmd_data.cast::<ffi::LfsIdcChipIo>().read_unaligned() };
                if io.chip_data_length > 4096 || (io.chip_data_length > 0 && io.chip_data.is_null())
                {
                    return ffi::LFS_ERR_INVALID_DATA;
                }
                let data = if io.chip_data_length == 0 {
                    Vec::new()
                } else {
                    // SAFETY: non-null, `chip_data_length` readable bytes by the caller's
                    // contract, copied before returning.
                    unsafe {
                        std::slice::from_raw_parts(io.chip_data, io.chip_data_length as usize)
                    }
                    .to_vec()
                };
                Input::ChipIo {
                    protocol: io.chip_protocol,
                    data,
                }
            }
            ffi::LFS_CMD_IDC_EJECT_CARD | ffi::LFS_CMD_IDC_RETAIN_CARD => Input::None,
            _ => return ffi::LFS_ERR_UNSUPP_COMMAND,
        };
        svc.accept(request_id, command, input, timeout_ms, false)
    })
}

/// `LFSAsyncGetInfo`: see `openteller_lfs.h`. The IDC categories take no query.
#[unsafe(no_mangle)]
pub extern "C" fn LFSAsyncGetInfo(
    service_handle: LfsHService,
    category: u32,
    _query: *const c_void,
    _query_len: u32,
    timeout_ms: u32,
    request_id: LfsRequestId,
) -> LfsHResult {
    guard(|| {
        let svc = match service(service_handle) {
            Ok(s) => s,
            Err(e) => return e,
        };
        match category {
            ffi::LFS_INF_IDC_STATUS | ffi::LFS_INF_IDC_CAPABILITIES => {
                svc.accept(request_id, category, Input::None, timeout_ms, true)
            }
            _ => ffi::LFS_ERR_INVALID_CATEGORY,
        }
    })
}

/// `LFSCancelAsyncRequest`: see `openteller_lfs.h`.
#[unsafe(no_mangle)]
pub extern "C" fn LFSCancelAsyncRequest(
    service_handle: LfsHService,
    request_id: LfsRequestId,
) -> LfsHResult {
    guard(|| {
        let svc = match service(service_handle) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let mut st = lock(&svc.state);
        if request_id == 0 {
            let open: Vec<_> = st.open.iter().copied().collect();
            st.canceled.extend(open);
        } else if st.open.contains(&request_id) {
            st.canceled.insert(request_id);
        } else {
            return ffi::LFS_ERR_INVALID_REQ_ID;
        }
        svc.changed.notify_all();
        ffi::LFS_SUCCESS
    })
}

/// `LFSClose`: see `openteller_lfs.h`.
#[unsafe(no_mangle)]
pub extern "C" fn LFSClose(service_handle: LfsHService) -> LfsHResult {
    guard(|| {
        let svc = {
            let mut global = lock(&GLOBAL);
            if global.started == 0 {
                return ffi::LFS_ERR_NOT_STARTED;
            }
            match global.services.remove(&service_handle) {
                Some(s) => s,
                None => return ffi::LFS_ERR_INVALID_HSERVICE,
            }
        };
        svc.shut_down();
        ffi::LFS_SUCCESS
    })
}

/// `LFSFreeResult`: see `openteller_lfs.h`. Pointers that are not live results of this SP are
/// refused with `LFS_ERR_INVALID_RESULT` (so a double free is harmless).
#[unsafe(no_mangle)]
pub extern "C" fn LFSFreeResult(result: *const LfsResult) -> LfsHResult {
    guard(|| {
        if result.is_null() {
            return ffi::LFS_ERR_INVALID_POINTER;
        }
        if !lock(&LIVE_RESULTS).remove(&(result as usize)) {
            return ffi::LFS_ERR_INVALID_RESULT;
        }
        // SAFETY: the address was produced by Box::into_raw(Box<Holder>) in make_result (whose
        // first field is this LFSRESULT, repr(C)) and is removed from LIVE_RESULTS exactly once,
        // so it is reclaimed exactly once.
        drop(unsafe { Box::from_raw(result.cast_mut().cast::<Holder>()) });
        ffi::LFS_SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_env_then_name_options() {
        let env = |var: &str| match var {
            "OPENTELLER_TEST_SP_CARD" => Some("6222020200112233445=4912".to_owned()),
            "OPENTELLER_TEST_SP_FAIL_EJECT" => Some("-200".to_owned()),
            _ => None,
        };
        let c = Config::resolve("CardReader", env).unwrap();
        assert_eq!(c.card.as_deref(), Some(&b"6222020200112233445=4912"[..]));
        assert_eq!(c.fail_eject, -200);
        assert_eq!(c.insert_delay, Duration::from_millis(200));
        let c = Config::resolve(
            "CardReader;fail_eject=0;insert_delay_ms=5;atr=3B 02 14 50;card=",
            env,
        )
        .unwrap();
        assert_eq!(c.fail_eject, 0);
        assert_eq!(c.card, None);
        assert_eq!(c.atr, Some(vec![0x3B, 0x02, 0x14, 0x50]));
        assert_eq!(c.insert_delay, Duration::from_millis(5));
        assert!(!format!("{c:?}").contains("6222"));
    }

    #[test]
    fn config_errors_are_clear() {
        let none = |_: &str| None;
        let e = Config::resolve("X;insert_delay_ms=soon", none).unwrap_err();
        assert!(e.contains("insert_delay_ms") && e.contains("soon"), "{e}");
        let e = Config::resolve("X;colour=red", none).unwrap_err();
        assert!(e.contains("unknown option"), "{e}");
        let e = Config::resolve("X;fail_eject=200", none).unwrap_err();
        assert!(e.contains("negative"), "{e}");
        assert!(Config::resolve("X;atr=3", none).is_err());
        let env = |v: &str| (v == "OPENTELLER_TEST_SP_TAKE_DELAY_MS").then(|| "x".to_owned());
        let e = Config::resolve("X", env).unwrap_err();
        assert!(e.starts_with("OPENTELLER_TEST_SP_TAKE_DELAY_MS"), "{e}");
    }

    #[test]
    fn startup_checks_the_major_version_and_free_refuses_foreign_pointers() {
        let mut v = LfsVersion::zeroed();
        // SAFETY: `v` is writable.
        let hr = unsafe { LFSStartUp(ffi::lfs_make_version(2, 0), &mut v) };
        assert_eq!(hr, ffi::LFS_ERR_SPI_VER_TOO_HIGH);
        assert_eq!(v.version, ffi::LFS_ABI_VERSION);
        // SAFETY: as above.
        let hr = unsafe { LFSStartUp(0, &mut v) };
        assert_eq!(hr, ffi::LFS_ERR_SPI_VER_TOO_LOW);
        // SAFETY: a null pointer is refused before any write.
        let hr = unsafe { LFSStartUp(ffi::LFS_ABI_VERSION, std::ptr::null_mut()) };
        assert_eq!(hr, ffi::LFS_ERR_INVALID_POINTER);
        let local = LfsResult {
            message: 1,
            service: 1,
            request_id: 1,
            timestamp_ms: 0,
            result: 0,
            code: 0,
            buffer: std::ptr::null(),
            buffer_len: 0,
            reserved: 0,
        };
        assert_eq!(LFSFreeResult(&local), ffi::LFS_ERR_INVALID_RESULT);
        assert_eq!(
            LFSFreeResult(std::ptr::null()),
            ffi::LFS_ERR_INVALID_POINTER
        );
    }
}
