//! `#[repr(C)]` mirrors of `include/openteller_lfs.h`: constants, structures and the function
//! types of the SPI. Names of constants are those of the header; structures are spelled in Rust
//! case (`LfsResult` is `LFSRESULT`). The layouts are checked against a C compiler by
//! `tests/c_header.rs`.

use std::ffi::{c_char, c_void};

/// `LFSHRESULT`: `LFS_SUCCESS` or a negative `LFS_ERR_*`.
pub type LfsHResult = i32;
/// `LFSHSERVICE`: a session handle chosen by the SP; never 0.
pub type LfsHService = u32;
/// `LFSREQUESTID`: chosen by the host, non-zero, unique among its open requests.
pub type LfsRequestId = u64;

/// `LFS_MAKE_VERSION(major, minor)`.
pub const fn lfs_make_version(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}
/// `LFS_ABI_VERSION_MAJOR`.
pub const LFS_ABI_VERSION_MAJOR: u16 = 1;
/// `LFS_ABI_VERSION_MINOR`.
pub const LFS_ABI_VERSION_MINOR: u16 = 0;
/// `LFS_ABI_VERSION`: the version this crate implements.
pub const LFS_ABI_VERSION: u32 = lfs_make_version(LFS_ABI_VERSION_MAJOR, LFS_ABI_VERSION_MINOR);
/// `LFS_DESCRIPTION_LEN`.
pub const LFS_DESCRIPTION_LEN: usize = 256;
/// `LFS_INDEFINITE_WAIT`: no time limit.
pub const LFS_INDEFINITE_WAIT: u32 = 0;

/// `LFSVERSION`: filled by the SP in `LFSStartUp`.
#[doc(alias = "LFSVERSION")]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LfsVersion {
    /// The ABI version the SP uses with this host.
    pub version: u32,
    /// The lowest ABI version the SP supports.
    pub low_version: u32,
    /// The highest ABI version the SP supports.
    pub high_version: u32,
    /// NUL-terminated description, e.g. "ACME IDC SP 4.2".
    pub description: [c_char; LFS_DESCRIPTION_LEN + 1],
}

impl LfsVersion {
    /// All zero.
    pub const fn zeroed() -> Self {
        LfsVersion {
            version: 0,
            low_version: 0,
            high_version: 0,
            description: [0; LFS_DESCRIPTION_LEN + 1],
        }
    }
}

/// `LFSRESULT.message`: the completion of `LFSAsyncExecute`.
pub const LFS_EXECUTE_COMPLETE: u32 = 1;
/// `LFSRESULT.message`: the completion of `LFSAsyncGetInfo`.
pub const LFS_GETINFO_COMPLETE: u32 = 2;
/// `LFSRESULT.message`: an intermediate event of a running request.
pub const LFS_EXECUTE_EVENT: u32 = 3;
/// `LFSRESULT.message`: an unsolicited service event.
pub const LFS_SERVICE_EVENT: u32 = 4;
/// `LFSRESULT.message`: an event needing operator attention.
pub const LFS_USER_EVENT: u32 = 5;
/// `LFSRESULT.message`: a system event.
pub const LFS_SYSTEM_EVENT: u32 = 6;

/// `LFSRegister` class: service events.
pub const LFS_SERVICE_EVENTS: u32 = 0x0001;
/// `LFSRegister` class: user events.
pub const LFS_USER_EVENTS: u32 = 0x0002;
/// `LFSRegister` class: system events.
pub const LFS_SYSTEM_EVENTS: u32 = 0x0004;
/// `LFSRegister` class: execute events (always delivered; accepted for XFS compatibility).
pub const LFS_EXECUTE_EVENTS: u32 = 0x0008;

/// `LFSRESULT`: one completion or event, owned by the SP until `LFSFreeResult`.
#[doc(alias = "LFSRESULT")]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LfsResult {
    /// `LFS_EXECUTE_COMPLETE` … `LFS_SYSTEM_EVENT`.
    pub message: u32,
    /// The session it belongs to.
    pub service: LfsHService,
    /// The request it belongs to; 0 for unsolicited events.
    pub request_id: LfsRequestId,
    /// When it happened, ms since the Unix epoch (0 = unknown).
    pub timestamp_ms: u64,
    /// `hResult`.
    pub result: LfsHResult,
    /// The command, information category or event id.
    pub code: u32,
    /// The output structure for `code`, or null.
    pub buffer: *const c_void,
    /// Size in bytes of `*buffer`.
    pub buffer_len: u32,
    /// 0.
    pub reserved: u32,
}

