//! Load driver for the SJSL bridge of terminal-native: the real `terminal-native --headless`
//! with four real virtual driver-proxies (card reader, PIN pad, dispenser, receipt printer),
//! driven over its WebSocket like a page. Measures bridge round trips (a status query that goes
//! through the bridge to a driver-proxy and back, and one answered inside the host), the cold
//! start to "in service", and the RSS of every process after start and after the run.
//!
//! `cargo build --release -p openteller-driver-proxy -p openteller-terminal-native -p openteller-benches`
//! `target/release/bridge-bench --bin-dir target/release`
//!
//! With `--windowed` (a terminal-native built with `--features window`, and a `DISPLAY`), it
//! also starts the windowed host on the same proxies with a bench page that times the same
//! `device.status` round trips from JS over wry's IPC (and writes them to the e-journal), and
//! reports the host's RSS, the WebKit web and network processes it spawns included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use openteller_benches::{Latencies, TABLE_HEADER, rss_kib};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Parser)]
#[command(about = "Measures terminal-native's bridge: round trips, cold start, RSS")]
struct Args {
    /// Where `terminal-native` and `driver-proxy` are (release builds recommended).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Round trips per scenario.
    #[arg(long, default_value_t = 10_000)]
    calls: u32,
    /// Concurrent pages of the concurrent scenario.
    #[arg(long, default_value_t = 4)]
    pages: u32,
    /// Also run the windowed host (needs a `window` build and a DISPLAY): IPC round trips
    /// from its page and its RSS.
    #[arg(long)]
    windowed: bool,
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const DEVICES: [(&str, &str); 4] = [
    ("idc", "CardReader"),
    ("pin", "PinPad"),
    ("cdm", "CashDispenser"),
    ("ptr", "ReceiptPrinter"),
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::Builder::new().prefix("bridge-bench-").tempdir()?;
    let d = dir.path();
    let proxy_bin = args.bin_dir.join("driver-proxy");
    let native_bin = args.bin_dir.join("terminal-native");
    for b in [&proxy_bin, &native_bin] {
        if !b.exists() {
            bail!("{} is missing: build it first", b.display());
        }
    }

    // Cold start: proxies and host started together, until terminal.status says in service.
    let started = Instant::now();
    let mut proxies = Vec::new();
    for (name, class) in DEVICES {
        let child = Command::new(&proxy_bin)
            .args(["--class", class, "--backend", "virtual", "--listen"])
            .arg(format!("unix:{}", d.join(format!("{name}.sock")).display()))
            .arg("--state-dir")
            .arg(d.join(format!("{name}-state")))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", proxy_bin.display()))?;
        proxies.push((name, Proc(child)));
    }
    let package = d.join("package");
    std::fs::create_dir_all(&package)?;
    std::fs::write(
        package.join("index.html"),
        "<!doctype html><title>bench</title>",
    )?;
    let config = config_text(d, d, &package);
    std::fs::write(d.join("native.toml"), &config)?;
    let (native, addr) = start_headless(&native_bin, d)?;
    let mut ws = connect(&addr).await?;
    wait_in_service(&mut ws).await?;
    let cold = started.elapsed();
    println!(
        "cold start (4 proxies + terminal-native --headless, until in service): {:.0} ms",
        cold.as_secs_f64() * 1000.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rss = BTreeMap::new();
    let snapshot = |rss: &mut BTreeMap<String, (u64, u64)>, after: bool| {
        for (name, p) in &proxies {
            let v = rss_kib(p.0.id()).unwrap_or(0);
            let e = rss.entry(format!("driver-proxy {name}")).or_insert((0, 0));
            if after { e.1 = v } else { e.0 = v }
        }
        let v = rss_kib(native.0.id()).unwrap_or(0);
        let e = rss
            .entry("terminal-native --headless".to_owned())
            .or_insert((0, 0));
        if after { e.1 = v } else { e.0 = v }
    };
    snapshot(&mut rss, false);

    println!("\n{TABLE_HEADER}");
    let mut id = 0u64;
    let proxy_status = json!({"device": "idc"});
    for _ in 0..200 {
        round_trip(&mut ws, &mut id, "device.status", &proxy_status).await?;
    }
    let mut l = Latencies::new();
    let t0 = Instant::now();
    for _ in 0..args.calls {
        let t = Instant::now();
        round_trip(&mut ws, &mut id, "device.status", &proxy_status).await?;
        l.record(t.elapsed());
    }
    l.finish(t0.elapsed());
    println!(
        "{}",
        l.row("device.status (bridge → driver-proxy → back), 1 page")
    );

    let mut l = Latencies::new();
    let t0 = Instant::now();
    for _ in 0..args.calls {
        let t = Instant::now();
        round_trip(&mut ws, &mut id, "terminal.status", &json!({})).await?;
        l.record(t.elapsed());
    }
    l.finish(t0.elapsed());
    println!(
        "{}",
        l.row("terminal.status (answered by the host), 1 page")
    );

    let per_page = (args.calls / args.pages.max(1)).max(1);
    let mut workers = Vec::new();
    let t0 = Instant::now();
    for _ in 0..args.pages {
        let addr = addr.clone();
        workers.push(tokio::spawn(async move {
            let mut ws = connect(&addr).await?;
            let mut id = 0u64;
            let mut l = Latencies::new();
            let p = json!({"device": "idc"});
            for _ in 0..per_page {
                let t = Instant::now();
                round_trip(&mut ws, &mut id, "device.status", &p).await?;
                l.record(t.elapsed());
            }
            anyhow::Ok(l)
        }));
    }
    let mut all = Latencies::new();
    for w in workers {
        all.merge(&w.await??);
    }
    all.finish(t0.elapsed());
    println!(
        "{}",
        all.row(&format!("device.status, {} pages at once", args.pages))
    );

    snapshot(&mut rss, true);
    let windowed = if args.windowed {
        Some(windowed_run(&native_bin, d, args.calls).await?)
    } else {
        None
    };
    println!("\n| process | RSS after start MB | RSS after the run MB |\n|---|---|---|");
    for (name, (before, after)) in &rss {
        println!(
            "| {name} | {:.1} | {:.1} |",
            *before as f64 / 1024.0,
            *after as f64 / 1024.0
        );
    }
    if let Some(w) = &windowed {
        let mb = |k: u64| k as f64 / 1024.0;
        println!(
            "| terminal-native windowed (host process) | {:.1} | {:.1} |\n\
             | terminal-native windowed + WebKit web/network processes | {:.1} | {:.1} |",
            mb(w.host.0),
            mb(w.host.1),
            mb(w.tree.0),
            mb(w.tree.1)
        );
        let (n, total, p50, p99, max) = w.ipc;
        println!(
            "\nwindowed, from the page over wry IPC: device.status {n} calls, {:.0}/s, \
             mean {:.3} ms, p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
            n as f64 / (total / 1000.0).max(1e-9),
            total / n.max(1) as f64
        );
    }
    drop(ws);
    drop(native);
    drop(proxies);
    Ok(())
}

/// The host's configuration: the proxies' sockets in `sockets`, journal and state in `state`.
fn config_text(sockets: &Path, state: &Path, package: &Path) -> String {
    let mut text = format!(
        "terminal_id = \"BENCH001\"\nbusiness_package = \"{}\"\njournal_dir = \"{}\"\nstate_dir = \"{}\"\n\
         [headless]\nlisten = \"127.0.0.1:0\"\n[window]\nfullscreen = true\n",
        package.display(),
        state.join("ej").display(),
        state.join("native-state").display()
    );
    for (name, class) in DEVICES {
        text.push_str(&format!(
            "[devices.{name}]\nclass = \"{class}\"\nendpoint = \"unix:{}\"\n",
            sockets.join(format!("{name}.sock")).display()
        ));
    }
    text
}

fn start_headless(bin: &Path, d: &Path) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(d.join("native.toml"))
        .arg("--headless")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.join("native.log"))?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().context("stdout")?),
        &mut line,
    )?;
    let addr = line
        .trim()
        .strip_prefix("terminal-native listening on http://")
        .and_then(|a| a.strip_suffix('/'))
        .with_context(|| {
            format!(
                "terminal-native did not start: {line}{}",
                std::fs::read_to_string(d.join("native.log")).unwrap_or_default()
            )
        })?
        .to_owned();
    Ok((Proc(child), addr))
}

