//! DST property tests against an independent oracle.
//!
//! The oracle uses only chrono-tz and plain field sets (its own tiny parser for the subset the
//! tests write), never the engine's parser, zone segments or saffron. It walks UTC minutes and
//! applies the README's "Cron and time zones" rules literally: interval schedules fire at every real minute whose wall time
//! matches; fixed-time schedules fire at a matching wall only the first time that wall occurs
//! (wall > the highest wall seen so far), and at the first instant after a spring gap when a
//! matching wall was skipped by it.

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::CronSchedule;

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Plain field sets of an expression, built by the oracle's own parser.
#[derive(Debug, Clone)]
struct Spec {
    minutes: u64,
    hours: u64,
    dom: u64,
    months: u64,
    dow: u64,
    days_or: bool,
    interval: bool,
}

fn set(text: &str, lo: u32, hi: u32, modulo: u32) -> u64 {
    let mut bits = 0u64;
    for item in text.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, s.parse::<u32>().unwrap()),
            None => (item, 1),
        };
        let (a, b) = if base == "*" {
            (lo, hi)
        } else if let Some((a, b)) = base.split_once('-') {
            (a.parse().unwrap(), b.parse().unwrap())
        } else {
            let a: u32 = base.parse().unwrap();
            (a, if item.contains('/') { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            bits |= 1 << (v % modulo);
            v += step;
        }
    }
    bits
}

impl Spec {
    fn new(expr: &str) -> Spec {
        let f: Vec<&str> = expr.split_whitespace().collect();
        assert_eq!(f.len(), 5, "oracle expressions are 5 plain fields: {expr}");
        Spec {
            minutes: set(f[0], 0, 59, 64),
            hours: set(f[1], 0, 23, 64),
            dom: set(f[2], 1, 31, 64),
            months: set(f[3], 1, 12, 64),
            dow: set(f[4], 0, 7, 7),
            days_or: !f[2].starts_with('*') && !f[4].starts_with('*'),
            interval: f[0].starts_with('*') || f[1].starts_with('*'),
        }
    }

    fn matches(&self, w: NaiveDateTime) -> bool {
        let has = |bits: u64, v: u32| bits & (1 << v) != 0;
        let dom = has(self.dom, w.day());
        let dow = has(self.dow, w.weekday().num_days_from_sunday());
        let day = if self.days_or { dom || dow } else { dom && dow };
        w.second() == 0
            && has(self.minutes, w.minute())
            && has(self.hours, w.hour())
            && has(self.months, w.month())
            && day
    }
}

fn offset(tz: Tz, u: i64) -> i64 {
    let t = Utc.timestamp_opt(u, 0).unwrap();
    i64::from(t.with_timezone(&tz).offset().fix().local_minus_utc())
}

fn naive(wall: i64) -> NaiveDateTime {
    DateTime::from_timestamp(wall, 0).unwrap().naive_utc()
}

/// The fires in `(from, to]` by brute force over UTC minutes.
fn oracle(tz: Tz, spec: &Spec, from: i64, to: i64) -> Vec<i64> {
    // Start a day early so "highest wall seen" covers any fold before `from`.
    let start = from - from.rem_euclid(MINUTE) - DAY;
    let mut highest = i64::MIN;
    let mut prev_off = offset(tz, start - MINUTE);
    let mut out = Vec::new();
    let mut u = start;
    while u <= to {
        let off = offset(tz, u);
        let wall = u + off;
        let mut fire = spec.matches(naive(wall)) && (spec.interval || wall > highest);
        if !spec.interval && off > prev_off {
            // Walls [u + prev_off, u + off) were skipped by the gap.
            let mut w = u + prev_off;
            while w < u + off {
                fire |= spec.matches(naive(w));
                w += MINUTE;
            }
        }
        highest = highest.max(wall);
        prev_off = off;
        if fire && u > from {
            out.push(u);
        }
        u += MINUTE;
    }
    out
}

fn engine(tz: Tz, expr: &str, from: i64, to: i64) -> Vec<i64> {
    let s = CronSchedule::parse(expr, tz.name()).unwrap();
    let mut out = Vec::new();
    let mut t = DateTime::from_timestamp(from, 0).unwrap();
    while let Some(next) = s.next_after(t) {
        assert!(next > t, "{expr} in {tz}: {next} after {t}");
        if next.timestamp() > to {
            break;
        }
        out.push(next.timestamp());
        t = next;
    }
    out
}

fn fmt(list: &[i64]) -> Vec<String> {
    list.iter()
        .map(|u| DateTime::from_timestamp(*u, 0).unwrap().to_rfc3339())
        .collect()
}