/// `LFSCOMPLETIONPROC`; `None` is a null pointer.
pub type LfsCompletionProc =
    Option<unsafe extern "C" fn(result: *const LfsResult, user: *mut c_void)>;
/// `LFSEVENTPROC`; `None` is a null pointer.
pub type LfsEventProc = Option<unsafe extern "C" fn(result: *const LfsResult, user: *mut c_void)>;

/// `LFSSTARTUPPROC`.
pub type LfsStartUpFn =
    unsafe extern "C" fn(abi_version: u32, version: *mut LfsVersion) -> LfsHResult;
/// `LFSCLEANUPPROC`.
pub type LfsCleanUpFn = unsafe extern "C" fn() -> LfsHResult;
/// `LFSOPENPROC`.
pub type LfsOpenFn = unsafe extern "C" fn(
    logical_name: *const c_char,
    on_complete: LfsCompletionProc,
    on_event: LfsEventProc,
    user: *mut c_void,
    service: *mut LfsHService,
) -> LfsHResult;
/// `LFSREGISTERPROC`.
pub type LfsRegisterFn =
    unsafe extern "C" fn(service: LfsHService, event_classes: u32) -> LfsHResult;
/// `LFSASYNCEXECUTEPROC`.
pub type LfsAsyncExecuteFn = unsafe extern "C" fn(
    service: LfsHService,
    command: u32,
    cmd_data: *const c_void,
    cmd_data_len: u32,
    timeout_ms: u32,
    request_id: LfsRequestId,
) -> LfsHResult;
/// `LFSASYNCGETINFOPROC`.
pub type LfsAsyncGetInfoFn = unsafe extern "C" fn(
    service: LfsHService,
    category: u32,
    query: *const c_void,
    query_len: u32,
    timeout_ms: u32,
    request_id: LfsRequestId,
) -> LfsHResult;
/// `LFSCANCELASYNCREQUESTPROC`.
pub type LfsCancelAsyncRequestFn =
    unsafe extern "C" fn(service: LfsHService, request_id: LfsRequestId) -> LfsHResult;
/// `LFSCLOSEPROC`.
pub type LfsCloseFn = unsafe extern "C" fn(service: LfsHService) -> LfsHResult;
/// `LFSFREERESULTPROC`.
pub type LfsFreeResultFn = unsafe extern "C" fn(result: *const LfsResult) -> LfsHResult;

/// The exported names of the SPI, NUL-terminated, in the order a host resolves them.
pub mod symbols {
    /// `LFSStartUp`.
    pub const STARTUP: &[u8] = b"LFSStartUp\0";
    /// `LFSCleanUp`.
    pub const CLEANUP: &[u8] = b"LFSCleanUp\0";
    /// `LFSOpen`.
    pub const OPEN: &[u8] = b"LFSOpen\0";
    /// `LFSRegister`.
    pub const REGISTER: &[u8] = b"LFSRegister\0";
    /// `LFSAsyncExecute`.
    pub const ASYNC_EXECUTE: &[u8] = b"LFSAsyncExecute\0";
    /// `LFSAsyncGetInfo`.
    pub const ASYNC_GET_INFO: &[u8] = b"LFSAsyncGetInfo\0";
    /// `LFSCancelAsyncRequest`.
    pub const CANCEL_ASYNC_REQUEST: &[u8] = b"LFSCancelAsyncRequest\0";
    /// `LFSClose`.
    pub const CLOSE: &[u8] = b"LFSClose\0";
    /// `LFSFreeResult`.
    pub const FREE_RESULT: &[u8] = b"LFSFreeResult\0";
}

// ----- Generic errors (XFSAPI.H) -----------------------------------------------------------

