//! The back-fill rate: a token bucket that lets `rate` fires a second through, with bursts of at
//! most a tenth of a second's worth. Pure: the caller passes the time.

use std::time::Duration;

use tokio::time::Instant;

/// Fires allowed per second, with a small burst.
#[derive(Debug, Clone)]
pub(crate) struct Rate {
    /// Tokens added per second.
    per_sec: f64,
    /// Most tokens held (the burst).
    burst: f64,
    /// Tokens now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Option<Instant>,
}

impl Rate {
    /// `per_sec` fires a second (at least 1).
    pub fn new(per_sec: u32) -> Rate {
        let per_sec = f64::from(per_sec.max(1));
        let burst = (per_sec / 10.0).max(1.0);
        Rate {
            per_sec,
            burst,
            tokens: burst,
            at: None,
        }
    }

    /// Takes one token at `now`; when there is none, `Err` says when there will be one.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(at) = self.at {
            let earned = now.saturating_duration_since(at).as_secs_f64() * self.per_sec;
            self.tokens = (self.tokens + earned).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.per_sec;
        Err(now + Duration::from_secs_f64(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_the_rate_through_and_says_when_to_come_back() {
        let t0 = Instant::now();
        let mut rate = Rate::new(100);
        // A burst of a tenth of a second's worth, then one token every 10 ms.
        for _ in 0..10 {
            assert!(rate.take(t0).is_ok());
        }
        let back = rate.take(t0).unwrap_err();
        assert_eq!(back.duration_since(t0).as_millis(), 10);
        assert!(rate.take(back).is_ok());
        assert!(rate.take(back).is_err());
        // Over a simulated second, about 100 go through.
        let mut t = back;
        let mut through = 0;
        while t < back + Duration::from_secs(1) {
            match rate.take(t) {
                Ok(()) => through += 1,
                Err(next) => t = next,
            }
        }
        assert!((99..=101).contains(&through), "{through}");
    }

    #[test]
    fn a_rate_of_one_still_moves() {
        let t0 = Instant::now();
        let mut rate = Rate::new(0);
        assert!(rate.take(t0).is_ok());
        let back = rate.take(t0).unwrap_err();
        assert_eq!(back.duration_since(t0), Duration::from_secs(1));
    }
}