async fn connect(addr: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/bridge")).await?;
    Ok(ws)
}

/// One request and its answer (events in between are skipped).
async fn round_trip(
    ws: &mut Ws,
    id: &mut u64,
    method: &str,
    params: &Value,
) -> anyhow::Result<Value> {
    *id += 1;
    let want = *id;
    ws.send(Message::text(
        json!({"id": want, "method": method, "params": params}).to_string(),
    ))
    .await?;
    loop {
        let msg = ws.next().await.context("the bridge closed")??;
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(text.as_str())?;
        if v["id"] == want {
            if let Some(e) = v.get("error") {
                bail!("{method}: {e}");
            }
            return Ok(v["result"].clone());
        }
    }
}

async fn wait_in_service(ws: &mut Ws) -> anyhow::Result<()> {
    let mut id = 1_000_000u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = round_trip(ws, &mut id, "terminal.status", &json!({})).await?;
        if s["inService"] == true {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not in service after 60 s: {s}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The process and its descendants (the WebKit processes), from `/proc/*/stat`'s parent field.
fn tree_rss_kib(root: u32) -> u64 {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree.iter().filter_map(|p| rss_kib(*p)).sum()
}

/// The windowed host's figures.
struct Windowed {
    /// The page's IPC round trips: `(calls, total ms, p50 ms, p99 ms, max ms)`.
    ipc: (u64, f64, f64, f64, f64),
    /// Host process RSS after the page loaded and after the run, KiB.
    host: (u64, u64),
    /// The host and its WebKit processes, KiB.
    tree: (u64, u64),
}

/// The bench page of the windowed host: the raw bridge protocol over wry's IPC, `calls`
/// sequential `device.status` round trips timed with `performance.now()`, the result written
/// to the e-journal with `journal.write` (`PAGE BENCH …`), where the driver reads it.
fn ipc_page(calls: u32) -> String {
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>ipc bench</title><script>
const pending = new Map(); let id = 0;
window.__opentellerReceive = (t) => {{ const m = JSON.parse(t); const w = pending.get(m.id);
  if (w) {{ pending.delete(m.id); w(m); }} }};
const call = (method, params) => new Promise((ok) => {{ id += 1; pending.set(id, ok);
  window.ipc.postMessage(JSON.stringify({{id, method, params}})); }});
(async () => {{
  await call("journal.write", {{text: "BENCH start"}});
  await new Promise((r) => setTimeout(r, 2000));
  for (let i = 0; i < 200; i++) await call("device.status", {{device: "idc"}});
  const n = {calls}; const s = new Float64Array(n); const t0 = performance.now();
  for (let i = 0; i < n; i++) {{ const t = performance.now();
    const a = await call("device.status", {{device: "idc"}});
    if (a.error) {{ await call("journal.write", {{text: "BENCH failed " + a.error.code}}); return; }}
    s[i] = performance.now() - t; }}
  const total = performance.now() - t0; const v = Array.from(s).sort((a, b) => a - b);
  const q = (x) => v[Math.min(n - 1, Math.floor(x * n))].toFixed(3);
  await call("journal.write", {{text: `BENCH ipc n=${{n}} total=${{total.toFixed(1)}} p50=${{q(0.5)}} p99=${{q(0.99)}} max=${{v[n - 1].toFixed(3)}}`}});
}})();
</script>"#
    )
}

/// Waits for a `PAGE BENCH` journal line starting with `prefix` in `ej`.
async fn journal_line(ej: &Path, prefix: &str, log: &Path) -> anyhow::Result<String> {
    let needle = format!("PAGE BENCH {prefix}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(dir) = std::fs::read_dir(ej) {
            for f in dir.flatten() {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                if let Some(line) = text.lines().find(|l| l.contains(&needle)) {
                    return Ok(line.to_owned());
                }
                if let Some(line) = text.lines().find(|l| l.contains("PAGE BENCH failed")) {
                    bail!("the bench page failed: {line}");
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no {needle:?} line from the windowed page: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the windowed host on the same proxies with the IPC bench page; reads the page's
/// round trips from the journal and the RSS after the page loaded and after the run.
async fn windowed_run(bin: &Path, d: &Path, calls: u32) -> anyhow::Result<Windowed> {
    if std::env::var_os("DISPLAY").is_none() {
        bail!("--windowed needs a DISPLAY (e.g. run under xvfb-run)");
    }
    // Its own package, journal and state directories; the same proxies.
    let own = d.join("windowed");
    let package = own.join("package");
    std::fs::create_dir_all(&package)?;
    std::fs::write(package.join("index.html"), ipc_page(calls))?;
    std::fs::write(own.join("native.toml"), config_text(d, &own, &package))?;
    let log = d.join("windowed.log");
    let child = Command::new(bin)
        .arg("--config")
        .arg(own.join("native.toml"))
        .env("RUST_LOG", "warn")
        .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let p = Proc(child);
    let ej = own.join("ej");
    journal_line(&ej, "start", &log).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let host_start = rss_kib(p.0.id()).unwrap_or(0);
    let tree_start = tree_rss_kib(p.0.id());
    let line = journal_line(&ej, "ipc", &log).await?;
    let host_after = rss_kib(p.0.id()).unwrap_or(0);
    let tree_after = tree_rss_kib(p.0.id());
    let field = |k: &str| -> anyhow::Result<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{k} in {line}"))
    };
    Ok(Windowed {
        ipc: (
            field("n=")? as u64,
            field("total=")?,
            field("p50=")?,
            field("p99=")?,
            field("max=")?,
        ),
        host: (host_start, host_after),
        tree: (tree_start, tree_after),
    })
}