/// `LFS_SUCCESS`.
pub const LFS_SUCCESS: LfsHResult = 0;
/// `LFS_ERR_ALREADY_STARTED`.
pub const LFS_ERR_ALREADY_STARTED: LfsHResult = -1;
/// `LFS_ERR_CANCELED`.
pub const LFS_ERR_CANCELED: LfsHResult = -4;
/// `LFS_ERR_DEV_NOT_READY`.
pub const LFS_ERR_DEV_NOT_READY: LfsHResult = -13;
/// `LFS_ERR_HARDWARE_ERROR`.
pub const LFS_ERR_HARDWARE_ERROR: LfsHResult = -14;
/// `LFS_ERR_INTERNAL_ERROR`.
pub const LFS_ERR_INTERNAL_ERROR: LfsHResult = -15;
/// `LFS_ERR_INVALID_CATEGORY`.
pub const LFS_ERR_INVALID_CATEGORY: LfsHResult = -19;
/// `LFS_ERR_INVALID_COMMAND`.
pub const LFS_ERR_INVALID_COMMAND: LfsHResult = -20;
/// `LFS_ERR_INVALID_EVENT_CLASS`.
pub const LFS_ERR_INVALID_EVENT_CLASS: LfsHResult = -21;
/// `LFS_ERR_INVALID_HSERVICE`.
pub const LFS_ERR_INVALID_HSERVICE: LfsHResult = -22;
/// `LFS_ERR_INVALID_POINTER`.
pub const LFS_ERR_INVALID_POINTER: LfsHResult = -26;
/// `LFS_ERR_INVALID_REQ_ID`.
pub const LFS_ERR_INVALID_REQ_ID: LfsHResult = -27;
/// `LFS_ERR_INVALID_RESULT`.
pub const LFS_ERR_INVALID_RESULT: LfsHResult = -28;
/// `LFS_ERR_NOT_STARTED`.
pub const LFS_ERR_NOT_STARTED: LfsHResult = -39;
/// `LFS_ERR_OUT_OF_MEMORY`.
pub const LFS_ERR_OUT_OF_MEMORY: LfsHResult = -42;
/// `LFS_ERR_SERVICE_NOT_FOUND`.
pub const LFS_ERR_SERVICE_NOT_FOUND: LfsHResult = -43;
/// `LFS_ERR_SPI_VER_TOO_HIGH`.
pub const LFS_ERR_SPI_VER_TOO_HIGH: LfsHResult = -44;
/// `LFS_ERR_SPI_VER_TOO_LOW`.
pub const LFS_ERR_SPI_VER_TOO_LOW: LfsHResult = -45;
/// `LFS_ERR_TIMEOUT`.
pub const LFS_ERR_TIMEOUT: LfsHResult = -48;
/// `LFS_ERR_UNSUPP_CATEGORY`.
pub const LFS_ERR_UNSUPP_CATEGORY: LfsHResult = -49;
/// `LFS_ERR_UNSUPP_COMMAND`.
pub const LFS_ERR_UNSUPP_COMMAND: LfsHResult = -50;
/// `LFS_ERR_INVALID_DATA`.
pub const LFS_ERR_INVALID_DATA: LfsHResult = -52;
/// `LFS_ERR_SOFTWARE_ERROR`.
pub const LFS_ERR_SOFTWARE_ERROR: LfsHResult = -53;
/// `LFS_ERR_CONNECTION_LOST`.
pub const LFS_ERR_CONNECTION_LOST: LfsHResult = -54;
/// `LFS_ERR_USER_ERROR`.
pub const LFS_ERR_USER_ERROR: LfsHResult = -55;
/// `LFS_ERR_UNSUPP_DATA`.
pub const LFS_ERR_UNSUPP_DATA: LfsHResult = -56;

/// `LFS_SYSE_DEVICE_STATUS`: buffer `LfsDevStatus`.
pub const LFS_SYSE_DEVICE_STATUS: u32 = 4;

/// `LFSDEVSTATUS`.
#[doc(alias = "LFSDEVSTATUS")]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LfsDevStatus {
    /// `LFS_IDC_DEV*`.
    pub state: u32,
}

// ----- IDC (XFSIDC.H, offset 200) ------------------------------------------------------------

/// `LFS_SERVICE_CLASS_IDC`.
pub const LFS_SERVICE_CLASS_IDC: u16 = 2;
/// `IDC_SERVICE_OFFSET`.
pub const IDC_SERVICE_OFFSET: u32 = 200;

