//! The schedules API measured against raw KV compare-and-swap writes (issue 13: ≥ 0.6 with 64 requesters; BENCHMARKS.md).

use futures::StreamExt;

use crate::support::{profile, Bench};

/// `n` upserts of distinct schedules through the API (served in-process on its own
/// connection, like `polos scheduler`), `concurrency` requests in flight; upserts per second,
/// and seconds from the service's start to its first answered create.
pub async fn upserts(b: &Bench, n: usize, concurrency: usize) -> anyhow::Result<(f64, f64)> {
    // As in production, a worker has registered the workflow as schedulable (an unknown
    // workflow costs every upsert one more KV read to confirm it).
    let record = polos::model::WorkflowRecord {
        workflow: "bench".into(),
        schedulable: true,
        schedule: None,
        updated_at: chrono::Utc::now(),
    };
    b.js.get_key_value("polos_workflows")
        .await?
        .put("bench", serde_json::to_vec(&record)?.into())
        .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = polos::api::start(
        async_nats::connect(b.server.url()).await?,
        &Default::default(),
    )
    .await?;
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let client = polos::PolosClient::from_nats(async_nats::connect(b.server.url()).await?);
    // Let the API's registry watch see the registration.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // A fresh service reads every key once before it admits creates (the per-workflow count of
    // `limits.max_schedules_per_workflow`); with a million stored that takes seconds. Measured
    // here, apart from the steady rate below.
    let ready = std::time::Instant::now();
    loop {
        match polos::schedules::create(&client, "bench", "0 8 * * *", "UTC", "warm-up").await {
            Ok(_) => break,
            Err(e) if ready.elapsed() < std::time::Duration::from_secs(60) => {
                tracing::debug!(error = %e, "API not ready yet");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let ready = ready.elapsed().as_secs_f64() + 0.5;
    profile(true);
    let start = std::time::Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move {
                polos::schedules::create(&client, "bench", "0 8 * * *", "UTC", &format!("user_{i}"))
                    .await
            }
        })
        .buffer_unordered(concurrency)
        .for_each(|r| {
            r.expect("upsert");
            async {}
        })
        .await;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    profile(false);
    let _ = stop.send(());
    serving.await??;
    Ok((rate, ready))
}
