//! Catch-up: what to do with the instants a schedule missed while no scheduler was leading, or
//! while this one could not fire (a stalled process). Pure: a cron, the last handled instant and
//! "now" in, a plan out.
//!
//! | policy | fires | counted as missed |
//! |---|---|---|
//! | `latest` (default) | the most recent missed instant inside the window | every other missed instant |
//! | `all` | every missed instant inside the window, oldest first, at most `max_fires` (the most recent ones) | the rest |
//! | `skip` | nothing | every missed instant |
//!
//! An instant is *missed* only when it is older than the firing grace ([`LATE_GRACE`]) at the
//! moment it is planned: one that falls due during a handover (or a slow round) within the grace
//! fires on time, as `schedule`, whatever the policy. Instants older than `now - window` are never
//! fired. Counting is bounded: a schedule that missed more than [`MAX_SCAN`] instants (a
//! per-minute cron after weeks of downtime) gets its count saturated there, and the planner jumps
//! straight to the instants that can still fire, so `latest` still fires the latest one and a
//! takeover with a million schedules stays fast.
//!
//! Two per-schedule settings shape every plan:
//! - **jitter**: an instant is *due* at its jittered time (instant + its deterministic offset,
//!   see [`Jitter`]); "missed", "on time" and the grace are all measured from that time, so a
//!   successor judges each instant exactly as its predecessor would have;
//! - **bounds**: instants before `start` are neither fired nor missed; the scan stops at `end`
//!   (the plan then says [`CatchupPlan::ended`]).

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cron::CronSchedule;
use crate::model::{jitter_offset_ms, jitter_window_ms, CatchupPolicy, Trigger};

/// Most missed instants examined one by one for one schedule in one plan.
pub const MAX_SCAN: u64 = 10_000;

/// A fire found due later than this after its instant (the process stalled, the host slept, the
/// scheduler was down) is treated as missed and goes through the schedule's catch-up policy
/// instead of firing as `schedule`. It also bounds how late a change that arrived "a moment before
/// its instant" may still fire as an on-time fire.
pub const LATE_GRACE: Duration = Duration::from_secs(5);

/// The effective catch-up settings of one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchupSettings {
    /// Which instants to fire.
    pub policy: CatchupPolicy,
    /// Missed instants older than this (relative to now) are not fired.
    pub window: chrono::Duration,
    /// Cap for policy `all`.
    pub max_fires: u32,
    /// When each instant is due.
    pub jitter: Jitter,
    /// Instants before this are outside the schedule (`start_at`).
    pub start: Option<DateTime<Utc>>,
    /// Instants after this are outside the schedule (`end_at`).
    pub end: Option<DateTime<Utc>>,
}

/// A schedule's jitter: its seed ([`jitter_seed`](crate::model::jitter_seed) of its id) and
/// `jitter_secs`. The default is no jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Jitter {
    /// The per-schedule half of the offset.
    pub seed: u64,
    /// The window, seconds; 0 is no jitter.
    pub secs: u64,
}

impl Jitter {
    /// The offset of `instant`, in milliseconds (below the gap to the cron's next instant).
    pub fn offset_ms(&self, cron: &CronSchedule, instant: DateTime<Utc>) -> u32 {
        if self.secs == 0 {
            return 0;
        }
        let window = jitter_window_ms(self.secs, instant, cron.next_after(instant));
        // Below MAX_JITTER_SECS × 1000, which fits.
        u32::try_from(jitter_offset_ms(self.seed, instant, window)).unwrap_or(u32::MAX)
    }

    /// When `instant` is due: the instant plus its offset.
    pub fn due(&self, cron: &CronSchedule, instant: DateTime<Utc>) -> DateTime<Utc> {
        instant + chrono::Duration::milliseconds(i64::from(self.offset_ms(cron, instant)))
    }
}

