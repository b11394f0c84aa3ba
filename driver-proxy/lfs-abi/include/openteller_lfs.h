/*
 * openteller_lfs.h — the OpenTeller LFS service provider interface (SPI), ABI version 1.0.
 *
 * A service provider (SP) is a shared library that drives one kind of ATM device. It exports the
 * nine functions declared at the end of this file; OpenTeller's driver-proxy loads it
 * (`driver-proxy --backend lfs:/path/libvendor.so`) and maps it onto the gRPC device API.
 *
 * The shape follows CEN/XFS 3.x and China's LFS: StartUp, Open, Register, asynchronous Execute
 * and GetInfo, Cancel, Close, FreeResult, CleanUp. Command, event, information-category and error
 * numbers are the CEN/XFS 3.x ones (XFSAPI.H, XFSIDC.H), spelled LFS_* as in LFS. There is no
 * window-message loop and no XFS manager: the host calls the SP directly and the SP reports
 * completions and events through two callbacks that it may invoke from any of its threads.
 *
 * This is OpenTeller's own ABI, not a copy of a vendor or standards-body header: do not include
 * it in the same translation unit as a real XFS or LFS header. See docs/lfs.md for the call
 * sequence, threading rules and memory ownership.
 *
 * Conventions:
 *   - every function returns an LFSHRESULT: LFS_SUCCESS (0) or a negative LFS_ERR_* number;
 *   - all integers are fixed-width, all structs have natural C alignment and no implicit padding
 *     on 64-bit targets (reserved fields are explicit and must be zero);
 *   - strings are NUL-terminated UTF-8;
 *   - memory the host passes in is the host's and valid only during the call (the SP copies what
 *     it keeps); every LFSRESULT and everything it points to is the SP's, and stays valid until
 *     the host hands it back with LFSFreeResult, exactly once.
 */
#ifndef OPENTELLER_LFS_H
#define OPENTELLER_LFS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LFS_EXPORT __declspec(dllexport)
#elif defined(__GNUC__)
#define LFS_EXPORT __attribute__((visibility("default")))
#else
#define LFS_EXPORT
#endif

/* ---------------------------------------------------------------------------------------------
 * Versions
 * ------------------------------------------------------------------------------------------- */

/* A version is major << 16 | minor. Minor versions only add; a host and an SP work together when
 * their major versions are equal. */
#define LFS_MAKE_VERSION(major, minor) ((uint32_t)(((uint32_t)(major) << 16) | (uint32_t)(minor)))
#define LFS_VERSION_MAJOR(version) ((uint32_t)(version) >> 16)
#define LFS_VERSION_MINOR(version) ((uint32_t)(version) & 0xFFFFu)
#define LFS_ABI_VERSION_MAJOR 1
#define LFS_ABI_VERSION_MINOR 0
#define LFS_ABI_VERSION LFS_MAKE_VERSION(LFS_ABI_VERSION_MAJOR, LFS_ABI_VERSION_MINOR)

#define LFS_DESCRIPTION_LEN 256

/* Filled by the SP in LFSStartUp (WFSVERSION). */
typedef struct LFSVERSION {
    uint32_t version;      /* the ABI version the SP uses with this host */
    uint32_t low_version;  /* the lowest ABI version the SP supports */
    uint32_t high_version; /* the highest ABI version the SP supports */
    char description[LFS_DESCRIPTION_LEN + 1]; /* e.g. "ACME IDC SP 4.2", NUL-terminated */
} LFSVERSION;

/* ---------------------------------------------------------------------------------------------
 * Handles, results, callbacks
 * ------------------------------------------------------------------------------------------- */

typedef int32_t LFSHRESULT;    /* LFS_SUCCESS or a negative LFS_ERR_* */
typedef uint32_t LFSHSERVICE;  /* a session, chosen by the SP in LFSOpen; never 0 */
typedef uint64_t LFSREQUESTID; /* chosen by the host: non-zero, unique among its open requests */

#define LFS_INDEFINITE_WAIT 0u /* timeout_ms: no time limit */

