//! Workers against a real nats-server: queueing, durable steps, retries, crashes, registration.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use chrono::{TimeZone, Utc};
use polos::model::{
    payload, run_kv_key, schedule_kv_key, step_kv_key, Fire, RunRecord, RunStatus, SchedulePayload,
    ScheduleRecord, ScheduleSource, StepRecord, Trigger, WorkflowRecord,
};
use polos::worker::{consumer_name, Schedule, Worker, Workflow, WorkflowContext, WorkflowError};
use serde_json::json;
use tokio::sync::oneshot;

use crate::common::{eventually, stream_info, within, TestEnv};

/// A scheduled fire of `workflow`/`key` for the instant `minute` minutes after a fixed base.
pub(super) fn fire_at(workflow: &str, key: &str, minute: i64) -> Fire {
    let record = ScheduleRecord::new(workflow, key, "* * * * *", "UTC");
    let base = Utc
        .with_ymd_and_hms(2026, 11, 26, 9, 0, 0)
        .single()
        .unwrap();
    let t = base + chrono::Duration::minutes(minute);
    let up = t + chrono::Duration::minutes(1);
    Fire::scheduled(workflow, Trigger::Schedule, payload(&record, t, None, up))
}

pub(super) async fn publish(js: &jetstream::Context, fire: &Fire) {
    js.publish_with_headers(fire.subject(), fire.headers(), fire.body())
        .await
        .unwrap()
        .await
        .unwrap();
}

