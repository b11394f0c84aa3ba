//! Load driver for the online transaction engine: the customer's benchmark (seed 001 §13.2.1 /
//! §13.3.1) on each front of §13.2 — tcp_8583 terminals, HTTP JSON, HTTP XML, TCP fixed-width
//! ("struct"), TCP delimiter, or a mix of 20 % each (`--front`), each with a back end of its
//! own format at host-sim behind it (§13.2's X→X combinations: `--behind same`, the default;
//! `--behind host` puts host-sim's tcp_8583 behind every front) — and the host-delay exception
//! test (§13.2.3 / §13.3.4), shortened.
//!
//! It starts the real `host-sim` and the real `online-txn` (release binaries next to this one)
//! on free ports with temporary configurations, imports the keys, signs `--connections`
//! terminals on (one connection, one terminal, one account each), then every connection sends
//! withdrawals back to back (closed loop, no think time, one request outstanding). After the
//! run it reconciles money between the terminals' answers, the engine's journal and the host's
//! accounts and transaction log, and exits non-zero if anything does not add up.
//!
//! ```sh
//! cargo build --release -p openteller-online-txn -p openteller-host-sim -p openteller-benches
//! target/release/txn-bench --connections 100 --duration-s 30
//! target/release/txn-bench --connections 100 --duration-s 30 --journal postgres
//! target/release/txn-bench --scenario exception
//! target/release/txn-bench --connections 100 --duration-s 30 --front mix
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, ValueEnum};
use openteller_benches::{
    Latencies, SystemCpu, clock_ticks, cpu_ticks, pids_named, rss_kib, thread_ticks,
};
use openteller_codec::{FieldValue, Message, Subfield};
use openteller_crypto::{self as crypto, Algorithm, Key, PinBlockFormat};
use openteller_host_sim::HostKeys;
use openteller_host_sim::client::{HostClient, Terminal};
use openteller_host_sim::wire::MacCheck;
use openteller_online_txn::journal::{Journal, TxnRecord, TxnState};
use serde_json::{Value, json};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Test keys (clear, as a simulator may have them). The same TMK for every terminal.
const MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TMK: &str = "0123456789ABCDEFFEDCBA9876543210";
const ZPK: &str = "11111111111111112222222222222222";
const ZAK: &str = "33333333333333334444444444444444";
/// Generated accounts: PAN = prefix + index on 19 digits.
const PAN_PREFIX: &str = "6222020299";
const PIN: &str = "1234";
/// Each account's opening balance (100,000,000.00 CNY): never the limiting factor.
const BALANCE: i64 = 10_000_000_000;
/// The channels' PIN key (the internal systems encrypt PIN blocks under it).
const PIK: &str = "5555555555555555AAAAAAAAAAAAAAAA";
/// Processing code of a withdrawal.
const WITHDRAWAL: &str = "010000";

/// The fronts of seed 001 §13.2 (host-sim's tcp_8583 is behind every one).
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Front {
    /// Terminals: ISO 8583 (CUP), MAC under the TAK, PIN under the TPK, after sign-on.
    #[value(name = "tcp_8583")]
    Tcp8583,
    /// Channel `mobile`: HTTP POST with a JSON body, keep-alive.
    #[value(name = "http_json")]
    HttpJson,
    /// Channel `branch`: HTTP POST with an XML body, keep-alive.
    #[value(name = "http_xml")]
    HttpXml,
    /// Channel `kiosk`: TCP, fixed-width records, 4-byte ASCII length, long connections.
    #[value(name = "tcp_struct")]
    TcpStruct,
    /// Channel `teller`: TCP, '|'-separated records, 2-byte binary length, long connections.
    #[value(name = "tcp_delimiter")]
    TcpDelimiter,
    /// 20 % of the connections on each of the five fronts (connection i on front i mod 5).
    Mix,
}

const FRONTS: [Front; 5] = [
    Front::Tcp8583,
    Front::HttpJson,
    Front::HttpXml,
    Front::TcpStruct,
    Front::TcpDelimiter,
];

impl Front {
    fn name(self) -> &'static str {
        match self {
            Front::Tcp8583 => "tcp_8583",
            Front::HttpJson => "http_json",
            Front::HttpXml => "http_xml",
            Front::TcpStruct => "tcp_struct",
            Front::TcpDelimiter => "tcp_delimiter",
            Front::Mix => "mix",
        }
    }

    /// The engine channel serving this front (`None`: the terminals' port).
    fn channel(self) -> Option<&'static str> {
        match self {
            Front::HttpJson => Some("mobile"),
            Front::HttpXml => Some("branch"),
            Front::TcpStruct => Some("kiosk"),
            Front::TcpDelimiter => Some("teller"),
            Front::Tcp8583 | Front::Mix => None,
        }
    }

    /// F41 prefix of the front's terminals (a channel's `terminal_prefix`).
    fn prefix(self) -> &'static str {
        match self {
            Front::HttpJson => "MB",
            Front::HttpXml => "BX",
            Front::TcpStruct => "KF",
            Front::TcpDelimiter => "TD",
            Front::Tcp8583 | Front::Mix => "T",
        }
    }
}

/// What the channel fronts are routed to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Behind {
    /// A back end of the front's own format at host-sim (seed 001 §13.2's X→X): HTTP JSON →
    /// `http_json`, HTTP XML → `http_xml`, struct → `tcp_fixed`, delimiter → `tcp_delimited`
    /// (host-sim's format listeners); tcp_8583 → the `[host]` link as always.
    Same,
    /// host-sim's tcp_8583 (the `[host]` link) behind every front.
    Host,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Scenario {
    /// Withdrawals back to back for `--duration-s`.
    Normal,
    /// Three phases of `--phase-s`: normal, host answering `--fault-delay-ms` late, normal.
    Exception,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum JournalKind {
    /// A SQLite file in the temporary directory.
    Sqlite,
    /// A fresh database on `--postgres-url`'s server, dropped afterwards.
    Postgres,
}

#[derive(Parser)]
#[command(
    about = "Drives online-txn (with host-sim behind it) with closed-loop withdrawals and reconciles the money"
)]
struct Args {
    /// Terminal connections (one terminal and one account each).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Measured time of the normal scenario, seconds.
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Unmeasured time before the measurement, seconds.
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// What to run.
    #[arg(long, value_enum, default_value = "normal")]
    scenario: Scenario,
    /// Where the engine journals.
    #[arg(long, value_enum, default_value = "sqlite")]
    journal: JournalKind,
    /// Exception scenario: length of each of its three phases, seconds.
    #[arg(long, default_value_t = 10)]
    phase_s: u64,
    /// Exception scenario: the host's answer delay during the middle phase.
    #[arg(long, default_value_t = 10_000)]
    fault_delay_ms: u64,
    /// The engine's host timeout (default 5000 ms normal, 1000 ms exception).
    #[arg(long)]
    host_timeout_ms: Option<u64>,
    /// The engine's long connections to the host.
    #[arg(long, default_value_t = 2)]
    host_connections: usize,
    /// Withdrawal amount, minor units.
    #[arg(long, default_value_t = 100)]
    amount: u64,
    /// Administrative URL of the PostgreSQL server (`--journal postgres`).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Where `online-txn` and `host-sim` are (default: this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Runtime worker threads of this load driver.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// How long to wait for the engine's reversal queue to drain, seconds.
    #[arg(long, default_value_t = 120)]
    drain_timeout_s: u64,
    /// RUST_LOG of both servers (their logs go to files in the temporary directory).
    #[arg(long, default_value = "warn")]
    log: String,
    /// Keep the temporary directory (configurations, logs, SQLite journal).
    #[arg(long)]
    keep: bool,
    /// Offered load in requests/s over all connections (each paced at rate/connections, still
    /// one request outstanding; latency counted from the scheduled send time, so falling behind
    /// shows). Default: closed loop, no think time.
    #[arg(long)]
    rate: Option<f64>,
    /// Measure the engine's journal alone, in this process (no servers, no network): each
    /// connection does the journal writes of one approved withdrawal (begin, SENT, APPROVED)
    /// back to back. Shows how much of the end-to-end figure the journal allows.
    #[arg(long)]
    journal_only: bool,
    /// The front every connection uses, or `mix` (20 % each).
    #[arg(long, value_enum, default_value = "tcp_8583")]
    front: Front,
    /// What the channel fronts go to: `same` (a back end of their own format, X→X) or `host`
    /// (host-sim's tcp_8583).
    #[arg(long, value_enum, default_value = "same")]
    behind: Behind,
}

