//! Time zones: IANA names through chrono-tz, and the UTC-offset transitions of a zone.
//!
//! chrono-tz 0.10 answers "what is the offset at instant t" but exposes no transition list, and the
//! DST rules (README, "Cron and time zones") need to know where constant-offset segments end. So the transitions of a
//! (zone, year) are found once — sampling the offset hourly and bisecting to the second — and
//! cached for the life of the process. A year's list is a few entries; 1M schedules over a few
//! hundred zones share them.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

use chrono::{DateTime, Datelike, Offset, TimeZone};
use chrono_tz::Tz;

use super::error::CronError;

/// A change of a zone's UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    /// First instant (Unix seconds) with the new offset.
    pub(crate) at: i64,
    /// Offset (seconds east of UTC) just before `at`.
    pub(crate) before: i32,
    /// Offset from `at` on.
    pub(crate) after: i32,
}

/// The stretch of constant offset that contains an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The offset inside the segment.
    pub(crate) offset: i32,
    /// The transition that started it, if it lies within about a year (older ones cannot matter:
    /// a fold lasts hours).
    pub(crate) start: Option<Transition>,
    /// Where it ends. When the zone has no transition in this year or the next, a pseudo
    /// transition (same offset both sides) at the start of the year after next keeps the walk
    /// bounded.
    pub(crate) end: Transition,
}

/// Parses an IANA zone name (case-sensitive, as chrono-tz and the tz database spell it).
pub(crate) fn parse_timezone(name: &str) -> Result<Tz, CronError> {
    if let Ok(tz) = Tz::from_str(name) {
        return Ok(tz);
    }
    let invalid = |message: String| CronError::InvalidTimezone {
        timezone: name.to_string(),
        message,
    };
    if name.trim().is_empty() {
        return Err(invalid(
            "the time zone is empty; use an IANA name such as \"UTC\" or \"America/New_York\""
                .into(),
        ));
    }
    let wanted = name.trim();
    if let Some(tz) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(wanted))
    {
        return Err(invalid(format!(
            "unknown time zone {name:?}: names are case-sensitive; did you mean {:?}?",
            tz.name()
        )));
    }
    Err(invalid(format!(
        "unknown time zone {name:?}; use an IANA name such as \"UTC\", \"Europe/London\" or \"America/New_York\" (see the tz database list)"
    )))
}

/// The UTC offset of `tz` at Unix second `secs`, in seconds east of UTC.
pub(crate) fn offset_at(tz: Tz, secs: i64) -> i32 {
    match DateTime::from_timestamp(secs, 0) {
        Some(t) => tz
            .offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
        // Outside chrono's range (±262,000 years): no tz data there; the engine stops at year 9999.
        None => 0,
    }
}

/// The constant-offset segment of `tz` that contains Unix second `t`.
pub(crate) fn segment(tz: Tz, t: i64) -> Segment {
    let year = year_of(t);
    let list = transitions(tz, year);
    let idx = list.partition_point(|tr| tr.at <= t);
    let start = match idx {
        0 => transitions(tz, year - 1).last().copied(),
        i => list.get(i - 1).copied(),
    };
    let offset = match start {
        Some(tr) => tr.after,
        None => offset_at(tz, t),
    };
    let end = match list.get(idx) {
        Some(tr) => *tr,
        None => match transitions(tz, year + 1).first() {
            Some(tr) => *tr,
            None => Transition {
                at: year_start(year + 2),
                before: offset,
                after: offset,
            },
        },
    };
    Segment { offset, start, end }
}

fn year_of(t: i64) -> i32 {
    DateTime::from_timestamp(t, 0).map_or(1970, |d| d.year())
}

fn year_start(year: i32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(year, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(i64::MAX / 2, |d| d.and_utc().timestamp())
}

type Cache = RwLock<HashMap<(Tz, i32), Arc<[Transition]>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| RwLock::new(HashMap::new()))
}

/// The transitions of `tz` with `at` in `year` (UTC), in order; computed once per process.
pub(crate) fn transitions(tz: Tz, year: i32) -> Arc<[Transition]> {
    // A poisoned lock only means another thread panicked mid-insert of a complete value; the map
    // is still consistent, so keep using it.
    if let Some(list) = cache()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(tz, year))
    {
        return list.clone();
    }
    let list: Arc<[Transition]> = compute_transitions(tz, year).into();
    cache()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry((tz, year))
        .or_insert(list)
        .clone()
}

/// Sampling step. A change and its reversal inside one step would be missed; tz data has none
/// that close (DST changes are months apart), and `every_zone_matches_an_hourly_scan` checks it.
const STEP: i64 = 3 * 3600;

