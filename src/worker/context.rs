//! What a handler receives besides its payload: the run's identity and durable steps.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cancel::Cancellation;
use super::hold::Hold;
use super::{IntoWorkflowError, RetryPolicy, WorkflowError};
use crate::metrics::Metrics;
use crate::model::{step_kv_key, StepRecord, Trigger};
use crate::store::{RunKey, RunStore, StepCreated, StepStore, StoreError};

/// First delay before storing a step's output again after a failed write.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// How long a step's output is retried in place before the attempt fails (and the body runs
/// again on the next attempt).
const STORE_RETRY_FOR: Duration = Duration::from_secs(30);

/// The run a handler executes, and its durable steps (`ctx.step.run(...)`).
#[derive(Clone)]
pub struct WorkflowContext {
    /// Identity of the run, shared by clones.
    run: Arc<RunInfo>,
    /// Durable steps of this run, as in the documented Python API: `ctx.step.run("fetch_data", ...)`.
    pub step: Step,
}

/// Identity of one run.
struct RunInfo {
    run_id: String,
    workflow: String,
    attempt: u32,
    trigger: Trigger,
    /// Whether (and why) cancelling the run was asked for.
    cancel: Cancellation,
}

impl WorkflowContext {
    pub(crate) fn new(
        run_id: String,
        workflow: String,
        attempt: u32,
        trigger: Trigger,
        step: Step,
        cancel: Cancellation,
    ) -> Self {
        WorkflowContext {
            run: Arc::new(RunInfo {
                run_id,
                workflow,
                attempt,
                trigger,
                cancel,
            }),
            step,
        }
    }

    /// The run id: `<schedule_id>-<YYYYMMDDTHHMMSSZ>` (or `-m<nuid>` for a manual trigger).
    pub fn run_id(&self) -> &str {
        &self.run.run_id
    }

    /// The workflow id.
    pub fn workflow(&self) -> &str {
        &self.run.workflow
    }

    /// Which attempt this is: 1 the first time a handler starts for the run, then 2, 3, … each
    /// time one starts again (a retry, or after a worker died mid-run). Counted in the run
    /// record when the handler starts; a run handed back at shutdown does not use one.
    pub fn attempt(&self) -> u32 {
        self.run.attempt
    }

    /// What started the run: the schedule, a catch-up fire or a manual trigger.
    pub fn trigger(&self) -> Trigger {
        self.run.trigger
    }

    /// Whether cancelling this run was asked for (`polos runs cancel`, or the overlap policy
    /// `cancel_other`). The next `ctx.step.run` returns an error instead of running; a handler
    /// that works long between steps can look here and stop early. A run that ends with an
    /// error after a cancel request is recorded `cancelled` and not retried.
    pub fn is_cancelled(&self) -> bool {
        self.run.cancel.requested_now().is_some()
    }

    /// Resolves once cancelling this run is asked for; never for a run nobody cancels. Race it
    /// against long work:
    ///
    /// ```no_run
    /// # use polos::worker::{WorkflowContext, WorkflowError};
    /// # async fn crunch() -> u64 { 0 }
    /// # async fn f(ctx: WorkflowContext) -> Result<u64, WorkflowError> {
    /// tokio::select! {
    ///     total = crunch() => Ok(total),
    ///     () = ctx.cancelled() => Err(WorkflowError::terminal("cancelled while crunching")),
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        self.run.cancel.wait().await
    }
}

impl std::fmt::Debug for WorkflowContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowContext")
            .field("run_id", &self.run.run_id)
            .field("workflow", &self.run.workflow)
            .field("attempt", &self.run.attempt)
            .field("trigger", &self.run.trigger)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// What the steps of one execution know about its claim on the run.
pub(crate) struct Owner {
    /// `polos_runs`, to check the claim.
    runs: RunStore,
    /// The run's record key.
    key: RunKey,
    /// The record revision this execution's claim wrote.
    revision: u64,
    /// The claim created the record, so no step result existed then.
    fresh: bool,
    /// Whether the fire is certainly still this worker's alone.
    hold: Arc<Hold>,
    /// Set when a check found the run taken over by another execution.
    superseded: AtomicBool,
}

