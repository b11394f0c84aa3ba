//! Owned Rust values of what crosses the ABI: commands the host sends, and completions and events
//! copied out of the SP's `LFSRESULT`s (so no SP memory is referenced after `LFSFreeResult`).

use std::ffi::c_void;
use std::mem::size_of;

use crate::ffi::{self, LfsHResult, LfsResult};

/// Longest byte string copied out of a result (a track, an ATR, an APDU): larger claims are
/// reported as [`Data::Malformed`] instead of being read.
pub const MAX_DATA_LEN: u32 = 64 * 1024;
/// Most card data items copied out of one `LFSIDCCARDDATALIST`.
pub const MAX_CARD_DATA_ITEMS: u32 = 16;

/// An IDC command with its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdcCommand {
    /// `LFS_CMD_IDC_READ_RAW_DATA`: waits for a card and reads `sources`
    /// (mask of `LFS_IDC_TRACK1/2/3`, `LFS_IDC_CHIP`).
    ReadRawData {
        /// Data sources to read.
        sources: u16,
    },
    /// `LFS_CMD_IDC_EJECT_CARD`.
    EjectCard,
    /// `LFS_CMD_IDC_RETAIN_CARD`.
    RetainCard,
    /// `LFS_CMD_IDC_RESET`: `LFS_IDC_NOACTION` / `EJECT` / `RETAIN`, or `None` for the SP's default.
    Reset {
        /// What to do with a card inside.
        action: Option<u16>,
    },
    /// `LFS_CMD_IDC_CHIP_IO`: one APDU to the chip.
    ChipIo {
        /// `LFS_IDC_CHIPT0` or `LFS_IDC_CHIPT1`.
        protocol: u16,
        /// The command APDU.
        apdu: Vec<u8>,
    },
}

impl IdcCommand {
    /// The command number.
    pub fn code(&self) -> u32 {
        match self {
            IdcCommand::ReadRawData { .. } => ffi::LFS_CMD_IDC_READ_RAW_DATA,
            IdcCommand::EjectCard => ffi::LFS_CMD_IDC_EJECT_CARD,
            IdcCommand::RetainCard => ffi::LFS_CMD_IDC_RETAIN_CARD,
            IdcCommand::Reset { .. } => ffi::LFS_CMD_IDC_RESET,
            IdcCommand::ChipIo { .. } => ffi::LFS_CMD_IDC_CHIP_IO,
        }
    }

    /// The header name, e.g. `LFS_CMD_IDC_READ_RAW_DATA`.
    pub fn name(&self) -> &'static str {
        match self {
            IdcCommand::ReadRawData { .. } => "LFS_CMD_IDC_READ_RAW_DATA",
            IdcCommand::EjectCard => "LFS_CMD_IDC_EJECT_CARD",
            IdcCommand::RetainCard => "LFS_CMD_IDC_RETAIN_CARD",
            IdcCommand::Reset { .. } => "LFS_CMD_IDC_RESET",
            IdcCommand::ChipIo { .. } => "LFS_CMD_IDC_CHIP_IO",
        }
    }
}

/// An IDC information category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdcInfo {
    /// `LFS_INF_IDC_STATUS` → [`Data::Status`].
    Status,
    /// `LFS_INF_IDC_CAPABILITIES` → [`Data::Capabilities`].
    Capabilities,
}

impl IdcInfo {
    /// The category number.
    pub fn code(self) -> u32 {
        match self {
            IdcInfo::Status => ffi::LFS_INF_IDC_STATUS,
            IdcInfo::Capabilities => ffi::LFS_INF_IDC_CAPABILITIES,
        }
    }
}

/// One data source read from a card (`LFSIDCCARDDATA`).
#[derive(Clone, PartialEq, Eq)]
pub struct CardData {
    /// `LFS_IDC_TRACK1` … `LFS_IDC_CHIP`.
    pub source: u16,
    /// `LFS_IDC_DATA*`.
    pub status: u16,
    /// The bytes (track characters or ATR).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for CardData {
    /// Never prints the data: tracks hold the card number.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardData")
            .field("source", &self.source)
            .field("status", &self.status)
            .field("len", &self.data.len())
            .finish()
    }
}

