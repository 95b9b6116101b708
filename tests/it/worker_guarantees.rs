//! The worker's guarantees under overlap and faults: one execution owns a run, attempts are
//! counted when a handler starts, a worker holds no more fires than it has free slots, a lost
//! consumer is re-created without a tight loop, and fires that are not fires are terminated.
//!
//! Evidence comes from outside the worker where possible: step bodies counted by the test, the
//! writes the server stored (a KV watch), stream and consumer state, the client's own counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use polos::model::{step_kv_key, RunRecord, RunStatus, StepRecord};
use polos::worker::{Worker, WorkerStats, Workflow, WorkflowContext, WorkflowError};
use serde_json::json;
use tokio::sync::{oneshot, watch};

use super::worker::{
    fire_at, outstanding, publish, run_record, spawn_worker, wait_consumer, wait_status,
};
use crate::common::{eventually, stream_info, within, TestEnv};

/// How many times each named thing happened, across every execution in a test.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<HashMap<String, usize>>>);

impl Counts {
    fn add(&self, name: &str) {
        *self.0.lock().unwrap().entry(name.to_string()).or_default() += 1;
    }

    fn get(&self, name: &str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

/// Every value the server stored for one run record, in order, seen through a KV watch started
/// before the run (a refused compare-and-swap is never stored, so it never shows here).
struct StoredWrites(Arc<Mutex<Vec<RunRecord>>>);

impl StoredWrites {
    async fn watch(js: &jetstream::Context, workflow: &str, run_id: &str) -> StoredWrites {
        let kv = js.get_key_value("polos_runs").await.unwrap();
        let mut updates = kv
            .watch(polos::model::run_kv_key(workflow, run_id))
            .await
            .unwrap();
        let seen: Arc<Mutex<Vec<RunRecord>>> = Arc::default();
        let out = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(entry)) = updates.next().await {
                if let Ok(record) = serde_json::from_slice(&entry.value) {
                    out.lock().unwrap().push(record);
                }
            }
        });
        StoredWrites(seen)
    }

    fn with_status(&self, status: RunStatus) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == status)
            .count()
    }
}

async fn stored_step(js: &jetstream::Context, run_id: &str, step: &str) -> StepRecord {
    let steps = js.get_key_value("polos_steps").await.unwrap();
    let bytes = steps.get(step_kv_key(run_id, step)).await.unwrap().unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Three steps whose bodies are counted in `counts` (`one`, `two`, `three`) and whose outputs
/// say which worker (`who`) ran them; `inside_two` runs inside step two's body. The handler
/// counts `returned` when it gets past all three.
fn three_counted_steps<G>(id: &str, who: &'static str, counts: Counts, inside_two: G) -> Workflow
where
    G: Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync + Clone + 'static,
{
    Workflow::new(id, move |ctx: WorkflowContext, _p| {
        let (counts, inside_two) = (counts.clone(), inside_two.clone());
        async move {
            counts.add("started");
            let one = ctx
                .step
                .run("one", || async {
                    counts.add("one");
                    Ok::<_, WorkflowError>(format!("one by {who}"))
                })
                .await?;
            let two = ctx
                .step
                .run("two", || async {
                    counts.add("two");
                    inside_two().await;
                    Ok::<_, WorkflowError>(format!("two by {who}"))
                })
                .await?;
            let three = ctx
                .step
                .run("three", || async {
                    counts.add("three");
                    Ok::<_, WorkflowError>(format!("three by {who}"))
                })
                .await?;
            counts.add("returned");
            Ok(json!({"one": one, "two": two, "three": three}))
        }
    })
}

fn nothing() -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async {})
}

