//! Ticker sections (BENCHMARKS.md): `fire` — N schedules due at one instant vs raw pipelined publish;
//! `load` — cold start of N schedules vs a raw `watch_with_history` load, memory per schedule and
//! CPU while nothing is due; `latency` — how long after its instant each fire is acked.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use polos::config::Config;
use polos::ticker::{Clock, ManualClock, SystemClock, Ticker, TickerStatus};
use tokio::sync::{oneshot, watch};

use crate::clock::FastClock;
use crate::raw;
use crate::support::{cpu_time, profile, rss_bytes, timed, Bench};

/// A ticker on the bench server with a frozen clock at 08:59:59 (schedules fire at 09:00).
pub struct Running {
    pub status: watch::Receiver<TickerStatus>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    clock: ManualClock,
}

fn start(b: &Bench) -> Running {
    let clock = ManualClock::frozen(Utc.with_ymd_and_hms(2026, 5, 1, 8, 59, 59).unwrap());
    start_with(b, b.client.clone(), Arc::new(clock.clone()), clock)
}

pub fn start_with(
    b: &Bench,
    client: async_nats::Client,
    ticker_clock: Arc<dyn Clock>,
    clock: ManualClock,
) -> Running {
    let mut config = Config::default();
    config.nats.url = b.server.url().to_string();
    let ticker = Ticker::new(client, &config).clock(ticker_clock);
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
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn fill(b: &Bench, workflow: &str, n: usize) -> anyhow::Result<()> {
    fill_cron(b, workflow, n, "0 9 * * *").await
}

async fn fill_cron(b: &Bench, workflow: &str, n: usize, cron: &str) -> anyhow::Result<()> {
    let value = Bytes::from(format!(r#"{{"cron":"{cron}","timezone":"UTC"}}"#));
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
    profile(true);
    let started = Instant::now();
    let cpu_ours = cpu_time();
    let server_ours = b.server_cpu();
    t.clock
        .set(Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap());
    t.status.wait_for(|s| s.fires == n as u64).await?;
    let ours = n as f64 / started.elapsed().as_secs_f64();
    let cpu_ours = cpu_time().saturating_sub(cpu_ours);
    let server_ours = b.server_cpu().saturating_sub(server_ours);
    profile(false);
    // Let the fires' state writes finish before the raw run shares the server.
    while state_messages(b).await? < n as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.shutdown().await;
    // Like the ticker: its own connection, in a spawned task (not the runtime's main thread).
    let js = async_nats::jetstream::new(async_nats::connect(b.server.url()).await?);
    let cpu_raw = cpu_time();
    let server_raw = b.server_cpu();
    let raw = tokio::spawn(async move {
        raw::publish_throughput(&js, "polos.runs.bench-raw", n)
            .await
            .map_err(|e| e.to_string())
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    let cpu_raw = cpu_time().saturating_sub(cpu_raw);
    let server_raw = b.server_cpu().saturating_sub(server_raw);
    // Wall time on a shared 2-core machine is noisy; the bench process's own CPU per message is
    // not, and shows what the ticker's per-fire work adds (the server's share is not included).
    println!(
        "{:<34} ours {:.2} µs/fire, raw {:.2} µs/msg (bench process CPU)",
        "  CPU per message",
        cpu_ours.as_secs_f64() * 1e6 / n as f64,
        cpu_raw.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "{:<34} ours {:.2} µs/fire, raw {:.2} µs/msg (nats-server CPU)",
        "",
        server_ours.as_secs_f64() * 1e6 / n as f64,
        server_raw.as_secs_f64() * 1e6 / n as f64
    );
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    crate::support::record("fire", "process_cpu_us_ours", n, per(cpu_ours), "µs");
    crate::support::record("fire", "process_cpu_us_raw", n, per(cpu_raw), "µs");
    crate::support::record("fire", "server_cpu_us_ours", n, per(server_ours), "µs");
    crate::support::record("fire", "server_cpu_us_raw", n, per(server_raw), "µs");
    Ok((ours, raw))
}

/// Raw pipelined publish (as in [`raw::publish_throughput`]) of N messages shaped exactly like
/// the ticker's fires (built beforehand by `polos::model::Fire`, untimed: same subject, three
/// headers, generated body); msgs/s. Separates what the message shape costs the server from what
/// the ticker's own per-fire work costs.
pub async fn raw_fire_shaped(b: &Bench, n: usize) -> anyhow::Result<f64> {
    use polos::model::{schedule_id, Fire, SchedulePayload, Trigger};
    let at = Utc.with_ymd_and_hms(2026, 5, 1, 9, 0, 0).unwrap();
    let messages: Vec<_> = (0..n)
        .map(|i| {
            let key = format!("user_{i}");
            let fire = Fire::scheduled(
                "bench-shaped",
                Trigger::Schedule,
                SchedulePayload {
                    timestamp: at,
                    last_timestamp: None,
                    timezone: "UTC".to_string(),
                    schedule_id: schedule_id("bench-shaped", &key),
                    key,
                    upcoming: at + chrono::Duration::days(1),
                },
            );
            (fire.subject(), fire.headers(), fire.body())
        })
        .collect();
    let js = async_nats::jetstream::new(async_nats::connect(b.server.url()).await?);
    let cpu = cpu_time();
    let r = tokio::spawn(async move {
        let start = Instant::now();
        let mut pending = futures::stream::FuturesUnordered::new();
        for (subject, headers, body) in messages {
            let ack = js
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(|e| e.to_string())?;
            pending.push(ack.into_future());
            if pending.len() >= raw::WINDOW {
                if let Some(r) = futures::StreamExt::next(&mut pending).await {
                    r.map_err(|e| e.to_string())?;
                }
            }
        }
        while let Some(r) = futures::StreamExt::next(&mut pending).await {
            r.map_err(|e| e.to_string())?;
        }
        Ok::<f64, String>(n as f64 / start.elapsed().as_secs_f64())
    })
    .await?
    .map_err(anyhow::Error::msg);
    println!(
        "{:<34} {:.2} µs/msg (bench process CPU)",
        "  CPU per fire-shaped raw message",
        cpu_time().saturating_sub(cpu).as_secs_f64() * 1e6 / n as f64
    );
    r
}

/// What `load` measured.
pub struct Load {
    /// Cold start until active (all loaded, planned, armed), seconds.
    pub ours: f64,
    /// Raw `watch_with_history` of the same keys, seconds.
    pub raw: f64,
    /// Process RSS grown per schedule, bytes.
    pub per_schedule: f64,
    /// Process CPU time over `idle` with every schedule armed and none due, seconds.
    pub idle_cpu: f64,
    /// The idle span measured.
    pub idle: Duration,
}

/// Cold start of N schedules until the ticker is firing (real clock; every schedule is due
/// 12 hours from now), then memory per schedule and CPU while nothing is due.
///
/// `api_written`: values as the API writes them (identity, `schedule_id`, source and times:
/// ≈ 250 bytes, and the reader checks the id against the key) instead of the hand-written
/// minimum (`{"cron","timezone"}`, 38 bytes).
pub async fn load(b: &Bench, n: usize, api_written: bool) -> anyhow::Result<Load> {
    let hour = (Utc::now() + chrono::Duration::hours(12))
        .format("%H")
        .to_string();
    let cron = format!("0 {hour} * * *");
    if api_written {
        let now = polos::model::time::now_seconds();
        raw::fill_bucket(&b.js, "polos_schedules", n, |i| {
            let key = format!("user_{i}");
            let mut record = polos::model::ScheduleRecord::new("bench-load", &key, &cron, "UTC");
            (record.created_at, record.updated_at) = (Some(now), Some(now));
            let value = serde_json::to_vec(&record).unwrap_or_default();
            (
                polos::model::schedule_kv_key("bench-load", &key),
                value.into(),
            )
        })
        .await?;
    } else {
        fill_cron(b, "bench-load", n, &cron).await?;
    }
    let (cpu, server) = (cpu_time(), b.server_cpu());
    let raw = raw::kv_load(&b.js, "polos_schedules", n).await?;
    let (cpu_raw, server_raw) = (cpu_time() - cpu, b.server_cpu() - server);
    // The loader's earlier read mechanism alone (async-nats' ordered pull consumer), to show
    // what pulling 10,000 at a time changed.
    let (cpu, server) = (cpu_time(), b.server_cpu());
    let pull = raw::kv_load_pull(&b.js, "polos_schedules", n).await?;
    let (cpu_pull, server_pull) = (cpu_time() - cpu, b.server_cpu() - server);
    let before = rss_bytes();
    let (cpu, server) = (cpu_time(), b.server_cpu());
    let slow = Arc::new(std::sync::atomic::AtomicU64::new(0));
    profile(true);
    let (t, ours) = timed(async {
        let unused = ManualClock::frozen(Utc::now());
        let began = Instant::now();
        let counter = slow.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |e| {
                let slow = counter.clone();
                async move {
                    if matches!(e, async_nats::Event::SlowConsumer(_)) {
                        slow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
            .connect(b.server.url())
            .await?;
        let mut t = start_with(b, client, Arc::new(SystemClock), unused);
        t.status.wait_for(|s| s.loaded).await.map(|_| ())?;
        let loaded = began.elapsed();
        t.status
            .wait_for(|s| s.active && s.schedules == n)
            .await
            .map(|_| ())?;
        println!(
            "{:<34} loaded after {:.3} s, active after {:.3} s, slow-consumer events {}",
            "cold start breakdown",
            loaded.as_secs_f64(),
            began.elapsed().as_secs_f64(),
            slow.load(std::sync::atomic::Ordering::Relaxed)
        );
        anyhow::Ok(t)
    })
    .await;
    profile(false);
    let (cpu_ours, server_ours) = (cpu_time() - cpu, b.server_cpu() - server);
    let t = t?;
    // Where the time goes: both sides share two cores with the server, so CPU is the limit.
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{:<34} ours {:.2} µs, raw {:.2} µs (bench process CPU); ours {:.2} µs, raw {:.2} µs (nats-server CPU)",
        "  CPU per schedule loaded",
        per(cpu_ours),
        per(cpu_raw),
        per(server_ours),
        per(server_raw)
    );
    println!(
        "{:<34} {:.3} s; {:.2} µs bench process CPU, {:.2} µs nats-server CPU per schedule",
        "  raw read, ordered pull (500/pull)",
        pull.as_secs_f64(),
        per(cpu_pull),
        per(server_pull)
    );
    crate::support::record("load", "pull_read_s", n, pull.as_secs_f64(), "s");
    crate::support::record("load", "process_cpu_us_pull", n, per(cpu_pull), "µs");
    crate::support::record("load", "server_cpu_us_pull", n, per(server_pull), "µs");
    crate::support::record("load", "process_cpu_us_ours", n, per(cpu_ours), "µs");
    crate::support::record("load", "process_cpu_us_raw", n, per(cpu_raw), "µs");
    crate::support::record("load", "server_cpu_us_ours", n, per(server_ours), "µs");
    crate::support::record("load", "server_cpu_us_raw", n, per(server_raw), "µs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_schedule = rss_bytes().saturating_sub(before) as f64 / n as f64;
    // Nothing is due for hours: the whole process (ticker, lease renewals, client) should sleep.
    let idle = Duration::from_secs(5);
    let cpu_before = cpu_time();
    tokio::time::sleep(idle).await;
    let idle_cpu = cpu_time().saturating_sub(cpu_before).as_secs_f64();
    anyhow::ensure!(t.status.borrow().fires == 0, "something fired while idle");
    t.shutdown().await;
    Ok(Load {
        ours: ours.as_secs_f64(),
        raw: raw.as_secs_f64(),
        per_schedule,
        idle_cpu,
        idle,
    })
}

/// `n` schedules with distinct instants (one every `60 / speed` real seconds) on a wall clock
/// running `speed`× fast; returns sorted real lateness of each fire's ack, in ms.
pub async fn fire_latency(b: &Bench, n: usize, speed: u32) -> anyhow::Result<Vec<f64>> {
    let first = Utc.with_ymd_and_hms(2026, 5, 1, 1, 0, 0).unwrap();
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let at = first + chrono::Duration::minutes(i as i64);
        let value = Bytes::from(format!(
            r#"{{"cron":"{} {} * * *","timezone":"UTC"}}"#,
            at.format("%M"),
            at.format("%H")
        ));
        let ack =
            b.js.publish(format!("$KV.polos_schedules.bench-lat.user_{i}"), value)
                .await?;
        pending.push(ack.into_future());
    }
    while let Some(r) = futures::StreamExt::next(&mut pending).await {
        r?;
    }
    // The first instant comes 3 real seconds after start: time to load and take the lease.
    let clock = FastClock::new(first - chrono::Duration::seconds(3 * speed as i64), speed);
    let unused = ManualClock::frozen(first);
    // Breakdown: when each fire reaches a plain subscriber (published, before its ack is back).
    let mut seen_by_sub = b.client.subscribe("polos.runs.bench-lat").await?;
    b.client.flush().await?;
    let arrivals = tokio::spawn(async move {
        let mut late = Vec::with_capacity(n);
        while late.len() < n {
            let Some(m) = futures::StreamExt::next(&mut seen_by_sub).await else {
                break;
            };
            let now = Instant::now();
            if let Ok(f) =
                polos::model::Fire::from_message(&m.subject, m.headers.as_ref(), &m.payload)
            {
                late.push(
                    now.saturating_duration_since(clock.real(f.payload.timestamp))
                        .as_secs_f64()
                        * 1000.0,
                );
            }
        }
        late.sort_by(f64::total_cmp);
        late
    });
    // Its own connection, like `polos scheduler`.
    let client = async_nats::connect(b.server.url()).await?;
    let t = start_with(b, client, Arc::new(clock), unused);
    let mut status = t.status.clone();
    let mut samples = Vec::with_capacity(n);
    let mut seen = 0u64;
    while seen < n as u64 {
        tokio::time::timeout(Duration::from_secs(10), status.changed()).await??;
        let now = Instant::now();
        let s = status.borrow_and_update().clone();
        if s.fires > seen {
            if let Some(instant) = s.last_fire {
                samples.push(
                    now.saturating_duration_since(clock.real(instant))
                        .as_secs_f64()
                        * 1000.0,
                );
            }
            seen = s.fires;
        }
    }
    anyhow::ensure!(
        samples.len() == n,
        "{} fires shared a round",
        n - samples.len()
    );
    let missed = t.status.borrow().missed;
    anyhow::ensure!(missed == 0, "{missed} instants were missed");
    t.shutdown().await;
    samples.sort_by(f64::total_cmp);
    let arrived = arrivals.await?;
    println!(
        "{:<34} seen by a subscriber p50 {:.3} ms p99 {:.3} ms; acked p50 {:.3} ms p99 {:.3} ms",
        "fire lateness breakdown",
        crate::support::percentile(&arrived, 50.0),
        crate::support::percentile(&arrived, 99.0),
        crate::support::percentile(&samples, 50.0),
        crate::support::percentile(&samples, 99.0),
    );
    Ok(samples)
}
