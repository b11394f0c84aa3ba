//! Pack and unpack of a typical CUP 0200 (fields 2, 3, 4, 11, 14, 22, 23, 25, 26, 35, 41,
//! 42, 49, 52, 53, 55, 60, 64).
//!
//! Run: `cargo bench -p openteller-codec --bench codec`. The `pack+unpack` figure, in
//! elements per second, is pairs per second on one core (the codec is single-threaded).

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use openteller_codec::encoding::from_hex;
use openteller_codec::{FieldValue, Message, Spec};

fn cup_0200() -> Message {
    let h = |s: &str| from_hex(s).expect("hex");
    Message::new("0200")
        .with_tpdu(h("6000030000"))
        .with_header(h("603100000000"))
        .with(2, "6222021234567890123")
        .with(3, "000000")
        .with(4, "000000010000")
        .with(11, "000123")
        .with(14, "2512")
        .with(22, "051")
        .with(23, "001")
        .with(25, "00")
        .with(26, "12")
        .with(35, "6222021234567890123=25122200000000000")
        .with(41, "12345678")
        .with(42, "123456789012345")
        .with(49, "156")
        .with(52, h("0A1B2C3D4E5F6071"))
        .with(53, "2600000000000000")
        .with(
            55,
            FieldValue::subfields([
                ("9F26", h("1122334455667788")),
                ("9F27", h("80")),
                ("9F10", h("07010103A0A000010A010000000000AABBCCDD")),
                ("9F37", h("12345678")),
                ("9F36", h("0001")),
                ("95", h("0000000000")),
                ("9A", h("250101")),
                ("9C", h("00")),
                ("9F02", h("000000010000")),
                ("5F2A", h("0156")),
                ("82", h("7C00")),
                ("9F1A", h("0156")),
                ("9F03", h("000000000000")),
                ("9F33", h("E0E1C8")),
                ("9F34", h("420300")),
                ("9F35", h("14")),
                ("9F1E", h("3132333435363738")),
                ("84", h("A000000333010101")),
                ("9F09", h("0020")),
                ("9F41", h("00000001")),
            ]),
        )
        .with(
            60,
            FieldValue::subfields([
                ("1", "22"),
                ("2", "000001"),
                ("3", "000"),
                ("4", "5"),
                ("5", "0"),
            ]),
        )
        .with(64, h("A1A2A3A4A5A6A7A8"))
}

fn bench(c: &mut Criterion) {
    let spec = Spec::builtin("cup").expect("cup profile");
    let msg = cup_0200();
    let wire = spec.encode(&msg).expect("encode");
    assert_eq!(spec.decode(&wire).expect("decode"), msg);

    let mut g = c.benchmark_group("cup_0200");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(512);
    g.bench_function("pack", |b| {
        b.iter(|| {
            buf.clear();
            spec.encode_into(black_box(&msg), &mut buf).expect("encode");
            black_box(buf.len())
        })
    });
    g.bench_function("unpack", |b| {
        b.iter(|| black_box(spec.decode(black_box(&wire)).expect("decode")))
    });
    g.bench_function("pack+unpack", |b| {
        b.iter(|| {
            buf.clear();
            spec.encode_into(black_box(&msg), &mut buf).expect("encode");
            black_box(spec.decode(black_box(&buf)).expect("decode"))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