/// `LFS_INF_IDC_STATUS`: buffer `LfsIdcStatus`.
pub const LFS_INF_IDC_STATUS: u32 = 201;
/// `LFS_INF_IDC_CAPABILITIES`: buffer `LfsIdcCaps`.
pub const LFS_INF_IDC_CAPABILITIES: u32 = 202;

/// `LFS_CMD_IDC_EJECT_CARD`: in NULL, out NULL.
pub const LFS_CMD_IDC_EJECT_CARD: u32 = 203;
/// `LFS_CMD_IDC_RETAIN_CARD`: in NULL, out `LfsIdcRetainCard`.
pub const LFS_CMD_IDC_RETAIN_CARD: u32 = 204;
/// `LFS_CMD_IDC_READ_RAW_DATA`: in `u16` sources, out `LfsIdcCardDataList`.
pub const LFS_CMD_IDC_READ_RAW_DATA: u32 = 207;
/// `LFS_CMD_IDC_CHIP_IO`: in and out `LfsIdcChipIo`.
pub const LFS_CMD_IDC_CHIP_IO: u32 = 209;
/// `LFS_CMD_IDC_RESET`: in `u16` action or NULL, out NULL.
pub const LFS_CMD_IDC_RESET: u32 = 210;

/// `LFS_EXEE_IDC_INVALIDTRACKDATA` (execute event; buffer `LfsIdcCardData`).
pub const LFS_EXEE_IDC_INVALIDTRACKDATA: u32 = 201;
/// `LFS_EXEE_IDC_MEDIAINSERTED` (execute event).
pub const LFS_EXEE_IDC_MEDIAINSERTED: u32 = 203;
/// `LFS_SRVE_IDC_MEDIAREMOVED` (service event).
pub const LFS_SRVE_IDC_MEDIAREMOVED: u32 = 204;
/// `LFS_SRVE_IDC_CARDACTION` (service event; buffer `LfsIdcCardAct`).
pub const LFS_SRVE_IDC_CARDACTION: u32 = 205;
/// `LFS_USRE_IDC_RETAINBINTHRESHOLD` (user event; buffer `u16`).
pub const LFS_USRE_IDC_RETAINBINTHRESHOLD: u32 = 206;
/// `LFS_EXEE_IDC_INVALIDMEDIA` (execute event).
pub const LFS_EXEE_IDC_INVALIDMEDIA: u32 = 207;
/// `LFS_EXEE_IDC_MEDIARETAINED` (execute event).
pub const LFS_EXEE_IDC_MEDIARETAINED: u32 = 208;
/// `LFS_SRVE_IDC_MEDIADETECTED` (service event).
pub const LFS_SRVE_IDC_MEDIADETECTED: u32 = 209;

/// `LFS_ERR_IDC_MEDIAJAM`.
pub const LFS_ERR_IDC_MEDIAJAM: LfsHResult = -200;
/// `LFS_ERR_IDC_NOMEDIA`.
pub const LFS_ERR_IDC_NOMEDIA: LfsHResult = -201;
/// `LFS_ERR_IDC_MEDIARETAINED`.
pub const LFS_ERR_IDC_MEDIARETAINED: LfsHResult = -202;
/// `LFS_ERR_IDC_RETAINBINFULL`.
pub const LFS_ERR_IDC_RETAINBINFULL: LfsHResult = -203;
/// `LFS_ERR_IDC_INVALIDDATA`.
pub const LFS_ERR_IDC_INVALIDDATA: LfsHResult = -204;
/// `LFS_ERR_IDC_INVALIDMEDIA`.
pub const LFS_ERR_IDC_INVALIDMEDIA: LfsHResult = -205;
/// `LFS_ERR_IDC_SHUTTERFAIL`.
pub const LFS_ERR_IDC_SHUTTERFAIL: LfsHResult = -209;
/// `LFS_ERR_IDC_SECURITYFAIL`.
pub const LFS_ERR_IDC_SECURITYFAIL: LfsHResult = -210;
/// `LFS_ERR_IDC_PROTOCOLNOTSUPP`.
pub const LFS_ERR_IDC_PROTOCOLNOTSUPP: LfsHResult = -211;
/// `LFS_ERR_IDC_ATRNOTOBTAINED`.
pub const LFS_ERR_IDC_ATRNOTOBTAINED: LfsHResult = -212;
/// `LFS_ERR_IDC_INVALIDKEY`.
pub const LFS_ERR_IDC_INVALIDKEY: LfsHResult = -213;
/// `LFS_ERR_IDC_CHIPPOWERNOTSUPP`.
pub const LFS_ERR_IDC_CHIPPOWERNOTSUPP: LfsHResult = -215;
/// `LFS_ERR_IDC_CARDTOOSHORT`.
pub const LFS_ERR_IDC_CARDTOOSHORT: LfsHResult = -216;
/// `LFS_ERR_IDC_CARDTOOLONG`.
pub const LFS_ERR_IDC_CARDTOOLONG: LfsHResult = -217;

