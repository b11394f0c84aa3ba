//! Low-level character encodings: EBCDIC (code page 037), packed BCD and hexadecimal.

/// ASCII (0x00..=0x7F) to EBCDIC code page 037.
const ASCII_TO_EBCDIC: [u8; 128] = [
    0x00, 0x01, 0x02, 0x03, 0x37, 0x2D, 0x2E, 0x2F, 0x16, 0x05, 0x25, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
    0x10, 0x11, 0x12, 0x13, 0x3C, 0x3D, 0x32, 0x26, 0x18, 0x19, 0x3F, 0x27, 0x1C, 0x1D, 0x1E, 0x1F,
    0x40, 0x5A, 0x7F, 0x7B, 0x5B, 0x6C, 0x50, 0x7D, 0x4D, 0x5D, 0x5C, 0x4E, 0x6B, 0x60, 0x4B, 0x61,
    0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0x7A, 0x5E, 0x4C, 0x7E, 0x6E, 0x6F,
    0x7C, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6,
    0xD7, 0xD8, 0xD9, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xBA, 0xE0, 0xBB, 0xB0, 0x6D,
    0x79, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xC0, 0x4F, 0xD0, 0xA1, 0x07,
];

/// EBCDIC code page 037 to ASCII; bytes with no ASCII counterpart map to 0 (NUL), which
/// no ISO 8583 text type allows, so they are rejected as bad values.
const EBCDIC_TO_ASCII: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 128 {
        t[ASCII_TO_EBCDIC[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// EBCDIC byte of an ASCII character (`None` above 0x7F).
#[inline]
pub fn ascii_to_ebcdic(c: u8) -> Option<u8> {
    ASCII_TO_EBCDIC.get(usize::from(c)).copied()
}

/// ASCII character of an EBCDIC byte (0 when it has none).
#[inline]
pub fn ebcdic_to_ascii(c: u8) -> u8 {
    EBCDIC_TO_ASCII[usize::from(c)]
}

/// Value of one hexadecimal digit, either case.
#[inline]
pub(crate) fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `bytes` as uppercase hexadecimal.
#[inline]
pub(crate) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX_UPPER[usize::from(b >> 4)]);
        out.push(HEX_UPPER[usize::from(b & 0x0F)]);
    }
}

/// Uppercase hexadecimal of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
        s.push(char::from(HEX_UPPER[usize::from(b & 0x0F)]));
    }
    s
}

/// Decodes hexadecimal text (either case; ASCII whitespace is ignored, so dumps such as
/// `"60 00 03"` are accepted).
pub fn from_hex(text: &str) -> crate::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    for (i, c) in text.bytes().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let v = hex_nibble(c).ok_or_else(|| crate::CodecError::BadHex {
            detail: format!(
                "character {:?} at offset {i} is not a hexadecimal digit",
                text[i..].chars().next().unwrap_or('?')
            ),
        })?;
        match high.take() {
            None => high = Some(v),
            Some(h) => out.push((h << 4) | v),
        }
    }
    if high.is_some() {
        return Err(crate::CodecError::BadHex {
            detail: "odd number of hexadecimal digits".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebcdic_round_trips_printable_ascii() {
        for c in 0x20u8..=0x7E {
            let e = ascii_to_ebcdic(c).unwrap();
            assert_eq!(ebcdic_to_ascii(e), c);
        }
        assert_eq!(ascii_to_ebcdic(b'0'), Some(0xF0));
        assert_eq!(ascii_to_ebcdic(b'A'), Some(0xC1));
        assert_eq!(ascii_to_ebcdic(b' '), Some(0x40));
        assert_eq!(ascii_to_ebcdic(0x80), None);
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(to_hex(&[0x0A, 0xBC]), "0ABC");
        assert_eq!(from_hex("0a bc\n").unwrap(), vec![0x0A, 0xBC]);
        assert!(from_hex("0ABCD").is_err());
        assert!(from_hex("0G").is_err());
        assert!(from_hex("é").is_err());
    }
}
