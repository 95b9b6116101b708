//! A schedule in words: the cron in plain English ([`describe`]) and notes a user should read
//! before relying on it ([`schedule_notes`]): what each daylight-saving change of the coming
//! year does to it, and the scheduled-workflows documentation's advice against firing every minute.
//!
//! Pure like the rest of the layer: the caller passes "now".

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};

use super::fields::{Fields, ALL_DOM, ALL_DOW, DAY_NAMES};
use super::parse::MONTH_LONG;
use super::{parse, zone, CronSchedule};

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// How far ahead [`schedule_notes`] looks for daylight-saving changes.
pub const DST_HORIZON_DAYS: i64 = 366;

/// The schedule in one English sentence, times on the schedule's wall clock:
/// `"At 08:00 every day, America/Los_Angeles time."`, `"Every 15 minutes, UTC."`.
///
/// ```
/// let s = polos::cron::CronSchedule::parse("0 17 * * 1-5", "America/New_York").unwrap();
/// assert_eq!(polos::cron::describe(&s), "At 17:00 on Monday through Friday, America/New_York time.");
/// ```
pub fn describe(schedule: &CronSchedule) -> String {
    let Ok(fields) = parse::parse(schedule.expr()) else {
        return format!("Cron {:?}.", schedule.expr());
    };
    let time = time_phrase(&fields);
    let days = day_phrase(&fields);
    let mut text = match (days.is_empty(), time.contains("every")) {
        (true, true) => time,
        (true, false) => format!("{time} every day"),
        (false, true) => format!("{time}, {days}"),
        (false, false) => format!("{time} {days}"),
    };
    if let Some(first) = text.get(..1) {
        text = first.to_uppercase() + &text[1..];
    }
    let zone = schedule.timezone().name();
    if zone == "UTC" {
        format!("{text}, UTC.")
    } else {
        format!("{text}, {zone} time.")
    }
}

/// Notes to show beside a schedule: the documentation's advice for a schedule that fires every minute,
/// then one note per daylight-saving change in the next [`DST_HORIZON_DAYS`] that touches a
/// wall time the schedule would fire at.
pub fn schedule_notes(schedule: &CronSchedule, now: DateTime<Utc>) -> Vec<String> {
    let mut notes = Vec::new();
    if let Ok(fields) = parse::parse(schedule.expr()) {
        if fields.minutes == ALL_MINUTES {
            notes.push(
                "fires every minute: the documentation advises events or queues instead of a schedule this frequent"
                    .to_string(),
            );
        }
    }
    notes.extend(dst_notes(
        schedule,
        now,
        now + chrono::TimeDelta::days(DST_HORIZON_DAYS),
    ));
    notes
}

