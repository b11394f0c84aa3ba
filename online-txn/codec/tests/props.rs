//! Property tests: random valid messages round-trip through encode and decode for both
//! built-in profiles; arbitrary and mutated bytes never make decode panic, and whatever
//! decodes re-encodes to the same message.

use std::sync::LazyLock;

use openteller_codec::spec::{FieldContent, FieldSpec, FieldType, LengthKind, TlvTag};
use openteller_codec::{FieldValue, Message, Spec, Subfield};
use proptest::prelude::*;

static CUP: LazyLock<Spec> = LazyLock::new(|| Spec::builtin("cup").unwrap());
static ISO87: LazyLock<Spec> = LazyLock::new(|| Spec::builtin("iso87-ascii").unwrap());

fn charset(t: FieldType) -> Vec<char> {
    (0x20u8..=0x7E)
        .filter(|&c| match t {
            FieldType::XN => c.is_ascii_digit(),
            other => other.allows(c),
        })
        .map(char::from)
        .collect()
}

fn text(t: FieldType, len: impl Strategy<Value = usize> + 'static) -> BoxedStrategy<String> {
    let chars = charset(t);
    len.prop_flat_map(move |n| {
        proptest::collection::vec(proptest::sample::select(chars.clone()), n)
            .prop_map(|v| v.into_iter().collect::<String>())
    })
    .boxed()
}

/// Lengths for a field: the fixed length, or 0..=max (kept short for speed, plus max).
fn lengths(f: &FieldSpec) -> BoxedStrategy<usize> {
    if f.length_kind == LengthKind::Fixed {
        Just(f.max_len).boxed()
    } else {
        prop_oneof![4 => 0..=f.max_len.min(24), 1 => Just(f.max_len)].boxed()
    }
}

fn ber_tag() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<u8>()
            .prop_filter("single-byte tag", |b| b & 0x1F != 0x1F)
            .prop_map(|b| vec![b]),
        (any::<u8>(), 0u8..0x80).prop_map(|(a, b)| vec![a | 0x1F, b]),
        (any::<u8>(), 0x80u8..=0xFF, 0u8..0x80).prop_map(|(a, b, c)| vec![a | 0x1F, b, c]),
    ]
}

fn value(f: &FieldSpec) -> BoxedStrategy<FieldValue> {
    match &f.content {
        FieldContent::Composite(subs) => {
            let min = if f.length_kind == LengthKind::Fixed {
                subs.len()
            } else {
                1
            };
            let subs = subs.clone();
            (min..=subs.len())
                .prop_flat_map(move |k| {
                    subs[..k]
                        .iter()
                        .map(|s| {
                            let id = s.id.clone();
                            let len = if s.variable {
                                (1..=s.len.min(20)).boxed()
                            } else {
                                Just(s.len).boxed()
                            };
                            text(s.field_type, len)
                                .prop_map(move |t| Subfield::new(id.clone(), t))
                                .boxed()
                        })
                        .collect::<Vec<_>>()
                })
                .prop_map(FieldValue::Subfields)
                .boxed()
        }
        FieldContent::Tlv(t) => {
            assert_eq!(t.tag, TlvTag::Ber, "only BER TLV in the built-in profiles");
            proptest::collection::vec(
                (ber_tag(), proptest::collection::vec(any::<u8>(), 0..=40)),
                0..=5,
            )
            .prop_map(|items| {
                FieldValue::Subfields(
                    items
                        .into_iter()
                        .map(|(tag, v)| Subfield::new(openteller_codec::encoding::to_hex(&tag), v))
                        .collect(),
                )
            })
            .boxed()
        }
        FieldContent::Plain => match f.field_type {
            FieldType::B => lengths(f)
                .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
                .prop_map(FieldValue::from)
                .boxed(),
            FieldType::XN => (
                prop_oneof![Just("C"), Just("D")],
                text(FieldType::N, Just(f.max_len)),
            )
                .prop_map(|(s, d)| FieldValue::from(format!("{s}{d}")))
                .boxed(),
            t => text(t, lengths(f)).prop_map(FieldValue::from).boxed(),
        },
    }
}

fn message(spec: &'static Spec) -> impl Strategy<Value = Message> {
    let numbers: Vec<u16> = spec.fields().map(|f| f.number).collect();
    let tpdu = spec.has_tpdu();
    let header_len = spec.header_len();
    (
        text(FieldType::N, Just(4)),
        proptest::collection::vec(any::<u8>(), 5),
        proptest::collection::vec(any::<u8>(), header_len),
        proptest::sample::subsequence(numbers.clone(), 0..=numbers.len().min(24)),
    )
        .prop_flat_map(move |(mti, t, h, chosen)| {
            let values: Vec<_> = chosen
                .iter()
                .map(|&n| {
                    let f = spec.field(n).unwrap();
                    value(f).prop_map(move |v| (n, v))
                })
                .collect();
            values.prop_map(move |fields| {
                let mut m = Message::new(mti.clone());
                if tpdu {
                    m = m.with_tpdu(t.clone());
                }
                if header_len > 0 {
                    m = m.with_header(h.clone());
                }
                for (n, v) in fields {
                    m.set(n, v);
                }
                m
            })
        })
}

fn check_round_trip(spec: &Spec, msg: &Message) -> Result<(), TestCaseError> {
    let bytes = spec
        .encode(msg)
        .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let back = spec
        .decode(&bytes)
        .map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(&back, msg);
    prop_assert_eq!(spec.encode(&back).unwrap(), bytes);
    let json = back.to_json();
    prop_assert_eq!(&Message::from_json(&json).unwrap(), msg);
    Ok(())
}

/// Whatever decodes must re-encode to a message that decodes the same (for binary
/// profiles: to the very same bytes).
fn check_no_panic(spec: &Spec, bytes: &[u8], exact: bool) -> Result<(), TestCaseError> {
    if let Ok(msg) = spec.decode(bytes) {
        let again = spec
            .encode(&msg)
            .map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
        if exact {
            prop_assert_eq!(&again[..], bytes);
        }
        prop_assert_eq!(spec.decode(&again).unwrap(), msg);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cup_messages_round_trip(msg in message(&CUP)) {
        check_round_trip(&CUP, &msg)?;
    }

    #[test]
    fn iso87_messages_round_trip(msg in message(&ISO87)) {
        check_round_trip(&ISO87, &msg)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_no_panic(&CUP, &bytes, true)?;
        check_no_panic(&ISO87, &bytes, false)?;
    }

    #[test]
    fn mutated_cup_messages_never_panic(
        msg in message(&CUP),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = CUP.encode(&msg).unwrap();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        check_no_panic(&CUP, &bytes, true)?;
        let n = cut.index(bytes.len() + 1);
        check_no_panic(&CUP, &bytes[..n], true)?;
    }

    #[test]
    fn mutated_iso87_messages_never_panic(
        msg in message(&ISO87),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0x20u8..0x7F), 1..4),
    ) {
        let mut bytes = ISO87.encode(&msg).unwrap();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        check_no_panic(&ISO87, &bytes, false)?;
    }

    #[test]
    fn arbitrary_json_never_panics(s in ".{0,200}") {
        if let Ok(m) = Message::from_json(&s) {
            let _ = CUP.encode(&m);
            let _ = ISO87.encode(&m);
        }
    }
}