/* LFSRESULT.message: what the result reports. */
#define LFS_EXECUTE_COMPLETE 1 /* the completion of LFSAsyncExecute; code = command */
#define LFS_GETINFO_COMPLETE 2 /* the completion of LFSAsyncGetInfo; code = category */
#define LFS_EXECUTE_EVENT 3    /* an intermediate event of a running request; code = event id */
#define LFS_SERVICE_EVENT 4    /* an unsolicited service event; code = event id */
#define LFS_USER_EVENT 5       /* an event needing operator attention; code = event id */
#define LFS_SYSTEM_EVENT 6     /* a system event; code = event id */

/* LFSRegister event classes (execute events are always delivered to the requester). */
#define LFS_SERVICE_EVENTS 0x0001u
#define LFS_USER_EVENTS 0x0002u
#define LFS_SYSTEM_EVENTS 0x0004u
#define LFS_EXECUTE_EVENTS 0x0008u

/* One completion or event (WFSRESULT). Allocated by the SP; read-only for the host; valid from
 * the callback until the host calls LFSFreeResult on it. Layout on 64-bit targets: 48 bytes. */
typedef struct LFSRESULT {
    uint32_t message;        /* LFS_EXECUTE_COMPLETE ... LFS_SYSTEM_EVENT */
    LFSHSERVICE service;     /* the session it belongs to */
    LFSREQUESTID request_id; /* the request it belongs to; 0 for service/user/system events */
    uint64_t timestamp_ms;   /* when it happened, milliseconds since 1970-01-01 UTC (0 = unknown) */
    LFSHRESULT result;       /* hResult: LFS_SUCCESS or the error the request ended with */
    uint32_t code;           /* the command, information category or event id */
    const void *buffer;      /* the output structure for `code` (see below), or NULL */
    uint32_t buffer_len;     /* the size in bytes of *buffer (0 when buffer is NULL) */
    uint32_t reserved;       /* 0 */
} LFSRESULT;

/* Completion callback: one call per accepted request (LFSAsyncExecute or LFSAsyncGetInfo that
 * returned LFS_SUCCESS), after all of that request's LFS_EXECUTE_EVENTs. */
typedef void (*LFSCOMPLETIONPROC)(const LFSRESULT *result, void *user);
/* Event callback: execute events of running requests and the registered unsolicited events. */
typedef void (*LFSEVENTPROC)(const LFSRESULT *result, void *user);

/* ---------------------------------------------------------------------------------------------
 * Error numbers (XFSAPI.H). Generic errors every class may return.
 * ------------------------------------------------------------------------------------------- */

#define LFS_SUCCESS 0
#define LFS_ERR_ALREADY_STARTED (-1)
#define LFS_ERR_CANCELED (-4)
#define LFS_ERR_DEV_NOT_READY (-13)
#define LFS_ERR_HARDWARE_ERROR (-14)
#define LFS_ERR_INTERNAL_ERROR (-15)
#define LFS_ERR_INVALID_CATEGORY (-19)
#define LFS_ERR_INVALID_COMMAND (-20)
#define LFS_ERR_INVALID_EVENT_CLASS (-21)
#define LFS_ERR_INVALID_HSERVICE (-22)
#define LFS_ERR_INVALID_POINTER (-26)
#define LFS_ERR_INVALID_REQ_ID (-27)
#define LFS_ERR_INVALID_RESULT (-28)
#define LFS_ERR_NOT_STARTED (-39)
#define LFS_ERR_OUT_OF_MEMORY (-42)
#define LFS_ERR_SERVICE_NOT_FOUND (-43)
#define LFS_ERR_SPI_VER_TOO_HIGH (-44)
#define LFS_ERR_SPI_VER_TOO_LOW (-45)
#define LFS_ERR_TIMEOUT (-48)
#define LFS_ERR_UNSUPP_CATEGORY (-49)
#define LFS_ERR_UNSUPP_COMMAND (-50)
#define LFS_ERR_INVALID_DATA (-52)
#define LFS_ERR_SOFTWARE_ERROR (-53)
#define LFS_ERR_CONNECTION_LOST (-54)
#define LFS_ERR_USER_ERROR (-55)
#define LFS_ERR_UNSUPP_DATA (-56)

