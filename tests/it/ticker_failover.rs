//! Leadership: several replicas, exactly one fires; when the leader dies a standby takes over
//! within the lease TTL (+ 0.5 s) and fires what was missed, once.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use polos::model::Trigger;
use polos::ticker::{Clock, LeaseValue, SystemClock};

use super::ticker::{at, config, frozen_at, put, stored_fires, wait_state, PublishLog, Running};
use crate::common::{eventually, within, TestEnv};

/// `hourly.global`, due at the top of every hour.
async fn put_hourly(env: &TestEnv) {
    put(
        env,
        "hourly",
        "global",
        serde_json::json!({"cron": "0 * * * *"}),
    )
    .await;
}

#[tokio::test]
async fn killing_the_leader_of_two_replicas_fires_the_missed_instant_once() {
    let (env, mut log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    let publishes = PublishLog::start(&env.client).await;
    let cfg = config(&env);
    put_hourly(&env).await;

    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    assert!(!b.status.borrow().active, "only one replica leads");
    a.wait("09:00 armed", |s| {
        s.next_fire == Some(at("2026-05-01T09:00:00Z"))
    })
    .await;

    clock.set(at("2026-05-01T09:00:00Z"));
    log.wait_for(1).await;
    // The subscriber can see the fire before the ticker has processed its ack and counted it.
    a.wait("09:00 counted", |s| s.fires == 1).await;

    // Leader dies (no more renewals, no release); 10:00 passes while nobody leads, and the
    // standby takes over later than the firing grace after it: a catch-up fire.
    let killed = Instant::now();
    a.kill();
    clock.set(at("2026-05-01T10:00:30Z"));
    b.wait_active().await;
    let takeover = killed.elapsed();
    assert!(
        // Bounded loosely so a loaded CI machine does not flake; the TTL + 0.5 s target is
        // measured by `cargo bench --bench polos -- failover`.
        takeover < Duration::from_secs(10),
        "standby took {takeover:?} (lease TTL 1 s)"
    );
    let fires = log.wait_for(2).await;
    let r = &fires[1];
    assert_eq!(r.fire.payload.timestamp, at("2026-05-01T10:00:00Z"));
    assert_eq!(
        r.fire.payload.last_timestamp,
        Some(at("2026-05-01T09:00:00Z"))
    );
    assert_eq!(r.fire.trigger, Trigger::Catchup);

    // The standby now fires on time.
    clock.set(at("2026-05-01T11:00:00Z"));
    let fires = log.wait_for(3).await;
    assert_eq!(fires[2].fire.trigger, Trigger::Schedule);
    assert_eq!(
        fires[2].fire.payload.last_timestamp,
        Some(at("2026-05-01T10:00:00Z"))
    );
    wait_state(&env, "hourly", "global", "11:00 recorded", |s| {
        s.last_timestamp == Some(at("2026-05-01T11:00:00Z"))
    })
    .await;
    assert_published_once(&env, &publishes, 3).await;
    b.stop().await;
}

/// Exact, where a quiet period would be a guess: read once the last fire's state record is
/// written (so the stream acked every fire before it), the stream stored `n` fires, and no
/// instant was published twice (a core subscription sees a second publish the stream absorbs).
async fn assert_published_once(env: &TestEnv, publishes: &PublishLog, n: usize) {
    assert_eq!(stored_fires(env).await, n as u64, "fires stored");
    eventually(&format!("{n} publishes seen"), || async {
        publishes.all().len() >= n
    })
    .await;
    let all = publishes.all();
    let distinct: std::collections::HashSet<_> = all.iter().map(|(id, _)| id).collect();
    assert_eq!((all.len(), distinct.len()), (n, n), "{all:?}");
}

#[tokio::test]
async fn a_graceful_stop_hands_over_at_once() {
    let (env, mut log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    let publishes = PublishLog::start(&env.client).await;
    let mut cfg = config(&env);
    cfg.scheduler.lease_ttl_secs = 30;
    put_hourly(&env).await;
    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    let stopped = Instant::now();
    a.stop().await;
    b.wait_active().await;
    assert!(
        // Well under the 30 s TTL: the lease was released, not left to expire.
        stopped.elapsed() < Duration::from_secs(10),
        "released lease taken in {:?} despite a 30 s TTL",
        stopped.elapsed()
    );
    clock.set(at("2026-05-01T09:00:00Z"));
    log.wait_for(1).await;
    wait_state(&env, "hourly", "global", "09:00 recorded", |s| s.fires == 1).await;
    assert_published_once(&env, &publishes, 1).await;
    b.stop().await;
}

/// A `polos scheduler` child process, SIGKILLed on drop.
struct Replica {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Replica {
    fn spawn(env: &TestEnv) -> Replica {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_polos"))
            .arg("scheduler")
            .env("POLOS_NATS__URL", env.server.url())
            .env("POLOS_SCHEDULER__LEASE_TTL_SECS", "1")
            .env("POLOS_LOG__LEVEL", "polos=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Replica { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid of the replica holding the lease (waits, bounded, until one of `replicas` does).
async fn leader_pid(env: &TestEnv, replicas: &[Replica]) -> u32 {
    let leases = env.js.get_key_value("polos_leases").await.unwrap();
    let pids: Vec<u32> = replicas.iter().map(|r| r.child.id()).collect();
    within("a replica leads", async {
        loop {
            if let Some(v) = leases.get("scheduler").await.unwrap() {
                let v: LeaseValue = serde_json::from_slice(&v).unwrap();
                let pid: u32 = v.holder.split('-').next().unwrap().parse().unwrap();
                if pids.contains(&pid) {
                    return pid;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// The first instant of a per-minute cron at least `margin` away.
fn next_minute_at_least(margin: chrono::Duration) -> chrono::DateTime<Utc> {
    let now = Utc::now();
    let mut instant = polos::cron::CronSchedule::parse("* * * * *", "UTC")
        .unwrap()
        .next_after(now)
        .unwrap();
    if instant - now < margin {
        instant += chrono::Duration::minutes(1);
    }
    instant
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`) to `pid`, as an operator or a host would.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Real processes, real clock: kill -9 the leader just before an instant; the standby fires that
/// instant exactly once (publishes counted by a core subscription, so a second publish the
/// stream would absorb still counts). How fast is measured by `cargo bench -- failover`.
#[tokio::test]
async fn kill_9_of_the_leader_process_fires_the_instant_once() {
    let env = TestEnv::start().await;
    let publishes = PublishLog::start(&env.client).await;
    put(
        &env,
        "minutely",
        "global",
        serde_json::json!({"cron": "* * * * *"}),
    )
    .await;
    let mut replicas = vec![Replica::spawn(&env), Replica::spawn(&env)];
    let leader_pid = leader_pid(&env, &replicas).await;
    // Kill the leader 300 ms before the first instant at least 2 s away.
    let instant = next_minute_at_least(chrono::Duration::seconds(2));
    SystemClock
        .sleep_until(instant - chrono::Duration::milliseconds(300))
        .await;
    let index = replicas
        .iter()
        .position(|r| r.child.id() == leader_pid)
        .unwrap();
    let mut leader = replicas.remove(index);
    leader.child.kill().unwrap();
    let _ = leader.child.wait();

    let id = format!(
        "{}@{}",
        polos::model::schedule_id("minutely", "global"),
        polos::model::time::format_instant(instant)
    );
    eventually("the standby fires the instant", || async {
        publishes.count(&id) >= 1
    })
    .await;
    // The standby records the fire once it is stored; by then every publish of it happened.
    wait_state(&env, "minutely", "global", "the instant recorded", |s| {
        s.last_timestamp >= Some(instant)
    })
    .await;
    assert_eq!(
        publishes.count(&id),
        1,
        "{:?}\n{}",
        publishes.all(),
        replicas[0].output()
    );
}

/// Guarantee 1 (fencing), with real processes and signals: the leader is stopped (SIGSTOP) a
/// second before an instant and resumed (SIGCONT) after the standby fired that instant and the
/// stream's duplicate window (shortened to 2 s here) has passed. The resumed leader publishes
/// nothing: its lease deadline passed while it was stopped, so it holds its fire until it learns
/// that it lost the lease, then drops it.
#[tokio::test]
async fn a_leader_stopped_past_the_duplicate_window_publishes_nothing_when_resumed() {
    let env = TestEnv::start().await;
    put(
        &env,
        "minutely",
        "global",
        serde_json::json!({"cron": "* * * * *"}),
    )
    .await;
    let publishes = PublishLog::start(&env.client).await;
    let replicas = vec![Replica::spawn(&env), Replica::spawn(&env)];
    let leader_pid = leader_pid(&env, &replicas).await;
    for r in &replicas {
        // Both have applied `streams/` (which would undo the shorter window below).
        eventually("replica started its ticker", || async {
            r.output().contains("scheduler ticker starting")
        })
        .await;
    }
    let mut stream = env.js.get_stream("POLOS_RUNS").await.unwrap();
    let mut runs = stream.info().await.unwrap().config.clone();
    runs.duplicate_window = Duration::from_secs(2);
    env.js.update_stream(runs).await.unwrap();

    let instant = next_minute_at_least(chrono::Duration::seconds(3));
    SystemClock
        .sleep_until(instant - chrono::Duration::seconds(1))
        .await;
    signal(leader_pid, "STOP");
    let id = format!(
        "{}@{}",
        polos::model::schedule_id("minutely", "global"),
        polos::model::time::format_instant(instant)
    );
    eventually("the standby fires the instant", || async {
        publishes.count(&id) >= 1
    })
    .await;
    // The fault: stay stopped until the stream would no longer recognise a duplicate.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(leader_pid, "CONT");
    let leader = replicas
        .iter()
        .find(|r| r.child.id() == leader_pid)
        .unwrap();
    eventually("the resumed leader learns it lost the lease", || async {
        leader.output().contains("lost the scheduler lease")
    })
    .await;
    // Past this point it cannot publish (no lease); whatever it did publish is counted.
    assert_eq!(
        publishes.count(&id),
        1,
        "the resumed leader published the instant again: {:?}\n--- resumed leader ---\n{}",
        publishes.all(),
        leader.output()
    );
    let distinct: std::collections::HashSet<_> =
        publishes.all().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        distinct.len(),
        publishes.all().len(),
        "{:?}",
        publishes.all()
    );
}

/// Three replicas; the leader is killed twice, each time while an instant passes: every instant
/// is fired exactly once, and the payloads chain.
#[tokio::test]
async fn three_replicas_survive_two_leader_kills() {
    let (env, mut log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    let publishes = PublishLog::start(&env.client).await;
    let cfg = config(&env);
    put_hourly(&env).await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let mut r = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
        r.wait("loaded", |s| s.loaded).await;
        replicas.push(r);
    }
    let leader = |replicas: &[Running]| replicas.iter().position(|r| r.status.borrow().active);
    let mut l = 0;
    within("a leader", async {
        loop {
            if let Some(i) = leader(&replicas) {
                l = i;
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    replicas[l]
        .wait("09:00 armed", |s| {
            s.next_fire == Some(at("2026-05-01T09:00:00Z"))
        })
        .await;
    clock.set(at("2026-05-01T09:00:00Z"));
    log.wait_for(1).await;
    for (n, (previous, instant)) in [
        ("2026-05-01T09:00:00Z", "2026-05-01T10:00:00Z"),
        ("2026-05-01T10:00:00Z", "2026-05-01T11:00:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        // Kill between fires, once the leader has recorded its fire. (Killed in the
        // milliseconds between the stream storing a fire and the leader recording it, the next
        // catch-up fire is still exactly-once but may carry an older `last_timestamp`: see
        // `restart_mid_series_loses_and_doubles_nothing` for that window.)
        wait_state(&env, "hourly", "global", "fire recorded", |s| {
            s.last_timestamp == Some(at(previous))
        })
        .await;
        replicas.remove(l).kill();
        clock.set(at(instant));
        l = within("a new leader", async {
            loop {
                if let Some(i) = leader(&replicas) {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let fires = log.wait_for(n + 2).await;
        assert_eq!(fires[n + 1].fire.payload.timestamp, at(instant));
    }
    clock.set(at("2026-05-01T12:00:00Z"));
    let fires = log.wait_for(4).await.to_vec();
    wait_state(&env, "hourly", "global", "12:00 recorded", |s| {
        s.last_timestamp == Some(at("2026-05-01T12:00:00Z"))
    })
    .await;
    // Each leader was killed once its fire was recorded, so nothing is re-published.
    assert_published_once(&env, &publishes, 4).await;
    let stamps: Vec<_> = fires.iter().map(|r| r.fire.payload.timestamp).collect();
    assert_eq!(
        stamps,
        [
            at("2026-05-01T09:00:00Z"),
            at("2026-05-01T10:00:00Z"),
            at("2026-05-01T11:00:00Z"),
            at("2026-05-01T12:00:00Z")
        ]
    );
    for w in fires.windows(2) {
        assert_eq!(
            w[1].fire.payload.last_timestamp,
            Some(w[0].fire.payload.timestamp)
        );
    }
    replicas.pop().unwrap().stop().await;
}

/// `polos scheduler` serves the schedules API beside the ticker: a schedule upserted through
/// the API is armed by the ticker, and `get` shows the ticker's state.
#[tokio::test]
async fn scheduler_process_serves_the_api_and_arms_upserts() {
    let env = TestEnv::start().await;
    let replica = Replica::spawn(&env);
    let reply = within("upsert answered", async {
        loop {
            let request =
                serde_json::json!({"workflow": "api-wf", "cron": "0 9 * * *", "key": "u1"});
            match env
                .client
                .request("polos.schedules.upsert", request.to_string().into())
                .await
            {
                Ok(m) => return serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap(),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert_eq!(
        reply["schedule_id"],
        polos::model::schedule_id("api-wf", "u1"),
        "{reply}\n{}",
        replica.output()
    );
    let next = reply["next"][0].as_str().unwrap().to_string();
    wait_state(&env, "api-wf", "u1", "ticker armed the upsert", |s| {
        s.next.map(polos::model::time::format_instant).as_deref() == Some(next.as_str())
    })
    .await;
    let got = env
        .client
        .request(
            "polos.schedules.get",
            serde_json::json!({"workflow": "api-wf", "key": "u1"})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    let got: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(got["state"]["next"], next.as_str(), "{got}");
    assert_eq!(got["state"]["fires"], 0, "{got}");
}
