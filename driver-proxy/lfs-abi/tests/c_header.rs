//! The published header is valid C (and C++), and the Rust mirrors match it: a C program
//! including `openteller_lfs.h` prints every structure's size and field offsets and a set of
//! constants, and the test compares them with `size_of`/`offset_of!` and the Rust constants.
//!
//! Needs a C compiler (`$CC`, else `cc`); without one the test says so and passes.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use openteller_lfs_abi::HEADER_PATH;
use openteller_lfs_abi::ffi::*;

fn compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    Command::new(&cc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| cc)
}

macro_rules! layout {
    ($c:expr, $rust:ty, $cname:literal, [$(($field:ident, $cfield:literal)),* $(,)?]) => {{
        $c.c_lines.push(format!("P(\"sizeof {0}\", sizeof({0}));", $cname));
        $c.expected.insert(format!("sizeof {}", $cname), size_of::<$rust>() as i64);
        $(
            $c.c_lines.push(format!("P(\"offsetof {0}.{1}\", offsetof({0}, {1}));", $cname, $cfield));
            $c.expected.insert(format!("offsetof {}.{}", $cname, $cfield), offset_of!($rust, $field) as i64);
        )*
    }};
}

macro_rules! constants {
    ($c:expr, [$($name:ident),* $(,)?]) => {{
        $(
            $c.c_lines.push(format!("P(\"{0}\", {0});", stringify!($name)));
            $c.expected.insert(stringify!($name).to_owned(), $name as i64);
        )*
    }};
}

#[derive(Default)]
struct Check {
    c_lines: Vec<String>,
    expected: BTreeMap<String, i64>,
}

fn program(check: &Check) -> String {
    format!(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"openteller_lfs.h\"\n\
         #define P(name, value) printf(\"%s=%lld\\n\", name, (long long)(value))\n\
         int main(void) {{\n{}\nreturn 0;\n}}\n",
        check.c_lines.join("\n")
    )
}