/// Worker A stalls inside step two (blocking its thread, as blocking code in a handler would),
/// so its in-progress acks stop and the server redelivers the fire to worker B while A still
/// lives. B takes the run over; when A resumes it uses what B stored, runs no stored step again,
/// and its final write is refused: one result is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_while_the_first_execution_lives_records_one_result() {
    let env = TestEnv::start().await;
    let wf = "overlap-redelivered";
    let fire = fire_at(wf, "global", 0);
    let counts = Counts::default();
    let writes = StoredWrites::watch(&env.js, wf, &fire.run_id).await;

    let inside_two = Arc::new(AtomicBool::new(false));
    let unblock = Arc::new(AtomicBool::new(false));
    let (stop_a, stop_a_rx) = oneshot::channel::<()>();
    let (stats_tx, stats_a) = std::sync::mpsc::channel::<WorkerStats>();
    let a = {
        let url = env.server.url().to_string();
        let (counts, inside_two, unblock) = (counts.clone(), inside_two.clone(), unblock.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = async_nats::connect(url).await.unwrap();
                let stall = move || -> futures::future::BoxFuture<'static, ()> {
                    inside_two.store(true, SeqCst);
                    // Blocks the whole runtime of worker A: no in-progress acks, no fetching.
                    while !unblock.load(SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Box::pin(async {})
                };
                let worker = Worker::new(client)
                    .workflow(three_counted_steps(wf, "A", counts, stall))
                    .concurrency(1)
                    .ack_wait(Duration::from_secs(1));
                stats_tx.send(worker.stats()).unwrap();
                worker
                    .run(async {
                        let _ = stop_a_rx.await;
                    })
                    .await
                    .unwrap();
            })
        })
    };
    wait_consumer(&env.js, wf).await;
    publish(&env.js, &fire).await;
    eventually("worker A inside step two", || async {
        inside_two.load(SeqCst)
    })
    .await;

    let (stop_b, b) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(three_counted_steps(wf, "B", counts.clone(), nothing))
            .ack_wait(Duration::from_secs(1)),
    );
    let done = wait_status(&env.js, wf, &fire.run_id, RunStatus::Completed).await;
    unblock.store(true, SeqCst);
    // Stopping A waits for its execution to end, final write included.
    let _ = stop_a.send(());
    within(
        "worker A stops",
        tokio::task::spawn_blocking(move || a.join()),
    )
    .await
    .unwrap()
    .unwrap();
    drop(stop_b);
    within("worker B stops", b).await.unwrap();

    assert_eq!(counts.get("started"), 2, "both deliveries ran the handler");
    assert_eq!(
        counts.get("one"),
        1,
        "stored before B started: not run again"
    );
    assert_eq!(
        counts.get("two"),
        2,
        "A was inside step two when B ran it (a step body runs at least once)"
    );
    assert_eq!(
        counts.get("three"),
        1,
        "B stored step three before A reached it: A must use it, not run it again"
    );
    assert_eq!(
        stored_step(&env.js, &fire.run_id, "two").await.output,
        json!("two by B"),
        "the first stored output wins"
    );
    assert_eq!(
        done.output,
        Some(json!({"one": "one by A", "two": "two by B", "three": "three by B"}))
    );
    assert_eq!(
        writes.with_status(RunStatus::Completed),
        1,
        "one recorded result"
    );
    assert_eq!(
        run_record(&env.js, wf, &fire.run_id).await.unwrap(),
        done,
        "A's late final write did not overwrite B's"
    );
    assert_eq!(outstanding(&env.js, wf).await, (0, 0));
    let a = stats_a.recv().unwrap().snapshot();
    assert_eq!((a.superseded, a.runs_completed), (1, 0), "{a:?}");
}

/// The same run published again after the duplicate window (same `Polos-Run-Id`, another
/// `Nats-Msg-Id`) while its first fire is still running: the second message is acked without
/// running anything, and the first finishes alone.
#[tokio::test]
async fn a_fire_published_again_while_its_run_runs_does_not_run_again() {
    let env = TestEnv::start().await;
    let wf = "overlap-republished";
    let fire = fire_at(wf, "global", 0);
    let counts = Counts::default();
    let writes = StoredWrites::watch(&env.js, wf, &fire.run_id).await;
    let (open_gate, gate) = watch::channel(false);
    let entered = Arc::new(AtomicUsize::new(0));
    let hold_first = {
        let entered = entered.clone();
        move || -> futures::future::BoxFuture<'static, ()> {
            let mut gate = gate.clone();
            let first = entered.fetch_add(1, SeqCst) == 0;
            Box::pin(async move {
                if first {
                    let _ = gate.wait_for(|open| *open).await;
                }
            })
        }
    };
    let worker = Worker::new(env.connect().await)
        .workflow(three_counted_steps(wf, "A", counts.clone(), hold_first))
        .concurrency(2);
    let stats = worker.stats();
    let (stop, handle) = spawn_worker(worker);
    wait_consumer(&env.js, wf).await;
    publish(&env.js, &fire).await;
    eventually("first execution inside step two", || async {
        entered.load(SeqCst) == 1
    })
    .await;

    let mut again = fire.headers();
    again.insert("Nats-Msg-Id", "published-again-after-the-duplicate-window");
    env.js
        .publish_with_headers(fire.subject(), again, fire.body())
        .await
        .unwrap()
        .await
        .unwrap();
    eventually("the second message answered", || async {
        stream_info(&env.js, "POLOS_RUNS").await.state.messages == 1
    })
    .await;
    assert_eq!(counts.get("started"), 1, "the second message ran nothing");

    open_gate.send(true).unwrap();
    let done = wait_status(&env.js, wf, &fire.run_id, RunStatus::Completed).await;
    eventually("queue drained", || async {
        outstanding(&env.js, wf).await == (0, 0)
    })
    .await;
    drop(stop);
    within("worker stops", handle).await.unwrap();
    for step in ["started", "one", "two", "three"] {
        assert_eq!(counts.get(step), 1, "{step}");
    }
    assert_eq!(
        done.output,
        Some(json!({"one": "one by A", "two": "two by A", "three": "three by A"}))
    );
    assert_eq!(writes.with_status(RunStatus::Completed), 1);
    assert_eq!(done.attempt, 1);
    let stats = stats.snapshot();
    assert_eq!(
        (stats.duplicate_fires, stats.runs_started),
        (1, 1),
        "{stats:?}"
    );
}

