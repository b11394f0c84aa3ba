//! Integration tests of the `online-txn-codec` binary: decode of a known CUP message,
//! encode(decode(x)) == x, and the documented errors and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_online-txn-codec");

/// The CUP 0200 of `tests/known.rs`.
const CUP_HEX: &str = concat!(
    "6000030000",
    "603100000000",
    "0200",
    "7020048020809211",
    "19",
    "62220212345678901230",
    "000000",
    "000000010000",
    "000123",
    "0510",
    "00",
    "21",
    "6222021234567890D25120",
    "3132333435363738",
    "313536",
    "0102030405060708",
    "0015",
    "9F2608112233445566778882027C00",
    "0011",
    "220000010000",
    "A1A2A3A4A5A6A7A8",
);

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn online-txn-codec");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn decode_known_cup_message() {
    let out = run(&["decode", "--spec", "cup", "--hex", CUP_HEX], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = serde_json::json!({
        "mti": "0200",
        "tpdu": "6000030000",
        "header": "603100000000",
        "fields": {
            "2": "6222021234567890123",
            "3": "000000",
            "4": "000000010000",
            "11": "000123",
            "22": "051",
            "25": "00",
            "35": "6222021234567890=2512",
            "41": "12345678",
            "49": "156",
            "52": "hex:0102030405060708",
            "55": { "9F26": "hex:1122334455667788", "82": "hex:7C00" },
            "60": { "1": "22", "2": "000001", "3": "000" },
            "64": "hex:A1A2A3A4A5A6A7A8"
        }
    });
    assert_eq!(got, want);
}

#[test]
fn encode_of_decode_is_identity() {
    let dec = run(
        &["decode", "--spec", "cup", "--hex", CUP_HEX, "--compact"],
        "",
    );
    assert_eq!(dec.status.code(), Some(0));
    let enc = run(&["encode", "--spec", "cup"], &text(&dec.stdout));
    assert_eq!(enc.status.code(), Some(0), "{}", text(&enc.stderr));
    assert_eq!(text(&enc.stdout).trim(), CUP_HEX);

    // Hex on stdin with whitespace, and framing.
    let spaced: String = CUP_HEX
        .as_bytes()
        .chunks(2)
        .map(|c| format!("{} ", text(c)))
        .collect();
    let dec2 = run(&["decode", "--spec", "cup", "--compact"], &spaced);
    assert_eq!(dec2.stdout, dec.stdout);
    let framed = run(
        &["encode", "--spec", "cup", "--framed", "binary2"],
        &text(&dec.stdout),
    );
    let framed_hex = text(&framed.stdout).trim().to_owned();
    assert_eq!(&framed_hex[..4], format!("{:04X}", CUP_HEX.len() / 2));
    let dec3 = run(
        &[
            "decode",
            "--spec",
            "cup",
            "--framed",
            "binary2",
            "--compact",
            "--hex",
            &framed_hex,
        ],
        "",
    );
    assert_eq!(dec3.stdout, dec.stdout);
}