/// `LFS_IDC_DEVONLINE`.
pub const LFS_IDC_DEVONLINE: u16 = 0;
/// `LFS_IDC_DEVOFFLINE`.
pub const LFS_IDC_DEVOFFLINE: u16 = 1;
/// `LFS_IDC_DEVPOWEROFF`.
pub const LFS_IDC_DEVPOWEROFF: u16 = 2;
/// `LFS_IDC_DEVNODEVICE`.
pub const LFS_IDC_DEVNODEVICE: u16 = 3;
/// `LFS_IDC_DEVHWERROR`.
pub const LFS_IDC_DEVHWERROR: u16 = 4;
/// `LFS_IDC_DEVUSERERROR`.
pub const LFS_IDC_DEVUSERERROR: u16 = 5;
/// `LFS_IDC_DEVBUSY`.
pub const LFS_IDC_DEVBUSY: u16 = 6;

/// `LFS_IDC_MEDIAPRESENT`.
pub const LFS_IDC_MEDIAPRESENT: u16 = 1;
/// `LFS_IDC_MEDIANOTPRESENT`.
pub const LFS_IDC_MEDIANOTPRESENT: u16 = 2;
/// `LFS_IDC_MEDIAJAMMED`.
pub const LFS_IDC_MEDIAJAMMED: u16 = 3;
/// `LFS_IDC_MEDIANOTSUPP`.
pub const LFS_IDC_MEDIANOTSUPP: u16 = 4;
/// `LFS_IDC_MEDIAUNKNOWN`.
pub const LFS_IDC_MEDIAUNKNOWN: u16 = 5;
/// `LFS_IDC_MEDIAENTERING`: at the exit slot, ready to be taken.
pub const LFS_IDC_MEDIAENTERING: u16 = 6;
/// `LFS_IDC_MEDIALATCHED`.
pub const LFS_IDC_MEDIALATCHED: u16 = 7;

/// `LFS_IDC_RETAINBINOK`.
pub const LFS_IDC_RETAINBINOK: u16 = 1;
/// `LFS_IDC_RETAINNOTSUPP`.
pub const LFS_IDC_RETAINNOTSUPP: u16 = 2;
/// `LFS_IDC_RETAINBINFULL`.
pub const LFS_IDC_RETAINBINFULL: u16 = 3;
/// `LFS_IDC_RETAINBINHIGH`.
pub const LFS_IDC_RETAINBINHIGH: u16 = 4;
/// `LFS_IDC_RETAINBINMISSING`.
pub const LFS_IDC_RETAINBINMISSING: u16 = 5;

/// `LFS_IDC_CHIPONLINE`.
pub const LFS_IDC_CHIPONLINE: u16 = 0;
/// `LFS_IDC_CHIPPOWEREDOFF`.
pub const LFS_IDC_CHIPPOWEREDOFF: u16 = 1;
/// `LFS_IDC_CHIPBUSY`.
pub const LFS_IDC_CHIPBUSY: u16 = 2;
/// `LFS_IDC_CHIPNODEVICE`.
pub const LFS_IDC_CHIPNODEVICE: u16 = 3;
/// `LFS_IDC_CHIPHWERROR`.
pub const LFS_IDC_CHIPHWERROR: u16 = 4;
/// `LFS_IDC_CHIPNOCARD`.
pub const LFS_IDC_CHIPNOCARD: u16 = 5;
/// `LFS_IDC_CHIPNOTSUPP`.
pub const LFS_IDC_CHIPNOTSUPP: u16 = 6;
/// `LFS_IDC_CHIPUNKNOWN`.
pub const LFS_IDC_CHIPUNKNOWN: u16 = 7;

