//! Run policies end to end (issue 12): overlap (`skip`, `buffer_one`, `buffer_all`,
//! `allow_all`, `cancel_other`), retry policies, cancel, pause on failure and `schedules get`,
//! on one server and on a 3-node cluster with R3 streams. Runs outlast the next instant with a
//! gate the test opens; every check reads KV from outside the worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use polos::api::UpsertRequest;
use polos::config::Config;
use polos::model::{
    schedule_kv_key, CancelRecord, OverlapPolicy, OverlapRecord, RunStatus, SchedulePayload,
    ScheduleRecord,
};
use polos::worker::{
    ErrorExt, ResultExt, RetryPolicy, Worker, Workflow, WorkflowContext, WorkflowError,
};
use polos::{runs, schedules, PolosClient};
use serde_json::json;
use tokio::sync::{oneshot, Semaphore};

use super::worker::{fire_at, publish, run_record, spawn_worker, wait_consumer, wait_status};
use crate::common::{eventually, within, TestCluster, TestEnv};

/// A server or a cluster, with the streams applied.
pub(super) struct Nats {
    pub js: jetstream::Context,
    pub urls: Vec<String>,
    _single: Option<TestEnv>,
    _cluster: Option<TestCluster>,
}

impl Nats {
    pub async fn single() -> Nats {
        let env = TestEnv::start().await;
        Nats {
            js: env.js.clone(),
            urls: vec![env.server.url().to_string()],
            _single: Some(env),
            _cluster: None,
        }
    }

    pub async fn cluster() -> Nats {
        let c = TestCluster::start().await;
        Nats {
            js: c.js.clone(),
            urls: c.cluster.urls(),
            _single: None,
            _cluster: Some(c),
        }
    }

    pub async fn connect(&self) -> async_nats::Client {
        async_nats::connect(self.urls.clone()).await.unwrap()
    }

    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.nats.url = self.urls.join(",");
        config
    }

    /// Starts the API on its own connection; drop the sender to stop it.
    pub async fn api(&self) -> (PolosClient, oneshot::Sender<()>) {
        let (stop, stopped) = oneshot::channel::<()>();
        let server = polos::api::start(self.connect().await, &self.config())
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = server
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        (PolosClient::from_nats(self.connect().await), stop)
    }

    async fn put_schedule(&self, workflow: &str, key: &str, value: serde_json::Value) {
        let kv = self.js.get_key_value("polos_schedules").await.unwrap();
        kv.put(
            schedule_kv_key(workflow, key),
            serde_json::to_vec(&value).unwrap().into(),
        )
        .await
        .unwrap();
    }

    async fn overlap_record(&self, workflow: &str, key: &str) -> OverlapRecord {
        let kv = self.js.get_key_value("polos_overlap").await.unwrap();
        kv.get(schedule_kv_key(workflow, key))
            .await
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_default()
    }

    async fn schedule(&self, workflow: &str, key: &str) -> ScheduleRecord {
        let kv = self.js.get_key_value("polos_schedules").await.unwrap();
        let value = kv
            .get(schedule_kv_key(workflow, key))
            .await
            .unwrap()
            .unwrap();
        ScheduleRecord::from_kv(&schedule_kv_key(workflow, key), &value).unwrap()
    }
}

/// A workflow whose runs wait at a gate the test opens, counting how many run at once.
#[derive(Clone)]
struct Probe {
    /// Run ids in the order their handlers started.
    started: Arc<Mutex<Vec<String>>>,
    /// Handlers running now, and the most at once.
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    /// One permit lets one run finish.
    gate: Arc<Semaphore>,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            started: Arc::default(),
            running: Arc::default(),
            most: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    /// Waits at the gate, then completes.
    fn workflow(&self, id: &str) -> Workflow {
        let probe = self.clone();
        Workflow::new(id, move |ctx: WorkflowContext, _p: SchedulePayload| {
            let probe = probe.clone();
            async move {
                probe.enter(&ctx);
                let permit = probe.gate.acquire().await;
                permit.map(|p| p.forget()).ok();
                probe.running.fetch_sub(1, Ordering::SeqCst);
                Ok(json!({"done": ctx.run_id()}))
            }
        })
    }

    /// Runs one step after another until the gate lets it finish (or it is cancelled).
    fn stepping_workflow(&self, id: &str) -> Workflow {
        let probe = self.clone();
        Workflow::new(id, move |ctx: WorkflowContext, _p: SchedulePayload| {
            let probe = probe.clone();
            async move {
                probe.enter(&ctx);
                let mut i = 0u32;
                let result = loop {
                    if let Ok(permit) = probe.gate.try_acquire() {
                        permit.forget();
                        break Ok(json!({"steps": i}));
                    }
                    let step = ctx
                        .step
                        .run(&format!("s{i}"), || async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, WorkflowError>(i)
                        })
                        .await;
                    if let Err(e) = step {
                        break Err(e);
                    }
                    i += 1;
                };
                probe.running.fetch_sub(1, Ordering::SeqCst);
                result
            }
        })
    }

    fn enter(&self, ctx: &WorkflowContext) {
        self.started.lock().unwrap().push(ctx.run_id().to_string());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn release(&self, runs: usize) {
        self.gate.add_permits(runs);
    }

    fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }

    async fn wait_started(&self, run_id: &str) {
        eventually(&format!("run {run_id} started"), || async {
            self.started().iter().any(|r| r == run_id)
        })
        .await;
    }
}