#[test]
fn iso87_encode_decode() {
    let json = r#"{"mti":"0800","fields":{"7":"0101120000","11":"000001","70":"301"}}"#;
    let enc = run(&["encode", "--spec", "iso87-ascii"], json);
    assert_eq!(enc.status.code(), Some(0), "{}", text(&enc.stderr));
    let hex = text(&enc.stdout).trim().to_owned();
    let ascii = String::from_utf8(openteller_codec::encoding::from_hex(&hex).unwrap()).unwrap();
    assert_eq!(
        ascii,
        "08008220000000000000040000000000000001011200000000013 01".replace(' ', "")
    );
    let dec = run(
        &[
            "decode",
            "--spec",
            "iso87-ascii",
            "--hex",
            &hex,
            "--compact",
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_slice(&dec.stdout).unwrap();
    assert_eq!(v, serde_json::from_str::<serde_json::Value>(json).unwrap());
}

#[test]
fn errors_and_exit_codes() {
    let bad_hex = run(&["decode", "--spec", "cup", "--hex", "60ZZ"], "");
    assert_eq!(bad_hex.status.code(), Some(65));
    assert!(
        text(&bad_hex.stderr).starts_with("error[CODEC_BAD_HEX]: "),
        "{}",
        text(&bad_hex.stderr)
    );

    let unknown = run(&["decode", "--spec", "visa-base1", "--hex", "00"], "");
    assert_eq!(unknown.status.code(), Some(64));
    assert!(
        text(&unknown.stderr)
            .starts_with("error[CODEC_UNKNOWN_PROFILE]: unknown profile \"visa-base1\"")
    );

    let missing_file = run(
        &["decode", "--spec", "/nonexistent/p.toml", "--hex", "00"],
        "",
    );
    assert_eq!(missing_file.status.code(), Some(66));
    assert!(text(&missing_file.stderr).starts_with("error[CODEC_IO]: "));

    // F35 length 38 > 37.
    let long35 = CUP_HEX.replacen("216222021234567890D25120", "386222021234567890D25120", 1);
    let bad_len = run(&["decode", "--spec", "cup", "--hex", &long35], "");
    assert_eq!(bad_len.status.code(), Some(65));
    assert_eq!(
        text(&bad_len.stderr).trim(),
        "error[CODEC_BAD_LENGTH]: field 35: length 38 exceeds the maximum 37 (z..37)"
    );

    let truncated = run(&["decode", "--spec", "cup", "--hex", &CUP_HEX[..60]], "");
    assert_eq!(truncated.status.code(), Some(65));
    assert!(text(&truncated.stderr).starts_with("error[CODEC_TRUNCATED]: "));

    let bad_json = run(&["encode", "--spec", "cup"], "{\"mti\":");
    assert_eq!(bad_json.status.code(), Some(65));
    assert!(text(&bad_json.stderr).starts_with("error[CODEC_BAD_JSON]: "));

    let bad_value = run(
        &["encode", "--spec", "cup"],
        r#"{"mti":"0200","tpdu":"6000030000","header":"603100000000","fields":{"3":"12"}}"#,
    );
    assert_eq!(bad_value.status.code(), Some(65));
    assert_eq!(
        text(&bad_value.stderr).trim(),
        "error[CODEC_BAD_LENGTH]: field 3: expected exactly 6 digits (n 6), got 2"
    );

    let usage = run(&["decode", "--hex", "00"], "");
    assert_eq!(usage.status.code(), Some(64));
    let nothing = run(&["decode", "--spec", "cup"], "");
    assert_eq!(nothing.status.code(), Some(64));
    assert!(text(&nothing.stderr).starts_with("error[CODEC_USAGE]: "));

    let dir = std::env::temp_dir().join(format!("codec-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("bad.toml");
    std::fs::write(&spec, "name = \"x\"\n[message]\nmti = \"ascii\"\nbitmap = \"hex\"\n[fields]\n1 = { format = \"n 2\" }\n").unwrap();
    let bad_spec = run(
        &["decode", "--spec", spec.to_str().unwrap(), "--hex", "00"],
        "",
    );
    assert_eq!(bad_spec.status.code(), Some(78));
    assert!(
        text(&bad_spec.stderr).starts_with("error[CODEC_BAD_SPEC]: "),
        "{}",
        text(&bad_spec.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn profiles_and_custom_spec_file() {
    let list = run(&["profiles"], "");
    assert_eq!(list.status.code(), Some(0));
    assert!(text(&list.stdout).contains("cup\t"));
    assert!(text(&list.stdout).contains("iso87-ascii\t"));
    let toml = run(&["profiles", "cup"], "");
    let dir = std::env::temp_dir().join(format!("codec-cli-p-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("my-cup.toml");
    std::fs::write(
        &path,
        text(&toml.stdout).replace("name = \"cup\"", "name = \"my-cup\""),
    )
    .unwrap();
    let out = run(
        &[
            "decode",
            "--spec",
            path.to_str().unwrap(),
            "--hex",
            CUP_HEX,
            "--compact",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn convert_between_formats() {
    let dir = std::env::temp_dir().join(format!("codec-cli-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixed = dir.join("kiosk.toml");
    std::fs::write(
        &fixed,
        "kind = \"fixed\"\nname = \"kiosk\"\n[[field]]\nname = \"pan\"\nwidth = 19\n[[field]]\nname = \"amount\"\nwidth = 10\nalign = \"right\"\n",
    )
    .unwrap();
    let map = dir.join("map.toml");
    std::fs::write(
        &map,
        "name = \"kiosk-to-cup\"\n[[map]]\nto = \"mti\"\nconstant = \"0200\"\n[[map]]\nto = \"tpdu\"\nconstant = \"6000030000\"\n[[map]]\nto = \"header\"\nconstant = \"603100000000\"\n[[map]]\nfrom = \"pan\"\nto = \"2\"\n[[map]]\nfrom = \"amount\"\nto = \"4\"\ntransform = \"decimal_to_minor\"\nwidth = 12\n",
    )
    .unwrap();
    let out = run(
        &[
            "convert",
            "--from",
            fixed.to_str().unwrap(),
            "--to",
            "cup",
            "--map",
            map.to_str().unwrap(),
        ],
        "6222021234567890123    100.50",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "6000030000603100000000020050000000000000001962220212345678901230000000010050"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
