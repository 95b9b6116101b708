//! Schedule policies end to end (issue 12: jitter, bounds, back-fill): through the API, the Rust
//! client and the ticker on a single server and on a 3-node cluster, with injected clocks.
//! Expectations are computed from outside the scheduler: jitter offsets from the documented
//! pure function, fires from the stream and from core subscriptions, runs from `polos_runs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use chrono::{DateTime, DurationRound, Utc};
use futures::StreamExt;
use polos::api::ErrorCode;
use polos::client::ClientError;
use polos::config::Config;
use polos::model::time::format_instant;
use polos::model::{
    jitter_offset_ms, jitter_seed, run_id_for, schedule_id, schedule_kv_key, BackfillProgress,
    Ended, Fire, RunStatus, SchedulePayload, ScheduleRecord, Trigger,
};
use polos::ticker::ManualClock;
use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
use polos::{schedules, PolosClient};
use serde_json::json;

use super::schedules_api::serve_api;
use super::ticker::{
    at, config, frozen_at, put, put_digests, state, wait_state, PublishLog, Running,
};
use super::worker::{run_record, spawn_worker, wait_status};
use crate::common::{eventually, polos_cli, stream_info, within, TestCluster, TestEnv};

/// The jitter offset, in milliseconds, of `workflow.key` at `instant` for a daily cron (whose
/// next instant is a day away, so the window is `jitter_secs` whole): the README's formula.
fn offset_ms(workflow: &str, key: &str, instant: DateTime<Utc>, jitter_secs: u64) -> u64 {
    jitter_offset_ms(
        jitter_seed(&schedule_id(workflow, key)),
        instant,
        jitter_secs * 1000,
    )
}

/// A fresh server and a clock frozen at `start` (no fire log: the tests here read the stream
/// with their own consumer).
async fn frozen(start: &str) -> (TestEnv, ManualClock) {
    (TestEnv::start().await, ManualClock::frozen(at(start)))
}

