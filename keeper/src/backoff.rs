//! Restart pacing: capped exponential back-off with jitter, and the restart budget per sliding
//! window. Pure logic over `tokio::time::Instant`, so it is tested with a paused clock; it never
//! sleeps or spawns anything itself.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RestartPolicy;

/// What to do after a process ended unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// The budget is spent: stop restarting and escalate.
    GiveUp,
}

/// The restart state of one process.
#[derive(Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// Consecutive failures since the last stable run.
    attempt: u32,
    /// Restart times inside the window.
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    /// A tracker with no history.
    pub fn new(policy: RestartPolicy) -> RestartTracker {
        RestartTracker {
            policy,
            attempt: 0,
            recent: VecDeque::new(),
        }
    }

    /// Forgets the history (an operator's restart of a process the keeper had given up on).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.recent.clear();
    }

    /// Restarts counted in the current window.
    pub fn in_window(&self) -> usize {
        self.recent.len()
    }

    /// Decides after a process that ran for `ran_for` ended at `now`. `jitter_sample` is a
    /// uniform sample in `[0, 1)` (injected so tests are deterministic).
    pub fn on_exit(&mut self, now: Instant, ran_for: Duration, jitter_sample: f64) -> Decision {
        if ran_for >= Duration::from_millis(self.policy.stable_after_ms) {
            self.attempt = 0;
        }
        let window = Duration::from_millis(self.policy.window_ms);
        while let Some(&first) = self.recent.front() {
            if now.duration_since(first) >= window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.policy.budget as usize {
            return Decision::GiveUp;
        }
        self.recent.push_back(now);
        let delay = delay_for(&self.policy, self.attempt, jitter_sample);
        self.attempt = self.attempt.saturating_add(1);
        Decision::RestartAfter(delay)
    }
}

/// The delay before restart number `attempt` (0-based): `initial · multiplier^attempt`, capped,
/// then reduced by up to `jitter` of itself so that many terminals restarted by one event do not
/// stay in step.
pub fn delay_for(policy: &RestartPolicy, attempt: u32, jitter_sample: f64) -> Duration {
    let exp = policy.multiplier.powi(attempt.min(64) as i32);
    let raw = (policy.initial_backoff_ms as f64 * exp).min(policy.max_backoff_ms as f64);
    let sample = jitter_sample.clamp(0.0, 1.0);
    let ms = raw * (1.0 - policy.jitter * sample);
    Duration::from_millis(ms.max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.5,
            budget: 4,
            window_ms: 10_000,
            stable_after_ms: 5_000,
        }
    }

    #[test]
    fn delays_grow_and_cap() {
        let p = policy();
        let ms: Vec<u64> = (0..6)
            .map(|a| delay_for(&p, a, 0.0).as_millis() as u64)
            .collect();
        assert_eq!(ms, [100, 200, 400, 800, 1_000, 1_000]);
        // Jitter only shortens, by at most `jitter` of the delay.
        assert_eq!(delay_for(&p, 2, 0.999_999).as_millis(), 200);
        assert_eq!(delay_for(&p, 2, 0.5).as_millis(), 300);
        assert_eq!(delay_for(&p, 100, 0.0).as_millis(), 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_then_give_up_and_window_slides() {
        let mut t = RestartTracker::new(policy());
        let short = Duration::from_millis(10);
        let mut delays = Vec::new();
        for _ in 0..4 {
            match t.on_exit(Instant::now(), short, 0.0) {
                Decision::RestartAfter(d) => {
                    delays.push(d.as_millis());
                    tokio::time::advance(d + short).await;
                }
                Decision::GiveUp => panic!("gave up too early"),
            }
        }
        assert_eq!(delays, [100, 200, 400, 800]);
        assert_eq!(t.on_exit(Instant::now(), short, 0.0), Decision::GiveUp);
        // Once the oldest restarts leave the window, there is budget again.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(
            t.on_exit(Instant::now(), short, 0.0),
            Decision::RestartAfter(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stable_run_resets_the_backoff() {
        let mut t = RestartTracker::new(policy());
        let short = Duration::from_millis(10);
        assert_eq!(
            t.on_exit(Instant::now(), short, 0.0),
            Decision::RestartAfter(Duration::from_millis(100))
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(
            t.on_exit(Instant::now(), short, 0.0),
            Decision::RestartAfter(Duration::from_millis(200))
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            t.on_exit(Instant::now(), Duration::from_secs(6), 0.0),
            Decision::RestartAfter(Duration::from_millis(100))
        );
        t.reset();
        assert_eq!(t.in_window(), 0);
    }
}