impl Args {
    /// The front of connection `i`.
    fn front_of(&self, i: usize) -> Front {
        match self.front {
            Front::Mix => FRONTS[i % FRONTS.len()],
            f => f,
        }
    }

    /// The terminal id (F41) of connection `i`.
    fn terminal(&self, i: usize) -> String {
        terminal_id(self.front_of(i), i)
    }

    fn host_timeout(&self) -> u64 {
        self.host_timeout_ms.unwrap_or(match self.scenario {
            Scenario::Normal => 5_000,
            Scenario::Exception => 1_000,
        })
    }

    /// The measured time: the duration, or the exception scenario's three phases.
    fn measured(&self) -> Duration {
        match self.scenario {
            Scenario::Normal => Duration::from_secs(self.duration_s),
            Scenario::Exception => Duration::from_secs(3 * self.phase_s),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.connections == 0 || args.connections > 9_999_999 {
        eprintln!("txn-bench: --connections must be 1..=9999999");
        return ExitCode::from(64);
    }
    if args.scenario == Scenario::Exception
        && args.behind == Behind::Same
        && args.front != Front::Tcp8583
    {
        eprintln!(
            "txn-bench: the exception scenario reconciles the [host] reversal queue: use --behind host"
        );
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("txn-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let db = match args.journal {
            JournalKind::Sqlite => None,
            JournalKind::Postgres => Some(PgDb::create(&args.postgres_url).await?),
        };
        let url = db.as_ref().map(|d| d.url.clone());
        let result = tokio::select! {
            r = async {
                if args.journal_only {
                    journal_only(&args, url).await
                } else {
                    run(&args, url).await
                }
            } => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        // The servers are gone (their guards dropped with `run`); now the database can go.
        if let Some(db) = db
            && let Err(e) = db.drop_db().await
        {
            eprintln!(
                "txn-bench: could not drop the bench database {}: {e:#}",
                db.name
            );
        }
        result
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("txn-bench: RECONCILIATION FAILED (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("txn-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The servers

/// A child process killed (and reaped) when dropped, also on error paths.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a server and returns it with the first line it prints on stdout
/// (`... listening: name=ADDR ...`).
fn spawn_server(mut cmd: Command, log: &Path, rust_log: &str) -> anyhow::Result<(Proc, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .env("RUST_LOG", rust_log)
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim().is_empty() {
        bail!(
            "{:?} did not start: {}",
            cmd.get_program(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    Ok((proc, line))
}

fn word<'a>(line: &'a str, key: &str) -> anyhow::Result<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .ok_or_else(|| anyhow!("no {key} in {line:?}"))
}

fn terminal_id(front: Front, i: usize) -> String {
    match front {
        Front::Tcp8583 | Front::Mix => format!("T{:07}", i + 1),
        f => format!("{}{:06}", f.prefix(), i + 1),
    }
}

fn pan(i: usize) -> String {
    format!("{PAN_PREFIX}{i:09}")
}

/// host-sim and online-txn, running. Fields drop in order: the engine first, the directory
/// last.
struct Stack {
    engine: Proc,
    host: Proc,
    control: String,
    engine_addr: SocketAddr,
    /// Channel name → address.
    channels: HashMap<String, SocketAddr>,
    journal_url: String,
    dir_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Stack {
    fn start(args: &Args, postgres: Option<String>) -> anyhow::Result<Stack> {
        let bin_dir = match &args.bin_dir {
            Some(d) => d.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no directory of the executable")?
                .to_owned(),
        };
        let (engine_bin, host_bin) = (bin_dir.join("online-txn"), bin_dir.join("host-sim"));
        for b in [&engine_bin, &host_bin] {
            if !b.exists() {
                bail!(
                    "{} is missing: cargo build --release -p openteller-online-txn -p openteller-host-sim",
                    b.display()
                );
            }
        }
        let dir = tempfile::Builder::new().prefix("txn-bench-").tempdir()?;
        let (dir_path, dir) = if args.keep {
            (dir.keep(), None)
        } else {
            (dir.path().to_owned(), Some(dir))
        };
        let d = &dir_path;

        let host_cfg = d.join("host-sim.toml");
        std::fs::write(
            &host_cfg,
            format!(
                "listen = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nmax_connections = 1024\n{}\
                 [keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n\n\
                 [[generate]]\nprefix = \"{PAN_PREFIX}\"\ncount = {}\nstart = 0\nlength = 19\n\
                 pin = \"{PIN}\"\nbalance = {BALANCE}\n",
                if args.behind == Behind::Same {
                    host_listeners_toml()
                } else {
                    String::new()
                },
                args.connections
            ),
        )?;
        let mut cmd = Command::new(&host_bin);
        cmd.args(["serve", "--config"]).arg(&host_cfg);
        let (host, line) = spawn_server(cmd, &d.join("host-sim.log"), &args.log)?;
        let control = word(&line, "control=")?.to_owned();
        let host_addr = word(&line, "iso8583=")?.to_owned();
        let backends = match args.behind {
            Behind::Same => same_format_backends_toml(&line, args.connections)?,
            Behind::Host => String::new(),
        };

        let journal_url =
            postgres.unwrap_or_else(|| format!("sqlite://{}", d.join("journal.db").display()));
        let cfg = d.join("online-txn.toml");
        std::fs::write(
            &cfg,
            format!(
                "[journal]\nurl = \"{journal_url}\"\n\
                 [keys]\nfile = \"{}\"\n\
                 [terminals]\nlisten = \"127.0.0.1:0\"\nmax_connections = {}\n\
                 [host]\naddress = \"{host_addr}\"\nconnections = {}\ntimeout_ms = {}\n\
                 [reversal]\nmax_attempts = 1000\nretry_ms = 200\nttl_s = 3600\n\
                 retryable_codes = [\"91\", \"96\", \"98\"]\n{}{backends}",
                d.join("keys.json").display(),
                args.connections.max(1) + 16,
                args.host_connections,
                args.host_timeout(),
                channels_toml(args.connections),
            ),
        )?;
        let mut keys: Vec<(String, &str, &str)> = (0..args.connections)
            .filter(|&i| args.front_of(i) == Front::Tcp8583)
            .map(|i| (format!("term/{}/TMK", args.terminal(i)), "kek", TMK))
            .collect();
        keys.push(("chan/PIK".into(), "pin", PIK));
        keys.push(("host/ZPK".into(), "pin", ZPK));
        keys.push(("host/ZAK".into(), "mac", ZAK));
        for (name, usage, value) in &keys {
            let out = Command::new(&engine_bin)
                .args(["keys", "--config"])
                .arg(&cfg)
                .args(["import", "--name", name, "--usage", usage, "--hex", value])
                .env("OPENTELLER_MASTER_KEY", MASTER)
                .env("RUST_LOG", "warn")
                .output()?;
            if !out.status.success() {
                bail!(
                    "key import {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }

        let mut cmd = Command::new(&engine_bin);
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .env("OPENTELLER_MASTER_KEY", MASTER);
        // The channels log "channel listening: NAME=ADDR" (info) before the ready line.
        let engine_log = d.join("online-txn.log");
        let (engine, line) = spawn_server(
            cmd,
            &engine_log,
            &format!("{},openteller_online_txn::channels=info", args.log),
        )?;
        let engine_addr = word(&line, "terminals=")?.parse()?;
        let mut channels = HashMap::new();
        for l in std::fs::read_to_string(&engine_log)?.lines() {
            if let Some(pair) = l
                .split("channel listening: ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                && let Some((name, addr)) = pair.split_once('=')
            {
                channels.insert(name.to_owned(), addr.parse()?);
            }
        }
        Ok(Stack {
            engine,
            host,
            control,
            engine_addr,
            channels,
            journal_url,
            dir_path,
            _dir: dir,
        })
    }
}

/// The four channel fronts, as in `online-txn/engine/examples/channels` (its format and mapping
/// files), all routed to `[host]` (host-sim): long connections, no processing-code limit, PIN
/// blocks under `chan/PIK`.
fn channels_toml(connections: usize) -> String {
    let ex = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../online-txn/engine/examples/channels"
    );
    let limits = format!(
        "max_in_flight = {}\nmax_connections = {}\npin_key = \"chan/PIK\"\n",
        connections.max(1) + 16,
        connections.max(1) + 16
    );
    let map = format!(
        "mapping = {{ request = \"{ex}/request-map.toml\", response = \"{ex}/response-map.toml\" }}\n"
    );
    format!(
        "\n[[channels]]\nname = \"mobile\"\nkind = \"http_json\"\nlisten = \"127.0.0.1:0\"\npath = \"/txn\"\n\
         format = \"{ex}/mobile-json.toml\"\n{map}terminal_prefix = \"MB\"\n{limits}\
         \n[[channels]]\nname = \"branch\"\nkind = \"http_xml\"\nlisten = \"127.0.0.1:0\"\n\
         format = \"{ex}/branch-xml-request.toml\"\nresponse_format = \"{ex}/branch-xml-response.toml\"\n\
         {map}terminal_prefix = \"BX\"\n{limits}\
         \n[[channels]]\nname = \"kiosk\"\nkind = \"tcp_fixed\"\nlisten = \"127.0.0.1:0\"\nframing = \"ascii4\"\n\
         format = \"{ex}/kiosk-fixed-request.toml\"\nresponse_format = \"{ex}/kiosk-fixed-response.toml\"\n\
         {map}terminal_prefix = \"KF\"\n{limits}\
         \n[[channels]]\nname = \"teller\"\nkind = \"tcp_delimited\"\nlisten = \"127.0.0.1:0\"\nframing = \"binary2\"\n\
         format = \"{ex}/teller-delimited-request.toml\"\nresponse_format = \"{ex}/teller-delimited-response.toml\"\n\
         {map}terminal_prefix = \"TD\"\n{limits}"
    )
}

/// host-sim's format listeners (`simulators/host-sim/formats`), for `--behind same`.
fn host_listeners_toml() -> String {
    let f = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../simulators/host-sim/formats"
    );
    let maps = format!(
        "mapping = {{ request = \"{f}/request-map.toml\", response = \"{f}/response-map.toml\" }}\n"
    );
    format!(
        "\n[[listeners]]\nname = \"json\"\nkind = \"http_json\"\nlisten = \"127.0.0.1:0\"\npath = \"/iso\"\n\
         \n[[listeners]]\nname = \"xml\"\nkind = \"http_xml\"\nlisten = \"127.0.0.1:0\"\npath = \"/iso\"\n\
         format = \"{f}/xml-request.toml\"\nresponse_format = \"{f}/xml-response.toml\"\n{maps}\
         \n[[listeners]]\nname = \"fixed\"\nkind = \"tcp_fixed\"\nlisten = \"127.0.0.1:0\"\nframing = \"ascii4\"\n\
         format = \"{f}/fixed-request.toml\"\nresponse_format = \"{f}/fixed-response.toml\"\n{maps}\
         \n[[listeners]]\nname = \"delimited\"\nkind = \"tcp_delimited\"\nlisten = \"127.0.0.1:0\"\n\
         format = \"{f}/delimited-request.toml\"\nresponse_format = \"{f}/delimited-response.toml\"\n{maps}\n"
    )
}

/// The engine's same-format back ends in front of host-sim's listeners (named in its
/// listening `line`) and the routes of each channel to its own format, for `--behind same`.
fn same_format_backends_toml(line: &str, connections: usize) -> anyhow::Result<String> {
    let f = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../simulators/host-sim/formats"
    );
    let b = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../online-txn/engine/examples/backends"
    );
    let maps = format!(
        "mapping = {{ request = \"{b}/request-map.toml\", response = \"{b}/response-map.toml\" }}\n"
    );
    // Record TCP back ends carry one request at a time per connection.
    let pool = connections.clamp(1, 64);
    Ok(format!(
        "\n[[backends]]\nname = \"json\"\nkind = \"http_json\"\nurl = \"http://{json}/iso\"\nzpk = \"host/ZPK\"\n\
         \n[[backends]]\nname = \"xml\"\nkind = \"http_xml\"\nurl = \"http://{xml}/iso\"\nzpk = \"host/ZPK\"\n\
         format = \"{f}/xml-request.toml\"\nresponse_format = \"{f}/xml-response.toml\"\n{maps}\
         \n[[backends]]\nname = \"fixed\"\nkind = \"tcp_fixed\"\naddress = \"{fixed}\"\nframing = \"ascii4\"\n\
         connections = {pool}\nzpk = \"host/ZPK\"\n\
         format = \"{f}/fixed-request.toml\"\nresponse_format = \"{f}/fixed-response.toml\"\n{maps}\
         \n[[backends]]\nname = \"delimited\"\nkind = \"tcp_delimited\"\naddress = \"{delimited}\"\n\
         connections = {pool}\nzpk = \"host/ZPK\"\n\
         format = \"{f}/delimited-request.toml\"\nresponse_format = \"{f}/delimited-response.toml\"\n{maps}\
         \n[[routes]]\nchannel = \"mobile\"\nbackend = \"json\"\n\
         [[routes]]\nchannel = \"branch\"\nbackend = \"xml\"\n\
         [[routes]]\nchannel = \"kiosk\"\nbackend = \"fixed\"\n\
         [[routes]]\nchannel = \"teller\"\nbackend = \"delimited\"\n",
        json = word(line, "json=")?,
        xml = word(line, "xml=")?,
        fixed = word(line, "fixed=")?,
        delimited = word(line, "delimited=")?,
    ))
}

/// A fresh PostgreSQL database for one run, created like the engine's journal tests do.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    async fn create(admin: &str) -> anyhow::Result<PgDb> {
        sqlx::any::install_default_drivers();
        let name = format!("ot_txn_bench_{}", std::process::id());
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin)
            .await
            .with_context(|| format!("PostgreSQL at {admin}"))?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut conn)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin
            .rsplit_once('/')
            .map_or(admin, |(base, _)| base)
            .to_owned();
        Ok(PgDb {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop_db(&self) -> anyhow::Result<()> {
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Terminals

/// Signs terminal `id` on (0800, F60.3 = 003) and returns a client holding its new working
/// keys, unwrapped from F62 with the TMK and checked against their check values.
async fn sign_on(addr: SocketAddr, id: String) -> anyhow::Result<(HostClient, Terminal)> {
    let mut client = HostClient::connect(addr).await?;
    let spec = client.spec().clone();
    let req = Message::new("0800")
        .with_tpdu(vec![0x60, 0, 0x01, 0, 0])
        .with_header(vec![0x60, 0x31, 0, 0, 0, 0])
        .with(11, "000001")
        .with(41, id.as_str())
        .with(42, "OPENTELLER00001")
        .with(
            60,
            FieldValue::Subfields(vec![
                Subfield::new("1", "00"),
                Subfield::new("2", "000001"),
                Subfield::new("3", "003"),
            ]),
        );
    let answer = client.call(&spec.encode(&req)?).await?;
    if answer.mti != "0810" || answer.text(39) != Some("00") {
        bail!("sign-on of {id}: {} F39 {:?}", answer.mti, answer.text(39));
    }
    let f62 = answer.bytes(62).context("sign-on answer without F62")?;
    if f62.len() != 38 {
        bail!("sign-on of {id}: F62 has {} bytes, not 38", f62.len());
    }
    let tmk = Key::from_hex(Algorithm::Tdes, TMK)?;
    let unwrap = |wrapped: &[u8], kcv: &[u8]| -> anyhow::Result<String> {
        let clear = crypto::ecb_decrypt(&tmk, wrapped)?;
        if crypto::kcv(&Key::new(Algorithm::Tdes, &clear)?).as_slice() != kcv {
            bail!("sign-on of {id}: working key check value mismatch");
        }
        Ok(hex::encode_upper(clear))
    };
    let tpk = unwrap(&f62[..16], &f62[16..19])?;
    let tak = unwrap(&f62[19..35], &f62[35..38])?;
    let keys = HostKeys::from_hex("tdes", &tpk, &tak, None, None)
        .map_err(|e| anyhow!("working keys: {e}"))?;
    Ok((
        client,
        Terminal::new(&id, "OPENTELLER00001", keys).with_stan(100),
    ))
}

/// When things happen, shared by all workers.
struct Plan {
    measure: Instant,
    end: Instant,
    /// Exception scenario: phase length (three phases).
    phase: Option<Duration>,
    /// `--rate`: each connection's interval between requests.
    interval: Option<Duration>,
}

impl Plan {
    fn phases(&self) -> usize {
        if self.phase.is_some() { 3 } else { 1 }
    }

    /// The measured phase a request sent at `t` belongs to (`None`: warm-up).
    fn phase_of(&self, t: Instant) -> Option<usize> {
        let since = t.checked_duration_since(self.measure)?;
        Some(match self.phase {
            None => 0,
            Some(p) => ((since.as_nanos() / p.as_nanos().max(1)) as usize).min(2),
        })
    }
}

/// Requests of one measured phase.
#[derive(Default)]
struct Tally {
    latencies: Latencies,
    requests: u64,
    ok: u64,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.latencies.merge(&other.latencies);
        self.requests += other.requests;
        self.ok += other.ok;
    }
}

/// What one connection saw.
struct WorkerOut {
    terminal: String,
    front: Front,
    phases: Vec<Tally>,
    /// Every answer by F39, warm-up included.
    codes: BTreeMap<String, u64>,
    /// Answers whose MAC did not verify, or which answered another STAN.
    bad: u64,
}

/// One connection to a front of the engine.
enum Conn {
    /// A signed-on terminal (tcp_8583).
    Terminal(Box<(HostClient, Terminal)>),
    /// An HTTP channel: its own client (one keep-alive connection) and URL.
    Http(reqwest::Client, String),
    /// A TCP channel, long connection.
    Tcp(TcpStream),
}

/// Opens connection `i`'s front: signs a terminal on, or connects to the channel.
async fn connect(
    stack_addr: SocketAddr,
    channel: Option<SocketAddr>,
    front: Front,
    id: String,
) -> anyhow::Result<Conn> {
    let channel =
        || channel.ok_or_else(|| anyhow!("the engine has no channel for {}", front.name()));
    Ok(match front {
        Front::Tcp8583 | Front::Mix => {
            let (client, term) = sign_on(stack_addr, id).await?;
            Conn::Terminal(Box::new((client, term)))
        }
        Front::HttpJson | Front::HttpXml => {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let path = if front == Front::HttpJson {
                "/txn"
            } else {
                "/"
            };
            Conn::Http(client, format!("http://{}{path}", channel()?))
        }
        Front::TcpStruct | Front::TcpDelimiter => {
            let stream = TcpStream::connect(channel()?).await?;
            stream.set_nodelay(true)?;
            Conn::Tcp(stream)
        }
    })
}

/// A channel withdrawal request in `front`'s format.
fn channel_request(
    front: Front,
    terminal: &str,
    stan: &str,
    date: &str,
    pan: &str,
    amount: &str,
    pin: &str,
) -> String {
    match front {
        Front::HttpJson => json!({
            "txn": {"code": WITHDRAWAL, "terminal": terminal, "stan": stan, "date": date,
                    "amount": amount, "currency": "156"},
            "card": {"pan": pan, "pin_block": pin}
        })
        .to_string(),
        Front::HttpXml => format!(
            "<?xml version=\"1.0\"?><Request type=\"0200\"><Header><Code>{WITHDRAWAL}</Code><Terminal>{terminal}</Terminal>\
             <Stan>{stan}</Stan><Date>{date}</Date></Header><Card><Pan>{pan}</Pan><PinBlock>{pin}</PinBlock></Card>\
             <Amount currency=\"156\">{amount}</Amount></Request>"
        ),
        Front::TcpStruct => format!(
            "{WITHDRAWAL:6}{terminal:8}{stan:6}{date:4}{pan:19}{amount:>12}{:3}{:19}{pin:16}",
            "156", ""
        ),
        _ => format!("{WITHDRAWAL}|{terminal}|{stan}|{date}|{pan}|{amount}|156||{pin}"),
    }
}

/// (F39, F11) of a channel answer in `front`'s format; `None` when it cannot be read.
fn channel_answer(front: Front, a: &str) -> Option<(String, String)> {
    let xml_text = |tag: &str| {
        a.split(&format!("<{tag}>"))
            .nth(1)?
            .split(&format!("</{tag}>"))
            .next()
            .map(str::to_owned)
    };
    match front {
        Front::HttpJson => {
            let v: Value = serde_json::from_str(a).ok()?;
            Some((
                v["result"]["code"].as_str()?.to_owned(),
                v["txn"]["stan"].as_str()?.to_owned(),
            ))
        }
        Front::HttpXml => Some((
            a.split("code=\"").nth(1)?.get(..2)?.to_owned(),
            xml_text("Stan")?,
        )),
        Front::TcpStruct => {
            if a.len() != 66 {
                return None;
            }
            Some((
                a.get(0..2)?.trim().to_owned(),
                a.get(2..8)?.trim().to_owned(),
            ))
        }
        _ => {
            let f: Vec<&str> = a.split('|').collect();
            (f.len() == 7).then(|| (f[0].to_owned(), f[1].to_owned()))
        }
    }
}

/// Sends one framed payload on a TCP channel and reads the framed answer.
async fn tcp_call(stream: &mut TcpStream, front: Front, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(payload.len() + 4);
    if front == Front::TcpStruct {
        frame.extend_from_slice(format!("{:04}", payload.len()).as_bytes());
    } else {
        frame.extend_from_slice(&u16::try_from(payload.len())?.to_be_bytes());
    }
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await?;
    let len = if front == Front::TcpStruct {
        let mut h = [0u8; 4];
        stream.read_exact(&mut h).await?;
        std::str::from_utf8(&h)?.parse::<usize>()?
    } else {
        let mut h = [0u8; 2];
        stream.read_exact(&mut h).await?;
        usize::from(u16::from_be_bytes(h))
    };
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// What a connection needs to know about its terminal and account.
struct Who {
    terminal: String,
    front: Front,
    pan: String,
    amount: u64,
    /// F13 the channel requests carry (today, UTC).
    date: String,
}

async fn worker(
    mut conn: Conn,
    who: Who,
    plan: Arc<Plan>,
    offset: f64,
) -> anyhow::Result<WorkerOut> {
    let mut out = WorkerOut {
        terminal: who.terminal.clone(),
        front: who.front,
        phases: (0..plan.phases()).map(|_| Tally::default()).collect(),
        codes: BTreeMap::new(),
        bad: 0,
    };
    let pin = {
        let k = Key::from_hex(Algorithm::Tdes, PIK)?;
        hex::encode_upper(crypto::encrypt_pin_block(
            PinBlockFormat::Iso0,
            PIN,
            &who.pan,
            &k,
        )?)
    };
    let amount = format!("{}.{:02}", who.amount / 100, who.amount % 100);
    let mut seq = 100u32;
    // Paced: connection i starts at its share of the interval, then every interval.
    let mut next = plan.interval.map(|i| Instant::now() + i.mul_f64(offset));
    while Instant::now() < plan.end {
        // The request, ready before its send time.
        let (stan, bytes) = match &mut conn {
            Conn::Terminal(t) => {
                let term = &mut t.1;
                let mut req = term.withdrawal(&who.pan, PIN, who.amount);
                let stan = req.text(11).unwrap_or_default().to_owned();
                (stan, term.seal(&mut req)?)
            }
            _ => {
                seq = if seq >= 999_999 { 1 } else { seq + 1 };
                let stan = format!("{seq:06}");
                let body = channel_request(
                    who.front,
                    &who.terminal,
                    &stan,
                    &who.date,
                    &who.pan,
                    &amount,
                    &pin,
                );
                (stan, body.into_bytes())
            }
        };
        let sent = match (next, plan.interval) {
            (Some(at), Some(interval)) => {
                tokio::time::sleep_until(at.into()).await;
                next = Some(at + interval);
                at
            }
            _ => Instant::now(),
        };
        if sent >= plan.end {
            break;
        }
        let (code, sound) = match &mut conn {
            Conn::Terminal(t) => {
                let (client, term) = &mut **t;
                client.send(&bytes).await?;
                let payload = client
                    .recv_payload()
                    .await?
                    .ok_or_else(|| anyhow!("{}: the engine closed the connection", out.terminal))?;
                let (answer, check) = term.open(&payload)?;
                let code = answer.text(39).unwrap_or("--").to_owned();
                (
                    code,
                    check == MacCheck::Valid && answer.text(11) == Some(stan.as_str()),
                )
            }
            Conn::Http(client, url) => {
                let r = client.post(url.as_str()).body(bytes).send().await?;
                let status = r.status();
                let text = r.text().await?;
                match channel_answer(who.front, &text) {
                    Some((code, s)) if status.is_success() => (code, s == stan),
                    _ => bail!("{}: HTTP {status}: {text}", out.terminal),
                }
            }
            Conn::Tcp(stream) => {
                let payload = tcp_call(stream, who.front, &bytes).await?;
                let text = String::from_utf8_lossy(&payload);
                match channel_answer(who.front, &text) {
                    Some((code, s)) => (code, s == stan),
                    None => bail!("{}: unreadable answer {text:?}", out.terminal),
                }
            }
        };
        let latency = sent.elapsed();
        if !sound {
            out.bad += 1;
        }
        let ok = sound && code == "00";
        *out.codes.entry(code).or_default() += 1;
        if let Some(p) = plan.phase_of(sent) {
            let t = &mut out.phases[p];
            t.latencies.record(latency);
            t.requests += 1;
            t.ok += u64::from(ok);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// CPU and memory

struct CpuSample {
    at: Instant,
    engine: Option<u64>,
    host: Option<u64>,
    driver: Option<u64>,
    system: Option<SystemCpu>,
    engine_threads: BTreeMap<String, u64>,
    host_threads: BTreeMap<String, u64>,
    /// Every `postgres` server process (its backends, WAL writer, ...) when journaling there.
    postgres: BTreeMap<u32, u64>,
}

impl CpuSample {
    fn take(stack: &Stack, postgres: bool) -> CpuSample {
        CpuSample {
            postgres: if postgres {
                pids_named("postgres")
                    .into_iter()
                    .filter_map(|p| Some((p, cpu_ticks(p)?)))
                    .collect()
            } else {
                BTreeMap::new()
            },
            at: Instant::now(),
            engine: cpu_ticks(stack.engine.pid()),
            host: cpu_ticks(stack.host.pid()),
            driver: cpu_ticks(std::process::id()),
            system: SystemCpu::now(),
            engine_threads: thread_ticks(stack.engine.pid()),
            host_threads: thread_ticks(stack.host.pid()),
        }
    }
}

/// CPU use between two samples as % of one core.
fn pct(a: Option<u64>, b: Option<u64>, ticks: u64, secs: f64) -> Option<f64> {
    Some(b?.saturating_sub(a?) as f64 / ticks as f64 / secs * 100.0)
}

fn fmt_pct(p: Option<f64>) -> String {
    p.map_or("n/a".into(), |p| format!("{p:.0} %"))
}

fn fmt_mb(k: Option<u64>) -> String {
    k.map_or("n/a".into(), |k| format!("{:.1} MB", k as f64 / 1024.0))
}

/// "name 85 %, name 30 %" per thread name, busiest first, for threads above 0.5 %.
fn thread_split(
    a: &BTreeMap<String, u64>,
    b: &BTreeMap<String, u64>,
    ticks: u64,
    secs: f64,
) -> String {
    let mut v: Vec<(f64, &str)> = b
        .iter()
        .map(|(name, t)| {
            let before = a.get(name).copied().unwrap_or(0);
            (
                t.saturating_sub(before) as f64 / ticks as f64 / secs * 100.0,
                name.as_str(),
            )
        })
        .filter(|(p, _)| *p >= 0.5)
        .collect();
    v.sort_by(|x, y| y.0.total_cmp(&x.0));
    let parts: Vec<String> = v
        .iter()
        .map(|(p, name)| format!("`{name}` {p:.0} %"))
        .collect();
    if parts.is_empty() {
        "idle".into()
    } else {
        parts.join(", ")
    }
}

/// Measures the disk's sync latency during the run (other users of the disk show up here):
/// a 4 KiB write and `fdatasync` every 100 ms, on its own thread.
struct DiskProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<Latencies>>,
}

impl DiskProbe {
    fn start(dir: &Path) -> DiskProbe {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = dir.join("disk-probe.bin");
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).ok()?;
            let block = [0x5au8; 4096];
            let mut l = Latencies::new();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                f.write_all(&block).ok()?;
                f.sync_data().ok()?;
                l.record(t.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = std::fs::remove_file(&path);
            Some(l)
        });
        DiskProbe { stop, thread }
    }

    fn stop(self) -> Option<Latencies> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

// ---------------------------------------------------------------------------------------------
// The run

const ROW_HEADER: &str = "| run | journal | connections | duration s | requests | TPS | avg ms | p50 ms | p99 ms | max ms | success |\n\
                          |---|---|---|---|---|---|---|---|---|---|---|";

fn row(name: &str, journal: &str, connections: usize, t: &Tally, secs: f64) -> String {
    let l = &t.latencies;
    format!(
        "| {name} | {journal} | {connections} | {secs:.1} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.3} % |",
        t.requests,
        t.requests as f64 / secs.max(1e-9),
        l.mean_ms(),
        l.quantile_ms(0.50),
        l.quantile_ms(0.99),
        l.max_ms(),
        if t.requests == 0 {
            0.0
        } else {
            t.ok as f64 * 100.0 / t.requests as f64
        },
    )
}

async fn run(args: &Args, postgres: Option<String>) -> anyhow::Result<bool> {
    let setup = Instant::now();
    let stack = Stack::start(args, postgres)?;
    let http = reqwest::Client::new();
    let n = args.connections;
    let journal_name = match args.journal {
        JournalKind::Sqlite => "sqlite",
        JournalKind::Postgres => "postgres",
    };
    println!(
        "txn-bench: scenario {:?}, journal {journal_name}, {n} connections, warm-up {} s, host timeout {} ms, \
         engine pid {}, host-sim pid {}, {} CPUs, dir {}",
        args.scenario,
        args.warmup_s,
        args.host_timeout(),
        stack.engine.pid(),
        stack.host.pid(),
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        stack.dir_path.display()
    );

    let mut initial = Vec::with_capacity(n);
    for i in 0..n {
        initial.push(available(&http, &stack.control, &pan(i)).await?);
    }

    let signing: Vec<_> = (0..n)
        .map(|i| {
            let front = args.front_of(i);
            let channel = front.channel().and_then(|c| stack.channels.get(c).copied());
            tokio::spawn(connect(stack.engine_addr, channel, front, args.terminal(i)))
        })
        .collect();
    let mut terminals = Vec::with_capacity(n);
    for s in signing {
        terminals.push(s.await??);
    }
    println!(
        "txn-bench: started, signed on and connected {n} terminals (front {}) in {:.1} s",
        args.front.name(),
        setup.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let measure = start + Duration::from_secs(args.warmup_s);
    let plan = Arc::new(Plan {
        measure,
        end: measure + args.measured(),
        phase: (args.scenario == Scenario::Exception).then(|| Duration::from_secs(args.phase_s)),
        interval: args
            .rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(n as f64 / r)),
    });
    let faults = plan.phase.map(|phase| {
        let (http, control, delay) = (http.clone(), stack.control.clone(), args.fault_delay_ms);
        tokio::spawn(async move {
            tokio::time::sleep_until((measure + phase).into()).await;
            let r = http
                .post(format!("{control}/faults"))
                .json(&json!({ "delay_ms": delay }))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("setting the delay fault: {}", r.text().await?);
            }
            tokio::time::sleep_until((measure + 2 * phase).into()).await;
            let r = http.delete(format!("{control}/faults")).send().await?;
            if !r.status().is_success() {
                bail!("clearing the faults: {}", r.text().await?);
            }
            anyhow::Ok(())
        })
    });
    let date = chrono::Utc::now().format("%m%d").to_string();
    let workers: Vec<_> = terminals
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let who = Who {
                terminal: args.terminal(i),
                front: args.front_of(i),
                pan: pan(i),
                amount: args.amount,
                date: date.clone(),
            };
            tokio::spawn(worker(conn, who, Arc::clone(&plan), i as f64 / n as f64))
        })
        .collect();
    tokio::time::sleep_until(measure.into()).await;
    let probe = DiskProbe::start(&stack.dir_path);
    let pg = args.journal == JournalKind::Postgres;
    let before = CpuSample::take(&stack, pg);
    let mut outs = Vec::with_capacity(n);
    for w in workers {
        outs.push(w.await??);
    }
    let after = CpuSample::take(&stack, pg);
    let disk = probe.stop();
    if let Some(f) = faults {
        f.await??;
    }
    let secs = after.at.duration_since(before.at).as_secs_f64();
    let engine_rss = rss_kib(stack.engine.pid());
    let host_rss = rss_kib(stack.host.pid());
    let driver_rss = rss_kib(std::process::id());

    // Report.
    let mut phases: Vec<Tally> = (0..plan.phases()).map(|_| Tally::default()).collect();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut bad = 0;
    for o in &outs {
        for (p, t) in phases.iter_mut().zip(&o.phases) {
            p.merge(t);
        }
        for (c, k) in &o.codes {
            *codes.entry(c.clone()).or_default() += k;
        }
        bad += o.bad;
    }
    let mut overall = Tally::default();
    for p in &phases {
        overall.merge(p);
    }
    overall.latencies.finish(Duration::from_secs_f64(secs));
    println!("\n{ROW_HEADER}");
    if let Some(phase) = plan.phase {
        let names = [
            "1 normal".to_owned(),
            format!("2 host delay {} ms", args.fault_delay_ms),
            "3 normal again".to_owned(),
        ];
        for (name, t) in names.iter().zip(&phases) {
            println!(
                "{}",
                row(
                    &format!("exception {name}"),
                    journal_name,
                    n,
                    t,
                    phase.as_secs_f64()
                )
            );
        }
        println!(
            "{}",
            row("exception, overall", journal_name, n, &overall, secs)
        );
    } else {
        let name = match args.rate {
            Some(r) => format!("{} withdrawal, offered {r:.0}/s", args.front.name()),
            None => format!("{} withdrawal", args.front.name()),
        };
        if args.front == Front::Mix {
            for f in FRONTS {
                let mut t = Tally::default();
                let mut k = 0;
                for o in outs.iter().filter(|o| o.front == f) {
                    t.merge(&o.phases[0]);
                    k += 1;
                }
                t.latencies.finish(Duration::from_secs_f64(secs));
                println!(
                    "{}",
                    row(&format!("mix: {}", f.name()), journal_name, k, &t, secs)
                );
            }
        }
        println!("{}", row(&name, journal_name, n, &overall, secs));
    }
    let ticks = clock_ticks();
    println!(
        "\n| process | CPU over the measured {secs:.1} s (user+sys, % of one core) | RSS at the end |\n|---|---|---|"
    );
    println!(
        "| online-txn | {} | {} |",
        fmt_pct(pct(before.engine, after.engine, ticks, secs)),
        fmt_mb(engine_rss)
    );
    println!(
        "| host-sim | {} | {} |",
        fmt_pct(pct(before.host, after.host, ticks, secs)),
        fmt_mb(host_rss)
    );
    println!(
        "| txn-bench (this load driver, same machine) | {} | {} |",
        fmt_pct(pct(before.driver, after.driver, ticks, secs)),
        fmt_mb(driver_rss)
    );
    // Server processes alive at both samples count their difference, new ones all their time.
    let pg_ticks: u64 = after
        .postgres
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.postgres.get(pid).copied().unwrap_or(0)))
        .sum();
    let pg_pct = pg.then(|| pg_ticks as f64 / ticks as f64 / secs * 100.0);
    if let Some(p) = pg_pct {
        println!("| postgres server (all its processes, also other users' if any) | {p:.0} % | |");
    }
    if let (Some(a), Some(b)) = (before.system, after.system) {
        let (busy, iowait) = b.busy_since(&a);
        let cpus = std::thread::available_parallelism().map_or(1, |p| p.get());
        let ours: f64 = [
            pct(before.engine, after.engine, ticks, secs),
            pct(before.host, after.host, ticks, secs),
            pct(before.driver, after.driver, ticks, secs),
            pg_pct,
        ]
        .iter()
        .flatten()
        .sum();
        let others = (busy * 100.0 * cpus as f64 - ours).max(0.0);
        println!(
            "| whole machine ({cpus} CPUs) | busy {:.0} % of {cpus} cores, iowait {:.1} %; other processes {others:.0} % of one core | |",
            busy * 100.0,
            iowait * 100.0
        );
        if others > 20.0 {
            println!(
                "\nWARNING: other processes used {others:.0} % of one core during the run: the figures are not clean"
            );
        }
    }
    if let Some(d) = disk.filter(|d| d.count() > 0) {
        println!(
            "\ndisk probe (4 KiB write + fdatasync every 100 ms beside the SQLite journal, same disk as PostgreSQL): \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} syncs",
            d.quantile_ms(0.5),
            d.quantile_ms(0.99),
            d.max_ms(),
            d.count()
        );
    }
    println!(
        "\nonline-txn threads: {}\nhost-sim threads: {}",
        thread_split(&before.engine_threads, &after.engine_threads, ticks, secs),
        thread_split(&before.host_threads, &after.host_threads, ticks, secs)
    );
    println!(
        "answers by F39 (warm-up included): {codes:?}; answers with a bad MAC or wrong STAN: {bad}"
    );

    let ok = prove(args, &stack, &http, &initial, &outs, &codes).await?;
    if args.keep {
        println!("txn-bench: kept {}", stack.dir_path.display());
    }
    Ok(ok && bad == 0)
}

async fn available(http: &reqwest::Client, control: &str, pan: &str) -> anyhow::Result<i64> {
    let v: Value = http
        .get(format!("{control}/state/accounts/{pan}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    v["available"]
        .as_i64()
        .ok_or_else(|| anyhow!("no available balance in {v}"))
}

/// `--journal-only`: the engine's journal writes of approved withdrawals, without servers.
async fn journal_only(args: &Args, postgres: Option<String>) -> anyhow::Result<bool> {
    use openteller_online_txn::journal::{Answer, Begin, NewTxn};
    let dir = tempfile::Builder::new().prefix("txn-bench-").tempdir()?;
    let url =
        postgres.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("journal.db").display()));
    let journal = Journal::open(&url).await?;
    let start = Instant::now();
    let measure = start + Duration::from_secs(args.warmup_s);
    let end = measure + Duration::from_secs(args.duration_s);
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| {
            let journal = journal.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut stan = 0u32;
                while Instant::now() < end {
                    stan += 1;
                    let sent = Instant::now();
                    let txn = NewTxn {
                        terminal_id: terminal_id(Front::Tcp8583, i),
                        stan: format!("{stan:06}"),
                        txn_date: "0101".into(),
                        mti: "0200".into(),
                        processing_code: "010000".into(),
                        amount_minor: 100,
                        currency: "156".into(),
                        pan_masked: "622202*********0000".into(),
                        request_digest: format!("{stan:016x}"),
                    };
                    let Begin::New(id) = journal.begin(txn).await? else {
                        bail!("duplicate journal key");
                    };
                    journal
                        .transition(id, TxnState::Sent, Answer::default())
                        .await?;
                    let answer = Answer {
                        response_code: Some("00".into()),
                        rrn: Some(format!("{:012}", stan)),
                        auth_code: Some("123456".into()),
                        // About the size of the engine's stored answer.
                        response_json: Some("x".repeat(600)),
                    };
                    journal.transition(id, TxnState::Approved, answer).await?;
                    if sent >= measure {
                        tally.latencies.record(sent.elapsed());
                        tally.requests += 1;
                        tally.ok += 1;
                    }
                }
                anyhow::Ok(tally)
            })
        })
        .collect();
    tokio::time::sleep_until(measure.into()).await;
    let before = cpu_ticks(std::process::id());
    let mut total = Tally::default();
    for t in tasks {
        total.merge(&t.await??);
    }
    let secs = measure.elapsed().as_secs_f64();
    let cpu = pct(before, cpu_ticks(std::process::id()), clock_ticks(), secs);
    let name = if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    println!("{ROW_HEADER}");
    println!(
        "{}",
        row(
            "journal only: begin + SENT + APPROVED",
            name,
            args.connections,
            &total,
            secs
        )
    );
    println!(
        "txn-bench process CPU (journal and its writer): {}",
        fmt_pct(cpu)
    );
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// The proof

const STATES: [TxnState; 6] = [
    TxnState::Received,
    TxnState::Sent,
    TxnState::Approved,
    TxnState::Declined,
    TxnState::InDoubt,
    TxnState::Reversed,
];

/// (terminal, STAN, date): a transaction's identity at both the engine and the host.
type TxnKey = (String, String, String);

fn key_of(r: &TxnRecord) -> TxnKey {
    (
        r.txn.terminal_id.trim().to_owned(),
        r.txn.stan.clone(),
        r.txn.txn_date.clone(),
    )
}

/// Waits until the engine has no unanswered or in-doubt row, then checks that the terminals'
/// answers, the engine's journal and the host's accounts and log tell the same story.
async fn prove(
    args: &Args,
    stack: &Stack,
    http: &reqwest::Client,
    initial: &[i64],
    outs: &[WorkerOut],
    codes: &BTreeMap<String, u64>,
) -> anyhow::Result<bool> {
    let journal = Journal::open(&stack.journal_url).await?;
    let waited = Instant::now();
    let deadline = waited + Duration::from_secs(args.drain_timeout_s);
    loop {
        let mut open = 0;
        for s in [TxnState::Received, TxnState::Sent, TxnState::InDoubt] {
            open += journal.in_state(s).await?.len();
        }
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            println!(
                "PROOF FAILED: {open} journal rows still unanswered or in doubt after {} s",
                args.drain_timeout_s
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Late reversal answers still in flight change nothing at the host (idempotent), but let
    // them land before reading its state.
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "\n## Proof\n\nreversal queue drained {:.1} s after the load stopped",
        waited.elapsed().as_secs_f64()
    );

    let mut failures: Vec<String> = Vec::new();
    let mut rows: Vec<TxnRecord> = Vec::new();
    for s in STATES {
        rows.extend(journal.in_state(s).await?);
    }
    let count = |s: TxnState| rows.iter().filter(|r| r.state == s).count();
    println!(
        "journal: {} rows — APPROVED {}, DECLINED {}, REVERSED {}, IN_DOUBT {}, SENT {}, RECEIVED {}",
        rows.len(),
        count(TxnState::Approved),
        count(TxnState::Declined),
        count(TxnState::Reversed),
        count(TxnState::InDoubt),
        count(TxnState::Sent),
        count(TxnState::Received),
    );

    // The terminals' answers and the journal agree, code by code.
    let mut journal_codes: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        *journal_codes
            .entry(r.response_code.clone().unwrap_or_else(|| "--".into()))
            .or_default() += 1;
    }
    if &journal_codes != codes {
        failures.push(format!(
            "answers by F39 at the terminals {codes:?} != journal response codes {journal_codes:?}"
        ));
    }
    println!(
        "journal response codes {journal_codes:?} = the terminals' answers: {}",
        &journal_codes == codes
    );

    // (a) every row answered 98 ends REVERSED with exactly one reversal, DONE.
    let timed_out: Vec<&TxnRecord> = rows
        .iter()
        .filter(|r| r.response_code.as_deref() == Some("98"))
        .collect();
    let mut attempts_total = 0;
    let mut attempts_max = 0;
    let mut not_done = 0;
    for r in &timed_out {
        match journal.reversal_of(r.id).await? {
            Some((state, attempts)) if state == "DONE" && r.state == TxnState::Reversed => {
                attempts_total += attempts;
                attempts_max = attempts_max.max(attempts);
            }
            other => {
                not_done += 1;
                if not_done <= 5 {
                    failures.push(format!(
                        "row {} ({:?}) answered 98 is {:?} with reversal {other:?}",
                        r.id,
                        key_of(r),
                        r.state
                    ));
                }
            }
        }
    }
    if not_done > 0 {
        failures.push(format!("{not_done} rows answered 98 are not REVERSED/DONE"));
    }
    let reversed_other = rows
        .iter()
        .filter(|r| r.state == TxnState::Reversed && r.response_code.as_deref() != Some("98"))
        .count();
    if reversed_other > 0 {
        failures.push(format!(
            "{reversed_other} REVERSED rows were not answered 98"
        ));
    }
    let (queued, distinct, done) = queue_counts(&stack.journal_url).await?;
    if queued != timed_out.len() as i64 || distinct != queued || done != queued {
        failures.push(format!(
            "reversal queue: {queued} rows for {distinct} journal rows, {done} DONE; {} rows answered 98",
            timed_out.len()
        ));
    }
    println!(
        "(a) rows answered 98: {}; REVERSED with their reversal DONE: {}; reversal queue rows {queued} \
         for {distinct} distinct journal rows, {done} DONE; attempts per reversal: mean {:.2}, max {attempts_max}",
        timed_out.len(),
        timed_out.len() - not_done,
        if timed_out.is_empty() {
            0.0
        } else {
            attempts_total as f64 / timed_out.len() as f64
        }
    );

    // (b) money: per account, the host's balance change = the engine's approved withdrawals
    // of that account's terminal = what the terminal was told was approved.
    let terminal_index: HashMap<String, usize> =
        (0..initial.len()).map(|i| (args.terminal(i), i)).collect();
    let mut approved_sum = vec![0i64; initial.len()];
    let mut approved_keys: HashMap<TxnKey, i64> = HashMap::new();
    for r in rows.iter().filter(|r| r.state == TxnState::Approved) {
        match terminal_index.get(r.txn.terminal_id.trim()) {
            Some(&i) => approved_sum[i] += r.txn.amount_minor,
            None => failures.push(format!("journal row {} of unknown terminal", r.id)),
        }
        approved_keys.insert(key_of(r), r.txn.amount_minor);
    }
    let told: HashMap<&str, u64> = outs
        .iter()
        .map(|o| (o.terminal.trim(), o.codes.get("00").copied().unwrap_or(0)))
        .collect();
    let mut accounts_ok = 0;
    let mut moved = 0i64;
    for (i, opening) in initial.iter().enumerate() {
        let now = available(http, &stack.control, &pan(i)).await?;
        let delta = opening - now;
        moved += delta;
        let tid = args.terminal(i);
        let told_amount = told.get(tid.as_str()).copied().unwrap_or(0) as i64 * args.amount as i64;
        if delta == approved_sum[i] && told_amount == approved_sum[i] {
            accounts_ok += 1;
        } else if failures.len() < 20 {
            failures.push(format!(
                "account {} / {tid}: host balance change {delta}, journal APPROVED {}, terminal told approved {told_amount}",
                pan(i),
                approved_sum[i]
            ));
        }
    }
    println!(
        "(b) accounts where host balance change = journal APPROVED sum of its terminal = approvals the terminal saw: \
         {accounts_ok}/{}; money moved {moved} minor units = {} approved withdrawals",
        initial.len(),
        approved_keys.len()
    );
    if accounts_ok != initial.len() {
        failures.push(format!(
            "{} accounts do not reconcile",
            initial.len() - accounts_ok
        ));
    }

    // The host's log: applied withdrawals and the reversals that restored money.
    let mut withdrawals: HashMap<TxnKey, i64> = HashMap::new();
    let mut reversals: HashMap<TxnKey, u32> = HashMap::new();
    let mut since = 1u64;
    let summary = loop {
        let page: Value = http
            .get(format!(
                "{}/state/transactions?since={since}&limit=100000",
                stack.control
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let list = page["transactions"]
            .as_array()
            .ok_or_else(|| anyhow!("no transactions in the host's answer"))?;
        for t in list {
            let s = |v: &Value| v.as_str().unwrap_or_default().trim().to_owned();
            let terminal = s(&t["terminal"]);
            match t["kind"].as_str() {
                Some("withdrawal") => {
                    withdrawals.insert(
                        (terminal, s(&t["stan"]), s(&t["date"])),
                        t["amount"].as_i64().unwrap_or(0),
                    );
                }
                Some("reversal") => {
                    let o = &t["original"];
                    *reversals
                        .entry((terminal, s(&o["stan"]), s(&o["date"])))
                        .or_default() += 1;
                }
                other => failures.push(format!("unexpected host transaction kind {other:?}")),
            }
        }
        let next = page["next"].as_u64().unwrap_or(since);
        if list.is_empty() || next <= since {
            break page["summary"].clone();
        }
        since = next;
    };
    let twice = reversals.values().filter(|&&c| c > 1).count();
    let orphan = reversals
        .keys()
        .filter(|k| !withdrawals.contains_key(*k))
        .count();
    let standing: HashMap<&TxnKey, i64> = withdrawals
        .iter()
        .filter(|(k, _)| !reversals.contains_key(*k))
        .map(|(k, a)| (k, *a))
        .collect();
    let standing_match = standing.len() == approved_keys.len()
        && standing
            .iter()
            .all(|(k, a)| approved_keys.get(*k) == Some(a));
    let mut reversed_applied = 0;
    let mut reversed_never_applied = 0;
    let mut reversed_unmatched = 0;
    for r in rows.iter().filter(|r| r.state == TxnState::Reversed) {
        let k = key_of(r);
        match (withdrawals.contains_key(&k), reversals.get(&k).copied()) {
            (true, Some(1)) => reversed_applied += 1,
            (false, None) => reversed_never_applied += 1,
            _ => reversed_unmatched += 1,
        }
    }
    if twice > 0 {
        failures.push(format!(
            "{twice} host withdrawals were reversed more than once"
        ));
    }
    if orphan > 0 {
        failures.push(format!(
            "{orphan} host reversals name no withdrawal it applied"
        ));
    }
    if !standing_match {
        failures.push(format!(
            "host withdrawals standing (not reversed) {} != journal APPROVED {} (or amounts differ)",
            standing.len(),
            approved_keys.len()
        ));
    }
    if reversed_unmatched > 0 {
        failures.push(format!(
            "{reversed_unmatched} journal REVERSED rows do not match the host's log (withdrawal applied without one reversal)"
        ));
    }
    if reversals.len() != reversed_applied {
        failures.push(format!(
            "host reversals {} != journal REVERSED rows whose withdrawal the host applied {reversed_applied}",
            reversals.len()
        ));
    }
    println!(
        "host log: {} withdrawals applied, {} reversed (each exactly once: {}), {} standing = journal APPROVED \
         row for row: {standing_match}; journal REVERSED rows: {reversed_applied} applied at the host and reversed once, \
         {reversed_never_applied} never applied (nothing to undo), {reversed_unmatched} unmatched",
        withdrawals.len(),
        reversals.len(),
        twice == 0 && orphan == 0,
        standing.len()
    );

    // Totals: seeded - withdrawals + withdrawals reversed = available now.
    let totals: Value = http
        .get(format!("{}/state/accounts", stack.control))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let seeded: i64 = initial.iter().sum();
    let w = summary["withdrawals"]["amount"].as_i64().unwrap_or(-1);
    let wr = summary["withdrawals_reversed"]["amount"]
        .as_i64()
        .unwrap_or(-1);
    let avail = totals["totals"]["available"].as_i64().unwrap_or(-1);
    println!(
        "host totals: seeded {seeded} − withdrawals {w} + withdrawals reversed {wr} = {} (available now {avail})",
        seeded - w + wr
    );
    if seeded - w + wr != avail {
        failures.push("the host's totals do not add up".into());
    }

    if failures.is_empty() {
        println!("PROOF OK: every answer, journal row, host balance and host log entry reconciles");
        Ok(true)
    } else {
        for f in &failures {
            println!("PROOF FAILED: {f}");
        }
        Ok(false)
    }
}

/// Rows of the reversal queue, distinct journal rows they reverse, and how many are DONE.
async fn queue_counts(url: &str) -> anyhow::Result<(i64, i64, i64)> {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url).await?;
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT journal_id) AS d, \
         COALESCE(SUM(CASE WHEN state = 'DONE' THEN 1 ELSE 0 END), 0) AS done FROM reversal_queue",
    )
    .fetch_one(&mut conn)
    .await?;
    Ok((row.try_get("n")?, row.try_get("d")?, row.try_get("done")?))
}
