//! Known-message tests: messages built in code, encoded, and compared with byte strings
//! derived by hand from the profiles.

use openteller_codec::encoding::{from_hex, to_hex};
use openteller_codec::{CodecError, FieldValue, Location, Message, Spec};

fn h(s: &str) -> Vec<u8> {
    from_hex(s).unwrap()
}

/// A CUP 0200 with one field of each shape, and its bytes derived by hand.
fn cup_0200() -> (Message, String) {
    let msg = Message::new("0200")
        .with_tpdu(h("6000030000"))
        .with_header(h("603100000000"))
        .with(2, "6222021234567890123")
        .with(3, "000000")
        .with(4, "000000010000")
        .with(11, "000123")
        .with(22, "051")
        .with(25, "00")
        .with(35, "6222021234567890=2512")
        .with(41, "12345678")
        .with(49, "156")
        .with(52, h("0102030405060708"))
        .with(
            55,
            FieldValue::subfields([("9F26", h("1122334455667788")), ("82", h("7C00"))]),
        )
        .with(
            60,
            FieldValue::subfields([("1", "22"), ("2", "000001"), ("3", "000")]),
        )
        .with(64, h("A1A2A3A4A5A6A7A8"));
    let hex = [
        "6000030000",       // TPDU
        "603100000000",     // header
        "0200",             // MTI, BCD
        "7020048020809211", // bitmap: 2 3 4 11 22 25 35 41 49 52 55 60 64
        "19",
        "62220212345678901230", // F2: LL BCD 19, left-aligned, pad 0
        "000000",               // F3
        "000000010000",         // F4
        "000123",               // F11
        "0510",                 // F22 n3: left-aligned BCD "051" + pad nibble
        "00",                   // F25
        "21",
        "6222021234567890D25120", // F35 z..37: '=' is nibble D
        "3132333435363738",       // F41 ASCII
        "313536",                 // F49 ASCII
        "0102030405060708",       // F52 binary
        "0015",
        "9F2608112233445566778882027C00", // F55 LLL BCD 15, BER-TLV
        "0011",
        "220000010000",     // F60 LLL BCD 11 digits "22000001000"
        "A1A2A3A4A5A6A7A8", // F64 MAC
    ]
    .concat();
    (msg, hex)
}

#[test]
fn cup_0200_encodes_to_hand_derived_bytes() {
    let spec = Spec::builtin("cup").unwrap();
    let (msg, hex) = cup_0200();
    let bytes = spec.encode(&msg).unwrap();
    assert_eq!(to_hex(&bytes), hex);
    let back = spec.decode(&bytes).unwrap();
    assert_eq!(back, msg);
    assert_eq!(back.text(35), Some("6222021234567890=2512"));
    assert_eq!(
        back.get(55).unwrap().subfield("9F26").unwrap().as_bytes(),
        Some(&h("1122334455667788")[..])
    );
}

#[test]
fn cup_secondary_bitmap_when_field_above_64() {
    let spec = Spec::builtin("cup").unwrap();
    let msg = Message::new("0800")
        .with_tpdu(h("6000030000"))
        .with_header(h("603100000000"))
        .with(11, "000001")
        .with(128, h("0000000000000000"));
    let bytes = spec.encode(&msg).unwrap();
    let hex = [
        "6000030000603100000000",
        "0800",
        "8020000000000000", // bit 1 (secondary present) + bit 11
        "0000000000000001", // bit 128
        "000001",
        "0000000000000000",
    ]
    .concat();
    assert_eq!(to_hex(&bytes), hex);
    assert_eq!(spec.decode(&bytes).unwrap(), msg);
}

#[test]
fn right_aligned_bcd_and_other_encodings_from_a_custom_spec() {
    let spec = Spec::from_toml_str(
        r#"
name = "custom"
[message]
mti = "ebcdic"
bitmap = "binary"
secondary_bitmap = false
[defaults]
length_encoding = "binary"
numeric = "bcd"
align = "right"
pad = "F"
[fields]
2 = { format = "n..19" }
3 = { format = "n 3", align = "left", pad = "0" }
4 = { format = "x+n 8" }
5 = { format = "an 3", encoding = "ebcdic" }
6 = { format = "n...999", length_encoding = "ascii", encoding = "ascii" }
7 = { format = "b..20", encoding = "hex", length_encoding = "ebcdic" }
"#,
        "custom",
    )
    .unwrap();
    let msg = Message::new("0100")
        .with(2, "123")
        .with(3, "123")
        .with(4, "D00001234")
        .with(5, "AB1")
        .with(6, "42")
        .with(7, h("ABCD"));
    let bytes = spec.encode(&msg).unwrap();
    let hex = [
        "F0F1F0F0",         // MTI EBCDIC
        "7E00000000000000", // bitmap: 2..7
        "03",
        "F123", // F2: binary LL 3, right-aligned, pad F
        "1230", // F3: left-aligned, pad 0 (field override)
        "44",
        "00001234", // F4: 'D' then BCD digits
        "C1C2F1",   // F5 EBCDIC
        "303032",
        "3432", // F6: ASCII LLL 002, ASCII digits
        "F0F2",
        "41424344", // F7: EBCDIC LL 02 (bytes), value as ASCII hex
    ]
    .concat();
    assert_eq!(to_hex(&bytes), hex);
    assert_eq!(spec.decode(&bytes).unwrap(), msg);

    // Wrong pad nibble is rejected (round trips must be exact).
    let mut bad = bytes.clone();
    bad[13] = 0x01; // F2 first byte 0xF1 -> 0x01
    let e = spec.decode(&bad).unwrap_err();
    assert_eq!(e.code(), "CODEC_BAD_VALUE", "{e}");
}