/// `LFSIDCSTATUS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdcStatus {
    /// `LFS_IDC_DEV*`.
    pub device: u16,
    /// `LFS_IDC_MEDIA*`.
    pub media: u16,
    /// `LFS_IDC_RETAINBIN*`.
    pub retain_bin: u16,
    /// `LFS_IDC_CHIP*`.
    pub chip_power: u16,
    /// Cards in the retain bin.
    pub cards: u32,
}

/// `LFSIDCCAPS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdcCaps {
    /// `LFS_SERVICE_CLASS_IDC`.
    pub dev_class: u16,
    /// `LFS_IDC_TYPE*`.
    pub kind: u16,
    /// Mask of `LFS_IDC_TRACK1/2/3`.
    pub read_tracks: u16,
    /// Mask of `LFS_IDC_CHIPT0/T1`.
    pub chip_protocols: u16,
    /// Retain bin capacity.
    pub cards: u32,
    /// Vendor name.
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Firmware version.
    pub firmware: String,
}

/// `LFSIDCRETAINCARD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainCard {
    /// Cards in the retain bin now.
    pub count: u32,
    /// `LFS_IDC_MEDIA*`.
    pub position: u16,
}

/// `LFSIDCCHIPIO` (output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipIo {
    /// `LFS_IDC_CHIPT0/T1`.
    pub protocol: u16,
    /// The response APDU.
    pub data: Vec<u8>,
}

/// `LFSIDCCARDACT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CardAction {
    /// `LFS_IDC_CARD*`.
    pub action: u16,
    /// `LFS_IDC_MEDIA*`.
    pub position: u16,
}

/// The decoded output buffer of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// No buffer.
    None,
    /// `LFS_CMD_IDC_READ_RAW_DATA`.
    CardData(Vec<CardData>),
    /// `LFS_CMD_IDC_RETAIN_CARD`.
    RetainCard(RetainCard),
    /// `LFS_CMD_IDC_CHIP_IO`.
    ChipIo(ChipIo),
    /// `LFS_INF_IDC_STATUS`.
    Status(IdcStatus),
    /// `LFS_INF_IDC_CAPABILITIES`.
    Capabilities(IdcCaps),
    /// `LFS_SRVE_IDC_CARDACTION`.
    CardAction(CardAction),
    /// `LFS_USRE_IDC_RETAINBINTHRESHOLD`: `LFS_IDC_RETAINBIN*`.
    RetainBinThreshold(u16),
    /// `LFS_SYSE_DEVICE_STATUS`: `LFS_IDC_DEV*`.
    DeviceStatus(u32),
    /// `LFS_EXEE_IDC_INVALIDTRACKDATA`.
    InvalidTrackData(CardData),
    /// A buffer of a command or event this crate does not decode.
    Other {
        /// Its size in bytes.
        len: u32,
    },
    /// The SP's buffer broke the ABI's rules (too small, null data with a length, too long…).
    Malformed(String),
}

/// Kinds of unsolicited and intermediate events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `LFS_EXECUTE_EVENT`: intermediate, tied to a request.
    Execute,
    /// `LFS_SERVICE_EVENT`.
    Service,
    /// `LFS_USER_EVENT`.
    User,
    /// `LFS_SYSTEM_EVENT`.
    System,
}

/// The completion of a request, copied out of its `LFSRESULT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The request.
    pub request_id: u64,
    /// `LFS_SUCCESS` or the error the request ended with.
    pub hresult: LfsHResult,
    /// The command or information category.
    pub code: u32,
    /// When, ms since the Unix epoch (0 = unknown).
    pub timestamp_ms: u64,
    /// The output.
    pub data: Data,
}

/// An event, copied out of its `LFSRESULT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Execute, service, user or system.
    pub kind: EventKind,
    /// The event id, e.g. `LFS_SRVE_IDC_MEDIAREMOVED`.
    pub id: u32,
    /// The request of an execute event; 0 otherwise.
    pub request_id: u64,
    /// The result code carried by the event (usually `LFS_SUCCESS`).
    pub hresult: LfsHResult,
    /// When, ms since the Unix epoch (0 = unknown).
    pub timestamp_ms: u64,
    /// The event's buffer.
    pub data: Data,
}