/// With `max_attempts(1)`, runs released by a stopping worker (and fires it had pulled but not
/// started) run to completion on the next worker: giving a run back uses no attempt.
#[tokio::test]
async fn released_and_unstarted_fires_use_no_attempt() {
    let env = TestEnv::start().await;
    let wf = "restarted";
    let effects = Counts::default();
    let entered = Arc::new(AtomicUsize::new(0));
    let workflow = |hold: bool| {
        let (effects, entered) = (effects.clone(), entered.clone());
        Workflow::new(wf, move |ctx: WorkflowContext, _p| {
            let (effects, entered) = (effects.clone(), entered.clone());
            async move {
                let run_id = ctx.run_id().to_string();
                ctx.step
                    .run("effect", || async {
                        effects.add(&run_id);
                        Ok::<_, WorkflowError>(())
                    })
                    .await?;
                if hold {
                    entered.fetch_add(1, SeqCst);
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        })
    };
    let worker_a = Worker::new(env.connect().await)
        .workflow(workflow(true))
        .concurrency(2)
        .max_attempts(1)
        .shutdown_timeout(Duration::ZERO);
    let stats_a = worker_a.stats();
    let (stop_a, a) = spawn_worker(worker_a);
    wait_consumer(&env.js, wf).await;
    // One schedule per fire: fires of one schedule would follow its overlap policy.
    let fires: Vec<_> = (0..5).map(|i| fire_at(wf, &format!("k{i}"), i)).collect();
    for f in &fires {
        publish(&env.js, f).await;
    }
    eventually("two runs held by worker A", || async {
        entered.load(SeqCst) == 2
    })
    .await;
    drop(stop_a);
    within("worker A stops", a).await.unwrap();
    assert_eq!(stats_a.snapshot().runs_released, 2);

    let (stop_b, b) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(workflow(false))
            .concurrency(5)
            .max_attempts(1),
    );
    for f in &fires {
        let r = wait_status(&env.js, wf, &f.run_id, RunStatus::Completed).await;
        assert_eq!(r.attempt, 1, "{r:?}");
        assert_eq!(effects.get(&f.run_id), 1, "step of {} ran once", f.run_id);
    }
    drop(stop_b);
    within("worker B stops", b).await.unwrap();
}

/// Two workers with one slot each; A is stuck in a long run. The next fire runs on B at once
/// instead of waiting in a fire A pulled ahead of time.
#[tokio::test]
async fn a_busy_worker_leaves_the_next_fire_to_an_idle_one() {
    let env = TestEnv::start().await;
    let wf = "one-slot";
    // Two schedules: a second fire of the stuck one would be skipped (overlap policy).
    let stuck = fire_at(wf, "stuck", 0);
    let next = fire_at(wf, "next", 1);
    let ran_by: Arc<Mutex<HashMap<String, &'static str>>> = Arc::default();
    let workflow = |who: &'static str| {
        let (ran_by, stuck_id) = (ran_by.clone(), stuck.run_id.clone());
        Workflow::new(wf, move |ctx: WorkflowContext, _p| {
            let (ran_by, stuck_id) = (ran_by.clone(), stuck_id.clone());
            async move {
                ran_by.lock().unwrap().insert(ctx.run_id().to_string(), who);
                if ctx.run_id() == stuck_id {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        })
    };
    let (stop_a, a) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(workflow("A"))
            .concurrency(1)
            .shutdown_timeout(Duration::ZERO),
    );
    wait_consumer(&env.js, wf).await;
    publish(&env.js, &stuck).await;
    eventually("A runs the long run", || async {
        ran_by.lock().unwrap().get(&stuck.run_id) == Some(&"A")
    })
    .await;
    let (stop_b, b) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(workflow("B"))
            .concurrency(1),
    );
    publish(&env.js, &next).await;
    wait_status(&env.js, wf, &next.run_id, RunStatus::Completed).await;
    assert_eq!(ran_by.lock().unwrap()[&next.run_id], "B");
    drop((stop_a, stop_b));
    within("worker A stops", a).await.unwrap();
    within("worker B stops", b).await.unwrap();
}

