//! `cargo bench` — polos against raw JetStream, measured in one run on a private nats-server.
//!
//! `cargo bench --bench polos -- <section>...` runs some sections: publish, latency, peer, fire,
//! load, api, worker, cron, failover, growth (all of them without arguments).
//! `--quick` runs every section at small sizes as a smoke test (CI runs it in the debug build:
//! `cargo test --bench polos -- --quick`); its figures mean nothing.
//! `--json <path>` names where every figure goes as JSON (default `target/bench.json`); after
//! `growth`, `scripts/bench-plot` renders `docs/bench.png` from it (skipped with `--quick`).
//! Results and the command that produced them are recorded in BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod api;
mod clock;
mod cron;
mod failover;
mod peer;
mod raw;
mod support;
mod ticker;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

use support::{percentile, record, report, Bench};

/// How big each section is: the real run, or `--quick`.
struct Sizes {
    quick: bool,
    publish: usize,
    latency: usize,
    peer: usize,
    fire: usize,
    load: usize,
    api: usize,
    worker: usize,
    cron: i64,
    failover: (usize, usize),
    /// Burst sizes.
    growth_fire: Vec<usize>,
    /// Cold start and memory sizes.
    growth_load: Vec<usize>,
    /// Schedules already stored when the upserts are measured.
    growth_api: Vec<usize>,
    /// Idle schedules loaded during a failover.
    growth_failover: Vec<usize>,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            return Sizes {
                quick,
                publish: 2_000,
                latency: 10,
                peer: 20,
                fire: 2_000,
                load: 5_000,
                api: 500,
                worker: 500,
                cron: 10_000,
                failover: (100, 1),
                growth_fire: vec![500, 1_000],
                growth_load: vec![1_000, 2_000],
                growth_api: vec![100, 1_000],
                growth_failover: vec![100],
            };
        }
        Sizes {
            quick,
            publish: 100_000,
            latency: 200,
            peer: 1_000,
            fire: 100_000,
            load: 1_000_000,
            api: 20_000,
            worker: 20_000,
            cron: 1_000_000,
            failover: (10_000, 3),
            growth_fire: vec![10_000, 100_000, 300_000],
            growth_load: vec![100_000, 1_000_000, 3_000_000],
            growth_api: vec![1_000, 100_000, 1_000_000],
            growth_failover: vec![10_000, 1_000_000],
        }
    }
}

/// The value following `flag` on the command line.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A child process measuring one cold start (see `growth`): its own RSS, nobody else's.
    if let Some(n) = flag_value(&args, "--load-one") {
        let b = Bench::start().await?;
        let api_written = args.iter().any(|a| a == "--api-written");
        let l = ticker::load(&b, n.parse()?, api_written).await?;
        println!(
            "LOAD-ONE {}",
            serde_json::json!({"ours": l.ours, "raw": l.raw, "per_schedule": l.per_schedule})
        );
        return Ok(());
    }
    // One failover measurement at N schedules (the 1M point of `growth`, alone).
    if let Some(n) = flag_value(&args, "--failover-one") {
        let b = Bench::start().await?;
        let samples = failover::failover(&b, 1, n.parse()?, 2).await?;
        println!("FAILOVER-ONE {samples:?} s (TTL 1 s)");
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let json = flag_value(&args, "--json")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench.json"));
    // `cargo bench` adds `--bench`; values of flags are not sections.
    let mut wanted = Vec::new();
    let mut skip = false;
    for a in &args {
        if std::mem::take(&mut skip) {
            continue;
        }
        if a == "--json" {
            skip = true;
        } else if !a.starts_with('-') {
            wanted.push(a.clone());
        }
    }
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let sizes = Sizes::new(quick);
    println!(
        "polos benchmarks ({} build{}, private nats-server {})",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if quick {
            ", --quick: small sizes, figures not meaningful"
        } else {
            ""
        },
        polos::nats::server::PINNED_VERSION
    );
    sections(&sizes, &run).await?;
    support::write_results(&json, quick)?;
    if run("growth") && !quick {
        plot(&json);
    }
    Ok(())
}