/* System events (XFSAPI.H). */
#define LFS_SYSE_DEVICE_STATUS 4 /* buffer: LFSDEVSTATUS */

/* Buffer of LFS_SYSE_DEVICE_STATUS. */
typedef struct LFSDEVSTATUS {
    uint32_t state; /* LFS_IDC_DEV* */
} LFSDEVSTATUS;

/* ---------------------------------------------------------------------------------------------
 * Identification card unit (IDC, card reader) — XFSIDC.H numbering, offset 200.
 * ------------------------------------------------------------------------------------------- */

#define LFS_SERVICE_CLASS_IDC 2
#define LFS_SERVICE_CLASS_NAME_IDC "IDC"
#define IDC_SERVICE_OFFSET 200

/* Information categories (LFSAsyncGetInfo; query NULL). */
#define LFS_INF_IDC_STATUS 201       /* buffer: LFSIDCSTATUS */
#define LFS_INF_IDC_CAPABILITIES 202 /* buffer: LFSIDCCAPS */

/* Commands (LFSAsyncExecute). */
#define LFS_CMD_IDC_EJECT_CARD 203    /* in: NULL;             out: NULL */
#define LFS_CMD_IDC_RETAIN_CARD 204   /* in: NULL;             out: LFSIDCRETAINCARD */
#define LFS_CMD_IDC_READ_RAW_DATA 207 /* in: uint16_t sources; out: LFSIDCCARDDATALIST */
#define LFS_CMD_IDC_CHIP_IO 209       /* in: LFSIDCCHIPIO;     out: LFSIDCCHIPIO */
#define LFS_CMD_IDC_RESET 210         /* in: uint16_t action or NULL (SP default); out: NULL */

/* Events. */
#define LFS_EXEE_IDC_INVALIDTRACKDATA 201   /* execute; buffer: LFSIDCCARDDATA (the bad track) */
#define LFS_EXEE_IDC_MEDIAINSERTED 203      /* execute; buffer: NULL */
#define LFS_SRVE_IDC_MEDIAREMOVED 204       /* service; buffer: NULL */
#define LFS_SRVE_IDC_CARDACTION 205         /* service; buffer: LFSIDCCARDACT */
#define LFS_USRE_IDC_RETAINBINTHRESHOLD 206 /* user; buffer: uint16_t LFS_IDC_RETAINBIN* */
#define LFS_EXEE_IDC_INVALIDMEDIA 207       /* execute; buffer: NULL */
#define LFS_EXEE_IDC_MEDIARETAINED 208      /* execute; buffer: NULL */
#define LFS_SRVE_IDC_MEDIADETECTED 209      /* service; buffer: NULL */

/* Errors. */
#define LFS_ERR_IDC_MEDIAJAM (-200)
#define LFS_ERR_IDC_NOMEDIA (-201)
#define LFS_ERR_IDC_MEDIARETAINED (-202)
#define LFS_ERR_IDC_RETAINBINFULL (-203)
#define LFS_ERR_IDC_INVALIDDATA (-204)
#define LFS_ERR_IDC_INVALIDMEDIA (-205)
#define LFS_ERR_IDC_SHUTTERFAIL (-209)
#define LFS_ERR_IDC_SECURITYFAIL (-210)
#define LFS_ERR_IDC_PROTOCOLNOTSUPP (-211)
#define LFS_ERR_IDC_ATRNOTOBTAINED (-212)
#define LFS_ERR_IDC_INVALIDKEY (-213)
#define LFS_ERR_IDC_CHIPPOWERNOTSUPP (-215)
#define LFS_ERR_IDC_CARDTOOSHORT (-216)
#define LFS_ERR_IDC_CARDTOOLONG (-217)

/* LFSIDCSTATUS.device, LFSDEVSTATUS.state. */
#define LFS_IDC_DEVONLINE 0
#define LFS_IDC_DEVOFFLINE 1
#define LFS_IDC_DEVPOWEROFF 2
#define LFS_IDC_DEVNODEVICE 3
#define LFS_IDC_DEVHWERROR 4
#define LFS_IDC_DEVUSERERROR 5
#define LFS_IDC_DEVBUSY 6