/// The consumer deleted under a running worker is re-created and later fires run; with the
/// whole stream gone for a while the worker backs off instead of sending requests in a loop.
#[tokio::test]
async fn a_lost_consumer_is_recreated_without_a_tight_loop() {
    let env = TestEnv::start().await;
    let wf = "consumer-lost";
    let client = env.connect().await;
    let sent_by_client = client.statistics();
    let worker = Worker::new(client).workflow(Workflow::new(wf, |_ctx, _p| async { Ok(()) }));
    let stats = worker.stats();
    let (stop, handle) = spawn_worker(worker);
    wait_consumer(&env.js, wf).await;
    let consumer = format!("polos_{wf}");

    // 1. Only the consumer is deleted: it comes back and fires run again.
    let stream = env.js.get_stream("POLOS_RUNS").await.unwrap();
    stream.delete_consumer(&consumer).await.unwrap();
    eventually("consumer re-created", || async {
        stream
            .get_consumer::<jetstream::consumer::pull::Config>(&consumer)
            .await
            .is_ok()
    })
    .await;
    let first = fire_at(wf, "global", 0);
    publish(&env.js, &first).await;
    wait_status(&env.js, wf, &first.run_id, RunStatus::Completed).await;

    // 2. The stream is gone (so is the consumer, and re-creating it fails) for a while. This
    // is a measurement window, not a wait for an event: count what the worker sends meanwhile.
    env.js.delete_stream("POLOS_RUNS").await.unwrap();
    let sent_before = sent_by_client.out_messages.load(SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = sent_by_client.out_messages.load(SeqCst) - sent_before;
    assert!(
        sent < 60,
        "the worker sent {sent} messages in 3 s without a consumer: a tight loop"
    );

    polos::nats::streams::apply(&env.js, &polos::config::StorageConfig::default())
        .await
        .unwrap();
    let stream = env.js.get_stream("POLOS_RUNS").await.unwrap();
    eventually("consumer re-created with the stream", || async {
        stream
            .get_consumer::<jetstream::consumer::pull::Config>(&consumer)
            .await
            .is_ok()
    })
    .await;
    let second = fire_at(wf, "global", 1);
    publish(&env.js, &second).await;
    wait_status(&env.js, wf, &second.run_id, RunStatus::Completed).await;
    assert_eq!(stats.snapshot().consumer_recreations, 2);
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

/// Messages on `polos.runs.<workflow>` that are not fires (a `Polos-Run-Id` that is not a run
/// id, a body that is not a payload) are terminated at once, not redelivered forever.
#[tokio::test]
async fn messages_that_are_not_fires_are_terminated() {
    let env = TestEnv::start().await;
    let wf = "strict";
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let worker = Worker::new(env.connect().await).workflow(Workflow::new(wf, move |_ctx, _p| {
        let c = c.clone();
        async move {
            c.fetch_add(1, SeqCst);
            Ok(())
        }
    }));
    let stats = worker.stats();
    let (stop, handle) = spawn_worker(worker);
    wait_consumer(&env.js, wf).await;
    let fire = fire_at(wf, "global", 0);
    for (n, bad_id) in ["has spaces", "sch_x.y", "hello", ""].iter().enumerate() {
        let mut headers = fire.headers();
        headers.insert("Nats-Msg-Id", format!("bad-id-{n}").as_str());
        headers.insert("Polos-Run-Id", *bad_id);
        env.js
            .publish_with_headers(fire.subject(), headers, fire.body())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut headers = fire.headers();
    headers.insert("Nats-Msg-Id", "bad-body");
    env.js
        .publish_with_headers(fire.subject(), headers, "{not a payload".into())
        .await
        .unwrap()
        .await
        .unwrap();
    eventually("every bad message terminated", || async {
        outstanding(&env.js, wf).await == (0, 0)
            && stream_info(&env.js, "POLOS_RUNS").await.state.messages == 0
    })
    .await;
    assert_eq!(calls.load(SeqCst), 0, "nothing ran");
    assert_eq!(stats.snapshot().rejected_fires, 5, "each one is counted");
    publish(&env.js, &fire).await;
    wait_status(&env.js, wf, &fire.run_id, RunStatus::Completed).await;
    assert_eq!(calls.load(SeqCst), 1);
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

/// A hung attempt is cancelled after the workflow's timeout, counts as a retryable failure and
/// frees its slot: the next fire runs meanwhile, and the retry completes.
#[tokio::test]
async fn a_hung_run_times_out_frees_its_slot_and_is_retried() {
    let env = TestEnv::start().await;
    let wf = "hangs-once";
    // Two schedules: a second fire of the hung one would be skipped (overlap policy).
    let hung = fire_at(wf, "hung", 0);
    let next = fire_at(wf, "next", 1);
    let hung_id = hung.run_id.clone();
    let worker = Worker::new(env.connect().await)
        .workflow(
            Workflow::new(wf, move |ctx: WorkflowContext, _p| {
                let hung_id = hung_id.clone();
                async move {
                    if ctx.run_id() == hung_id && ctx.attempt() == 1 {
                        std::future::pending::<()>().await;
                    }
                    Ok(ctx.attempt())
                }
            })
            .timeout(Duration::from_millis(500)),
        )
        .concurrency(1)
        .retry_backoff(Duration::from_millis(100));
    let stats = worker.stats();
    let (stop, handle) = spawn_worker(worker);
    wait_consumer(&env.js, wf).await;
    publish(&env.js, &hung).await;
    publish(&env.js, &next).await;
    let r = wait_status(&env.js, wf, &next.run_id, RunStatus::Completed).await;
    assert_eq!(
        r.output,
        Some(json!(1)),
        "the slot was freed for the next fire"
    );
    let r = wait_status(&env.js, wf, &hung.run_id, RunStatus::Completed).await;
    assert_eq!((r.attempt, r.output), (2, Some(json!(2))));
    let stats = stats.snapshot();
    assert_eq!(
        (stats.runs_timed_out, stats.runs_retried),
        (1, 1),
        "{stats:?}"
    );
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

/// A handler that blocks its thread for three times `ack_wait` (as careless synchronous code
/// does) keeps its fire: it runs in its own task, so the in-progress acks go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_code_in_a_handler_does_not_stop_the_in_progress_acks() {
    let env = TestEnv::start().await;
    let wf = "blocks";
    let counts = Counts::default();
    let c = counts.clone();
    let worker = Worker::new(env.connect().await)
        .workflow(Workflow::new(wf, move |_ctx, _p| {
            let c = c.clone();
            async move {
                c.add("started");
                std::thread::sleep(Duration::from_secs(3));
                Ok(())
            }
        }))
        .ack_wait(Duration::from_secs(1));
    let stats = worker.stats();
    let (stop, handle) = spawn_worker(worker);
    wait_consumer(&env.js, wf).await;
    let fire = fire_at(wf, "global", 0);
    publish(&env.js, &fire).await;
    let r = wait_status(&env.js, wf, &fire.run_id, RunStatus::Completed).await;
    drop(stop);
    within("worker stops", handle).await.unwrap();
    assert_eq!(r.attempt, 1);
    assert_eq!(counts.get("started"), 1, "never redelivered");
    assert_eq!(stats.snapshot().superseded, 0);
}

/// The same for an ordinary long run: three times `ack_wait` of async work, one delivery.
#[tokio::test]
async fn a_run_longer_than_ack_wait_keeps_its_fire() {
    let env = TestEnv::start().await;
    let wf = "long";
    let counts = Counts::default();
    let c = counts.clone();
    let (stop, handle) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(Workflow::new(wf, move |ctx: WorkflowContext, _p| {
                let c = c.clone();
                async move {
                    c.add("started");
                    ctx.step
                        .run("wait", || async {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            Ok::<_, WorkflowError>(())
                        })
                        .await?;
                    Ok(())
                }
            }))
            .ack_wait(Duration::from_secs(1)),
    );
    wait_consumer(&env.js, wf).await;
    let fire = fire_at(wf, "global", 0);
    publish(&env.js, &fire).await;
    let r = wait_status(&env.js, wf, &fire.run_id, RunStatus::Completed).await;
    drop(stop);
    within("worker stops", handle).await.unwrap();
    assert_eq!((r.attempt, counts.get("started")), (1, 1));
}

/// A retry (a handler error, not a crash) resumes after the last step that completed: the
/// steps before the failing one do not run again.
#[tokio::test]
async fn a_retry_resumes_after_the_last_completed_step() {
    let env = TestEnv::start().await;
    let wf = "fails-in-two";
    let counts = Counts::default();
    let c = counts.clone();
    let (stop, handle) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(Workflow::new(wf, move |ctx: WorkflowContext, _p| {
                let c = c.clone();
                async move {
                    let one = ctx
                        .step
                        .run("one", || async {
                            c.add("one");
                            Ok::<_, WorkflowError>(ctx.attempt())
                        })
                        .await?;
                    let two = ctx
                        .step
                        .run("two", || async {
                            c.add("two");
                            if ctx.attempt() == 1 {
                                return Err(WorkflowError::retryable("upstream down"));
                            }
                            Ok(ctx.attempt())
                        })
                        .await?;
                    Ok(json!([one, two]))
                }
            }))
            .retry_backoff(Duration::from_millis(100)),
    );
    wait_consumer(&env.js, wf).await;
    let fire = fire_at(wf, "global", 0);
    publish(&env.js, &fire).await;
    let r = wait_status(&env.js, wf, &fire.run_id, RunStatus::Completed).await;
    drop(stop);
    within("worker stops", handle).await.unwrap();
    assert_eq!(r.attempt, 2);
    assert_eq!(
        r.output,
        Some(json!([1, 2])),
        "step one's output is from attempt 1"
    );
    assert_eq!((counts.get("one"), counts.get("two")), (1, 2));
}

/// `concurrency(3)` with ten fires waiting: three run at once, and the worker holds no more
/// than those three (seven stay in the stream for any other worker).
#[tokio::test]
async fn a_worker_runs_and_holds_at_most_its_concurrency() {
    let env = TestEnv::start().await;
    let wf = "limited";
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (open_gate, gate) = watch::channel(false);
    let (r, m) = (running.clone(), most.clone());
    let (stop, handle) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(Workflow::new(wf, move |_ctx, _p| {
                let (running, most, mut gate) = (r.clone(), m.clone(), gate.clone());
                async move {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    let _ = gate.wait_for(|open| *open).await;
                    running.fetch_sub(1, SeqCst);
                    Ok(())
                }
            }))
            .concurrency(3),
    );
    wait_consumer(&env.js, wf).await;
    // One schedule per fire: fires of one schedule would follow its overlap policy.
    let fires: Vec<_> = (0..10).map(|i| fire_at(wf, &format!("k{i}"), i)).collect();
    for f in &fires {
        publish(&env.js, f).await;
    }
    eventually("3 running, 3 held, 7 waiting in the stream", || async {
        running.load(SeqCst) == 3 && outstanding(&env.js, wf).await == (7, 3)
    })
    .await;
    open_gate.send(true).unwrap();
    for f in &fires {
        wait_status(&env.js, wf, &f.run_id, RunStatus::Completed).await;
    }
    drop(stop);
    within("worker stops", handle).await.unwrap();
    assert_eq!(most.load(SeqCst), 3);
}

/// When the shutdown grace period ends, unfinished runs are handed back at once (not after
/// `ack_wait`) and resume on another worker without using an attempt.
#[tokio::test]
async fn the_shutdown_grace_period_releases_unfinished_runs() {
    let env = TestEnv::start().await;
    let wf = "outlives-shutdown";
    let started = Arc::new(AtomicUsize::new(0));
    let workflow = |hang: bool| {
        let started = started.clone();
        Workflow::new(wf, move |ctx: WorkflowContext, _p| {
            let started = started.clone();
            async move {
                started.fetch_add(1, SeqCst);
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok(ctx.attempt())
            }
        })
    };
    // ack_wait far beyond the test's patience: only a release can bring the run back in time.
    let worker_a = Worker::new(env.connect().await)
        .workflow(workflow(true))
        .ack_wait(Duration::from_secs(120))
        .shutdown_timeout(Duration::from_millis(300));
    let stats_a = worker_a.stats();
    let (stop_a, a) = spawn_worker(worker_a);
    wait_consumer(&env.js, wf).await;
    let fire = fire_at(wf, "global", 0);
    publish(&env.js, &fire).await;
    eventually("worker A runs it", || async { started.load(SeqCst) == 1 }).await;
    drop(stop_a);
    within("worker A stops after its grace period", a)
        .await
        .unwrap();
    assert_eq!(stats_a.snapshot().runs_released, 1);
    let (stop_b, b) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(workflow(false))
            .ack_wait(Duration::from_secs(120)),
    );
    let r = wait_status(&env.js, wf, &fire.run_id, RunStatus::Completed).await;
    assert_eq!(
        (r.attempt, r.output),
        (1, Some(json!(1))),
        "no attempt used"
    );
    drop(stop_b);
    within("worker B stops", b).await.unwrap();
}

