//! [`Worker`]: registers workflows, syncs inline schedules, consumes runs until shutdown.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::consumer::{ensure, fetch_loop, FetchSpec};
use super::registration::{register, sync_inline_schedule};
use super::run::{RunEnv, RunSettings, RunSpec};
use super::views::{follow_cancels, follow_policies};
use super::{RetryPolicy, WorkerError, WorkerStats, Workflow};
use crate::config::{Config, WorkerConfig};
use crate::cron::CronSchedule;
#[cfg(feature = "http")]
use crate::metrics::serve_metrics;
use crate::metrics::{HttpAddr, Metrics};
use crate::model::names::{
    CANCELS_BUCKET, OVERLAP_BUCKET, RUNS_BUCKET, RUNS_STREAM, SCHEDULES_BUCKET, STEPS_BUCKET,
};
use crate::model::validate_workflow;
use crate::store::{CancelStore, OverlapStore, RunStore, ScheduleStore, StepStore, StoreError};

/// How long releasing unfinished runs may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long start waits for the followed policies and cancel requests before consuming anyway
/// (runs then read their keys from KV until the views catch up).
const VIEWS_TIMEOUT: Duration = Duration::from_secs(10);

/// A worker process: the workflows it serves and how it runs them.
///
/// ```no_run
/// use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
/// use polos::model::SchedulePayload;
///
/// async fn daily_report(_ctx: WorkflowContext, p: SchedulePayload) -> Result<String, WorkflowError> {
///     Ok(format!("report for {}", p.timestamp))
/// }
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let config = polos::config::Config::from_env()?;
/// let client = polos::nats::connect(&config.nats).await?;
/// Worker::from_config(client, &config)
///     .workflow(Workflow::new("daily-report", daily_report).schedule("0 9 * * *"))
///     .run(async { tokio::signal::ctrl_c().await.ok(); })
///     .await?;
/// # Ok(()) }
/// ```
pub struct Worker {
    /// The connection every bucket, stream and ack goes through.
    client: async_nats::Client,
    /// The workflows served, in registration order.
    workflows: Vec<Workflow>,
    /// `[worker]` settings (concurrency, attempts, ack wait, backoff, shutdown grace).
    config: WorkerConfig,
    /// A retry backoff finer than whole seconds (tests); overrides `retry_backoff_secs`.
    retry_backoff: Option<Duration>,
    /// An ack wait finer than whole seconds; overrides `ack_wait_secs`.
    ack_wait: Option<Duration>,
    /// A shutdown grace period finer than whole seconds; overrides `shutdown_timeout_secs`.
    shutdown_timeout: Option<Duration>,
    /// A default run timeout finer than whole seconds; overrides `run_timeout_secs`.
    run_timeout: Option<Duration>,
    /// Counters, shared with every handle [`Worker::stats`] gave out.
    stats: WorkerStats,
    /// Where runs, retries, durations and runs in flight are counted (`/metrics`).
    metrics: Metrics,
    /// `http.token`: required to serve `/metrics` on a non-loopback `worker.metrics_addr`.
    http_token: Option<String>,
}

impl Worker {
    /// A worker on `client` with default `[worker]` settings.
    pub fn new(client: async_nats::Client) -> Self {
        Worker {
            client,
            workflows: Vec::new(),
            config: WorkerConfig::default(),
            retry_backoff: None,
            ack_wait: None,
            shutdown_timeout: None,
            run_timeout: None,
            stats: WorkerStats::default(),
            metrics: Metrics::new(),
            http_token: None,
        }
    }

    /// A worker with the `[worker]` section of a loaded configuration.
    pub fn from_config(client: async_nats::Client, config: &Config) -> Self {
        let mut worker = Worker::new(client).config(config.worker.clone());
        worker.http_token = config.http.token.clone();
        worker
    }

    /// Counts runs in `metrics` instead of the worker's own registry (to serve one `/metrics`
    /// for several parts of a process, as `polos dev` does).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serves `GET /metrics` on `addr` (`PORT` or `HOST:PORT`; a non-loopback address needs
    /// `http.token`) while the worker runs. Same as the config key `worker.metrics_addr`.
    pub fn metrics_addr(mut self, addr: &str) -> Self {
        self.config.metrics_addr = addr.to_string();
        self
    }

    /// Replaces all `[worker]` settings.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a workflow.
    pub fn workflow(mut self, workflow: Workflow) -> Self {
        self.workflows.push(workflow);
        self
    }

    /// Most runs of each workflow this process executes at once.
    pub fn concurrency(mut self, runs: usize) -> Self {
        self.config.concurrency = runs;
        self
    }

