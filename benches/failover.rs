//! `failover` — a standby fires within the lease TTL + 0.5 s of the leader's death (BENCHMARKS.md).
//!
//! Replicas run in-process, each on its own connection, on one wall clock running 60× fast so
//! a `* * * * *` schedule is due every real second. The leader is killed like a crash (its task
//! aborted: no state flush, no lease release; its connection dropped), and the time from the
//! kill to the first fire acked by the standby is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use polos::config::Config;
use polos::ticker::{Ticker, TickerStatus};
use tokio::sync::watch;

use crate::clock::FastClock;
use crate::raw;
use crate::support::Bench;

struct Replica {
    status: watch::Receiver<TickerStatus>,
    task: tokio::task::JoinHandle<()>,
}

async fn replica(b: &Bench, config: &Config, clock: FastClock) -> anyhow::Result<Replica> {
    let client = async_nats::connect(b.server.url()).await?;
    let ticker = Ticker::new(client, config).clock(Arc::new(clock));
    let status = ticker.status();
    let task = tokio::spawn(async move {
        let _ = ticker.run(std::future::pending::<()>()).await;
    });
    Ok(Replica { status, task })
}

async fn wait(
    r: &mut Replica,
    what: &str,
    f: impl FnMut(&TickerStatus) -> bool,
) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(30), r.status.wait_for(f))
        .await
        .map_err(|_| anyhow::anyhow!("timed out waiting for {what}"))??;
    Ok(())
}

/// `kills` successive leader deaths with `schedules` other (not due) schedules loaded and a
/// lease TTL of `ttl_secs`; returns the seconds from each kill to the standby's first fire.
pub async fn failover(
    b: &Bench,
    ttl_secs: u64,
    schedules: usize,
    kills: usize,
) -> anyhow::Result<Vec<f64>> {
    let idle = Bytes::from_static(br#"{"cron":"0 9 1 1 *","timezone":"UTC"}"#);
    raw::fill_bucket(&b.js, "polos_schedules", schedules, |i| {
        (format!("bench-idle.user_{i}"), idle.clone())
    })
    .await?;
    let kv = b.js.get_key_value("polos_schedules").await?;
    kv.put(
        "bench-failover.global",
        Bytes::from_static(br#"{"cron":"* * * * *","timezone":"UTC"}"#),
    )
    .await?;
    let mut config = Config::default();
    config.nats.url = b.server.url().to_string();
    config.scheduler.lease_ttl_secs = ttl_secs;
    let clock = FastClock::new(Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 30).unwrap(), 60);

    let mut leader = replica(b, &config, clock).await?;
    wait(&mut leader, "the first leader", |s| s.active).await?;
    let mut samples = Vec::new();
    for _ in 0..kills {
        let mut standby = replica(b, &config, clock).await?;
        wait(&mut standby, "the standby's load", |s| s.loaded).await?;
        // The leader is firing every second; kill it between two fires, like a random crash.
        let fired = leader.status.borrow().fires;
        wait(&mut leader, "two more fires", |s| s.fires >= fired + 2).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let killed = Instant::now();
        leader.task.abort();
        let _ = (&mut leader.task).await;
        wait(&mut standby, "the standby's first fire", |s| s.fires >= 1).await?;
        samples.push(killed.elapsed().as_secs_f64());
        leader = standby;
    }
    leader.task.abort();
    Ok(samples)
}
