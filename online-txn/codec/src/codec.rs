//! The ISO 8583 encoder and decoder, driven by a [`Spec`].
//!
//! Decoding works from a borrowed `&[u8]` with a bounds-checked cursor; every length is
//! checked against the input and the profile before it is used, so no input can make it
//! panic or allocate more than the input's size allows. Encoding appends to a caller's
//! `Vec<u8>` ([`Spec::encode_into`]) and allocates only for composite/TLV fields.

use std::borrow::Cow;

use bytes::Bytes;
use compact_str::CompactString;

use crate::encoding::{ascii_to_ebcdic, ebcdic_to_ascii, from_hex, hex_nibble, push_hex, to_hex};
use crate::error::{CodecError, Location, Result};
use crate::message::{FieldMap, FieldValue, Message, Subfield};
use crate::spec::{
    Align, BitmapEncoding, FieldContent, FieldSpec, FieldType, LengthEncoding, LengthKind,
    MtiEncoding, Spec, SubfieldSpec, TlvLength, TlvSpec, TlvTag, ValueEncoding,
};

const TPDU_LEN: usize = 5;

/// A bounds-checked cursor over the input.
struct Reader<'a> {
    src: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(src: &'a Bytes) -> Self {
        Reader { src, pos: 0 }
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.src.len().saturating_sub(self.pos)
    }

    #[inline]
    fn take(&mut self, n: usize, at: impl FnOnce() -> Location) -> Result<&'a [u8]> {
        let available = self.remaining();
        let src: &'a [u8] = self.src;
        match src.get(self.pos..self.pos.saturating_add(n)) {
            Some(s) if n <= available => {
                self.pos += n;
                Ok(s)
            }
            _ => Err(CodecError::Truncated {
                at: at(),
                needed: n,
                available,
            }),
        }
    }

    /// Like `take`, as a zero-copy slice of the input.
    #[inline]
    fn take_bytes(&mut self, n: usize, at: impl FnOnce() -> Location) -> Result<Bytes> {
        let start = self.pos;
        self.take(n, at)?;
        Ok(self.src.slice(start..start + n))
    }

    #[inline]
    fn byte(&mut self, at: impl FnOnce() -> Location) -> Result<u8> {
        let s = self.take(1, at)?;
        Ok(s.first().copied().unwrap_or(0))
    }
}

/// Runs `f` on a zeroed scratch buffer of `len` bytes (on the stack when small).
#[inline]
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> Result<R>) -> Result<R> {
    const STACK: usize = 128;
    if len <= STACK {
        let mut buf = [0u8; STACK];
        f(&mut buf[..len])
    } else {
        let mut buf = vec![0u8; len];
        f(&mut buf)
    }
}

/// Text from bytes already checked to be ASCII.
#[inline]
fn ascii_text(bytes: &[u8], at: impl FnOnce() -> Location) -> Result<CompactString> {
    std::str::from_utf8(bytes)
        .map(CompactString::from)
        .map_err(|_| CodecError::bad_value(at(), "not ASCII text"))
}