/// A result of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owned {
    Completion(Completion),
    Event(Event),
    /// A result with an unknown `message`: freed and dropped.
    Unknown,
}

/// Copies a result into owned values.
///
/// # Safety
///
/// `result` must point to a live `LFSRESULT` that the SP keeps valid (with everything it points
/// to, as the header describes for its message and code) until the caller frees it.
pub(crate) unsafe fn decode(result: *const LfsResult) -> Owned {
    // SAFETY: the caller guarantees `result` points to a live LFSRESULT; read_unaligned makes no
    // alignment assumption about the SP's allocation.
    let r = unsafe { result.read_unaligned() };
    let data = if r.buffer.is_null() {
        Data::None
    } else {
        // SAFETY: the caller guarantees the buffer is valid per the header for this message/code;
        // `decode_buffer` additionally checks `buffer_len` against each structure's size.
        unsafe { decode_buffer(r.message, r.code, r.buffer, r.buffer_len) }
            .unwrap_or_else(Data::Malformed)
    };
    let event = |kind| {
        Owned::Event(Event {
            kind,
            id: r.code,
            request_id: r.request_id,
            hresult: r.result,
            timestamp_ms: r.timestamp_ms,
            data: data.clone(),
        })
    };
    match r.message {
        ffi::LFS_EXECUTE_COMPLETE | ffi::LFS_GETINFO_COMPLETE => Owned::Completion(Completion {
            request_id: r.request_id,
            hresult: r.result,
            code: r.code,
            timestamp_ms: r.timestamp_ms,
            data,
        }),
        ffi::LFS_EXECUTE_EVENT => event(EventKind::Execute),
        ffi::LFS_SERVICE_EVENT => event(EventKind::Service),
        ffi::LFS_USER_EVENT => event(EventKind::User),
        ffi::LFS_SYSTEM_EVENT => event(EventKind::System),
        _ => Owned::Unknown,
    }
}

/// # Safety
///
/// `buffer` is non-null and points to `len` readable bytes holding the structure the header
/// names for `message`/`code`, whose own pointers are valid for their stated lengths.
unsafe fn decode_buffer(
    message: u32,
    code: u32,
    buffer: *const c_void,
    len: u32,
) -> Result<Data, String> {
    use ffi::*;
    // SAFETY: every call below forwards this function's contract; each helper checks the
    // stated length before reading.
    unsafe {
        Ok(match (message, code) {
            (LFS_EXECUTE_COMPLETE, LFS_CMD_IDC_READ_RAW_DATA) => {
                let list: LfsIdcCardDataList = read_struct(buffer, len, "LFSIDCCARDDATALIST")?;
                Data::CardData(card_data_list(&list)?)
            }
            (LFS_EXECUTE_COMPLETE, LFS_CMD_IDC_RETAIN_CARD) => {
                let r: LfsIdcRetainCard = read_struct(buffer, len, "LFSIDCRETAINCARD")?;
                Data::RetainCard(RetainCard {
                    count: r.count,
                    position: r.position,
                })
            }
            (LFS_EXECUTE_COMPLETE, LFS_CMD_IDC_CHIP_IO) => {
                let c: LfsIdcChipIo = read_struct(buffer, len, "LFSIDCCHIPIO")?;
                Data::ChipIo(ChipIo {
                    protocol: c.chip_protocol,
                    data: bytes(c.chip_data, c.chip_data_length)?,
                })
            }
            (LFS_GETINFO_COMPLETE, LFS_INF_IDC_STATUS) => {
                let s: LfsIdcStatus = read_struct(buffer, len, "LFSIDCSTATUS")?;
                Data::Status(IdcStatus {
                    device: s.device,
                    media: s.media,
                    retain_bin: s.retain_bin,
                    chip_power: s.chip_power,
                    cards: s.cards,
                })
            }
            (LFS_GETINFO_COMPLETE, LFS_INF_IDC_CAPABILITIES) => {
                let c: LfsIdcCaps = read_struct(buffer, len, "LFSIDCCAPS")?;
                Data::Capabilities(IdcCaps {
                    dev_class: c.dev_class,
                    kind: c.r#type,
                    read_tracks: c.read_tracks,
                    chip_protocols: c.chip_protocols,
                    cards: c.cards,
                    vendor: read_text(&c.vendor),
                    model: read_text(&c.model),
                    firmware: read_text(&c.firmware),
                })
            }
            (LFS_SERVICE_EVENT, LFS_SRVE_IDC_CARDACTION) => {
                let a: LfsIdcCardAct = read_struct(buffer, len, "LFSIDCCARDACT")?;
                Data::CardAction(CardAction {
                    action: a.action,
                    position: a.position,
                })
            }
            (LFS_USER_EVENT, LFS_USRE_IDC_RETAINBINTHRESHOLD) => {
                Data::RetainBinThreshold(read_struct::<u16>(buffer, len, "WORD")?)
            }
            (LFS_SYSTEM_EVENT, LFS_SYSE_DEVICE_STATUS) => {
                Data::DeviceStatus(read_struct::<LfsDevStatus>(buffer, len, "LFSDEVSTATUS")?.state)
            }
            (LFS_EXECUTE_EVENT, LFS_EXEE_IDC_INVALIDTRACKDATA) => {
                let d: LfsIdcCardData = read_struct(buffer, len, "LFSIDCCARDDATA")?;
                Data::InvalidTrackData(CardData {
                    source: d.data_source,
                    status: d.status,
                    data: bytes(d.data, d.data_length)?,
                })
            }
            _ => Data::Other { len },
        })
    }
}