#[test]
fn header_compiles_and_matches_the_rust_mirrors() {
    let Some(cc) = compiler() else {
        eprintln!("skipped: no C compiler (set CC)");
        return;
    };
    let mut c = Check::default();
    layout!(
        c,
        LfsVersion,
        "LFSVERSION",
        [
            (version, "version"),
            (low_version, "low_version"),
            (high_version, "high_version"),
            (description, "description"),
        ]
    );
    layout!(
        c,
        LfsResult,
        "LFSRESULT",
        [
            (message, "message"),
            (service, "service"),
            (request_id, "request_id"),
            (timestamp_ms, "timestamp_ms"),
            (result, "result"),
            (code, "code"),
            (buffer, "buffer"),
            (buffer_len, "buffer_len"),
            (reserved, "reserved"),
        ]
    );
    layout!(c, LfsDevStatus, "LFSDEVSTATUS", [(state, "state")]);
    layout!(
        c,
        LfsIdcCardData,
        "LFSIDCCARDDATA",
        [
            (data_source, "data_source"),
            (status, "status"),
            (data_length, "data_length"),
            (data, "data"),
        ]
    );
    layout!(
        c,
        LfsIdcCardDataList,
        "LFSIDCCARDDATALIST",
        [(count, "count"), (reserved, "reserved"), (items, "items")]
    );
    layout!(
        c,
        LfsIdcStatus,
        "LFSIDCSTATUS",
        [
            (device, "device"),
            (media, "media"),
            (retain_bin, "retain_bin"),
            (chip_power, "chip_power"),
            (cards, "cards"),
            (reserved, "reserved"),
        ]
    );
    layout!(
        c,
        LfsIdcCaps,
        "LFSIDCCAPS",
        [
            (dev_class, "dev_class"),
            (r#type, "type"),
            (read_tracks, "read_tracks"),
            (chip_protocols, "chip_protocols"),
            (cards, "cards"),
            (vendor, "vendor"),
            (model, "model"),
            (firmware, "firmware"),
        ]
    );
    layout!(
        c,
        LfsIdcRetainCard,
        "LFSIDCRETAINCARD",
        [
            (count, "count"),
            (position, "position"),
            (reserved, "reserved")
        ]
    );
    layout!(
        c,
        LfsIdcChipIo,
        "LFSIDCCHIPIO",
        [
            (chip_protocol, "chip_protocol"),
            (reserved, "reserved"),
            (chip_data_length, "chip_data_length"),
            (chip_data, "chip_data"),
        ]
    );
    layout!(
        c,
        LfsIdcCardAct,
        "LFSIDCCARDACT",
        [(action, "action"), (position, "position")]
    );
    constants!(
        c,
        [
            LFS_ABI_VERSION,
            LFS_DESCRIPTION_LEN,
            LFS_INDEFINITE_WAIT,
            LFS_EXECUTE_COMPLETE,
            LFS_GETINFO_COMPLETE,
            LFS_EXECUTE_EVENT,
            LFS_SERVICE_EVENT,
            LFS_USER_EVENT,
            LFS_SYSTEM_EVENT,
            LFS_SERVICE_EVENTS,
            LFS_USER_EVENTS,
            LFS_SYSTEM_EVENTS,
            LFS_EXECUTE_EVENTS,
            LFS_SUCCESS,
            LFS_ERR_ALREADY_STARTED,
            LFS_ERR_CANCELED,
            LFS_ERR_DEV_NOT_READY,
            LFS_ERR_HARDWARE_ERROR,
            LFS_ERR_INTERNAL_ERROR,
            LFS_ERR_INVALID_CATEGORY,
            LFS_ERR_INVALID_COMMAND,
            LFS_ERR_INVALID_EVENT_CLASS,
            LFS_ERR_INVALID_HSERVICE,
            LFS_ERR_INVALID_POINTER,
            LFS_ERR_INVALID_REQ_ID,
            LFS_ERR_INVALID_RESULT,
            LFS_ERR_NOT_STARTED,
            LFS_ERR_OUT_OF_MEMORY,
            LFS_ERR_SERVICE_NOT_FOUND,
            LFS_ERR_SPI_VER_TOO_HIGH,
            LFS_ERR_SPI_VER_TOO_LOW,
            LFS_ERR_TIMEOUT,
            LFS_ERR_UNSUPP_CATEGORY,
            LFS_ERR_UNSUPP_COMMAND,
            LFS_ERR_INVALID_DATA,
            LFS_ERR_SOFTWARE_ERROR,
            LFS_ERR_CONNECTION_LOST,
            LFS_ERR_USER_ERROR,
            LFS_ERR_UNSUPP_DATA,
            LFS_SYSE_DEVICE_STATUS,
            LFS_SERVICE_CLASS_IDC,
            IDC_SERVICE_OFFSET,
            LFS_INF_IDC_STATUS,
            LFS_INF_IDC_CAPABILITIES,
            LFS_CMD_IDC_EJECT_CARD,
            LFS_CMD_IDC_RETAIN_CARD,
            LFS_CMD_IDC_READ_RAW_DATA,
            LFS_CMD_IDC_CHIP_IO,
            LFS_CMD_IDC_RESET,
            LFS_EXEE_IDC_INVALIDTRACKDATA,
            LFS_EXEE_IDC_MEDIAINSERTED,
            LFS_SRVE_IDC_MEDIAREMOVED,
            LFS_SRVE_IDC_CARDACTION,
            LFS_USRE_IDC_RETAINBINTHRESHOLD,
            LFS_EXEE_IDC_INVALIDMEDIA,
            LFS_EXEE_IDC_MEDIARETAINED,
            LFS_SRVE_IDC_MEDIADETECTED,
            LFS_ERR_IDC_MEDIAJAM,
            LFS_ERR_IDC_NOMEDIA,
            LFS_ERR_IDC_MEDIARETAINED,
            LFS_ERR_IDC_RETAINBINFULL,
            LFS_ERR_IDC_INVALIDDATA,
            LFS_ERR_IDC_INVALIDMEDIA,
            LFS_ERR_IDC_SHUTTERFAIL,
            LFS_ERR_IDC_SECURITYFAIL,
            LFS_ERR_IDC_PROTOCOLNOTSUPP,
            LFS_ERR_IDC_ATRNOTOBTAINED,
            LFS_ERR_IDC_INVALIDKEY,
            LFS_ERR_IDC_CHIPPOWERNOTSUPP,
            LFS_ERR_IDC_CARDTOOSHORT,
            LFS_ERR_IDC_CARDTOOLONG,
            LFS_IDC_DEVONLINE,
            LFS_IDC_DEVOFFLINE,
            LFS_IDC_DEVPOWEROFF,
            LFS_IDC_DEVNODEVICE,
            LFS_IDC_DEVHWERROR,
            LFS_IDC_DEVUSERERROR,
            LFS_IDC_DEVBUSY,
            LFS_IDC_MEDIAPRESENT,
            LFS_IDC_MEDIANOTPRESENT,
            LFS_IDC_MEDIAJAMMED,
            LFS_IDC_MEDIANOTSUPP,
            LFS_IDC_MEDIAUNKNOWN,
            LFS_IDC_MEDIAENTERING,
            LFS_IDC_MEDIALATCHED,
            LFS_IDC_RETAINBINOK,
            LFS_IDC_RETAINNOTSUPP,
            LFS_IDC_RETAINBINFULL,
            LFS_IDC_RETAINBINHIGH,
            LFS_IDC_RETAINBINMISSING,
            LFS_IDC_CHIPONLINE,
            LFS_IDC_CHIPPOWEREDOFF,
            LFS_IDC_CHIPBUSY,
            LFS_IDC_CHIPNODEVICE,
            LFS_IDC_CHIPHWERROR,
            LFS_IDC_CHIPNOCARD,
            LFS_IDC_CHIPNOTSUPP,
            LFS_IDC_CHIPUNKNOWN,
            LFS_IDC_TYPEMOTOR,
            LFS_IDC_TYPESWIPE,
            LFS_IDC_TYPEDIP,
            LFS_IDC_TYPECONTACTLESS,
            LFS_IDC_TYPELATCHEDDIP,
            LFS_IDC_TYPEPERMANENT,
            LFS_IDC_TRACK1,
            LFS_IDC_TRACK2,
            LFS_IDC_TRACK3,
            LFS_IDC_CHIP,
            LFS_IDC_DATAOK,
            LFS_IDC_DATAMISSING,
            LFS_IDC_DATAINVALID,
            LFS_IDC_DATATOOLONG,
            LFS_IDC_DATATOOSHORT,
            LFS_IDC_DATASRCNOTSUPP,
            LFS_IDC_DATASRCMISSING,
            LFS_IDC_NOACTION,
            LFS_IDC_EJECT,
            LFS_IDC_RETAIN,
            LFS_IDC_CARDRETAINED,
            LFS_IDC_CARDEJECTED,
            LFS_IDC_CARDREADPOSITION,
            LFS_IDC_CARDJAMMED,
            LFS_IDC_CHIPT0,
            LFS_IDC_CHIPT1,
            LFS_IDC_TEXT_LEN,
        ]
    );

    let dir = tempdir();
    let source = dir.join("check.c");
    std::fs::write(&source, program(&c)).unwrap();
    let include = Path::new(HEADER_PATH).parent().unwrap();
    let exe = dir.join("check");
    let out = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(include)
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the header does not compile as C99:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let actual: BTreeMap<String, i64> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once('=').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect();
    let mismatches: Vec<String> = c
        .expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: Rust {v}, C {:?}", actual.get(k)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "header and mirrors differ:\n{}",
        mismatches.join("\n")
    );
    if cfg!(target_pointer_width = "64") {
        assert_eq!(actual["sizeof LFSRESULT"], 48);
    }

    // Also valid C++ (the extern "C" block), when a C++ compiler is around.
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    if Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let cpp = dir.join("check.cpp");
        std::fs::write(
            &cpp,
            "#include \"openteller_lfs.h\"\nint main() { LFSRESULT r = {}; return (int)r.code; }\n",
        )
        .unwrap();
        let out = Command::new(&cxx)
            .args(["-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
            .arg(include)
            .arg(&cpp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the header does not compile as C++:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("openteller-lfs-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