/* LFSIDCSTATUS.media, LFSIDCRETAINCARD.position, LFSIDCCARDACT.position. */
#define LFS_IDC_MEDIAPRESENT 1
#define LFS_IDC_MEDIANOTPRESENT 2
#define LFS_IDC_MEDIAJAMMED 3
#define LFS_IDC_MEDIANOTSUPP 4
#define LFS_IDC_MEDIAUNKNOWN 5
#define LFS_IDC_MEDIAENTERING 6 /* at the exit slot, ready to be taken */
#define LFS_IDC_MEDIALATCHED 7

/* LFSIDCSTATUS.retain_bin, LFS_USRE_IDC_RETAINBINTHRESHOLD. */
#define LFS_IDC_RETAINBINOK 1
#define LFS_IDC_RETAINNOTSUPP 2
#define LFS_IDC_RETAINBINFULL 3
#define LFS_IDC_RETAINBINHIGH 4
#define LFS_IDC_RETAINBINMISSING 5

/* LFSIDCSTATUS.chip_power. */
#define LFS_IDC_CHIPONLINE 0
#define LFS_IDC_CHIPPOWEREDOFF 1
#define LFS_IDC_CHIPBUSY 2
#define LFS_IDC_CHIPNODEVICE 3
#define LFS_IDC_CHIPHWERROR 4
#define LFS_IDC_CHIPNOCARD 5
#define LFS_IDC_CHIPNOTSUPP 6
#define LFS_IDC_CHIPUNKNOWN 7

/* LFSIDCCAPS.type. */
#define LFS_IDC_TYPEMOTOR 1
#define LFS_IDC_TYPESWIPE 2
#define LFS_IDC_TYPEDIP 3
#define LFS_IDC_TYPECONTACTLESS 4
#define LFS_IDC_TYPELATCHEDDIP 5
#define LFS_IDC_TYPEPERMANENT 6

/* Data sources: the READ_RAW_DATA input mask, LFSIDCCARDDATA.data_source (one bit),
 * LFSIDCCAPS.read_tracks. */
#define LFS_IDC_TRACK1 0x0001u
#define LFS_IDC_TRACK2 0x0002u
#define LFS_IDC_TRACK3 0x0004u
#define LFS_IDC_CHIP 0x0008u /* the data is the chip's answer-to-reset (ATR) */

/* LFSIDCCARDDATA.status. */
#define LFS_IDC_DATAOK 0
#define LFS_IDC_DATAMISSING 1
#define LFS_IDC_DATAINVALID 2
#define LFS_IDC_DATATOOLONG 3
#define LFS_IDC_DATATOOSHORT 4
#define LFS_IDC_DATASRCNOTSUPP 5
#define LFS_IDC_DATASRCMISSING 6

/* LFS_CMD_IDC_RESET input. */
#define LFS_IDC_NOACTION 1
#define LFS_IDC_EJECT 2
#define LFS_IDC_RETAIN 3

/* LFSIDCCARDACT.action. */
#define LFS_IDC_CARDRETAINED 1
#define LFS_IDC_CARDEJECTED 2
#define LFS_IDC_CARDREADPOSITION 3
#define LFS_IDC_CARDJAMMED 4

/* LFSIDCCHIPIO.chip_protocol, LFSIDCCAPS.chip_protocols. */
#define LFS_IDC_CHIPT0 0x0001u
#define LFS_IDC_CHIPT1 0x0002u

/* One data source read from a card (WFSIDCCARDDATA). Tracks are the characters between the
 * start and end sentinels, e.g. track 2 "6222020200112233445=4912101..." in ASCII. */
typedef struct LFSIDCCARDDATA {
    uint16_t data_source;  /* one LFS_IDC_TRACK1 / TRACK2 / TRACK3 / CHIP */
    uint16_t status;       /* LFS_IDC_DATA* */
    uint32_t data_length;  /* bytes at data */
    const uint8_t *data;   /* NULL when data_length is 0 */
} LFSIDCCARDDATA;