/// `LFS_IDC_TYPEMOTOR`.
pub const LFS_IDC_TYPEMOTOR: u16 = 1;
/// `LFS_IDC_TYPESWIPE`.
pub const LFS_IDC_TYPESWIPE: u16 = 2;
/// `LFS_IDC_TYPEDIP`.
pub const LFS_IDC_TYPEDIP: u16 = 3;
/// `LFS_IDC_TYPECONTACTLESS`.
pub const LFS_IDC_TYPECONTACTLESS: u16 = 4;
/// `LFS_IDC_TYPELATCHEDDIP`.
pub const LFS_IDC_TYPELATCHEDDIP: u16 = 5;
/// `LFS_IDC_TYPEPERMANENT`.
pub const LFS_IDC_TYPEPERMANENT: u16 = 6;

/// `LFS_IDC_TRACK1`.
pub const LFS_IDC_TRACK1: u16 = 0x0001;
/// `LFS_IDC_TRACK2`.
pub const LFS_IDC_TRACK2: u16 = 0x0002;
/// `LFS_IDC_TRACK3`.
pub const LFS_IDC_TRACK3: u16 = 0x0004;
/// `LFS_IDC_CHIP`: the chip's answer-to-reset.
pub const LFS_IDC_CHIP: u16 = 0x0008;

/// `LFS_IDC_DATAOK`.
pub const LFS_IDC_DATAOK: u16 = 0;
/// `LFS_IDC_DATAMISSING`.
pub const LFS_IDC_DATAMISSING: u16 = 1;
/// `LFS_IDC_DATAINVALID`.
pub const LFS_IDC_DATAINVALID: u16 = 2;
/// `LFS_IDC_DATATOOLONG`.
pub const LFS_IDC_DATATOOLONG: u16 = 3;
/// `LFS_IDC_DATATOOSHORT`.
pub const LFS_IDC_DATATOOSHORT: u16 = 4;
/// `LFS_IDC_DATASRCNOTSUPP`.
pub const LFS_IDC_DATASRCNOTSUPP: u16 = 5;
/// `LFS_IDC_DATASRCMISSING`.
pub const LFS_IDC_DATASRCMISSING: u16 = 6;

/// `LFS_IDC_NOACTION` (reset input).
pub const LFS_IDC_NOACTION: u16 = 1;
/// `LFS_IDC_EJECT` (reset input).
pub const LFS_IDC_EJECT: u16 = 2;
/// `LFS_IDC_RETAIN` (reset input).
pub const LFS_IDC_RETAIN: u16 = 3;

/// `LFS_IDC_CARDRETAINED`.
pub const LFS_IDC_CARDRETAINED: u16 = 1;
/// `LFS_IDC_CARDEJECTED`.
pub const LFS_IDC_CARDEJECTED: u16 = 2;
/// `LFS_IDC_CARDREADPOSITION`.
pub const LFS_IDC_CARDREADPOSITION: u16 = 3;
/// `LFS_IDC_CARDJAMMED`.
pub const LFS_IDC_CARDJAMMED: u16 = 4;

/// `LFS_IDC_CHIPT0`.
pub const LFS_IDC_CHIPT0: u16 = 0x0001;
/// `LFS_IDC_CHIPT1`.
pub const LFS_IDC_CHIPT1: u16 = 0x0002;

/// `LFS_IDC_TEXT_LEN`: the longest vendor/model/firmware text, without its NUL.
pub const LFS_IDC_TEXT_LEN: usize = 63;

/// `LFSIDCCARDDATA`: one data source read from a card.
#[doc(alias = "LFSIDCCARDDATA")]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LfsIdcCardData {
    /// One `LFS_IDC_TRACK1` / `TRACK2` / `TRACK3` / `CHIP`.
    pub data_source: u16,
    /// `LFS_IDC_DATA*`.
    pub status: u16,
    /// Bytes at `data`.
    pub data_length: u32,
    /// Null when `data_length` is 0.
    pub data: *const u8,
}

/// `LFSIDCCARDDATALIST`: output of `LFS_CMD_IDC_READ_RAW_DATA`.
#[doc(alias = "LFSIDCCARDDATALIST")]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LfsIdcCardDataList {
    /// Number of items.
    pub count: u32,
    /// 0.
    pub reserved: u32,
    /// `count` items; null when `count` is 0.
    pub items: *const LfsIdcCardData,
}