/// # Safety
///
/// `buffer` is non-null and points to `len` readable bytes.
unsafe fn read_struct<T: Copy>(buffer: *const c_void, len: u32, name: &str) -> Result<T, String> {
    if (len as usize) < size_of::<T>() {
        return Err(format!(
            "{name} buffer is {len} bytes, expected at least {}",
            size_of::<T>()
        ));
    }
    // SAFETY: `len` readable bytes, checked to cover a T; T is plain old data (integers and raw
    // pointers) so any bit pattern is a valid value; read_unaligned needs no alignment.
    Ok(unsafe { buffer.cast::<T>().read_unaligned() })
}

/// # Safety
///
/// When `len > 0` and `ptr` is non-null, `ptr` points to `len` readable bytes.
unsafe fn bytes(ptr: *const u8, len: u32) -> Result<Vec<u8>, String> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(format!("null data pointer with a length of {len}"));
    }
    if len > MAX_DATA_LEN {
        return Err(format!(
            "data of {len} bytes exceeds the limit of {MAX_DATA_LEN}"
        ));
    }
    // SAFETY: non-null, `len` readable bytes by the caller's contract, u8 has alignment 1, and
    // len ≤ 64 KiB is far below isize::MAX. The slice is copied before the function returns.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len as usize) }.to_vec())
}

/// # Safety
///
/// `list.items` points to `list.count` readable `LFSIDCCARDDATA`s whose data pointers are valid.
unsafe fn card_data_list(list: &ffi::LfsIdcCardDataList) -> Result<Vec<CardData>, String> {
    if list.count == 0 {
        return Ok(Vec::new());
    }
    if list.items.is_null() {
        return Err(format!("null items pointer with a count of {}", list.count));
    }
    if list.count > MAX_CARD_DATA_ITEMS {
        return Err(format!(
            "{} card data items exceed the limit of {MAX_CARD_DATA_ITEMS}",
            list.count
        ));
    }
    (0..list.count as usize)
        .map(|i| {
            // SAFETY: i < count and the caller guarantees `count` readable items.
            let d = unsafe { list.items.add(i).read_unaligned() };
            // SAFETY: the item's data pointer is valid for its length per the caller's contract.
            let data = unsafe { bytes(d.data, d.data_length) }?;
            Ok(CardData {
                source: d.data_source,
                status: d.status,
                data,
            })
        })
        .collect()
}