/// Outputs larger than the server's `max_payload` fail the run at once (no retries), and the
/// error names the limit.
#[tokio::test]
async fn outputs_over_the_servers_max_payload_fail_at_once_naming_the_limit() {
    let env = TestEnv::start().await;
    let limit = env.client.server_info().max_payload;
    let big = move || "x".repeat(limit + 1);
    let step = Workflow::new("big-step", move |ctx: WorkflowContext, _p| async move {
        ctx.step
            .run("huge", || async move { Ok::<_, WorkflowError>(big()) })
            .await?;
        Ok(())
    });
    let output = Workflow::new("big-output", move |_ctx, _p| async move { Ok(big()) });
    let (stop, handle) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(step)
            .workflow(output)
            .max_attempts(3)
            .retry_backoff(Duration::from_millis(100)),
    );
    let in_step = fire_at("big-step", "global", 0);
    let as_output = fire_at("big-output", "global", 0);
    wait_consumer(&env.js, "big-output").await;
    publish(&env.js, &in_step).await;
    publish(&env.js, &as_output).await;
    for (wf, fire) in [("big-step", &in_step), ("big-output", &as_output)] {
        let r = wait_status(&env.js, wf, &fire.run_id, RunStatus::Failed).await;
        let error = r.error.unwrap();
        assert_eq!(r.attempt, 1, "{wf}: terminal, not retried: {error}");
        assert!(
            error.contains("max_payload") && error.contains(&limit.to_string()),
            "{wf}: {error}"
        );
        assert_eq!(r.output, None);
    }
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

