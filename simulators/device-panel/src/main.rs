//! `devsim`: testers' tools for OpenTeller virtual devices (seed 001 §12).
//!
//! - `devsim panel --listen 127.0.0.1:8090 --device idc=unix:/run/ot/idc.sock ...` serves a web
//!   panel (one self-contained page and a JSON/SSE API) over the simulator-control API of the
//!   running driver-proxies;
//! - `devsim --device ENDPOINT <subcommand>` does the same from scripts and tests, printing
//!   JSON. Exit status: 0 success, 1 refused by the device, 2 device unreachable, 64 bad
//!   arguments.
//!
//! See `docs/device-panel.md`.

#![forbid(unsafe_code)]

mod actions;
mod cli;
mod conn;
mod panel;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;

use cli::{Cli, Command, EXIT_REFUSED, EXIT_USAGE, Outcome};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    if let Command::Panel(args) = &cli.command
        && let Err(message) = args.check()
    {
        eprintln!("devsim: {message}");
        return ExitCode::from(EXIT_USAGE);
    }
    let is_panel = matches!(cli.command, Command::Panel(_));
    let default_level = if is_panel { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("devsim: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let outcome = runtime.block_on(async move {
        let timeout = Duration::from_millis(cli.timeout_ms.max(1));
        match cli.command {
            Command::Panel(args) => match panel::serve(args, timeout).await {
                Ok(()) => Outcome::Success,
                Err(e) => Outcome::Failed(EXIT_REFUSED, format!("{e:#}")),
            },
            _ => cli::run(cli).await,
        }
    });
    // Do not wait for lingering connection tasks.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Outcome::Success => ExitCode::SUCCESS,
        Outcome::Refused => ExitCode::from(EXIT_REFUSED),
        Outcome::Failed(code, message) => {
            eprintln!("devsim: {message}");
            ExitCode::from(code)
        }
    }
}
