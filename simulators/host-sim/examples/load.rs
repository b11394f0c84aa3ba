//! A small load generator: how many requests per second the host answers.
//!
//! ```sh
//! cargo run --release -p openteller-host-sim --example load -- [CONNECTIONS] [WINDOW] [SECONDS] [HOST:PORT]
//! ```
//!
//! Without HOST:PORT it starts a host in-process (same keys as `host-sim.toml`, 100
//! generated accounts). Each connection keeps WINDOW requests outstanding (pipelined):
//! withdrawals of 1.00 and balance inquiries, alternately.

use std::time::{Duration, Instant};

use openteller_host_sim::client::{HostClient, Terminal};
use openteller_host_sim::{Config, HostSim};

const CONFIG: &str = r#"
listen = "127.0.0.1:0"
control = "127.0.0.1:0"
[keys]
zpk = "0123456789ABCDEFFEDCBA9876543210"
zak = "89ABCDEF0123456776543210FEDCBA98"
[[generate]]
prefix = "6222020299"
count = 100
pin = "1234"
balance = 100000000
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let conns: usize = args.first().map_or(Ok(16), |s| s.parse())?;
    let window: usize = args.get(1).map_or(Ok(4), |s| s.parse())?;
    let secs: u64 = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let config = Config::from_toml_str(CONFIG, std::path::Path::new("."))?;
    let keys = config.keys.clone();
    let (addr, running) = match args.get(3) {
        Some(a) => (a.parse()?, None),
        None => {
            let r = HostSim::spawn(config).await?;
            (r.addr(), Some(r))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..conns {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = HostClient::connect(addr).await?;
            let mut t = Terminal::new(&format!("LD{i:06}"), "LOADTEST", keys);
            let (mut sent, mut done, mut bad) = (0u64, 0u64, 0u64);
            let next = |t: &mut Terminal, n: u64| {
                let pan = format!("6222020299{:09}", (i as u64 * 7 + n) % 100);
                let mut m = if n.is_multiple_of(2) {
                    t.withdrawal(&pan, "1234", 100)
                } else {
                    t.inquiry(&pan, "1234")
                };
                t.seal(&mut m)
            };
            for _ in 0..window {
                c.send(&next(&mut t, sent)?).await?;
                sent += 1;
            }
            while Instant::now() < deadline {
                let r = c.recv().await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
                done += 1;
                if r.text(39) != Some("00") {
                    bad += 1;
                }
                c.send(&next(&mut t, sent)?).await?;
                sent += 1;
            }
            anyhow::Ok((done, bad))
        }));
    }
    let (mut done, mut bad) = (0, 0);
    for t in tasks {
        let (d, b) = t.await??;
        done += d;
        bad += b;
    }
    println!(
        "{conns} connections x {window} outstanding, {secs} s: {done} answers ({bad} not 00), {:.0} per second",
        done as f64 / secs as f64
    );
    if let Some(r) = running {
        r.stop().await?;
    }
    Ok(())
}