/// One note per UTC-offset change of the schedule's zone in `[from, until)` whose skipped or
/// repeated wall times include one the schedule matches, saying what the schedule does then:
/// `"02:30 does not exist on 2027-03-14 in America/New_York: fires at 03:00"`.
pub fn dst_notes(
    schedule: &CronSchedule,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<String> {
    let Ok(fields) = parse::parse(schedule.expr()) else {
        return Vec::new();
    };
    let tz = schedule.timezone();
    let mut notes = Vec::new();
    let mut t = from.timestamp();
    // A few transitions a year; the bound only guards against a zone table gone strange.
    for _ in 0..16 {
        let end = zone::segment(tz, t).end;
        if end.at >= until.timestamp() {
            break;
        }
        t = end.at;
        let (before, after) = (i64::from(end.before), i64::from(end.after));
        if before == after {
            continue;
        }
        let gap = after > before;
        // The walls skipped (spring) or repeated (autumn), as fake-UTC seconds.
        let (lo, hi) = if gap {
            (end.at + before, end.at + after)
        } else {
            (end.at + after, end.at + before)
        };
        let walls: Vec<NaiveDateTime> = (lo..hi)
            .step_by(60)
            .filter_map(|w| DateTime::from_timestamp(w, 0).map(|d| d.naive_utc()))
            .filter(|w| w.second() == 0 && wall_matches(&fields, w))
            .collect();
        let Some(first) = walls.first() else {
            continue;
        };
        let date = first.date();
        let place = format!("on {date} in {}", tz.name());
        let list = wall_list(&walls);
        let many = walls.len() > 1;
        let note = match (gap, schedule.is_interval()) {
            (true, false) => {
                let at = DateTime::from_timestamp(end.at + after, 0)
                    .map_or_else(String::new, |d| d.format("%H:%M").to_string());
                let verb = if many {
                    "do not exist"
                } else {
                    "does not exist"
                };
                let once = if many { "once " } else { "" };
                format!("{list} {verb} {place}: fires {once}at {at}")
            }
            (true, true) => {
                let verb = if many {
                    "do not exist"
                } else {
                    "does not exist"
                };
                format!("{list} {verb} {place}: skipped (interval schedule)")
            }
            (false, interval) => {
                let abbr = |at: i64| {
                    DateTime::from_timestamp(at, 0)
                        .map(|d| d.with_timezone(&tz).format("%Z").to_string())
                        .unwrap_or_default()
                };
                let (first_abbr, second_abbr) = (abbr(end.at - 1), abbr(end.at));
                let verb = if many { "occur twice" } else { "occurs twice" };
                if interval {
                    format!(
                        "{list} {verb} {place}: fires at both ({first_abbr}, then {second_abbr})"
                    )
                } else {
                    format!("{list} {verb} {place}: fires once, at the first ({first_abbr})")
                }
            }
        };
        notes.push(note);
    }
    notes
}

/// Every minute (bits 0..=59).
const ALL_MINUTES: u64 = (1 << 60) - 1;
/// Every hour (bits 0..=23).
const ALL_HOURS: u32 = (1 << 24) - 1;
/// Every month (bits 1..=12).
const ALL_MONTHS: u16 = 0x1FFE;

/// Whether the wall time matches the expression (README, "Cron and time zones").
fn wall_matches(f: &Fields, wall: &NaiveDateTime) -> bool {
    let dom = f.dom & (1 << wall.day()) != 0;
    let dow = f.dow & (1 << wall.weekday().num_days_from_sunday()) != 0;
    let day = if f.days_or() { dom || dow } else { dom && dow };
    f.minutes & (1 << wall.minute()) != 0
        && f.hours & (1 << wall.hour()) != 0
        && f.months & (1 << wall.month()) != 0
        && day
}

/// `02:30`, `02:00 and 02:30`, `02:00, 02:15, 02:30 and 02:45`, or `02:00–02:59 (60 times)`.
fn wall_list(walls: &[NaiveDateTime]) -> String {
    let hm = |w: &NaiveDateTime| w.format("%H:%M").to_string();
    match walls {
        [] => String::new(),
        [only] => hm(only),
        _ if walls.len() <= 4 => join(walls.iter().map(hm).collect()),
        [first, .., last] => format!("{}–{} ({} times)", hm(first), hm(last), walls.len()),
    }
}

fn set_bits(mask: u64, lo: u32, hi: u32) -> Vec<u32> {
    (lo..=hi).filter(|v| mask & (1 << v) != 0).collect()
}

/// Consecutive runs of sorted values.
fn runs(values: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &v in values {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == v => *end = v,
            _ => out.push((v, v)),
        }
    }
    out
}

/// `Some(step)` when `values` are `start, start+step, …` covering the range to `hi` (a `*/n`).
fn step_of(values: &[u32], hi: u32) -> Option<u32> {
    let (&first, &second) = (values.first()?, values.get(1)?);
    let step = second - first;
    let expected: Vec<u32> = (first..=hi).step_by(usize::try_from(step).ok()?).collect();
    (step > 1 && first < step && expected == values).then_some(step)
}