fn compute_transitions(tz: Tz, year: i32) -> Vec<Transition> {
    // The engine never looks past year 9999; before year 1 every zone is on constant local mean
    // time. Bounding here keeps the scan finite near chrono's limits.
    if !(1..=10_001).contains(&year) {
        return Vec::new();
    }
    let first = year_start(year);
    let end = year_start(year + 1);
    let mut out = Vec::new();
    // Start one second early so a transition exactly at midnight UTC on January 1 is seen.
    let mut a = first - 1;
    let mut off_a = offset_at(tz, a);
    while a < end - 1 {
        let b = (a + STEP).min(end - 1);
        let off_b = offset_at(tz, b);
        if off_b == off_a {
            a = b;
            continue;
        }
        // Bisect for the first second in (a, b] whose offset differs from off_a.
        let (mut lo, mut hi) = (a, b);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if offset_at(tz, mid) == off_a {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let after = offset_at(tz, hi);
        out.push(Transition {
            at: hi,
            before: off_a,
            after,
        });
        // Continue from the transition: a second change before b is then still found.
        a = hi;
        off_a = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        chrono::Utc
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .timestamp()
    }

    #[test]
    fn new_york_2026() {
        let list = transitions(Tz::America__New_York, 2026);
        assert_eq!(
            &*list,
            &[
                Transition {
                    at: secs(2026, 3, 8, 7, 0),
                    before: -5 * 3600,
                    after: -4 * 3600
                },
                Transition {
                    at: secs(2026, 11, 1, 6, 0),
                    before: -4 * 3600,
                    after: -5 * 3600
                },
            ]
        );
    }

    #[test]
    fn lord_howe_half_hour_and_chatham() {
        let list = transitions(Tz::Australia__Lord_Howe, 2026);
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|t| (t.after - t.before).abs() == 1800));
        let list = transitions(Tz::Pacific__Chatham, 2026);
        assert_eq!(list.len(), 2);
        assert!(list
            .iter()
            .all(|t| [45 * 60 + 12 * 3600, 45 * 60 + 13 * 3600].contains(&t.after)));
    }

    #[test]
    fn utc_has_pseudo_segments() {
        assert!(transitions(Tz::UTC, 2026).is_empty());
        let s = segment(Tz::UTC, secs(2026, 5, 1, 0, 0));
        assert_eq!(s.offset, 0);
        assert_eq!(s.end.at, secs(2028, 1, 1, 0, 0));
        assert_eq!(s.end.before, s.end.after);
    }

    #[test]
    fn segment_around_transitions() {
        let tz = Tz::Europe__London;
        let s = segment(tz, secs(2026, 1, 10, 0, 0));
        assert_eq!(s.offset, 0);
        assert_eq!(s.end.at, secs(2026, 3, 29, 1, 0));
        assert_eq!(s.start.map(|t| t.at), Some(secs(2025, 10, 26, 1, 0)));
        let s = segment(tz, secs(2026, 3, 29, 1, 0));
        assert_eq!(s.offset, 3600);
        assert_eq!(s.start.map(|t| t.at), Some(secs(2026, 3, 29, 1, 0)));
        let s = segment(tz, secs(2026, 12, 31, 23, 0));
        assert_eq!(s.end.at, secs(2027, 3, 28, 1, 0));
    }

    #[test]
    fn every_zone_matches_an_hourly_scan() {
        for tz in chrono_tz::TZ_VARIANTS {
            for year in [1942, 1975, 2011, 2026] {
                let (start, end) = (secs(year, 1, 1, 0, 0), secs(year + 1, 1, 1, 0, 0));
                // Compare inside the hourly grid only: a change in the year's last hour cannot
                // be placed in a year by an hourly scan.
                let list: Vec<Transition> = transitions(tz, year)
                    .iter()
                    .copied()
                    .filter(|t| t.at > start && t.at <= end - 3600)
                    .collect();
                let mut hourly = Vec::new();
                let mut u = start;
                while u < end - 3600 {
                    if offset_at(tz, u) != offset_at(tz, u + 3600) {
                        hourly.push(u);
                    }
                    u += 3600;
                }
                assert_eq!(list.len(), hourly.len(), "{tz} {year}: {list:?}");
                for (tr, h) in list.iter().zip(hourly) {
                    assert!(tr.at > h && tr.at <= h + 3600, "{tz} {year}: {tr:?}");
                    assert_eq!(offset_at(tz, tr.at - 1), tr.before);
                    assert_eq!(offset_at(tz, tr.at), tr.after);
                }
            }
        }
    }

    #[test]
    fn timezone_names() {
        assert_eq!(parse_timezone("UTC").unwrap(), Tz::UTC);
        assert_eq!(parse_timezone("Etc/GMT+5").unwrap(), Tz::Etc__GMTPlus5);
        assert_eq!(
            parse_timezone("America/New_York").unwrap(),
            Tz::America__New_York
        );
        let e = parse_timezone("america/new_york").unwrap_err();
        assert!(matches!(e, CronError::InvalidTimezone { .. }), "{e:?}");
        assert!(
            e.message().contains("did you mean \"America/New_York\"?"),
            "{e}"
        );
        let e = parse_timezone("Mars/Olympus").unwrap_err();
        assert!(e.message().contains("\"Mars/Olympus\""), "{e}");
        assert!(e.message().contains("IANA"), "{e}");
        assert!(parse_timezone("").unwrap_err().message().contains("empty"));
    }
}
