//! The command line: `driver-proxy --class <CLASS> --backend <virtual|lfs:PATH> --listen
//! <unix:PATH|tcp:HOST:PORT> [--state-dir DIR]`.
//!
//! Exit codes (for the keeper, which restarts only what a restart can fix):
//! 0 clean shutdown · 1 runtime failure · [`EXIT_USAGE`] bad arguments ·
//! [`EXIT_UNAVAILABLE`] the socket is served by another live process ·
//! [`EXIT_CONFIG`] the backend or state cannot be used as configured (permanent).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use openteller_proto::Endpoint;
use openteller_proto::device::v1::DeviceClass;

use crate::backend::{Backend, Hub};
use crate::server::ProxyConfig;

/// Bad command line (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// The socket is already served (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// The configuration cannot work: missing library, unusable state directory (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// Device class names as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassArg {
    /// CEN/XFS IDC.
    #[value(name = "CardReader")]
    CardReader,
    /// CEN/XFS PIN (EPP).
    #[value(name = "PinPad")]
    PinPad,
    /// CEN/XFS CDM.
    #[value(name = "CashDispenser")]
    CashDispenser,
    /// CEN/XFS PTR.
    #[value(name = "ReceiptPrinter")]
    ReceiptPrinter,
}

impl ClassArg {
    /// The proto class.
    pub fn class(self) -> DeviceClass {
        match self {
            ClassArg::CardReader => DeviceClass::CardReader,
            ClassArg::PinPad => DeviceClass::PinPad,
            ClassArg::CashDispenser => DeviceClass::CashDispenser,
            ClassArg::ReceiptPrinter => DeviceClass::ReceiptPrinter,
        }
    }

    /// A short name for default paths.
    pub fn slug(self) -> &'static str {
        match self {
            ClassArg::CardReader => "card-reader",
            ClassArg::PinPad => "pin-pad",
            ClassArg::CashDispenser => "cash-dispenser",
            ClassArg::ReceiptPrinter => "receipt-printer",
        }
    }
}

/// Which implementation drives the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// The simulators of seed 001 §12.
    Virtual,
    /// A service provider loaded from this shared library through the LFS ABI.
    Lfs(PathBuf),
}

impl FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "virtual" => Ok(BackendSpec::Virtual),
            _ => match s.strip_prefix("lfs:") {
                Some("") => Err("lfs: needs the path of the service provider library".into()),
                Some(path) => Ok(BackendSpec::Lfs(PathBuf::from(path))),
                None if s.starts_with("xfs:") => {
                    Err("the xfs backend exists only on Windows builds".into())
                }
                None => Err(format!("unknown backend {s:?}: use virtual or lfs:PATH")),
            },
        }
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "driver-proxy",
    version,
    about = "Serves one terminal device over the OpenTeller device API"
)]
pub struct Cli {
    /// Device class.
    #[arg(long, value_enum)]
    pub class: ClassArg,
    /// `virtual` or `lfs:PATH` (a service provider library).
    #[arg(long, default_value = "virtual", value_parser = BackendSpec::from_str)]
    pub backend: BackendSpec,
    /// `unix:PATH` or `tcp:HOST:PORT`.
    #[arg(long, value_parser = Endpoint::from_str)]
    pub listen: Endpoint,
    /// Where persistent device state lives [default: .state/driver-proxy/<class>].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Time limit of commands sent without one, in milliseconds.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub default_timeout_ms: u64,
}

/// Why the proxy could not be set up (all permanent: exit [`EXIT_CONFIG`]).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The virtual device's state could not be opened.
    #[error(transparent)]
    State(#[from] crate::store::StoreError),
    /// The LFS library could not be used.
    #[error(transparent)]
    Lfs(#[from] crate::lfs::LfsError),
}

impl Cli {
    /// The state directory, defaulted per class.
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".state/driver-proxy").join(self.class.slug()))
    }

    /// Builds the backend and the server configuration.
    pub fn into_config(self) -> Result<ProxyConfig, SetupError> {
        let hub = Arc::new(Hub::new());
        let class = self.class.class();
        let backend: Arc<dyn Backend> = match &self.backend {
            BackendSpec::Virtual => {
                crate::virtual_device::open(class, &self.state_dir(), Arc::clone(&hub))?
            }
            BackendSpec::Lfs(path) => crate::lfs::open(path, class, Arc::clone(&hub))?,
        };
        Ok(ProxyConfig {
            backend,
            hub,
            listen: self.listen,
            default_timeout: Duration::from_millis(self.default_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backends() {
        assert_eq!("virtual".parse::<BackendSpec>(), Ok(BackendSpec::Virtual));
        assert_eq!(
            "lfs:/x/y.so".parse::<BackendSpec>(),
            Ok(BackendSpec::Lfs("/x/y.so".into()))
        );
        assert!("lfs:".parse::<BackendSpec>().is_err());
        assert!("xfs:IDC30".parse::<BackendSpec>().is_err());
        assert!("real".parse::<BackendSpec>().is_err());
    }

    #[test]
    fn parses_a_full_command_line() {
        let cli = Cli::try_parse_from([
            "driver-proxy",
            "--class",
            "CardReader",
            "--listen",
            "unix:/tmp/idc.sock",
        ])
        .unwrap();
        assert_eq!(cli.class, ClassArg::CardReader);
        assert_eq!(cli.backend, BackendSpec::Virtual);
        assert_eq!(
            cli.state_dir(),
            PathBuf::from(".state/driver-proxy/card-reader")
        );
        assert!(
            Cli::try_parse_from(["driver-proxy", "--class", "Scanner", "--listen", "unix:/a"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["driver-proxy", "--class", "PinPad", "--listen", "/a"]).is_err()
        );
    }
}