    /// Attempts before a run is recorded `failed` (1 = no retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    /// How long the server waits for an answer before redelivering a run to another worker
    /// (a crashed worker's runs resume after this). Long runs send in-progress acks.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = Some(wait);
        self
    }

    /// First retry delay after a handler error; doubles per attempt.
    pub fn retry_backoff(mut self, delay: Duration) -> Self {
        self.retry_backoff = Some(delay);
        self
    }

    /// How long shutdown waits for in-flight runs before releasing them to other workers.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// The longest one attempt of a workflow may run unless the workflow sets its own
    /// ([`Workflow::timeout`]); default `run_timeout_secs`, one hour.
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = Some(timeout);
        self
    }

    /// Live counters of this worker (runs, duplicates, rejected fires, lost consumers); take
    /// the handle before [`run`](Self::run), which consumes the worker.
    pub fn stats(&self) -> WorkerStats {
        self.stats.clone()
    }

    /// Validates and registers every workflow, syncs inline schedules, then consumes runs until
    /// `shutdown` resolves. On shutdown it stops fetching, lets in-flight runs finish for up to
    /// `shutdown_timeout`, releases the rest (they resume on another worker), and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        self.validate()?;
        let js = jetstream::new(self.client.clone());
        // A missing bucket names itself; any other failure to open one (a refused
        // permission) names the stores being opened.
        let missing = |stores: &'static str| {
            move |e: StoreError| match e {
                StoreError::Open { bucket, source } => WorkerError::Missing {
                    what: "bucket",
                    name: bucket,
                    source,
                },
                other => WorkerError::Missing {
                    what: "bucket",
                    name: stores,
                    source: other.into(),
                },
            }
        };
        let runs = RunStore::open(&js).await.map_err(missing(RUNS_BUCKET))?;
        let steps = StepStore::open(&js).await.map_err(missing(STEPS_BUCKET))?;
        let overlap = OverlapStore::open(&js)
            .await
            .map_err(missing(OVERLAP_BUCKET))?;
        let cancels = CancelStore::open(&js)
            .await
            .map_err(missing(CANCELS_BUCKET))?;
        let schedules = ScheduleStore::open(&js)
            .await
            .map_err(missing(SCHEDULES_BUCKET))?;
        let stream = js
            .get_stream(RUNS_STREAM)
            .await
            .map_err(|e| WorkerError::Missing {
                what: "stream",
                name: RUNS_STREAM,
                source: e.into(),
            })?;

        let ack_wait = self
            .ack_wait
            .unwrap_or(Duration::from_secs(self.config.ack_wait_secs.max(1)));
        let default_timeout = self
            .run_timeout
            .unwrap_or(Duration::from_secs(self.config.run_timeout_secs));
        let worker_retry = self.worker_retry();
        let settings = RunSettings {
            ack_wait,
            // Three chances per ack window to keep the message, so one slow answer does not
            // cost it.
            progress_every: (ack_wait / 3).max(Duration::from_millis(100)),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (abort_tx, abort_rx) = watch::channel(false);
        let ids: Vec<String> = self.workflows.iter().map(|w| w.id.clone()).collect();
        let policies = Arc::new(follow_policies(&schedules, &ids));
        let cancel_view = Arc::new(follow_cancels(&cancels, &ids));
        let env = Arc::new(RunEnv {
            runs,
            steps,
            stream: stream.clone(),
            overlap,
            cancels,
            schedules,
            policies: policies.clone(),
            cancel_view: cancel_view.clone(),
            settings,
            abort: abort_rx,
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
        });
        #[cfg(not(feature = "http"))]
        if !self.config.metrics_addr.trim().is_empty() {
            HttpAddr::parse(&self.config.metrics_addr)?;
            return Err(WorkerError::InvalidSetting {
                setting: "worker.metrics_addr",
                reason: "this build of polos serves no HTTP; enable the polos feature \"http\" (polos = { features = [\"http\"] }), or leave metrics_addr empty".to_string(),
            });
        }
        #[cfg(feature = "http")]
        if !self.config.metrics_addr.trim().is_empty() {
            let addr = HttpAddr::parse(&self.config.metrics_addr)?;
            let mut stopped = stop_rx.clone();
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let (local, _server) = serve_metrics(
                &addr,
                self.http_token.as_deref(),
                self.metrics.clone(),
                stop,
            )
            .await?;
            info!("worker metrics at http://{local}/metrics");
        }

        // A fire that arrives before these are complete reads its keys from KV instead, so
        // this wait only saves those reads.
        let (policies_ready, cancels_ready) = tokio::join!(
            policies.caught_up(VIEWS_TIMEOUT),
            cancel_view.caught_up(VIEWS_TIMEOUT)
        );
        if !(policies_ready && cancels_ready) {
            warn!("the schedules' overlap policies or the cancel requests are not loaded yet; runs read them from KV until they are");
        }

        let mut loops = JoinSet::new();
        for workflow in &self.workflows {
            let id = workflow.id.clone();
            register(&env.schedules, workflow).await.map_err(|source| {
                WorkerError::Registration {
                    workflow: id.clone(),
                    source,
                }
            })?;
            sync_inline_schedule(&env.schedules, &id, workflow.schedule.as_ref())
                .await
                .map_err(|source| WorkerError::Registration {
                    workflow: id.clone(),
                    source,
                })?;
            let consumer = ensure(&stream, &id, ack_wait).await?;
            let spec = FetchSpec {
                workflow: id.clone(),
                run: Arc::new(RunSpec {
                    handler: workflow.handler.clone(),
                    timeout: workflow.timeout.unwrap_or(default_timeout),
                    retry: workflow
                        .retry
                        .clone()
                        .unwrap_or_else(|| worker_retry.clone()),
                }),
                concurrency: self.config.concurrency,
            };
            loops.spawn(fetch_loop(
                js.clone(),
                consumer,
                spec,
                env.clone(),
                stop_rx.clone(),
            ));
            info!(workflow = %id, "workflow registered; consuming runs");
        }

        shutdown.await;
        info!("worker shutting down: no new runs; waiting for in-flight runs");
        let _ = stop_tx.send(true);
        let grace = self
            .shutdown_timeout
            .unwrap_or(Duration::from_secs(self.config.shutdown_timeout_secs));
        let drain = async {
            let mut in_flight = Vec::new();
            while let Some(joined) = loops.join_next().await {
                if let Ok(runs) = joined {
                    in_flight.push(runs);
                }
            }
            for mut runs in in_flight {
                while runs.join_next().await.is_some() {}
            }
        };
        tokio::pin!(drain);
        if tokio::time::timeout(grace, &mut drain).await.is_err() {
            warn!(
                ?grace,
                "in-flight runs did not finish in time; releasing them to other workers"
            );
            let _ = abort_tx.send(true);
            // Releasing is one nak per run; bounded all the same, the server redelivers the rest.
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, &mut drain).await;
        }
        info!("worker stopped");
        Ok(())
    }

    /// The retry policy of workflows that declare none: `max_attempts` and
    /// `retry_backoff_secs` of the worker, doubling up to 10 minutes.
    fn worker_retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.config.max_attempts.max(1),
            initial_backoff: self
                .retry_backoff
                .unwrap_or(Duration::from_secs(self.config.retry_backoff_secs)),
            ..RetryPolicy::default()
        }
    }

    /// Checks ids and inline schedules before anything is written.
    fn validate(&self) -> Result<(), WorkerError> {
        if self.workflows.is_empty() {
            return Err(WorkerError::NoWorkflows);
        }
        let default_timeout = self
            .run_timeout
            .unwrap_or(Duration::from_secs(self.config.run_timeout_secs));
        if default_timeout.is_zero() {
            return Err(WorkerError::InvalidSetting {
                setting: "worker.run_timeout_secs",
                reason: "0 would cancel every run at once; set the longest a run may take (default 3600)".to_string(),
            });
        }
        let mut seen = HashSet::new();
        for workflow in &self.workflows {
            validate_workflow(&workflow.id).map_err(|source| WorkerError::InvalidWorkflow {
                workflow: workflow.id.clone(),
                source,
            })?;
            if workflow.timeout.is_some_and(|t| t.is_zero()) {
                return Err(WorkerError::InvalidSetting {
                    setting: "Workflow::timeout",
                    reason: format!(
                        "workflow {:?} has a timeout of 0, which would cancel every run at once",
                        workflow.id
                    ),
                });
            }
            if let Some(problem) = workflow.retry.as_ref().and_then(RetryPolicy::problem) {
                return Err(WorkerError::InvalidSetting {
                    setting: "Workflow::retry",
                    reason: format!("workflow {:?}: {problem}", workflow.id),
                });
            }
            if !seen.insert(workflow.id.as_str()) {
                return Err(WorkerError::DuplicateWorkflow(workflow.id.clone()));
            }
            if let Some(schedule) = &workflow.schedule {
                CronSchedule::parse(&schedule.cron, &schedule.timezone).map_err(|source| {
                    WorkerError::InvalidSchedule {
                        workflow: workflow.id.clone(),
                        source,
                    }
                })?;
            }
        }
        Ok(())
    }
}
