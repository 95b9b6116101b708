//! [`CronSchedule`]: a parsed expression bound to a zone, and `next_after` with the DST rules.
//!
//! Time is walked as segments of constant UTC offset (see [`zone::segment`]). Inside a segment
//! with offset `o` ending at transition `E`, the walls `[start, E+o)` occur once each, so the
//! first matching wall `W` is the fire `W − o`. At the end of a segment:
//! - spring gap (`o' > o`, walls `[E+o, E+o')` never occur): a fixed-time schedule with a matching
//!   wall in the gap fires once at `E`, the first instant after it; interval schedules skip them;
//! - autumn fold (`o' < o`, walls `[E+o', E+o)` occur again): interval schedules match them again;
//!   fixed-time schedules only match walls past the highest wall already seen (`E+o`).
//!
//! saffron enumerates matching walls, fed "wall clock as fake UTC" times.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::error::CronError;
use super::fields::Fields;
use super::saffron_expr::{compile, Compiled};
use super::{parse, zone};

/// First second of year 10000 (wall or UTC): nothing is searched beyond it.
const HORIZON: i64 = 253_402_300_800;
const DAY: i64 = 86_400;

/// A validated cron expression bound to a time zone.
///
/// Small (about 80 bytes), `Clone`, `Send + Sync` and comparable, so a scheduler can keep one per
/// schedule and intern identical `(expr, timezone)` pairs.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use polos::cron::CronSchedule;
///
/// let s = CronSchedule::parse("30 2 * * *", "America/New_York").unwrap();
/// let after = Utc.with_ymd_and_hms(2026, 3, 7, 12, 0, 0).unwrap();
/// // 02:30 does not exist on 2026-03-08: the fixed-time job runs at 03:00 EDT.
/// assert_eq!(
///     s.upcoming(after, 2),
///     vec![
///         Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap(),
///         Utc.with_ymd_and_hms(2026, 3, 9, 6, 30, 0).unwrap(),
///     ]
/// );
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CronSchedule {
    /// The expression as given, for display and for records.
    expr: Box<str>,
    /// The zone whose wall clock the expression is read in.
    tz: Tz,
    /// Our exact matching sets; saffron's may be a superset.
    fields: Fields,
    /// saffron's compiled form (enumerates candidate walls quickly).
    compiled: Compiled,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expr", &self.expr)
            .field("timezone", &self.tz.name())
            .finish()
    }
}

