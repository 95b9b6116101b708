//! Catch-up: what to do with the instants a schedule missed while no scheduler was leading
//! (design §5). Pure: a cron, the last handled instant and "now" in, a plan out.
//!
//! | policy | fires | counted as missed |
//! |---|---|---|
//! | `latest` (default) | the most recent missed instant inside the window | every other missed instant |
//! | `all` | every missed instant inside the window, oldest first, at most `max_fires` (the most recent ones) | the rest |
//! | `skip` | nothing | every missed instant |
//!
//! Instants older than `now - window` are never fired. Counting is bounded: a schedule that
//! missed more than [`MAX_SCAN`] instants (a per-minute cron after weeks of downtime) gets its
//! count saturated there, so a takeover with a million schedules stays fast.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use crate::cron::CronSchedule;
use crate::model::CatchupPolicy;

/// Most missed instants examined for one schedule in one plan.
pub const MAX_SCAN: u64 = 10_000;

/// The effective catch-up settings of one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchupSettings {
    /// Which instants to fire.
    pub policy: CatchupPolicy,
    /// Missed instants older than this (relative to now) are not fired.
    pub window: chrono::Duration,
    /// Cap for policy `all`.
    pub max_fires: u32,
}

/// What to do for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatchupPlan {
    /// Missed instants to fire now, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Missed instants that will not be fired.
    pub missed: u64,
    /// The first instant strictly after `now`: where the timer continues. `None` when the
    /// cron has no further instant.
    pub next: Option<DateTime<Utc>>,
}

/// Plans catch-up for instants of `cron` in `(after, now]`.
pub fn plan(
    cron: &CronSchedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: CatchupSettings,
) -> CatchupPlan {
    let mut out = CatchupPlan::default();
    let window_start = now - settings.window;
    let keep = match settings.policy {
        CatchupPolicy::Latest => 1,
        CatchupPolicy::All => settings.max_fires as usize,
        CatchupPolicy::Skip => 0,
    };
    // No allocation until an instant is actually kept (the common takeover keeps none).
    let mut kept: VecDeque<DateTime<Utc>> = VecDeque::new();
    let mut t = after;
    let mut scanned = 0u64;
    while let Some(instant) = cron.next_after(t) {
        if instant > now {
            out.next = Some(instant);
            break;
        }
        t = instant;
        scanned += 1;
        if instant < window_start {
            out.missed += 1;
        } else if keep > 0 {
            if kept.len() == keep {
                kept.pop_front();
                out.missed += 1;
            }
            kept.push_back(instant);
        } else {
            out.missed += 1;
        }
        if scanned >= MAX_SCAN {
            // Saturate: jump close to now (crons have minute granularity, so no instant of the
            // last two minutes is skipped) and only look at what is left.
            let jump = now - chrono::Duration::minutes(2);
            if t < jump {
                t = jump;
                scanned = 0;
            }
        }
    }
    out.fire = kept.into_iter().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, h, m, 0).unwrap()
    }

    fn settings(policy: CatchupPolicy) -> CatchupSettings {
        CatchupSettings {
            policy,
            window: chrono::Duration::hours(24),
            max_fires: 3,
        }
    }

    fn hourly() -> CronSchedule {
        CronSchedule::parse("0 * * * *", "UTC").unwrap()
    }

    #[test]
    fn nothing_missed() {
        let p = plan(
            &hourly(),
            at(9, 0),
            at(9, 30),
            settings(CatchupPolicy::Latest),
        );
        assert_eq!(
            p,
            CatchupPlan {
                fire: vec![],
                missed: 0,
                next: Some(at(10, 0))
            }
        );
    }

    #[test]
    fn latest_fires_the_most_recent_and_counts_the_rest() {
        let p = plan(
            &hourly(),
            at(9, 0),
            at(12, 30),
            settings(CatchupPolicy::Latest),
        );
        assert_eq!(p.fire, vec![at(12, 0)]);
        assert_eq!(p.missed, 2);
        assert_eq!(p.next, Some(at(13, 0)));
    }

    #[test]
    fn an_instant_exactly_now_is_missed_not_next() {
        let p = plan(
            &hourly(),
            at(9, 0),
            at(10, 0),
            settings(CatchupPolicy::Latest),
        );
        assert_eq!(p.fire, vec![at(10, 0)]);
        assert_eq!(p.next, Some(at(11, 0)));
    }

    #[test]
    fn all_is_capped_to_the_most_recent_in_order() {
        let p = plan(
            &hourly(),
            at(9, 0),
            at(15, 10),
            settings(CatchupPolicy::All),
        );
        assert_eq!(p.fire, vec![at(13, 0), at(14, 0), at(15, 0)]);
        assert_eq!(p.missed, 3);
        let p = plan(
            &hourly(),
            at(9, 0),
            at(11, 10),
            settings(CatchupPolicy::All),
        );
        assert_eq!(p.fire, vec![at(10, 0), at(11, 0)]);
        assert_eq!(p.missed, 0);
    }

    #[test]
    fn skip_only_counts() {
        let p = plan(
            &hourly(),
            at(9, 0),
            at(12, 0),
            settings(CatchupPolicy::Skip),
        );
        assert!(p.fire.is_empty());
        assert_eq!(p.missed, 3);
        assert_eq!(p.next, Some(at(13, 0)));
    }

    #[test]
    fn window_excludes_old_instants() {
        let s = CatchupSettings {
            window: chrono::Duration::minutes(90),
            ..settings(CatchupPolicy::All)
        };
        let p = plan(&hourly(), at(6, 0), at(12, 0), s);
        // 07..10 are older than 10:30; 11 and 12 are inside.
        assert_eq!(p.fire, vec![at(11, 0), at(12, 0)]);
        assert_eq!(p.missed, 4);
        let latest = CatchupSettings {
            window: chrono::Duration::minutes(10),
            ..settings(CatchupPolicy::Latest)
        };
        let p = plan(&hourly(), at(6, 0), at(12, 30), latest);
        assert!(p.fire.is_empty(), "12:00 is 30 min old, outside 10 min");
        assert_eq!(p.missed, 6);
    }

    #[test]
    fn huge_gaps_saturate_quickly() {
        let every_minute = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let after = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let now = at(12, 0);
        let started = std::time::Instant::now();
        let p = plan(&every_minute, after, now, settings(CatchupPolicy::Latest));
        assert_eq!(p.fire, vec![now]);
        assert!(p.missed >= MAX_SCAN, "{}", p.missed);
        assert_eq!(p.next, Some(at(12, 1)));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