#[test]
fn iso87_ascii_known_message() {
    let spec = Spec::builtin("iso87-ascii").unwrap();
    let msg = Message::new("0200")
        .with(2, "4111111111111111")
        .with(3, "300000")
        .with(28, "C00000150")
        .with(35, "4111111111111111=2512")
        .with(52, h("0A1B2C3D4E5F6071"))
        .with(102, "12345");
    let bytes = spec.encode(&msg).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    // bitmap: 1 (secondary), 2, 3, 28, 35, 52 ; secondary: 102
    // byte1 1110 0000 = E0, byte2 00, byte3 00, byte4 (25..32) 28 -> 0001 0000 = 10,
    // byte5 (33..40) 35 -> 0010 0000 = 20, byte6 00, byte7 (49..56) 52 -> 0001 0000 = 10,
    // byte8 00; secondary byte5 (97..104) 102 -> 0000 0100 = 04.
    let want = [
        "0200",
        "E000001020001000",
        "0000000004000000",
        "164111111111111111",
        "300000",
        "C00000150",
        "214111111111111111=2512",
        "0A1B2C3D4E5F6071",
        "0512345",
    ]
    .concat();
    assert_eq!(text, want);
    assert_eq!(spec.decode(&bytes).unwrap(), msg);
    // Lowercase hex in the bitmap is accepted when decoding.
    let lower = want.replacen("E000001020001000", "e000001020001000", 1);
    assert_eq!(spec.decode(lower.as_bytes()).unwrap(), msg);
}

#[test]
fn typed_errors_not_panics() {
    let cup = Spec::builtin("cup").unwrap();
    let (msg, hex) = cup_0200();
    let bytes = h(&hex);

    // Truncation anywhere gives a typed error.
    for cut in 0..bytes.len() {
        let e = cup.decode(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(e.code(), "CODEC_TRUNCATED" | "CODEC_BAD_LENGTH"),
            "{cut}: {e}"
        );
    }
    // Trailing bytes.
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(cup.decode(&long).unwrap_err().code(), "CODEC_TRAILING_DATA");

    // F35 length 38 > 37.
    let mut bad = bytes.clone();
    let pos = hex.find("216222021234567890D25120").unwrap() / 2;
    bad[pos] = 0x38;
    let e = cup.decode(&bad).unwrap_err();
    assert_eq!(e.code(), "CODEC_BAD_LENGTH");
    assert!(
        matches!(
            e,
            CodecError::BadLength {
                at: Location::Field(35),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "field 35: length 38 exceeds the maximum 37 (z..37)"
    );

    // Too large.
    let huge = vec![0u8; cup.max_message_len() + 1];
    assert_eq!(cup.decode(&huge).unwrap_err().code(), "CODEC_TOO_LARGE");

    // Encoding errors.
    let e = cup.encode(&msg.clone().with(3, "12345")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "field 3: expected exactly 6 digits (n 6), got 5"
    );
    let e = cup.encode(&msg.clone().with(3, "12345a")).unwrap_err();
    assert_eq!(e.code(), "CODEC_BAD_VALUE");
    let e = cup.encode(&msg.clone().with(5, "1")).unwrap_err();
    assert_eq!(e.code(), "CODEC_UNKNOWN_FIELD");
    let e = cup
        .encode(&Message {
            tpdu: None,
            ..msg.clone()
        })
        .unwrap_err();
    assert_eq!(e.code(), "CODEC_BAD_VALUE");
    let e = cup
        .encode(
            &msg.clone()
                .with(60, FieldValue::subfields([("1", "22"), ("3", "000")])),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("subfield 2 before it is missing"),
        "{e}"
    );

    // Unknown bitmap bit.
    let mut unknown = bytes.clone();
    unknown[13] |= 0x08; // set bit 5 in the primary bitmap
    assert_eq!(
        cup.decode(&unknown).unwrap_err().code(),
        "CODEC_UNKNOWN_FIELD"
    );

    assert_eq!(
        Spec::builtin("nope").unwrap_err().code(),
        "CODEC_UNKNOWN_PROFILE"
    );
    assert_eq!(
        Spec::by_name_or_path("nope").unwrap_err().code(),
        "CODEC_UNKNOWN_PROFILE"
    );
    assert_eq!(
        Spec::by_name_or_path("/nonexistent/x.toml")
            .unwrap_err()
            .code(),
        "CODEC_IO"
    );
}

#[test]
fn encode_into_appends_and_restores_on_error() {
    let cup = Spec::builtin("cup").unwrap();
    let (msg, hex) = cup_0200();
    let mut out = vec![0xEE];
    cup.encode_into(&msg, &mut out).unwrap();
    assert_eq!(out[0], 0xEE);
    assert_eq!(to_hex(&out[1..]), hex);
    let before = out.clone();
    assert!(
        cup.encode_into(&msg.clone().with(3, "x"), &mut out)
            .is_err()
    );
    assert_eq!(out, before);
}