/// Offset changes of `tz` in `year`, found independently by hourly scanning (test only).
fn changes(tz: Tz, year: i32) -> Vec<i64> {
    let start = Utc
        .with_ymd_and_hms(year, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let end = Utc
        .with_ymd_and_hms(year + 1, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let mut out = Vec::new();
    let mut u = start;
    while u < end {
        if offset(tz, u) != offset(tz, u + HOUR) {
            out.push(u + HOUR);
        }
        u += HOUR;
    }
    out
}

const ZONES: [Tz; 8] = [
    Tz::America__New_York,
    Tz::Europe__London,
    Tz::Australia__Sydney,
    Tz::Australia__Lord_Howe,
    Tz::America__Santiago,
    Tz::America__Havana,
    Tz::Pacific__Chatham,
    Tz::Asia__Kathmandu,
];

const EXPRS: [&str; 24] = [
    "0 * * * *",
    "*/15 * * * *",
    "*/30 * * * *",
    "30 * * * *",
    "45 * * * *",
    "0 0 * * *",
    "30 0 * * *",
    "0 1 * * *",
    "30 1 * * *",
    "45 1 * * *",
    "0 2 * * *",
    "15 2 * * *",
    "30 2 * * *",
    "45 2 * * *",
    "0 3 * * *",
    "15 3 * * *",
    "50 3 * * *",
    "0,15,30,45 2 * * *",
    "*/10 2 * * *",
    "0 23 * * *",
    "30 23 * * *",
    "0 0 * * 0",
    "0 */2 * * *",
    "5 4 1,15 * 6",
];

#[test]
fn every_transition_matches_the_oracle() {
    for tz in ZONES {
        for year in [2026, 2027] {
            for change in changes(tz, year) {
                let (from, to) = (change - 2 * DAY, change + 2 * DAY);
                for expr in EXPRS {
                    let want = oracle(tz, &Spec::new(expr), from, to);
                    let got = engine(tz, expr, from, to);
                    assert_eq!(
                        fmt(&got),
                        fmt(&want),
                        "{expr:?} in {tz} around {}",
                        fmt(&[change])[0]
                    );
                    // The fires are a fixed set: starting anywhere near the transition (inside a
                    // gap or a fold too) must give the first of them after the start.
                    let schedule = CronSchedule::parse(expr, tz.name()).unwrap();
                    let mut s = change - 3 * HOUR;
                    while s < change + 3 * HOUR {
                        let first = want.iter().copied().find(|w| *w > s);
                        let got = schedule
                            .next_after(DateTime::from_timestamp(s, 0).unwrap())
                            .map(|d| d.timestamp());
                        match first {
                            Some(_) => {
                                assert_eq!(got, first, "{expr:?} in {tz} after {}", fmt(&[s])[0])
                            }
                            None => assert!(
                                got.is_none_or(|g| g > to),
                                "{expr:?} in {tz} after {}",
                                fmt(&[s])[0]
                            ),
                        }
                        s += 7 * MINUTE + 13;
                    }
                }
            }
        }
    }
}

#[test]
fn the_zones_have_the_transitions_we_mean_to_test() {
    for tz in &ZONES[..7] {
        assert_eq!(changes(*tz, 2026).len(), 2, "{tz}");
    }
    assert!(changes(Tz::Asia__Kathmandu, 2026).is_empty());
}

/// The UTC instant `y-mo-d h:mi:00Z` (also used by the tests in `schedule.rs`).
pub(super) fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// The first `n` fires of `expr` in `tz` after `after` (also used by the tests in `schedule.rs`).
pub(super) fn next(expr: &str, tz: &str, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    CronSchedule::parse(expr, tz).unwrap().upcoming(after, n)
}

#[test]
fn midnight_gap_fires_at_first_instant_after_it() {
    // Santiago 2026-09-06: 00:00 -04 becomes 01:00 -03 (04:00Z). Midnight does not exist.
    assert_eq!(
        next("0 0 * * *", "America/Santiago", utc(2026, 9, 5, 12, 0), 2),
        vec![utc(2026, 9, 6, 4, 0), utc(2026, 9, 7, 3, 0)]
    );
    // Havana 2026-03-08: 00:00 CST becomes 01:00 CDT (05:00Z).
    assert_eq!(
        next("0 0 * * *", "America/Havana", utc(2026, 3, 7, 12, 0), 2),
        vec![utc(2026, 3, 8, 5, 0), utc(2026, 3, 9, 4, 0)]
    );
    // An interval schedule just skips the missing hour.
    assert_eq!(
        next("*/30 * * * *", "America/Havana", utc(2026, 3, 8, 4, 0), 3),
        vec![
            utc(2026, 3, 8, 4, 30),
            utc(2026, 3, 8, 5, 0),
            utc(2026, 3, 8, 5, 30)
        ]
    );
}

#[test]
fn half_hour_shift_in_lord_howe() {
    // 2026-10-04 02:00 +10:30 becomes 02:30 +11 (15:30Z on the 3rd): 02:15 fires at 02:30.
    assert_eq!(
        next(
            "15 2 * * *",
            "Australia/Lord_Howe",
            utc(2026, 10, 3, 0, 0),
            2
        ),
        vec![utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)]
    );
    // 2026-04-05 02:00 +11 becomes 01:30 +10:30: 01:45 happens twice, fires once.
    assert_eq!(
        next(
            "45 1 * * *",
            "Australia/Lord_Howe",
            utc(2026, 4, 4, 0, 0),
            2
        ),
        vec![utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]
    );
    // ... and an hourly-at-:45 job fires at both.
    assert_eq!(
        next(
            "45 * * * *",
            "Australia/Lord_Howe",
            utc(2026, 4, 4, 14, 0),
            3
        ),
        vec![
            utc(2026, 4, 4, 14, 45),
            utc(2026, 4, 4, 15, 15),
            utc(2026, 4, 4, 16, 15)
        ]
    );
}

#[test]
fn chatham_quarter_hour_offsets() {
    // 2026-09-27 02:45 +12:45 becomes 03:45 +13:45 (14:00Z on the 26th).
    assert_eq!(
        next("0 3 * * *", "Pacific/Chatham", utc(2026, 9, 26, 0, 0), 2),
        vec![utc(2026, 9, 26, 14, 0), utc(2026, 9, 27, 13, 15)]
    );
}

#[test]
fn london_and_sydney() {
    // London 2026-03-29 01:00 GMT becomes 02:00 BST.
    assert_eq!(
        next("30 1 * * *", "Europe/London", utc(2026, 3, 28, 12, 0), 2),
        vec![utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    );
    // Sydney 2026-04-05 03:00 AEDT becomes 02:00 AEST: 02:30 once (first occurrence, AEDT).
    assert_eq!(
        next("30 2 * * *", "Australia/Sydney", utc(2026, 4, 4, 0, 0), 2),
        vec![utc(2026, 4, 4, 15, 30), utc(2026, 4, 5, 16, 30)]
    );
}

// ---- properties over random expressions, zones and start instants ----

fn field(lo: u32, hi: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (1..=hi).prop_map(|n| format!("*/{n}")),
        proptest::collection::vec(lo..=hi, 1..4).prop_map(|v| v
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")),
        (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        (lo..=hi, 1..=hi).prop_map(|(a, n)| format!("{a}/{n}")),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    (
        field(0, 59),
        field(0, 23),
        prop_oneof![3 => Just("*".to_string()), 1 => field(1, 31)],
        prop_oneof![3 => Just("*".to_string()), 1 => field(1, 12)],
        prop_oneof![2 => Just("*".to_string()), 1 => field(0, 7)],
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
}

fn zone() -> impl Strategy<Value = Tz> {
    proptest::sample::select(ZONES.to_vec())
}

/// A start instant in 2026–2027, half the time within two days of a transition.
fn start(tz: Tz) -> impl Strategy<Value = i64> {
    let base = utc(2026, 1, 1, 0, 0).timestamp();
    let near: Vec<i64> = [2026, 2027].iter().flat_map(|y| changes(tz, *y)).collect();
    let near = if near.is_empty() { vec![base] } else { near };
    prop_oneof![
        (0..2 * 365 * DAY).prop_map(move |d| base + d),
        (proptest::sample::select(near), -2 * DAY..2 * DAY).prop_map(|(c, d)| c + d),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn next_after_is_the_first_oracle_fire(
        expr in expression(),
        (tz, t) in zone().prop_flat_map(|tz| (Just(tz), start(tz))),
    ) {
        let spec = Spec::new(&expr);
        let schedule = match CronSchedule::parse(&expr, tz.name()) {
            Ok(s) => s,
            Err(e) => {
                // Only never-firing day/month combinations are rejected among generated ones.
                prop_assert!(e.message().contains("never"), "{expr}: {e}");
                let possible = (1..=12u32).filter(|m| spec.months & (1 << m) != 0).any(|m| {
                    let max = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize];
                    (1..=max).any(|d| spec.dom & (1 << d) != 0)
                });
                prop_assert!(!(possible || (spec.days_or && spec.dow != 0)), "{expr}: {e}");
                return Ok(());
            }
        };
        let window = 2 * DAY;
        let want = oracle(tz, &spec, t, t + window).first().copied();
        let got = schedule.next_after(DateTime::from_timestamp(t, 0).unwrap()).map(|d| d.timestamp());
        match want {
            Some(w) => prop_assert_eq!(got, Some(w), "{} in {} after {}", expr, tz, t),
            None => prop_assert!(got.is_none_or(|g| g > t + window), "{} in {} after {}: {:?} not in oracle", expr, tz, t, got),
        }
    }

    #[test]
    fn fires_strictly_increase(
        expr in expression(),
        (tz, t) in zone().prop_flat_map(|tz| (Just(tz), start(tz))),
    ) {
        let Ok(schedule) = CronSchedule::parse(&expr, tz.name()) else { return Ok(()) };
        let mut prev = DateTime::from_timestamp(t, 0).unwrap();
        for fire in schedule.fires_after(prev).take(500) {
            prop_assert!(fire > prev, "{} in {}: {} after {}", expr, tz, fire, prev);
            prev = fire;
        }
    }
}
