//! Where a driver-proxy listens and how clients reach it: `unix:PATH` (the default on Unix) or
//! `tcp:HOST:PORT` (loopback, for platforms without Unix sockets and for remote debugging).

use std::{fmt, path::PathBuf, str::FromStr};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};

/// A socket address of a device service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix domain socket at this path.
    Unix(PathBuf),
    /// A TCP address, `host:port`.
    Tcp(String),
}

/// Why an endpoint string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    /// Neither `unix:` nor `tcp:`.
    #[error("endpoint {0:?} must start with unix: or tcp: (e.g. unix:/run/openteller/idc.sock)")]
    UnknownScheme(String),
    /// `unix:` with an empty path.
    #[error("endpoint {0:?} has an empty socket path")]
    EmptyPath(String),
    /// `tcp:` without `host:port`.
    #[error("endpoint {0:?} must be tcp:HOST:PORT with a port number")]
    BadTcpAddress(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(EndpointError::EmptyPath(s.to_owned()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(EndpointError::BadTcpAddress(s.to_owned()));
            }
            return Ok(Endpoint::Tcp(addr.to_owned()));
        }
        Err(EndpointError::UnknownScheme(s.to_owned()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl Endpoint {
    /// Opens a gRPC channel to this endpoint. The channel connects lazily and reconnects by
    /// itself after the proxy restarts.
    pub fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        match self {
            Endpoint::Tcp(addr) => {
                Ok(TonicEndpoint::from_shared(format!("http://{addr}"))?.connect_lazy())
            }
            Endpoint::Unix(path) => {
                let path = path.clone();
                // The URI is required by the API but unused: the connector below dials the socket.
                Ok(
                    TonicEndpoint::from_static("http://device.local").connect_with_connector_lazy(
                        tower::service_fn(move |_: Uri| {
                            let path = path.clone();
                            async move {
                                let stream = tokio::net::UnixStream::connect(path).await?;
                                Ok::<_, std::io::Error>(TokioIo::new(stream))
                            }
                        }),
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let e: Endpoint = "unix:/tmp/a.sock".parse().unwrap();
        assert_eq!(e, Endpoint::Unix("/tmp/a.sock".into()));
        assert_eq!(e.to_string(), "unix:/tmp/a.sock");
        let t: Endpoint = "tcp:127.0.0.1:7001".parse().unwrap();
        assert_eq!(t.to_string(), "tcp:127.0.0.1:7001");
    }

    #[test]
    fn refuses_bad_forms() {
        assert!(matches!(
            "/tmp/a".parse::<Endpoint>(),
            Err(EndpointError::UnknownScheme(_))
        ));
        assert!(matches!(
            "unix:".parse::<Endpoint>(),
            Err(EndpointError::EmptyPath(_))
        ));
        assert!(matches!(
            "tcp:localhost".parse::<Endpoint>(),
            Err(EndpointError::BadTcpAddress(_))
        ));
        assert!(matches!(
            "tcp::80".parse::<Endpoint>(),
            Err(EndpointError::BadTcpAddress(_))
        ));
        assert!(matches!(
            "tcp:h:99999".parse::<Endpoint>(),
            Err(EndpointError::BadTcpAddress(_))
        ));
    }
}
