//! The `host-sim` command line.
//!
//! Exit codes: 0 success; 64 bad arguments; 65 the control API refused the request;
//! 69 the control API cannot be reached, or a port cannot be bound; 70 internal error;
//! 73 the journal cannot be opened; 78 bad configuration (reported before binding).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

use crate::{Config, Error, HostSim};

/// Exit code: bad arguments.
pub const EXIT_USAGE: u8 = 64;
/// Exit code: the control API refused the request.
pub const EXIT_REFUSED: u8 = 65;
/// Exit code: the control API is unreachable, or a port cannot be bound.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code: internal error.
pub const EXIT_SOFTWARE: u8 = 70;
/// Exit code: the journal cannot be opened.
pub const EXIT_CANTCREAT: u8 = 73;
/// Exit code: bad configuration.
pub const EXIT_CONFIG: u8 = 78;

/// A simulated bank host over ISO 8583 (cup profile) with fault injection.
#[derive(Debug, Parser)]
#[command(name = "host-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: 8583 over TCP plus the control API.
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Override the 8583 listen address of the config (port 0: any free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override the control API address of the config (port 0: any free port).
        #[arg(long)]
        control_listen: Option<SocketAddr>,
    },
    /// Show, set or clear injected faults.
    Faults {
        #[command(subcommand)]
        command: FaultsCommand,
    },
    /// Close every current 8583 connection.
    Disconnect(ControlArgs),
    /// List the accounts (PANs masked) with totals, or show one.
    Accounts {
        #[command(flatten)]
        control: ControlArgs,
        /// Show only this account (full PAN).
        #[arg(long)]
        pan: Option<String>,
    },
    /// Unlock a card locked by wrong PINs.
    Unlock {
        #[command(flatten)]
        control: ControlArgs,
        /// The card's PAN.
        pan: String,
    },
    /// List applied transactions (withdrawals, transfers, PIN changes, reversals) and counters.
    Transactions {
        #[command(flatten)]
        control: ControlArgs,
        /// First sequence number to list.
        #[arg(long, default_value_t = 1)]
        since: u64,
        /// Most entries to list.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
struct ControlArgs {
    /// Control API base URL.
    #[arg(
        long,
        env = "HOST_SIM_CONTROL",
        default_value = "http://127.0.0.1:9584"
    )]
    control: String,
}

#[derive(Debug, Subcommand)]
enum FaultsCommand {
    /// Show the current faults.
    Show(ControlArgs),
    /// Change some faults (the others stay as they are).
    Set {
        #[command(flatten)]
        control: ControlArgs,
        /// Delay every response by this many milliseconds (applied, answered late).
        #[arg(long)]
        delay_ms: Option<u64>,
        /// Drop this fraction (0..1) of responses (applied, not answered).
        #[arg(long)]
        drop_rate: Option<f64>,
        /// Answer this response code (e.g. 96) at --response-rate, without applying.
        #[arg(long)]
        response_code: Option<String>,
        /// Fraction (0..1) of 0200/0400 answered with --response-code.
        #[arg(long)]
        response_rate: Option<f64>,
        /// Link down (true) or up (false): close connections, process nothing.
        #[arg(long)]
        disconnect: Option<bool>,
    },
    /// Remove every fault.
    Clear(ControlArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Serve {
            config,
            listen,
            control_listen,
        } => serve(config, listen, control_listen),
        other => ExitCode::from(control_command(other)),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("host-sim: cannot start the runtime: {e}");
            None
        }
    }
}