impl Owner {
    pub(crate) fn new(
        runs: RunStore,
        key: RunKey,
        revision: u64,
        fresh: bool,
        hold: Arc<Hold>,
    ) -> Self {
        Owner {
            runs,
            key,
            revision,
            fresh,
            hold,
            superseded: AtomicBool::new(false),
        }
    }

    /// Whether no step of the run can be stored: this execution created the record and still
    /// holds the fire alone, so no other execution has started. Then a step needs no lookup.
    fn alone(&self) -> bool {
        self.fresh && self.hold.holds()
    }

    /// Whether a check found the run taken over by another execution.
    pub(crate) fn superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
    }

    /// Before a step body runs: stops this execution if the run is no longer its own. Costs a
    /// read only when the hold has lapsed (a redelivery may have started another execution).
    async fn check(&self, step: &str) -> Result<(), WorkflowError> {
        if self.hold.holds() {
            return Ok(());
        }
        let run_id = self.key.run_id();
        match self.runs.get(&self.key).await {
            Ok(Some(stored)) if stored.revision == self.revision => Ok(()),
            Ok(_) => {
                self.superseded.store(true, Ordering::Relaxed);
                Err(WorkflowError::retryable(format!(
                    "run {run_id} was taken over by another execution before step {step:?} (this one stalled past ack_wait); this execution stops here"
                )))
            }
            Err(e) => Err(WorkflowError::retryable(format!(
                "cannot check that run {run_id} is still this execution's before step {step:?}: {e}"
            ))),
        }
    }
}

/// Durable steps of one run: each named step's output is stored in `polos_steps` at
/// `<run_id>.<step>`, so a retried or redelivered run returns it instead of running the body again.
#[derive(Clone)]
pub struct Step {
    /// `polos_steps`.
    store: StepStore,
    /// The run these steps belong to.
    run_id: Arc<str>,
    /// This execution's claim on the run.
    owner: Arc<Owner>,
    /// Names used so far in this attempt: reusing one is a bug in the workflow.
    used: Arc<Mutex<HashSet<String>>>,
    /// Where step durations are counted, with the run's workflow as label.
    metrics: Option<(Metrics, Arc<str>)>,
    /// The run's cancellation, checked at every step boundary.
    cancel: Cancellation,
}

impl Step {
    pub(crate) fn new(store: StepStore, run_id: &str, owner: Arc<Owner>) -> Self {
        Step {
            store,
            run_id: Arc::from(run_id),
            owner,
            used: Arc::new(Mutex::new(HashSet::new())),
            metrics: None,
            cancel: Cancellation::never(),
        }
    }

    /// Stops at every step boundary once `cancel` is requested.
    pub(crate) fn cancellable(mut self, cancel: Cancellation) -> Self {
        self.cancel = cancel;
        self
    }