/// The code and message of an API refusal.
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Api { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Every fire the stream stores, in stream order, with its stream sequence: one consumer that
/// acks (so nothing else may consume in the tests that use it).
struct StreamLog {
    seen: Arc<Mutex<Vec<(u64, Fire)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl StreamLog {
    async fn start(js: &jetstream::Context) -> StreamLog {
        let consumer = js
            .get_stream("POLOS_RUNS")
            .await
            .unwrap()
            .create_consumer(pull::Config {
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut messages = consumer.messages().await.unwrap();
            while let Some(m) = messages.next().await {
                let Ok(m) = m else { continue };
                let fire = Fire::from_message(&m.subject, m.headers.as_ref(), &m.payload).unwrap();
                let seq = m.info().unwrap().stream_sequence;
                m.ack().await.unwrap();
                sink.lock().unwrap().push((seq, fire));
            }
        });
        StreamLog { seen, _task: task }
    }

    fn all(&self) -> Vec<(u64, Fire)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `f` holds for the fires stored so far.
    async fn wait(&self, what: &str, f: impl Fn(&[(u64, Fire)]) -> bool) {
        let f = &f;
        eventually(what, || async move { f(&self.all()) }).await;
    }

    /// [`StreamLog::wait`] with a longer bound, for work paced by a rate on a loaded machine.
    async fn wait_long(
        &self,
        what: &str,
        limit: std::time::Duration,
        f: impl Fn(&[(u64, Fire)]) -> bool,
    ) {
        tokio::time::timeout(limit, async {
            while !f(&self.all()) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for: {what}"));
    }
}

/// Guarantee of item 3: with `scheduler.jitter_secs = 60`, 200 schedules due at 09:00 go out
/// spread over the minute, each exactly at its documented offset (checked at 09:00:20, :40 and
/// :65 against the pure function), with the nominal instant in the payload, the run id and
/// `Nats-Msg-Id`. A failover in the middle keeps every offset: the successor fires exactly the
/// schedules whose offsets fall in its part of the window, each once. A schedule with
/// `jitter_secs: 0` fires on the instant.
#[tokio::test]
async fn jitter_spreads_fires_with_nominal_instants_and_the_same_offsets_across_failover() {
    let (env, clock) = frozen("2026-05-01T08:59:00Z").await;
    let stored = StreamLog::start(&env.js).await;
    let publishes = PublishLog::start(&env.client).await;
    let mut cfg = config(&env);
    cfg.scheduler.jitter_secs = 60;
    const N: usize = 200;
    put_digests(&env, N, 32).await;
    put(
        &env,
        "digest",
        "exact",
        json!({"cron": "0 9 * * *", "jitter_secs": 0}),
    )
    .await;
    let nine = at("2026-05-01T09:00:00Z");
    let offsets: BTreeMap<String, u64> = (0..N)
        .map(|i| {
            let key = format!("user_{i}");
            let ms = offset_ms("digest", &key, nine, 60);
            (key, ms)
        })
        .chain([("exact".to_string(), 0)])
        .collect();
    // Spread: every 10 s of the minute holds a sixth of the schedules, give or take.
    for tenth in 0..6 {
        let n = offsets.values().filter(|ms| **ms / 10_000 == tenth).count();
        assert!((15..=60).contains(&n), "{n} offsets in second {}0", tenth);
    }
    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    a.wait("the unjittered schedule armed first, at 09:00:00", |s| {
        s.next_fire == Some(nine)
    })
    .await;

    let due_by = |second: i64| -> BTreeSet<String> {
        offsets
            .iter()
            .filter(|(_, ms)| **ms <= second as u64 * 1000)
            .map(|(k, _)| k.clone())
            .collect()
    };
    let fired_keys = |log: &[(u64, Fire)]| -> BTreeSet<String> {
        log.iter().map(|(_, f)| f.payload.key.clone()).collect()
    };
    // The clock moves a second at a time and each second's fires are awaited, so every fire is
    // found within the grace of its jittered time: all go out on time, as `schedule`.
    for second in 0..=20 {
        clock.set(nine + chrono::Duration::seconds(second));
        let n = due_by(second).len() as u64;
        a.wait(&format!("A's fires due by second {second}"), |s| {
            s.fires == n
        })
        .await;
    }
    let first = due_by(20);
    stored
        .wait("the first 20 s of fires stored", |l| l.len() >= first.len())
        .await;
    assert_eq!(
        fired_keys(&stored.all()),
        first,
        "exactly the offsets up to 20 s"
    );
    // A successor must continue after these: wait for their state records.
    for key in &first {
        wait_state(&env, "digest", key, "fire recorded", |s| {
            s.last_timestamp == Some(nine)
        })
        .await;
    }
    a.kill();
    b.wait_active().await;
    for second in 21..=61 {
        clock.set(nine + chrono::Duration::seconds(second));
        let n = (due_by(second).len() - first.len()) as u64;
        b.wait(&format!("B's fires due by second {second}"), |s| {
            s.fires == n
        })
        .await;
        if second == 40 {
            stored
                .wait("the fires up to 40 s stored", |l| {
                    l.len() >= due_by(40).len()
                })
                .await;
            let after_a = fired_keys(&stored.all()[first.len()..]);
            let second_part: BTreeSet<String> = due_by(40).difference(&first).cloned().collect();
            assert_eq!(after_a, second_part, "the successor keeps every offset");
        }
    }
    stored.wait("every fire stored", |l| l.len() > N).await;
    let all = stored.all();
    assert_eq!(fired_keys(&all).len(), N + 1);
    for (_, fire) in &all {
        let id = schedule_id("digest", &fire.payload.key);
        assert_eq!(fire.payload.timestamp, nine, "nominal timestamp: {fire:?}");
        assert_eq!(fire.trigger, Trigger::Schedule);
        assert_eq!(fire.run_id, run_id_for(&id, nine));
        assert_eq!(
            publishes.count(&format!("{id}@2026-05-01T09:00:00Z")),
            1,
            "{} published once",
            fire.payload.key
        );
    }
    assert_eq!(b.status.borrow().missed, 0);
    b.stop().await;
}

/// Guarantee of item 3: "late" is measured from the jittered time. A schedule under policy
/// `skip` whose offset is over 40 s is found due 3 s after its jittered time (43+ s after the
/// nominal instant): it fires on time as `schedule`, not missed; and the ticker's timer is set
/// to the jittered time.
#[tokio::test]
async fn the_firing_grace_counts_from_the_jittered_time() {
    let (env, mut log, clock) = frozen_at("2026-05-01T08:59:00Z").await;
    let nine = at("2026-05-01T09:00:00Z");
    let key = (0..)
        .map(|i| format!("late_{i}"))
        .find(|k| (40_000..55_000).contains(&offset_ms("report", k, nine, 60)))
        .unwrap();
    let offset = offset_ms("report", &key, nine, 60) as i64;
    put(
        &env,
        "report",
        &key,
        json!({"cron": "0 9 * * *", "jitter_secs": 60, "catchup": "skip"}),
    )
    .await;
    let mut t = Running::start(env.connect().await, &config(&env), Arc::new(clock.clone()));
    t.wait_active().await;
    let due = nine + chrono::Duration::milliseconds(offset);
    t.wait("armed at the jittered time", |s| s.next_fire == Some(due))
        .await;
    clock.set(due + chrono::Duration::seconds(3));
    let fires = log.wait_for(1).await;
    assert_eq!(fires[0].fire.payload.timestamp, nine);
    assert_eq!(fires[0].fire.trigger, Trigger::Schedule);
    assert_eq!(t.status.borrow().missed, 0);
    t.stop().await;
}

/// Item 4: `start_at`, `end_at` and `max_runs` bound a schedule; one past its end or out of
/// runs stays stored, stops firing and says so in its state (`ended`, no `next`). Instants
/// before the start are neither fired nor missed.
#[tokio::test]
async fn bounds_stop_a_schedule_which_stays_stored_and_shows_as_ended() {
    let (env, clock) = frozen("2026-05-01T08:55:00Z").await;
    let stored = StreamLog::start(&env.js).await;
    let every10 = "*/10 * * * *";
    put(
        &env,
        "bounded",
        "start",
        json!({"cron": every10, "start_at": "2026-05-01T09:20:00Z"}),
    )
    .await;
    put(
        &env,
        "bounded",
        "end",
        json!({"cron": every10, "end_at": "2026-05-01T09:20:00Z"}),
    )
    .await;
    put(
        &env,
        "bounded",
        "max",
        json!({"cron": every10, "max_runs": 3}),
    )
    .await;
    let mut t = Running::start(env.connect().await, &config(&env), Arc::new(clock.clone()));
    t.wait_active().await;
    let mut total = 0;
    for (minute, expect) in [(0, 2), (10, 2), (20, 3), (30, 1), (40, 1), (50, 1)] {
        clock.set(at("2026-05-01T09:00:00Z") + chrono::Duration::minutes(minute));
        total += expect;
        stored
            .wait(&format!("fires at 09:{minute}"), |l| l.len() >= total)
            .await;
        t.wait("the round is recorded", |s| s.fires == total as u64)
            .await;
    }
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, f) in stored.all() {
        by_key
            .entry(f.payload.key.clone())
            .or_default()
            .push(format_instant(f.payload.timestamp)[11..16].to_string());
    }
    assert_eq!(by_key["start"], ["09:20", "09:30", "09:40", "09:50"]);
    assert_eq!(by_key["end"], ["09:00", "09:10", "09:20"]);
    assert_eq!(by_key["max"], ["09:00", "09:10", "09:20"]);
    wait_state(&env, "bounded", "end", "end shows as ended", |s| {
        s.ended == Some(Ended::EndAt) && s.next.is_none() && s.fires == 3
    })
    .await;
    wait_state(&env, "bounded", "max", "max shows as ended", |s| {
        s.ended == Some(Ended::MaxRuns) && s.next.is_none() && s.fires == 3 && s.pending.is_none()
    })
    .await;
    let start = state(&env, "bounded", "start").await.unwrap();
    assert_eq!((start.fires, start.missed, start.ended), (4, 0, None));
    let kv = env.js.get_key_value("polos_schedules").await.unwrap();
    for key in ["end", "max"] {
        assert!(
            kv.get(schedule_kv_key("bounded", key))
                .await
                .unwrap()
                .is_some(),
            "{key} is still stored"
        );
    }
    t.stop().await;
}

/// Item 4: `max_runs` counts fires published, exactly across a failover. Each fire of a bounded
/// schedule is recorded as `pending` in its state before it is published (seen from outside on
/// one subscription to both subjects, in the order the scheduler sent them); the successor fires
/// the remaining run and no more.
#[tokio::test]
async fn max_runs_is_exact_across_a_failover_and_each_fire_is_recorded_before_it_goes_out() {
    let (env, clock) = frozen("2026-05-01T08:59:30Z").await;
    let stored = StreamLog::start(&env.js).await;
    // One subscription to everything: messages from the scheduler's connection arrive in the
    // order it sent them, state writes and fires alike.
    let mut all = env.client.subscribe(">").await.unwrap();
    env.client.flush().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::<(String, bytes::Bytes)>::new()));
    let sink = order.clone();
    let watcher = tokio::spawn(async move {
        while let Some(m) = all.next().await {
            sink.lock()
                .unwrap()
                .push((m.subject.to_string(), m.payload));
        }
    });
    put(
        &env,
        "trial",
        "u1",
        json!({"cron": "* * * * *", "max_runs": 3}),
    )
    .await;
    let cfg = config(&env);
    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    for (i, minute) in ["09:00", "09:01"].into_iter().enumerate() {
        clock.set(at(&format!("2026-05-01T{minute}:00Z")));
        stored.wait(minute, |l| l.len() > i).await;
    }
    wait_state(&env, "trial", "u1", "two fires recorded", |s| {
        s.fires == 2 && s.pending.is_none()
    })
    .await;
    a.kill();
    b.wait_active().await;
    clock.set(at("2026-05-01T09:02:00Z"));
    stored.wait("09:02", |l| l.len() > 2).await;
    for minute in ["09:03", "09:04"] {
        clock.set(at(&format!("2026-05-01T{minute}:00Z")));
    }
    wait_state(&env, "trial", "u1", "ended after 3 fires", |s| {
        s.fires == 3 && s.ended == Some(Ended::MaxRuns) && s.next.is_none()
    })
    .await;
    b.wait("nothing armed any more", |s| {
        s.active && s.next_fire.is_none()
    })
    .await;
    let times: Vec<String> = stored
        .all()
        .iter()
        .map(|(_, f)| format_instant(f.payload.timestamp))
        .collect();
    assert_eq!(
        times,
        [
            "2026-05-01T09:00:00Z",
            "2026-05-01T09:01:00Z",
            "2026-05-01T09:02:00Z"
        ]
    );
    watcher.abort();
    let order = order.lock().unwrap().clone();
    let state_subject = format!(
        "$KV.polos_schedule_state.{}",
        schedule_kv_key("trial", "u1")
    );
    for t in &times {
        let fire_at = order
            .iter()
            .position(|(s, p)| {
                s == "polos.runs.trial"
                    && serde_json::from_slice::<SchedulePayload>(p)
                        .is_ok_and(|p| format_instant(p.timestamp) == *t)
            })
            .unwrap_or_else(|| panic!("fire {t} not seen"));
        let recorded = order[..fire_at].iter().any(|(s, p)| {
            s == &state_subject
                && serde_json::from_slice::<serde_json::Value>(p)
                    .is_ok_and(|v| v["pending"] == json!(t))
        });
        assert!(
            recorded,
            "{t} was published before its pending state was written"
        );
    }
    b.stop().await;
}

/// Item 4: a scheduler that takes over after its predecessor recorded a `max_runs` fire as
/// `pending` (and died, maybe after publishing it) publishes that instant whatever the catch-up
/// policy says (`skip` here, minutes later), so the count stays exact; then the schedule ends.
#[tokio::test]
async fn a_successor_publishes_the_pending_fire_of_a_bounded_schedule_whatever_the_policy() {
    let (env, mut log, clock) = frozen_at("2026-05-01T09:05:00Z").await;
    put(
        &env,
        "trial",
        "u2",
        json!({"cron": "* * * * *", "max_runs": 2, "catchup": "skip"}),
    )
    .await;
    let states = env.js.get_key_value("polos_schedule_state").await.unwrap();
    states
        .put(
            schedule_kv_key("trial", "u2"),
            serde_json::to_vec(&json!({
                "last_timestamp": "2026-05-01T09:00:00Z", "next": "2026-05-01T09:01:00Z",
                "fires": 1, "missed": 0, "last_run_id": null, "error": null,
                "pending": "2026-05-01T09:01:00Z"
            }))
            .unwrap()
            .into(),
        )
        .await
        .unwrap();
    let mut t = Running::start(env.connect().await, &config(&env), Arc::new(clock.clone()));
    t.wait_active().await;
    let fires = log.wait_for(1).await;
    assert_eq!(fires[0].fire.payload.timestamp, at("2026-05-01T09:01:00Z"));
    assert_eq!(fires[0].fire.trigger, Trigger::Catchup);
    wait_state(&env, "trial", "u2", "ended after the pending fire", |s| {
        s.fires == 2 && s.pending.is_none() && s.ended == Some(Ended::MaxRuns)
    })
    .await;
    t.wait("nothing armed", |s| s.next_fire.is_none()).await;
    t.stop().await;
}

/// Per run id: how often the handler ran it, and the `last_timestamp` it got.
type Runs = HashMap<String, (usize, Option<DateTime<Utc>>)>;

/// One fire per hour, `hours` back from `now` (exclusive), oldest first.
fn past_hours(now: DateTime<Utc>, hours: i64) -> Vec<DateTime<Utc>> {
    let top = now.duration_trunc(chrono::Duration::hours(1)).unwrap();
    let top = if top == now {
        top - chrono::Duration::hours(1)
    } else {
        top
    };
    (0..hours)
        .rev()
        .map(|h| top - chrono::Duration::hours(h))
        .collect()
}

/// Item 2 through the Rust client with a real worker: every instant of the range fires once
/// with trigger `backfill`, the scheduled fire's run id and `Nats-Msg-Id`, and the payload it
/// would have had (`last_timestamp` the instant before). Instants that already ran do not run
/// again: one ran long ago (its record is found by the worker), one a moment ago (the stream
/// absorbs the copy). The state counts the back-filled fires and the request's progress.
#[tokio::test]
async fn backfill_fires_each_instant_once_and_does_not_rerun_what_ran() {
    let env = TestEnv::start().await;
    let (api_stop, api) = serve_api(&env.config()).await;
    let client = PolosClient::from_nats(env.connect().await);
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let clock = ManualClock::frozen(now);
    let publishes = PublishLog::start(&env.client).await;
    // `allow_all`: this test is about which instants run, not about overlap (runs here finish
    // at once, but back-filled fires come out 100 a second, so under the default `skip` a fire
    // may find the previous one still executing — see
    // `backfilled_runs_follow_the_schedules_overlap_policy`).
    schedules::upsert(
        &client,
        &polos::api::UpsertRequest {
            key: "u1".into(),
            overlap: Some(polos::model::OverlapPolicy::AllowAll),
            ..polos::api::UpsertRequest::new("report", "0 * * * *")
        },
    )
    .await
    .unwrap();
    let instants = past_hours(now, 6);
    let id = schedule_id("report", "u1");
    let record = ScheduleRecord::new("report", "u1", "0 * * * *", "UTC");

    let runs: Arc<Mutex<Runs>> = Arc::default();
    let seen = runs.clone();
    let wf = Workflow::new("report", move |ctx: WorkflowContext, p: SchedulePayload| {
        let seen = seen.clone();
        async move {
            let mut seen = seen.lock().unwrap();
            let entry = seen.entry(ctx.run_id().to_string()).or_default();
            entry.0 += 1;
            entry.1 = p.last_timestamp;
            Ok::<_, WorkflowError>(json!({}))
        }
    })
    .schedulable();
    let (worker_stop, worker) = spawn_worker(Worker::new(env.connect().await).workflow(wf));
    // Two instants ran before: one long ago (published with another message id, as if outside
    // the duplicate window), one just now (the contract's message id).
    for (i, msg_id) in [(1, Some("long-ago")), (3, None)] {
        let t = instants[i];
        let fire = Fire::scheduled(
            "report",
            Trigger::Schedule,
            polos::model::payload(&record, t, None, t),
        );
        let mut headers = fire.headers();
        if let Some(other) = msg_id {
            headers.insert("Nats-Msg-Id", other);
        }
        env.js
            .publish_with_headers(fire.subject(), headers, fire.body())
            .await
            .unwrap()
            .await
            .unwrap();
        wait_status(&env.js, "report", &run_id_for(&id, t), RunStatus::Completed).await;
    }
    let mut ticker = Running::start(env.connect().await, &env.config(), Arc::new(clock.clone()));
    ticker.wait_active().await;

    let reply = schedules::backfill(
        &client,
        "report",
        "u1",
        &format_instant(instants[0] - chrono::Duration::minutes(10)),
        &format_instant(now),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            reply.schedule_id.as_str(),
            reply.seq,
            reply.instants,
            reply.first,
            reply.last
        ),
        (id.as_str(), 1, 6, instants[0], instants[5])
    );
    for t in &instants {
        wait_status(
            &env.js,
            "report",
            &run_id_for(&id, *t),
            RunStatus::Completed,
        )
        .await;
    }
    wait_state(&env, "report", "u1", "progress recorded", |s| {
        s.backfilled == 6
            && s.backfill
                == Some(BackfillProgress {
                    seq: 1,
                    through: Some(instants[5]),
                })
    })
    .await;
    let runs = runs.lock().unwrap().clone();
    for (i, t) in instants.iter().enumerate() {
        let run_id = run_id_for(&id, *t);
        assert_eq!(runs[&run_id].0, 1, "{run_id} ran once");
        let record = run_record(&env.js, "report", &run_id).await.unwrap();
        let expected = if i == 1 || i == 3 {
            Trigger::Schedule
        } else {
            Trigger::Backfill
        };
        assert_eq!(record.trigger, expected, "{run_id}");
        assert_eq!(record.attempt, 1);
        if expected == Trigger::Backfill {
            assert_eq!(
                runs[&run_id].1,
                Some(*t - chrono::Duration::hours(1)),
                "last_timestamp of a back-filled {run_id}"
            );
        }
        let msg_id = format!("{id}@{}", format_instant(*t));
        let backfills = publishes
            .all()
            .iter()
            .filter(|(m, trigger)| *m == msg_id && trigger == "backfill")
            .count();
        assert_eq!(backfills, 1, "{msg_id} back-filled once");
    }
    assert_eq!(
        ticker.status.borrow().fires,
        0,
        "back-fills are not on-time fires"
    );
    ticker.stop().await;
    let _ = worker_stop.send(());
    within("worker stops", worker).await.unwrap();
    let _ = api_stop.send(());
    within("API stops", api).await.unwrap();
}

