//! A small 8583 client of the wire contract, and a test [`Terminal`] that builds the
//! requests the host understands.
//!
//! They exist for tests (this crate's, the online transaction engine's) and tools: a real
//! terminal never holds the ZPK, the engine translates PIN blocks into it.
//!
//! ```no_run
//! # async fn demo(keys: openteller_host_sim::HostKeys) -> Result<(), Box<dyn std::error::Error>> {
//! use openteller_host_sim::client::{HostClient, Terminal};
//!
//! let mut client = HostClient::connect("127.0.0.1:9583").await?;
//! let mut atm = Terminal::new("ATM00001", "OPENTELLER00001", keys);
//! let mut req = atm.inquiry("6222020200112233445", "1234");
//! let resp = client.call(&atm.seal(&mut req)?).await?;
//! assert_eq!(resp.text(39), Some("00"));
//! # Ok(()) }
//! ```

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use openteller_codec::framing::Framer;
use openteller_codec::{CodecError, Message, Spec};
use openteller_crypto::encrypt_pin_block;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::clock;
use crate::config::HostKeys;
use crate::wire::{self, MacCheck, OriginalData, WireError};

/// Errors of [`HostClient`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame or message was malformed.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The host closed the connection before answering.
    #[error("connection closed by the host")]
    Closed,
}

/// A framed 8583 connection to the host (2-byte binary length prefix, `cup` payloads).
pub struct HostClient {
    stream: TcpStream,
    buf: BytesMut,
    framer: Framer,
    spec: Arc<Spec>,
}

impl HostClient {
    /// Connects.
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<HostClient, ClientError> {
        let spec = wire::spec().map_err(|e| match e {
            WireError::Codec(c) => ClientError::Codec(c),
            WireError::Crypto(_) => ClientError::Closed,
        })?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HostClient {
            stream,
            buf: BytesMut::with_capacity(4096),
            framer: wire::framer(),
            spec: Arc::new(spec),
        })
    }

    /// The `cup` profile.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Sends one payload (an encoded message), framed.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let framed = self.framer.frame(payload)?;
        self.stream.write_all(&framed).await?;
        Ok(())
    }

    /// Sends raw bytes as they are (no framing): for malformed-input tests.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Closes the sending half (a short connection's "I am done sending").
    pub async fn shutdown_write(&mut self) -> Result<(), ClientError> {
        self.stream.shutdown().await?;
        Ok(())
    }

    /// Receives one payload; `None` when the host closed the connection cleanly.
    pub async fn recv_payload(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            if let Some(frame) = self.framer.decode_frame(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ClientError::Closed)
                };
            }
        }
    }

    /// Receives and decodes one message; `None` when the host closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Message>, ClientError> {
        match self.recv_payload().await? {
            Some(p) => Ok(Some(self.spec.decode(&p)?)),
            None => Ok(None),
        }
    }

    /// Sends a payload and waits for the next message.
    pub async fn call(&mut self, payload: &[u8]) -> Result<Message, ClientError> {
        self.send(payload).await?;
        self.recv().await?.ok_or(ClientError::Closed)
    }
}

/// A simulated terminal that builds requests the way the contract says, with PIN blocks
/// encrypted directly under the host's ZPK and MACs under its ZAK.
#[derive(Debug, Clone)]
pub struct Terminal {
    id: String,
    merchant: String,
    keys: HostKeys,
    spec: Arc<Spec>,
    stan: u32,
    /// TPDU of requests (`60` + destination `0001` + source `0000` by default).
    pub tpdu: Vec<u8>,
    /// CUP header of requests.
    pub header: Vec<u8>,
}

impl Terminal {
    /// A terminal: `id` is F41 (8 characters), `merchant` F42 (15 characters); shorter
    /// values are padded with spaces, longer ones cut.
    ///
    /// # Panics
    /// Never in practice: the built-in `cup` profile always parses.
    pub fn new(id: &str, merchant: &str, keys: HostKeys) -> Terminal {
        let spec = wire::spec().expect("the built-in cup profile parses");
        Terminal {
            id: format!("{id:<8.8}"),
            merchant: format!("{merchant:<15.15}"),
            keys,
            spec: Arc::new(spec),
            stan: 0,
            tpdu: vec![0x60, 0x00, 0x01, 0x00, 0x00],
            header: vec![0x60, 0x31, 0x00, 0x00, 0x00, 0x00],
        }
    }

    /// Continues numbering STANs after `last` (the next request gets `last + 1`).
    pub fn with_stan(mut self, last: u32) -> Terminal {
        self.stan = last % 1_000_000;
        self
    }

    /// The terminal id (F41).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next STAN (F11), 000001 to 999999.
    pub fn next_stan(&mut self) -> String {
        self.stan = self.stan % 999_999 + 1;
        format!("{:06}", self.stan)
    }

