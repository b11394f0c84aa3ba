//! Known-answer and error-case tests for openteller-crypto.
//!
//! Vectors were cross-checked with OpenSSL 3 (`des-ecb`, `des-ede-ecb`, `sm4-ecb`,
//! legacy provider) and against published references (FIPS 81 "Now is t",
//! GB/T 32907 SM4 example, ISO 9797-1 annex B MAC algorithms 1 and 3).

use openteller_crypto::*;

fn tdes() -> Key {
    Key::from_hex(Algorithm::Tdes, "0123456789ABCDEFFEDCBA9876543210").unwrap()
}

fn sm4() -> Key {
    Key::from_hex(Algorithm::Sm4, "0123456789abcdeffedcba9876543210").unwrap()
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const PAN: &str = "43219876543210987";

// ---------------------------------------------------------------- ciphers

#[test]
fn sm4_gbt32907_vector() {
    let ct = ecb_encrypt(&sm4(), &h("0123456789abcdeffedcba9876543210")).unwrap();
    assert_eq!(ct, h("681edf34d206965e86b3e94f536e4246"));
    let pt = ecb_decrypt(&sm4(), &ct).unwrap();
    assert_eq!(pt, h("0123456789abcdeffedcba9876543210"));
}

#[test]
fn single_des_classic_vector_via_x99() {
    // FIPS 81: DES(0123456789ABCDEF, "Now is t") = 3FA40E8A984D4815.
    // A one-block X9.9 MAC is exactly one single-DES encryption.
    let k = Key::from_hex(Algorithm::Tdes, "0123456789ABCDEF").unwrap();
    assert_eq!(
        mac(MacAlgorithm::AnsiX99, &k, b"Now is t").unwrap(),
        h("3FA40E8A984D4815")
    );
}

#[test]
fn tdes_ecb_and_cbc_vectors() {
    let pt = h("0412AC89ABCDEF670412AC89ABCDEF67");
    let ecb = ecb_encrypt(&tdes(), &pt).unwrap();
    assert_eq!(ecb, h("C967C8198151A458C967C8198151A458"));
    let cbc = cbc_encrypt_zero_iv(&tdes(), &pt).unwrap();
    assert_eq!(cbc, h("C967C8198151A45816EED7C70EAC1C3A"));
    assert_eq!(cbc_decrypt_zero_iv(&tdes(), &cbc).unwrap(), pt);
    assert_eq!(ecb_decrypt(&tdes(), &ecb).unwrap(), pt);
}

#[test]
fn sm4_cbc_round_trip() {
    let pt: Vec<u8> = (0u8..48).collect();
    let ct = cbc_encrypt_zero_iv(&sm4(), &pt).unwrap();
    assert_ne!(ct, ecb_encrypt(&sm4(), &pt).unwrap());
    assert_eq!(cbc_decrypt_zero_iv(&sm4(), &ct).unwrap(), pt);
}

#[test]
fn block_length_errors() {
    for data in [&[][..], &[0u8; 7][..], &[0u8; 9][..]] {
        assert!(matches!(
            ecb_encrypt(&tdes(), data),
            Err(CryptoError::InvalidDataLength { block_size: 8, .. })
        ));
    }
    assert!(matches!(
        cbc_decrypt_zero_iv(&sm4(), &[0u8; 8]),
        Err(CryptoError::InvalidDataLength {
            len: 8,
            block_size: 16
        })
    ));
    let single = Key::from_hex(Algorithm::Tdes, "0123456789ABCDEF").unwrap();
    assert!(matches!(
        ecb_encrypt(&single, &[0u8; 8]),
        Err(CryptoError::KeyNotPermitted(_))
    ));
}

// ---------------------------------------------------------------- keys

#[test]
fn key_lengths_and_debug() {
    for len in [0, 1, 7, 9, 15, 17, 23, 25, 32] {
        assert_eq!(
            Key::new(Algorithm::Tdes, &vec![0x11; len]).unwrap_err(),
            CryptoError::InvalidKeyLength {
                algorithm: Algorithm::Tdes,
                len
            }
        );
    }
    for len in [8, 24, 32] {
        assert!(Key::new(Algorithm::Sm4, &vec![0x11; len]).is_err());
    }
    assert_eq!(
        Key::from_hex(Algorithm::Tdes, "zz").unwrap_err(),
        CryptoError::InvalidHex
    );
    let dbg = format!("{:?}", tdes());
    assert!(dbg.contains("redacted"));
    assert!(!dbg.to_lowercase().contains("0123") && !dbg.contains("1, 35"));
}

#[test]
fn kcv_vectors() {
    assert_eq!(kcv(&tdes()), [0x08, 0xD7, 0xB4]);
    assert_eq!(kcv_hex(&tdes()), "08D7B4");
    let tdes3 = Key::from_hex(
        Algorithm::Tdes,
        "0123456789ABCDEFFEDCBA987654321089ABCDEF01234567",
    )
    .unwrap();
    assert_eq!(kcv_hex(&tdes3), "3FD539");
    assert_eq!(kcv_hex(&sm4()), "2677F4");
    // Single DES: KCV allowed (legacy MAC keys).
    let single = Key::from_hex(Algorithm::Tdes, "0123456789ABCDEF").unwrap();
    assert_eq!(kcv_hex(&single), "D5D44F");
}

#[test]
fn components() {
    let a = h("0123456789ABCDEFFEDCBA9876543210");
    let b = h("1111111111111111FFFFFFFFFFFFFFFF");
    let c = h("2222222222222222EEEEEEEEEEEEEEEE");
    let key = combine_components(&[&a, &b, &c]).unwrap();
    let expected: Vec<u8> = (0..16).map(|i| a[i] ^ b[i] ^ c[i]).collect();
    assert_eq!(*key, expected);
    assert!(matches!(
        combine_components(&[]),
        Err(CryptoError::InvalidComponents(_))
    ));
    assert!(matches!(
        combine_components(&[&a]),
        Err(CryptoError::InvalidComponents(_))
    ));
    assert!(matches!(
        combine_components(&[&a, &a[..8]]),
        Err(CryptoError::InvalidComponents(_))
    ));
    assert!(matches!(
        combine_components(&[&[], &[]]),
        Err(CryptoError::InvalidComponents(_))
    ));
}

#[test]
fn key_import() {
    // Key 1111111111111111 2222222222222222 under KEK 0123..3210 (ECB),
    // KCV D2B91C (OpenSSL des-ede-ecb).
    let wrapped = h("9B3A7B883A100F73B4ABA2BB791C50E7");
    let key = import_key(
        &tdes(),
        &wrapped,
        WrapMode::Ecb,
        Algorithm::Tdes,
        &[0xD2, 0xB9, 0x1C],
    )
    .unwrap();
    assert_eq!(kcv_hex(&key), "D2B91C");

    assert_eq!(
        import_key(
            &tdes(),
            &wrapped,
            WrapMode::Ecb,
            Algorithm::Tdes,
            &[0, 0, 0]
        )
        .unwrap_err(),
        CryptoError::KcvMismatch {
            expected: "000000".into(),
            actual: "D2B91C".into()
        }
    );
    assert!(matches!(
        import_key(
            &tdes(),
            &wrapped[..15],
            WrapMode::Ecb,
            Algorithm::Tdes,
            &[0; 3]
        ),
        Err(CryptoError::InvalidDataLength { .. })
    ));

    // CBC round trip, SM4 key under SM4 KEK and TDES key under SM4 KEK.
    let inner = Key::from_hex(Algorithm::Sm4, "00112233445566778899AABBCCDDEEFF").unwrap();
    let wrapped = cbc_encrypt_zero_iv(&sm4(), &h("00112233445566778899AABBCCDDEEFF")).unwrap();
    let got = import_key(
        &sm4(),
        &wrapped,
        WrapMode::CbcZeroIv,
        Algorithm::Sm4,
        &kcv(&inner),
    )
    .unwrap();
    assert_eq!(kcv(&got), kcv(&inner));
    let wrapped = ecb_encrypt(&sm4(), &h("11111111111111112222222222222222")).unwrap();
    let got = import_key(
        &sm4(),
        &wrapped,
        WrapMode::Ecb,
        Algorithm::Tdes,
        &[0xD2, 0xB9, 0x1C],
    )
    .unwrap();
    assert_eq!(got.algorithm(), Algorithm::Tdes);
}

// ---------------------------------------------------------------- PIN blocks

#[test]
fn iso0_known_answer() {
    let block = build_pin_block(PinBlockFormat::Iso0, "1234", PAN).unwrap();
    assert_eq!(block.expose_bytes(), h("0412AC89ABCDEF67"));
    assert_eq!(block.encrypt(&tdes()).unwrap(), h("C967C8198151A458"));
    assert!(format!("{block:?}").contains("redacted"));
    assert!(!format!("{block:?}").contains("12"));
}

#[test]
fn sm4_iso0_known_answer() {
    let block = build_pin_block(PinBlockFormat::Sm4Iso0, "1234", PAN).unwrap();
    assert_eq!(block.expose_bytes(), h("041234FFFFFFFFFFFFFF6789ABCDEF67"));
    let enc = block.encrypt(&sm4()).unwrap();
    assert_eq!(enc, h("2F4CE37485FC0428C8030464FE0AB237"));
    assert_eq!(
        extract_pin(PinBlockFormat::Sm4Iso0, &enc, PAN, &sm4())
            .unwrap()
            .as_str(),
        "1234"
    );
}

#[test]
fn iso1_and_iso3_structure() {
    for _ in 0..32 {
        let b1 = build_pin_block(PinBlockFormat::Iso1, "123456", "").unwrap();
        assert_eq!(&b1.expose_bytes()[..4], &h("16123456")[..]);
        let b3 = build_pin_block(PinBlockFormat::Iso3, "1234", PAN).unwrap();
        let pan_field = h("0000987654321098");
        let field: Vec<u8> = b3
            .expose_bytes()
            .iter()
            .zip(&pan_field)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(&field[..3], &h("341234")[..]);
        for byte in &field[3..] {
            assert!(byte >> 4 >= 0xA && byte & 0xF >= 0xA, "fill {field:02X?}");
        }
    }
}

#[test]
fn pin_round_trips_all_formats() {
    for (format, key) in [
        (PinBlockFormat::Iso0, tdes()),
        (PinBlockFormat::Iso1, tdes()),
        (PinBlockFormat::Iso3, tdes()),
        (PinBlockFormat::Sm4Iso0, sm4()),
    ] {
        for pin in ["0000", "1234", "98765432", "012345678901"] {
            let enc = encrypt_pin_block(format, pin, PAN, &key).unwrap();
            assert_eq!(enc.len(), format.block_len());
            assert_eq!(extract_pin(format, &enc, PAN, &key).unwrap().as_str(), pin);
            assert!(verify_pin(format, &enc, PAN, &key, pin).unwrap());
            assert!(!verify_pin(format, &enc, PAN, &key, "1111").unwrap());
        }
    }
}

#[test]
fn pin_translation() {
    let zpk = Key::from_hex(Algorithm::Tdes, "89ABCDEF0123456776543210FEDCBA98").unwrap();
    let from = encrypt_pin_block(PinBlockFormat::Iso0, "4321", PAN, &tdes()).unwrap();
    // TDES ISO-0 -> SM4 ISO-0 -> TDES ISO-3 -> TDES ISO-1 (other key).
    let to_sm4 = translate_pin_block(
        &tdes(),
        PinBlockFormat::Iso0,
        &from,
        &sm4(),
        PinBlockFormat::Sm4Iso0,
        PAN,
    )
    .unwrap();
    assert_eq!(
        extract_pin(PinBlockFormat::Sm4Iso0, &to_sm4, PAN, &sm4())
            .unwrap()
            .as_str(),
        "4321"
    );
    let to_iso3 = translate_pin_block(
        &sm4(),
        PinBlockFormat::Sm4Iso0,
        &to_sm4,
        &zpk,
        PinBlockFormat::Iso3,
        PAN,
    )
    .unwrap();
    assert!(verify_pin(PinBlockFormat::Iso3, &to_iso3, PAN, &zpk, "4321").unwrap());
    let to_iso1 = translate_pin_block(
        &zpk,
        PinBlockFormat::Iso3,
        &to_iso3,
        &tdes(),
        PinBlockFormat::Iso1,
        PAN,
    )
    .unwrap();
    assert!(verify_pin(PinBlockFormat::Iso1, &to_iso1, "", &tdes(), "4321").unwrap());
    // Wrong destination key type is rejected.
    assert!(matches!(
        translate_pin_block(
            &tdes(),
            PinBlockFormat::Iso0,
            &from,
            &tdes(),
            PinBlockFormat::Sm4Iso0,
            PAN
        ),
        Err(CryptoError::UnsupportedFormat { .. })
    ));
}

#[test]
fn pin_errors() {
    use PinBlockFormat::*;
    for pin in ["", "123", "1234567890123", "12a4", "12 34", "١٢٣٤"] {
        assert!(
            matches!(
                build_pin_block(Iso0, pin, PAN),
                Err(CryptoError::InvalidPin(_))
            ),
            "{pin:?}"
        );
    }
    for pan in [
        "",
        "123456789012",
        "12345678901234567890",
        "432198765432109X7",
    ] {
        assert!(
            matches!(
                build_pin_block(Iso0, "1234", pan),
                Err(CryptoError::InvalidPan(_))
            ),
            "{pan:?}"
        );
        assert!(matches!(
            build_pin_block(Sm4Iso0, "1234", pan),
            Err(CryptoError::InvalidPan(_))
        ));
    }
    // Format/key algorithm mismatch.
    assert_eq!(
        encrypt_pin_block(Iso0, "1234", PAN, &sm4()).unwrap_err(),
        CryptoError::UnsupportedFormat {
            format: Iso0,
            algorithm: Algorithm::Sm4
        }
    );
    assert!(matches!(
        encrypt_pin_block(Sm4Iso0, "1234", PAN, &tdes()),
        Err(CryptoError::UnsupportedFormat { .. })
    ));
    // Single-DES keys cannot encrypt PINs.
    let single = Key::from_hex(Algorithm::Tdes, "0123456789ABCDEF").unwrap();
    assert!(matches!(
        encrypt_pin_block(Iso0, "1234", PAN, &single),
        Err(CryptoError::KeyNotPermitted(_))
    ));
    // Wrong lengths, wrong key, wrong PAN, wrong format.
    let enc = encrypt_pin_block(Iso0, "1234", PAN, &tdes()).unwrap();
    assert!(matches!(
        extract_pin(Iso0, &enc[..7], PAN, &tdes()),
        Err(CryptoError::InvalidBlock(_))
    ));
    let other = Key::from_hex(Algorithm::Tdes, "11111111111111112222222222222222").unwrap();
    assert!(matches!(
        extract_pin(Iso0, &enc, PAN, &other),
        Err(CryptoError::InvalidBlock(_))
    ));
    assert!(matches!(
        extract_pin(Iso0, &enc, "5555555555555555", &tdes()),
        Err(CryptoError::InvalidBlock(_))
    ));
    assert!(matches!(
        extract_pin(Iso3, &enc, PAN, &tdes()),
        Err(CryptoError::InvalidBlock(_))
    ));
    // Error messages never carry the PIN.
    let msg = build_pin_block(Iso0, "98765x", PAN)
        .unwrap_err()
        .to_string();
    assert!(!msg.contains("98765"));
}

// ---------------------------------------------------------------- MACs

const NOW_ALL: &[u8] = b"Now is the time for all ";
const NOW_IT: &[u8] = b"Now is the time for it";

#[test]
fn x99_vectors() {
    // ISO 9797-1 annex B, MAC algorithm 1, padding method 1.
    assert_eq!(
        mac(MacAlgorithm::AnsiX99, &tdes(), NOW_ALL).unwrap(),
        h("70A30640CC76DD8B")
    );
    assert_eq!(
        mac(MacAlgorithm::AnsiX99, &tdes(), NOW_IT).unwrap(),
        h("E45B3AD2B7CC0856")
    );
}

#[test]
fn x919_vectors() {
    // ISO 9797-1 annex B, MAC algorithm 3, padding method 1.
    assert_eq!(
        mac(MacAlgorithm::AnsiX919, &tdes(), NOW_ALL).unwrap(),
        h("A1C72E74EA3FA9B6")
    );
    assert_eq!(
        mac(MacAlgorithm::AnsiX919, &tdes(), NOW_IT).unwrap(),
        h("2E2B1428CC78254F")
    );
}

#[test]
fn x919_with_equal_halves_is_x99() {
    let k = Key::from_hex(Algorithm::Tdes, "0123456789ABCDEF0123456789ABCDEF").unwrap();
    for data in [&b""[..], b"x", NOW_ALL, NOW_IT] {
        assert_eq!(
            mac(MacAlgorithm::AnsiX919, &k, data).unwrap(),
            mac(MacAlgorithm::AnsiX99, &k, data).unwrap()
        );
    }
}

#[test]
fn cup_ecb_vector() {
    // Computed step by step with OpenSSL des-ede-ecb (see module docs).
    let m = mac(MacAlgorithm::CupEcb, &tdes(), NOW_ALL).unwrap();
    assert_eq!(m, b"F5BE6DD0");
}

#[test]
fn sm4_mac_vector() {
    let m = mac(MacAlgorithm::Sm4Cbc, &sm4(), NOW_ALL).unwrap();
    assert_eq!(m, h("735A13D12D64588BB0DF793F2103C557"));
}

#[test]
fn mac_padding_rules() {
    for alg in [
        MacAlgorithm::AnsiX99,
        MacAlgorithm::AnsiX919,
        MacAlgorithm::CupEcb,
    ] {
        // Empty message == one zero block; aligned message gets no padding.
        assert_eq!(
            mac(alg, &tdes(), b"").unwrap(),
            mac(alg, &tdes(), &[0u8; 8]).unwrap()
        );
        assert_eq!(
            mac(alg, &tdes(), b"abc").unwrap(),
            mac(alg, &tdes(), b"abc\0\0\0\0\0").unwrap()
        );
        // CBC-MACs chain blocks; CUP-ECB only XORs them (so it cannot tell
        // one zero block from two, a property of the algorithm itself).
        if alg != MacAlgorithm::CupEcb {
            assert_ne!(
                mac(alg, &tdes(), &[0u8; 8]).unwrap(),
                mac(alg, &tdes(), &[0u8; 16]).unwrap()
            );
        }
    }
    assert_eq!(
        mac(MacAlgorithm::CupEcb, &tdes(), &[0u8; 8]).unwrap(),
        mac(MacAlgorithm::CupEcb, &tdes(), &[0u8; 16]).unwrap()
    );
    assert_eq!(
        mac(MacAlgorithm::Sm4Cbc, &sm4(), b"").unwrap(),
        mac(MacAlgorithm::Sm4Cbc, &sm4(), &[0u8; 16]).unwrap()
    );
}

#[test]
fn mac_verify_and_key_rules() {
    let m = mac(MacAlgorithm::AnsiX919, &tdes(), NOW_ALL).unwrap();
    assert!(verify_mac(MacAlgorithm::AnsiX919, &tdes(), NOW_ALL, &m).unwrap());
    assert!(verify_mac(MacAlgorithm::AnsiX919, &tdes(), NOW_ALL, &m[..4]).unwrap());
    assert!(!verify_mac(MacAlgorithm::AnsiX919, &tdes(), NOW_ALL, &m[..3]).unwrap());
    assert!(!verify_mac(MacAlgorithm::AnsiX919, &tdes(), NOW_IT, &m).unwrap());
    let mut long = m.clone();
    long.push(0);
    assert!(!verify_mac(MacAlgorithm::AnsiX919, &tdes(), NOW_ALL, &long).unwrap());

    let single = Key::from_hex(Algorithm::Tdes, "0123456789ABCDEF").unwrap();
    assert!(mac(MacAlgorithm::AnsiX99, &single, NOW_ALL).is_ok());
    assert!(mac(MacAlgorithm::CupEcb, &single, NOW_ALL).is_ok());
    assert!(matches!(
        mac(MacAlgorithm::AnsiX919, &single, NOW_ALL),
        Err(CryptoError::KeyNotPermitted(_))
    ));
    assert!(matches!(
        mac(MacAlgorithm::AnsiX99, &sm4(), NOW_ALL),
        Err(CryptoError::KeyNotPermitted(_))
    ));
    assert!(matches!(
        mac(MacAlgorithm::Sm4Cbc, &tdes(), NOW_ALL),
        Err(CryptoError::KeyNotPermitted(_))
    ));
}
