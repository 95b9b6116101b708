//! `cargo bench` — polos against raw JetStream, measured in one run on a private nats-server.
//!
//! `cargo bench -- <section>` runs one section: publish, latency, fire, load, worker, api, cron.
//! Results and the command that produced them are recorded in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod api;
mod raw;
mod support;
mod ticker;
mod worker;

use support::{percentile, report, Bench};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    println!(
        "polos benchmarks (release build, private nats-server {})",
        polos::nats::server::PINNED_VERSION
    );

    if run("publish") {
        let b = Bench::start().await?;
        let n = 100_000;
        let raw = raw::publish_throughput(&b.js, "polos.runs.bench-raw", n).await?;
        report(
            "pipelined publish (msgs/s)",
            raw,
            raw,
            "msg/s",
            true,
            "baseline",
        );
    }
    if run("latency") {
        let b = Bench::start().await?;
        let samples = raw::publish_latency(&b.js, "polos.runs.bench-lat", 2000).await?;
        println!(
            "{:<34} raw p50 {:.3} ms  p99 {:.3} ms",
            "publish→ack latency",
            percentile(&samples, 50.0),
            percentile(&samples, 99.0)
        );
    }
    if run("fire") {
        let b = Bench::start().await?;
        let n = 100_000;
        let (ours, raw) = ticker::fire(&b, n).await?;
        report(
            "100k fires at one instant (/s)",
            ours,
            raw,
            "msg/s",
            true,
            "≥ 0.8",
        );
    }
    if run("load") {
        let b = Bench::start().await?;
        let n = 1_000_000;
        let (ours, raw, per_schedule) = ticker::load(&b, n).await?;
        report(
            "ticker cold start, 1M schedules (s)",
            ours,
            raw,
            "s",
            false,
            "≥ 0.67, i.e. ≤ 1.5× raw",
        );
        println!(
            "{:<34} {per_schedule:.0} bytes (target ≤ 300)",
            "ticker memory per schedule"
        );
    }
    if run("api") {
        let b = Bench::start().await?;
        let (n, concurrency) = (20_000, 64);
        let raw = raw::kv_cas(&b.js, "polos_schedules", n, concurrency).await?;
        let api = api::upserts(&b, n, concurrency).await?;
        report(
            "API upserts vs raw KV CAS (/s)",
            api,
            raw,
            "writes/s",
            true,
            "≥ 0.5",
        );
    }
    if run("worker") {
        let b = Bench::start().await?;
        let n = 20_000;
        worker::publish_fires(&b.js, "bench-raw-w", n).await?;
        worker::publish_fires(&b.js, "bench-w", n).await?;
        let raw = raw::worker_loop(&b.js, "bench-raw-w", n, 64).await?;
        let ours = worker::polos_worker(b.client.clone(), "bench-w", n, 64).await?;
        report(
            "worker runs (3 KV writes + ack)",
            ours,
            raw,
            "runs/s",
            true,
            "≥ 0.8",
        );
    }
    Ok(())
}