/// What a step returns on its first run is what a replay would return: the value read back
/// from its stored JSON.
#[tokio::test]
async fn a_step_returns_its_stored_json_on_the_first_run_too() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Report {
        total: u32,
        #[serde(skip_serializing, default)]
        cache: Option<String>,
    }
    let env = TestEnv::start().await;
    let skipped = Workflow::new("round-trip", |ctx: WorkflowContext, _p| async move {
        let report = ctx
            .step
            .run("report", || async {
                Ok::<_, WorkflowError>(Report {
                    total: 5,
                    cache: Some("not stored".into()),
                })
            })
            .await?;
        Ok(json!({"total": report.total, "cache": report.cache}))
    });
    let nan = Workflow::new("nan", |ctx: WorkflowContext, _p| async move {
        let x: f64 = ctx
            .step
            .run("ratio", || async { Ok::<_, WorkflowError>(f64::NAN) })
            .await?;
        Ok(x.to_string())
    });
    let (stop, handle) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(skipped)
            .workflow(nan),
    );
    wait_consumer(&env.js, "nan").await;
    let a = fire_at("round-trip", "global", 0);
    let b = fire_at("nan", "global", 0);
    publish(&env.js, &a).await;
    publish(&env.js, &b).await;
    let r = wait_status(&env.js, "round-trip", &a.run_id, RunStatus::Completed).await;
    assert_eq!(r.output, Some(json!({"total": 5, "cache": null})));
    let r = wait_status(&env.js, "nan", &b.run_id, RunStatus::Failed).await;
    assert_eq!(r.attempt, 1, "terminal: a replay would fail the same way");
    assert!(
        r.error.as_deref().unwrap().contains("\"ratio\""),
        "{:?}",
        r.error
    );
    drop(stop);
    within("worker stops", handle).await.unwrap();
}

