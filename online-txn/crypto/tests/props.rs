//! Property tests: PIN block round trips and absence of panics on arbitrary input.

use openteller_crypto::*;
use proptest::prelude::*;

const FORMATS: [PinBlockFormat; 4] = [
    PinBlockFormat::Iso0,
    PinBlockFormat::Iso1,
    PinBlockFormat::Iso3,
    PinBlockFormat::Sm4Iso0,
];

fn key_for(format: PinBlockFormat, bytes: &[u8]) -> Key {
    match format.algorithm() {
        Algorithm::Sm4 => Key::new(Algorithm::Sm4, &bytes[..16]).unwrap(),
        Algorithm::Tdes => Key::new(Algorithm::Tdes, bytes).unwrap(),
    }
}

fn any_algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::Tdes), Just(Algorithm::Sm4)]
}

/// Byte strings biased towards valid key lengths.
fn key_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 8),
        proptest::collection::vec(any::<u8>(), 16),
        proptest::collection::vec(any::<u8>(), 24),
        proptest::collection::vec(any::<u8>(), 0..33),
    ]
}

proptest! {
    #[test]
    fn pin_block_round_trip(
        pin in "[0-9]{4,12}",
        pan in "[0-9]{13,19}",
        format in proptest::sample::select(FORMATS.to_vec()),
        key_bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 16),
            proptest::collection::vec(any::<u8>(), 24),
        ],
    ) {
        let key = key_for(format, &key_bytes);
        let enc = encrypt_pin_block(format, &pin, &pan, &key).unwrap();
        prop_assert_eq!(enc.len(), format.block_len());
        let got = extract_pin(format, &enc, &pan, &key).unwrap();
        prop_assert_eq!(got.as_str(), pin.as_str());
        prop_assert!(verify_pin(format, &enc, &pan, &key, &pin).unwrap());
    }

    #[test]
    fn pin_translation_round_trip(
        pin in "[0-9]{4,12}",
        pan in "[0-9]{13,19}",
        from in proptest::sample::select(FORMATS.to_vec()),
        to in proptest::sample::select(FORMATS.to_vec()),
        k1 in proptest::collection::vec(any::<u8>(), 24),
        k2 in proptest::collection::vec(any::<u8>(), 16),
    ) {
        let (ka, kb) = (key_for(from, &k1), key_for(to, &k2));
        let enc = encrypt_pin_block(from, &pin, &pan, &ka).unwrap();
        let out = translate_pin_block(&ka, from, &enc, &kb, to, &pan).unwrap();
        prop_assert!(verify_pin(to, &out, &pan, &kb, &pin).unwrap());
    }

    #[test]
    fn x919_equal_halves_equals_x99(
        half in proptest::collection::vec(any::<u8>(), 8),
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let key = Key::new(Algorithm::Tdes, &[half.as_slice(), half.as_slice()].concat()).unwrap();
        prop_assert_eq!(
            mac(MacAlgorithm::AnsiX919, &key, &data).unwrap(),
            mac(MacAlgorithm::AnsiX99, &key, &data).unwrap()
        );
    }

    #[test]
    fn block_modes_round_trip(
        alg in any_algorithm(),
        key_bytes in proptest::collection::vec(any::<u8>(), 24),
        blocks in 1usize..5,
        seed in any::<u8>(),
    ) {
        let key = Key::new(alg, &key_bytes[..if alg == Algorithm::Sm4 { 16 } else { 24 }]).unwrap();
        let data: Vec<u8> = (0..blocks * alg.block_size()).map(|i| seed.wrapping_add(i as u8)).collect();
        prop_assert_eq!(ecb_decrypt(&key, &ecb_encrypt(&key, &data).unwrap()).unwrap(), data.clone());
        prop_assert_eq!(cbc_decrypt_zero_iv(&key, &cbc_encrypt_zero_iv(&key, &data).unwrap()).unwrap(), data);
    }

    /// No public function panics on arbitrary keys, data, PINs or PANs.
    #[test]
    fn no_panics_on_arbitrary_input(
        alg in any_algorithm(),
        key_bytes in key_like(),
        kek_bytes in key_like(),
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 8),
            proptest::collection::vec(any::<u8>(), 16),
            proptest::collection::vec(any::<u8>(), 0..70),
        ],
        pin in ".{0,16}",
        pan in ".{0,24}",
        kcv_bytes in any::<[u8; 3]>(),
    ) {
        let _ = Key::from_hex(alg, &pin);
        let _ = combine_components(&[&key_bytes, &kek_bytes]);
        for format in FORMATS {
            let _ = build_pin_block(format, &pin, &pan);
        }
        let keys: Vec<Key> = [Algorithm::Tdes, Algorithm::Sm4]
            .into_iter()
            .flat_map(|a| [Key::new(a, &key_bytes).ok(), Key::new(a, &kek_bytes).ok()])
            .flatten()
            .collect();
        for key in &keys {
            let _ = kcv(key);
            let _ = ecb_encrypt(key, &data);
            let _ = ecb_decrypt(key, &data);
            let _ = cbc_encrypt_zero_iv(key, &data);
            let _ = cbc_decrypt_zero_iv(key, &data);
            for m in [MacAlgorithm::AnsiX99, MacAlgorithm::AnsiX919, MacAlgorithm::CupEcb, MacAlgorithm::Sm4Cbc] {
                let _ = mac(m, key, &data);
                let _ = verify_mac(m, key, &data, &data);
            }
            for mode in [WrapMode::Ecb, WrapMode::CbcZeroIv] {
                let _ = import_key(key, &data, mode, alg, &kcv_bytes);
            }
            for format in FORMATS {
                let _ = encrypt_pin_block(format, &pin, &pan, key);
                let _ = extract_pin(format, &data, &pan, key);
                let _ = verify_pin(format, &data, &pan, key, &pin);
                for to in &keys {
                    let _ = translate_pin_block(key, format, &data, to, PinBlockFormat::Iso1, &pan);
                }
            }
        }
    }
}
