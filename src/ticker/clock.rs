//! The ticker's notion of "now", injected so tests can start at any instant and jump in time.
//!
//! Only schedule instants come from the clock. Lease timing (leadership renewals and expiry) uses
//! the process's monotonic timer, because it measures how long *other* processes have been silent,
//! which a test's fake calendar must not shorten.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::watch;

/// A source of the current instant and a way to sleep until an instant.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
    /// Completes once [`Clock::now`] is at or after `instant` (at once when it already is).
    fn sleep_until(&self, instant: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// Longest single timer sleep of [`SystemClock`]: after it the wall clock is read again, so a
/// stepped system clock (NTP, suspend) delays a fire by at most this much. One wake-up a minute
/// costs nothing measurable, so "idle" stays idle.
const MAX_SYSTEM_SLEEP: Duration = Duration::from_secs(60);

/// How early [`SystemClock`] wakes from its timer to yield-wait the last stretch: costs at most
/// this much CPU per due instant, buys sub-millisecond precision.
const SPIN: Duration = Duration::from_micros(1500);

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, instant: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let left = match (instant - Utc::now()).to_std() {
                    Ok(left) if !left.is_zero() => left,
                    _ => return,
                };
                if left > SPIN {
                    // tokio's timer rounds up to the next millisecond tick: wake a little early
                    // and finish below, so the fire goes out on its instant, not ~1 ms after.
                    tokio::time::sleep((left - SPIN).min(MAX_SYSTEM_SLEEP)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        })
    }
}

/// A clock for tests: starts at any instant, either frozen or flowing at real speed, and can be
/// moved with [`ManualClock::advance`] and [`ManualClock::set`], which wake every sleeper that
/// became due.
///
/// ```
/// use chrono::TimeZone;
/// use polos::ticker::{Clock, ManualClock};
/// let start = chrono::Utc.with_ymd_and_hms(2026, 3, 8, 6, 0, 0).unwrap();
/// let clock = ManualClock::frozen(start);
/// clock.advance(std::time::Duration::from_secs(3600));
/// assert_eq!(clock.now(), start + chrono::Duration::hours(1));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// Shared so every clone (the ticker's and the test's) sees the same time.
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    /// The instant shown at `anchor`; moved by `set`/`advance`.
    base: Mutex<(DateTime<Utc>, Instant)>,
    /// Whether time flows at real speed between jumps.
    running: bool,
    /// Bumped on every jump so sleepers re-check.
    jumps: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock that stands still at `start` until moved.
    pub fn frozen(start: DateTime<Utc>) -> Self {
        Self::new(start, false)
    }

    /// A clock that shows `start` now and then flows at real speed (and can still be moved).
    pub fn running(start: DateTime<Utc>) -> Self {
        Self::new(start, true)
    }

    fn new(start: DateTime<Utc>, running: bool) -> Self {
        let (jumps, _) = watch::channel(0);
        ManualClock {
            inner: Arc::new(ManualInner {
                base: Mutex::new((start, Instant::now())),
                running,
                jumps,
            }),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        self.set(self.now() + by);
    }

    /// Moves the clock to `instant` (backwards too; sleepers only wake when due).
    pub fn set(&self, instant: DateTime<Utc>) {
        {
            let mut base = self
                .inner
                .base
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *base = (instant, Instant::now());
        }
        self.inner.jumps.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let (base, anchor) = *self
            .inner
            .base
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.inner.running {
            base + chrono::Duration::from_std(anchor.elapsed()).unwrap_or(chrono::Duration::zero())
        } else {
            base
        }
    }

    fn sleep_until(&self, instant: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let clock = self.clone();
        let mut jumps = self.inner.jumps.subscribe();
        Box::pin(async move {
            loop {
                jumps.borrow_and_update();
                let left = match (instant - clock.now()).to_std() {
                    Ok(left) if !left.is_zero() => left,
                    _ => return,
                };
                if clock.inner.running {
                    tokio::select! {
                        _ = tokio::time::sleep(left) => {}
                        _ = jumps.changed() => {}
                    }
                } else if jumps.changed().await.is_err() {
                    // The sender lives in `clock` itself, so this cannot happen; never spin.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[tokio::test]
    async fn frozen_sleepers_wake_on_advance_only_when_due() {
        let clock = ManualClock::frozen(t0());
        let due = t0() + chrono::Duration::seconds(10);
        let mut sleep = clock.sleep_until(due);
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(futures::poll!(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .unwrap();
        assert_eq!(clock.now(), due);
    }

    #[tokio::test]
    async fn running_clock_flows() {
        let clock = ManualClock::running(t0());
        let due = t0() + chrono::Duration::milliseconds(30);
        tokio::time::timeout(Duration::from_secs(5), clock.sleep_until(due))
            .await
            .unwrap();
        // Flowing at real speed: past the instant, but nowhere near a minute later (a clock
        // that ran fast, or jumped, would be).
        let now = clock.now();
        assert!(
            now >= due && now < t0() + chrono::Duration::minutes(1),
            "{now}"
        );
        // `set` replaces the shown instant (forwards and backwards) and time flows on from it.
        let day = t0() + chrono::Duration::days(1);
        clock.set(day);
        let now = clock.now();
        assert!(
            now >= day && now < day + chrono::Duration::minutes(1),
            "{now}"
        );
        clock.set(t0());
        let now = clock.now();
        assert!(
            now >= t0() && now < t0() + chrono::Duration::minutes(1),
            "{now}"
        );
        let later = t0() + chrono::Duration::milliseconds(20);
        tokio::time::timeout(Duration::from_secs(5), clock.sleep_until(later))
            .await
            .unwrap();
        assert!(clock.now() >= later);
    }

    #[tokio::test]
    async fn system_clock_past_instant_returns_at_once() {
        tokio::time::timeout(
            Duration::from_secs(1),
            SystemClock.sleep_until(Utc::now() - chrono::Duration::seconds(1)),
        )
        .await
        .unwrap();
    }
}
