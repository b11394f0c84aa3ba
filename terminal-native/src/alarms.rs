//! Alarms raised by the terminal host — fraud attempts first of all — and the sink seam that
//! carries them away. Today: a log line ([`LogSink`]) and an event to every connected page
//! (the bridge's page sink). Later: forwarding to the keeper and the backoffice monitor, each a
//! [`AlarmSink`] that queues and sends from its own task.

use serde::Serialize;

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Someone must act (fraud attempt, money at risk).
    Critical,
}

/// One alarm. Its text never holds card data beyond a masked PAN.
#[derive(Debug, Clone, Serialize)]
pub struct Alarm {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How bad.
    pub severity: Severity,
    /// Stable kind: `fraud_attempt`, `device_offline`…
    pub kind: &'static str,
    /// The device or `terminal`.
    pub source: String,
    /// Human-readable.
    pub message: String,
}

/// Where alarms go. `deliver` must not block: an implementation that sends over the network
/// queues the alarm and sends it from its own task.
pub trait AlarmSink: Send + Sync {
    /// Hands one alarm over.
    fn deliver(&self, alarm: &Alarm);
}

/// Writes alarms to the log (`tracing` at error / warn level).
#[derive(Debug, Default)]
pub struct LogSink;

impl AlarmSink for LogSink {
    fn deliver(&self, alarm: &Alarm) {
        match alarm.severity {
            Severity::Critical => tracing::error!(
                kind = alarm.kind,
                source = %alarm.source,
                "ALARM: {}",
                alarm.message
            ),
            Severity::Warning => tracing::warn!(
                kind = alarm.kind,
                source = %alarm.source,
                "alarm: {}",
                alarm.message
            ),
        }
    }
}