/// `LFSIDCSTATUS`: output of `LFS_INF_IDC_STATUS`.
#[doc(alias = "LFSIDCSTATUS")]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LfsIdcStatus {
    /// `LFS_IDC_DEV*`.
    pub device: u16,
    /// `LFS_IDC_MEDIA*`.
    pub media: u16,
    /// `LFS_IDC_RETAINBIN*` / `LFS_IDC_RETAINNOTSUPP`.
    pub retain_bin: u16,
    /// `LFS_IDC_CHIP*`.
    pub chip_power: u16,
    /// Cards in the retain bin.
    pub cards: u32,
    /// 0.
    pub reserved: u32,
}

/// `LFSIDCCAPS`: output of `LFS_INF_IDC_CAPABILITIES`.
#[doc(alias = "LFSIDCCAPS")]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LfsIdcCaps {
    /// `LFS_SERVICE_CLASS_IDC`.
    pub dev_class: u16,
    /// `LFS_IDC_TYPE*`.
    pub r#type: u16,
    /// Mask of `LFS_IDC_TRACK1/2/3`.
    pub read_tracks: u16,
    /// Mask of `LFS_IDC_CHIPT0/T1`; 0: no chip unit.
    pub chip_protocols: u16,
    /// Retain bin capacity; 0: cannot retain.
    pub cards: u32,
    /// NUL-terminated.
    pub vendor: [c_char; LFS_IDC_TEXT_LEN + 1],
    /// NUL-terminated.
    pub model: [c_char; LFS_IDC_TEXT_LEN + 1],
    /// NUL-terminated.
    pub firmware: [c_char; LFS_IDC_TEXT_LEN + 1],
}

/// `LFSIDCRETAINCARD`: output of `LFS_CMD_IDC_RETAIN_CARD`.
#[doc(alias = "LFSIDCRETAINCARD")]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LfsIdcRetainCard {
    /// Cards in the retain bin now.
    pub count: u32,
    /// `LFS_IDC_MEDIA*`: where the card is now.
    pub position: u16,
    /// 0.
    pub reserved: u16,
}

/// `LFSIDCCHIPIO`: input and output of `LFS_CMD_IDC_CHIP_IO`.
#[doc(alias = "LFSIDCCHIPIO")]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LfsIdcChipIo {
    /// `LFS_IDC_CHIPT0` or `LFS_IDC_CHIPT1`.
    pub chip_protocol: u16,
    /// 0.
    pub reserved: u16,
    /// Bytes at `chip_data`.
    pub chip_data_length: u32,
    /// The APDU.
    pub chip_data: *const u8,
}

/// `LFSIDCCARDACT`: buffer of `LFS_SRVE_IDC_CARDACTION`.
#[doc(alias = "LFSIDCCARDACT")]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LfsIdcCardAct {
    /// `LFS_IDC_CARD*`.
    pub action: u16,
    /// `LFS_IDC_MEDIA*`: where the card was.
    pub position: u16,
}

/// Copies `text` into a fixed NUL-terminated field, cutting it at a character boundary.
pub fn write_text<const N: usize>(field: &mut [c_char; N], text: &str) {
    field.fill(0);
    let mut end = text.len().min(N.saturating_sub(1));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    for (dst, src) in field.iter_mut().zip(&text.as_bytes()[..end]) {
        *dst = *src as c_char;
    }
}

/// Reads a fixed NUL-terminated field (lossy UTF-8; a field without NUL is read whole).
pub fn read_text(field: &[c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_round_trip_and_cut_at_char_boundaries() {
        let mut f = [0 as c_char; 8];
        write_text(&mut f, "ACME");
        assert_eq!(read_text(&f), "ACME");
        write_text(&mut f, "ääääää"); // 12 bytes: cut to 6 bytes = 3 characters
        assert_eq!(read_text(&f), "äää");
        assert_eq!(f[7], 0);
    }

    #[test]
    fn versions() {
        assert_eq!(LFS_ABI_VERSION, 0x0001_0000);
        assert_eq!(lfs_make_version(2, 3) >> 16, 2);
    }
}
