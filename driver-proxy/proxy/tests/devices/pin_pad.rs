use openteller_crypto::{self as crypto, Algorithm, Key};
use openteller_proto::device::v1::{
    CompletionCode, DeleteKey, GenerateMac, GetKeyDetail, GetPin, GetPinBlock, ImportKey,
    ImportKeyComponents, KeyAlgorithm, KeyUsage, MacAlgorithm, PinBlockFormat, PinPadCommand,
    PinPadSimAction, PressKeys, command, command_completion, device_event, device_status,
    pin_pad_command::Command as Pin, pin_pad_event::Event as PinEvent, pin_pad_result,
    pin_pad_sim_action::Action as SimPin, simulator_request::Action,
};

use crate::support::*;

const TMK: &str = "0123456789ABCDEFFEDCBA9876543210";
const TPK: &str = "11223344556677888877665544332211";
const TAK: &str = "A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8";

fn pin(c: Pin) -> command::Command {
    command::Command::PinPad(PinPadCommand { command: Some(c) })
}

fn press(keys: &[&str]) -> Action {
    Action::PinPad(PinPadSimAction {
        action: Some(SimPin::PressKeys(PressKeys {
            keys: keys.iter().map(|k| (*k).into()).collect(),
        })),
    })
}

fn result(c: &openteller_proto::device::v1::CommandCompletion) -> pin_pad_result::Result {
    match c.result.clone() {
        Some(command_completion::Result::PinPad(r)) => r.result.expect("result"),
        other => panic!("no PIN pad result: {other:?}"),
    }
}

/// Loads the TMK from two clear components, then TPK and TAK encrypted under it.
async fn load_keys(p: &Proxy) {
    let tmk = hex::decode(TMK).unwrap();
    let c1: Vec<u8> = (0..16).map(|i| i as u8 * 17).collect();
    let c2: Vec<u8> = tmk.iter().zip(&c1).map(|(a, b)| a ^ b).collect();
    let kcv = crypto::kcv_hex(&Key::new(Algorithm::Tdes, &tmk).unwrap());
    let (_, done) = p
        .execute(
            "tmk",
            0,
            pin(Pin::ImportKeyComponents(ImportKeyComponents {
                name: "TMK".into(),
                usage: KeyUsage::KeyEncryption as i32,
                algorithm: KeyAlgorithm::Tdes as i32,
                components: vec![c1, c2],
                expected_kcv: kcv.clone(),
            })),
        )
        .await;
    assert_eq!(
        code(&done),
        CompletionCode::Success,
        "{:?}",
        done.completion
    );
    let Some(command_completion::Result::PinPad(r)) = &done.result else {
        panic!()
    };
    let Some(pin_pad_result::Result::Key(info)) = &r.result else {
        panic!()
    };
    assert_eq!(info.kcv, kcv);

    let tmk_key = Key::from_hex(Algorithm::Tdes, TMK).unwrap();
    for (name, value, usage) in [("TPK", TPK, KeyUsage::Pin), ("TAK", TAK, KeyUsage::Mac)] {
        let clear = hex::decode(value).unwrap();
        let wrapped = crypto::ecb_encrypt(&tmk_key, &clear).unwrap();
        let kcv = crypto::kcv_hex(&Key::new(Algorithm::Tdes, &clear).unwrap());
        let (_, done) = p
            .execute(
                name,
                0,
                pin(Pin::ImportKey(ImportKey {
                    name: name.into(),
                    usage: usage as i32,
                    algorithm: KeyAlgorithm::Tdes as i32,
                    kek_name: "TMK".into(),
                    encrypted_key: wrapped,
                    expected_kcv: kcv,
                })),
            )
            .await;
        assert_eq!(
            code(&done),
            CompletionCode::Success,
            "{name}: {:?}",
            done.completion
        );
    }
}

