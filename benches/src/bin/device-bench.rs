//! Load driver for one driver-proxy over its Unix socket: status-query and read-raw-data round
//! trips (p50/p99, requests/s) and the proxy's idle and loaded RSS.
//!
//! `cargo run --release -p openteller-benches --bin device-bench -- --proxy target/release/driver-proxy`

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use openteller_benches::{Latencies, TABLE_HEADER, rss_kib};
use openteller_proto::Endpoint;
use openteller_proto::device::v1::{
    CardReaderCommand, CardReaderSimAction, Command as DeviceCommand, GetStatusRequest, InsertCard,
    ReadRawData, SimulatorRequest, card_reader_command, card_reader_sim_action, command,
    command_reply, device_client::DeviceClient, simulator_client::SimulatorClient,
    simulator_request,
};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Measures driver-proxy round trips over its Unix socket")]
struct Args {
    /// The driver-proxy binary to start (release build recommended).
    #[arg(long, default_value = "target/release/driver-proxy")]
    proxy: PathBuf,
    /// Requests per scenario.
    #[arg(long, default_value_t = 20_000)]
    requests: u32,
    /// Concurrent clients of the concurrent status scenario.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("idc.sock");
    let mut child = Command::new(&args.proxy)
        .args(["--class", "CardReader", "--backend", "virtual", "--listen"])
        .arg(format!("unix:{}", socket.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", args.proxy.display()))?;
    let pid = child.id();
    let result = run(&args, &socket, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn run(args: &Args, socket: &std::path::Path, pid: u32) -> anyhow::Result<()> {
    let channel = Endpoint::Unix(socket.to_owned()).channel()?;
    wait_ready(&channel).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid);

    let mut device = DeviceClient::new(channel.clone());
    // Warm up the connection and the allocator.
    for _ in 0..500 {
        device.get_status(GetStatusRequest {}).await?;
    }

    let mut status = Latencies::new();
    let start = Instant::now();
    for _ in 0..args.requests {
        let t = Instant::now();
        device.get_status(GetStatusRequest {}).await?;
        status.record(t.elapsed());
    }
    status.finish(start.elapsed());

    let mut concurrent = Latencies::new();
    let start = Instant::now();
    let per_worker = args.requests / args.concurrency.max(1);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let mut d = DeviceClient::new(channel.clone());
            tokio::spawn(async move {
                let mut l = Latencies::new();
                for _ in 0..per_worker {
                    let t = Instant::now();
                    d.get_status(GetStatusRequest {}).await?;
                    l.record(t.elapsed());
                }
                anyhow::Ok(l)
            })
        })
        .collect();
    for w in workers {
        concurrent.merge(&w.await??);
    }
    concurrent.finish(start.elapsed());

    // Put a card in the reader once; then every ReadRawData is a full command round trip
    // (queue, execute, completion stream) without waiting for a person.
    let reading = tokio::spawn(read(DeviceClient::new(channel.clone()), "first".into()));
    let mut sim = SimulatorClient::new(channel.clone());
    loop {
        let insert = SimulatorRequest {
            action: Some(simulator_request::Action::CardReader(CardReaderSimAction {
                action: Some(card_reader_sim_action::Action::InsertCard(InsertCard {
                    library_name: "debit-zhang".into(),
                    card: None,
                })),
            })),
        };
        let r = sim.control(insert).await?.into_inner();
        if r.result.is_some_and(|c| c.code == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reading.await??;
    let mut reads = Latencies::new();
    let start = Instant::now();
    for i in 0..args.requests {
        let t = Instant::now();
        read(device.clone(), format!("r{i}")).await?;
        reads.record(t.elapsed());
    }
    reads.finish(start.elapsed());
    let loaded_rss = rss_kib(pid);

    println!("{TABLE_HEADER}");
    println!("{}", status.row("GetStatus, 1 client"));
    println!(
        "{}",
        concurrent.row(&format!("GetStatus, {} clients", args.concurrency))
    );
    println!("{}", reads.row("CardReader.ReadRawData, 1 client"));
    let mb =
        |k: Option<u64>| k.map_or("n/a".to_owned(), |k| format!("{:.1} MB", k as f64 / 1024.0));
    println!(
        "\ndriver-proxy RSS: idle {}, after the runs {}",
        mb(idle_rss),
        mb(loaded_rss)
    );
    Ok(())
}

async fn read(mut device: DeviceClient<Channel>, request_id: String) -> anyhow::Result<()> {
    let cmd = DeviceCommand {
        request_id,
        timeout_ms: 10_000,
        command: Some(command::Command::CardReader(CardReaderCommand {
            command: Some(card_reader_command::Command::ReadRawData(ReadRawData {
                track2: true,
                ..Default::default()
            })),
        })),
    };
    let mut stream = device.execute(cmd).await?.into_inner();
    while let Some(reply) = stream.message().await? {
        if let Some(command_reply::Reply::Completion(c)) = reply.reply {
            let code = c.completion.map_or(0, |c| c.code);
            if code != 1 {
                bail!("ReadRawData completed with code {code}");
            }
            return Ok(());
        }
    }
    bail!("no completion")
}

async fn wait_ready(channel: &Channel) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    while Instant::now() < deadline {
        if health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("driver-proxy did not become ready")
}