fn serve(
    path: PathBuf,
    listen: Option<SocketAddr>,
    control_listen: Option<SocketAddr>,
) -> ExitCode {
    let mut config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("host-sim: bad configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Some(c) = control_listen {
        config.control = c;
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let Some(rt) = runtime() else {
        return ExitCode::from(EXIT_SOFTWARE);
    };
    let result = rt.block_on(async move {
        let sim = HostSim::bind(config).await?;
        let addr = sim.local_addr()?;
        let control = sim.control_addr()?;
        let formats: String = sim
            .format_addrs()
            .iter()
            .map(|(name, a)| format!(" {name}={a}"))
            .collect();
        println!("host-sim listening: iso8583={addr} control=http://{control}{formats}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        sim.run(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host-sim: {e}");
            ExitCode::from(match e {
                Error::Config(_) => EXIT_CONFIG,
                Error::Journal { .. } => EXIT_CANTCREAT,
                Error::Bind { .. } => EXIT_UNAVAILABLE,
                Error::Io(_) => EXIT_SOFTWARE,
            })
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A control API call: method, path, JSON body.
struct Call {
    base: String,
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

fn control_command(cmd: Command) -> u8 {
    let call = match cmd {
        Command::Serve { .. } => return EXIT_SOFTWARE,
        Command::Faults { command } => match command {
            FaultsCommand::Show(c) => Call {
                base: c.control,
                method: reqwest::Method::GET,
                path: "/faults".into(),
                body: None,
            },
            FaultsCommand::Clear(c) => Call {
                base: c.control,
                method: reqwest::Method::DELETE,
                path: "/faults".into(),
                body: None,
            },
            FaultsCommand::Set {
                control,
                delay_ms,
                drop_rate,
                response_code,
                response_rate,
                disconnect,
            } => {
                let mut body = Map::new();
                if let Some(v) = delay_ms {
                    body.insert("delay_ms".into(), v.into());
                }
                if let Some(v) = drop_rate {
                    body.insert("drop_rate".into(), v.into());
                }
                if let Some(v) = response_code {
                    body.insert("response_code".into(), v.into());
                }
                if let Some(v) = response_rate {
                    body.insert("response_rate".into(), v.into());
                }
                if let Some(v) = disconnect {
                    body.insert("disconnect".into(), v.into());
                }
                if body.is_empty() {
                    eprintln!(
                        "host-sim: faults set needs at least one of --delay-ms, --drop-rate, \
                         --response-code, --response-rate, --disconnect"
                    );
                    return EXIT_USAGE;
                }
                Call {
                    base: control.control,
                    method: reqwest::Method::POST,
                    path: "/faults".into(),
                    body: Some(Value::Object(body)),
                }
            }
        },
        Command::Disconnect(c) => Call {
            base: c.control,
            method: reqwest::Method::POST,
            path: "/disconnect".into(),
            body: None,
        },
        Command::Accounts { control, pan } => Call {
            base: control.control,
            method: reqwest::Method::GET,
            path: match pan {
                Some(p) => format!("/state/accounts/{p}"),
                None => "/state/accounts".into(),
            },
            body: None,
        },
        Command::Unlock { control, pan } => Call {
            base: control.control,
            method: reqwest::Method::POST,
            path: format!("/accounts/{pan}/unlock"),
            body: None,
        },
        Command::Transactions {
            control,
            since,
            limit,
        } => Call {
            base: control.control,
            method: reqwest::Method::GET,
            path: format!("/state/transactions?since={since}&limit={limit}"),
            body: None,
        },
    };
    let Some(rt) = runtime() else {
        return EXIT_SOFTWARE;
    };
    rt.block_on(send(call))
}

async fn send(call: Call) -> u8 {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("host-sim: {e}");
            return EXIT_SOFTWARE;
        }
    };
    let url = format!("{}{}", call.base.trim_end_matches('/'), call.path);
    let mut req = client.request(call.method, &url);
    if let Some(body) = &call.body {
        req = req.json(body);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "host-sim: cannot reach the control API at {}: {e}",
                call.base
            );
            return if e.is_builder() {
                EXIT_USAGE
            } else {
                EXIT_UNAVAILABLE
            };
        }
    };
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let pretty = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if status.is_success() {
        println!("{pretty}");
        0
    } else {
        eprintln!("host-sim: {status}: {pretty}");
        EXIT_REFUSED
    }
}
