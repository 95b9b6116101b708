//! Shared benchmark plumbing: a private nats-server, timing and reporting helpers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use polos::config::{StorageConfig, StorageKind};
use polos::nats::server::NatsServer;

/// A private server with the polos streams applied (file storage, like production).
pub struct Bench {
    /// Kept alive for the benchmark's duration.
    pub server: NatsServer,
    /// A connected client.
    pub client: async_nats::Client,
    /// JetStream on that client.
    pub js: jetstream::Context,
}

impl Bench {
    /// CPU time the server has used so far (its share of a measurement on the shared cores).
    pub fn server_cpu(&self) -> Duration {
        self.server
            .pid()
            .map_or(Duration::ZERO, |pid| cpu_time_of(&pid.to_string()))
    }

    /// Starts a fresh server and applies `streams/`.
    pub async fn start() -> anyhow::Result<Bench> {
        let server = NatsServer::start()?;
        let client = async_nats::connect(server.url()).await?;
        let js = jetstream::new(client.clone());
        let storage = StorageConfig {
            replicas: 1,
            kind: StorageKind::File,
        };
        polos::nats::streams::apply(&js, &storage).await?;
        Ok(Bench { server, client, js })
    }
}

/// Runs `f` and returns its result with the elapsed wall time.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// Resident set size of this process in bytes (Linux `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// CPU time used so far by every thread of this process (`/proc/self/task/*/schedstat`, ns).
pub fn cpu_time() -> Duration {
    cpu_time_of("self")
}

/// CPU time used so far by every thread of process `pid` ("self" for this one).
pub fn cpu_time_of(pid: &str) -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

/// Percentile (0..=100) of a sample, in the sample's unit.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Every figure of this run, written as JSON at the end (`--json`, default `target/bench.json`)
/// for the growth table and plot (`scripts/bench-plot`).
static RESULTS: Mutex<Vec<serde_json::Value>> = Mutex::new(Vec::new());

/// Records one figure: `metric` of `section` at `size` (schedules, fires or requests).
pub fn record(section: &str, metric: &str, size: usize, value: f64, unit: &str) {
    let row = serde_json::json!({
        "section": section,
        "metric": metric,
        "size": size,
        "value": finite(value),
        "unit": unit,
    });
    RESULTS.lock().unwrap().push(row);
}

/// JSON has no NaN or infinity.
fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}

/// Writes every recorded figure to `path` with the run's date, mode and command line.
pub fn write_results(path: &std::path::Path, quick: bool) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "quick": quick,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "args": std::env::args().skip(1).collect::<Vec<_>>(),
        "nats_server": polos::nats::server::PINNED_VERSION,
        "results": *RESULTS.lock().unwrap(),
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    println!("results written to {}", path.display());
    Ok(())
}

/// Prints one result line: name, ours, raw, ratio and the target it is held to (and records
/// it for the JSON output).
pub fn report(name: &str, ours: f64, raw: f64, unit: &str, higher_is_better: bool, target: &str) {
    let ratio = if higher_is_better {
        ours / raw
    } else {
        raw / ours
    };
    RESULTS.lock().unwrap().push(serde_json::json!({
        "section": "summary",
        "metric": name.trim(),
        "ours": finite(ours),
        "raw": finite(raw),
        "ratio": finite(ratio),
        "unit": unit,
        "target": target,
    }));
    // Small values (ms, ns) need decimals, rates do not.
    let d = if raw.abs() < 10.0 || ours.abs() < 10.0 {
        3
    } else {
        1
    };
    println!(
        "{name:<34} ours {ours:>12.d$} {unit:<8} raw {raw:>12.d$} {unit:<8} ratio {ratio:>5.2}  (target {target})"
    );
}

/// `perf record -D -1 --control fifo:<path>` support: when `POLOS_BENCH_PERF_CTL` names perf's
/// control fifo, only the spans between [`profile`]`(true)` and [`profile`]`(false)` (the
/// measured part of a section) are sampled.
pub fn profile(on: bool) {
    use std::io::Write;
    if let Ok(path) = std::env::var("POLOS_BENCH_PERF_CTL") {
        if let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = fifo.write_all(if on { b"enable\n" } else { b"disable\n" });
        }
    }
}