/// Two workers of `workflow` on their own connections (as two processes would be).
async fn two_workers(
    nats: &Nats,
    workflow: impl Fn() -> Workflow,
) -> Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let mut workers = Vec::new();
    for _ in 0..2 {
        let worker = Worker::new(nats.connect().await)
            .workflow(workflow())
            .ack_wait(Duration::from_secs(5));
        workers.push(spawn_worker(worker));
    }
    workers
}

async fn stop(workers: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>) {
    for (stop, handle) in workers {
        drop(stop);
        within("worker stops", handle).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Overlap

/// `skip` (the default, no field in the record): a fire while the previous run executes is
/// recorded `skipped`, naming that run, and counted; after it ends the next fire runs. Two
/// workers, so the rule holds between processes, not inside one.
async fn skip_scenario(nats: &Nats) {
    let wf = "ovl-skip";
    nats.put_schedule(wf, "global", json!({"cron": "* * * * *"}))
        .await;
    let probe = Probe::new();
    let workers = two_workers(nats, || probe.workflow(wf)).await;
    wait_consumer(&nats.js, wf).await;

    let first = fire_at(wf, "global", 0);
    publish(&nats.js, &first).await;
    probe.wait_started(&first.run_id).await;
    let second = fire_at(wf, "global", 1);
    publish(&nats.js, &second).await;
    let skipped = wait_status(&nats.js, wf, &second.run_id, RunStatus::Skipped).await;
    assert_eq!(skipped.yielded_to.as_deref(), Some(first.run_id.as_str()));
    assert_eq!(skipped.attempt, 0, "a skipped run used no attempt");
    let record = nats.overlap_record(wf, "global").await;
    assert_eq!(record.skipped, 1);
    assert_eq!(record.active.unwrap().run_id, first.run_id);

    probe.release(1);
    wait_status(&nats.js, wf, &first.run_id, RunStatus::Completed).await;
    eventually("the finished run leaves the overlap record", || async {
        nats.overlap_record(wf, "global").await.active.is_none()
    })
    .await;
    let third = fire_at(wf, "global", 2);
    publish(&nats.js, &third).await;
    probe.wait_started(&third.run_id).await;
    probe.release(1);
    wait_status(&nats.js, wf, &third.run_id, RunStatus::Completed).await;
    assert_eq!(probe.most.load(Ordering::SeqCst), 1, "never two at once");
    assert_eq!(probe.started(), [first.run_id, third.run_id]);
    stop(workers).await;
}

#[tokio::test]
async fn skip_is_the_default_and_holds_across_two_workers() {
    skip_scenario(&Nats::single().await).await;
}

#[tokio::test]
async fn skip_holds_across_two_workers_on_a_cluster() {
    skip_scenario(&Nats::cluster().await).await;
}

/// `buffer_one`: one fire waits (listed in the overlap record, no run record yet), a further
/// one is skipped; the waiting one starts when the running one ends.
#[tokio::test]
async fn buffer_one_keeps_one_waiting_and_skips_the_next() {
    let nats = Nats::single().await;
    let wf = "ovl-buffer-one";
    nats.put_schedule(
        wf,
        "k",
        json!({"cron": "* * * * *", "overlap": "buffer_one"}),
    )
    .await;
    let probe = Probe::new();
    let workers = two_workers(&nats, || probe.workflow(wf)).await;
    wait_consumer(&nats.js, wf).await;
    let fires: Vec<_> = (0..3).map(|i| fire_at(wf, "k", i)).collect();

    publish(&nats.js, &fires[0]).await;
    probe.wait_started(&fires[0].run_id).await;
    publish(&nats.js, &fires[1]).await;
    eventually("the second fire waits", || async {
        nats.overlap_record(wf, "k")
            .await
            .waiting
            .iter()
            .any(|w| w.run_id == fires[1].run_id)
    })
    .await;
    assert!(
        run_record(&nats.js, wf, &fires[1].run_id).await.is_none(),
        "a waiting run has not started"
    );
    publish(&nats.js, &fires[2]).await;
    let skipped = wait_status(&nats.js, wf, &fires[2].run_id, RunStatus::Skipped).await;
    assert_eq!(
        skipped.yielded_to.as_deref(),
        Some(fires[0].run_id.as_str())
    );

    probe.release(1);
    wait_status(&nats.js, wf, &fires[0].run_id, RunStatus::Completed).await;
    probe.wait_started(&fires[1].run_id).await;
    probe.release(1);
    wait_status(&nats.js, wf, &fires[1].run_id, RunStatus::Completed).await;
    assert_eq!(probe.most.load(Ordering::SeqCst), 1);
    let record = nats.overlap_record(wf, "k").await;
    assert_eq!(record.skipped, 1);
    assert!(record.waiting.is_empty() && record.active.is_none());
    stop(workers).await;
}

/// `buffer_all`: every fire waits its turn and they run one at a time in the order of their
/// instants, whatever order they were published in.
#[tokio::test]
async fn buffer_all_runs_every_fire_in_instant_order_one_at_a_time() {
    buffer_all_scenario(&Nats::single().await).await;
}

#[tokio::test]
async fn buffer_all_on_a_cluster() {
    buffer_all_scenario(&Nats::cluster().await).await;
}

async fn buffer_all_scenario(nats: &Nats) {
    let wf = "ovl-buffer-all";
    nats.put_schedule(
        wf,
        "k",
        json!({"cron": "* * * * *", "overlap": "buffer_all"}),
    )
    .await;
    let probe = Probe::new();
    let workers = two_workers(nats, || probe.workflow(wf)).await;
    wait_consumer(&nats.js, wf).await;
    let fires: Vec<_> = (0..4).map(|i| fire_at(wf, "k", i)).collect();

    publish(&nats.js, &fires[0]).await;
    probe.wait_started(&fires[0].run_id).await;
    for i in [3, 1, 2] {
        publish(&nats.js, &fires[i]).await;
    }
    eventually("three fires wait, in instant order", || async {
        let waiting: Vec<String> = nats
            .overlap_record(wf, "k")
            .await
            .waiting
            .into_iter()
            .map(|w| w.run_id)
            .collect();
        waiting
            == [
                fires[1].run_id.clone(),
                fires[2].run_id.clone(),
                fires[3].run_id.clone(),
            ]
    })
    .await;
    for fire in &fires {
        probe.wait_started(&fire.run_id).await;
        probe.release(1);
        wait_status(&nats.js, wf, &fire.run_id, RunStatus::Completed).await;
    }
    let order: Vec<String> = fires.iter().map(|f| f.run_id.clone()).collect();
    assert_eq!(probe.started(), order);
    assert_eq!(probe.most.load(Ordering::SeqCst), 1);
    assert_eq!(nats.overlap_record(wf, "k").await.skipped, 0);
    stop(workers).await;
}

/// `allow_all`: runs overlap freely, and no overlap record is written at all.
#[tokio::test]
async fn allow_all_overlaps_and_writes_no_overlap_record() {
    let nats = Nats::single().await;
    let wf = "ovl-allow";
    let (client, _api) = nats.api().await;
    schedules::upsert(
        &client,
        &UpsertRequest {
            overlap: Some(OverlapPolicy::AllowAll),
            ..UpsertRequest::new(wf, "* * * * *")
        },
    )
    .await
    .unwrap();
    let probe = Probe::new();
    let (stop_worker, handle) =
        spawn_worker(Worker::new(nats.connect().await).workflow(probe.workflow(wf)));
    wait_consumer(&nats.js, wf).await;
    let a = fire_at(wf, "global", 0);
    let b = fire_at(wf, "global", 1);
    publish(&nats.js, &a).await;
    publish(&nats.js, &b).await;
    probe.wait_started(&a.run_id).await;
    probe.wait_started(&b.run_id).await;
    assert_eq!(probe.most.load(Ordering::SeqCst), 2);
    probe.release(2);
    wait_status(&nats.js, wf, &a.run_id, RunStatus::Completed).await;
    wait_status(&nats.js, wf, &b.run_id, RunStatus::Completed).await;
    let kv = nats.js.get_key_value("polos_overlap").await.unwrap();
    assert!(kv
        .get(schedule_kv_key(wf, "global"))
        .await
        .unwrap()
        .is_none());
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

/// `cancel_other`: a newer fire cancels the executing run at its next step boundary (recorded
/// `cancelled`, not retried) and starts once it has stopped.
#[tokio::test]
async fn cancel_other_cancels_the_running_run_and_starts_the_new_one() {
    let nats = Nats::single().await;
    let wf = "ovl-cancel-other";
    nats.put_schedule(
        wf,
        "k",
        json!({"cron": "* * * * *", "overlap": "cancel_other"}),
    )
    .await;
    let probe = Probe::new();
    let workers = two_workers(&nats, || probe.stepping_workflow(wf)).await;
    wait_consumer(&nats.js, wf).await;
    let old = fire_at(wf, "k", 0);
    let new = fire_at(wf, "k", 1);
    publish(&nats.js, &old).await;
    probe.wait_started(&old.run_id).await;
    publish(&nats.js, &new).await;
    let cancelled = wait_status(&nats.js, wf, &old.run_id, RunStatus::Cancelled).await;
    assert_eq!(cancelled.attempt, 1, "not retried");
    assert!(
        cancelled
            .error
            .as_deref()
            .unwrap_or("")
            .contains("cancel_other"),
        "{cancelled:?}"
    );
    probe.wait_started(&new.run_id).await;
    probe.release(1);
    wait_status(&nats.js, wf, &new.run_id, RunStatus::Completed).await;
    assert_eq!(probe.most.load(Ordering::SeqCst), 1);
    stop(workers).await;
}

/// The rule is the worker's, so it holds whichever scheduler fires: the leader fires an instant
/// whose run outlasts the next one, dies, and the standby's fire of the next instant is
/// skipped.
#[tokio::test]
async fn skip_holds_across_a_scheduler_failover() {
    use super::ticker::{at, Running};
    let env = TestEnv::start().await;
    let clock = polos::ticker::ManualClock::frozen(at("2026-05-01T08:59:30Z"));
    let mut cfg = env.config();
    cfg.scheduler.lease_ttl_secs = 1;
    let wf = "ovl-failover";
    let kv = env.js.get_key_value("polos_schedules").await.unwrap();
    kv.put(
        schedule_kv_key(wf, "global"),
        br#"{"cron":"* * * * *"}"#.to_vec().into(),
    )
    .await
    .unwrap();
    let probe = Probe::new();
    let (stop_worker, handle) =
        spawn_worker(Worker::new(env.connect().await).workflow(probe.workflow(wf)));
    wait_consumer(&env.js, wf).await;

    let mut a = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    a.wait_active().await;
    let mut b = Running::start(env.connect().await, &cfg, Arc::new(clock.clone()));
    b.wait("standby loaded", |s| s.loaded).await;
    a.wait("09:00 armed", |s| {
        s.next_fire == Some(at("2026-05-01T09:00:00Z"))
    })
    .await;
    clock.set(at("2026-05-01T09:00:00Z"));
    let sid = polos::model::schedule_id(wf, "global");
    let first = polos::model::run_id_for(&sid, at("2026-05-01T09:00:00Z"));
    probe.wait_started(&first).await;

    a.kill();
    b.wait_active().await;
    b.wait("09:01 armed", |s| {
        s.next_fire == Some(at("2026-05-01T09:01:00Z"))
    })
    .await;
    clock.set(at("2026-05-01T09:01:00Z"));
    let second = polos::model::run_id_for(&sid, at("2026-05-01T09:01:00Z"));
    let skipped = wait_status(&env.js, wf, &second, RunStatus::Skipped).await;
    assert_eq!(skipped.yielded_to.as_deref(), Some(first.as_str()));
    probe.release(1);
    wait_status(&env.js, wf, &first, RunStatus::Completed).await;
    b.stop().await;
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

/// A worker that dies mid-run does not leave its schedule busy for ever: its fire is
/// redelivered and the run resumes as the schedule's active run, and once it ends the next
/// fire runs.
#[tokio::test]
async fn a_crashed_workers_run_keeps_its_turn_and_then_frees_the_schedule() {
    let nats = Nats::single().await;
    let wf = "ovl-crash";
    nats.put_schedule(wf, "global", json!({"cron": "* * * * *"}))
        .await;
    let probe = Probe::new();
    let crashing = Worker::new(nats.connect().await)
        .workflow(probe.workflow(wf))
        .ack_wait(Duration::from_secs(2));
    let crashed = tokio::spawn(async move {
        let _ = crashing.run(std::future::pending()).await;
    });
    wait_consumer(&nats.js, wf).await;
    let first = fire_at(wf, "global", 0);
    publish(&nats.js, &first).await;
    probe.wait_started(&first.run_id).await;
    // The process dies: no more in-progress acks, nothing written.
    crashed.abort();
    let _ = crashed.await;

    let survivor = Worker::new(nats.connect().await)
        .workflow(probe.workflow(wf))
        .ack_wait(Duration::from_secs(2));
    let (stop_worker, handle) = spawn_worker(survivor);
    // Redelivered after ack_wait: the same run resumes (attempt 2), still the active one.
    eventually("the run resumes on the survivor", || async {
        probe
            .started()
            .iter()
            .filter(|r| **r == first.run_id)
            .count()
            == 2
    })
    .await;
    let second = fire_at(wf, "global", 1);
    publish(&nats.js, &second).await;
    wait_status(&nats.js, wf, &second.run_id, RunStatus::Skipped).await;
    probe.release(2);
    let done = wait_status(&nats.js, wf, &first.run_id, RunStatus::Completed).await;
    assert_eq!(done.attempt, 2);
    let third = fire_at(wf, "global", 2);
    publish(&nats.js, &third).await;
    probe.wait_started(&third.run_id).await;
    probe.release(1);
    wait_status(&nats.js, wf, &third.run_id, RunStatus::Completed).await;
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Cancel

/// `polos.run.cancel` from another connection: the run stops at its next step boundary, the
/// handler sees it (`ctx.is_cancelled()`), it is recorded `cancelled` and not retried.
async fn cancel_scenario(nats: &Nats, via_cli: bool) {
    let wf = "cancel-me";
    let (client, _api) = nats.api().await;
    let probe = Probe::new();
    let seen_cancelled = Arc::new(AtomicUsize::new(0));
    let seen = seen_cancelled.clone();
    let steps_after = Arc::new(Mutex::new(Vec::new()));
    let after = steps_after.clone();
    let wf_def = {
        let probe = probe.clone();
        Workflow::new(wf, move |ctx: WorkflowContext, _p: SchedulePayload| {
            let probe = probe.clone();
            let seen = seen.clone();
            let after = after.clone();
            async move {
                probe.enter(&ctx);
                let mut i = 0u32;
                loop {
                    let r = ctx
                        .step
                        .run(&format!("s{i}"), || async move {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            Ok::<_, WorkflowError>(i)
                        })
                        .await;
                    if ctx.is_cancelled() {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    match r {
                        Ok(_) => i += 1,
                        Err(e) => {
                            after.lock().unwrap().push(i);
                            return Err::<(), _>(e);
                        }
                    }
                }
            }
        })
        .retry(RetryPolicy::attempts(5))
    };
    let (stop_worker, handle) = spawn_worker(Worker::new(nats.connect().await).workflow(wf_def));
    wait_consumer(&nats.js, wf).await;
    let fire = fire_at(wf, "global", 0);
    publish(&nats.js, &fire).await;
    probe.wait_started(&fire.run_id).await;
    eventually("a few steps done", || async {
        polos::store::StepStore::open(&nats.js)
            .await
            .unwrap()
            .list(&fire.run_id)
            .await
            .unwrap()
            .len()
            >= 2
    })
    .await;

    if via_cli {
        // Another process asks: the request reaches this worker through KV only.
        let out = crate::common::polos_cli(
            &nats.urls.join(","),
            &[
                "runs",
                "cancel",
                &fire.run_id,
                "--reason",
                "operator said so",
            ],
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("Cancel requested") && text.contains(wf),
            "{text}"
        );
    } else {
        let reply = runs::cancel(&client, &fire.run_id, None, Some("operator said so"))
            .await
            .unwrap();
        assert!(reply.cancel_requested);
        assert_eq!(reply.workflow, wf);
        assert_eq!(reply.status, Some(RunStatus::Running));
    }
    let record = wait_status(&nats.js, wf, &fire.run_id, RunStatus::Cancelled).await;
    assert_eq!(record.attempt, 1, "a cancelled run is not retried");
    assert_eq!(record.error.as_deref(), Some("cancelled: operator said so"));
    assert!(
        seen_cancelled.load(Ordering::SeqCst) >= 1,
        "the handler saw it"
    );
    let stored_steps = polos::store::StepStore::open(&nats.js)
        .await
        .unwrap()
        .list(&fire.run_id)
        .await
        .unwrap()
        .len();
    assert_eq!(
        steps_after.lock().unwrap().clone(),
        [stored_steps as u32],
        "it stopped at the step boundary right after the request"
    );
    assert_eq!(probe.started().len(), 1, "never started again");

    // Asking again, or for a finished run, changes nothing.
    let again = runs::cancel(&client, &fire.run_id, None, None)
        .await
        .unwrap();
    assert!(!again.cancel_requested);
    assert_eq!(again.status, Some(RunStatus::Cancelled));
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn cancel_stops_a_running_run_at_its_next_step() {
    cancel_scenario(&Nats::single().await, true).await;
}

#[tokio::test]
async fn cancel_stops_a_running_run_on_a_cluster() {
    cancel_scenario(&Nats::cluster().await, false).await;
}

/// A run cancelled before any worker took its fire is recorded `cancelled` when it would
/// start; its handler never runs. Without the workflow, the API says how to cancel it.
#[tokio::test]
async fn a_run_cancelled_before_it_starts_never_runs() {
    let nats = Nats::single().await;
    let wf = "cancel-early";
    let (client, _api) = nats.api().await;
    let fire = fire_at(wf, "global", 0);
    publish(&nats.js, &fire).await;
    let unknown = runs::cancel(&client, &fire.run_id, None, None)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(polos::api::ErrorCode::NotFound));
    assert!(unknown.to_string().contains("workflow"), "{unknown}");
    let reply = runs::cancel(&client, &fire.run_id, Some(wf), Some("not needed"))
        .await
        .unwrap();
    assert!(reply.cancel_requested);
    assert_eq!(reply.status, None);
    let kv = nats.js.get_key_value("polos_cancels").await.unwrap();
    let stored: CancelRecord = serde_json::from_slice(
        &kv.get(format!("{wf}.{}", fire.run_id))
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored.reason.as_deref(), Some("not needed"));

    let probe = Probe::new();
    let (stop_worker, handle) =
        spawn_worker(Worker::new(nats.connect().await).workflow(probe.workflow(wf)));
    let record = wait_status(&nats.js, wf, &fire.run_id, RunStatus::Cancelled).await;
    assert_eq!(record.attempt, 0, "no attempt was used");
    assert!(probe.started().is_empty());
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

/// The handler can wait for the cancel itself (`ctx.cancelled()`), here in the middle of long
/// work with no step boundary in sight.
#[tokio::test]
async fn a_handler_observes_the_cancel_between_steps() {
    let nats = Nats::single().await;
    let wf = "cancel-observed";
    let (client, _api) = nats.api().await;
    let (entered_tx, entered_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let wf_def = Workflow::new(wf, move |ctx: WorkflowContext, _p: SchedulePayload| {
        let entered = entered_tx.clone();
        async move {
            let _ = entered.send(());
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(600)) => Ok(json!("slept")),
                () = ctx.cancelled() => Err("stopped while waiting".terminal()),
            }
        }
    });
    let (stop_worker, handle) = spawn_worker(Worker::new(nats.connect().await).workflow(wf_def));
    wait_consumer(&nats.js, wf).await;
    let fire = fire_at(wf, "global", 0);
    publish(&nats.js, &fire).await;
    let mut entered_rx = entered_rx;
    within("handler entered", entered_rx.recv()).await.unwrap();
    runs::cancel(&client, &fire.run_id, None, None)
        .await
        .unwrap();
    let record = wait_status(&nats.js, wf, &fire.run_id, RunStatus::Cancelled).await;
    assert_eq!(
        record.error.as_deref(),
        Some("cancelled on request (polos.run.cancel)")
    );
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Retry policies

/// `Workflow::retry` overrides the worker's attempts; a step's own policy re-runs its body in
/// place (same attempt); `.terminal()` on any error fails at once.
#[tokio::test]
async fn retry_policies_of_workflows_and_steps() {
    retry_scenario(&Nats::single().await).await;
}

#[tokio::test]
async fn retry_policies_on_a_cluster() {
    retry_scenario(&Nats::cluster().await).await;
}

async fn retry_scenario(nats: &Nats) {
    let tries = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let count = |tries: &Arc<Mutex<HashMap<String, u32>>>, what: &str| {
        let mut t = tries.lock().unwrap();
        let n = t.entry(what.to_string()).or_default();
        *n += 1;
        *n
    };
    let t1 = tries.clone();
    let always_fails = Workflow::new(
        "retry-wf",
        move |_ctx: WorkflowContext, _p: SchedulePayload| {
            let t = t1.clone();
            async move {
                count(&t, "retry-wf");
                Err::<(), _>(std::io::Error::other("flaky upstream").into())
            }
        },
    )
    .retry(RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(50),
        multiplier: 2.0,
        max_backoff: Duration::from_millis(200),
        jitter: 0.5,
    });
    let t2 = tries.clone();
    let step_retry = Workflow::new(
        "retry-step",
        move |ctx: WorkflowContext, _p: SchedulePayload| {
            let t = t2.clone();
            async move {
                let value = ctx
                    .step
                    .retry(RetryPolicy {
                        max_attempts: 3,
                        initial_backoff: Duration::from_millis(20),
                        ..RetryPolicy::default()
                    })
                    .run("flaky", || {
                        let t = t.clone();
                        async move {
                            if count(&t, "flaky-body") < 3 {
                                Err(anyhow::anyhow!("not yet"))
                            } else {
                                Ok(42)
                            }
                        }
                    })
                    .await?;
                Ok(json!({"value": value, "attempt": ctx.attempt()}))
            }
        },
    );
    let t3 = tries.clone();
    let terminal = Workflow::new(
        "retry-terminal",
        move |ctx: WorkflowContext, _p: SchedulePayload| {
            let t = t3.clone();
            async move {
                count(&t, "retry-terminal");
                let bad: anyhow::Result<u32> = Err(anyhow::anyhow!("account closed"));
                let n = ctx.step.run("charge", || async { bad.terminal() }).await?;
                Ok(n)
            }
        },
    );
    let (stop_worker, handle) = spawn_worker(
        Worker::new(nats.connect().await)
            .max_attempts(2)
            .retry_backoff(Duration::from_millis(50))
            .workflow(always_fails)
            .workflow(step_retry)
            .workflow(terminal),
    );
    let a = fire_at("retry-wf", "global", 0);
    let b = fire_at("retry-step", "global", 0);
    let c = fire_at("retry-terminal", "global", 0);
    wait_consumer(&nats.js, "retry-terminal").await;
    for fire in [&a, &b, &c] {
        publish(&nats.js, fire).await;
    }
    let failed = wait_status(&nats.js, "retry-wf", &a.run_id, RunStatus::Failed).await;
    assert_eq!(
        failed.attempt, 4,
        "the workflow's 4 attempts, not the worker's 2"
    );
    assert_eq!(failed.error.as_deref(), Some("flaky upstream"));
    let done = wait_status(&nats.js, "retry-step", &b.run_id, RunStatus::Completed).await;
    assert_eq!(done.output, Some(json!({"value": 42, "attempt": 1})));
    let closed = wait_status(&nats.js, "retry-terminal", &c.run_id, RunStatus::Failed).await;
    assert_eq!(closed.attempt, 1);
    assert_eq!(closed.error.as_deref(), Some("account closed"));
    let tries = tries.lock().unwrap().clone();
    assert_eq!(tries["retry-wf"], 4);
    assert_eq!(
        tries["flaky-body"], 3,
        "the step body ran 3 times in one attempt"
    );
    assert_eq!(tries["retry-terminal"], 1);
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn a_retry_policy_that_cannot_work_is_refused_at_start() {
    let nats = Nats::single().await;
    let wf = Workflow::new(
        "bad-policy",
        |_ctx: WorkflowContext, _p: SchedulePayload| async { Ok(()) },
    )
    .retry(RetryPolicy {
        multiplier: 0.5,
        ..RetryPolicy::default()
    });
    let e = Worker::new(nats.connect().await)
        .workflow(wf)
        .run(async {})
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("Workflow::retry") && text.contains("multiplier is 0.5"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Pause on failure

/// A schedule with `pause_on_failure` is paused, with a note naming the run, when a run fails
/// after its last attempt; one without it keeps firing.
async fn pause_scenario(nats: &Nats) {
    let wf = "pause-me";
    let (client, _api) = nats.api().await;
    for (key, pause) in [("fragile", Some(true)), ("sturdy", None)] {
        schedules::upsert(
            &client,
            &UpsertRequest {
                key: key.to_string(),
                pause_on_failure: pause,
                ..UpsertRequest::new(wf, "0 9 * * *")
            },
        )
        .await
        .unwrap();
    }
    let fails = Workflow::new(wf, |_ctx: WorkflowContext, _p: SchedulePayload| async {
        Err::<(), _>(WorkflowError::terminal("the report source is gone"))
    })
    .schedulable();
    let (stop_worker, handle) = spawn_worker(Worker::new(nats.connect().await).workflow(fails));
    wait_consumer(&nats.js, wf).await;
    let fragile = fire_at(wf, "fragile", 0);
    let sturdy = fire_at(wf, "sturdy", 0);
    publish(&nats.js, &fragile).await;
    publish(&nats.js, &sturdy).await;
    wait_status(&nats.js, wf, &fragile.run_id, RunStatus::Failed).await;
    wait_status(&nats.js, wf, &sturdy.run_id, RunStatus::Failed).await;
    eventually("the fragile schedule paused", || async {
        nats.schedule(wf, "fragile").await.paused
    })
    .await;
    let paused = nats.schedule(wf, "fragile").await;
    let note = paused.note.unwrap();
    assert!(
        note.contains(&fragile.run_id) && note.contains("the report source is gone"),
        "{note}"
    );
    assert!(!nats.schedule(wf, "sturdy").await.paused);
    // Resuming works as for any paused schedule, and the setting stays.
    let resumed = schedules::resume(&client, wf, "fragile", None)
        .await
        .unwrap();
    assert!(!resumed.paused);
    assert_eq!(resumed.pause_on_failure, Some(true));
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

#[tokio::test]
async fn pause_on_failure_pauses_the_schedule_naming_the_run() {
    pause_scenario(&Nats::single().await).await;
}

#[tokio::test]
async fn pause_on_failure_on_a_cluster() {
    pause_scenario(&Nats::cluster().await).await;
}

// ---------------------------------------------------------------------------------------------
// Describe

/// `schedules get` shows the next 10 fires, the last runs (nominal and actual start, status,
/// the run a skipped one yielded to), counters and the run executing now.
#[tokio::test]
async fn get_describes_next_fires_recent_runs_counters_and_the_running_run() {
    describe_scenario(&Nats::single().await).await;
}

#[tokio::test]
async fn get_describes_on_a_cluster() {
    describe_scenario(&Nats::cluster().await).await;
}

async fn describe_scenario(nats: &Nats) {
    let wf = "describe";
    let (client, _api) = nats.api().await;
    schedules::upsert(&client, &UpsertRequest::new(wf, "* * * * *"))
        .await
        .unwrap();
    // The scheduler's state as if it had fired 09:00..09:02 (the recent runs are the cron's
    // instants up to `last_timestamp`).
    let state = nats.js.get_key_value("polos_schedule_state").await.unwrap();
    state
        .put(
            schedule_kv_key(wf, "global"),
            serde_json::to_vec(&json!({
                "last_timestamp": "2026-11-26T09:02:00Z", "next": null, "fires": 3,
                "missed": 1, "last_run_id": null, "error": null
            }))
            .unwrap()
            .into(),
        )
        .await
        .unwrap();
    let probe = Probe::new();
    let (stop_worker, handle) =
        spawn_worker(Worker::new(nats.connect().await).workflow(probe.workflow(wf)));
    wait_consumer(&nats.js, wf).await;
    let fires: Vec<_> = (0..3).map(|i| fire_at(wf, "global", i)).collect();
    publish(&nats.js, &fires[0]).await;
    probe.wait_started(&fires[0].run_id).await;
    publish(&nats.js, &fires[1]).await;
    wait_status(&nats.js, wf, &fires[1].run_id, RunStatus::Skipped).await;

    let view = schedules::get(&client, wf, "global").await.unwrap();
    assert_eq!(view.next.len(), 5, "next stays as it was");
    assert_eq!(view.next_fires.len(), 10);
    let counters = view.counters.clone().unwrap();
    assert_eq!(
        (counters.fired, counters.missed, counters.skipped),
        (3, 1, 1)
    );
    assert_eq!(view.active_run.as_ref().unwrap().run_id, fires[0].run_id);
    assert_eq!(view.recent_runs.len(), 10);
    let newest: Vec<(&str, Option<RunStatus>)> = view.recent_runs[..3]
        .iter()
        .map(|r| (r.run_id.as_str(), r.status))
        .collect();
    assert_eq!(
        newest,
        [
            (fires[2].run_id.as_str(), None),
            (fires[1].run_id.as_str(), Some(RunStatus::Skipped)),
            (fires[0].run_id.as_str(), Some(RunStatus::Running)),
        ]
    );
    assert_eq!(
        view.recent_runs[1].yielded_to.as_deref(),
        Some(fires[0].run_id.as_str())
    );
    assert!(view.recent_runs[2].started_at.is_some());
    assert_eq!(
        view.recent_runs[2].scheduled_for,
        fires[0].payload.timestamp
    );

    // The same through the CLI, as a person reads it.
    let out = crate::common::polos_cli(&nats.urls.join(","), &["schedules", "get", wf]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for needle in [
        "overlap      skip",
        "counters     fired 3  missed 1  skipped 1  backfilled -",
        &format!("executing    {}", fires[0].run_id),
        "last runs    SCHEDULED FOR          STARTED              TRIGGER   ATTEMPT  STATUS",
        &format!("skipped (yielded to {})", fires[0].run_id),
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    probe.release(1);
    wait_status(&nats.js, wf, &fires[0].run_id, RunStatus::Completed).await;
    drop(stop_worker);
    within("worker stops", handle).await.unwrap();
}

/// The CLI's new flags and command: `schedules create --overlap --pause-on-failure`,
/// `runs cancel`.
#[tokio::test]
async fn cli_sets_policies_and_cancels_runs() {
    let nats = Nats::single().await;
    let (_client, _api) = nats.api().await;
    let url = nats.urls[0].clone();
    let out = crate::common::polos_cli(
        &url,
        &[
            "schedules",
            "create",
            "cli-policies",
            "0 8 * * *",
            "--overlap",
            "buffer_all",
            "--pause-on-failure",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = nats.schedule("cli-policies", "global").await;
    assert_eq!(record.overlap, Some(OverlapPolicy::BufferAll));
    assert_eq!(record.pause_on_failure, Some(true));
    // Left out: kept. `--no-pause-on-failure` turns it off.
    let out = crate::common::polos_cli(
        &url,
        &[
            "schedules",
            "create",
            "cli-policies",
            "0 9 * * *",
            "--no-pause-on-failure",
        ],
    )
    .await;
    assert!(out.status.success());
    let record = nats.schedule("cli-policies", "global").await;
    assert_eq!(record.overlap, Some(OverlapPolicy::BufferAll));
    assert_eq!(record.pause_on_failure, Some(false));
    let bad = crate::common::polos_cli(
        &url,
        &[
            "schedules",
            "create",
            "cli-policies",
            "0 9 * * *",
            "--overlap",
            "sometimes",
        ],
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));

    let fire = fire_at("cli-policies", "global", 0);
    publish(&nats.js, &fire).await;
    let missing = crate::common::polos_cli(&url, &["runs", "cancel", &fire.run_id]).await;
    assert_eq!(
        missing.status.code(),
        Some(3),
        "no record and no --workflow"
    );
    let ok = crate::common::polos_cli(
        &url,
        &[
            "runs",
            "cancel",
            &fire.run_id,
            "--workflow",
            "cli-policies",
            "--json",
        ],
    )
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(reply["cancel_requested"], true);
    assert_eq!(reply["status"], serde_json::Value::Null);
    let bad_id = crate::common::polos_cli(&url, &["runs", "cancel", "not-a-run"]).await;
    assert_eq!(bad_id.status.code(), Some(2));
}

/// `?` works on anyhow errors in handlers through `ResultExt`, and the source stays reachable.
#[test]
fn any_error_converts_without_turbofish_and_keeps_its_source() {
    fn parse(text: &str) -> Result<u32, WorkflowError> {
        let n = text.parse::<u32>().terminal()?;
        let checked: anyhow::Result<u32> = if n > 10 {
            Err(anyhow::anyhow!("{n} is too many"))
        } else {
            Ok(n)
        };
        checked.retryable()
    }
    assert_eq!(parse("3").unwrap(), 3);
    let e = parse("x").unwrap_err();
    assert!(e.is_terminal());
    assert!(e.downcast_ref::<std::num::ParseIntError>().is_some());
    let e = parse("11").unwrap_err();
    assert!(!e.is_terminal());
    assert_eq!(e.message(), "11 is too many");
}

/// An inline schedule declares its policies in code; the worker writes them into the `global`
/// schedule (and a restart with the same code changes nothing).
#[tokio::test]
async fn inline_schedules_declare_their_policies() {
    let nats = Nats::single().await;
    let wf = "inline-policies";
    let declare = || {
        Workflow::new(wf, |_ctx: WorkflowContext, _p: SchedulePayload| async {
            Ok(())
        })
        .schedule(
            polos::worker::Schedule::cron("0 9 * * *")
                .overlap(OverlapPolicy::BufferAll)
                .pause_on_failure(true),
        )
    };
    for _ in 0..2 {
        let (stop_worker, handle) =
            spawn_worker(Worker::new(nats.connect().await).workflow(declare()));
        wait_consumer(&nats.js, wf).await;
        drop(stop_worker);
        within("worker stops", handle).await.unwrap();
    }
    let record = nats.schedule(wf, "global").await;
    assert_eq!(record.overlap, Some(OverlapPolicy::BufferAll));
    assert_eq!(record.pause_on_failure, Some(true));
    let kv = nats.js.get_key_value("polos_schedules").await.unwrap();
    let entry = kv
        .entry(schedule_kv_key(wf, "global"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.revision, 1, "the second start found it matching");
}

/// `allow_all` costs a run no KV operation beyond those of a worker without overlap policies:
/// counted from the worker connection's own statistics, per run, over 50 runs (a run record
/// create, a step create, the final compare-and-swap and the ack, plus shared pull requests).
/// The default `skip` adds the overlap record's read and two compare-and-swaps.
#[tokio::test]
async fn allow_all_adds_no_messages_per_run_and_skip_adds_three() {
    let nats = Nats::single().await;
    let mut per_run = Vec::new();
    for (wf, allow) in [("cost-allow", true), ("cost-skip", false)] {
        if allow {
            nats.put_schedule(
                wf,
                "global",
                json!({"cron": "* * * * *", "overlap": "allow_all"}),
            )
            .await;
        }
        let client = nats.connect().await;
        let stats = client.statistics();
        let workflow = Workflow::new(wf, |ctx: WorkflowContext, _p: SchedulePayload| async move {
            ctx.step
                .run("one", || async { Ok::<_, WorkflowError>(1) })
                .await
        });
        let (stop_worker, handle) = spawn_worker(Worker::new(client).workflow(workflow));
        wait_consumer(&nats.js, wf).await;
        // One instant each of 50 schedules for `skip`, so none waits for another; a first
        // run to settle (views caught up, pull requests out) before counting.
        let fire = |i: i64| {
            fire_at(
                wf,
                &if allow {
                    "global".to_string()
                } else {
                    format!("k{i}")
                },
                i,
            )
        };
        let warm_up = fire(1000);
        publish(&nats.js, &warm_up).await;
        wait_status(&nats.js, wf, &warm_up.run_id, RunStatus::Completed).await;
        let before = stats.out_messages.load(Ordering::SeqCst);
        let n = 50;
        let fires: Vec<_> = (0..n).map(fire).collect();
        for fire in &fires {
            publish(&nats.js, fire).await;
        }
        for fire in &fires {
            wait_status(&nats.js, wf, &fire.run_id, RunStatus::Completed).await;
        }
        let sent = stats.out_messages.load(Ordering::SeqCst) - before;
        per_run.push(sent as f64 / n as f64);
        drop(stop_worker);
        within("worker stops", handle).await.unwrap();
    }
    let (allow, skip) = (per_run[0], per_run[1]);
    eprintln!("messages per run: allow_all {allow}, skip {skip}");
    assert!(allow <= 4.6, "allow_all sent {allow} messages per run");
    assert!(
        (skip - allow - 3.0).abs() <= 0.6,
        "skip sent {skip} per run, allow_all {allow}"
    );
}

/// A cancel request's `reason` is held to the note's limit (`limits.max_note_bytes`), and the
/// refusal names the field that was sent; nothing is stored in `polos_cancels`.
#[tokio::test]
async fn a_cancel_reason_over_the_note_limit_is_refused_naming_the_field() {
    let nats = Nats::single().await;
    let (client, _api) = nats.api().await;
    let run_id = fire_at("cancel-limit", "global", 0).run_id;
    let long = "x".repeat(4097);
    match runs::cancel(&client, &run_id, Some("cancel-limit"), Some(&long)).await {
        Err(polos::client::ClientError::Api { code, message }) => {
            assert_eq!(code, polos::api::ErrorCode::InvalidRequest);
            for needle in ["field \"reason\" is 4097 bytes", "limits.max_note_bytes"] {
                assert!(message.contains(needle), "{needle:?} in {message}");
            }
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let cancels = nats.js.get_key_value("polos_cancels").await.unwrap();
    assert!(cancels
        .get(format!("cancel-limit.{run_id}"))
        .await
        .unwrap()
        .is_none());
    let ok = runs::cancel(&client, &run_id, Some("cancel-limit"), Some(&long[..4096]))
        .await
        .unwrap();
    assert!(ok.cancel_requested, "a reason at the limit is accepted");
}
