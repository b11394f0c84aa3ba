//! Length-prefix framing for TCP channels: the prefix that precedes each ISO 8583 message
//! on the wire is not part of the message, so the codec leaves it to these framers.
//!
//! * [`LengthPrefix::Binary2`]: 2-byte big-endian binary length (CUP terminals);
//! * [`LengthPrefix::Bcd2`]: 2-byte packed BCD length (up to 9999);
//! * [`LengthPrefix::Ascii4`]: 4 ASCII digits (up to 9999).
//!
//! [`Framer::frame`] is a pure function; [`Framer::decode_frame`] is incremental: call it
//! whenever bytes arrive and it returns each complete frame's payload, `Ok(None)` while a
//! frame is incomplete, or an error for a malformed or oversized prefix (the channel
//! should then close the connection: the stream cannot be resynchronised).
//!
//! ```
//! use bytes::BytesMut;
//! use openteller_codec::framing::{Framer, LengthPrefix};
//!
//! let framer = Framer::new(LengthPrefix::Binary2, 4096);
//! let framed = framer.frame(b"hello")?;
//! assert_eq!(framed, b"\x00\x05hello");
//! let mut buf = BytesMut::from(&framed[..3]);
//! assert_eq!(framer.decode_frame(&mut buf)?, None);
//! buf.extend_from_slice(&framed[3..]);
//! assert_eq!(framer.decode_frame(&mut buf)?.as_deref(), Some(&b"hello"[..]));
//! # Ok::<(), openteller_codec::CodecError>(())
//! ```

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{CodecError, Result};

/// The length prefix in front of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LengthPrefix {
    /// 2 bytes, unsigned big-endian binary (0..=65535).
    Binary2,
    /// 2 bytes, packed BCD (0..=9999).
    Bcd2,
    /// 4 ASCII digits (0..=9999).
    Ascii4,
}

impl LengthPrefix {
    /// Size of the prefix in bytes.
    pub fn size(self) -> usize {
        match self {
            LengthPrefix::Binary2 | LengthPrefix::Bcd2 => 2,
            LengthPrefix::Ascii4 => 4,
        }
    }

    /// The largest payload the prefix can express.
    pub fn capacity(self) -> usize {
        match self {
            LengthPrefix::Binary2 => 0xFFFF,
            LengthPrefix::Bcd2 | LengthPrefix::Ascii4 => 9999,
        }
    }

    /// Parses `binary2`, `bcd2` or `ascii4`.
    pub fn parse(s: &str) -> Option<LengthPrefix> {
        match s {
            "binary2" => Some(LengthPrefix::Binary2),
            "bcd2" => Some(LengthPrefix::Bcd2),
            "ascii4" => Some(LengthPrefix::Ascii4),
            _ => None,
        }
    }

    fn write(self, len: usize, out: &mut Vec<u8>) {
        match self {
            LengthPrefix::Binary2 => out.extend_from_slice(&((len & 0xFFFF) as u16).to_be_bytes()),
            LengthPrefix::Bcd2 => {
                let d = |p: usize| ((len / p) % 10) as u8;
                out.push((d(1000) << 4) | d(100));
                out.push((d(10) << 4) | d(1));
            }
            LengthPrefix::Ascii4 => {
                out.extend_from_slice(format!("{:04}", len % 10_000).as_bytes());
            }
        }
    }

    fn read(self, raw: &[u8]) -> Option<usize> {
        match self {
            LengthPrefix::Binary2 => match raw {
                [a, b] => Some((usize::from(*a) << 8) | usize::from(*b)),
                _ => None,
            },
            LengthPrefix::Bcd2 => {
                let mut v = 0usize;
                for &b in raw {
                    for nib in [b >> 4, b & 0x0F] {
                        if nib > 9 {
                            return None;
                        }
                        v = v * 10 + usize::from(nib);
                    }
                }
                Some(v)
            }
            LengthPrefix::Ascii4 => {
                let mut v = 0usize;
                for &c in raw {
                    if !c.is_ascii_digit() {
                        return None;
                    }
                    v = v * 10 + usize::from(c - b'0');
                }
                Some(v)
            }
        }
    }
}

/// A length-prefix framer with a maximum payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framer {
    prefix: LengthPrefix,
    max: usize,
}