/// Item 2: a back-fill is rate limited (`scheduler.backfill_rate`), yields to on-time fires (no
/// back-filled fire is stored among the fires of an instant that came due while it ran),
/// survives a failover (stored in KV, continued by the successor), and ends with every instant
/// stored exactly once and counted exactly.
#[tokio::test]
async fn backfill_is_rate_limited_yields_to_on_time_fires_and_survives_failover() {
    let env = TestEnv::start().await;
    let mut cfg = config(&env);
    cfg.scheduler.backfill_rate = 50;
    let (api_stop, api) = serve_api(&cfg).await;
    let client = PolosClient::from_nats(env.connect().await);
    let stored = StreamLog::start(&env.js).await;
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let clock = ManualClock::frozen(now);
    schedules::create(&client, "minutely", "* * * * *", "UTC", "bf")
        .await
        .unwrap();
    const HOURLY: usize = 40;
    for i in 0..HOURLY {
        put(
            &env,
            "hourly",
            &format!("k{i}"),
            json!({"cron": "0 * * * *"}),
        )
        .await;
    }
    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    let reply = schedules::backfill(
        &client,
        "minutely",
        "bf",
        &format_instant(now - chrono::Duration::minutes(300)),
        &format_instant(now),
    )
    .await
    .unwrap();
    let n = reply.instants;
    assert!((300..=301).contains(&n), "{reply:?}");
    // The rate: 100 more fires at 50 a second take at least (100 - the burst of 5) / 50 =
    // 1.9 s, however fast the machine (a slower one only takes longer). Half of that is
    // asserted, for the lag of the status updates.
    a.wait("20 back-filled", |s| s.backfilled >= 20).await;
    let (t1, b1) = (std::time::Instant::now(), a.status.borrow().backfilled);
    a.wait("120 back-filled", |s| s.backfilled >= 120).await;
    let (t2, b2) = (std::time::Instant::now(), a.status.borrow().backfilled);
    let least = (b2 - b1).saturating_sub(6) as f64 / 50.0 / 2.0;
    assert!(
        (t2 - t1).as_secs_f64() >= least,
        "{} back-filled fires in {:?}: faster than backfill_rate = 50 allows",
        b2 - b1,
        t2 - t1
    );
    // An on-time instant while the back-fill runs.
    let hour = now.duration_trunc(chrono::Duration::hours(1)).unwrap() + chrono::Duration::hours(1);
    let before = stream_info(&env.js, "POLOS_RUNS").await.state.last_sequence;
    clock.set(hour);
    stored
        .wait("the hourly round", |l| {
            l.iter()
                .filter(|(_, f)| f.workflow == "hourly" && f.payload.timestamp == hour)
                .count()
                == HOURLY
        })
        .await;
    let log = stored.all();
    let last_hourly = log
        .iter()
        .filter(|(_, f)| f.workflow == "hourly")
        .map(|(seq, _)| *seq)
        .max()
        .unwrap();
    let interleaved = log
        .iter()
        .filter(|(seq, f)| *seq > before && *seq < last_hourly && f.trigger == Trigger::Backfill)
        .count();
    // At most what was already in flight when the hour came (one: a schedule has one fire out).
    assert!(
        interleaved <= 2,
        "{interleaved} back-filled fires went out among the on-time ones"
    );
    // The leader dies mid-way; the successor continues from the state record.
    a.wait("100 back-filled", |s| s.backfilled >= 100).await;
    a.kill();
    b.wait_active().await;
    // 300 instants at 50 a second take 6 s; allow for a loaded machine.
    stored
        .wait_long(
            "every back-filled instant",
            std::time::Duration::from_secs(120),
            |l| {
                l.iter()
                    .filter(|(_, f)| f.trigger == Trigger::Backfill)
                    .map(|(_, f)| f.payload.timestamp)
                    .collect::<BTreeSet<_>>()
                    .len() as u64
                    == n
            },
        )
        .await;
    let backfilled: Vec<DateTime<Utc>> = stored
        .all()
        .iter()
        .filter(|(_, f)| f.workflow == "minutely" && f.trigger == Trigger::Backfill)
        .map(|(_, f)| f.payload.timestamp)
        .collect();
    let distinct: BTreeSet<_> = backfilled.iter().collect();
    assert_eq!(
        backfilled.len(),
        distinct.len(),
        "an instant was stored twice"
    );
    assert_eq!(distinct.first().copied().copied(), Some(reply.first));
    assert_eq!(distinct.last().copied().copied(), Some(reply.last));
    wait_state(&env, "minutely", "bf", "back-fill recorded", |s| {
        s.backfilled == n
            && s.backfill
                == Some(BackfillProgress {
                    seq: 1,
                    through: Some(reply.last),
                })
    })
    .await;
    b.stop().await;
    let _ = api_stop.send(());
    within("API stops", api).await.unwrap();
}

