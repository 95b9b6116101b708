//! The scheduler's guarantees under faults, in process with an injected clock: a fire is never
//! dropped (a stream missing or electing its leader, a killed cluster node), state is never
//! dropped, a takeover never ends the process, catch-up is right at its edges, the lease is kept
//! hygienic, and a replica competes only once loaded. Each test names the guarantee it proves.
//! (Process-level faults — kill -9, SIGSTOP — are in `ticker_failover` and the fault suite.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use futures::StreamExt;
use polos::config::{Config, StorageConfig};
use polos::model::{schedule_id, Fire, Trigger};
use polos::ticker::{LeaseValue, ManualClock, Ticker, TickerError};

use super::ticker::{at, config, frozen_at, put, put_digests, wait_state, PublishLog, Running};
use crate::common::{eventually, stream_info, within, TestCluster, TestEnv};

/// The `Nats-Msg-Id` of `workflow.key` fired at `instant`.
fn msg_id(workflow: &str, key: &str, instant: &str) -> String {
    format!("{}@{instant}", schedule_id(workflow, key))
}

/// Every fire stored in `POLOS_RUNS` right now, read by one fresh consumer (nothing else
/// consumes in the tests that use this, so the work queue still holds every fire; nothing is
/// acked).
async fn stored_fires(js: &jetstream::Context) -> Vec<Fire> {
    let stream = js.get_stream("POLOS_RUNS").await.unwrap();
    let total = stream_info(js, "POLOS_RUNS").await.state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut fires = Vec::with_capacity(total);
    within("read every stored fire", async {
        while fires.len() < total {
            let m = messages.next().await.unwrap().unwrap();
            fires.push(Fire::from_message(&m.subject, m.headers.as_ref(), &m.payload).unwrap());
        }
    })
    .await;
    fires
}

/// The current lease value and the replica it names.
async fn lease(js: &jetstream::Context) -> Option<(LeaseValue, u64)> {
    let kv = js.get_key_value("polos_leases").await.unwrap();
    let entry = kv.entry("scheduler").await.unwrap()?;
    if entry.operation != async_nats::jetstream::kv::Operation::Put {
        return None;
    }
    Some((
        serde_json::from_slice(&entry.value).unwrap(),
        entry.revision,
    ))
}

/// Guarantee 0 (single server) and 7: while the runs stream is missing, due fires are retried
/// for as long as it takes (here longer than the old 3.3 s retry budget), changes keep being
/// applied meanwhile (a deleted and a paused schedule do not fire), and every other schedule is
/// stored exactly once, on time, when the stream is back.
#[tokio::test]
async fn fires_wait_out_a_missing_stream_and_go_once_each() {
    let env = TestEnv::start().await;
    let clock = ManualClock::frozen(at("2026-05-01T08:59:00Z"));
    put_digests(&env, 100, 32).await;
    let mut a = Running::start(env.connect().await, &config(&env), Arc::new(clock.clone()));
    a.wait_active().await;
    a.wait("09:00 armed", |s| {
        s.next_fire == Some(at("2026-05-01T09:00:00Z"))
    })
    .await;
    env.js.delete_stream("POLOS_RUNS").await.unwrap();
    clock.set(at("2026-05-01T09:00:00Z"));
    let kv = env.js.get_key_value("polos_schedules").await.unwrap();
    kv.delete("digest.user_0").await.unwrap();
    kv.put(
        "digest.user_1",
        r#"{"cron":"0 9 * * *","paused":true}"#.into(),
    )
    .await
    .unwrap();
    // The outage: longer than any fixed retry budget.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!a.is_finished());
    assert_eq!(a.status.borrow().fires, 0, "nothing can be stored yet");
    polos::nats::streams::apply(&env.js, &StorageConfig::default())
        .await
        .unwrap();
    a.wait("98 fires stored", |s| s.fires == 98).await;
    let fires = stored_fires(&env.js).await;
    assert_eq!(
        fires.len(),
        98,
        "each schedule once, not the deleted or paused one"
    );
    let mut keys: Vec<&str> = fires.iter().map(|f| f.payload.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 98);
    assert!(!keys.contains(&"user_0") && !keys.contains(&"user_1"));
    assert!(fires.iter().all(
        |f| f.trigger == Trigger::Schedule && f.payload.timestamp == at("2026-05-01T09:00:00Z")
    ));
    assert_eq!(a.status.borrow().missed, 0, "a retried fire is not missed");
    a.stop().await;
}