/// What to do for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatchupPlan {
    /// Missed instants to fire now, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Missed instants that will not be fired (saturated past [`MAX_SCAN`]).
    pub missed: u64,
    /// The first instant not yet due at `now`: where the timer continues. `None` when the
    /// cron has no further instant, or the next one is past the schedule's end.
    pub next: Option<DateTime<Utc>>,
    /// The scan reached the schedule's end: nothing after it will ever fire.
    pub ended: bool,
}

/// Plans catch-up for the instants of `cron` after `after` that are due by `now` (and inside
/// the schedule's bounds).
pub fn plan(
    cron: &CronSchedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: CatchupSettings,
) -> CatchupPlan {
    let mut out = CatchupPlan::default();
    // A window reaching before the calendar's start (u64::MAX seconds) means "no limit".
    let window_start = now
        .checked_sub_signed(settings.window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let keep = match settings.policy {
        CatchupPolicy::Latest => 1,
        CatchupPolicy::All => settings.max_fires as usize,
        CatchupPolicy::Skip => 0,
    };
    // No allocation until an instant is actually kept (the common takeover keeps none).
    let mut kept: VecDeque<DateTime<Utc>> = VecDeque::new();
    let mut t = match settings.start {
        Some(start) => after.max(start - chrono::Duration::seconds(1)),
        None => after,
    };
    let mut scanned = 0u64;
    let mut jumped = false;
    while let Some(instant) = cron.next_after(t) {
        if settings.end.is_some_and(|end| instant > end) {
            out.ended = true;
            break;
        }
        // Offsets stay below the gap to the next instant, so due times rise with instants and
        // the instants due by `now` are a prefix.
        if instant > now || settings.jitter.due(cron, instant) > now {
            out.next = Some(instant);
            break;
        }
        t = instant;
        scanned += 1;
        if instant < window_start || keep == 0 {
            out.missed += 1;
        } else {
            if kept.len() == keep {
                kept.pop_front();
                out.missed += 1;
            }
            kept.push_back(instant);
        }
        if scanned >= MAX_SCAN && !jumped {
            // Saturate: skip to where the instants that can still fire begin (the last `keep`
            // before now, never before the window), and only look at those.
            jumped = true;
            let lower = t.max(window_start - chrono::Duration::seconds(1));
            let tail = if keep == 0 {
                now.max(lower)
            } else {
                tail_start(cron, lower, now, keep)
            };
            if tail > t {
                out.missed += kept.len() as u64;
                kept.clear();
                t = tail;
            }
        }
    }
    out.fire = kept.into_iter().collect();
    out
}

/// A point `s >= lower` such that `(s, now]` holds at least `keep` instants of `cron`, or `lower`
/// when fewer than that exist after it. Found by doubling a span back from `now`, so the cost is
/// about `keep` times the number of doublings, whatever the gap.
fn tail_start(
    cron: &CronSchedule,
    lower: DateTime<Utc>,
    now: DateTime<Utc>,
    keep: usize,
) -> DateTime<Utc> {
    let mut span = chrono::Duration::minutes(2);
    loop {
        let Some(s) = now.checked_sub_signed(span).filter(|s| *s > lower) else {
            return lower;
        };
        let mut count = 0;
        let mut x = s;
        while let Some(i) = cron.next_after(x) {
            if i > now {
                break;
            }
            count += 1;
            if count >= keep {
                return s;
            }
            x = i;
        }
        span = span * 2;
    }
}

/// The outcome of one planning step for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// An instant to fire now, and as what.
    pub fire: Option<(DateTime<Utc>, Trigger)>,
    /// Instants given up (policy, window).
    pub missed: u64,
    /// Where the timer continues when nothing fires now.
    pub next: Option<DateTime<Utc>>,
    /// Nothing fires now and nothing will: the schedule is past its `end_at`.
    pub ended: bool,
}

