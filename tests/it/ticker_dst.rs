//! DST days in New York fired end to end with the injected clock, checked against the README's "Cron and time zones":
//! - spring gap: interval schedules skip the missing hour; a fixed-time schedule whose time
//!   falls in the gap fires once, at the first instant after it (`30 2 * * *` → 03:00 EDT);
//! - autumn fold: interval schedules fire at both occurrences; fixed-time ones at the first.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use polos::model::Trigger;

use super::ticker::{at, config, frozen_at, put, stored_fires, Running};

const ZONE: &str = "America/New_York";

struct Expected {
    key: &'static str,
    cron: &'static str,
    instants: Vec<DateTime<Utc>>,
    /// `upcoming` of the last fire.
    then: DateTime<Utc>,
}

fn hourly(from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let (mut t, end) = (at(from), at(to));
    let mut out = Vec::new();
    while t <= end {
        out.push(t);
        t += chrono::Duration::hours(1);
    }
    out
}

async fn fire_day(start: &str, schedules: Vec<Expected>) {
    let (env, mut log, clock) = frozen_at(start).await;
    for s in &schedules {
        put(
            &env,
            "dst",
            s.key,
            serde_json::json!({"cron": s.cron, "timezone": ZONE}),
        )
        .await;
    }
    let mut t = Running::start(env.connect().await, &config(&env), Arc::new(clock.clone()));
    t.wait_active().await;
    t.wait("all armed", |s| {
        s.schedules == schedules.len() && s.next_fire.is_some()
    })
    .await;
    let timeline: BTreeSet<DateTime<Utc>> = schedules
        .iter()
        .flat_map(|s| s.instants.iter().copied())
        .collect();
    for instant in &timeline {
        let due = schedules
            .iter()
            .flat_map(|s| s.instants.iter())
            .filter(|t| *t <= instant)
            .count();
        clock.set(*instant);
        log.wait_for(due).await;
    }
    // Exact, not a quiet period: once the ticker counted every expected fire acked, the stream
    // holds exactly that many (an extra fire of any round so far would be stored too). Extra
    // fires before the last instant also show in the per-schedule lists below, which are read
    // from the first `due` fires in stream order.
    let total: usize = schedules.iter().map(|s| s.instants.len()).sum();
    t.wait("every fire acked", |s| s.fires >= total as u64)
        .await;
    assert_eq!(stored_fires(&env).await, total as u64, "fires stored");
    for s in &schedules {
        let fired: Vec<_> = log
            .all
            .iter()
            .filter(|r| r.fire.payload.key == s.key)
            .collect();
        let stamps: Vec<_> = fired.iter().map(|r| r.fire.payload.timestamp).collect();
        assert_eq!(stamps, s.instants, "{} ({})", s.key, s.cron);
        for (i, r) in fired.iter().enumerate() {
            assert_eq!(r.fire.trigger, Trigger::Schedule, "{}", s.key);
            assert_eq!(r.fire.payload.timezone, ZONE);
            let last = i.checked_sub(1).map(|j| s.instants[j]);
            assert_eq!(r.fire.payload.last_timestamp, last, "{} #{i}", s.key);
            let upcoming = s.instants.get(i + 1).copied().unwrap_or(s.then);
            assert_eq!(r.fire.payload.upcoming, upcoming, "{} #{i}", s.key);
        }
    }
    t.stop().await;
}

#[tokio::test]
async fn spring_forward_in_new_york() {
    fire_day(
        // 2026-03-06 23:00 EST.
        "2026-03-07T04:00:00Z",
        vec![
            Expected {
                key: "fixed-in-gap",
                cron: "30 2 * * *",
                // 02:30 EST; 03:00 EDT (02:30 does not exist); 02:30 EDT.
                instants: vec![
                    at("2026-03-07T07:30:00Z"),
                    at("2026-03-08T07:00:00Z"),
                    at("2026-03-09T06:30:00Z"),
                ],
                then: at("2026-03-10T06:30:00Z"),
            },
            Expected {
                key: "hourly-on-the-8th",
                cron: "0 * 8 3 *",
                // 00:00 and 01:00 EST, then 03:00 EDT .. 23:00 EDT: 23 fires, no 02:00.
                instants: hourly("2026-03-08T05:00:00Z", "2026-03-09T03:00:00Z"),
                then: at("2027-03-08T05:00:00Z"),
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn fall_back_in_new_york() {
    fire_day(
        // 2026-10-30 23:00 EDT.
        "2026-10-31T03:00:00Z",
        vec![
            Expected {
                key: "fixed-in-fold",
                cron: "30 1 * * *",
                // 01:30 EDT; 01:30 EDT only (not again at 01:30 EST); 01:30 EST.
                instants: vec![
                    at("2026-10-31T05:30:00Z"),
                    at("2026-11-01T05:30:00Z"),
                    at("2026-11-02T06:30:00Z"),
                ],
                then: at("2026-11-03T06:30:00Z"),
            },
            Expected {
                key: "hourly-on-the-1st",
                cron: "0 * 1 11 *",
                // 00:00 EDT .. 01:00 EDT, 01:00 EST .. 23:00 EST: 25 fires, hourly in real time.
                instants: hourly("2026-11-01T04:00:00Z", "2026-11-02T04:00:00Z"),
                then: at("2027-11-01T04:00:00Z"),
            },
            Expected {
                key: "half-hourly-at-1",
                cron: "*/30 1 1 11 *",
                // 01:00, 01:30 EDT then 01:00, 01:30 EST.
                instants: vec![
                    at("2026-11-01T05:00:00Z"),
                    at("2026-11-01T05:30:00Z"),
                    at("2026-11-01T06:00:00Z"),
                    at("2026-11-01T06:30:00Z"),
                ],
                then: at("2027-11-01T05:00:00Z"),
            },
        ],
    )
    .await;
}

/// The same harness on a zone without DST.
#[tokio::test]
async fn utc_day_through_the_same_harness() {
    let (env, mut log, clock) = frozen_at("2026-03-07T23:00:00Z").await;
    put(
        &env,
        "dst",
        "utc",
        serde_json::json!({"cron": "30 2 * * *", "timezone": "UTC"}),
    )
    .await;
    let mut t = Running::start(env.connect().await, &config(&env), Arc::new(clock.clone()));
    t.wait_active().await;
    for (i, day) in ["2026-03-08T02:30:00Z", "2026-03-09T02:30:00Z"]
        .into_iter()
        .enumerate()
    {
        clock.set(at(day));
        let fires = log.wait_for(i + 1).await;
        assert_eq!(fires[i].fire.payload.timestamp, at(day));
    }
    t.stop().await;
}