impl Spec {
    /// Encodes `msg` into a new buffer.
    pub fn encode(&self, msg: &Message) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(msg, &mut out)?;
        Ok(out)
    }

    /// Appends the encoding of `msg` to `out`. On error `out` is left as it was.
    pub fn encode_into(&self, msg: &Message, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let result = self.encode_inner(msg, out);
        let size = out.len() - start;
        match result {
            Ok(()) if size <= self.max_message_len => Ok(()),
            Ok(()) => {
                out.truncate(start);
                Err(CodecError::TooLarge {
                    size,
                    max: self.max_message_len,
                })
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    fn encode_inner(&self, msg: &Message, out: &mut Vec<u8>) -> Result<()> {
        out.reserve(self.max_message_len.min(512));
        raw_part(
            out,
            Location::Tpdu,
            self.tpdu.then_some(TPDU_LEN),
            msg.tpdu.as_deref(),
            &self.name,
        )?;
        raw_part(
            out,
            Location::Header,
            (self.header_len > 0).then_some(self.header_len),
            msg.header.as_deref(),
            &self.name,
        )?;
        encode_mti(self.mti, &msg.mti, out)?;

        let mut primary: u64 = 0;
        let mut secondary: u64 = 0;
        for n in msg.fields.keys() {
            if self.field(n).is_none() {
                return Err(CodecError::UnknownField {
                    field: n,
                    profile: self.name.clone(),
                });
            }
            if n <= 64 {
                primary |= 1u64 << (64 - n);
            } else {
                secondary |= 1u64 << (128 - n);
            }
        }
        if secondary != 0 {
            primary |= 1u64 << 63;
        }
        write_bitmap(self.bitmap, primary, out);
        if secondary != 0 {
            write_bitmap(self.bitmap, secondary, out);
        }
        for (n, value) in &msg.fields {
            if let Some(f) = self.field(n) {
                encode_field(f, value, out)?;
            }
        }
        Ok(())
    }

    /// Decodes one message (TPDU and header included when the profile has them; no
    /// framing length prefix). The whole input must be consumed.
    pub fn decode(&self, bytes: &[u8]) -> Result<Message> {
        if bytes.len() > self.max_message_len {
            return Err(CodecError::TooLarge {
                size: bytes.len(),
                max: self.max_message_len,
            });
        }
        self.decode_bytes(&Bytes::copy_from_slice(bytes))
    }

    /// Like [`Spec::decode`], without copying: binary values, the TPDU and the header of
    /// the result share `bytes` (for example a frame from
    /// [`Framer::decode_frame`](crate::framing::Framer::decode_frame)).
    pub fn decode_bytes(&self, bytes: &Bytes) -> Result<Message> {
        if bytes.len() > self.max_message_len {
            return Err(CodecError::TooLarge {
                size: bytes.len(),
                max: self.max_message_len,
            });
        }
        let mut r = Reader::new(bytes);
        let tpdu = if self.tpdu {
            Some(r.take_bytes(TPDU_LEN, || Location::Tpdu)?)
        } else {
            None
        };
        let header = if self.header_len > 0 {
            Some(r.take_bytes(self.header_len, || Location::Header)?)
        } else {
            None
        };
        let mti = decode_mti(self.mti, &mut r)?;
        let primary = read_bitmap(self.bitmap, &mut r)?;
        let secondary = if primary & (1u64 << 63) != 0 {
            if !self.secondary_bitmap {
                return Err(CodecError::BadBitmap {
                    detail: format!(
                        "bit 1 (secondary bitmap) is set but profile {} has no secondary bitmap",
                        self.name
                    ),
                });
            }
            let s = read_bitmap(self.bitmap, &mut r)?;
            if s == 0 {
                return Err(CodecError::BadBitmap {
                    detail: "bit 1 announces a secondary bitmap but it is empty".into(),
                });
            }
            s
        } else {
            0
        };

        let mut fields = FieldMap::with_capacity(
            ((primary & !(1u64 << 63)).count_ones() + secondary.count_ones()) as usize,
        );
        for (word, base) in [(primary & !(1u64 << 63), 0u16), (secondary, 64u16)] {
            let mut w = word;
            while w != 0 {
                let lz = w.leading_zeros();
                w &= !(1u64 << (63 - lz));
                // lz < 64 because w != 0, so this fits in u16.
                let n = base + lz as u16 + 1;
                let f = self.field(n).ok_or_else(|| CodecError::UnknownField {
                    field: n,
                    profile: self.name.clone(),
                })?;
                let v = decode_field(f, &mut r)?;
                fields.insert(n, v);
            }
        }
        if r.remaining() > 0 {
            return Err(CodecError::TrailingData {
                extra: r.remaining(),
            });
        }
        Ok(Message {
            mti,
            tpdu,
            header,
            fields,
        })
    }
}

fn raw_part(
    out: &mut Vec<u8>,
    at: Location,
    expected: Option<usize>,
    given: Option<&[u8]>,
    profile: &str,
) -> Result<()> {
    match (expected, given) {
        (None, None) => Ok(()),
        (Some(n), Some(b)) if b.len() == n => {
            out.extend_from_slice(b);
            Ok(())
        }
        (Some(n), Some(b)) => Err(CodecError::bad_length(
            at,
            format!("must be {n} bytes, got {}", b.len()),
        )),
        (Some(n), None) => Err(CodecError::bad_value(
            at,
            format!("profile {profile} needs one ({n} bytes, as hex)"),
        )),
        (None, Some(_)) => Err(CodecError::bad_value(
            at,
            format!("profile {profile} has none; remove it"),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// MTI and bitmaps.

fn encode_mti(enc: MtiEncoding, mti: &str, out: &mut Vec<u8>) -> Result<()> {
    let b = mti.as_bytes();
    if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
        return Err(CodecError::bad_value(
            Location::Mti,
            format!("{mti:?} must be 4 digits"),
        ));
    }
    match enc {
        MtiEncoding::Ascii => out.extend_from_slice(b),
        MtiEncoding::Ebcdic => out.extend(b.iter().map(|&c| 0xF0 | (c - b'0'))),
        MtiEncoding::Bcd => {
            out.push(((b[0] - b'0') << 4) | (b[1] - b'0'));
            out.push(((b[2] - b'0') << 4) | (b[3] - b'0'));
        }
    }
    Ok(())
}

fn decode_mti(enc: MtiEncoding, r: &mut Reader<'_>) -> Result<String> {
    let mut s = String::with_capacity(4);
    let bad = |raw: &[u8]| {
        CodecError::bad_value(
            Location::Mti,
            format!("{} is not a 4-digit MTI", to_hex(raw)),
        )
    };
    match enc {
        MtiEncoding::Bcd => {
            let raw = r.take(2, || Location::Mti)?;
            for &b in raw {
                for nib in [b >> 4, b & 0x0F] {
                    if nib > 9 {
                        return Err(bad(raw));
                    }
                    s.push(char::from(b'0' + nib));
                }
            }
        }
        MtiEncoding::Ascii | MtiEncoding::Ebcdic => {
            let raw = r.take(4, || Location::Mti)?;
            for &b in raw {
                let c = if enc == MtiEncoding::Ebcdic {
                    ebcdic_to_ascii(b)
                } else {
                    b
                };
                if !c.is_ascii_digit() {
                    return Err(bad(raw));
                }
                s.push(char::from(c));
            }
        }
    }
    Ok(s)
}

fn write_bitmap(enc: BitmapEncoding, word: u64, out: &mut Vec<u8>) {
    let bytes = word.to_be_bytes();
    match enc {
        BitmapEncoding::Binary => out.extend_from_slice(&bytes),
        BitmapEncoding::Hex => push_hex(out, &bytes),
    }
}

fn read_bitmap(enc: BitmapEncoding, r: &mut Reader<'_>) -> Result<u64> {
    match enc {
        BitmapEncoding::Binary => {
            let raw = r.take(8, || Location::Bitmap)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(raw);
            Ok(u64::from_be_bytes(b))
        }
        BitmapEncoding::Hex => {
            let raw = r.take(16, || Location::Bitmap)?;
            let mut w = 0u64;
            for &c in raw {
                let v = hex_nibble(c).ok_or_else(|| CodecError::BadBitmap {
                    detail: format!(
                        "{:?} is not 16 hexadecimal characters",
                        String::from_utf8_lossy(raw)
                    ),
                })?;
                w = (w << 4) | u64::from(v);
            }
            Ok(w)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Length prefixes.

fn write_length(enc: LengthEncoding, kind: LengthKind, len: usize, out: &mut Vec<u8>) {
    let d = kind.digits();
    let digit = |i: usize| -> u8 {
        // Digit i (0 = most significant) of `len` written on `d` digits.
        let p = 10usize.pow((d - 1 - i) as u32);
        ((len / p) % 10) as u8
    };
    match enc {
        LengthEncoding::Ascii => out.extend((0..d).map(|i| b'0' + digit(i))),
        LengthEncoding::Ebcdic => out.extend((0..d).map(|i| 0xF0 | digit(i))),
        LengthEncoding::Bcd => {
            if d == 2 {
                out.push((digit(0) << 4) | digit(1));
            } else {
                let v = len % 10_000;
                out.push((((v / 1000) as u8) << 4) | ((v / 100) % 10) as u8);
                out.push(((((v / 10) % 10) as u8) << 4) | (v % 10) as u8);
            }
        }
        LengthEncoding::Binary => {
            if d == 2 {
                out.push((len & 0xFF) as u8);
            } else {
                out.extend_from_slice(&((len & 0xFFFF) as u16).to_be_bytes());
            }
        }
    }
}

fn read_length(enc: LengthEncoding, raw: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    match enc {
        LengthEncoding::Ascii => {
            for &c in raw {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + usize::from(c - b'0');
            }
        }
        LengthEncoding::Ebcdic => {
            for &c in raw {
                if !(0xF0..=0xF9).contains(&c) {
                    return None;
                }
                v = v * 10 + usize::from(c - 0xF0);
            }
        }
        LengthEncoding::Bcd => {
            for &b in raw {
                for nib in [b >> 4, b & 0x0F] {
                    if nib > 9 {
                        return None;
                    }
                    v = v * 10 + usize::from(nib);
                }
            }
        }
        LengthEncoding::Binary => {
            for &b in raw {
                v = (v << 8) | usize::from(b);
            }
        }
    }
    Some(v)
}

// ---------------------------------------------------------------------------------------
// Fields: decoding.

fn decode_field(f: &FieldSpec, r: &mut Reader<'_>) -> Result<FieldValue> {
    let at = || Location::Field(f.number);
    let len = if f.length_kind == LengthKind::Fixed {
        f.max_len
    } else {
        let raw = r.take(f.prefix_len(), at)?;
        let len = read_length(f.length_encoding, raw).ok_or_else(|| {
            CodecError::bad_length(
                at(),
                format!(
                    "malformed {:?} length prefix {}",
                    f.length_encoding,
                    to_hex(raw)
                ),
            )
        })?;
        if len > f.max_len {
            return Err(CodecError::bad_length(
                at(),
                format!(
                    "length {len} exceeds the maximum {} ({})",
                    f.max_len,
                    f.notation()
                ),
            ));
        }
        len
    };
    let wire = f.wire_len(len);
    let value = if f.field_type == FieldType::B && f.encoding != ValueEncoding::Hex {
        FieldValue::Binary(r.take_bytes(wire, at)?)
    } else {
        decode_value(f, len, r.take(wire, at)?)?
    };
    match &f.content {
        FieldContent::Plain => Ok(value),
        FieldContent::Composite(subs) => match value {
            FieldValue::Text(s) => split_composite(f.number, subs, &s),
            other => Ok(other),
        },
        FieldContent::Tlv(t) => {
            let data = match value {
                FieldValue::Text(s) => Bytes::copy_from_slice(s.as_bytes()),
                FieldValue::Binary(b) => b,
                FieldValue::Subfields(_) => return Ok(value),
            };
            parse_tlv(f.number, t, &data).map(FieldValue::Subfields)
        }
    }
}

fn decode_value(f: &FieldSpec, len: usize, raw: &[u8]) -> Result<FieldValue> {
    let at = || Location::Field(f.number);
    match f.field_type {
        FieldType::B => {
            // Hex-encoded bytes (raw binary is sliced by the caller).
            let mut out = Vec::with_capacity(len);
            for pair in raw.chunks_exact(2) {
                match (hex_nibble(pair[0]), hex_nibble(pair[1])) {
                    (Some(h), Some(l)) => out.push((h << 4) | l),
                    _ => {
                        return Err(CodecError::bad_value(
                            at(),
                            format!("{:?} is not hexadecimal", String::from_utf8_lossy(raw)),
                        ));
                    }
                }
            }
            Ok(FieldValue::Binary(out.into()))
        }
        FieldType::XN => {
            let (&sign, digits) = raw
                .split_first()
                .ok_or_else(|| CodecError::bad_length(at(), "empty x+n value"))?;
            let sign = if f.encoding == ValueEncoding::Ebcdic {
                ebcdic_to_ascii(sign)
            } else {
                sign
            };
            if sign != b'C' && sign != b'D' {
                return Err(CodecError::bad_value(
                    at(),
                    format!("x+n value must start with 'C' or 'D', got byte 0x{sign:02X}"),
                ));
            }
            with_scratch(len + 1, |buf| {
                let (first, rest) = buf.split_at_mut(1);
                first[0] = sign;
                decode_text(f, FieldType::N, digits, rest)?;
                ascii_text(buf, at).map(FieldValue::Text)
            })
        }
        t => {
            if f.encoding == ValueEncoding::Ascii {
                // Zero-copy path: validate, then copy once into the (usually inline) string.
                if let Some((i, &c)) = raw.iter().enumerate().find(|&(_, &c)| !t.allows(c)) {
                    return Err(bad_char(f, t, i, c));
                }
                return ascii_text(raw, at).map(FieldValue::Text);
            }
            with_scratch(len, |buf| {
                decode_text(f, t, raw, buf)?;
                ascii_text(buf, at).map(FieldValue::Text)
            })
        }
    }
}

fn bad_char(f: &FieldSpec, t: FieldType, pos: usize, byte: u8) -> CodecError {
    let shown = if (0x20..=0x7E).contains(&byte) {
        format!("{:?}", char::from(byte))
    } else {
        format!("byte 0x{byte:02X}")
    };
    CodecError::bad_value(
        Location::Field(f.number),
        format!(
            "{shown} at position {pos} is not allowed in a {} value ({}: {})",
            t.notation(),
            f.notation(),
            t.describe_chars()
        ),
    )
}

/// Decodes `raw` into `out` (one ASCII byte per character; `out.len()` is the length).
fn decode_text(f: &FieldSpec, t: FieldType, raw: &[u8], out: &mut [u8]) -> Result<()> {
    let len = out.len();
    match f.encoding {
        ValueEncoding::Ascii | ValueEncoding::Ebcdic => {
            let ebcdic = f.encoding == ValueEncoding::Ebcdic;
            for (i, (o, &b)) in out.iter_mut().zip(raw).enumerate() {
                let c = if ebcdic { ebcdic_to_ascii(b) } else { b };
                if !t.allows(c) {
                    return Err(bad_char(f, t, i, b));
                }
                *o = c;
            }
        }
        ValueEncoding::Bcd => {
            let odd = len % 2 == 1;
            let shift = usize::from(odd && f.align == Align::Right);
            if odd {
                let pad = if f.align == Align::Right {
                    raw.first().map(|b| b >> 4)
                } else {
                    raw.last().map(|b| b & 0x0F)
                };
                if let Some(p) = pad
                    && p != f.pad
                {
                    return Err(CodecError::bad_value(
                        Location::Field(f.number),
                        format!(
                            "BCD pad nibble is {p:X}, profile expects {:X} ({}-aligned)",
                            f.pad,
                            if f.align == Align::Left {
                                "left"
                            } else {
                                "right"
                            }
                        ),
                    ));
                }
            }
            let numeric = t != FieldType::Z;
            if shift == 0 && numeric {
                // Fast path: two digits per byte.
                let mut ok = true;
                for (pair, &b) in out.chunks_mut(2).zip(raw) {
                    let (h, l) = (b >> 4, b & 0x0F);
                    ok &= h <= 9 && (pair.len() == 1 || l <= 9);
                    pair[0] = b'0' + h;
                    if let Some(o) = pair.get_mut(1) {
                        *o = b'0' + l;
                    }
                }
                if ok {
                    return Ok(());
                }
            }
            for (i, o) in out.iter_mut().enumerate() {
                let idx = i + shift;
                let b = raw.get(idx / 2).copied().unwrap_or(0);
                let nib = if idx % 2 == 0 { b >> 4 } else { b & 0x0F };
                let c = b'0' + nib;
                if !t.allows(c) {
                    return Err(CodecError::bad_value(
                        Location::Field(f.number),
                        format!(
                            "BCD nibble {nib:X} at digit {i} is not allowed in a {} value ({})",
                            t.notation(),
                            t.describe_chars()
                        ),
                    ));
                }
                *o = c;
            }
        }
        ValueEncoding::Binary | ValueEncoding::Hex => {
            return Err(CodecError::bad_value(
                Location::Field(f.number),
                "text field with a binary encoding",
            ));
        }
    }
    Ok(())
}

fn split_composite(number: u16, subs: &[SubfieldSpec], text: &str) -> Result<FieldValue> {
    let mut out = Vec::with_capacity(subs.len());
    let mut rest = text;
    for sub in subs {
        if rest.is_empty() {
            break;
        }
        let at = || Location::Subfield(number, sub.id.to_string());
        let take = if sub.variable {
            if rest.len() > sub.len {
                return Err(CodecError::bad_length(
                    at(),
                    format!(
                        "{} characters left for a subfield of at most {}",
                        rest.len(),
                        sub.len
                    ),
                ));
            }
            rest.len()
        } else {
            if rest.len() < sub.len {
                return Err(CodecError::bad_length(
                    at(),
                    format!(
                        "needs {} characters, only {} left in the field",
                        sub.len,
                        rest.len()
                    ),
                ));
            }
            sub.len
        };
        let (v, r) = match (rest.get(..take), rest.get(take..)) {
            (Some(v), Some(r)) => (v, r),
            _ => return Err(CodecError::bad_value(at(), "not ASCII text")),
        };
        check_sub_chars(number, sub, v)?;
        out.push(Subfield {
            id: sub.id.clone(),
            value: FieldValue::Text(v.into()),
        });
        rest = r;
    }
    if !rest.is_empty() {
        return Err(CodecError::bad_length(
            Location::Field(number),
            format!("{} characters left after the last subfield", rest.len()),
        ));
    }
    Ok(FieldValue::Subfields(out))
}

fn check_sub_chars(number: u16, sub: &SubfieldSpec, v: &str) -> Result<()> {
    if let Some((i, c)) = v
        .bytes()
        .enumerate()
        .find(|&(_, c)| !sub.field_type.allows(c))
    {
        return Err(CodecError::bad_value(
            Location::Subfield(number, sub.id.to_string()),
            format!(
                "{:?} at position {i} is not allowed in a {} value ({})",
                char::from(c),
                sub.field_type.notation(),
                sub.field_type.describe_chars()
            ),
        ));
    }
    Ok(())
}

/// Uppercase hex of a tag (at most 4 bytes, so always inline).
fn hex_id(tag: &[u8]) -> CompactString {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 8];
    let n = tag.len().min(4);
    for (i, &b) in tag.iter().take(n).enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 0x0F)];
    }
    std::str::from_utf8(&buf[..2 * n])
        .map(CompactString::from)
        .unwrap_or_default()
}

fn parse_tlv(number: u16, t: &TlvSpec, data: &Bytes) -> Result<Vec<Subfield>> {
    let mut r = Reader::new(data);
    let mut out = Vec::with_capacity((data.len() / 4).clamp(1, 64));
    let at = || Location::Field(number);
    while r.remaining() > 0 {
        let offset = r.pos;
        let bad =
            |what: String| CodecError::bad_value(at(), format!("TLV at offset {offset}: {what}"));
        let tag_start = r.pos;
        match t.tag {
            TlvTag::Ber => {
                let first = r.byte(at)?;
                if first & 0x1F == 0x1F {
                    let mut count = 1;
                    loop {
                        let b = r.byte(at)?;
                        count += 1;
                        if b & 0x80 == 0 {
                            break;
                        }
                        if count >= 4 {
                            return Err(bad("BER tag longer than 4 bytes".into()));
                        }
                    }
                }
            }
            TlvTag::Ascii(n) | TlvTag::Binary(n) => {
                r.take(n, at)?;
            }
        }
        let tag = data.get(tag_start..r.pos).unwrap_or_default();
        let id = match t.tag {
            TlvTag::Ascii(_) => {
                if !tag.iter().all(|c| FieldType::Ans.allows(*c)) {
                    return Err(bad(format!("tag {} is not printable ASCII", to_hex(tag))));
                }
                ascii_text(tag, at)?
            }
            _ => hex_id(tag),
        };
        let sub_at = || Location::Subfield(number, id.to_string());
        let len = match t.length {
            TlvLength::Ber => {
                let b = r.byte(sub_at)?;
                match b {
                    0..=0x7F => usize::from(b),
                    0x81 => {
                        let v = r.byte(sub_at)?;
                        if v < 0x80 {
                            return Err(bad(format!(
                                "tag {id}: non-minimal BER length 81 {v:02X}"
                            )));
                        }
                        usize::from(v)
                    }
                    0x82 => {
                        let v = r.take(2, sub_at)?;
                        let v = (usize::from(v[0]) << 8) | usize::from(v[1]);
                        if v < 0x100 {
                            return Err(bad(format!(
                                "tag {id}: non-minimal BER length 82 {v:04X}"
                            )));
                        }
                        v
                    }
                    _ => {
                        return Err(bad(format!(
                            "tag {id}: unsupported BER length byte {b:02X}"
                        )));
                    }
                }
            }
            TlvLength::Ascii(n) => {
                let raw = r.take(n, sub_at)?;
                read_length(LengthEncoding::Ascii, raw)
                    .ok_or_else(|| bad(format!("tag {id}: malformed length {}", to_hex(raw))))?
            }
            TlvLength::Binary(n) => {
                let raw = r.take(n, sub_at)?;
                read_length(LengthEncoding::Binary, raw).unwrap_or(0)
            }
            TlvLength::Bcd(n) => {
                let raw = r.take(n, sub_at)?;
                read_length(LengthEncoding::Bcd, raw)
                    .ok_or_else(|| bad(format!("tag {id}: malformed length {}", to_hex(raw))))?
            }
        };
        let value = if t.text_values {
            let raw = r.take(len, sub_at)?;
            if let Some(c) = raw.iter().find(|c| !FieldType::Ans.allows(**c)) {
                return Err(CodecError::bad_value(
                    sub_at(),
                    format!("byte 0x{c:02X} is not printable ASCII"),
                ));
            }
            FieldValue::Text(ascii_text(raw, sub_at)?)
        } else {
            FieldValue::Binary(r.take_bytes(len, sub_at)?)
        };
        out.push(Subfield { id, value });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Fields: encoding.

fn encode_field(f: &FieldSpec, value: &FieldValue, out: &mut Vec<u8>) -> Result<()> {
    let at = || Location::Field(f.number);
    match (&f.content, value) {
        (FieldContent::Composite(subs), FieldValue::Subfields(list)) => {
            let mut text = CompactString::with_capacity(f.max_len.min(256));
            join_composite(f.number, subs, list, &mut text)?;
            encode_text(f, &text, out)
        }
        (FieldContent::Tlv(t), FieldValue::Subfields(list)) => {
            let mut data = Vec::with_capacity(f.max_len.min(512));
            build_tlv(f.number, t, list, &mut data)?;
            if f.field_type == FieldType::B {
                encode_bytes(f, &data, out)
            } else {
                let text = std::str::from_utf8(&data)
                    .map_err(|_| CodecError::bad_value(at(), "TLV data is not ASCII"))?;
                encode_text(f, text, out)
            }
        }
        (_, FieldValue::Subfields(_)) => Err(CodecError::bad_value(
            at(),
            format!("{} has no subfields; give a string", f.notation()),
        )),
        (_, FieldValue::Binary(b)) => {
            if f.field_type == FieldType::B {
                encode_bytes(f, b, out)
            } else {
                Err(CodecError::bad_value(
                    at(),
                    format!("{} is text; got bytes (\"hex:...\")", f.notation()),
                ))
            }
        }
        (_, FieldValue::Text(s)) => {
            if f.field_type == FieldType::B {
                let bytes = from_hex(s).map_err(|e| {
                    CodecError::bad_value(at(), format!("{} takes bytes as hex: {e}", f.notation()))
                })?;
                encode_bytes(f, &bytes, out)
            } else {
                encode_text(f, s, out)
            }
        }
    }
}

fn check_len(f: &FieldSpec, len: usize) -> Result<()> {
    let unit = if f.field_type == FieldType::B {
        "bytes"
    } else if matches!(f.field_type, FieldType::N | FieldType::Z | FieldType::XN) {
        "digits"
    } else {
        "characters"
    };
    if f.length_kind == LengthKind::Fixed {
        if len != f.max_len {
            return Err(CodecError::bad_length(
                Location::Field(f.number),
                format!(
                    "expected exactly {} {unit} ({}), got {len}",
                    f.max_len,
                    f.notation()
                ),
            ));
        }
    } else if len > f.max_len {
        return Err(CodecError::bad_length(
            Location::Field(f.number),
            format!(
                "{len} {unit} exceed the maximum {} ({})",
                f.max_len,
                f.notation()
            ),
        ));
    }
    Ok(())
}

fn encode_bytes(f: &FieldSpec, bytes: &[u8], out: &mut Vec<u8>) -> Result<()> {
    check_len(f, bytes.len())?;
    if f.length_kind != LengthKind::Fixed {
        write_length(f.length_encoding, f.length_kind, bytes.len(), out);
    }
    match f.encoding {
        ValueEncoding::Hex => push_hex(out, bytes),
        _ => out.extend_from_slice(bytes),
    }
    Ok(())
}

fn encode_text(f: &FieldSpec, s: &str, out: &mut Vec<u8>) -> Result<()> {
    let bytes = s.as_bytes();
    let (sign, digits, t) = if f.field_type == FieldType::XN {
        match bytes.split_first() {
            Some((&c, rest)) if c == b'C' || c == b'D' => (Some(c), rest, FieldType::N),
            _ => {
                return Err(CodecError::bad_value(
                    Location::Field(f.number),
                    format!("x+n value {s:?} must start with 'C' or 'D'"),
                ));
            }
        }
    } else {
        (None, bytes, f.field_type)
    };
    if let Some((i, c)) = digits.iter().enumerate().find(|&(_, &c)| !t.allows(c)) {
        return Err(bad_char(f, t, i + usize::from(sign.is_some()), *c));
    }
    check_len(f, digits.len())?;
    if f.length_kind != LengthKind::Fixed {
        write_length(f.length_encoding, f.length_kind, digits.len(), out);
    }
    if let Some(c) = sign {
        out.push(if f.encoding == ValueEncoding::Ebcdic {
            ascii_to_ebcdic(c).unwrap_or(0)
        } else {
            c
        });
    }
    match f.encoding {
        ValueEncoding::Ascii => out.extend_from_slice(digits),
        ValueEncoding::Ebcdic => {
            out.extend(digits.iter().map(|&c| ascii_to_ebcdic(c).unwrap_or(0)))
        }
        ValueEncoding::Bcd => {
            // Digits are validated: n is 0x30..=0x39, z is 0x30..=0x3F, so `c - 0x30` is the nibble.
            let odd = digits.len() % 2 == 1;
            let mut iter = digits.iter().map(|&c| c.wrapping_sub(b'0') & 0x0F);
            if odd && f.align == Align::Right {
                let first = iter.next().unwrap_or(0);
                out.push((f.pad << 4) | first);
            }
            while let Some(h) = iter.next() {
                let l = iter.next().unwrap_or(f.pad);
                out.push((h << 4) | l);
            }
        }
        ValueEncoding::Binary | ValueEncoding::Hex => {
            return Err(CodecError::bad_value(
                Location::Field(f.number),
                "text field with a binary encoding",
            ));
        }
    }
    Ok(())
}

fn join_composite(
    number: u16,
    subs: &[SubfieldSpec],
    list: &[Subfield],
    text: &mut CompactString,
) -> Result<()> {
    // Fast path: subfields given in spec order, without gaps.
    if list.len() <= subs.len() && list.iter().zip(subs).all(|(g, s)| g.id == s.id) {
        for (given, sub) in list.iter().zip(subs) {
            push_subfield(number, sub, &given.value, text)?;
        }
        return Ok(());
    }
    for (i, given) in list.iter().enumerate() {
        let at = || Location::Subfield(number, given.id.to_string());
        if !subs.iter().any(|s| s.id == given.id) {
            let known: Vec<&str> = subs.iter().map(|s| s.id.as_str()).collect();
            return Err(CodecError::bad_value(
                at(),
                format!("unknown subfield (field {number} has {})", known.join(", ")),
            ));
        }
        if list[..i].iter().any(|g| g.id == given.id) {
            return Err(CodecError::bad_value(at(), "given twice"));
        }
    }
    let mut missing: Option<&str> = None;
    for sub in subs {
        let at = || Location::Subfield(number, sub.id.to_string());
        let Some(given) = list.iter().find(|g| g.id == sub.id) else {
            missing.get_or_insert(&sub.id);
            continue;
        };
        if let Some(m) = missing {
            return Err(CodecError::bad_value(
                at(),
                format!(
                    "given but subfield {m} before it is missing (only trailing subfields may be left out)"
                ),
            ));
        }
        push_subfield(number, sub, &given.value, text)?;
    }
    Ok(())
}

fn push_subfield(
    number: u16,
    sub: &SubfieldSpec,
    value: &FieldValue,
    text: &mut CompactString,
) -> Result<()> {
    let at = || Location::Subfield(number, sub.id.to_string());
    let v = value
        .as_text()
        .ok_or_else(|| CodecError::bad_value(at(), "must be text"))?;
    check_sub_chars(number, sub, v)?;
    let ok = if sub.variable {
        v.len() <= sub.len && !v.is_empty()
    } else {
        v.len() == sub.len
    };
    if !ok {
        return Err(CodecError::bad_length(
            at(),
            if sub.variable {
                format!("must be 1 to {} characters, got {}", sub.len, v.len())
            } else {
                format!("must be exactly {} characters, got {}", sub.len, v.len())
            },
        ));
    }
    text.push_str(v);
    Ok(())
}

fn build_tlv(number: u16, t: &TlvSpec, list: &[Subfield], data: &mut Vec<u8>) -> Result<()> {
    for s in list {
        let at = || Location::Subfield(number, s.id.to_string());
        if let FieldValue::Binary(b) = &s.value {
            data.reserve(b.len() + 8);
        }
        match t.tag {
            TlvTag::Ber => {
                let mut tag = [0u8; 4];
                let n = short_hex(&s.id, &mut tag)
                    .filter(|&n| valid_ber_tag(&tag[..n]))
                    .ok_or_else(|| {
                        CodecError::bad_value(at(), "not a valid BER-TLV tag (1 to 4 bytes in hex)")
                    })?;
                for &b in &tag[..n] {
                    data.push(b);
                }
            }
            TlvTag::Ascii(n) => {
                if s.id.len() != n || !s.id.bytes().all(|c| FieldType::Ans.allows(c)) {
                    return Err(CodecError::bad_value(
                        at(),
                        format!("tag must be {n} printable ASCII characters"),
                    ));
                }
                data.extend_from_slice(s.id.as_bytes());
            }
            TlvTag::Binary(n) => {
                let tag = from_hex(&s.id)
                    .map_err(|e| CodecError::bad_value(at(), format!("tag is not hex: {e}")))?;
                if tag.len() != n {
                    return Err(CodecError::bad_value(
                        at(),
                        format!("tag must be {n} bytes"),
                    ));
                }
                data.extend_from_slice(&tag);
            }
        }
        let value: Cow<'_, [u8]> = match (&s.value, t.text_values) {
            (FieldValue::Binary(b), false) => Cow::Borrowed(&b[..]),
            (FieldValue::Text(txt), false) => Cow::Owned(from_hex(txt).map_err(|e| {
                CodecError::bad_value(at(), format!("TLV values are bytes (hex): {e}"))
            })?),
            (FieldValue::Text(txt), true) => {
                if !txt.bytes().all(|c| FieldType::Ans.allows(c)) {
                    return Err(CodecError::bad_value(at(), "must be printable ASCII"));
                }
                Cow::Borrowed(txt.as_bytes())
            }
            _ => {
                return Err(CodecError::bad_value(
                    at(),
                    if t.text_values {
                        "TLV values of this field are text"
                    } else {
                        "TLV values of this field are bytes (\"hex:...\")"
                    },
                ));
            }
        };
        let len = value.len();
        let too_long = || {
            CodecError::bad_length(
                at(),
                format!("value of {len} bytes is too long for its TLV length"),
            )
        };
        match t.length {
            TlvLength::Ber => {
                if len < 0x80 {
                    data.push(len as u8);
                } else if len < 0x100 {
                    data.extend_from_slice(&[0x81, len as u8]);
                } else if len < 0x10000 {
                    data.push(0x82);
                    data.extend_from_slice(&(len as u16).to_be_bytes());
                } else {
                    return Err(too_long());
                }
            }
            TlvLength::Ascii(n) => {
                if len >= 10usize.pow(n as u32) {
                    return Err(too_long());
                }
                let s = format!("{len:0n$}");
                data.extend_from_slice(s.as_bytes());
            }
            TlvLength::Binary(n) => {
                if n < 8 && len >= 1usize << (8 * n) {
                    return Err(too_long());
                }
                let be = (len as u64).to_be_bytes();
                data.extend_from_slice(&be[8 - n..]);
            }
            TlvLength::Bcd(n) => {
                if len >= 10usize.pow(2 * n as u32) {
                    return Err(too_long());
                }
                let s = format!("{len:0w$}", w = 2 * n);
                let b = s.as_bytes();
                for pair in b.chunks_exact(2) {
                    data.push(((pair[0] - b'0') << 4) | (pair[1] - b'0'));
                }
            }
        }
        data.extend_from_slice(&value);
    }
    Ok(())
}

/// Parses up to `out.len()` bytes of hex; `None` if not hex or too long.
fn short_hex(text: &str, out: &mut [u8]) -> Option<usize> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) || b.len() / 2 > out.len() {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (hex_nibble(pair[0])? << 4) | hex_nibble(pair[1])?;
    }
    Some(b.len() / 2)
}

/// Whether `tag` is one complete BER-TLV tag of 1 to 4 bytes.
fn valid_ber_tag(tag: &[u8]) -> bool {
    match tag {
        [] => false,
        [first] => first & 0x1F != 0x1F,
        [first, rest @ ..] => {
            if first & 0x1F != 0x1F || tag.len() > 4 {
                return false;
            }
            let (last, middle) = match rest.split_last() {
                Some(x) => x,
                None => return false,
            };
            middle.iter().all(|b| b & 0x80 != 0) && last & 0x80 == 0
        }
    }
}

impl FieldType {
    fn describe_chars(self) -> &'static str {
        crate::spec::describe(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ber_tags() {
        assert!(valid_ber_tag(&[0x82]));
        assert!(valid_ber_tag(&[0x9F, 0x26]));
        assert!(valid_ber_tag(&[0xDF, 0x81, 0x01]));
        assert!(!valid_ber_tag(&[0x9F]));
        assert!(!valid_ber_tag(&[0x82, 0x01]));
        assert!(!valid_ber_tag(&[0x9F, 0x81]));
        assert!(!valid_ber_tag(&[]));
    }

    #[test]
    fn length_prefixes() {
        let mut out = Vec::new();
        write_length(LengthEncoding::Bcd, LengthKind::Ll, 19, &mut out);
        write_length(LengthEncoding::Bcd, LengthKind::Lll, 123, &mut out);
        write_length(LengthEncoding::Ascii, LengthKind::Lll, 7, &mut out);
        write_length(LengthEncoding::Binary, LengthKind::Lll, 300, &mut out);
        write_length(LengthEncoding::Ebcdic, LengthKind::Ll, 42, &mut out);
        assert_eq!(
            out,
            [0x19, 0x01, 0x23, b'0', b'0', b'7', 0x01, 0x2C, 0xF4, 0xF2]
        );
        assert_eq!(read_length(LengthEncoding::Bcd, &[0x01, 0x23]), Some(123));
        assert_eq!(read_length(LengthEncoding::Bcd, &[0x1A]), None);
        assert_eq!(read_length(LengthEncoding::Ascii, b"0x"), None);
        assert_eq!(read_length(LengthEncoding::Ebcdic, &[0xF4, 0xF2]), Some(42));
    }
}