    /// An encrypted PIN block of `pin` for `pan` under the ZPK; an all-zero block (which
    /// the host counts as a wrong PIN) when `pin` or `pan` is not valid.
    pub fn pin_block(&self, pin: &str, pan: &str) -> Vec<u8> {
        encrypt_pin_block(self.keys.pin_format, pin, pan, &self.keys.zpk)
            .unwrap_or_else(|_| vec![0u8; self.keys.pin_format.block_len()])
    }

    fn with_pin(&self, mut msg: Message, pan: &str, pin: &str, new_pin: Option<&str>) -> Message {
        let current = self.pin_block(pin, pan);
        let new = new_pin.map(|p| self.pin_block(p, pan));
        if self.keys.pin_format == openteller_crypto::PinBlockFormat::Sm4Iso0 {
            let mut f62 = current;
            f62.extend(new.unwrap_or_default());
            msg.set(62, f62);
        } else {
            msg.set(52, current);
            if let Some(n) = new {
                msg.set(62, n);
            }
        }
        msg
    }

    fn base(&mut self, mti: &str, pcode: &str) -> Message {
        let now = clock::now_ms();
        let secs = (now / 1000) % 86_400;
        let (_, month, day) = clock::civil(clock::day(now));
        Message::new(mti)
            .with_tpdu(self.tpdu.clone())
            .with_header(self.header.clone())
            .with(3, pcode)
            .with(11, self.next_stan())
            .with(
                12,
                format!("{:02}{:02}{:02}", secs / 3600, (secs / 60) % 60, secs % 60),
            )
            .with(13, format!("{month:02}{day:02}"))
            .with(22, "021")
            .with(25, "02")
            .with(41, self.id.clone())
            .with(42, self.merchant.clone())
            .with(49, "156")
    }

    /// A balance inquiry (F3 310000).
    pub fn inquiry(&mut self, pan: &str, pin: &str) -> Message {
        let m = self.base("0200", "310000").with(2, pan);
        self.with_pin(m, pan, pin, None)
    }

    /// A withdrawal of `amount` minor units (F3 010000).
    pub fn withdrawal(&mut self, pan: &str, pin: &str, amount: u64) -> Message {
        let m = self
            .base("0200", "010000")
            .with(2, pan)
            .with(4, format!("{amount:012}"));
        self.with_pin(m, pan, pin, None)
    }

    /// A transfer of `amount` from the card's account to `to` (F3 400000, F103).
    pub fn transfer(&mut self, pan: &str, pin: &str, to: &str, amount: u64) -> Message {
        let m = self
            .base("0200", "400000")
            .with(2, pan)
            .with(4, format!("{amount:012}"))
            .with(103, to);
        self.with_pin(m, pan, pin, None)
    }

    /// A PIN change from `old` to `new` (F3 700000, new PIN block in F62).
    pub fn pin_change(&mut self, pan: &str, old: &str, new: &str) -> Message {
        let m = self.base("0200", "700000").with(2, pan);
        self.with_pin(m, pan, old, Some(new))
    }

    /// A reversal (0400) of `original`, with a new STAN and F90 naming the original.
    pub fn reversal_of(&mut self, original: &Message) -> Message {
        let pcode = original.text(3).unwrap_or("000000").to_owned();
        let mut m = self.base("0400", &pcode);
        for n in [2, 4, 22, 25, 49] {
            if let Some(v) = original.get(n) {
                m.set(n, v.clone());
            }
        }
        let od = OriginalData {
            mti: original.mti.clone(),
            stan: original.text(11).unwrap_or("").to_owned(),
            date: original.text(13).unwrap_or("").to_owned(),
            time: original.text(12).unwrap_or("").to_owned(),
        };
        m.with(90, od.to_field())
    }

    /// A partial reversal of `original`: [`Terminal::reversal_of`] with F95 saying that
    /// `stands` minor units of it stand (e.g. the notes actually dispensed); the host gives
    /// back the rest.
    pub fn partial_reversal_of(&mut self, original: &Message, stands: i64) -> Message {
        self.reversal_of(original)
            .with(95, wire::Replacement { amount: stands }.to_field())
    }

    /// An echo test (0800, F3 absent).
    pub fn echo(&mut self) -> Message {
        let mut m = self.base("0800", "000000");
        m.remove(3);
        m.remove(22);
        m.remove(25);
        m.remove(49);
        m
    }

    /// Encodes `msg` with its MAC (F64, or F128 when it has fields above 64).
    pub fn seal(&self, msg: &mut Message) -> Result<Vec<u8>, WireError> {
        self.keys.mac.seal(&self.spec, msg)
    }

    /// Decodes a response payload and checks its MAC.
    pub fn open(&self, payload: &[u8]) -> Result<(Message, MacCheck), WireError> {
        let msg = self.spec.decode(payload)?;
        let check = self.keys.mac.check(&self.spec, payload, &msg);
        Ok((msg, check))
    }
}