/// `a`, `a and b`, `a, b and c`.
fn join(items: Vec<String>) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn time_phrase(f: &Fields) -> String {
    let minutes = set_bits(f.minutes, 0, 59);
    let hours = set_bits(u64::from(f.hours), 0, 23);
    let all_hours = f.hours == ALL_HOURS;
    let hour_ranges = || {
        join(
            runs(&hours)
                .into_iter()
                .map(|(a, b)| format!("from {a:02}:00 to {b:02}:59"))
                .collect(),
        )
    };
    if f.minutes == ALL_MINUTES {
        return if all_hours {
            "every minute".into()
        } else {
            format!("every minute {}", hour_ranges())
        };
    }
    if let Some(step) = step_of(&minutes, 59).filter(|_| minutes.first() == Some(&0)) {
        return if all_hours {
            format!("every {step} minutes")
        } else {
            format!("every {step} minutes {}", hour_ranges())
        };
    }
    let minute_list = || join(minutes.iter().map(u32::to_string).collect());
    if all_hours {
        let plural = if minutes.len() > 1 { "s" } else { "" };
        return format!("at minute{plural} {} of every hour", minute_list());
    }
    if let (Some(step), [m]) = (step_of(&hours, 23), minutes.as_slice()) {
        let first = hours.first().copied().unwrap_or(0);
        return format!("every {step} hours at minute {m} (from {first:02}:{m:02})");
    }
    if hours.len() * minutes.len() <= 8 {
        let times = hours
            .iter()
            .flat_map(|h| minutes.iter().map(move |m| format!("{h:02}:{m:02}")))
            .collect();
        return format!("at {}", join(times));
    }
    format!(
        "at minutes {} past hours {}",
        minute_list(),
        join(hours.iter().map(|h| format!("{h:02}")).collect())
    )
}

fn named_ranges(values: &[u32], name: impl Fn(u32) -> String) -> String {
    join(
        runs(values)
            .into_iter()
            .map(|(a, b)| match b - a {
                0 => name(a),
                1 => format!("{} and {}", name(a), name(b)),
                _ => format!("{} through {}", name(a), name(b)),
            })
            .collect(),
    )
}

