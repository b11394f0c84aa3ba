//! `driver-proxy`: parse arguments, set up logging, serve until SIGTERM / SIGINT.

use std::process::ExitCode;

use clap::Parser;
use openteller_driver_proxy::cli::{Cli, EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_USAGE};
use openteller_driver_proxy::server::{self, ServeError};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let class = cli.class;
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("driver-proxy: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // One thread is plenty for one device and keeps the idle footprint small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("driver-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signal(shutdown.clone()));
        tracing::info!(class = class.slug(), "driver-proxy starting");
        let result = server::run(config, shutdown).await;
        signals.abort();
        match result {
            Ok(()) => {
                tracing::info!("driver-proxy stopped");
                ExitCode::SUCCESS
            }
            Err(e @ ServeError::SocketInUse(_)) => {
                eprintln!("driver-proxy: {e}");
                ExitCode::from(EXIT_UNAVAILABLE)
            }
            Err(e) => {
                eprintln!("driver-proxy: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