/// The header name of an error number, e.g. `LFS_ERR_IDC_MEDIAJAM` for -200.
pub fn error_name(hresult: LfsHResult) -> Option<&'static str> {
    use ffi::*;
    Some(match hresult {
        LFS_SUCCESS => "LFS_SUCCESS",
        LFS_ERR_ALREADY_STARTED => "LFS_ERR_ALREADY_STARTED",
        LFS_ERR_CANCELED => "LFS_ERR_CANCELED",
        LFS_ERR_DEV_NOT_READY => "LFS_ERR_DEV_NOT_READY",
        LFS_ERR_HARDWARE_ERROR => "LFS_ERR_HARDWARE_ERROR",
        LFS_ERR_INTERNAL_ERROR => "LFS_ERR_INTERNAL_ERROR",
        LFS_ERR_INVALID_CATEGORY => "LFS_ERR_INVALID_CATEGORY",
        LFS_ERR_INVALID_COMMAND => "LFS_ERR_INVALID_COMMAND",
        LFS_ERR_INVALID_EVENT_CLASS => "LFS_ERR_INVALID_EVENT_CLASS",
        LFS_ERR_INVALID_HSERVICE => "LFS_ERR_INVALID_HSERVICE",
        LFS_ERR_INVALID_POINTER => "LFS_ERR_INVALID_POINTER",
        LFS_ERR_INVALID_REQ_ID => "LFS_ERR_INVALID_REQ_ID",
        LFS_ERR_INVALID_RESULT => "LFS_ERR_INVALID_RESULT",
        LFS_ERR_NOT_STARTED => "LFS_ERR_NOT_STARTED",
        LFS_ERR_OUT_OF_MEMORY => "LFS_ERR_OUT_OF_MEMORY",
        LFS_ERR_SERVICE_NOT_FOUND => "LFS_ERR_SERVICE_NOT_FOUND",
        LFS_ERR_SPI_VER_TOO_HIGH => "LFS_ERR_SPI_VER_TOO_HIGH",
        LFS_ERR_SPI_VER_TOO_LOW => "LFS_ERR_SPI_VER_TOO_LOW",
        LFS_ERR_TIMEOUT => "LFS_ERR_TIMEOUT",
        LFS_ERR_UNSUPP_CATEGORY => "LFS_ERR_UNSUPP_CATEGORY",
        LFS_ERR_UNSUPP_COMMAND => "LFS_ERR_UNSUPP_COMMAND",
        LFS_ERR_INVALID_DATA => "LFS_ERR_INVALID_DATA",
        LFS_ERR_SOFTWARE_ERROR => "LFS_ERR_SOFTWARE_ERROR",
        LFS_ERR_CONNECTION_LOST => "LFS_ERR_CONNECTION_LOST",
        LFS_ERR_USER_ERROR => "LFS_ERR_USER_ERROR",
        LFS_ERR_UNSUPP_DATA => "LFS_ERR_UNSUPP_DATA",
        LFS_ERR_IDC_MEDIAJAM => "LFS_ERR_IDC_MEDIAJAM",
        LFS_ERR_IDC_NOMEDIA => "LFS_ERR_IDC_NOMEDIA",
        LFS_ERR_IDC_MEDIARETAINED => "LFS_ERR_IDC_MEDIARETAINED",
        LFS_ERR_IDC_RETAINBINFULL => "LFS_ERR_IDC_RETAINBINFULL",
        LFS_ERR_IDC_INVALIDDATA => "LFS_ERR_IDC_INVALIDDATA",
        LFS_ERR_IDC_INVALIDMEDIA => "LFS_ERR_IDC_INVALIDMEDIA",
        LFS_ERR_IDC_SHUTTERFAIL => "LFS_ERR_IDC_SHUTTERFAIL",
        LFS_ERR_IDC_SECURITYFAIL => "LFS_ERR_IDC_SECURITYFAIL",
        LFS_ERR_IDC_PROTOCOLNOTSUPP => "LFS_ERR_IDC_PROTOCOLNOTSUPP",
        LFS_ERR_IDC_ATRNOTOBTAINED => "LFS_ERR_IDC_ATRNOTOBTAINED",
        LFS_ERR_IDC_INVALIDKEY => "LFS_ERR_IDC_INVALIDKEY",
        LFS_ERR_IDC_CHIPPOWERNOTSUPP => "LFS_ERR_IDC_CHIPPOWERNOTSUPP",
        LFS_ERR_IDC_CARDTOOSHORT => "LFS_ERR_IDC_CARDTOOSHORT",
        LFS_ERR_IDC_CARDTOOLONG => "LFS_ERR_IDC_CARDTOOLONG",
        _ => return None,
    })
}