fn day_phrase(f: &Fields) -> String {
    let dom_all = f.dom == ALL_DOM;
    let dow_all = f.dow == ALL_DOW;
    let doms = set_bits(u64::from(f.dom), 1, 31);
    let dows = set_bits(u64::from(f.dow), 0, 6);
    let dom_text = || {
        let plural = if doms.len() > 1 { "s" } else { "" };
        format!(
            "on day{plural} {} of the month",
            named_ranges(&doms, |d| d.to_string())
        )
    };
    let weekday = |d: u32| {
        WEEKDAYS
            .get(d as usize)
            .map_or_else(|| DAY_NAMES[0].to_string(), |s| s.to_string())
    };
    let dow_text = || format!("on {}", named_ranges(&dows, weekday));
    let days = match (dom_all, dow_all) {
        (true, true) => String::new(),
        (false, true) => dom_text(),
        (true, false) => dow_text(),
        (false, false) if f.days_or() => format!("{} or {}", dom_text(), dow_text()),
        (false, false) => format!("{} if it is a {}", dom_text(), named_ranges(&dows, weekday)),
    };
    if f.months == ALL_MONTHS {
        return days;
    }
    let months = set_bits(u64::from(f.months), 1, 12);
    let month = |m: u32| {
        MONTH_LONG
            .get(m as usize)
            .map_or_else(String::new, |s| s.to_string())
    };
    let in_months = format!("in {}", named_ranges(&months, month));
    if days.is_empty() {
        format!("every day {in_months}")
    } else {
        format!("{days} {in_months}")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn text(expr: &str) -> String {
        describe(&CronSchedule::parse(expr, "UTC").unwrap())
    }

    #[test]
    fn the_seeds_patterns_in_words() {
        assert_eq!(text("0 * * * *"), "At minute 0 of every hour, UTC.");
        assert_eq!(text("0 9 * * *"), "At 09:00 every day, UTC.");
        assert_eq!(text("0 8 * * 1"), "At 08:00 on Monday, UTC.");
        assert_eq!(text("*/15 * * * *"), "Every 15 minutes, UTC.");
        assert_eq!(text("0 0 1 * *"), "At 00:00 on day 1 of the month, UTC.");
        assert_eq!(
            text("0 17 * * 1-5"),
            "At 17:00 on Monday through Friday, UTC."
        );
        assert_eq!(
            text("0 */6 * * *"),
            "Every 6 hours at minute 0 (from 00:00), UTC."
        );
        assert_eq!(text("* * * * *"), "Every minute, UTC.");
        assert_eq!(
            text("@yearly"),
            "At 00:00 on day 1 of the month in January, UTC."
        );
        assert_eq!(text("0 9,17 * * *"), "At 09:00 and 17:00 every day, UTC.");
        assert_eq!(
            text("0 12 1 * 1"),
            "At 12:00 on day 1 of the month or on Monday, UTC."
        );
        assert_eq!(
            text("*/5 9-17 * * 1-5"),
            "Every 5 minutes from 09:00 to 17:59, on Monday through Friday, UTC."
        );
        assert_eq!(
            describe(&CronSchedule::parse("0 8 * * *", "America/Los_Angeles").unwrap()),
            "At 08:00 every day, America/Los_Angeles time."
        );
    }

    fn notes(expr: &str, tz: &str, from: DateTime<Utc>) -> Vec<String> {
        let s = CronSchedule::parse(expr, tz).unwrap();
        dst_notes(&s, from, from + chrono::TimeDelta::days(366))
    }

    #[test]
    fn spring_gap_of_a_fixed_time_schedule_matches_the_engine() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 5, 0, 0).unwrap();
        let n = notes("30 2 * * *", "America/New_York", now);
        assert_eq!(
            n,
            ["02:30 does not exist on 2027-03-14 in America/New_York: fires at 03:00"]
        );
        assert_eq!(
            notes("30 1 * * *", "America/New_York", now),
            ["01:30 occurs twice on 2027-11-07 in America/New_York: fires once, at the first (EDT)"]
        );
        let s = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        let fires = s.upcoming(Utc.with_ymd_and_hms(2027, 11, 7, 4, 0, 0).unwrap(), 2);
        assert_eq!(
            fires,
            [
                Utc.with_ymd_and_hms(2027, 11, 7, 5, 30, 0).unwrap(),
                Utc.with_ymd_and_hms(2027, 11, 8, 6, 30, 0).unwrap()
            ]
        );
        // What the note says is what the engine does: one fire at 03:00 EDT (07:00Z).
        let s = CronSchedule::parse("30 2 * * *", "America/New_York").unwrap();
        let before = Utc.with_ymd_and_hms(2027, 3, 13, 12, 0, 0).unwrap();
        assert_eq!(
            s.next_after(before),
            Some(Utc.with_ymd_and_hms(2027, 3, 14, 7, 0, 0).unwrap())
        );
    }

    #[test]
    fn interval_schedules_skip_the_gap_and_repeat_the_fold() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let n = notes("*/15 * * * *", "America/New_York", now);
        assert_eq!(
            n,
            [
                "01:00, 01:15, 01:30 and 01:45 occur twice on 2026-11-01 in America/New_York: fires at both (EDT, then EST)",
                "02:00, 02:15, 02:30 and 02:45 do not exist on 2027-03-14 in America/New_York: skipped (interval schedule)"
            ]
        );
        let n = notes("* * * * *", "Europe/London", now);
        assert_eq!(
            n[0],
            "01:00–01:59 (60 times) occur twice on 2026-10-25 in Europe/London: fires at both (BST, then GMT)"
        );
    }

    #[test]
    fn schedules_away_from_the_change_get_no_note() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        assert!(notes("0 8 * * *", "America/New_York", now).is_empty());
        assert!(notes("30 2 * * *", "UTC", now).is_empty());
        // 02:30 on Sundays only in March: the gap is on a Sunday, so it applies; on Mondays not.
        assert_eq!(notes("30 2 * 3 0", "America/New_York", now).len(), 1);
        assert!(notes("30 2 * 3 1", "America/New_York", now).is_empty());
    }

    #[test]
    fn every_minute_gets_the_seeds_advice() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let s = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let n = schedule_notes(&s, now);
        assert_eq!(n.len(), 1);
        assert!(n[0].contains("events or queues"), "{n:?}");
        let s = CronSchedule::parse("*/5 * * * *", "UTC").unwrap();
        assert!(schedule_notes(&s, now).is_empty());
    }
}