/// Renders `docs/bench.png` from the JSON (a failure is reported, not fatal: the figures are
/// already written).
fn plot(json: &std::path::Path) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new(root.join("scripts/bench-plot"))
        .arg(json)
        .arg(root.join("docs/bench.png"))
        .status();
    match status {
        Ok(s) if s.success() => println!("plot written to docs/bench.png"),
        other => println!("plot not rendered ({other:?}); run scripts/bench-plot by hand"),
    }
}

async fn sections(sizes: &Sizes, run: &dyn Fn(&str) -> bool) -> anyhow::Result<()> {
    if run("publish") {
        let b = Bench::start().await?;
        let n = sizes.publish;
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
        let ours = ticker::fire_latency(&b, sizes.latency, 600).await?;
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
    if run("peer") {
        let b = Bench::start().await?;
        let lead = Duration::from_secs(if sizes.quick { 8 } else { 20 });
        let p = peer::peer(&b, sizes.peer, lead).await?;
        for q in [50.0, 99.0] {
            report(
                &format!("fire stored after instant p{q} (ms)"),
                percentile(&p.ours, q),
                percentile(&p.server, q),
                "ms",
                false,
                "raw = nats-server's own schedules; ours ≤ theirs at p99",
            );
        }
        println!(
            "{:<34} {} schedules each at {}; max ours {:.1} ms, server {:.1} ms",
            "",
            sizes.peer,
            p.instant,
            p.ours.last().copied().unwrap_or(f64::NAN),
            p.server.last().copied().unwrap_or(f64::NAN)
        );
    }
    if run("fire") {
        let b = Bench::start().await?;
        let n = sizes.fire;
        let (ours, raw) = ticker::fire(&b, n).await?;
        report(
            &format!("{}k fires at one instant (/s)", n / 1000),
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
            "≥ 0.9",
        );
    }
    if run("load") {
        let b = Bench::start().await?;
        let n = sizes.load;
        let l = ticker::load(&b, n, false).await?;
        report(
            &format!("ticker cold start, {}k schedules (s)", n / 1000),
            l.ours,
            l.raw,
            "s",
            false,
            "≥ 0.67, i.e. ≤ 1.5× raw",
        );
        // The same with values as the API writes them (longer, with an id to check).
        let api = ticker::load(&Bench::start().await?, n, true).await?;
        report(
            &format!("  … API-written values, {}k (s)", n / 1000),
            api.ours,
            api.raw,
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
            format!("idle CPU, {}k armed, none due", n / 1000),
            l.idle_cpu,
            l.idle,
            100.0 * l.idle_cpu / l.idle.as_secs_f64()
        );
    }
    if run("api") {
        let b = Bench::start().await?;
        let (n, concurrency) = (sizes.api, 64);
        let (cpu, server) = (support::cpu_time(), b.server_cpu());
        let raw = raw::kv_cas(&b.js, "polos_schedules", n, concurrency).await?;
        let (cpu_raw, server_raw) = (support::cpu_time() - cpu, b.server_cpu() - server);
        let (cpu, server) = (support::cpu_time(), b.server_cpu());
        let (api, ready) = api::upserts(&b, n, concurrency).await?;
        let (cpu_ours, server_ours) = (support::cpu_time() - cpu, b.server_cpu() - server);
        report(
            "API upserts vs raw KV CAS (/s)",
            api,
            raw,
            "writes/s",
            true,
            "≥ 0.6",
        );
        // Where the gap goes: an upsert is three messages through the server (request, KV
        // write, reply) where a raw CAS is one; both sides share the two cores.
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        println!(
            "{:<34} ours {:.1} µs, raw {:.1} µs (nats-server CPU); ours {:.1} µs, raw {:.1} µs (bench process: requesters + API)",
            "  CPU per write",
            per(server_ours),
            per(server_raw),
            per(cpu_ours),
            per(cpu_raw)
        );
        println!(
            "{:<34} first create answered {ready:.3} s after the service started",
            "  API ready"
        );
        record("api", "server_cpu_us_ours", n, per(server_ours), "µs");
        record("api", "server_cpu_us_raw", n, per(server_raw), "µs");
        record("api", "process_cpu_us_ours", n, per(cpu_ours), "µs");
        record("api", "process_cpu_us_raw", n, per(cpu_raw), "µs");
    }
    if run("worker") {
        let b = Bench::start().await?;
        let n = sizes.worker;
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
            "≥ 0.9 if possible",
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
            let (ours, raw) = cron::next_after(expr, tz, sizes.cron);
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
        let (schedules, kills) = sizes.failover;
        let mut samples = failover::failover(&b, ttl, schedules, kills).await?;
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
    if run("growth") {
        growth(sizes).await?;
    }
    Ok(())
}

/// How cost grows with the number of schedules: burst rate, cold start and memory, upsert
/// rate with schedules already stored, failover time. Each point on a fresh server.
async fn growth(sizes: &Sizes) -> anyhow::Result<()> {
    println!("growth:");
    for &n in &sizes.growth_fire {
        let b = Bench::start().await?;
        let (ours, raw) = ticker::fire(&b, n).await?;
        println!(
            "  burst {n:>9} fires   ours {ours:>10.0}/s raw {raw:>10.0}/s ratio {:.2}",
            ours / raw
        );
        record("growth", "burst_ours_per_s", n, ours, "fires/s");
        record("growth", "burst_raw_per_s", n, raw, "msgs/s");
    }
    for &n in &sizes.growth_load {
        // A child process per size: RSS deltas are only clean in a fresh process.
        let out = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--load-one", &n.to_string()])
            .output()
            .await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("LOAD-ONE "))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "cold start of {n} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        let v: serde_json::Value = serde_json::from_str(line)?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  cold start {n:>9}   ours {:>8.3} s raw {:>8.3} s ratio {:.2}  {:>5.0} B/schedule",
            f("ours"),
            f("raw"),
            f("raw") / f("ours"),
            f("per_schedule")
        );
        record("growth", "load_ours_s", n, f("ours"), "s");
        record("growth", "load_raw_s", n, f("raw"), "s");
        record("growth", "bytes_per_schedule", n, f("per_schedule"), "B");
    }
    for &existing in &sizes.growth_api {
        let b = Bench::start().await?;
        let value = bytes::Bytes::from_static(br#"{"cron":"0 8 * * *","timezone":"UTC"}"#);
        raw::fill_bucket(&b.js, "polos_schedules", existing, |i| {
            (format!("bench-existing.user_{i}"), value.clone())
        })
        .await?;
        let n = sizes.api;
        let raw = raw::kv_cas(&b.js, "polos_schedules", n, 64).await?;
        let (ours, ready) = api::upserts(&b, n, 64).await?;
        println!(
            "  upserts with {existing:>9} stored   ours {ours:>8.0}/s raw CAS {raw:>8.0}/s ratio {:.2}  (API ready after {ready:.2} s)",
            ours / raw
        );
        record("growth", "api_ready_s", existing, ready, "s");
        record("growth", "upserts_ours_per_s", existing, ours, "writes/s");
        record("growth", "upserts_raw_per_s", existing, raw, "writes/s");
    }
    for &n in &sizes.growth_failover {
        let b = Bench::start().await?;
        let mut samples = failover::failover(&b, 1, n, 2).await?;
        samples.sort_by(f64::total_cmp);
        let worst = samples.last().copied().unwrap_or(f64::NAN);
        println!("  failover with {n:>9} schedules   worst {worst:.3} s of {samples:?} (TTL 1 s)");
        record("growth", "failover_s", n, worst, "s");
    }
    Ok(())
}
