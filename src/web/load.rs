//! The load ahead: how many fires fall in each minute of the next 24 hours and each hour of the
//! next 7 days, computed from the catalog's (cron, zone) groups, and drawn as inline SVG.

use std::fmt::Write;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::catalog::Group;
use super::html::esc;

/// Minutes in the fine chart.
pub const MINUTES: usize = 24 * 60;
/// Hours in the coarse chart.
pub const HOURS: usize = 7 * 24;
/// Most `next_after` steps one computation may take (about half a second); beyond it the chart
/// is marked partial. Only crons that fire very often and differ from each other get near it.
const BUDGET: usize = 2_000_000;

/// Fires per minute and per hour from a starting instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadAhead {
    /// Start of the first minute bucket (the current minute).
    pub minute_start: DateTime<Utc>,
    /// Fires in each of the next 24 × 60 minutes (`MINUTES`).
    pub per_minute: Vec<u64>,
    /// Start of the first hour bucket (the current hour).
    pub hour_start: DateTime<Utc>,
    /// Fires in each of the next 7 × 24 hours (`HOURS`).
    pub per_hour: Vec<u64>,
    /// The budget ran out: later buckets may be undercounted.
    pub partial: bool,
}

impl LoadAhead {
    /// Counts the fires after `now` of every group, weighted by its active schedules.
    pub fn compute(groups: &[Group], now: DateTime<Utc>) -> LoadAhead {
        let minute_start = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let hour_start = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
        let mut load = LoadAhead {
            minute_start,
            per_minute: vec![0; MINUTES],
            hour_start,
            per_hour: vec![0; HOURS],
            partial: false,
        };
        let hour_end = hour_start + TimeDelta::hours(HOURS as i64);
        let mut steps = 0usize;
        for group in groups {
            let weight = group.active as u64;
            for t in group.cron.fires_after(now) {
                if t >= hour_end {
                    break;
                }
                steps += 1;
                if steps > BUDGET {
                    load.partial = true;
                    return load;
                }
                let minute = (t - minute_start).num_minutes();
                if let Some(n) = usize::try_from(minute)
                    .ok()
                    .and_then(|m| load.per_minute.get_mut(m))
                {
                    *n += weight;
                }
                let hour = (t - hour_start).num_hours();
                if let Some(n) = usize::try_from(hour)
                    .ok()
                    .and_then(|h| load.per_hour.get_mut(h))
                {
                    *n += weight;
                }
            }
        }
        load
    }

    /// The busiest minutes of the next 24 hours, most fires first (ties: earliest first).
    pub fn peaks(&self, n: usize) -> Vec<(DateTime<Utc>, u64)> {
        let mut minutes: Vec<(usize, u64)> = self
            .per_minute
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, c)| *c > 0)
            .collect();
        minutes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        minutes
            .into_iter()
            .take(n)
            .map(|(i, c)| (self.minute_start + TimeDelta::minutes(i as i64), c))
            .collect()
    }
}

/// A bar chart as inline SVG: one bar per value (bars with 0 are left out), a tooltip per bar,
/// a label and grid line where `tick` gives one, a scale line at the maximum.
pub fn bar_chart(
    title: &str,
    values: &[u64],
    tooltip: impl Fn(usize, u64) -> String,
    tick: impl Fn(usize) -> Option<String>,
) -> String {
    const W: f64 = 960.0;
    const H: f64 = 180.0;
    const TOP: f64 = 16.0;
    const AXIS: f64 = 18.0;
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let bar = W / values.len().max(1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {total}" role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg"><title>{label}</title>"#,
        total = H + AXIS,
        label = esc(title)
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="0" y1="{H}" x2="{W}" y2="{H}"/><line class="grid" x1="0" y1="{TOP}" x2="{W}" y2="{TOP}"/><text class="scale" x="2" y="{y}">{max}</text>"#,
        y = TOP - 4.0,
        max = thousands(max)
    );
    for (i, &v) in values.iter().enumerate() {
        if v == 0 {
            continue;
        }
        let h = ((H - TOP) * v as f64 / max as f64).max(1.0);
        let _ = write!(
            svg,
            r#"<rect x="{x:.2}" y="{y:.2}" width="{w:.2}" height="{h:.2}"><title>{t}</title></rect>"#,
            x = i as f64 * bar,
            y = H - h,
            w = (bar * 0.85).max(0.6),
            t = esc(&tooltip(i, v))
        );
    }
    for (i, label) in (0..values.len()).filter_map(|i| Some((i, tick(i)?))) {
        let x = i as f64 * bar;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{H}"/><text class="tick" x="{tx:.1}" y="{y}">{t}</text>"#,
            tx = x + 2.0,
            y = H + AXIS - 4.0,
            t = esc(&label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `100000` → `100,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::cron::CronSchedule;

    fn group(expr: &str, tz: &str, active: usize) -> Group {
        Group {
            cron: Arc::new(CronSchedule::parse(expr, tz).unwrap()),
            active,
        }
    }

    #[test]
    fn the_eight_oclock_spike_is_one_minute() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 5, 10, 30).unwrap();
        let groups = [
            group("0 8 * * *", "UTC", 100_000),
            group("0 8 * * *", "America/New_York", 500),
            group("*/15 * * * *", "UTC", 2),
        ];
        let load = LoadAhead::compute(&groups, now);
        assert_eq!(
            load.minute_start,
            Utc.with_ymd_and_hms(2026, 11, 30, 5, 10, 0).unwrap()
        );
        assert!(!load.partial);
        let peaks = load.peaks(3);
        assert_eq!(
            peaks[0],
            (
                Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap(),
                100_002
            )
        );
        // 08:00 New York is 13:00Z in winter.
        assert_eq!(
            peaks[1],
            (Utc.with_ymd_and_hms(2026, 11, 30, 13, 0, 0).unwrap(), 502)
        );
        // 96 quarter hours a day, minus the ones before 05:15 today.
        let quarter_fires: u64 = load.per_minute.iter().sum::<u64>() - 100_000 - 500;
        assert_eq!(quarter_fires, 2 * 96);
        // 7 days of 08:00 UTC: today's is ahead, the 7th day's falls after the horizon's hour.
        let daily: u64 = load.per_hour.iter().filter(|&&n| n >= 100_000).count() as u64;
        assert_eq!(daily, 7);
        let svg = bar_chart(
            "x",
            &load.per_minute,
            |_, v| format!("{v} fires"),
            |i| (i % 120 == 0).then(|| i.to_string()),
        );
        assert!(svg.contains("<title>100002 fires</title>"), "{svg}");
    }

    #[test]
    fn numbers_with_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
