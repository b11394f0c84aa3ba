//! `online-txn`: serve, manage keys, or debug messages (`online-txn codec ...`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use openteller_crypto::Algorithm;
use openteller_online_txn::config::Config;
use openteller_online_txn::security::KeyUsage;
use openteller_online_txn::server;
use tokio_util::sync::CancellationToken;

const EXIT_USAGE: u8 = 64;
const EXIT_DATA: u8 = 65;
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "online-txn",
    version,
    about = "The OpenTeller online transaction engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine.
    Serve {
        /// The configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage the key store (keys are sealed under the master key).
    Keys {
        /// The configuration file naming the key store.
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Decode, encode and convert messages (see `online-txn codec --help`).
    Codec {
        /// Arguments of the codec tool.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum KeyAction {
    /// Import a clear key (e.g. a terminal's TMK from a key ceremony, or the host's ZPK/ZAK).
    Import {
        /// Key name: `term/<TERMINAL>/TMK`, `host/ZPK`, `host/ZAK`.
        #[arg(long)]
        name: String,
        /// What the key is for.
        #[arg(long, value_enum)]
        usage: UsageArg,
        /// Block cipher.
        #[arg(long, value_enum, default_value = "tdes")]
        algorithm: AlgorithmArg,
        /// The clear key in hex.
        #[arg(long)]
        hex: String,
        /// Expected key check value (hex), verified before storing.
        #[arg(long)]
        kcv: Option<String>,
    },
    /// List keys (name, usage, algorithm, check value — never values).
    List,
}

#[derive(Clone, Copy, ValueEnum)]
enum UsageArg {
    Kek,
    Pin,
    Mac,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    Tdes,
    Sm4,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("codec") {
        let rest = std::iter::once("online-txn codec".to_owned()).chain(args.into_iter().skip(2));
        return openteller_codec::cli::cli_main(rest);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Keys { config, action } => keys(config, action),
        Command::Codec { .. } => ExitCode::from(EXIT_USAGE),
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("online-txn: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("online-txn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        match server::start(config, shutdown.clone()).await {
            Ok(running) => {
                // One line on stdout for scripts and tests (port 0 resolves here).
                let admin = running
                    .admin_addr
                    .map(|a| format!(" admin={a}"))
                    .unwrap_or_default();
                println!(
                    "online-txn listening: terminals={}{admin}",
                    running.terminal_addr
                );
            }
            Err(e) => {
                eprintln!("online-txn: {e}");
                return ExitCode::from(match e {
                    server::StartError::Bind { .. } => 69,
                    _ => EXIT_CONFIG,
                });
            }
        }
        stop_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        ExitCode::SUCCESS
    })
}

fn keys(path: PathBuf, action: KeyAction) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let hsm = match server::open_keys(&config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("online-txn: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match action {
        KeyAction::List => {
            for k in hsm.list() {
                println!("{}\t{:?}\t{}\t{}", k.name, k.usage, k.algorithm, k.kcv);
            }
            ExitCode::SUCCESS
        }
        KeyAction::Import {
            name,
            usage,
            algorithm,
            hex: value,
            kcv,
        } => {
            let usage = match usage {
                UsageArg::Kek => KeyUsage::KeyEncryption,
                UsageArg::Pin => KeyUsage::Pin,
                UsageArg::Mac => KeyUsage::Mac,
            };
            let algorithm = match algorithm {
                AlgorithmArg::Tdes => Algorithm::Tdes,
                AlgorithmArg::Sm4 => Algorithm::Sm4,
            };
            let Ok(clear) = hex::decode(value.trim()).map(zeroize::Zeroizing::new) else {
                eprintln!("online-txn: the key must be hex");
                return ExitCode::from(EXIT_DATA);
            };
            match hsm.import(&name, usage, algorithm, &clear, kcv.as_deref()) {
                Ok(kcv) => {
                    println!("{name}\t{kcv}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("online-txn: {e}");
                    ExitCode::from(EXIT_DATA)
                }
            }
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