/// The API's checks and what it stores: bounds and jitter round-trip through the record (and
/// `""` / `0` remove them), and a back-fill request is refused with the field named when its
/// range is backwards, in the future, empty, too large, or when too many wait.
#[tokio::test]
async fn the_api_validates_policies_and_stores_them_in_the_record() {
    let env = TestEnv::start().await;
    let (api_stop, api) = serve_api(&env.config()).await;
    let client = PolosClient::from_nats(env.connect().await);
    let kv = env.js.get_key_value("polos_schedules").await.unwrap();
    let stored = |key: &'static str| {
        let kv = kv.clone();
        async move {
            let bytes = kv.get(schedule_kv_key("wf", key)).await.unwrap().unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    let upsert = |fields: serde_json::Value| {
        let client = client.clone();
        async move {
            let mut request = json!({"workflow": "wf", "cron": "0 9 * * *", "key": "k"});
            request
                .as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            let request: schedules::UpsertRequest = serde_json::from_value(request).unwrap();
            schedules::upsert(&client, &request).await
        }
    };
    let reply = upsert(
        json!({"jitter_secs": 600, "start_at": "2030-01-01T00:00:00+01:00",
        "end_at": "2030-01-03T00:00:00Z", "max_runs": 5}),
    )
    .await
    .unwrap();
    assert_eq!(
        reply.next.len(),
        2,
        "only the instants inside the bounds: {reply:?}"
    );
    assert_eq!(format_instant(reply.next[0]), "2030-01-01T09:00:00Z");
    let v = stored("k").await;
    assert_eq!(
        (
            &v["jitter_secs"],
            &v["start_at"],
            &v["end_at"],
            &v["max_runs"]
        ),
        (
            &json!(600),
            &json!("2029-12-31T23:00:00Z"),
            &json!("2030-01-03T00:00:00Z"),
            &json!(5)
        )
    );
    // Omitted keeps, "" and 0 remove.
    upsert(json!({"note": "x"})).await.unwrap();
    assert_eq!(stored("k").await["max_runs"], json!(5));
    upsert(json!({"start_at": "", "end_at": "", "max_runs": 0, "jitter_secs": 0}))
        .await
        .unwrap();
    let v = stored("k").await;
    assert!(
        v.get("start_at").is_none() && v.get("end_at").is_none() && v.get("max_runs").is_none(),
        "{v}"
    );
    assert_eq!(v["jitter_secs"], json!(0));
    for (fields, says) in [
        (json!({"jitter_secs": 86_401}), "jitter_secs"),
        (json!({"start_at": "tomorrow"}), "start_at"),
        (
            json!({"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}),
            "end_at",
        ),
    ] {
        let (code, message) = refused(upsert(fields.clone()).await.map(|_| ()));
        assert_eq!(code, ErrorCode::InvalidRequest, "{fields}");
        assert!(message.contains(says), "{fields}: {message}");
    }
    let past = |h: i64| format_instant(Utc::now() - chrono::Duration::hours(h));
    let yesterday_at = |hour: u32, minute: u32| {
        (Utc::now() - chrono::Duration::days(1))
            .date_naive()
            .and_hms_opt(hour, minute, 0)
            .unwrap()
            .and_utc()
    };
    for ((from, to), says) in [
        ((past(1), past(2)), "must be before"),
        (
            (
                past(1),
                format_instant(Utc::now() + chrono::Duration::hours(1)),
            ),
            "in the future",
        ),
        ((past(1), "yesterday".into()), "\"to\""),
        (
            // Yesterday 09:01 to 09:51: between two instants of `0 9 * * *` whatever the hour
            // the test runs at.
            (
                format_instant(yesterday_at(9, 1)),
                format_instant(yesterday_at(9, 51)),
            ),
            "nothing to back-fill",
        ),
    ] {
        let (code, message) = refused(schedules::backfill(&client, "wf", "k", &from, &to).await);
        assert_eq!(code, ErrorCode::InvalidRequest, "{from} {to}");
        assert!(message.contains(says), "{from} {to}: {message}");
    }
    schedules::create(&client, "wf", "* * * * *", "UTC", "minutely")
        .await
        .unwrap();
    let (_, message) =
        refused(schedules::backfill(&client, "wf", "minutely", &past(24 * 7), &past(0)).await);
    assert!(message.contains("10000 instants"), "{message}");
    let e = schedules::backfill(&client, "wf", "nope", &past(2), &past(1)).await;
    assert!(
        matches!(
            e,
            Err(ClientError::Api {
                code: ErrorCode::NotFound,
                ..
            })
        ),
        "{e:?}"
    );
    // Requests wait in the record (no scheduler runs here): 16 at most.
    for i in 0..16 {
        let reply = schedules::backfill(&client, "wf", "minutely", &past(i + 2), &past(i + 1))
            .await
            .unwrap();
        assert_eq!((reply.seq, reply.instants), (i as u64 + 1, 60));
    }
    let v = stored("minutely").await;
    assert_eq!(v["backfills"].as_array().unwrap().len(), 16);
    assert!(v["backfills"][0]["requested_at"].is_string(), "{v}");
    let (_, message) =
        refused(schedules::backfill(&client, "wf", "minutely", &past(3), &past(2)).await);
    assert!(message.contains("still being worked off"), "{message}");
    let _ = api_stop.send(());
    within("API stops", api).await.unwrap();
}

/// The CLI: `create` takes the policy flags, `backfill` queues a range, `get` and `list` show a
/// schedule that ended.
#[tokio::test]
async fn the_cli_creates_bounded_schedules_backfills_and_shows_ended_ones() {
    let env = TestEnv::start().await;
    let (api_stop, api) = serve_api(&env.config()).await;
    let url = env.server.url().to_string();
    let out = polos_cli(
        &url,
        &[
            "schedules",
            "create",
            "wf",
            "0 * * * *",
            "--key",
            "k",
            "--jitter",
            "30",
            "--max-runs",
            "2",
            "--end-at",
            "2020-01-01T00:00:00Z",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("end_at 2020-01-01T00:00:00Z is in the past"),
        "{text}"
    );
    // A scheduler marks it ended.
    let clock = ManualClock::frozen(Utc::now());
    let mut t = Running::start(env.connect().await, &env.config(), Arc::new(clock));
    t.wait_active().await;
    wait_state(&env, "wf", "k", "ended", |s| s.ended == Some(Ended::EndAt)).await;
    let out = polos_cli(&url, &["schedules", "get", "wf", "--key", "k"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "jitter       30 s",
        "max_runs     2",
        "ended        past end_at",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let out = polos_cli(&url, &["schedules", "list"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("- (ended: end_at)"), "{text}");
    let from = format_instant(Utc::now() - chrono::Duration::hours(3));
    let to = format_instant(Utc::now());
    let out = polos_cli(
        &url,
        &[
            "schedules",
            "backfill",
            "wf",
            "--key",
            "k",
            "--from",
            &from,
            "--to",
            &to,
            "--json",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (reply["seq"].as_u64(), reply["instants"].as_u64()),
        (Some(1), Some(3)),
        "{reply}"
    );
    wait_state(&env, "wf", "k", "back-filled, although ended", |s| {
        s.backfilled == 3
    })
    .await;
    let out = polos_cli(
        &url,
        &[
            "schedules",
            "backfill",
            "wf",
            "--key",
            "k",
            "--from",
            &to,
            "--to",
            &from,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be before"),
        "{out:?}"
    );
    t.stop().await;
    let _ = api_stop.send(());
    within("API stops", api).await.unwrap();
}

/// Every policy on a 3-node cluster with R3 buckets and stream, across a scheduler failover:
/// jittered fires at their documented offsets, a `max_runs` schedule firing exactly its runs,
/// and a back-fill requested through the API worked off by both replicas, each instant once.
#[tokio::test]
async fn policies_hold_on_a_three_node_cluster_across_failover() {
    let tc = TestCluster::start().await;
    let mut cfg = Config::default();
    cfg.nats.url = tc.cluster.urls().join(",");
    cfg.storage.replicas = 3;
    cfg.scheduler.lease_ttl_secs = 2;
    cfg.scheduler.jitter_secs = 30;
    cfg.scheduler.backfill_rate = 40;
    let (api_stop, api) = serve_api(&cfg).await;
    let client = PolosClient::from_nats(polos::nats::connect(&cfg.nats).await.unwrap());
    let stored = StreamLog::start(&tc.js).await;
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let hour = now.duration_trunc(chrono::Duration::hours(1)).unwrap() + chrono::Duration::hours(1);
    let clock = ManualClock::frozen(now);
    const N: usize = 20;
    for i in 0..N {
        schedules::create(&client, "digest", "0 * * * *", "UTC", &format!("u{i}"))
            .await
            .unwrap();
    }
    let trial = schedules::UpsertRequest {
        key: "trial".into(),
        max_runs: Some(2),
        jitter_secs: Some(0),
        ..schedules::UpsertRequest::new("digest", "0 * * * *")
    };
    schedules::upsert(&client, &trial).await.unwrap();
    schedules::create(&client, "minutely", "* * * * *", "UTC", "bf")
        .await
        .unwrap();
    let start = |clock: &ManualClock| {
        let cfg = cfg.clone();
        let clock = clock.clone();
        async move {
            let client = polos::nats::connect(&cfg.nats).await.unwrap();
            Running::start(client, &cfg, Arc::new(clock))
        }
    };
    let mut a = start(&clock).await;
    a.wait_active().await;
    let mut b = start(&clock).await;
    b.wait("standby loaded", |s| s.loaded).await;
    let reply = schedules::backfill(
        &client,
        "minutely",
        "bf",
        &format_instant(now - chrono::Duration::minutes(60)),
        &format_instant(now),
    )
    .await
    .unwrap();
    a.wait("10 back-filled", |s| s.backfilled >= 10).await;
    // Jitter: at hour + 15 s exactly the schedules with offsets up to 15 s have fired.
    clock.set(hour + chrono::Duration::seconds(15));
    let hourly = |l: &[(u64, Fire)]| -> BTreeSet<String> {
        l.iter()
            .filter(|(_, f)| f.workflow == "digest" && f.payload.timestamp == hour)
            .map(|(_, f)| f.payload.key.clone())
            .collect()
    };
    let early: BTreeSet<String> = (0..N)
        .map(|i| format!("u{i}"))
        .filter(|k| {
            let seed = jitter_seed(&schedule_id("digest", k));
            jitter_offset_ms(seed, hour, 30_000) <= 15_000
        })
        .chain(["trial".to_string()])
        .collect();
    stored
        .wait("the early part of the hour", |l| {
            hourly(l).len() >= early.len()
        })
        .await;
    a.wait("recorded", |s| s.fires >= early.len() as u64).await;
    assert_eq!(hourly(&stored.all()), early);
    a.kill();
    b.wait_active().await;
    let digests = |l: &[(u64, Fire)]| l.iter().filter(|(_, f)| f.workflow == "digest").count();
    for (h, secs, expected) in [(0, 31, N + 1), (1, 31, 2 * N + 2), (2, 31, 3 * N + 2)] {
        clock.set(hour + chrono::Duration::hours(h) + chrono::Duration::seconds(secs));
        stored
            .wait(&format!("{expected} digests"), |l| digests(l) >= expected)
            .await;
    }
    eventually("the back-fill counted exactly", || async {
        let states = tc.js.get_key_value("polos_schedule_state").await.unwrap();
        states
            .get(schedule_kv_key("minutely", "bf"))
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<polos::model::ScheduleState>(&b).ok())
            .is_some_and(|s| s.backfilled == reply.instants)
    })
    .await;
    eventually("the trial schedule ended", || async {
        let states = tc.js.get_key_value("polos_schedule_state").await.unwrap();
        states
            .get(schedule_kv_key("digest", "trial"))
            .await
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<polos::model::ScheduleState>(&b).ok())
            .is_some_and(|s| s.ended == Some(Ended::MaxRuns) && s.fires == 2)
    })
    .await;
    stored
        .wait_long(
            "every back-filled instant",
            std::time::Duration::from_secs(120),
            |l| {
                l.iter()
                    .filter(|(_, f)| f.trigger == Trigger::Backfill)
                    .map(|(_, f)| f.payload.timestamp)
                    .collect::<BTreeSet<_>>()
                    .len() as u64
                    == reply.instants
            },
        )
        .await;
    let all = stored.all();
    let trial_fires = all.iter().filter(|(_, f)| f.payload.key == "trial").count();
    assert_eq!(trial_fires, 2, "max_runs 2");
    let backfilled: Vec<_> = all
        .iter()
        .filter(|(_, f)| f.trigger == Trigger::Backfill)
        .collect();
    assert_eq!(
        backfilled.len() as u64,
        reply.instants,
        "each back-filled instant once"
    );
    b.stop().await;
    let _ = api_stop.send(());
    within("API stops", api).await.unwrap();
}

/// Back-fill meets the overlap policy (the two halves of issue 12 built apart, checked together):
/// a back-fill of three past hours with the default `skip` runs the first instant and records
/// the two that arrive while it executes as `skipped`, naming it (`get` counts 3 back-filled, 2
/// skipped); with `buffer_all` every back-filled instant runs, one at a time, oldest first.
/// Runs wait at a gate the test opens, so they overlap whatever the machine's speed.
#[tokio::test]
async fn backfilled_runs_follow_the_schedules_overlap_policy() {
    use polos::api::UpsertRequest;
    use polos::model::OverlapPolicy;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    let env = TestEnv::start().await;
    let (api_stop, api) = serve_api(&env.config()).await;
    let client = PolosClient::from_nats(env.connect().await);
    let now = Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap();
    let instants = past_hours(now, 3);
    for (key, overlap) in [("skip", None), ("all", Some(OverlapPolicy::BufferAll))] {
        schedules::upsert(
            &client,
            &UpsertRequest {
                key: key.into(),
                overlap,
                ..UpsertRequest::new("bf-overlap", "0 * * * *")
            },
        )
        .await
        .unwrap();
    }
    // Started handlers per key in order, how many run at once per key, and the gate.
    let started: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let running: Arc<[AtomicUsize; 2]> = Arc::default();
    let most: Arc<[AtomicUsize; 2]> = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let wf = {
        let (started, running, most, gate) =
            (started.clone(), running.clone(), most.clone(), gate.clone());
        Workflow::new(
            "bf-overlap",
            move |ctx: WorkflowContext, p: SchedulePayload| {
                let (started, running, most, gate) =
                    (started.clone(), running.clone(), most.clone(), gate.clone());
                async move {
                    let i = usize::from(p.key == "all");
                    started
                        .lock()
                        .unwrap()
                        .entry(p.key.clone())
                        .or_default()
                        .push(ctx.run_id().to_string());
                    let now = running[i].fetch_add(1, Ordering::SeqCst) + 1;
                    most[i].fetch_max(now, Ordering::SeqCst);
                    gate.acquire().await.map(|p| p.forget()).ok();
                    running[i].fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, WorkflowError>(json!({}))
                }
            },
        )
        .schedulable()
    };
    let (worker_stop, worker) =
        spawn_worker(Worker::new(env.connect().await).workflow(wf).concurrency(8));
    let mut ticker = Running::start(
        env.connect().await,
        &env.config(),
        Arc::new(ManualClock::frozen(now)),
    );
    ticker.wait_active().await;
    let from = format_instant(instants[0] - chrono::Duration::minutes(1));
    for key in ["skip", "all"] {
        let reply = schedules::backfill(&client, "bf-overlap", key, &from, &format_instant(now))
            .await
            .unwrap();
        assert_eq!(reply.instants, 3, "{key}: {reply:?}");
    }
    let run = |key: &str, i: usize| run_id_for(&schedule_id("bf-overlap", key), instants[i]);

    // skip: one back-filled run executes (whichever a worker claimed first: fires are handled
    // concurrently), and the other two are skipped in its favour.
    eventually("a back-filled run of `skip` started", || async {
        started
            .lock()
            .unwrap()
            .get("skip")
            .is_some_and(|s| !s.is_empty())
    })
    .await;
    let first = started.lock().unwrap()["skip"][0].clone();
    let all_skip: Vec<String> = (0..3).map(|i| run("skip", i)).collect();
    assert!(all_skip.contains(&first), "{first}");
    for other in all_skip.iter().filter(|r| **r != first) {
        let skipped = wait_status(&env.js, "bf-overlap", other, RunStatus::Skipped).await;
        assert_eq!(skipped.trigger, Trigger::Backfill);
        assert_eq!(skipped.yielded_to.as_deref(), Some(first.as_str()));
    }
    // buffer_all: the three take turns; the gate lets one run finish at a time.
    for i in 0..3 {
        eventually(
            &format!("back-filled run {} of `buffer_all` started", i + 1),
            || async { started.lock().unwrap().get("all").map_or(0, Vec::len) > i },
        )
        .await;
        let current = started.lock().unwrap()["all"][i].clone();
        if i == 0 {
            gate.add_permits(1); // `skip`'s run finishes too (permits go to any waiting run)
        }
        gate.add_permits(1);
        wait_status(&env.js, "bf-overlap", &current, RunStatus::Completed).await;
    }
    wait_status(&env.js, "bf-overlap", &first, RunStatus::Completed).await;
    let mut ran = started.lock().unwrap()["all"].clone();
    ran.sort();
    let mut expected: Vec<String> = (0..3).map(|i| run("all", i)).collect();
    expected.sort();
    assert_eq!(
        ran, expected,
        "buffer_all runs every back-filled instant once"
    );
    for r in &expected {
        let record = run_record(&env.js, "bf-overlap", r).await.unwrap();
        assert_eq!(
            (record.status, record.trigger),
            (RunStatus::Completed, Trigger::Backfill)
        );
    }
    assert_eq!(
        started.lock().unwrap()["skip"],
        std::slice::from_ref(&first)
    );
    assert_eq!(most[0].load(Ordering::SeqCst), 1);
    assert_eq!(
        most[1].load(Ordering::SeqCst),
        1,
        "never two of a schedule at once"
    );
    eventually("get counts the back-fill and the skips", || async {
        let view = schedules::get(&client, "bf-overlap", "skip").await.unwrap();
        view.counters
            .is_some_and(|c| c.backfilled == Some(3) && c.skipped == 2)
    })
    .await;

    ticker.stop().await;
    let _ = worker_stop.send(());
    within("worker stops", worker).await.unwrap();
    let _ = api_stop.send(());
    within("API stops", api).await.unwrap();
}