/// `LFS_ERR_CANCELED (-4)`, or `-999 (not an LFS error number)`.
pub fn describe(hresult: LfsHResult) -> String {
    match error_name(hresult) {
        Some(name) => format!("{name} ({hresult})"),
        None => format!("{hresult} (not an LFS error number)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    fn result(message: u32, code: u32, buffer: *const c_void, buffer_len: u32) -> LfsResult {
        LfsResult {
            message,
            service: 1,
            request_id: 7,
            timestamp_ms: 0,
            result: 0,
            code,
            buffer,
            buffer_len,
            reserved: 0,
        }
    }

    #[test]
    fn decodes_card_data_and_refuses_bad_buffers() {
        let track = b"6222020200112233445=49121010000000000000".to_vec();
        let items = [ffi::LfsIdcCardData {
            data_source: ffi::LFS_IDC_TRACK2,
            status: ffi::LFS_IDC_DATAOK,
            data_length: track.len() as u32,
            data: track.as_ptr(),
        }];
        let list = ffi::LfsIdcCardDataList {
            count: 1,
            reserved: 0,
            items: items.as_ptr(),
        };
        let ptr_list = ptr::from_ref(&list).cast::<c_void>();
        let r = result(
            ffi::LFS_EXECUTE_COMPLETE,
            ffi::LFS_CMD_IDC_READ_RAW_DATA,
            ptr_list,
            size_of_val(&list) as u32,
        );
        // SAFETY: every pointer refers to a live local above.
        let Owned::Completion(c) = (unsafe { decode(&r) }) else {
            panic!("not a completion")
        };
        assert_eq!(c.request_id, 7);
        assert_eq!(
            c.data,
            Data::CardData(vec![CardData {
                source: 2,
                status: 0,
                data: track.clone()
            }])
        );
        // Debug output never shows the track.
        assert!(!format!("{c:?}").contains("6222"));

        let short = result(
            ffi::LFS_EXECUTE_COMPLETE,
            ffi::LFS_CMD_IDC_READ_RAW_DATA,
            ptr_list,
            4,
        );
        // SAFETY: as above; the stated length is smaller than the buffer.
        let Owned::Completion(c) = (unsafe { decode(&short) }) else {
            panic!()
        };
        assert!(matches!(c.data, Data::Malformed(m) if m.contains("LFSIDCCARDDATALIST")));

        let null_items = ffi::LfsIdcCardDataList {
            count: 3,
            reserved: 0,
            items: ptr::null(),
        };
        let r = result(
            ffi::LFS_EXECUTE_COMPLETE,
            ffi::LFS_CMD_IDC_READ_RAW_DATA,
            ptr::from_ref(&null_items).cast(),
            size_of_val(&null_items) as u32,
        );
        // SAFETY: as above.
        let Owned::Completion(c) = (unsafe { decode(&r) }) else {
            panic!()
        };
        assert!(matches!(c.data, Data::Malformed(m) if m.contains("null items")));
    }

    #[test]
    fn decodes_events_and_unknown_messages() {
        let act = ffi::LfsIdcCardAct {
            action: ffi::LFS_IDC_CARDRETAINED,
            position: ffi::LFS_IDC_MEDIAPRESENT,
        };
        let r = result(
            ffi::LFS_SERVICE_EVENT,
            ffi::LFS_SRVE_IDC_CARDACTION,
            ptr::from_ref(&act).cast(),
            4,
        );
        // SAFETY: points to a live local.
        let Owned::Event(e) = (unsafe { decode(&r) }) else {
            panic!()
        };
        assert_eq!(e.kind, EventKind::Service);
        assert_eq!(
            e.data,
            Data::CardAction(CardAction {
                action: 1,
                position: 1
            })
        );
        let r = result(99, 0, ptr::null(), 0);
        // SAFETY: no buffer.
        assert_eq!(unsafe { decode(&r) }, Owned::Unknown);
    }

    #[test]
    fn names_errors() {
        assert_eq!(describe(-200), "LFS_ERR_IDC_MEDIAJAM (-200)");
        assert_eq!(describe(-4), "LFS_ERR_CANCELED (-4)");
        assert_eq!(describe(-999), "-999 (not an LFS error number)");
    }
}
