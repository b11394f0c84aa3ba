//! `terminal-native --config FILE [--headless]`: parses arguments, validates the
//! configuration (exit 64 before anything is bound), and runs the host until SIGTERM or SIGINT:
//! headless (the bridge over a loopback WebSocket), or windowed (a tao + wry kiosk window with
//! the bridge over wry's IPC; only when built with the `window` feature, see [`window`]).

#[cfg(feature = "window")]
mod window;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use openteller_terminal_native::config::Settings;
use openteller_terminal_native::{EXIT_OK, EXIT_USAGE, run};
use tokio_util::sync::CancellationToken;

/// The OpenTeller terminal host.
#[derive(Debug, Parser)]
#[command(name = "terminal-native", version)]
struct Args {
    /// The TOML configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Serve the bridge over a WebSocket on the configured loopback address instead of
    /// opening the kiosk window.
    #[arg(long)]
    headless: bool,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("terminal-native: {e}");
            return EXIT_USAGE;
        }
    };
    if !args.headless {
        return windowed(settings);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("terminal-native: cannot start the async runtime: {e}");
            return openteller_terminal_native::EXIT_FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            trigger.cancel();
        });
        let result = run(settings, shutdown, |addr| {
            // The first stdout line tells a supervisor or a test where the bridge is.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "terminal-native listening on http://{addr}/");
            let _ = out.flush();
        })
        .await;
        match result {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("terminal-native: {e}");
                e.exit_code()
            }
        }
    })
}

/// The windowed kiosk host.
#[cfg(feature = "window")]
fn windowed(settings: Settings) -> i32 {
    window::run(settings)
}

/// Without the `window` feature there is no kiosk window: say so and exit 64.
#[cfg(not(feature = "window"))]
fn windowed(_settings: Settings) -> i32 {
    eprintln!(
        "terminal-native: this binary was built without the `window` feature, so it has no kiosk \
         window (tao + wry); rebuild with `cargo build -p openteller-terminal-native --features window` \
         (needs libwebkit2gtk-4.1-dev and libgtk-3-dev), or run with --headless and open the \
         printed URL in a browser"
    );
    EXIT_USAGE
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
