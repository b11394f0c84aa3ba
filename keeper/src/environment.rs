//! Host checks (seed 001 §4.3.1 (2) 1–2): available memory from `/proc/meminfo`, the load average
//! from `/proc/loadavg`, free disk space through `statvfs`. [`evaluate`] turns a reading into
//! findings against the configured thresholds; the supervisor refuses to start processes while a
//! hard minimum is violated, and raises an alarm each time a check gets worse.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::alarms::{AlarmKind, Severity};
use crate::config::EnvironmentConfig;

/// One sample of the host.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Reading {
    /// Unix time of the sample, ms.
    pub at_ms: u64,
    /// `MemAvailable`, MiB (absent where `/proc/meminfo` is not readable).
    pub free_memory_mb: Option<u64>,
    /// 1-minute load average.
    pub load_1m: Option<f64>,
    /// Logical CPUs.
    pub cpus: usize,
    /// Free space per configured path.
    pub disks: Vec<DiskReading>,
}

/// Free space on one configured path.
#[derive(Debug, Clone, Serialize)]
pub struct DiskReading {
    /// The configured path.
    pub path: PathBuf,
    /// MiB available to unprivileged users; absent if `statvfs` failed.
    pub free_mb: Option<u64>,
}

/// A threshold crossed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Which check (`memory`, `load`, `disk:/path`): the key used to tell repeats from changes.
    pub check: String,
    /// Warning (soft threshold) or critical (hard minimum).
    pub severity: Severity,
    /// The alarm kind to raise.
    pub kind: AlarmKind,
    /// What was measured against what.
    pub message: String,
}

/// Samples the host now. Never fails: what cannot be read is left empty.
pub fn read(config: &EnvironmentConfig) -> Reading {
    Reading {
        at_ms: crate::unix_ms(),
        free_memory_mb: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_meminfo(&s)),
        load_1m: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| parse_loadavg(&s)),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        disks: config
            .disk
            .iter()
            .map(|d| DiskReading {
                path: d.path.clone(),
                free_mb: free_disk_mb(&d.path),
            })
            .collect(),
    }
}

fn free_disk_mb(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize) / (1024 * 1024))
}

/// `MemAvailable` in MiB.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// The 1-minute load average.
fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The thresholds `reading` crosses. A hard minimum gives a critical finding; a missing value
/// (unreadable `/proc`, failed `statvfs`) on a hard check is itself critical, since the keeper
/// cannot vouch for the host.
pub fn evaluate(config: &EnvironmentConfig, reading: &Reading) -> Vec<Finding> {
    let mut out = Vec::new();
    let mem_hard = config.min_free_memory_mb;
    let mem_warn = config.warn_free_memory_mb;
    if mem_hard.is_some() || mem_warn.is_some() {
        match reading.free_memory_mb {
            Some(free) if mem_hard.is_some_and(|m| free < m) => out.push(Finding {
                check: "memory".into(),
                severity: Severity::Critical,
                kind: AlarmKind::LowMemory,
                message: format!(
                    "available memory {free} MiB is below the minimum {} MiB",
                    mem_hard.unwrap_or_default()
                ),
            }),
            Some(free) if mem_warn.is_some_and(|w| free < w) => out.push(Finding {
                check: "memory".into(),
                severity: Severity::Warning,
                kind: AlarmKind::LowMemory,
                message: format!(
                    "available memory {free} MiB is below the warning level {} MiB",
                    mem_warn.unwrap_or_default()
                ),
            }),
            Some(_) => {}
            None => out.push(Finding {
                check: "memory".into(),
                severity: if mem_hard.is_some() {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                kind: AlarmKind::LowMemory,
                message: "cannot read MemAvailable from /proc/meminfo".into(),
            }),
        }
    }
    if let Some(load) = reading.load_1m {
        let per_cpu = load / reading.cpus.max(1) as f64;
        if let Some(max) = config.max_load_per_cpu.filter(|&m| per_cpu > m) {
            out.push(Finding {
                check: "load".into(),
                severity: Severity::Critical,
                kind: AlarmKind::HighLoad,
                message: format!("load per CPU {per_cpu:.2} is above the limit {max:.2}"),
            });
        } else if let Some(warn) = config.warn_load_per_cpu.filter(|&w| per_cpu > w) {
            out.push(Finding {
                check: "load".into(),
                severity: Severity::Warning,
                kind: AlarmKind::HighLoad,
                message: format!("load per CPU {per_cpu:.2} is above the warning level {warn:.2}"),
            });
        }
    }
    for (check, disk) in config.disk.iter().zip(&reading.disks) {
        let key = format!("disk:{}", check.path.display());
        let path = check.path.display();
        match disk.free_mb {
            Some(free) if check.min_free_mb.is_some_and(|m| free < m) => out.push(Finding {
                check: key,
                severity: Severity::Critical,
                kind: AlarmKind::LowDisk,
                message: format!(
                    "free space on {path} is {free} MiB, below the minimum {} MiB",
                    check.min_free_mb.unwrap_or_default()
                ),
            }),
            Some(free) if check.warn_free_mb.is_some_and(|w| free < w) => out.push(Finding {
                check: key,
                severity: Severity::Warning,
                kind: AlarmKind::LowDisk,
                message: format!(
                    "free space on {path} is {free} MiB, below the warning level {} MiB",
                    check.warn_free_mb.unwrap_or_default()
                ),
            }),
            Some(_) => {}
            None => out.push(Finding {
                check: key,
                severity: if check.min_free_mb.is_some() {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                kind: AlarmKind::LowDisk,
                message: format!("cannot stat {path}"),
            }),
        }
    }
    out
}

/// True if any finding is critical (a hard minimum is violated).
pub fn blocks_start(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Critical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DiskCheck;

    #[test]
    fn parses_proc_files() {
        let meminfo =
            "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    2097152 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(2048));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_loadavg("0.52 0.58 0.59 1/389 12345\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn thresholds() {
        let config = EnvironmentConfig {
            interval_ms: 1,
            min_free_memory_mb: Some(100),
            warn_free_memory_mb: Some(500),
            warn_load_per_cpu: Some(1.0),
            max_load_per_cpu: Some(4.0),
            disk: vec![DiskCheck {
                path: "/data".into(),
                min_free_mb: Some(10),
                warn_free_mb: None,
            }],
        };
        let mut r = Reading {
            at_ms: 0,
            free_memory_mb: Some(300),
            load_1m: Some(3.0),
            cpus: 2,
            disks: vec![DiskReading {
                path: "/data".into(),
                free_mb: Some(50),
            }],
        };
        let f = evaluate(&config, &r);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.severity == Severity::Warning));
        assert!(!blocks_start(&f));
        r.free_memory_mb = Some(50);
        r.disks[0].free_mb = None;
        let f = evaluate(&config, &r);
        assert!(blocks_start(&f));
        assert_eq!(f[0].kind, AlarmKind::LowMemory);
        assert_eq!(f[2].check, "disk:/data");
        assert_eq!(f[2].severity, Severity::Critical);
    }

    #[test]
    fn reads_this_host() {
        let config = EnvironmentConfig {
            disk: vec![DiskCheck {
                path: "/".into(),
                min_free_mb: Some(0),
                warn_free_mb: None,
            }],
            ..EnvironmentConfig::default()
        };
        let r = read(&config);
        assert!(r.cpus >= 1);
        assert!(r.disks[0].free_mb.is_some());
    }
}