/// Continues a schedule whose last handled instant is `after`, at `now`: instants older than
/// the grace go through the catch-up policy (the first one kept fires now as `catchup`; after it
/// is published the schedule is planned again from it, which fires the rest of an `all` policy
/// in order), and the timer continues at the first instant inside the grace.
pub fn continue_after(
    cron: &CronSchedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: CatchupSettings,
) -> Step {
    let cutoff = now - grace();
    let p = plan(cron, after, cutoff, settings);
    match p.fire.first() {
        Some(first) => Step {
            fire: Some((*first, Trigger::Catchup)),
            missed: p.missed,
            next: None,
            ended: false,
        },
        None => Step {
            fire: None,
            missed: p.missed,
            next: p.next,
            ended: p.ended,
        },
    }
}

/// A schedule armed at `armed` is found due at `now`: on time within the grace of its jittered
/// time, otherwise its catch-up policy decides (from the instant just before `armed`).
pub fn resolve_due(
    cron: &CronSchedule,
    armed: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: CatchupSettings,
) -> Step {
    if now - settings.jitter.due(cron, armed) <= grace() {
        return Step {
            fire: Some((armed, Trigger::Schedule)),
            missed: 0,
            next: None,
            ended: false,
        };
    }
    continue_after(cron, armed - chrono::Duration::seconds(1), now, settings)
}

