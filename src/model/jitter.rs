//! Jitter: the deterministic delay of a schedule's fire, so thousands of schedules due at the
//! same instant (every user's 08:00) go out spread over a window instead of in one millisecond.
//!
//! The offset of a fire is a pure function of the schedule id and the instant, so every replica,
//! a successor after failover and any other program compute the same one:
//!
//! ```text
//! seed   = FNV-1a-64(schedule_id as UTF-8)
//! x      = seed XOR (instant as Unix seconds, two's complement u64)
//! offset = SplitMix64-finalizer(x) mod window_ms        (0 when window_ms is 0)
//! window = min(jitter_secs × 1000, milliseconds from the instant to the schedule's next instant)
//! ```
//!
//! The window never reaches the next instant, so a schedule's fires stay in order. The payload's
//! `timestamp`, the run id and `Nats-Msg-Id` keep the nominal instant; only the moment of
//! publishing moves. Split into a per-schedule [`jitter_seed`] and a per-fire [`jitter_offset_ms`]
//! so a caller may keep the seed.

use chrono::{DateTime, Utc};

/// Longest accepted `jitter_secs` (a day), per schedule and in `scheduler.jitter_secs`.
pub const MAX_JITTER_SECS: u64 = 86_400;

/// The per-schedule half of the offset: FNV-1a (64-bit) of the schedule id's bytes.
///
/// ```
/// assert_eq!(polos::model::jitter_seed(""), 0xcbf2_9ce4_8422_2325);
/// ```
pub fn jitter_seed(schedule_id: &str) -> u64 {
    schedule_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The offset of the fire at `instant`, in milliseconds, in `[0, window_ms)` (0 when the window
/// is empty).
///
/// ```
/// use polos::model::{jitter_offset_ms, jitter_seed};
/// let t = polos::model::time::parse_instant("2026-05-01T08:00:00Z").unwrap();
/// let seed = jitter_seed("sch_abc");
/// assert!(jitter_offset_ms(seed, t, 60_000) < 60_000);
/// assert_eq!(jitter_offset_ms(seed, t, 0), 0);
/// ```
pub fn jitter_offset_ms(seed: u64, instant: DateTime<Utc>, window_ms: u64) -> u64 {
    if window_ms == 0 {
        return 0;
    }
    splitmix64(seed ^ instant.timestamp() as u64) % window_ms
}

/// The window of the fire at `instant`: `jitter_secs` in milliseconds, but never as far as the
/// schedule's `next` instant (so fires keep their order).
pub fn jitter_window_ms(
    jitter_secs: u64,
    instant: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> u64 {
    let jitter = jitter_secs.min(MAX_JITTER_SECS) * 1000;
    match next {
        Some(next) => {
            let gap = u64::try_from((next - instant).num_milliseconds()).unwrap_or(0);
            jitter.min(gap)
        }
        None => jitter,
    }
}

/// SplitMix64's output function (Steele, Lea, Flood 2014): spreads a 64-bit input evenly.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::parse_instant;

    #[test]
    fn known_values_other_languages_can_check() {
        // tests/py/schedules_api.py computes the same numbers from the documented formula.
        let seed = jitter_seed("sch_aaaaaaaaaaaaaaaaaaaaaaaaaa");
        let t = parse_instant("2026-05-01T08:00:00Z").unwrap();
        assert_eq!(seed, 0x1fd2_2162_25ca_ae08);
        assert_eq!(jitter_offset_ms(seed, t, 60_000), 4_120);
    }

    #[test]
    fn offsets_spread_over_the_window_and_stay_inside_it() {
        let t = parse_instant("2026-05-01T08:00:00Z").unwrap();
        let mut buckets = [0u32; 10];
        for i in 0..100_000 {
            let seed = jitter_seed(&crate::model::schedule_id("digest", &format!("user_{i}")));
            let offset = jitter_offset_ms(seed, t, 60_000);
            assert!(offset < 60_000);
            buckets[(offset / 6_000) as usize] += 1;
        }
        // Each tenth of the window holds about 10,000 of the 100,000 schedules.
        for (i, n) in buckets.iter().enumerate() {
            assert!(
                (9_500..10_500).contains(n),
                "bucket {i}: {n} of {buckets:?}"
            );
        }
    }

    #[test]
    fn the_same_schedule_gets_different_offsets_at_different_instants() {
        let seed = jitter_seed("sch_x");
        let t = parse_instant("2026-05-01T08:00:00Z").unwrap();
        let offsets: std::collections::HashSet<u64> = (0..50)
            .map(|d| jitter_offset_ms(seed, t + chrono::Duration::days(d), 3_600_000))
            .collect();
        assert!(offsets.len() > 45, "{offsets:?}");
    }

    #[test]
    fn the_window_stops_short_of_the_next_instant() {
        let t = parse_instant("2026-05-01T08:00:00Z").unwrap();
        let next = parse_instant("2026-05-01T08:01:00Z").unwrap();
        assert_eq!(jitter_window_ms(300, t, Some(next)), 60_000);
        assert_eq!(jitter_window_ms(30, t, Some(next)), 30_000);
        assert_eq!(jitter_window_ms(30, t, None), 30_000);
        assert_eq!(jitter_window_ms(u64::MAX, t, None), MAX_JITTER_SECS * 1000);
        assert_eq!(jitter_window_ms(0, t, Some(next)), 0);
    }
}
