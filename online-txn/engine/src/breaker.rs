//! A circuit breaker per back end: after `failures` consecutive failures (nothing sent, no
//! answer in time, connection lost) it **opens** and requests are refused at once — declined 91
//! by the caller without being sent or journaled as SENT — for `cooldown`; then it is
//! **half-open**: one request goes through as a probe; its success closes the breaker, its
//! failure opens it for another cool-down. Requests arriving while the probe is out are refused.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The breaker settings of a back end (`breaker = { failures = 5, cooldown_ms = 10000 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 disables it.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long it stays open before a probe is let through.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: default_failures(),
            cooldown_ms: default_cooldown_ms(),
        }
    }
}

fn default_failures() -> u32 {
    5
}
fn default_cooldown_ms() -> u64 {
    10_000
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass.
    Closed,
    /// Requests are refused.
    Open,
    /// The cool-down is over: the next request is a probe (or one is out).
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probe_out: bool,
}

/// A circuit breaker (see the module docs).
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Why a request was refused: the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open")]
pub struct Open;

/// A request let through; report its fate with [`Admission::success`] or
/// [`Admission::failure`]. Dropped without either, it counts as neither — except a probe,
/// which then counts as failed (so the breaker cannot stay half-open forever).
#[derive(Debug)]
pub struct Admission<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    done: bool,
}

impl Admission<'_> {
    /// The back end answered.
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(self.probe, true);
    }

    /// The back end did not answer (or could not be reached).
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(self.probe, false);
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.record(true, false);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        CircuitBreaker {
            name: name.into(),
            config,
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                open_until: None,
                probe_out: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a request through, or refuses it while open.
    pub fn admit(&self) -> Result<Admission<'_>, Open> {
        if self.config.failures == 0 {
            return Ok(self.admission(false));
        }
        let mut inner = self.lock();
        match inner.open_until {
            None => Ok(self.admission(false)),
            Some(until) if Instant::now() < until => Err(Open),
            Some(_) if inner.probe_out => Err(Open),
            Some(_) => {
                inner.probe_out = true;
                tracing::info!(backend = %self.name, "circuit breaker half-open: probing");
                Ok(self.admission(true))
            }
        }
    }

    fn admission(&self, probe: bool) -> Admission<'_> {
        Admission {
            breaker: self,
            probe,
            done: false,
        }
    }

    fn record(&self, probe: bool, success: bool) {
        if self.config.failures == 0 {
            return;
        }
        let mut inner = self.lock();
        if probe {
            inner.probe_out = false;
        }
        if success {
            if inner.open_until.is_some() {
                tracing::info!(backend = %self.name, "circuit breaker closed");
            }
            inner.consecutive_failures = 0;
            inner.open_until = None;
            return;
        }
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let reopen = probe && inner.open_until.is_some();
        if reopen || inner.consecutive_failures == self.config.failures {
            tracing::warn!(
                backend = %self.name,
                failures = inner.consecutive_failures,
                cooldown_ms = self.config.cooldown_ms,
                "circuit breaker open"
            );
            inner.open_until =
                Some(Instant::now() + Duration::from_millis(self.config.cooldown_ms));
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.open_until {
            None => BreakerState::Closed,
            Some(until) if Instant::now() < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, cooldown_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(
            "t",
            BreakerConfig {
                failures,
                cooldown_ms,
            },
        )
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let b = breaker(3, 50);
        b.admit().unwrap().failure();
        b.admit().unwrap().failure();
        b.admit().unwrap().success(); // resets the count
        for _ in 0..3 {
            b.admit().unwrap().failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit().unwrap_err(), Open);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.admit().unwrap();
        assert!(b.admit().is_err(), "one probe at a time");
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(60));
        b.admit().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok());
    }

    #[test]
    fn a_dropped_probe_counts_as_failed_and_zero_disables() {
        let b = breaker(1, 10);
        b.admit().unwrap().failure();
        std::thread::sleep(Duration::from_millis(20));
        drop(b.admit().unwrap());
        assert_eq!(b.state(), BreakerState::Open);
        let off = breaker(0, 10);
        for _ in 0..10 {
            off.admit().unwrap().failure();
        }
        assert_eq!(off.state(), BreakerState::Closed);
    }
}
