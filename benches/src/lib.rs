//! Shared pieces of OpenTeller's load drivers: latency histograms, process RSS, and report
//! formatting. The drivers themselves are the binaries in `src/bin/`; figures go to
//! `benches/README.md` together with the command that produced them.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latency samples of one scenario.
pub struct Latencies {
    histogram: Histogram<u64>,
    elapsed: Duration,
}

impl Latencies {
    /// An empty record (microsecond resolution, up to 60 s).
    pub fn new() -> Self {
        Latencies {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            elapsed: Duration::ZERO,
        }
    }

    /// Adds one request's latency.
    pub fn record(&mut self, d: Duration) {
        let _ = self.histogram.record((d.as_micros() as u64).max(1));
    }

    /// Merges another record (from a concurrent worker).
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.histogram.add(&other.histogram);
    }

    /// Sets the wall-clock time the scenario took.
    pub fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
    }

    /// Number of recorded requests.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The wall-clock time set by [`Latencies::finish`].
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Mean latency in milliseconds (0 when empty).
    pub fn mean_ms(&self) -> f64 {
        if self.histogram.is_empty() {
            0.0
        } else {
            self.histogram.mean() / 1000.0
        }
    }

    /// The latency at quantile `q` (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// The largest latency in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.histogram.max() as f64 / 1000.0
    }

    /// One markdown table row: scenario, requests, req/s, p50, p99, max (ms).
    pub fn row(&self, scenario: &str) -> String {
        let n = self.histogram.len();
        let rate = n as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "| {scenario} | {n} | {rate:.0} | {:.3} | {:.3} | {:.3} |",
            ms(self.histogram.value_at_quantile(0.50)),
            ms(self.histogram.value_at_quantile(0.99)),
            ms(self.histogram.max()),
        )
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

/// The table header matching [`Latencies::row`].
pub const TABLE_HEADER: &str =
    "| scenario | requests | req/s | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|";

/// Resident set size of a process in KiB (Linux `/proc`), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`, 100 when unknown).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The fields of a `/proc/.../stat` line after the command name, and the command name.
fn parse_stat(stat: &str) -> Option<(String, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    Some((comm, stat.get(close + 1..)?.split_whitespace().collect()))
}

/// User + system CPU time of a process (all its threads) in clock ticks, from
/// `/proc/PID/stat` (`utime` + `stime`); `None` when unreadable.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, f) = parse_stat(&stat)?;
    // After the command name: state is field 3, utime field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// User + system CPU ticks per thread name of a process (threads of the same name summed),
/// from `/proc/PID/task/*/stat`: shows which threads (runtime workers, database workers, ...)
/// burn the CPU.
pub fn thread_ticks(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((comm, f)) = parse_stat(&stat) else {
            continue;
        };
        let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        *out.entry(comm).or_insert(0) += ticks;
    }
    out
}

/// Machine-wide CPU time from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemCpu {
    /// Every state summed.
    pub total: u64,
    /// Idle.
    pub idle: u64,
    /// Waiting for I/O (e.g. fsync).
    pub iowait: u64,
}

impl SystemCpu {
    /// Reads `/proc/stat` now.
    pub fn now() -> Option<SystemCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest times are inside user).
        Some(SystemCpu {
            total: v.iter().take(8).sum(),
            idle: *v.get(3)?,
            iowait: v.get(4).copied().unwrap_or(0),
        })
    }

    /// (busy, iowait) as fractions of all CPU time between `self` and a later sample.
    pub fn busy_since(&self, earlier: &SystemCpu) -> (f64, f64) {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let idle = self.idle.saturating_sub(earlier.idle) as f64;
        let iowait = self.iowait.saturating_sub(earlier.iowait) as f64;
        ((total - idle - iowait) / total, iowait / total)
    }
}

/// Processes whose command name (`/proc/PID/comm`) is `name`, e.g. every `postgres` server
/// process, to account for a database's CPU next to the service's.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}
