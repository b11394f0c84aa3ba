//! Alarms: kept in memory with a bounded history, logged as structured `tracing` events, listed
//! by the control API, and handed to every registered [`AlarmSink`] — the seam through which a
//! later issue forwards them to the backoffice monitor service. Raising an alarm never blocks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; nothing stopped.
    Warning,
    /// A process or the service is down, or the host is below a hard limit.
    Critical,
}

/// What happened. The string forms are stable (they are what the backoffice will store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// A process exited (or was killed) unexpectedly and will be restarted.
    ProcessExited,
    /// A process exited with a permanent-failure code: not restarted.
    PermanentFailure,
    /// The restart budget is spent: the process is left stopped and the service paused.
    RestartBudgetExhausted,
    /// A process could not be spawned at all.
    SpawnFailed,
    /// The gRPC health check failed too often, or never passed within the grace time.
    HealthCheckFailed,
    /// No heartbeat within the timeout: the process is considered hung.
    HeartbeatMissed,
    /// Available memory below a threshold.
    LowMemory,
    /// Free disk space below a threshold.
    LowDisk,
    /// Load average above a threshold.
    HighLoad,
    /// The host is below a hard minimum: processes are not started.
    EnvironmentRefused,
    /// The service was paused (by the keeper's escalation or an operator).
    ServicePaused,
}

/// One alarm.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    /// Increasing id, unique within one keeper run.
    pub id: u64,
    /// Unix time, milliseconds.
    pub at_ms: u64,
    /// Severity.
    pub severity: Severity,
    /// Kind.
    pub kind: AlarmKind,
    /// The process name, or `host` / `service`.
    pub source: String,
    /// Human-readable detail.
    pub message: String,
}

/// Receives every alarm as it is raised. Implementations must return quickly (queue the alarm
/// and forward it from their own task); they are called with no lock held.
pub trait AlarmSink: Send + Sync {
    /// Delivers one alarm.
    fn deliver(&self, alarm: &Alarm);
}

/// The alarm book: history plus sinks.
#[derive(Clone)]
pub struct Alarms {
    inner: Arc<Mutex<Book>>,
    sinks: Arc<Vec<Arc<dyn AlarmSink>>>,
}

struct Book {
    next_id: u64,
    capacity: usize,
    history: VecDeque<Alarm>,
}

impl Alarms {
    /// An empty book keeping the last `capacity` alarms.
    pub fn new(capacity: usize, sinks: Vec<Arc<dyn AlarmSink>>) -> Alarms {
        Alarms {
            inner: Arc::new(Mutex::new(Book {
                next_id: 1,
                capacity: capacity.max(1),
                history: VecDeque::new(),
            })),
            sinks: Arc::new(sinks),
        }
    }

    /// Records, logs and forwards an alarm.
    pub fn raise(
        &self,
        severity: Severity,
        kind: AlarmKind,
        source: &str,
        message: impl Into<String>,
    ) -> Alarm {
        let message = message.into();
        let alarm = {
            let mut book = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let alarm = Alarm {
                id: book.next_id,
                at_ms: crate::unix_ms(),
                severity,
                kind,
                source: source.to_owned(),
                message,
            };
            book.next_id += 1;
            if book.history.len() == book.capacity {
                book.history.pop_front();
            }
            book.history.push_back(alarm.clone());
            alarm
        };
        match severity {
            Severity::Warning => tracing::warn!(
                alarm_id = alarm.id,
                kind = ?alarm.kind,
                source = %alarm.source,
                "alarm: {}",
                alarm.message
            ),
            Severity::Critical => tracing::error!(
                alarm_id = alarm.id,
                kind = ?alarm.kind,
                source = %alarm.source,
                "alarm: {}",
                alarm.message
            ),
        }
        for sink in self.sinks.iter() {
            sink.deliver(&alarm);
        }
        alarm
    }

    /// The kept alarms, oldest first.
    pub fn list(&self) -> Vec<Alarm> {
        let book = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        book.history.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(Mutex<Vec<u64>>);
    impl AlarmSink for Count {
        fn deliver(&self, alarm: &Alarm) {
            self.0.lock().unwrap().push(alarm.id);
        }
    }

    #[test]
    fn bounded_history_and_sinks() {
        let sink = Arc::new(Count(Mutex::new(Vec::new())));
        let alarms = Alarms::new(2, vec![sink.clone()]);
        for i in 0..3 {
            alarms.raise(
                Severity::Warning,
                AlarmKind::LowDisk,
                "host",
                format!("{i}"),
            );
        }
        let ids: Vec<u64> = alarms.list().iter().map(|a| a.id).collect();
        assert_eq!(ids, [2, 3]);
        assert_eq!(*sink.0.lock().unwrap(), [1, 2, 3]);
        let json = serde_json::to_value(&alarms.list()[0]).unwrap();
        assert_eq!(json["kind"], "low_disk");
        assert_eq!(json["severity"], "warning");
    }
}
