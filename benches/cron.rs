//! `cron` — a time-zone-aware next fire (target ≈ 180 ns, BENCHMARKS.md), against saffron's bare UTC
//! `next_after` on the same expression (the library our engine builds on, with no zone work).

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use polos::cron::CronSchedule;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Independent starts (a different second each call, spread over ~2 years), like many
/// schedules planned at once; returns ns per call.
fn scattered(n: i64, next: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>) -> f64 {
    // Warm caches (zone transitions) for the years visited.
    for i in 0..1000 {
        black_box(next(start() + chrono::Duration::seconds(i * 63_113)));
    }
    let base = start();
    let began = Instant::now();
    let mut sink = 0i64;
    for i in 0..n {
        let from = base + chrono::Duration::seconds(i * 61);
        sink ^= next(black_box(from)).map(|t| t.timestamp()).unwrap_or(0);
    }
    black_box(sink);
    began.elapsed().as_nanos() as f64 / n as f64
}

/// `(ours, raw)` ns per next fire for `expr` in `tz`, over `n` calls each.
pub fn next_after(expr: &str, tz: &str, n: i64) -> (f64, f64) {
    let ours = CronSchedule::parse(expr, tz).unwrap();
    let raw: saffron::Cron = expr.parse().unwrap();
    let ours_ns = scattered(n, |t| ours.next_after(t));
    let raw_ns = scattered(n, |t| raw.next_after(t));
    (ours_ns, raw_ns)
}
