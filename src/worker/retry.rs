//! [`RetryPolicy`]: how often a run (or one step) is tried, and how long to wait in between.
//!
//! A workflow's policy ([`crate::worker::Workflow::retry`]) overrides the worker's
//! `worker.max_attempts` / `worker.retry_backoff_secs`; a step's policy
//! ([`crate::worker::Step::retry`]) re-runs that step's body in place before the attempt fails.
//!
//! The delay before try `n + 1` is `initial_backoff × multiplier^(n−1)`, capped at
//! `max_backoff`, then shortened by up to `jitter` of itself. The jitter is derived from the run
//! id and the try number (not a random number generator), so every worker computes the same
//! delay for the same retry and a test can predict it, while runs that failed together still
//! spread out.

use std::hash::{Hash, Hasher};
use std::time::Duration;

/// How often to try and how long to wait between tries.
///
/// ```
/// use std::time::Duration;
/// use polos::worker::RetryPolicy;
///
/// let policy = RetryPolicy {
///     max_attempts: 5,
///     initial_backoff: Duration::from_secs(2),
///     ..RetryPolicy::default()
/// };
/// // 2 s, 4 s, 8 s, 16 s: doubling from the first delay.
/// assert_eq!(policy.delay("any-run", 3), Duration::from_secs(8));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// The delay before the second try.
    pub initial_backoff: Duration,
    /// Each further delay is the previous one times this (at least 1.0).
    pub multiplier: f64,
    /// No delay is longer than this.
    pub max_backoff: Duration,
    /// Up to this fraction (0.0–1.0) of each delay is taken off, differently per run and try,
    /// so runs that failed together do not all retry at the same moment.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 3 tries, 1 s then doubling, at most 10 minutes apart, no jitter: the worker defaults.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(600),
            jitter: 0.0,
        }
    }
}

/// The longest delay a JetStream redelivery is asked for, whatever a policy says (a nak delay
/// is a duration in nanoseconds; this keeps the arithmetic far from overflow).
const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);

impl RetryPolicy {
    /// One try only: a failure is final.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// `attempts` tries with the default backoff.
    pub fn attempts(attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: attempts,
            ..RetryPolicy::default()
        }
    }

    /// The delay after failed try `attempt` (1-based) of run `run_id`, before try `attempt + 1`.
    pub fn delay(&self, run_id: &str, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1).min(1000)).unwrap_or(1000);
        let cap = self.max_backoff.min(LONGEST);
        let base = self.initial_backoff.min(cap).as_secs_f64();
        let grown = base * self.multiplier.max(1.0).powi(exponent);
        let capped = if grown.is_finite() {
            Duration::from_secs_f64(grown.min(cap.as_secs_f64()))
        } else {
            cap
        };
        if self.jitter <= 0.0 {
            return capped;
        }
        let off = self.jitter.min(1.0) * unit_fraction(run_id, attempt);
        capped.mul_f64(1.0 - off)
    }

    /// Why this policy cannot work, naming the field and what to set; `None` when it can.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.max_attempts == 0 {
            return Some("max_attempts is 0; set at least 1 (1 = no retries)".to_string());
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Some(format!(
                "multiplier is {}; set a number of at least 1.0 (2.0 doubles each delay)",
                self.multiplier
            ));
        }
        if !self.jitter.is_finite() || !(0.0..=1.0).contains(&self.jitter) {
            return Some(format!(
                "jitter is {}; set a fraction from 0.0 (none) to 1.0",
                self.jitter
            ));
        }
        None
    }
}

/// A number in [0, 1) fixed by `run_id` and `attempt`.
fn unit_fraction(run_id: &str, attempt: u32) -> f64 {
    // SipHash with fixed keys: the same on every worker of one build.
    let mut hasher = std::hash::DefaultHasher::new();
    run_id.hash(&mut hasher);
    attempt.hash(&mut hasher);
    // The top 53 bits fit a double's mantissa exactly.
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_multiplier_and_stop_at_the_cap() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            multiplier: 3.0,
            max_backoff: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay("r", 1), Duration::from_millis(100));
        assert_eq!(p.delay("r", 2), Duration::from_millis(300));
        assert_eq!(p.delay("r", 3), Duration::from_millis(900));
        assert_eq!(p.delay("r", 4), Duration::from_secs(2));
        assert_eq!(p.delay("r", u32::MAX), Duration::from_secs(2));
        let flat = RetryPolicy {
            multiplier: 1.0,
            ..p.clone()
        };
        assert_eq!(flat.delay("r", 9), Duration::from_millis(100));
        // A first delay above the cap is capped too.
        let odd = RetryPolicy {
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        assert_eq!(odd.delay("r", 1), Duration::from_secs(5));
    }

    #[test]
    fn jitter_shortens_within_its_fraction_the_same_way_every_time() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_secs(10),
            multiplier: 1.0,
            jitter: 0.5,
            ..RetryPolicy::default()
        };
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let run = format!("run-{i}");
            let d = p.delay(&run, 2);
            assert!(
                d <= Duration::from_secs(10) && d > Duration::from_secs(5),
                "{d:?}"
            );
            assert_eq!(d, p.delay(&run, 2), "stable for a run and try");
            seen.insert(d.as_millis() / 500);
        }
        assert!(seen.len() >= 8, "spread over the window: {seen:?}");
    }

    #[test]
    fn policies_that_cannot_work_are_named() {
        assert!(RetryPolicy::default().problem().is_none());
        assert!(RetryPolicy::none().problem().is_none());
        let zero = RetryPolicy::attempts(0).problem().unwrap();
        assert!(zero.contains("max_attempts is 0"), "{zero}");
        let shrink = RetryPolicy {
            multiplier: 0.5,
            ..RetryPolicy::default()
        };
        assert!(shrink.problem().unwrap().contains("multiplier is 0.5"));
        let nan = RetryPolicy {
            jitter: f64::NAN,
            ..RetryPolicy::default()
        };
        assert!(nan.problem().unwrap().contains("jitter"));
    }
}
