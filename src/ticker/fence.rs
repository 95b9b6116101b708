//! Fencing: the moment after which this replica must not publish, because a standby could have
//! taken the lease over.
//!
//! The lease task publishes a [`Leadership`] on a watch channel. While this replica leads it
//! carries `valid_until` = start of the last successful renewal + TTL, on a clock that keeps
//! counting while the process is stopped (SIGSTOP) or the host sleeps ([`BootInstant`]). A
//! standby only takes over after it has watched the same lease revision for a full TTL on its
//! own clock, and it cannot have seen our renewal before we started it, so publishing strictly
//! before `valid_until` can never overlap a successor. The firing code checks
//! [`Leadership::may_publish`] right before every publish, takeover and retry; when it fails the
//! fires are held (not dropped) until the lease is renewed (nobody took over: publish them) or
//! lost (the successor fires them through catch-up).

use std::time::Duration;

/// An instant on the boot clock (`CLOCK_BOOTTIME` on Linux: it includes time the process was
/// stopped and the host was suspended, which `CLOCK_MONOTONIC` does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BootInstant(Duration);

impl BootInstant {
    /// Now.
    pub fn now() -> BootInstant {
        BootInstant(boot_clock())
    }

    /// `self + d`.
    pub fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(d))
    }

    /// Time from now until `self` (zero when it has passed).
    pub fn remaining(self) -> Duration {
        self.0.saturating_sub(boot_clock())
    }

    /// Whether `self` has passed.
    pub fn has_passed(self) -> bool {
        boot_clock() >= self.0
    }
}

#[cfg(target_os = "linux")]
fn boot_clock() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(target_os = "linux"))]
fn boot_clock() -> Duration {
    // Elsewhere the monotonic clock is the best portable choice.
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// What the lease task says about this replica's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Leadership {
    /// Counts the times this replica won the lease; a fire is only published under the term it
    /// was planned in (0: never led).
    pub term: u64,
    /// `Some` while this replica holds the lease: publishing is safe strictly before it.
    pub valid_until: Option<BootInstant>,
}

impl Leadership {
    /// Whether this replica holds the lease (its deadline may have passed: then it is fenced
    /// until a renewal succeeds or the lease is lost).
    pub fn leading(&self) -> bool {
        self.valid_until.is_some()
    }

    /// Whether a fire planned in `term` may be published right now.
    pub fn may_publish(&self, term: u64) -> bool {
        self.term == term && self.valid_until.is_some_and(|d| !d.has_passed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_term_before_its_deadline_may_publish() {
        let soon = BootInstant::now().add(Duration::from_secs(60));
        let l = Leadership {
            term: 3,
            valid_until: Some(soon),
        };
        assert!(l.leading());
        assert!(l.may_publish(3));
        assert!(!l.may_publish(2), "a fire planned under an earlier term");
        let passed = Leadership {
            term: 3,
            valid_until: Some(BootInstant::now()),
        };
        assert!(passed.leading(), "fenced, not yet lost");
        assert!(!passed.may_publish(3));
        assert!(!Leadership::default().may_publish(0));
    }

    #[test]
    fn the_boot_clock_moves_forward() {
        let a = BootInstant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(BootInstant::now() > a);
        assert!(a.has_passed());
        assert!(a.add(Duration::from_secs(3600)).remaining() > Duration::from_secs(3500));
    }
}