/// Guarantee 0 on a 3-node cluster with R3 buckets and stream: kill the server leading
/// `POLOS_RUNS`, then the one leading `KV_polos_leases`, then the one leading
/// `KV_polos_schedule_state`, each right before an instant: every schedule still fires every
/// instant exactly once (counted in the stream afterwards), and its state records all three.
#[tokio::test]
async fn killing_the_server_leading_each_stream_loses_no_fire() {
    let mut tc = TestCluster::start().await;
    let mut cfg = Config::default();
    cfg.nats.url = tc.cluster.urls().join(",");
    cfg.storage.replicas = 3;
    cfg.scheduler.lease_ttl_secs = 2;
    let kv = tc.js.get_key_value("polos_schedules").await.unwrap();
    const N: usize = 30;
    for i in 0..N {
        kv.put(format!("hourly.k{i}"), r#"{"cron":"0 * * * *"}"#.into())
            .await
            .unwrap();
    }
    let clock = ManualClock::frozen(at("2026-05-01T08:59:00Z"));
    let client = async_nats::connect(tc.cluster.urls()).await.unwrap();
    let mut ticker = Running::start(client, &cfg, Arc::new(clock.clone()));
    ticker.wait_active().await;
    let instants = [
        "2026-05-01T09:00:00Z",
        "2026-05-01T10:00:00Z",
        "2026-05-01T11:00:00Z",
    ];
    for (i, (stream, instant)) in ["POLOS_RUNS", "KV_polos_leases", "KV_polos_schedule_state"]
        .into_iter()
        .zip(instants)
        .enumerate()
    {
        ticker
            .wait("armed", |s| s.next_fire == Some(at(instant)))
            .await;
        let leader = within("stream leader known", async {
            loop {
                let info = tc
                    .js
                    .get_stream(stream)
                    .await
                    .ok()
                    .map(|s| s.cached_info().clone());
                if let Some(name) = info.and_then(|i| i.cluster).and_then(|c| c.leader) {
                    return name;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let index: usize = leader.trim_start_matches('s').parse::<usize>().unwrap() - 1;
        tc.cluster.servers[index].kill();
        clock.set(at(instant));
        ticker
            .wait(&format!("every fire of {instant} stored"), |s| {
                s.fires == (N * (i + 1)) as u64
            })
            .await;
        tc.cluster.servers[index].restart().unwrap();
        // Back to three current replicas before the next kill.
        eventually("cluster healthy again", || {
            let js = tc.js.clone();
            async move {
                let info = js
                    .get_stream(stream)
                    .await
                    .ok()
                    .map(|s| s.cached_info().clone());
                info.and_then(|i| i.cluster)
                    .is_some_and(|c| c.leader.is_some() && c.replicas.iter().all(|r| r.current))
            }
        })
        .await;
    }
    assert!(!ticker.is_finished());
    assert_eq!(ticker.status.borrow().missed, 0);
    let fires = stored_fires(&tc.js).await;
    let mut seen: Vec<(String, String)> = fires
        .iter()
        .map(|f| {
            (
                f.payload.key.clone(),
                polos::model::time::format_instant(f.payload.timestamp),
            )
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, String)> = (0..N)
        .flat_map(|i| {
            instants
                .iter()
                .map(move |t| (format!("k{i}"), t.to_string()))
        })
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "every (schedule, instant) exactly once");
    ticker.stop().await;
    let states = tc.js.get_key_value("polos_schedule_state").await.unwrap();
    for i in 0..N {
        let s: polos::model::ScheduleState =
            serde_json::from_slice(&states.get(format!("hourly.k{i}")).await.unwrap().unwrap())
                .unwrap();
        assert_eq!(s.fires, 3, "hourly.k{i}: {s:?}");
        assert_eq!(s.last_timestamp, Some(at(instants[2])));
    }
}

/// Guarantee 3: a state write that fails (the state bucket's stream is gone) stays pending and
/// lands once the bucket is back, without another fire; a successor then continues after the
/// recorded fire and publishes it no second time.
#[tokio::test]
async fn a_failed_state_write_is_retried_until_it_lands() {
    let (env, _log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    let cfg = config(&env);
    put(
        &env,
        "hourly",
        "global",
        serde_json::json!({"cron": "0 * * * *"}),
    )
    .await;
    let publishes = PublishLog::start(&env.client).await;
    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    a.wait("09:00 armed", |s| {
        s.next_fire == Some(at("2026-05-01T09:00:00Z"))
    })
    .await;
    env.js
        .delete_stream("KV_polos_schedule_state")
        .await
        .unwrap();
    clock.set(at("2026-05-01T09:00:00Z"));
    a.wait("09:00 stored", |s| s.fires == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // the outage
    polos::nats::streams::apply(&env.js, &StorageConfig::default())
        .await
        .unwrap();
    wait_state(&env, "hourly", "global", "the pending write lands", |s| {
        s.last_timestamp == Some(at("2026-05-01T09:00:00Z")) && s.fires == 1
    })
    .await;

    a.kill();
    clock.set(at("2026-05-01T09:30:00Z"));
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait_active().await;
    b.wait("10:00 armed", |s| {
        s.next_fire == Some(at("2026-05-01T10:00:00Z"))
    })
    .await;
    assert_eq!(
        publishes.count(&msg_id("hourly", "global", "2026-05-01T09:00:00Z")),
        1,
        "the successor must not publish 09:00 again: {:?}",
        publishes.all()
    );
    b.stop().await;
}

/// Guarantee 4: a takeover whose state records cannot be read (the bucket's stream is gone)
/// keeps retrying instead of ending the process, and fires once the bucket is back.
#[tokio::test]
async fn a_takeover_rides_out_an_unreadable_state_bucket() {
    let (env, mut log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    let cfg = config(&env);
    put(
        &env,
        "hourly",
        "global",
        serde_json::json!({"cron": "0 * * * *"}),
    )
    .await;
    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    env.js
        .delete_stream("KV_polos_schedule_state")
        .await
        .unwrap();
    let holder = lease(&env.js).await.unwrap().0.holder;
    a.kill();
    eventually("the standby wins the lease", || async {
        lease(&env.js)
            .await
            .is_some_and(|(v, _)| v.holder != holder)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // reads keep failing meanwhile
    assert!(!b.is_finished(), "the takeover must not end the ticker");
    assert!(!b.status.borrow().active);
    polos::nats::streams::apply(&env.js, &StorageConfig::default())
        .await
        .unwrap();
    b.wait_active().await;
    clock.set(at("2026-05-01T09:00:00Z"));
    let fires = log.wait_for(1).await;
    assert_eq!(fires[0].fire.payload.timestamp, at("2026-05-01T09:00:00Z"));
    b.stop().await;
}

/// Guarantee 5: an instant that falls due while the lease changes hands fires on time (as
/// `schedule`), even under policy `skip`, when the successor takes over within the firing grace.
#[tokio::test]
async fn an_instant_due_during_a_handover_fires_on_time_even_under_skip() {
    let (env, mut log, clock) = frozen_at("2026-05-01T08:59:50Z").await;
    let cfg = config(&env);
    put(
        &env,
        "hourly",
        "global",
        serde_json::json!({"cron": "0 * * * *", "catchup": "skip"}),
    )
    .await;
    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    a.kill();
    clock.set(at("2026-05-01T09:00:00Z"));
    b.wait_active().await;
    let fires = log.wait_for(1).await;
    assert_eq!(fires[0].fire.payload.timestamp, at("2026-05-01T09:00:00Z"));
    assert_eq!(fires[0].fire.trigger, Trigger::Schedule);
    assert_eq!(b.status.borrow().missed, 0);
    b.stop().await;
}

/// Guarantee 5: a cron changed, and a schedule paused then resumed, while no leader ran take
/// effect from the moment they were written: the successor's catch-up (policy `all`) fires
/// neither instants of the new cron from before it was written nor the paused time.
#[tokio::test]
async fn changes_while_no_leader_ran_take_effect_from_when_they_were_written() {
    let (env, mut log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    let mut slow = config(&env);
    slow.scheduler.lease_ttl_secs = 3;
    let fast = config(&env);
    let hourly = serde_json::json!({"cron": "0 * * * *", "catchup": "all"});
    put(&env, "sync", "changed", hourly.clone()).await;
    put(&env, "sync", "paused", hourly.clone()).await;
    let mut a = Running::start(env.connect().await, &slow, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &fast, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    clock.set(at("2026-05-01T09:00:00Z"));
    log.wait_for(2).await;
    for key in ["changed", "paused"] {
        wait_state(&env, "sync", key, "09:00 recorded", |s| {
            s.last_timestamp == Some(at("2026-05-01T09:00:00Z"))
        })
        .await;
    }
    // The leader dies; the standby waits out the dead leader's 3 s lease (the one written in
    // the lease, not its own 1 s), during which the changes are made.
    a.kill();
    clock.set(at("2026-05-01T09:10:00Z"));
    let mut paused = hourly.clone();
    paused["paused"] = true.into();
    put(&env, "sync", "paused", paused).await;
    clock.set(at("2026-05-01T09:40:00Z"));
    let quarterly = serde_json::json!({"cron": "*/15 * * * *", "catchup": "all"});
    put(&env, "sync", "changed", quarterly.clone()).await;
    put(&env, "sync", "paused", quarterly).await;
    put(
        &env,
        "sync",
        "marker",
        serde_json::json!({"cron": "0 0 1 1 *"}),
    )
    .await;
    // Changes apply in order: once the marker is in the standby's table, so are they.
    b.wait("changes applied", |s| s.schedules == 3).await;
    assert!(
        !b.status.borrow().active,
        "took over before the dead leader's TTL"
    );
    clock.set(at("2026-05-01T10:20:00Z"));
    b.wait_active().await;
    let fires = log.wait_for(2 + 6).await.to_vec();
    for key in ["changed", "paused"] {
        let times: Vec<String> = fires[2..]
            .iter()
            .filter(|r| r.fire.payload.key == key)
            .map(|r| polos::model::time::format_instant(r.fire.payload.timestamp))
            .collect();
        assert_eq!(
            times,
            [
                "2026-05-01T09:45:00Z",
                "2026-05-01T10:00:00Z",
                "2026-05-01T10:15:00Z"
            ],
            "{key}: only instants after the change at 09:40"
        );
    }
    b.stop().await;
}

/// Guarantee 2: a renewal whose ack was lost (the key names us at a newer revision) keeps the
/// replica leading without a new takeover.
#[tokio::test]
async fn a_renewal_whose_ack_was_lost_keeps_leading() {
    let (env, _log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    put(
        &env,
        "hourly",
        "global",
        serde_json::json!({"cron": "0 * * * *"}),
    )
    .await;
    let mut a = Running::start(env.connect().await, &config(&env), Arc::new(clock.clone()));
    a.wait_active().await;
    assert_eq!(a.status.borrow().takeovers, 1);
    let kv = env.js.get_key_value("polos_leases").await.unwrap();
    let entry = kv.entry("scheduler").await.unwrap().unwrap();
    // What a renewal that landed without its ack leaves behind: our value, a newer revision.
    let landed = kv.put("scheduler", entry.value.clone()).await.unwrap();
    eventually("renewed on the landed revision", || async {
        lease(&env.js).await.is_some_and(|(_, rev)| rev > landed)
    })
    .await;
    assert!(a.status.borrow().active);
    assert_eq!(a.status.borrow().takeovers, 1, "no second takeover");
    a.stop().await;
}

/// Guarantee 2: a standby waits the TTL written in the lease by its holder, not only its own.
#[tokio::test]
async fn a_standby_waits_the_ttl_written_in_the_lease() {
    let (env, _log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    put(
        &env,
        "hourly",
        "global",
        serde_json::json!({"cron": "0 * * * *"}),
    )
    .await;
    let mut slow = config(&env);
    slow.scheduler.lease_ttl_secs = 4;
    let mut a = Running::start(env.connect().await, &slow, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &config(&env), Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    let killed = Instant::now();
    a.kill();
    b.wait_active().await;
    let waited = killed.elapsed();
    assert!(
        waited >= Duration::from_millis(3500),
        "the standby (TTL 1 s) took over after {waited:?}, before the holder's 4 s TTL"
    );
    b.stop().await;
}

/// Guarantee 6: a replica competes for the lease only once its schedule table is loaded, so a
/// rolling restart never hands the lease to a replica that must first spend the load.
#[tokio::test]
async fn a_replica_competes_only_once_loaded() {
    let (env, _log, clock) = frozen_at("2026-05-01T08:00:00Z").await;
    put_digests(&env, 30_000, 256).await;
    let cfg = config(&env);
    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let first = lease(&env.js).await.unwrap().0.holder;
    let b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.stop().await;
    within("the new replica leads", async {
        loop {
            let status = b.status.borrow().clone();
            if let Some((v, _)) = lease(&env.js).await {
                if v.holder != first {
                    assert!(
                        status.loaded || b.status.borrow().loaded,
                        "the lease went to a replica still loading its schedules"
                    );
                }
            }
            if status.active {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    b.stop().await;
}

/// Guarantee 8: settings that cannot work are refused at start with a clear error (a catch-up
/// window of u64::MAX seconds used to panic inside the calendar arithmetic).
#[tokio::test]
async fn impossible_settings_are_refused_at_start() {
    let env = TestEnv::start().await;
    let mut cfg = config(&env);
    cfg.scheduler.catchup_window_secs = u64::MAX;
    let err = within(
        "the ticker refuses to start",
        Ticker::new(env.connect().await, &cfg).run(std::future::pending()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TickerError::Config(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("scheduler.catchup_window_secs")
            && text.contains("POLOS_SCHEDULER__CATCHUP_WINDOW_SECS"),
        "{text}"
    );
}
