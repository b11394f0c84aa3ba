//! A minimal client of the control API, for the `keeper` CLI and the tests: one HTTP/1.1
//! request per connection (`Connection: close`) over TCP or a Unix socket. Small on purpose —
//! the API is local, tiny and ours, so a full HTTP client stack would be dead weight on a kiosk.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::ControlAddr;

/// Why a request failed before an envelope came back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect, write or read.
    #[error("control API at {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer was not an HTTP response with a JSON envelope.
    #[error("control API at {addr}: malformed answer: {detail}")]
    Malformed {
        /// The address.
        addr: String,
        /// What was wrong.
        detail: String,
    },
    /// No answer in time.
    #[error("control API at {0}: no answer within 10 s")]
    Timeout(String),
}

/// An answer: HTTP status and the envelope.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// `{code, message, data}`.
    pub body: Value,
}

impl Answer {
    /// The envelope's `data`.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

/// Sends one request; `body` is sent as JSON when given.
pub async fn request(
    addr: &ControlAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, ClientError> {
    let name = addr.to_string();
    let io = |source| ClientError::Io {
        addr: name.clone(),
        source,
    };
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: keeper\r\nConnection: close\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    let exchange = async {
        let raw = match addr {
            ControlAddr::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await.map_err(io)?;
                exchange(s, &head, &payload).await.map_err(io)?
            }
            ControlAddr::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.map_err(io)?;
                exchange(s, &head, &payload).await.map_err(io)?
            }
        };
        parse(&raw).map_err(|detail| ClientError::Malformed {
            addr: name.clone(),
            detail,
        })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| ClientError::Timeout(addr.to_string()))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &str,
    payload: &str,
) -> std::io::Result<Vec<u8>> {
    s.write_all(head.as_bytes()).await?;
    s.write_all(payload.as_bytes()).await?;
    s.flush().await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    Ok(raw)
}

fn parse(raw: &[u8]) -> Result<Answer, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?;
    Ok(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let a =
            parse(b"HTTP/1.1 202 Accepted\r\ncontent-length: 13\r\n\r\n{\"code\":\"OK\"}").unwrap();
        assert_eq!(a.status, 202);
        assert_eq!(a.body["code"], "OK");
        let b = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(b.body["a"], 1);
        assert!(parse(b"garbage").is_err());
    }
}