fn grace() -> chrono::Duration {
    chrono::Duration::milliseconds(LATE_GRACE.as_millis() as i64)
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
            jitter: Jitter::default(),
            start: None,
            end: None,
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
                next: Some(at(10, 0)),
                ended: false,
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
    fn huge_gaps_still_fire_the_latest_instant_of_a_sparse_cron() {
        // Per-minute catch-up of an hourly cron after more than MAX_SCAN missed hours: the latest
        // hour still fires (jumping to "now - 2 minutes" would find no instant at all).
        let after = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let now = at(12, 30);
        let s = CatchupSettings {
            window: chrono::Duration::days(3650),
            ..settings(CatchupPolicy::Latest)
        };
        let p = plan(&hourly(), after, now, s);
        assert_eq!(p.fire, vec![at(12, 0)]);
        assert!(p.missed >= MAX_SCAN, "{}", p.missed);
        assert_eq!(p.next, Some(at(13, 0)));
        let all = CatchupSettings {
            policy: CatchupPolicy::All,
            ..s
        };
        let p = plan(&hourly(), after, now, all);
        assert_eq!(p.fire, vec![at(10, 0), at(11, 0), at(12, 0)]);
    }

    #[test]
    fn a_window_of_u64_max_seconds_does_not_overflow() {
        let s = CatchupSettings {
            window: chrono::Duration::MAX,
            ..settings(CatchupPolicy::Latest)
        };
        let p = plan(&hourly(), at(9, 0), at(12, 30), s);
        assert_eq!(p.fire, vec![at(12, 0)]);
    }

    #[test]
    fn due_within_the_grace_is_on_time_whatever_the_policy() {
        let skip = settings(CatchupPolicy::Skip);
        let due = at(10, 0);
        let s = resolve_due(&hourly(), due, due + chrono::Duration::seconds(3), skip);
        assert_eq!(s.fire, Some((due, Trigger::Schedule)));
        let s = resolve_due(&hourly(), due, due + chrono::Duration::seconds(30), skip);
        assert_eq!(s.fire, None, "30 s late is missed under skip");
        assert_eq!(s.missed, 1);
        assert_eq!(s.next, Some(at(11, 0)));
        let latest = settings(CatchupPolicy::Latest);
        let s = resolve_due(&hourly(), due, due + chrono::Duration::seconds(30), latest);
        assert_eq!(s.fire, Some((due, Trigger::Catchup)));
    }

    #[test]
    fn a_takeover_inside_the_grace_fires_the_instant_on_time() {
        // The previous leader fired 09:00 and died; we take over at 10:00:02.
        let now = at(10, 0) + chrono::Duration::seconds(2);
        let s = continue_after(&hourly(), at(9, 0), now, settings(CatchupPolicy::Skip));
        assert_eq!(s.fire, None);
        assert_eq!(s.missed, 0);
        assert_eq!(
            s.next,
            Some(at(10, 0)),
            "armed, due at once, fires as schedule"
        );
        let s = continue_after(&hourly(), at(8, 0), now, settings(CatchupPolicy::All));
        assert_eq!(s.fire, Some((at(9, 0), Trigger::Catchup)));
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

    /// A jitter of `secs` whose offset at `instant` is known, found by trying seeds.
    fn jitter_with_offset_at(
        instant: DateTime<Utc>,
        secs: u64,
        want: impl Fn(u32) -> bool,
    ) -> Jitter {
        (0..)
            .map(|seed| Jitter { seed, secs })
            .find(|j| want(j.offset_ms(&hourly(), instant)))
            .unwrap()
    }

    #[test]
    fn lateness_is_measured_from_the_jittered_time() {
        // 10:00 jittered by 56-59 s is due at 10:00:5x: found at 10:01:00 it is on time, found
        // at 10:01:10 it is late (more than the 5 s grace after its jittered time).
        let due = at(10, 0);
        let j = jitter_with_offset_at(due, 60, |ms| (56_000..59_000).contains(&ms));
        let s = CatchupSettings {
            jitter: j,
            ..settings(CatchupPolicy::Skip)
        };
        let step = resolve_due(&hourly(), due, at(10, 1), s);
        assert_eq!(step.fire, Some((due, Trigger::Schedule)));
        let step = resolve_due(&hourly(), due, at(10, 1) + chrono::Duration::seconds(10), s);
        assert_eq!(step.fire, None);
        assert_eq!(step.missed, 1);
        // Without jitter the same moments are a minute late.
        let step = resolve_due(&hourly(), due, at(10, 1), settings(CatchupPolicy::Skip));
        assert_eq!(step.fire, None);
    }

    #[test]
    fn an_instant_not_yet_due_after_its_jitter_is_armed_not_missed() {
        // The previous leader fired 09:00; at 10:00:20 the jittered 10:00 (offset > 30 s) is not
        // due yet: it is armed, not caught up.
        let j = jitter_with_offset_at(at(10, 0), 60, |ms| ms > 30_000);
        let s = CatchupSettings {
            jitter: j,
            ..settings(CatchupPolicy::Latest)
        };
        let step = continue_after(
            &hourly(),
            at(9, 0),
            at(10, 0) + chrono::Duration::seconds(20),
            s,
        );
        assert_eq!(
            (step.fire, step.missed, step.next),
            (None, 0, Some(at(10, 0)))
        );
    }

    #[test]
    fn jitter_offsets_are_stable_and_below_the_gap() {
        let j = Jitter {
            seed: 42,
            secs: 7200,
        };
        for h in 0..24 {
            let t = at(h, 0);
            assert_eq!(j.offset_ms(&hourly(), t), j.offset_ms(&hourly(), t));
            assert!(
                j.offset_ms(&hourly(), t) < 3_600_000,
                "below the hour to the next instant"
            );
        }
        assert_eq!(
            Jitter { seed: 42, secs: 0 }.offset_ms(&hourly(), at(1, 0)),
            0
        );
    }

    #[test]
    fn bounds_cut_the_plan() {
        let s = CatchupSettings {
            start: Some(at(11, 0)),
            end: Some(at(12, 0)),
            ..settings(CatchupPolicy::All)
        };
        // Missed 10:00 is before the start (neither fired nor missed); 13:00 is after the end.
        let p = plan(&hourly(), at(9, 0), at(13, 30), s);
        assert_eq!(p.fire, vec![at(11, 0), at(12, 0)]);
        assert_eq!((p.missed, p.next, p.ended), (0, None, true));
        // Before the end the plan continues as usual.
        let p = plan(&hourly(), at(9, 0), at(11, 30), s);
        assert_eq!((p.next, p.ended), (Some(at(12, 0)), false));
        let step = continue_after(&hourly(), at(12, 0), at(15, 0), s);
        assert_eq!((step.fire, step.next, step.ended), (None, None, true));
    }
}