/* Output of LFS_CMD_IDC_READ_RAW_DATA: one item per requested source. */
typedef struct LFSIDCCARDDATALIST {
    uint32_t count;
    uint32_t reserved;            /* 0 */
    const LFSIDCCARDDATA *items;  /* count items; NULL when count is 0 */
} LFSIDCCARDDATALIST;

/* Output of LFS_INF_IDC_STATUS (WFSIDCSTATUS). */
typedef struct LFSIDCSTATUS {
    uint16_t device;     /* LFS_IDC_DEV* */
    uint16_t media;      /* LFS_IDC_MEDIA* */
    uint16_t retain_bin; /* LFS_IDC_RETAINBIN* / LFS_IDC_RETAINNOTSUPP */
    uint16_t chip_power; /* LFS_IDC_CHIP* */
    uint32_t cards;      /* cards in the retain bin */
    uint32_t reserved;   /* 0 */
} LFSIDCSTATUS;

#define LFS_IDC_TEXT_LEN 63

/* Output of LFS_INF_IDC_CAPABILITIES (WFSIDCCAPS, with the identity strings XFS keeps in
 * lpszExtra given their own fields). */
typedef struct LFSIDCCAPS {
    uint16_t dev_class;      /* LFS_SERVICE_CLASS_IDC */
    uint16_t type;           /* LFS_IDC_TYPE* */
    uint16_t read_tracks;    /* mask of LFS_IDC_TRACK1 / TRACK2 / TRACK3 */
    uint16_t chip_protocols; /* mask of LFS_IDC_CHIPT0 / CHIPT1; 0: no chip unit */
    uint32_t cards;          /* retain bin capacity; 0: the reader cannot retain */
    char vendor[LFS_IDC_TEXT_LEN + 1];   /* NUL-terminated */
    char model[LFS_IDC_TEXT_LEN + 1];    /* NUL-terminated */
    char firmware[LFS_IDC_TEXT_LEN + 1]; /* NUL-terminated */
} LFSIDCCAPS;

/* Output of LFS_CMD_IDC_RETAIN_CARD (WFSIDCRETAINCARD). */
typedef struct LFSIDCRETAINCARD {
    uint32_t count;    /* cards in the retain bin now */
    uint16_t position; /* LFS_IDC_MEDIA*: where the card is now */
    uint16_t reserved; /* 0 */
} LFSIDCRETAINCARD;

/* Input and output of LFS_CMD_IDC_CHIP_IO (WFSIDCCHIPIO): a command APDU in, a response out. */
typedef struct LFSIDCCHIPIO {
    uint16_t chip_protocol;    /* LFS_IDC_CHIPT0 or LFS_IDC_CHIPT1 */
    uint16_t reserved;         /* 0 */
    uint32_t chip_data_length; /* bytes at chip_data */
    const uint8_t *chip_data;
} LFSIDCCHIPIO;

/* Buffer of LFS_SRVE_IDC_CARDACTION (WFSIDCCARDACT). */
typedef struct LFSIDCCARDACT {
    uint16_t action;   /* LFS_IDC_CARD* */
    uint16_t position; /* LFS_IDC_MEDIA*: where the card was */
} LFSIDCCARDACT;

/* ---------------------------------------------------------------------------------------------
 * The SPI: what a service provider library exports.
 * ------------------------------------------------------------------------------------------- */

/* Called once by the host after loading the library, before anything else. `abi_version` is the
 * host's LFS_ABI_VERSION; the SP fills *version and returns LFS_ERR_SPI_VER_TOO_HIGH /
 * LFS_ERR_SPI_VER_TOO_LOW when their major versions differ. Calls are counted: each successful
 * LFSStartUp is matched by one LFSCleanUp. */
LFS_EXPORT LFSHRESULT LFSStartUp(uint32_t abi_version, LFSVERSION *version);

/* Called once per successful LFSStartUp, after every session is closed. The last one stops all
 * SP threads: after it returns no SP code runs until the next LFSStartUp, and the host may
 * unload the library. */