pub(super) async fn run_record(
    js: &jetstream::Context,
    workflow: &str,
    run_id: &str,
) -> Option<RunRecord> {
    let kv = js.get_key_value("polos_runs").await.unwrap();
    kv.get(run_kv_key(workflow, run_id))
        .await
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

pub(super) async fn wait_status(
    js: &jetstream::Context,
    workflow: &str,
    run_id: &str,
    status: RunStatus,
) -> RunRecord {
    let found: Arc<Mutex<Option<RunRecord>>> = Arc::default();
    eventually(&format!("run {run_id} {status:?}"), || {
        let found = found.clone();
        async move {
            match run_record(js, workflow, run_id).await {
                Some(r) if r.status == status => {
                    *found.lock().unwrap() = Some(r);
                    true
                }
                _ => false,
            }
        }
    })
    .await;
    let r = found.lock().unwrap().take().unwrap();
    r
}

/// Pending + unacked messages of a workflow's consumer, found by the contract's literal name
/// `polos_<workflow>` (not by the code's own `consumer_name`).
pub(super) async fn outstanding(js: &jetstream::Context, workflow: &str) -> (u64, usize) {
    let stream = js.get_stream("POLOS_RUNS").await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(&format!("polos_{workflow}"))
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

/// Starts `worker` in the background; dropping the returned sender stops it.
pub(super) fn spawn_worker(worker: Worker) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        worker
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    (tx, handle)
}

pub(super) async fn wait_consumer(js: &jetstream::Context, workflow: &str) {
    eventually("consumer created", || async {
        let stream = js.get_stream("POLOS_RUNS").await.unwrap();
        stream
            .get_consumer::<jetstream::consumer::pull::Config>(&consumer_name(workflow))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_fire_runs_its_steps_and_records_output() {
    let env = TestEnv::start().await;
    let wf = Workflow::new(
        "daily-report",
        |ctx: WorkflowContext, p: SchedulePayload| async move {
            let data: Vec<u32> = ctx
                .step
                .run("fetch_data", || async {
                    Ok::<_, WorkflowError>(vec![1, 2, 3])
                })
                .await?;
            let report = ctx
                .step
                .run("generate", || async {
                    Ok::<_, std::io::Error>(format!("sum={}", data.iter().sum::<u32>()))
                })
                .await?;
            Ok(
                json!({"status": "completed", "report": report, "at": p.timestamp, "attempt": ctx.attempt()}),
            )
        },
    );
    let (stop, handle) = spawn_worker(Worker::new(env.client.clone()).workflow(wf));
    let fire = fire_at("daily-report", "global", 0);
    publish(&env.js, &fire).await;
    let record = wait_status(&env.js, "daily-report", &fire.run_id, RunStatus::Completed).await;
    assert_eq!(record.output.as_ref().unwrap()["report"], "sum=6");
    assert_eq!(
        record.output.as_ref().unwrap()["at"],
        "2026-11-26T09:00:00Z"
    );
    assert_eq!(record.attempt, 1);
    assert_eq!(record.trigger, Trigger::Schedule);
    assert_eq!(record.schedule_id, fire.payload.schedule_id);
    assert!(record.finished_at.is_some());
    let steps = env.js.get_key_value("polos_steps").await.unwrap();
    let step: StepRecord = serde_json::from_slice(
        &steps
            .get(step_kv_key(&fire.run_id, "fetch_data"))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(step.output, json!([1, 2, 3]));
    // Registered as a plain (not schedulable) workflow.
    let wfs = env.js.get_key_value("polos_workflows").await.unwrap();
    let reg: WorkflowRecord =
        serde_json::from_slice(&wfs.get("daily-report").await.unwrap().unwrap()).unwrap();
    assert!(!reg.schedulable && reg.schedule.is_none());
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn fires_published_before_any_worker_run_when_one_starts() {
    let env = TestEnv::start().await;
    // One schedule per fire: fires of one schedule would follow its overlap policy.
    let fires: Vec<Fire> = (0..5)
        .map(|i| fire_at("late-worker", &format!("k{i}"), i))
        .collect();
    for f in &fires {
        publish(&env.js, f).await;
    }
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let wf = Workflow::new("late-worker", move |_ctx, _p| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let (stop, handle) = spawn_worker(Worker::new(env.client.clone()).workflow(wf));
    for f in &fires {
        wait_status(&env.js, "late-worker", &f.run_id, RunStatus::Completed).await;
    }
    assert_eq!(count.load(Ordering::SeqCst), 5);
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn a_failing_handler_is_retried_then_failed() {
    let env = TestEnv::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let wf = Workflow::new("flaky", move |_ctx, _p| {
        let c = c.clone();
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            Err::<(), _>(WorkflowError::retryable(format!(
                "upstream down (call {n})"
            )))
        }
    });
    let calls_t = Arc::new(AtomicUsize::new(0));
    let ct = calls_t.clone();
    let terminal = Workflow::new("doomed", move |_ctx, _p| {
        let ct = ct.clone();
        async move {
            ct.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(WorkflowError::terminal("user 42 does not exist"))
        }
    });
    let worker = Worker::new(env.client.clone())
        .workflow(wf)
        .workflow(terminal)
        .max_attempts(3)
        .retry_backoff(Duration::from_millis(100));
    let (stop, handle) = spawn_worker(worker);
    let fire = fire_at("flaky", "global", 0);
    publish(&env.js, &fire).await;
    let doomed = fire_at("doomed", "global", 0);
    publish(&env.js, &doomed).await;

    let record = wait_status(&env.js, "flaky", &fire.run_id, RunStatus::Failed).await;
    assert_eq!(record.attempt, 3);
    assert_eq!(record.error.as_deref(), Some("upstream down (call 3)"));
    assert!(record.finished_at.is_some());
    let record = wait_status(&env.js, "doomed", &doomed.run_id, RunStatus::Failed).await;
    assert_eq!(record.attempt, 1);
    assert_eq!(record.error.as_deref(), Some("user 42 does not exist"));
    // Terminated: nothing is redelivered afterwards.
    eventually("messages settled", || async {
        outstanding(&env.js, "flaky").await == (0, 0)
            && outstanding(&env.js, "doomed").await == (0, 0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // would-be retry window (backoff 400 ms)
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(calls_t.load(Ordering::SeqCst), 1);
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn the_same_fire_delivered_twice_runs_once() {
    let env = TestEnv::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let wf = Workflow::new("once", move |_ctx, _p| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok("done")
        }
    });
    let (stop, handle) = spawn_worker(Worker::new(env.client.clone()).workflow(wf));
    let fire = fire_at("once", "global", 0);
    publish(&env.js, &fire).await;
    wait_status(&env.js, "once", &fire.run_id, RunStatus::Completed).await;
    // Inside the duplicate window the stream absorbs it; after it (simulated with another
    // message id) the worker finds the run completed and acks without running.
    publish(&env.js, &fire).await;
    let mut late = fire.headers();
    late.insert("Nats-Msg-Id", "late-duplicate");
    env.js
        .publish_with_headers(fire.subject(), late, fire.body())
        .await
        .unwrap()
        .await
        .unwrap();
    eventually("duplicate acked", || async {
        outstanding(&env.js, "once").await == (0, 0)
    })
    .await;
    let info = stream_info(&env.js, "POLOS_RUNS").await.state;
    assert_eq!(info.messages, 0, "work queue drained");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn two_workers_share_200_runs_each_once() {
    let env = TestEnv::start().await;
    let seen: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let make = |worker_no: usize| {
        let seen = seen.clone();
        Workflow::new("shared", move |ctx: WorkflowContext, _p| {
            let seen = seen.clone();
            async move {
                ctx.step
                    .run("work", || async {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        Ok::<_, WorkflowError>(())
                    })
                    .await?;
                seen.lock()
                    .unwrap()
                    .entry(ctx.run_id().to_string())
                    .or_default()
                    .push(worker_no);
                Ok(())
            }
        })
    };
    let (stop_a, a) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(make(0))
            .concurrency(8),
    );
    let (stop_b, b) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(make(1))
            .concurrency(8),
    );
    wait_consumer(&env.js, "shared").await;
    // One schedule per fire: fires of one schedule would follow its overlap policy.
    let fires: Vec<Fire> = (0..200)
        .map(|i| fire_at("shared", &format!("k{i}"), i))
        .collect();
    for f in &fires {
        publish(&env.js, f).await;
    }
    eventually("200 runs completed", || async {
        seen.lock().unwrap().len() == 200
    })
    .await;
    eventually("queue drained", || async {
        outstanding(&env.js, "shared").await == (0, 0)
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    for f in &fires {
        assert_eq!(
            seen[&f.run_id].len(),
            1,
            "run {} executed {:?}",
            f.run_id,
            seen[&f.run_id]
        );
    }
    for f in fires.iter().take(5) {
        let r = run_record(&env.js, "shared", &f.run_id).await.unwrap();
        assert_eq!((r.status, r.attempt), (RunStatus::Completed, 1));
    }
    drop((stop_a, stop_b));
    within("worker A stops", a).await.unwrap();
    within("worker B stops", b).await.unwrap();
}

#[tokio::test]
async fn reusing_a_step_name_fails_the_run() {
    let env = TestEnv::start().await;
    let wf = Workflow::new("dup-step", |ctx: WorkflowContext, _p| async move {
        ctx.step
            .run("send", || async { Ok::<_, WorkflowError>(1) })
            .await?;
        ctx.step
            .run("send", || async { Ok::<_, WorkflowError>(2) })
            .await?;
        Ok(())
    });
    let (stop, handle) = spawn_worker(Worker::new(env.client.clone()).workflow(wf));
    let fire = fire_at("dup-step", "global", 0);
    publish(&env.js, &fire).await;
    let r = wait_status(&env.js, "dup-step", &fire.run_id, RunStatus::Failed).await;
    assert_eq!(r.attempt, 1, "terminal: no retries");
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("\"send\" is used twice"),
        "{r:?}"
    );
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn inline_schedules_follow_the_code_and_api_schedules_are_untouched() {
    let env = TestEnv::start().await;
    let schedules = env.js.get_key_value("polos_schedules").await.unwrap();
    let noop = |_ctx: WorkflowContext, _p: SchedulePayload| async { Ok(()) };
    let start_stop = |w: Worker| async move {
        let (stop, handle) = spawn_worker(w);
        // Registration is done once the consumer exists.
        drop(stop);
        within("worker stops", handle).await.unwrap();
    };
    let global = schedule_kv_key("end-of-day-sync", "global");
    let read = |key: String| {
        let schedules = schedules.clone();
        async move {
            schedules
                .get(&key)
                .await
                .unwrap()
                .map(|b| ScheduleRecord::from_kv(&key, &b).unwrap())
        }
    };

    // 1. Declared inline: created.
    start_stop(
        Worker::new(env.client.clone()).workflow(
            Workflow::new("end-of-day-sync", noop)
                .schedule(Schedule::cron("0 17 * * *").timezone("America/New_York")),
        ),
    )
    .await;
    let r = read(global.clone()).await.expect("inline schedule created");
    assert_eq!(
        (r.cron.as_str(), r.timezone.as_str()),
        ("0 17 * * *", "America/New_York")
    );
    assert_eq!(r.source, ScheduleSource::Inline);
    let wfs = env.js.get_key_value("polos_workflows").await.unwrap();
    let reg: WorkflowRecord =
        serde_json::from_slice(&wfs.get("end-of-day-sync").await.unwrap().unwrap()).unwrap();
    assert!(reg.schedulable);
    assert_eq!(reg.schedule.unwrap().timezone, "America/New_York");

    // An API schedule of the same workflow, another key.
    let mut api = ScheduleRecord::new("end-of-day-sync", "user_123", "0 8 * * *", "Europe/London");
    api.source = ScheduleSource::Api;
    let api_key = schedule_kv_key("end-of-day-sync", "user_123");
    schedules
        .put(&api_key, serde_json::to_vec(&api).unwrap().into())
        .await
        .unwrap();

    // 2. Changed in code: updated in place, same id.
    start_stop(Worker::new(env.client.clone()).workflow(
        Workflow::new("end-of-day-sync", noop).schedule(("0 18 * * 1-5", "America/New_York")),
    ))
    .await;
    let r2 = read(global.clone()).await.unwrap();
    assert_eq!(r2.cron, "0 18 * * 1-5");
    assert_eq!(r2.schedule_id, r.schedule_id);

    // 3. Removed from the code: the inline record goes, the API one stays.
    start_stop(
        Worker::new(env.client.clone())
            .workflow(Workflow::new("end-of-day-sync", noop).schedulable()),
    )
    .await;
    assert!(
        read(global.clone()).await.is_none(),
        "inline schedule removed"
    );
    assert_eq!(read(api_key.clone()).await.unwrap(), api);

    // 4. An API-owned global schedule is never replaced by code.
    let mut api_global = ScheduleRecord::new("end-of-day-sync", "global", "0 7 * * *", "UTC");
    api_global.source = ScheduleSource::Api;
    schedules
        .put(&global, serde_json::to_vec(&api_global).unwrap().into())
        .await
        .unwrap();
    start_stop(
        Worker::new(env.client.clone())
            .workflow(Workflow::new("end-of-day-sync", noop).schedule("0 9 * * *")),
    )
    .await;
    start_stop(Worker::new(env.client.clone()).workflow(Workflow::new("end-of-day-sync", noop)))
        .await;
    assert_eq!(read(global).await.unwrap(), api_global);
}

#[tokio::test]
async fn invalid_declarations_fail_run_naming_the_workflow() {
    let env = TestEnv::start().await;
    let noop = |_ctx: WorkflowContext, _p: SchedulePayload| async { Ok(()) };
    let e = Worker::new(env.client.clone())
        .workflow(Workflow::new("nightly", noop).schedule("0 25 * * *"))
        .run(async {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nightly"), "{e}");
    assert!(e.to_string().contains("invalid cron expression"), "{e}");
    let e = Worker::new(env.client.clone())
        .workflow(Workflow::new("tz", noop).schedule(("0 9 * * *", "Mars/Olympus")))
        .run(async {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown time zone"), "{e}");
    let e = Worker::new(env.client.clone())
        .workflow(Workflow::new("a.b", noop))
        .run(async {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid workflow id \"a.b\""), "{e}");
}

// ---- a worker killed with SIGKILL in the middle of a three-step run ----

const CHILD_ENV: &str = "POLOS_TEST_WORKER_CHILD";

/// Appends one line to the side-effect log (O_APPEND: one write per line, safe across processes).
fn log_effect(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn count(path: &Path, line: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == line)
        .count()
}

/// Not a test on its own: `a_killed_worker_loses_and_repeats_no_step` runs this binary with
/// `--ignored --exact it::worker::worker_child_process` and `POLOS_TEST_WORKER_CHILD` set, and
/// this process is then a worker until it is killed.
#[tokio::test]
#[ignore = "child-process entry point, run by a_killed_worker_loses_and_repeats_no_step"]
async fn worker_child_process() {
    let spec = std::env::var(CHILD_ENV)
        .expect("worker_child_process is started by a_killed_worker_loses_and_repeats_no_step");
    let (url, dir) = spec.split_once('|').unwrap();
    let dir = PathBuf::from(dir);
    let client = async_nats::connect(url).await.unwrap();
    let wf = Workflow::new("three-steps", move |ctx: WorkflowContext, _p| {
        let dir = dir.clone();
        async move {
            let log = dir.join("effects.log");
            ctx.step
                .run("one", || async {
                    log_effect(&log, "one");
                    Ok::<_, WorkflowError>(1)
                })
                .await?;
            ctx.step
                .run("two", || async {
                    log_effect(&log, &format!("enter-two {}", std::process::id()));
                    // Block until the test has killed the first worker and opened the gate.
                    while !dir.join("gate").exists() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    log_effect(&log, "two");
                    Ok::<_, WorkflowError>(2)
                })
                .await?;
            ctx.step
                .run("three", || async {
                    log_effect(&log, "three");
                    Ok::<_, WorkflowError>(3)
                })
                .await?;
            Ok(json!({"attempt": ctx.attempt()}))
        }
    });
    Worker::new(client)
        .workflow(wf)
        .ack_wait(Duration::from_secs(2))
        .run(std::future::pending())
        .await
        .unwrap();
}

/// Kills its child process on drop, so a failing test leaves no worker behind.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(url: &str, dir: &Path) -> ChildGuard {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "it::worker::worker_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{url}|{}", dir.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

#[tokio::test]
async fn a_killed_worker_loses_and_repeats_no_step() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("effects.log");
    let fire = fire_at("three-steps", "global", 0);

    let mut first = spawn_child(env.server.url(), dir.path());
    wait_consumer(&env.js, "three-steps").await;
    publish(&env.js, &fire).await;
    let first_pid = first.0.id();
    eventually("first worker inside step two", || async {
        count(&log, &format!("enter-two {first_pid}")) == 1
    })
    .await;
    // SIGKILL: no shutdown, no nak, no chance to write anything.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let running = run_record(&env.js, "three-steps", &fire.run_id)
        .await
        .unwrap();
    assert_eq!(running.status, RunStatus::Running);

    std::fs::write(dir.path().join("gate"), b"open").unwrap();
    let _second = spawn_child(env.server.url(), dir.path());
    let done = wait_status(&env.js, "three-steps", &fire.run_id, RunStatus::Completed).await;
    assert_eq!(done.attempt, 2, "redelivered once after the crash");
    assert_eq!(done.output, Some(json!({"attempt": 2})));
    assert_eq!(
        count(&log, "one"),
        1,
        "step one completed before the crash: not repeated"
    );
    assert_eq!(count(&log, "two"), 1);
    assert_eq!(count(&log, "three"), 1);
    let steps = env.js.get_key_value("polos_steps").await.unwrap();
    for (name, value) in [("one", 1), ("two", 2), ("three", 3)] {
        let s: StepRecord = serde_json::from_slice(
            &steps
                .get(step_kv_key(&fire.run_id, name))
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(s.output, json!(value));
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_runs() {
    let env = TestEnv::start().await;
    let (started_tx, started_rx) = tokio::sync::mpsc::channel::<()>(1);
    let wf = Workflow::new("slow", move |_ctx, _p| {
        let started = started_tx.clone();
        async move {
            let _ = started.send(()).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok("finished")
        }
    });
    let (stop, handle) = spawn_worker(Worker::new(env.client.clone()).workflow(wf));
    let fire = fire_at("slow", "global", 0);
    publish(&env.js, &fire).await;
    let mut started_rx = started_rx;
    within("run started", started_rx.recv()).await;
    drop(stop);
    within("worker stops", handle).await.unwrap();
    let r = run_record(&env.js, "slow", &fire.run_id).await.unwrap();
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "in-flight run finished before exit"
    );
    assert_eq!(outstanding(&env.js, "slow").await, (0, 0));
}

/// `polos <args>` against `url`: its exit code and stdout.
async fn runs_cli(url: &str, args: &[&str]) -> (i32, String) {
    let out = crate::common::polos_cli(url, args).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn runs_list_and_get_show_status_and_steps() {
    let env = TestEnv::start().await;
    let report = Workflow::new("report", |ctx: WorkflowContext, _p| async move {
        let data = ctx
            .step
            .run("fetch data", || async {
                Ok::<_, WorkflowError>(vec![7, 8])
            })
            .await?;
        ctx.step
            .run("send", || async { Ok::<_, WorkflowError>(data.len()) })
            .await?;
        Ok(json!({"status": "completed"}))
    });
    let broken = Workflow::new("broken", |_ctx, _p| async {
        Err::<(), _>(WorkflowError::terminal("no such user"))
    });
    let (stop, handle) = spawn_worker(
        Worker::new(env.client.clone())
            .workflow(report)
            .workflow(broken),
    );
    let ok = fire_at("report", "global", 0);
    let bad = fire_at("broken", "user_1", 0);
    publish(&env.js, &ok).await;
    publish(&env.js, &bad).await;
    wait_status(&env.js, "report", &ok.run_id, RunStatus::Completed).await;
    wait_status(&env.js, "broken", &bad.run_id, RunStatus::Failed).await;
    drop(stop);
    within("worker stops", handle).await.unwrap();
    let url = env.server.url().to_string();

    let (code, out) = runs_cli(&url, &["runs", "get", &ok.run_id, "--json"]).await;
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "completed");
    assert_eq!(v["workflow"], "report");
    assert_eq!(v["attempt"], 1);
    assert_eq!(v["output"], json!({"status": "completed"}));
    let names: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fetch data", "send"]);
    assert_eq!(v["steps"][0]["output"], json!([7, 8]));

    let (code, out) = runs_cli(&url, &["runs", "get", &bad.run_id]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("failed") && out.contains("no such user"),
        "{out}"
    );
    let absent = format!(
        "{}-20260101T000000Z",
        polos::model::schedule_id("report", "nobody")
    );
    let (code, _) = runs_cli(&url, &["runs", "get", &absent]).await;
    assert_eq!(code, 3, "not found");
    let (code, _) = runs_cli(&url, &["runs", "get", "sch_nothing-20260101T000000Z"]).await;
    assert_eq!(code, 2, "not a run id");

    let (code, out) = runs_cli(&url, &["runs", "list", "--json"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    let (_, out) = runs_cli(&url, &["runs", "list", "--status", "failed", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_id"], bad.run_id.as_str());
    let (_, out) = runs_cli(&url, &["runs", "list", "--workflow", "report"]).await;
    assert!(
        out.contains(&ok.run_id) && !out.contains(&bad.run_id),
        "{out}"
    );
}

#[tokio::test]
async fn a_worker_lost_during_the_last_attempt_leaves_a_failed_run() {
    let env = TestEnv::start().await;
    let hang = Workflow::new("last-try", |_ctx, _p| async {
        std::future::pending::<()>().await;
        Ok(())
    });
    let crashed = tokio::spawn(
        Worker::new(env.connect().await)
            .workflow(hang)
            .max_attempts(1)
            .ack_wait(Duration::from_secs(1))
            .run(std::future::pending()),
    );
    let fire = fire_at("last-try", "global", 0);
    wait_consumer(&env.js, "last-try").await;
    publish(&env.js, &fire).await;
    wait_status(&env.js, "last-try", &fire.run_id, RunStatus::Running).await;
    // Dropping the worker mid-run: no answer to the server, like a crash.
    crashed.abort();
    let _ = crashed.await;

    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let healthy = Workflow::new("last-try", move |_ctx, _p| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let (stop, handle) = spawn_worker(
        Worker::new(env.client.clone())
            .workflow(healthy)
            .max_attempts(1)
            .ack_wait(Duration::from_secs(1)),
    );
    let r = wait_status(&env.js, "last-try", &fire.run_id, RunStatus::Failed).await;
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("gave up after 1 attempts"),
        "{r:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no attempt beyond max_attempts"
    );
    eventually("terminated", || async {
        outstanding(&env.js, "last-try").await == (0, 0)
    })
    .await;
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn per_user_schedules_from_the_api_run_with_their_key_and_zone() {
    let env = TestEnv::start().await;
    let (stop_api, api) = super::schedules_api::serve_replica(&env).await;
    let seen: Arc<Mutex<Vec<(String, String, usize)>>> = Arc::default();
    let s = seen.clone();
    let digest = Workflow::new(
        "daily-digest",
        move |ctx: WorkflowContext, p: SchedulePayload| {
            let seen = s.clone();
            async move {
                let user_id = p.key.clone();
                let email = ctx
                    .step
                    .run("get_user", || async {
                        Ok::<_, WorkflowError>(format!("{user_id}@example.com"))
                    })
                    .await?;
                let digest = ctx
                    .step
                    .run("generate", || async {
                        Ok::<_, WorkflowError>(vec![email.clone()])
                    })
                    .await?;
                seen.lock().unwrap().push((p.key, p.timezone, digest.len()));
                Ok(json!({"user_id": user_id, "sent": true}))
            }
        },
    )
    .schedulable();
    let internal = Workflow::new("internal-only", |_ctx, _p| async { Ok(()) });
    let (stop, handle) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(digest)
            .workflow(internal),
    );
    wait_consumer(&env.js, "internal-only").await;

    let client = polos::PolosClient::from_nats(env.connect().await);
    let a = polos::schedules::create(
        &client,
        "daily-digest",
        "0 8 * * *",
        "America/New_York",
        "user_123",
    )
    .await
    .unwrap();
    let b = polos::schedules::create(
        &client,
        "daily-digest",
        "0 8 * * *",
        "Europe/London",
        "user_456",
    )
    .await
    .unwrap();
    assert_ne!(a, b);
    // Same workflow and key again: an update, not a duplicate.
    let again = polos::schedules::create(
        &client,
        "daily-digest",
        "0 9 * * *",
        "Europe/London",
        "user_456",
    )
    .await
    .unwrap();
    assert_eq!(again, b);
    // The worker registered `internal-only` as not schedulable: the API refuses it.
    let refused = polos::schedules::create(&client, "internal-only", "0 8 * * *", "UTC", "x")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(polos::api::ErrorCode::NotSchedulable),
        "{refused}"
    );

    let run_a = polos::schedules::trigger(&client, "daily-digest", "user_123")
        .await
        .unwrap();
    let run_b = polos::schedules::trigger(&client, "daily-digest", "user_456")
        .await
        .unwrap();
    let ra = wait_status(&env.js, "daily-digest", &run_a, RunStatus::Completed).await;
    wait_status(&env.js, "daily-digest", &run_b, RunStatus::Completed).await;
    assert_eq!(
        ra.output,
        Some(json!({"user_id": "user_123", "sent": true}))
    );
    assert_eq!(ra.trigger, Trigger::Manual);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("user_123".to_string(), "America/New_York".to_string(), 1),
            ("user_456".to_string(), "Europe/London".to_string(), 1)
        ]
    );
    drop(stop);
    within("worker stops", handle).await.unwrap();
    let _ = stop_api.send(());
    within("API stops", api).await.unwrap();
}