impl CronSchedule {
    /// Parses and validates `expr` in the IANA zone `timezone` (case-sensitive, e.g. `"UTC"`,
    /// `"America/New_York"`, `"Etc/GMT+5"`).
    ///
    /// Errors name the field, the value and what is allowed
    /// (`day-of-week 8 is out of range 0-7 in "0 0 * * 8"`), or the zone and a fix.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, CronError> {
        let tz = zone::parse_timezone(timezone)?;
        let fields = parse::parse(expr)?;
        let compiled = compile(&fields).map_err(|message| CronError::InvalidCron {
            expr: expr.to_string(),
            message,
        })?;
        Ok(CronSchedule {
            expr: expr.into(),
            tz,
            fields,
            compiled,
        })
    }

    /// The next fire instant strictly after `after` (whole seconds), following the DST rules of
    /// the README's "Cron and time zones". `None` only when nothing matches before year 10000.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after_secs(after.timestamp())
            .and_then(|s| DateTime::from_timestamp(s, 0))
    }

    /// The next `n` fire instants strictly after `after`, each computed from the previous one.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.fires_after(after).take(n).collect()
    }

    /// Every fire instant strictly after `after`, in order (ends only at the horizon).
    pub fn fires_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut cursor = Some(after);
        std::iter::from_fn(move || {
            let next = self.next_after(cursor?);
            cursor = next;
            next
        })
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether this is an *interval* schedule (minute or hour field starts with `*`): it skips
    /// wall times in a spring gap and fires at both occurrences in an autumn fold. Otherwise it
    /// is *fixed-time*: gap times fire once at the end of the gap, fold times once.
    pub fn is_interval(&self) -> bool {
        self.fields.is_interval()
    }

    fn next_after_secs(&self, t: i64) -> Option<i64> {
        if t >= HORIZON {
            return None;
        }
        let fixed = !self.fields.is_interval();
        let mut seg = zone::segment(self.tz, t);
        // Exclusive lower bound on the wall clock of the next fire.
        let mut low = t + i64::from(seg.offset);
        if fixed {
            // Just after a fold, walls up to the pre-fold wall already happened once.
            if let Some(start) = seg.start.filter(|s| s.before > s.after) {
                low = low.max(start.at + i64::from(start.before) - 1);
            }
        }
        loop {
            let o = i64::from(seg.offset);
            let end = seg.end;
            let end_wall = (end.at + o).min(HORIZON);
            if let Some(wall) = self.next_wall(low, end_wall) {
                return Some(wall - o);
            }
            if end_wall >= HORIZON {
                return None;
            }
            let (before, after) = (i64::from(end.before), i64::from(end.after));
            // Spring gap: a fixed-time wall that never occurs fires once, when the gap ends.
            if fixed
                && after > before
                && self
                    .next_wall(end.at + before - 1, end.at + after)
                    .is_some()
            {
                return Some(end.at);
            }
            // Next segment. Fixed-time: `low` never goes back, so a wall fires only the first
            // time it occurs (a fold's repeated walls are skipped). Interval: every wall of the
            // new segment counts, including repeated ones.
            low = if fixed {
                low.max(end.at + before.max(after) - 1)
            } else {
                end.at + after - 1
            };
            seg = zone::segment(self.tz, end.at);
        }
    }

    /// The smallest matching wall time (fake-UTC seconds) `> low` and `< limit`.
    fn next_wall(&self, low: i64, limit: i64) -> Option<i64> {
        let mut low = low;
        while low < limit {
            let from = DateTime::from_timestamp(low, 0)?;
            let wall = self.compiled.cron.next_after(from)?.timestamp();
            if wall >= limit {
                return None;
            }
            if !self.compiled.dow_filter || self.weekday_matches(wall) {
                return Some(wall);
            }
            // Wrong weekday: no minute of this day can match, resume at its last second.
            low = wall - wall.rem_euclid(DAY) + DAY - 1;
        }
        None
    }

    fn weekday_matches(&self, wall: i64) -> bool {
        // 1970-01-01 was a Thursday (4 with Sunday = 0).
        let weekday = (wall.div_euclid(DAY) + 4).rem_euclid(7);
        self.fields.dow & (1 << weekday) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::dst_tests::{next as up, utc as at};

    #[test]
    fn spring_gap_fixed_fires_at_gap_end() {
        assert_eq!(
            up("30 2 * * *", "America/New_York", at(2026, 3, 7, 12, 0), 2),
            vec![at(2026, 3, 8, 7, 0), at(2026, 3, 9, 6, 30)]
        );
    }

    #[test]
    fn autumn_fold_interval_fires_twice() {
        assert_eq!(
            up("0 * * * *", "America/New_York", at(2026, 11, 1, 4, 30), 4),
            vec![
                at(2026, 11, 1, 5, 0),
                at(2026, 11, 1, 6, 0),
                at(2026, 11, 1, 7, 0),
                at(2026, 11, 1, 8, 0)
            ]
        );
    }

    #[test]
    fn autumn_fold_fixed_fires_once() {
        assert_eq!(
            up("30 1 * * *", "America/New_York", at(2026, 10, 31, 12, 0), 2),
            vec![at(2026, 11, 1, 5, 30), at(2026, 11, 2, 6, 30)]
        );
        // Starting inside the second 01:xx hour must not fire the second occurrence either.
        assert_eq!(
            up("30 1 * * *", "America/New_York", at(2026, 11, 1, 6, 10), 1),
            vec![at(2026, 11, 2, 6, 30)]
        );
    }

    #[test]
    fn strictly_after_and_sub_seconds() {
        let s = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let t = at(2026, 1, 1, 0, 0);
        assert_eq!(s.next_after(t), Some(at(2026, 1, 1, 0, 1)));
        let t = t + chrono::Duration::milliseconds(500);
        assert_eq!(s.next_after(t), Some(at(2026, 1, 1, 0, 1)));
        let t = at(2026, 1, 1, 0, 0) - chrono::Duration::milliseconds(1);
        assert_eq!(s.next_after(t), Some(at(2026, 1, 1, 0, 0)));
    }

    #[test]
    fn dom_dow_or_versus_and() {
        // OR: the 1st of the month, and every Monday. 2026-06-01 is a Monday.
        assert_eq!(
            up("0 0 1 * MON", "UTC", at(2026, 6, 1, 12, 0), 4),
            vec![
                at(2026, 6, 8, 0, 0),
                at(2026, 6, 15, 0, 0),
                at(2026, 6, 22, 0, 0),
                at(2026, 6, 29, 0, 0)
            ]
        );
        assert_eq!(
            up("0 0 1 * MON", "UTC", at(2026, 6, 29, 12, 0), 2),
            vec![at(2026, 7, 1, 0, 0), at(2026, 7, 6, 0, 0)]
        );
        // AND: odd days that are Mondays.
        assert_eq!(
            up("0 0 */2 * MON", "UTC", at(2026, 6, 1, 12, 0), 3),
            vec![
                at(2026, 6, 15, 0, 0),
                at(2026, 6, 29, 0, 0),
                at(2026, 7, 13, 0, 0)
            ]
        );
        // `*/1` is unrestricted for the rule: AND with a full set = weekdays only.
        assert_eq!(
            up("0 0 * * */7", "UTC", at(2026, 6, 1, 12, 0), 1),
            vec![at(2026, 6, 7, 0, 0)]
        );
    }

    #[test]
    fn feb_29_on_a_sunday_is_found_years_ahead() {
        // AND mode (weekday starts with `*`): the next February 29 that is a Sunday.
        let s = CronSchedule::parse("0 12 29 2 */7", "UTC").unwrap();
        let next = s.next_after(at(2026, 1, 1, 0, 0)).unwrap();
        assert_eq!(next, at(2032, 2, 29, 12, 0));
    }

    #[test]
    fn offsets_with_minutes() {
        // Nepal is +05:45 all year.
        assert_eq!(
            up("0 9 * * *", "Asia/Kathmandu", at(2026, 1, 1, 0, 0), 1),
            vec![at(2026, 1, 1, 3, 15)]
        );
        assert_eq!(
            up("0 9 * * *", "Etc/GMT+5", at(2026, 1, 1, 0, 0), 1),
            vec![at(2026, 1, 1, 14, 0)]
        );
    }

    #[test]
    fn horizon_ends_iteration() {
        let s = CronSchedule::parse("@yearly", "UTC").unwrap();
        assert_eq!(s.next_after(at(9999, 6, 1, 0, 0)), None);
        assert_eq!(
            s.next_after(at(9998, 6, 1, 0, 0)),
            Some(at(9999, 1, 1, 0, 0))
        );
    }

    #[test]
    fn extreme_instants_terminate() {
        let s = CronSchedule::parse("* * * * *", "America/New_York").unwrap();
        assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None);
        // Far before any tz data: it terminates with a later instant, still a whole minute of
        // the zone's earliest offset (New York's local mean time, UTC-4:56:02, so second :02 in
        // UTC), and the series goes on a minute at a time from there.
        let first = s.next_after(DateTime::<Utc>::MIN_UTC).unwrap();
        assert!(first > DateTime::<Utc>::MIN_UTC);
        assert_eq!(first.timestamp().rem_euclid(60), 2, "{first}");
        assert_eq!(
            s.next_after(first),
            Some(first + chrono::Duration::minutes(1))
        );
    }

    #[test]
    fn accessors_and_size() {
        let s = CronSchedule::parse("@daily", "Europe/London").unwrap();
        assert_eq!(s.timezone(), Tz::Europe__London);
        assert!(!s.is_interval());
        // Midnight on London's wall clock: 23:00 UTC in summer (BST), 00:00 UTC in winter.
        assert_eq!(
            s.next_after(at(2026, 6, 1, 12, 0)),
            Some(at(2026, 6, 1, 23, 0))
        );
        assert_eq!(
            s.next_after(at(2026, 12, 1, 12, 0)),
            Some(at(2026, 12, 2, 0, 0))
        );
        // `expr` is the text as the user wrote it, not the normalised dialect the engine runs
        // (where Sunday is 1, not 7), since `get` and `list` show it back.
        let sunday = CronSchedule::parse("0 9 * * 7", "UTC").unwrap();
        assert_eq!(sunday.expr(), "0 9 * * 7");
        assert_eq!(
            sunday.next_after(at(2026, 11, 30, 0, 0)),
            Some(at(2026, 12, 6, 9, 0)),
            "2026-12-06 is a Sunday"
        );
        println!(
            "size_of::<CronSchedule>() = {}",
            std::mem::size_of::<CronSchedule>()
        );
        assert!(
            std::mem::size_of::<CronSchedule>() <= 96,
            "{}",
            std::mem::size_of::<CronSchedule>()
        );
        fn send_sync<T: Send + Sync + Clone>() {}
        send_sync::<CronSchedule>();
    }
}
