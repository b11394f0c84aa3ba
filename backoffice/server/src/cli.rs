//! The command line: `backoffice serve [--config FILE] [--service NAME ...]`.
//!
//! Exit codes: 0 after a clean shutdown, 64 for bad arguments or configuration (before any port
//! is bound), 69 when the listen address cannot be bound, 70 when a store cannot be opened or
//! serving fails.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{App, SERVICES};
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "backoffice",
    version,
    about = "The OpenTeller backoffice and console"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the services (all of them unless --service is given).
    Serve {
        /// TOML configuration file (environment variables OPENTELLER_* override it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A service to run: platform, audit, files, console. Repeatable.
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let Command::Serve { config, services } = cli.command;
    for s in &services {
        if !SERVICES.contains(&s.as_str()) {
            eprintln!(
                "backoffice: unknown service {s:?} (known: {})",
                SERVICES.join(", ")
            );
            return ExitCode::from(64);
        }
    }
    let services: BTreeSet<String> = if services.is_empty() {
        SERVICES.iter().map(|s| s.to_string()).collect()
    } else {
        services.into_iter().collect()
    };
    let config = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("backoffice: {e}");
            return ExitCode::from(64);
        }
    };
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backoffice: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(run(config, services))
}

async fn run(config: Config, services: BTreeSet<String>) -> ExitCode {
    let listen = config.http.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("backoffice: cannot listen on {listen}: {e}");
            return ExitCode::from(69);
        }
    };
    let app = match App::build(config, services).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backoffice: {e:#}");
            return ExitCode::from(70);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let names: Vec<_> = app.services.iter().cloned().collect();
    tracing::info!(%addr, services = ?names, "backoffice listening");
    eprintln!(
        "backoffice: listening on http://{addr}/ ({})",
        names.join(", ")
    );
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    match crate::server::serve(app, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backoffice: {e:#}");
            ExitCode::from(70)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
