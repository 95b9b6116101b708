//! [`WorkerStats`]: what a worker did, as counters any part of the program can read.
//!
//! Some of what a worker handles never reaches a run record — a message on `polos.runs.<wf>`
//! that is not a fire, a duplicate, a lost consumer — so the counters are where it shows
//! besides the log. They live in one small struct so an exporter (Prometheus, a status
//! endpoint) can publish them without knowing the worker's internals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

/// Live counters of one [`Worker`](crate::worker::Worker), shared by every clone; take one with
/// [`Worker::stats`](crate::worker::Worker::stats) before calling `run`.
///
/// ```no_run
/// # async fn f(client: async_nats::Client, wf: polos::worker::Workflow) -> Result<(), Box<dyn std::error::Error>> {
/// let worker = polos::worker::Worker::new(client).workflow(wf);
/// let stats = worker.stats();
/// tokio::spawn(async move {
///     loop {
///         tokio::time::sleep(std::time::Duration::from_secs(60)).await;
///         println!("{:?}", stats.snapshot());
///     }
/// });
/// worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct WorkerStats(Arc<Counters>);

impl std::fmt::Debug for WorkerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// The counters at one moment; every field counts since the worker was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WorkerStatsSnapshot {
    /// Handler starts (attempts).
    pub runs_started: u64,
    /// Runs recorded `completed` by this worker.
    pub runs_completed: u64,
    /// Runs recorded `failed` by this worker (terminal error, attempts exhausted, output too
    /// large).
    pub runs_failed: u64,
    /// Attempts that failed retryably and were handed back for a retry.
    pub runs_retried: u64,
    /// Attempts stopped by the workflow's timeout (also counted in `runs_retried` or
    /// `runs_failed`).
    pub runs_timed_out: u64,
    /// Runs handed back unfinished when the shutdown grace period ended (no attempt used).
    pub runs_released: u64,
    /// Fires acked without running: their run had finished, or another fire of the same run
    /// is still queued.
    pub duplicate_fires: u64,
    /// Executions that found their run taken over by another (the server redelivered their
    /// fire after `ack_wait` while they still ran); their result was not recorded.
    pub superseded: u64,
    /// Messages that are not fires (bad `Polos-Run-Id`, headers or body), terminated.
    pub rejected_fires: u64,
    /// Times a workflow's consumer was found missing (deleted, or its stream re-electing a
    /// leader) and created again.
    pub consumer_recreations: u64,
    /// Acks and terms the server did not confirm (the run record still says what happened,
    /// so a redelivery is answered from it).
    pub unconfirmed_answers: u64,
    /// Runs recorded `cancelled` by this worker.
    pub runs_cancelled: u64,
    /// Runs recorded `skipped` by this worker (overlap policy).
    pub runs_skipped: u64,
    /// Times a fire was handed back to wait for an earlier run of its schedule (overlap
    /// policies `buffer_one`, `buffer_all`, `cancel_other`); one fire may wait many times.
    pub runs_waited: u64,
    /// Schedules this worker paused because a run failed (`pause_on_failure`).
    pub schedules_paused: u64,
}

/// The atomic twin of [`WorkerStatsSnapshot`].
#[derive(Default)]
struct Counters {
    runs_started: AtomicU64,
    runs_completed: AtomicU64,
    runs_failed: AtomicU64,
    runs_retried: AtomicU64,
    runs_timed_out: AtomicU64,
    runs_released: AtomicU64,
    duplicate_fires: AtomicU64,
    superseded: AtomicU64,
    rejected_fires: AtomicU64,
    consumer_recreations: AtomicU64,
    unconfirmed_answers: AtomicU64,
    runs_cancelled: AtomicU64,
    runs_skipped: AtomicU64,
    runs_waited: AtomicU64,
    schedules_paused: AtomicU64,
}

/// One counter, for [`WorkerStats::add`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    RunsStarted,
    RunsCompleted,
    RunsFailed,
    RunsRetried,
    RunsTimedOut,
    RunsReleased,
    DuplicateFires,
    Superseded,
    RejectedFires,
    ConsumerRecreations,
    UnconfirmedAnswers,
    RunsCancelled,
    RunsSkipped,
    RunsWaited,
    SchedulesPaused,
}

impl WorkerStats {
    /// The counters now.
    pub fn snapshot(&self) -> WorkerStatsSnapshot {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerStatsSnapshot {
            runs_started: get(&c.runs_started),
            runs_completed: get(&c.runs_completed),
            runs_failed: get(&c.runs_failed),
            runs_retried: get(&c.runs_retried),
            runs_timed_out: get(&c.runs_timed_out),
            runs_released: get(&c.runs_released),
            duplicate_fires: get(&c.duplicate_fires),
            superseded: get(&c.superseded),
            rejected_fires: get(&c.rejected_fires),
            consumer_recreations: get(&c.consumer_recreations),
            unconfirmed_answers: get(&c.unconfirmed_answers),
            runs_cancelled: get(&c.runs_cancelled),
            runs_skipped: get(&c.runs_skipped),
            runs_waited: get(&c.runs_waited),
            schedules_paused: get(&c.schedules_paused),
        }
    }

    pub(crate) fn add(&self, counter: Counter) {
        let c = &self.0;
        let atomic = match counter {
            Counter::RunsStarted => &c.runs_started,
            Counter::RunsCompleted => &c.runs_completed,
            Counter::RunsFailed => &c.runs_failed,
            Counter::RunsRetried => &c.runs_retried,
            Counter::RunsTimedOut => &c.runs_timed_out,
            Counter::RunsReleased => &c.runs_released,
            Counter::DuplicateFires => &c.duplicate_fires,
            Counter::Superseded => &c.superseded,
            Counter::RejectedFires => &c.rejected_fires,
            Counter::ConsumerRecreations => &c.consumer_recreations,
            Counter::UnconfirmedAnswers => &c.unconfirmed_answers,
            Counter::RunsCancelled => &c.runs_cancelled,
            Counter::RunsSkipped => &c.runs_skipped,
            Counter::RunsWaited => &c.runs_waited,
            Counter::SchedulesPaused => &c.schedules_paused,
        };
        atomic.fetch_add(1, Ordering::Relaxed);
    }
}