    /// The same steps, each body tried up to `policy.max_attempts` times in place (with the
    /// policy's backoff) before its error fails the attempt. A terminal error stops at once;
    /// the output is stored once, after the try that succeeded. The body is called again for
    /// each try, so it is an `FnMut`.
    ///
    /// ```no_run
    /// # use polos::worker::{ResultExt, RetryPolicy, WorkflowContext, WorkflowError};
    /// # async fn fetch_rates() -> anyhow::Result<Vec<f64>> { Ok(vec![]) }
    /// # async fn f(ctx: WorkflowContext) -> Result<(), WorkflowError> {
    /// use std::time::Duration;
    /// let flaky_api = RetryPolicy {
    ///     max_attempts: 5,
    ///     initial_backoff: Duration::from_millis(200),
    ///     ..RetryPolicy::default()
    /// };
    /// let rates = ctx
    ///     .step
    ///     .retry(flaky_api)
    ///     .run("rates", || async { fetch_rates().await.retryable() })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn retry(&self, policy: RetryPolicy) -> RetryingStep<'_> {
        RetryingStep { step: self, policy }
    }

    /// Counts each executed step's duration in `metrics`, labelled with `workflow`.
    pub(crate) fn metered(mut self, metrics: Metrics, workflow: &str) -> Self {
        self.metrics = Some((metrics, Arc::from(workflow)));
        self
    }

    /// Runs the step `name` once per run: returns its stored output if an earlier attempt
    /// completed it, otherwise awaits `body`, stores its output and returns it.
    ///
    /// A body runs at least once and is not run again once its output is stored: if the worker
    /// dies after the body's side effect but before the output is stored, the next attempt runs
    /// the body again. Make external side effects idempotent with
    /// [`idempotency_key`](Self::idempotency_key).
    ///
    /// The value returned is always read back from the stored JSON, on the first run as on a
    /// replay, so both see the same thing. When two executions of one run overlap (a worker
    /// stalled past `ack_wait`), the first output stored wins and both continue with it. An
    /// output larger than the server's `max_payload` fails the run at once (terminal).
    ///
    /// The body's error can be any type that converts into [`WorkflowError`] (every
    /// `std::error::Error` does, as retryable); a failed step stores nothing, so the next
    /// attempt runs it again. Using the same `name` twice in one run is a terminal error, and so
    /// is a stored output that does not deserialize into `T`.
    ///
    /// ```no_run
    /// # use polos::worker::{WorkflowContext, WorkflowError};
    /// # async fn fetch_daily_data() -> Result<Vec<u32>, std::io::Error> { Ok(vec![1]) }
    /// # async fn f(ctx: WorkflowContext) -> Result<(), WorkflowError> {
    /// let data = ctx.step.run("fetch_data", fetch_daily_data).await?;
    /// let total = ctx
    ///     .step
    ///     .run("sum", || async { Ok::<_, WorkflowError>(data.iter().sum::<u32>()) })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<T, E, F, Fut>(&self, name: &str, body: F) -> Result<T, WorkflowError>
    where
        T: Serialize + DeserializeOwned,
        E: IntoWorkflowError,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.execute(name, async move {
            body().await.map_err(IntoWorkflowError::into_workflow_error)
        })
        .await
    }

    /// A step's life around its `body` (the body's tries already folded in).
    async fn execute<T, Fut>(&self, name: &str, body: Fut) -> Result<T, WorkflowError>
    where
        T: Serialize + DeserializeOwned,
        Fut: Future<Output = Result<T, WorkflowError>>,
    {
        if name.is_empty() {
            return Err(WorkflowError::terminal(
                "a step name must not be empty; give each ctx.step.run(...) a unique name",
            ));
        }
        let first_use = self
            .used
            .lock()
            .map(|mut used| used.insert(name.to_string()))
            // A poisoned lock means another step of this run panicked; that attempt is failing.
            .unwrap_or(true);
        if !first_use {
            return Err(WorkflowError::terminal(format!(
                "step name {name:?} is used twice in run {}; give each ctx.step.run(...) a unique name",
                self.run_id
            )));
        }
        if let Some(reason) = self.cancel.requested().await {
            return Err(self
                .cancel
                .error(&format!("step {name:?}"), reason.as_deref()));
        }
        if !self.owner.alone() {
            let stored = self
                .store
                .get(&self.run_id, name)
                .await
                .map_err(|e| store_error(name, "reading", e))?;
            if let Some(stored) = stored {
                return self.output(name, stored);
            }
            self.owner.check(name).await?;
        }
        let started = std::time::Instant::now();
        let output = body.await?;
        if let Some((metrics, workflow)) = &self.metrics {
            metrics.step_finished(workflow, name, started.elapsed());
        }
        let record = StepRecord {
            output: serde_json::to_value(&output).map_err(|e| {
                WorkflowError::terminal(format!(
                    "the output of step {name:?} cannot be serialized to JSON: {e}"
                ))
            })?,
            completed_at: crate::model::time::now_seconds(),
        };
        let stored = match self.store_output(name, &record).await {
            Ok(StepCreated::New(stored)) => stored,
            Ok(StepCreated::Exists(stored)) => {
                // Another execution of this run stored it first: from now on look every step
                // up and check the claim before running a body.
                self.owner.hold.lapse();
                stored
            }
            Err(e) => return Err(store_error(name, "storing", e)),
        };
        self.output(name, stored)
    }

    /// Stores a step's output, retrying a failed write in place for a while (a stream electing its
    /// leader, a reconnect): failing the attempt instead would run the body, and its side
    /// effect, again. A write that timed out but landed is found by the next try (create-only).
    async fn store_output(
        &self,
        name: &str,
        record: &StepRecord,
    ) -> Result<StepCreated, StoreError> {
        let mut delay = STORE_RETRY_FIRST;
        let give_up = std::time::Instant::now() + STORE_RETRY_FOR;
        loop {
            match self.store.create(&self.run_id, name, record).await {
                Err(StoreError::Write { .. } | StoreError::Read { .. })
                    if std::time::Instant::now() + delay < give_up =>
                {
                    tracing::debug!(step = name, retry_in = ?delay, "storing a step's output failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// A key unique to step `name` of this run, stable across attempts and workers:
    /// `<run_id>.<name>` (the step's key in `polos_steps`; names that are not plain KV tokens
    /// are encoded as there).
    ///
    /// A step body runs at least once, so pass this key to external systems that de-duplicate
    /// requests (a payment provider's idempotency key, a message id) to make its side effect
    /// happen once:
    ///
    /// ```no_run
    /// # use polos::worker::{WorkflowContext, WorkflowError};
    /// # async fn charge(_amount: u64, _idempotency_key: &str) -> Result<String, std::io::Error> { Ok("ch_1".into()) }
    /// # async fn f(ctx: WorkflowContext) -> Result<(), WorkflowError> {
    /// let key = ctx.step.idempotency_key("charge");
    /// let receipt = ctx.step.run("charge", || charge(4200, &key)).await?;
    /// # Ok(()) }
    /// ```
    pub fn idempotency_key(&self, name: &str) -> String {
        step_kv_key(&self.run_id, name)
    }

    /// The stored output of `name` as the type the step returns.
    fn output<T: DeserializeOwned>(
        &self,
        name: &str,
        stored: StepRecord,
    ) -> Result<T, WorkflowError> {
        serde_json::from_value(stored.output).map_err(|e| {
            let key = step_kv_key(&self.run_id, name);
            WorkflowError::terminal(format!(
                "the stored output of step {name:?} (polos_steps {key}) does not deserialize into the type the step returns: {e}. Outputs are always read back from their stored JSON, so a value JSON cannot hold (a NaN float becomes null) fails on the first run as on a replay; fix the type, or delete the key to run the step again"
            ))
        })
    }
}

/// Steps whose bodies are tried several times in place: [`Step::retry`].
pub struct RetryingStep<'a> {
    /// The run's steps.
    step: &'a Step,
    /// How often and how far apart.
    policy: RetryPolicy,
}

impl std::fmt::Debug for RetryingStep<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryingStep")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl RetryingStep<'_> {
    /// [`Step::run`] with the body tried up to `max_attempts` times before the step fails. The
    /// run stops between tries once it is cancelled or taken over by another execution.
    pub async fn run<T, E, F, Fut>(&self, name: &str, mut body: F) -> Result<T, WorkflowError>
    where
        T: Serialize + DeserializeOwned,
        E: IntoWorkflowError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let step = self.step;
        let policy = &self.policy;
        let tries = async {
            let mut tried = 1;
            loop {
                let error = match body().await {
                    Ok(output) => return Ok(output),
                    Err(e) => e.into_workflow_error(),
                };
                if error.is_terminal() || tried >= policy.max_attempts.max(1) {
                    return Err(error);
                }
                let delay = policy.delay(&format!("{}.{name}", step.run_id), tried);
                tracing::debug!(step = name, tried, error = %error, retry_in = ?delay, "step failed; trying it again in place");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = step.cancel.wait() => {}
                }
                if let Some(reason) = step.cancel.requested().await {
                    return Err(step
                        .cancel
                        .error(&format!("trying step {name:?} again"), reason.as_deref()));
                }
                step.owner.check(name).await?;
                tried += 1;
            }
        };
        step.execute(name, tries).await
    }
}

/// A step's store failure as the error the workflow sees: retryable unless retrying cannot help.
fn store_error(name: &str, doing: &str, e: StoreError) -> WorkflowError {
    let message = format!("{doing} the output of step {name:?} failed: {e}");
    if e.is_permanent() {
        WorkflowError::terminal(message)
    } else {
        WorkflowError::retryable(message)
    }
}
