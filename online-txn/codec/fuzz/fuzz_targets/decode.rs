//! Fuzz target: no input makes the codec panic. The first byte picks what to exercise;
//! whatever decodes must re-encode and decode to the same message.

#![no_main]

use std::sync::LazyLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use openteller_codec::framing::{Framer, LengthPrefix};
use openteller_codec::{Message, Spec};

static CUP: LazyLock<Spec> = LazyLock::new(|| Spec::builtin("cup").expect("cup"));
static ISO87: LazyLock<Spec> = LazyLock::new(|| Spec::builtin("iso87-ascii").expect("iso87"));

fn round_trip(spec: &Spec, data: &[u8], exact: bool) {
    if let Ok(msg) = spec.decode(data) {
        let again = spec.encode(&msg).expect("a decoded message re-encodes");
        if exact {
            assert_eq!(again, data, "binary profiles re-encode byte for byte");
        }
        assert_eq!(spec.decode(&again).expect("re-decodes"), msg);
        let json = msg.to_json();
        assert_eq!(Message::from_json(&json).expect("JSON parses"), msg);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => round_trip(&CUP, rest, true),
        1 => round_trip(&ISO87, rest, false),
        2 => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(msg) = Message::from_json(text)
            {
                let _ = CUP.encode(&msg);
                let _ = ISO87.encode(&msg);
            }
        }
        _ => {
            for prefix in [LengthPrefix::Binary2, LengthPrefix::Bcd2, LengthPrefix::Ascii4] {
                let framer = Framer::new(prefix, 4096);
                let mut buf = BytesMut::from(rest);
                while let Ok(Some(frame)) = framer.decode_frame(&mut buf) {
                    let _ = CUP.decode_bytes(&frame);
                }
            }
        }
    }
});
