//! `keeper`: runs the supervisor (`keeper --config FILE`) or talks to a running one
//! (`keeper status|restart NAME|pause|resume|alarms --control ADDR`). See `docs/keeper.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use openteller_keeper::client::{self, Answer};
use openteller_keeper::config::{Config, ControlAddr};
use openteller_keeper::{EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The OpenTeller terminal supervisor.
#[derive(Debug, Parser)]
#[command(name = "keeper", version, about)]
struct Cli {
    /// Run the supervisor with this configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// The control API of a running keeper (client commands).
    #[arg(
        long,
        global = true,
        default_value = "tcp:127.0.0.1:7700",
        value_name = "ADDR"
    )]
    control: String,
    /// Print the raw JSON answer (client commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Service state and every process.
    Status,
    /// Restart one process (a failed one gets a fresh restart budget).
    Restart {
        /// The process name.
        name: String,
    },
    /// Take the terminal out of service.
    Pause {
        /// Why (shown in the status and the alarm).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Put the terminal back in service.
    Resume,
    /// The kept alarms, oldest first.
    Alarms,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK } as u8);
        }
    };
    let code = match (&cli.command, &cli.config) {
        (None, Some(path)) => serve(path.clone(), cli.log_json),
        (None, None) => {
            eprintln!("keeper: give --config FILE to run, or a command (keeper --help)");
            EXIT_USAGE
        }
        (Some(_), Some(_)) => {
            eprintln!("keeper: --config runs the supervisor; client commands take --control");
            EXIT_USAGE
        }
        (Some(command), None) => client_command(&cli, command),
    };
    ExitCode::from(code as u8)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn serve(path: PathBuf, log_json: bool) -> i32 {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let settings = match Config::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keeper: bad configuration: {e}");
            return EXIT_USAGE;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keeper: cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
        let result = openteller_keeper::run(settings, Vec::new(), shutdown).await;
        signals.abort();
        match result {
            Ok(()) => {
                tracing::info!("keeper stopped");
                EXIT_OK
            }
            Err(e) => {
                tracing::error!("keeper failed: {e}");
                eprintln!("keeper: {e}");
                e.exit_code()
            }
        }
    })
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        shutdown.cancel();
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

fn client_command(cli: &Cli, command: &Command) -> i32 {
    let addr: ControlAddr = match cli.control.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keeper: --control: {e}");
            return EXIT_USAGE;
        }
    };
    let (method, path, body) = match command {
        Command::Status => ("GET", "/api/v1/status".to_owned(), None),
        Command::Restart { name } => ("POST", format!("/api/v1/processes/{name}/restart"), None),
        Command::Pause { reason } => (
            "POST",
            "/api/v1/service/pause".to_owned(),
            Some(json!({ "reason": reason })),
        ),
        Command::Resume => ("POST", "/api/v1/service/resume".to_owned(), None),
        Command::Alarms => ("GET", "/api/v1/alarms".to_owned(), None),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keeper: cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let answer = match rt.block_on(client::request(&addr, method, &path, body.as_ref())) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keeper: {e}");
            return EXIT_UNAVAILABLE;
        }
    };
    if !(200..300).contains(&answer.status) {
        eprintln!(
            "keeper: {} {}",
            answer.body["code"].as_str().unwrap_or("ERROR"),
            answer.body["message"].as_str().unwrap_or("")
        );
        return EXIT_FAILURE;
    }
    if cli.json {
        println!("{:#}", answer.data());
        return EXIT_OK;
    }
    match command {
        Command::Status => print_status(&answer),
        Command::Alarms => print_alarms(answer.data()),
        Command::Restart { name } => println!("restart of {name} requested"),
        Command::Pause { .. } | Command::Resume => print_service(answer.data()),
    }
    EXIT_OK
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_service(s: &Value) {
    if s["paused"].as_bool() == Some(true) {
        println!(
            "service: PAUSED by {} ({})",
            text(&s["paused_by"]),
            text(&s["reason"])
        );
    } else {
        println!("service: in service");
    }
}

fn print_status(answer: &Answer) {
    let data = answer.data();
    print_service(&data["service"]);
    if data["environment"]["blocked"].as_bool() == Some(true) {
        println!("host: BELOW A HARD MINIMUM (processes not started)");
    }
    println!(
        "{:<20} {:<9} {:>8} {:>8} {:<8} LAST EXIT",
        "NAME", "STATE", "PID", "RESTARTS", "HEALTHY"
    );
    for p in data["processes"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<9} {:>8} {:>8} {:<8} {}",
            text(&p["name"]),
            text(&p["state"]),
            text(&p["pid"]),
            text(&p["restarts"]),
            if p["health"]["healthy"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            text(&p["last_exit"]["reason"]),
        );
    }
}

fn print_alarms(data: &Value) {
    for a in data.as_array().into_iter().flatten() {
        println!(
            "#{} {} {:<8} {:<26} {:<12} {}",
            text(&a["id"]),
            text(&a["at_ms"]),
            text(&a["severity"]),
            text(&a["kind"]),
            text(&a["source"]),
            text(&a["message"]),
        );
    }
}
