//! The polos worker on the same work as `raw::worker_loop`: per run a `running` record, one
//! step, a `completed` record and an ack, 64 runs in flight.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{TimeZone, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use polos::model::{payload, Fire, ScheduleRecord, Trigger};
use polos::worker::{consumer_name, Worker, Workflow, WorkflowContext, WorkflowError};

/// Whose fires a benchmark publishes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fires {
    /// `n` instants of one schedule (`global`): with overlap policy `allow_all` they run side
    /// by side, and the worker does no overlap work.
    OneSchedule,
    /// One instant of each of `n` schedules: under the default policy `skip` every run takes
    /// and clears its schedule's overlap record (3 KV operations per run), uncontended.
    OnePerSchedule,
}

/// Publishes `n` distinct scheduled fires of `workflow` (pipelined).
pub async fn publish_fires(
    js: &jetstream::Context,
    workflow: &str,
    n: usize,
    fires: Fires,
) -> anyhow::Result<()> {
    let one = ScheduleRecord::new(workflow, "global", "* * * * *", "UTC");
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
    let mut pending = FuturesUnordered::new();
    for i in 0..n {
        let t = base + chrono::Duration::minutes(i as i64);
        let record = match fires {
            Fires::OneSchedule => one.clone(),
            Fires::OnePerSchedule => {
                ScheduleRecord::new(workflow, &format!("k{i}"), "* * * * *", "UTC")
            }
        };
        let fire = Fire::scheduled(workflow, Trigger::Schedule, payload(&record, t, None, t));
        let ack = js
            .publish_with_headers(fire.subject(), fire.headers(), fire.body())
            .await?;
        pending.push(ack.into_future());
        if pending.len() >= 4096 {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}

/// Stores the `global` schedule of `workflow` with overlap policy `allow_all`.
pub async fn allow_all(js: &jetstream::Context, workflow: &str) -> anyhow::Result<()> {
    let kv = js.get_key_value("polos_schedules").await?;
    kv.put(
        format!("{workflow}.global"),
        r#"{"cron":"* * * * *","overlap":"allow_all"}"#.into(),
    )
    .await?;
    Ok(())
}

/// Runs `n` already-published fires through a polos `Worker`; returns runs per second.
pub async fn polos_worker(
    client: async_nats::Client,
    workflow: &str,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let js = jetstream::new(client.clone());
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    let wf = Workflow::new(workflow, move |ctx: WorkflowContext, _p| {
        let counter = counter.clone();
        async move {
            ctx.step
                .run("step", || async { Ok::<_, WorkflowError>(1) })
                .await?;
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let worker = tokio::spawn(
        Worker::new(client)
            .workflow(wf)
            .concurrency(in_flight)
            .run(async {
                let _ = stop_rx.await;
            }),
    );
    // Done when every handler returned and every message is acked (the final write precedes it).
    let stream = js.get_stream("POLOS_RUNS").await?;
    loop {
        if done.load(Ordering::Relaxed) >= n {
            if let Ok(mut c) = stream
                .get_consumer::<jetstream::consumer::pull::Config>(&consumer_name(workflow))
                .await
            {
                let info = c.info().await?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    worker.await??;
    Ok(rate)
}