impl Framer {
    /// A framer; `max_payload` is capped at what the prefix can express.
    pub fn new(prefix: LengthPrefix, max_payload: usize) -> Self {
        Framer {
            prefix,
            max: max_payload.min(prefix.capacity()),
        }
    }

    /// The prefix kind.
    pub fn prefix(&self) -> LengthPrefix {
        self.prefix
    }

    /// The maximum payload size.
    pub fn max_payload(&self) -> usize {
        self.max
    }

    /// The payload with its length prefix in front.
    pub fn frame(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.prefix.size() + payload.len());
        self.frame_into(payload, &mut out)?;
        Ok(out)
    }

    /// Appends the prefixed payload to `out`.
    pub fn frame_into(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if payload.len() > self.max {
            return Err(CodecError::TooLarge {
                size: payload.len(),
                max: self.max,
            });
        }
        self.prefix.write(payload.len(), out);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// Takes one complete frame's payload off the front of `buf`, or returns `Ok(None)`
    /// (leaving `buf` untouched) when more bytes are needed.
    pub fn decode_frame(&self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        let n = self.prefix.size();
        let Some(raw) = buf.get(..n) else {
            return Ok(None);
        };
        let len = self.prefix.read(raw).ok_or_else(|| CodecError::BadFrame {
            detail: format!(
                "malformed {:?} length prefix {}",
                self.prefix,
                crate::encoding::to_hex(raw)
            ),
        })?;
        if len > self.max {
            return Err(CodecError::TooLarge {
                size: len,
                max: self.max,
            });
        }
        if buf.len() < n + len {
            buf.reserve(n + len - buf.len());
            return Ok(None);
        }
        buf.advance(n);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

/// Frames `payload` with a 2-byte binary length (CUP style), up to 65535 bytes.
pub fn frame_binary2(payload: &[u8]) -> Result<Vec<u8>> {
    Framer::new(LengthPrefix::Binary2, usize::MAX).frame(payload)
}

/// Frames `payload` with a 2-byte BCD length, up to 9999 bytes.
pub fn frame_bcd2(payload: &[u8]) -> Result<Vec<u8>> {
    Framer::new(LengthPrefix::Bcd2, usize::MAX).frame(payload)
}

/// Frames `payload` with a 4-digit ASCII length, up to 9999 bytes.
pub fn frame_ascii4(payload: &[u8]) -> Result<Vec<u8>> {
    Framer::new(LengthPrefix::Ascii4, usize::MAX).frame(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(frame_binary2(&[7; 300]).unwrap()[..2], [0x01, 0x2C]);
        assert_eq!(frame_bcd2(&[7; 300]).unwrap()[..2], [0x03, 0x00]);
        assert_eq!(frame_ascii4(&[7; 300]).unwrap()[..4], *b"0300");
        assert_eq!(
            frame_bcd2(&[0; 10_000]).unwrap_err().code(),
            "CODEC_TOO_LARGE"
        );
    }

    #[test]
    fn incremental_decoding() {
        for prefix in [
            LengthPrefix::Binary2,
            LengthPrefix::Bcd2,
            LengthPrefix::Ascii4,
        ] {
            let f = Framer::new(prefix, 100);
            let mut stream = f.frame(b"abc").unwrap();
            stream.extend(f.frame(b"").unwrap());
            stream.extend(f.frame(b"defg").unwrap());
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for b in stream {
                buf.extend_from_slice(&[b]);
                while let Some(frame) = f.decode_frame(&mut buf).unwrap() {
                    got.push(frame);
                }
            }
            assert_eq!(got, vec![&b"abc"[..], b"", b"defg"]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn bad_prefixes() {
        let f = Framer::new(LengthPrefix::Ascii4, 100);
        let mut buf = BytesMut::from(&b"00x1abc"[..]);
        assert_eq!(
            f.decode_frame(&mut buf).unwrap_err().code(),
            "CODEC_BAD_FRAME"
        );
        let mut buf = BytesMut::from(&b"0101"[..]);
        assert_eq!(
            f.decode_frame(&mut buf).unwrap_err().code(),
            "CODEC_TOO_LARGE"
        );
        let f = Framer::new(LengthPrefix::Bcd2, 100);
        let mut buf = BytesMut::from(&[0x0A, 0x00][..]);
        assert_eq!(
            f.decode_frame(&mut buf).unwrap_err().code(),
            "CODEC_BAD_FRAME"
        );
    }
}
