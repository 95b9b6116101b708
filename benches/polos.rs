//! `cargo bench` — polos against raw JetStream, measured in one run on a private nats-server.
//!
//! `cargo bench --bench polos -- <section>...` runs some sections: publish, latency, fire, load,
//! api, worker, cron, failover (all of them without arguments).
//! Results and the command that produced them are recorded in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod api;
mod clock;
mod cron;
mod failover;
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
        // Raw: one publish at a time, each awaited (nothing queued ahead of it).
        let raw = raw::publish_latency(&b.js, "polos.runs.bench-lat", 2000).await?;
        // Ours: 200 distinct instants, 100 ms apart (a 600× wall clock), lateness of each ack.
        let ours = ticker::fire_latency(&b, 200, 600).await?;
        for (p, target) in [(50.0, "≤ 1 ms"), (99.0, "≤ 3 ms")] {
            report(
                &format!("fire acked after instant p{p} (ms)"),
                percentile(&ours, p),
                percentile(&raw, p),
                "ms",
                false,
                target,
            );
        }
        println!(
            "{:<34} ours max {:.3} ms over {} fires (raw = publish→ack of one message)",
            "",
            ours.last().copied().unwrap_or(f64::NAN),
            ours.len()
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
        ); // Like with like: the same raw loop, publishing messages shaped exactly like the fires.
        let shaped = ticker::raw_fire_shaped(&b, n).await?;
        report(
            "  raw, fire-shaped messages (/s)",
            ours,
            shaped,
            "msg/s",
            true,
            "(diagnostic)",
        );
    }
    if run("load") {
        let b = Bench::start().await?;
        let n = 1_000_000;
        let l = ticker::load(&b, n).await?;
        report(
            "ticker cold start, 1M schedules (s)",
            l.ours,
            l.raw,
            "s",
            false,
            "≥ 0.67, i.e. ≤ 1.5× raw",
        );
        println!(
            "{:<34} ours {:>12.0} bytes    (target ≤ 300; process RSS delta / schedules)",
            "ticker memory per schedule", l.per_schedule
        );
        println!(
            "{:<34} ours {:>12.4} s CPU over {:?} idle = {:.3}% of one core (target ~0)",
            "idle CPU, 1M armed, none due",
            l.idle_cpu,
            l.idle,
            100.0 * l.idle_cpu / l.idle.as_secs_f64()
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
        use worker::Fires;
        worker::publish_fires(&b.js, "bench-raw-w", n, Fires::OneSchedule).await?;
        worker::allow_all(&b.js, "bench-w").await?;
        worker::publish_fires(&b.js, "bench-w", n, Fires::OneSchedule).await?;
        worker::publish_fires(&b.js, "bench-skip-w", n, Fires::OnePerSchedule).await?;
        let raw = raw::worker_loop(&b.js, "bench-raw-w", n, 64).await?;
        let ours = worker::polos_worker(b.client.clone(), "bench-w", n, 64).await?;
        report(
            "worker runs, overlap allow_all (3 KV writes + ack)",
            ours,
            raw,
            "runs/s",
            true,
            "≥ 0.8",
        );
        let skip = worker::polos_worker(b.client.clone(), "bench-skip-w", n, 64).await?;
        report(
            "worker runs, overlap skip (default; + 3 KV ops per run)",
            skip,
            raw,
            "runs/s",
            true,
            "-",
        );
    }
    if run("cron") {
        for (expr, tz) in [
            ("0 9 * * *", "America/New_York"),
            ("*/15 * * * *", "Europe/London"),
        ] {
            let (ours, raw) = cron::next_after(expr, tz);
            report(
                &format!("next fire {expr} {tz} (ns)"),
                ours,
                raw,
                "ns",
                false,
                "≈ 180 ns; raw = saffron UTC",
            );
        }
    }
    if run("failover") {
        let b = Bench::start().await?;
        let ttl = 1;
        let mut samples = failover::failover(&b, ttl, 10_000, 3).await?;
        samples.sort_by(f64::total_cmp);
        let worst = samples.last().copied().unwrap_or(f64::NAN);
        println!(
            "{:<34} ours {:>12.3} s  worst of {:?} (lease TTL {ttl} s; target ≤ {:.1} s)",
            "standby's first fire after kill",
            worst,
            samples,
            ttl as f64 + 0.5
        );
    }
    Ok(())
}