/// `idempotency_key` is `<run_id>.<step>`, the same on every attempt.
#[tokio::test]
async fn a_steps_idempotency_key_is_the_same_on_every_attempt() {
    let env = TestEnv::start().await;
    let wf = "charges";
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let k = keys.clone();
    let (stop, handle) = spawn_worker(
        Worker::new(env.connect().await)
            .workflow(Workflow::new(wf, move |ctx: WorkflowContext, _p| {
                let k = k.clone();
                async move {
                    k.lock().unwrap().push(ctx.step.idempotency_key("charge"));
                    if ctx.attempt() == 1 {
                        return Err(WorkflowError::retryable("card network down"));
                    }
                    Ok(())
                }
            }))
            .retry_backoff(Duration::from_millis(100)),
    );
    wait_consumer(&env.js, wf).await;
    let fire = fire_at(wf, "global", 0);
    publish(&env.js, &fire).await;
    wait_status(&env.js, wf, &fire.run_id, RunStatus::Completed).await;
    drop(stop);
    within("worker stops", handle).await.unwrap();
    let expected = format!("{}.charge", fire.run_id);
    assert_eq!(*keys.lock().unwrap(), [expected.clone(), expected]);
}

/// Garbage written by hand into `polos_runs` or `polos_steps` never crashes a worker or the CLI:
/// an unreadable run record is replaced by the run, an unreadable step result fails the run at
/// once with an error naming the key, and `polos runs` names what it cannot read.
#[tokio::test]
async fn garbage_in_the_run_buckets_gives_clear_errors() {
    let env = TestEnv::start().await;
    let wf = "garbage";
    let runs = env.js.get_key_value("polos_runs").await.unwrap();
    let steps = env.js.get_key_value("polos_steps").await.unwrap();
    // Separate schedules, so neither waits for the other (overlap policy).
    let replaced = fire_at(wf, "a", 0);
    let broken_step = fire_at(wf, "b", 1);
    runs.put(
        polos::model::run_kv_key(wf, &replaced.run_id),
        "not json".into(),
    )
    .await
    .unwrap();
    steps
        .put(step_kv_key(&broken_step.run_id, "one"), "{\"out".into())
        .await
        .unwrap();
    let (stop, handle) = spawn_worker(Worker::new(env.connect().await).workflow(Workflow::new(
        wf,
        |ctx: WorkflowContext, _p| async move {
            ctx.step
                .run("one", || async { Ok::<_, WorkflowError>(1) })
                .await
        },
    )));
    wait_consumer(&env.js, wf).await;
    publish(&env.js, &replaced).await;
    publish(&env.js, &broken_step).await;
    // Until the worker replaced it, the record is the garbage: read it only once both are done.
    eventually("both fires answered", || async {
        outstanding(&env.js, wf).await == (0, 0)
    })
    .await;
    let r = wait_status(&env.js, wf, &replaced.run_id, RunStatus::Completed).await;
    assert_eq!((r.attempt, r.output), (1, Some(json!(1))));
    let r = wait_status(&env.js, wf, &broken_step.run_id, RunStatus::Failed).await;
    let error = r.error.unwrap();
    assert_eq!(r.attempt, 1, "terminal: {error}");
    assert!(
        error.contains(&step_kv_key(&broken_step.run_id, "one"))
            && error.contains("not a step record"),
        "{error}"
    );
    drop(stop);
    within("worker stops", handle).await.unwrap();

    let garbage_run = fire_at(wf, "global", 2);
    let garbage_key = polos::model::run_kv_key(wf, &garbage_run.run_id);
    runs.put(&garbage_key, "[1,2".into()).await.unwrap();
    let url = env.server.url().to_string();
    let out = crate::common::polos_cli(&url, &["runs", "get", &garbage_run.run_id]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&garbage_key), "{stderr}");
    let out = crate::common::polos_cli(&url, &["runs", "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&garbage_key), "{stderr}");
}

/// On a 3-node cluster with R3 streams, the stream and the consumer electing new leaders under a
/// running worker do not stop it: fires published after the elections run.
#[tokio::test]
async fn leader_elections_of_the_stream_and_consumer_do_not_stop_a_worker() {
    let c = crate::common::TestCluster::start().await;
    let wf = "elected";
    let client = async_nats::connect(c.cluster.urls()).await.unwrap();
    let sent_by_client = client.statistics();
    let (stop, handle) =
        spawn_worker(Worker::new(client).workflow(Workflow::new(wf, |_ctx, _p| async { Ok(()) })));
    wait_consumer(&c.js, wf).await;
    let first = fire_at(wf, "global", 0);
    publish(&c.js, &first).await;
    wait_status(&c.js, wf, &first.run_id, RunStatus::Completed).await;

    let sent_before = sent_by_client.out_messages.load(SeqCst);
    for subject in [
        "$JS.API.STREAM.LEADER.STEPDOWN.POLOS_RUNS".to_string(),
        format!("$JS.API.CONSUMER.LEADER.STEPDOWN.POLOS_RUNS.polos_{wf}"),
    ] {
        let reply = c.client.request(subject.clone(), "".into()).await.unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(answer["success"], true, "{subject}: {answer}");
    }
    for i in 1..=3 {
        let fire = fire_at(wf, "global", i);
        eventually("fire published to the new leader", || async {
            match c
                .js
                .publish_with_headers(fire.subject(), fire.headers(), fire.body())
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        wait_status(&c.js, wf, &fire.run_id, RunStatus::Completed).await;
    }
    let sent = sent_by_client.out_messages.load(SeqCst) - sent_before;
    assert!(
        sent < 200,
        "the worker sent {sent} messages around two elections"
    );
    drop(stop);
    within("worker stops", handle).await.unwrap();
}
