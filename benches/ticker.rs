//! Ticker sections (design §10): `fire` — N schedules due at one instant vs raw pipelined publish;
//! `load` — cold start of N schedules vs a raw `watch_with_history` load, and memory per schedule.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use polos::config::Config;
use polos::ticker::{ManualClock, Ticker, TickerStatus};
use tokio::sync::{oneshot, watch};

use crate::raw;
use crate::support::{rss_bytes, timed, Bench};

/// A ticker on the bench server with a frozen clock at 08:59:59 (schedules fire at 09:00).
struct Running {
    status: watch::Receiver<TickerStatus>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    clock: ManualClock,
}

fn start(b: &Bench) -> Running {
    let mut config = Config::default();
    config.nats.url = b.server.url().to_string();
    let clock = ManualClock::frozen(Utc.with_ymd_and_hms(2026, 5, 1, 8, 59, 59).unwrap());
    let ticker = Ticker::new(b.client.clone(), &config).clock(Arc::new(clock.clone()));
    let status = ticker.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        ticker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        status,
        stop,
        task,
        clock,
    }
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn fill(b: &Bench, workflow: &str, n: usize) -> anyhow::Result<()> {
    let value = Bytes::from_static(br#"{"cron":"0 9 * * *","timezone":"UTC"}"#);
    raw::fill_bucket(&b.js, "polos_schedules", n, |i| {
        (format!("{workflow}.user_{i}"), value.clone())
    })
    .await
}

async fn state_messages(b: &Bench) -> anyhow::Result<u64> {
    let mut stream = b.js.get_stream("KV_polos_schedule_state").await?;
    Ok(stream.info().await?.state.messages)
}

/// N fires due at one instant, from the instant to the last ack; returns (ours, raw) msgs/s.
pub async fn fire(b: &Bench, n: usize) -> anyhow::Result<(f64, f64)> {
    fill(b, "bench-fire", n).await?;
    let mut t = start(b);
    t.status
        .wait_for(|s| s.active && s.schedules == n && s.next_fire.is_some())
        .await?;
    // The takeover writes every schedule's `next`: let that finish so the instant is measured
    // on a quiet server, as it would be long after the schedules were armed.
    while state_messages(b).await? < n as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    t.clock
        .set(Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap());
    t.status.wait_for(|s| s.fires == n as u64).await?;
    let ours = n as f64 / started.elapsed().as_secs_f64();
    t.shutdown().await;
    // Like the ticker: its own connection, in a spawned task (not the runtime's main thread).
    let js = async_nats::jetstream::new(async_nats::connect(b.server.url()).await?);
    let raw = tokio::spawn(async move {
        raw::publish_throughput(&js, "polos.runs.bench-raw", n)
            .await
            .map_err(|e| e.to_string())
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    Ok((ours, raw))
}

/// Cold start of N schedules until the ticker is firing; returns (ours, raw) seconds and the
/// process memory grown per schedule.
pub async fn load(b: &Bench, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    fill(b, "bench-load", n).await?;
    let raw = raw::kv_load(&b.js, "polos_schedules", n).await?;
    let before = rss_bytes();
    let (t, ours) = timed(async {
        let mut t = start(b);
        t.status
            .wait_for(|s| s.active && s.schedules == n)
            .await
            .map(|_| ())?;
        anyhow::Ok(t)
    })
    .await;
    let t = t?;
    // Memory once the takeover's state writes have drained (steady state).
    while state_messages(b).await? < n as u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_schedule = rss_bytes().saturating_sub(before) as f64 / n as f64;
    t.shutdown().await;
    Ok((ours.as_secs_f64(), raw.as_secs_f64(), per_schedule))
}