#[tokio::test]
async fn pin_entry_is_masked_and_only_the_encrypted_block_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::start("PinPad", dir.path()).await;
    load_keys(&p).await;

    // Keys pressed while no entry is active are refused.
    assert_eq!(
        sim_code(&p.control(press(&["1"])).await),
        CompletionCode::SequenceError
    );

    let client = p.device();
    let entry = tokio::spawn(async move {
        execute(
            client,
            "pin",
            10_000,
            pin(Pin::GetPin(GetPin {
                min_length: 4,
                max_length: 6,
                auto_end: false,
            })),
        )
        .await
    });
    control_until_ok(&p, press(&["9"])).await;
    let r = p
        .control(press(&["BACKSPACE", "1", "2", "3", "ENTER", "4", "ENTER"]))
        .await;
    assert_eq!(sim_code(&r), CompletionCode::Success);
    // The reply describes the pad after the keys were applied.
    let Some(device_status::Detail::PinPad(after)) = r.status.and_then(|s| s.detail) else {
        panic!("no status")
    };
    assert!(!after.entry_active);
    assert_eq!(after.digits_entered, 4);
    let (events, done) = entry.await.unwrap();
    assert_eq!(code(&done), CompletionCode::Success);
    let pin_pad_result::Result::GetPin(g) = result(&done) else {
        panic!()
    };
    assert_eq!(g.digits, 4);
    let keys: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(device_event::Event::PinPad(p)) => match &p.event {
                Some(PinEvent::KeyPressed(k)) => Some(k.key.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    // ENTER with 3 digits is ignored (too short); digits are never echoed.
    assert_eq!(keys, ["*", "BACKSPACE", "*", "*", "*", "*"]);
    let debug = format!("{events:?}{done:?}");
    assert!(!debug.contains("1234"));

    let pan = "6222020200112233445";
    let (_, done) = p
        .execute(
            "block",
            0,
            pin(Pin::GetPinBlock(GetPinBlock {
                key_name: "TPK".into(),
                format: PinBlockFormat::Iso0 as i32,
                pan: pan.into(),
            })),
        )
        .await;
    assert_eq!(
        code(&done),
        CompletionCode::Success,
        "{:?}",
        done.completion
    );
    let pin_pad_result::Result::PinBlock(b) = result(&done) else {
        panic!()
    };
    let tpk = Key::from_hex(Algorithm::Tdes, TPK).unwrap();
    let clear = crypto::extract_pin(crypto::PinBlockFormat::Iso0, &b.pin_block, pan, &tpk).unwrap();
    assert_eq!(clear.as_str(), "1234");

    // The PIN block is bound to a PIN key: the MAC key is refused, unknown keys too.
    let (_, wrong) = p
        .execute(
            "block2",
            0,
            pin(Pin::GetPinBlock(GetPinBlock {
                key_name: "TAK".into(),
                format: PinBlockFormat::Iso0 as i32,
                pan: pan.into(),
            })),
        )
        .await;
    assert_eq!(error_code(&wrong), -407);
    let (_, missing) = p
        .execute(
            "block3",
            0,
            pin(Pin::GetPinBlock(GetPinBlock {
                key_name: "ZZZ".into(),
                format: PinBlockFormat::Iso0 as i32,
                pan: pan.into(),
            })),
        )
        .await;
    assert_eq!(error_code(&missing), -400);
    assert_eq!(missing.completion.unwrap().error_name, "KEYNOTFOUND");

    let data = b"0200 message to authenticate".to_vec();
    let (_, mac) = p
        .execute(
            "mac",
            0,
            pin(Pin::GenerateMac(GenerateMac {
                key_name: "TAK".into(),
                algorithm: MacAlgorithm::X919 as i32,
                data: data.clone(),
            })),
        )
        .await;
    let pin_pad_result::Result::Mac(m) = result(&mac) else {
        panic!()
    };
    let tak = Key::from_hex(Algorithm::Tdes, TAK).unwrap();
    assert_eq!(
        m.mac,
        crypto::mac(crypto::MacAlgorithm::AnsiX919, &tak, &data).unwrap()
    );
}

#[tokio::test]
async fn bad_keys_are_refused_and_the_table_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proxy::start("PinPad", dir.path()).await;
    load_keys(&p).await;

    let bad_length = Pin::ImportKeyComponents(ImportKeyComponents {
        name: "BAD".into(),
        usage: KeyUsage::Pin as i32,
        algorithm: KeyAlgorithm::Sm4 as i32,
        components: vec![vec![1; 8], vec![2; 8]],
        expected_kcv: String::new(),
    });
    let (_, r) = p.execute("bad-len", 0, pin(bad_length)).await;
    assert_eq!(error_code(&r), -409);
    let wrong_kcv = Pin::ImportKey(ImportKey {
        name: "TPK".into(),
        usage: KeyUsage::Pin as i32,
        algorithm: KeyAlgorithm::Tdes as i32,
        kek_name: "TMK".into(),
        encrypted_key: vec![0x55; 16],
        expected_kcv: "000000".into(),
    });
    let (_, r) = p.execute("bad-kcv", 0, pin(wrong_kcv)).await;
    assert_eq!(code(&r), CompletionCode::CommandError);
    let (_, r) = p
        .execute(
            "del",
            0,
            pin(Pin::DeleteKey(DeleteKey {
                name: "nope".into(),
            })),
        )
        .await;
    assert_eq!(error_code(&r), -400);

    let detail = |p: &Proxy| {
        let p_device = p.device();
        async move {
            let (_, d) = execute(
                p_device,
                "detail",
                0,
                pin(Pin::GetKeyDetail(GetKeyDetail {})),
            )
            .await;
            let Some(command_completion::Result::PinPad(r)) = d.result else {
                panic!()
            };
            let Some(pin_pad_result::Result::KeyDetail(k)) = r.result else {
                panic!()
            };
            k.keys
                .into_iter()
                .map(|k| (k.name, k.kcv))
                .collect::<Vec<_>>()
        }
    };
    let before = detail(&p).await;
    assert_eq!(
        before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["TMK", "TPK", "TAK"]
    );
    // The failed TPK import left the TPK as it was.
    let tpk_kcv = crypto::kcv_hex(&Key::from_hex(Algorithm::Tdes, TPK).unwrap());
    assert!(before.contains(&("TPK".into(), tpk_kcv)));

    p.kill9();
    let p = Proxy::start("PinPad", dir.path()).await;
    assert_eq!(detail(&p).await, before);
    // Key values never appear in the state's API; the state file itself is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.state_dir.join("pin-pad.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key table must not be readable by others");
    }
}