LFS_EXPORT LFSHRESULT LFSCleanUp(void);

/* Opens the device named `logical_name` (LFS_ERR_SERVICE_NOT_FOUND when the SP has none of that
 * name). Both callbacks are required and are called with `user` for every result of the new
 * session, from any SP thread, until LFSClose returns. */
LFS_EXPORT LFSHRESULT LFSOpen(const char *logical_name, LFSCOMPLETIONPROC on_complete,
                              LFSEVENTPROC on_event, void *user, LFSHSERVICE *service);

/* Chooses which unsolicited event classes the session receives (mask of LFS_*_EVENTS; replaces
 * the previous mask, 0 = none). A new session receives none. */
LFS_EXPORT LFSHRESULT LFSRegister(LFSHSERVICE service, uint32_t event_classes);

/* Starts command `command` with input `cmd_data` (cmd_data_len bytes, the structure the command
 * takes, or NULL/0). Returns at once: LFS_SUCCESS means the request is accepted and will end in
 * exactly one completion callback; an error means it was refused and no callback follows.
 * Commands of one session run in the order they were accepted. */
LFS_EXPORT LFSHRESULT LFSAsyncExecute(LFSHSERVICE service, uint32_t command, const void *cmd_data,
                                      uint32_t cmd_data_len, uint32_t timeout_ms,
                                      LFSREQUESTID request_id);

/* Like LFSAsyncExecute, for an information category. Information requests do not wait behind
 * running commands: a status query is answered while a card read waits for a card. */
LFS_EXPORT LFSHRESULT LFSAsyncGetInfo(LFSHSERVICE service, uint32_t category, const void *query,
                                      uint32_t query_len, uint32_t timeout_ms,
                                      LFSREQUESTID request_id);

/* Asks the SP to end request `request_id` (0: every open request of the session) as soon as it
 * can; its completion then carries LFS_ERR_CANCELED, or its real result when it was too late.
 * LFS_ERR_INVALID_REQ_ID when no such request is open. */
LFS_EXPORT LFSHRESULT LFSCancelAsyncRequest(LFSHSERVICE service, LFSREQUESTID request_id);

/* Ends the session. Open requests complete with LFS_ERR_CANCELED before it returns; after it
 * returns no callback of this session is running or will run. */
LFS_EXPORT LFSHRESULT LFSClose(LFSHSERVICE service);

/* Hands back a result the SP passed to a callback, with everything it points to. Exactly once
 * per result, from any thread, also from inside the callback. LFS_ERR_INVALID_RESULT for a
 * pointer that is not a live result of this SP. */
LFS_EXPORT LFSHRESULT LFSFreeResult(const LFSRESULT *result);

/* Function pointer types, for hosts that resolve the symbols at run time. */
typedef LFSHRESULT (*LFSSTARTUPPROC)(uint32_t, LFSVERSION *);
typedef LFSHRESULT (*LFSCLEANUPPROC)(void);
typedef LFSHRESULT (*LFSOPENPROC)(const char *, LFSCOMPLETIONPROC, LFSEVENTPROC, void *,
                                  LFSHSERVICE *);
typedef LFSHRESULT (*LFSREGISTERPROC)(LFSHSERVICE, uint32_t);
typedef LFSHRESULT (*LFSASYNCEXECUTEPROC)(LFSHSERVICE, uint32_t, const void *, uint32_t, uint32_t,
                                          LFSREQUESTID);
typedef LFSHRESULT (*LFSASYNCGETINFOPROC)(LFSHSERVICE, uint32_t, const void *, uint32_t, uint32_t,
                                          LFSREQUESTID);
typedef LFSHRESULT (*LFSCANCELASYNCREQUESTPROC)(LFSHSERVICE, LFSREQUESTID);
typedef LFSHRESULT (*LFSCLOSEPROC)(LFSHSERVICE);
typedef LFSHRESULT (*LFSFREERESULTPROC)(const LFSRESULT *);

#ifdef __cplusplus
}
#endif

#endif /* OPENTELLER_LFS_H */
