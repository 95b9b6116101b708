//! Raw JetStream baselines, measured in the same run as polos so ratios compare like with like.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::{self, consumer, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

/// How many publish acks may be outstanding at once in pipelined publishing.
pub const WINDOW: usize = 4096;

/// Pipelined publish of `n` messages with unique `Nats-Msg-Id`s; returns messages per second.
pub async fn publish_throughput(
    js: &jetstream::Context,
    subject: &str,
    n: usize,
) -> anyhow::Result<f64> {
    let body = Bytes::from_static(br#"{"timestamp":"2026-11-26T16:00:00Z","last_timestamp":null,"timezone":"UTC","schedule_id":"sch_aaaaaaaaaaaaaaaaaaaaaaaaaa","key":"user_000001","upcoming":"2026-11-27T16:00:00Z"}"#);
    let start = Instant::now();
    pipelined(n, |i| {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("raw-{i}@2026-11-26T16:00:00Z").as_str(),
        );
        js.publish_with_headers(subject.to_string(), headers, body.clone())
    })
    .await?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Sends `n` publishes built by `publish(i)` without waiting for each ack, keeping at most
/// [`WINDOW`] acks outstanding, then waits for the rest.
async fn pipelined<F, Fut>(n: usize, mut publish: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<PublishAckFuture, PublishError>>,
{
    let mut pending = FuturesUnordered::new();
    for i in 0..n {
        let ack = publish(i).await?;
        pending.push(ack.into_future());
        if pending.len() >= WINDOW {
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

/// Publish→ack latency of single publishes, one at a time; returns sorted samples in ms.
pub async fn publish_latency(
    js: &jetstream::Context,
    subject: &str,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("lat-{i}").as_str());
        let start = Instant::now();
        js.publish_with_headers(subject.to_string(), headers, Bytes::from_static(b"{}"))
            .await?
            .await?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// Fills a KV bucket with `n` keys quickly (pipelined raw publishes to `$KV.<bucket>.<key>`).
pub async fn fill_bucket(
    js: &jetstream::Context,
    bucket: &str,
    n: usize,
    key_and_value: impl Fn(usize) -> (String, Bytes),
) -> anyhow::Result<()> {
    pipelined(n, |i| {
        let (key, value) = key_and_value(i);
        js.publish(format!("$KV.{bucket}.{key}"), value)
    })
    .await
}

/// Reads every key of a bucket with `watch_with_history` until caught up; returns the elapsed time.
pub async fn kv_load(
    js: &jetstream::Context,
    bucket: &str,
    expected: usize,
) -> anyhow::Result<Duration> {
    let kv = js.get_key_value(bucket).await?;
    let start = Instant::now();
    let mut watch = kv.watch_with_history(">").await?;
    let mut seen = 0usize;
    let mut bytes = 0usize;
    while seen < expected {
        match watch.next().await {
            Some(entry) => {
                let entry = entry?;
                bytes += entry.value.len();
                seen += 1;
            }
            None => anyhow::bail!("watch ended after {seen} of {expected}"),
        }
    }
    std::hint::black_box(bytes);
    Ok(start.elapsed())
}

/// Reads every key of a bucket with async-nats' ordered *pull* consumer (latest value per key,
/// 500 messages per pull), doing nothing with the values: the read mechanism the ticker's
/// loader used before it pulled 10,000 at a time on a consumer of its own (BENCHMARKS.md).
pub async fn kv_load_pull(
    js: &jetstream::Context,
    bucket: &str,
    expected: usize,
) -> anyhow::Result<Duration> {
    let stream = js.get_stream(format!("KV_{bucket}")).await?;
    let start = Instant::now();
    let mut messages = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("$KV.{bucket}.>"),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let mut bytes = 0usize;
    for seen in 0..expected {
        match messages.next().await {
            Some(message) => bytes += message?.payload.len(),
            None => anyhow::bail!("the consumer ended after {seen} of {expected}"),
        }
    }
    std::hint::black_box(bytes);
    Ok(start.elapsed())
}

/// A hand-written worker loop: for each message, 3 KV writes (run running, a step, run completed)
/// and an ack, with `in_flight` messages processed concurrently. Returns runs per second.
pub async fn worker_loop(
    js: &jetstream::Context,
    workflow: &str,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let runs = Arc::new(js.get_key_value("polos_runs").await?);
    let steps = Arc::new(js.get_key_value("polos_steps").await?);
    let stream = js.get_stream("POLOS_RUNS").await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(format!("raw_{workflow}")),
            filter_subject: format!("polos.runs.{workflow}"),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: in_flight as i64 * 2,
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut messages = consumer.messages().await?;
    let mut tasks = FuturesUnordered::new();
    let mut done = 0usize;
    while done < n {
        while tasks.len() < in_flight && done + tasks.len() < n {
            let Some(msg) = messages.next().await else {
                break;
            };
            let msg = msg.map_err(|e| anyhow::anyhow!("{e}"))?;
            let (runs, steps) = (runs.clone(), steps.clone());
            tasks.push(tokio::spawn(async move {
                let id = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                let key = format!("raw.run{id}");
                runs.put(&key, Bytes::from_static(br#"{"status":"running"}"#))
                    .await?;
                steps
                    .put(
                        format!("run{id}.step"),
                        Bytes::from_static(br#"{"output":1}"#),
                    )
                    .await?;
                runs.put(&key, Bytes::from_static(br#"{"status":"completed"}"#))
                    .await?;
                msg.ack_with(AckKind::Ack)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::Ok(())
            }));
            if done + tasks.len() >= n {
                break;
            }
        }
        if let Some(r) = tasks.next().await {
            r??;
            done += 1;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Compare-and-swap KV writes (`create` of distinct keys) from `concurrency` tasks; writes/s.
pub async fn kv_cas(
    js: &jetstream::Context,
    bucket: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let kv = Arc::new(js.get_key_value(bucket).await?);
    let start = Instant::now();
    let mut tasks = FuturesUnordered::new();
    for c in 0..concurrency {
        let kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                kv.create(
                    format!("raw-cas.k{i}"),
                    Bytes::from_static(br#"{"cron":"0 8 * * *"}"#),
                )
                .await?;
                i += concurrency;
            }
            anyhow::Ok(())
        }));
    }
    while let Some(r) = tasks.next().await {
        r??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
