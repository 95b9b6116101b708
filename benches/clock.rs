//! A wall clock that runs `SPEED` times faster than real time, so minute-granular crons fall
//! due every fraction of a second and the on-time latency of many distinct instants can be
//! measured in seconds. It sleeps like `polos::ticker::SystemClock` (timer until 1.5 ms before
//! the instant, then yields until it), so the measured lateness is the ticker's, not the clock's.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use polos::ticker::Clock;

/// Same early wake-up as `SystemClock`.
const SPIN: Duration = Duration::from_micros(1500);

#[derive(Debug, Clone, Copy)]
pub struct FastClock {
    /// Schedule time shown at `anchor`.
    pub base: DateTime<Utc>,
    /// Real time of `base`.
    pub anchor: Instant,
    /// Schedule seconds per real second.
    pub speed: u32,
}

impl FastClock {
    pub fn new(base: DateTime<Utc>, speed: u32) -> Self {
        FastClock {
            base,
            anchor: Instant::now(),
            speed,
        }
    }

    /// The real moment at which schedule time shows `instant`.
    pub fn real(&self, instant: DateTime<Utc>) -> Instant {
        let ahead = (instant - self.base).to_std().unwrap_or_default();
        self.anchor + ahead / self.speed
    }
}

impl Clock for FastClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(self.anchor.elapsed() * self.speed).unwrap()
    }

    fn sleep_until(&self, instant: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let at = self.real(instant);
        Box::pin(async move {
            loop {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return;
                }
                if left > SPIN {
                    tokio::time::sleep(left - SPIN).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        })
    }
}
