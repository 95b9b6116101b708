//! What a handler receives besides its payload: the run's identity and durable steps.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv::{Operation, Store};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::WorkflowError;
use crate::metrics::Metrics;
use crate::model::{step_kv_key, StepRecord, Trigger};

/// The run a handler executes, and its durable steps (`ctx.step.run(...)`).
#[derive(Clone)]
pub struct WorkflowContext {
    /// Identity of the run, shared by clones.
    run: Arc<RunInfo>,
    /// Durable steps of this run, as in the seed: `ctx.step.run("fetch_data", ...)`.
    pub step: Step,
}

/// Identity of one run.
#[derive(Debug)]
struct RunInfo {
    run_id: String,
    workflow: String,
    attempt: u32,
    trigger: Trigger,
}

impl WorkflowContext {
    pub(crate) fn new(
        run_id: String,
        workflow: String,
        attempt: u32,
        trigger: Trigger,
        step: Step,
    ) -> Self {
        WorkflowContext {
            run: Arc::new(RunInfo {
                run_id,
                workflow,
                attempt,
                trigger,
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

    /// 1 on the first delivery, then 2, 3, … on retries and after a worker crash.
    pub fn attempt(&self) -> u32 {
        self.run.attempt
    }

    /// What started the run: the schedule, a catch-up fire or a manual trigger.
    pub fn trigger(&self) -> Trigger {
        self.run.trigger
    }
}

impl std::fmt::Debug for WorkflowContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowContext")
            .field("run_id", &self.run.run_id)
            .field("workflow", &self.run.workflow)
            .field("attempt", &self.run.attempt)
            .field("trigger", &self.run.trigger)
            .finish_non_exhaustive()
    }
}

/// Durable steps of one run: each named step's output is stored in `polos_steps` at
/// `<run_id>.<step>`, so a retried or redelivered run returns it instead of running the body again.
#[derive(Clone)]
pub struct Step {
    /// `polos_steps`.
    store: Arc<Store>,
    /// The run these steps belong to.
    run_id: Arc<str>,
    /// True when this attempt created the run record, so no step can be stored yet and the
    /// lookup round trip is skipped.
    fresh: bool,
    /// Names used so far in this attempt: reusing one is a bug in the workflow.
    used: Arc<Mutex<HashSet<String>>>,
    /// Where step durations are counted, with the run's workflow as label.
    metrics: Option<(Metrics, Arc<str>)>,
}

impl Step {
    pub(crate) fn new(store: Arc<Store>, run_id: &str, fresh: bool) -> Self {
        Step {
            store,
            run_id: Arc::from(run_id),
            fresh,
            used: Arc::new(Mutex::new(HashSet::new())),
            metrics: None,
        }
    }

    /// Counts each executed step's duration in `metrics`, labelled with `workflow`.
    pub(crate) fn metered(mut self, metrics: Metrics, workflow: &str) -> Self {
        self.metrics = Some((metrics, Arc::from(workflow)));
        self
    }

    /// Runs the step `name` once per run: returns its stored output if an earlier attempt
    /// completed it, otherwise awaits `body`, stores its output and returns it.
    ///
    /// The body's error can be any type that converts into [`WorkflowError`] (every
    /// `std::error::Error` does, as retryable); a failed step stores nothing, so the next
    /// attempt runs it again. Using the same `name` twice in one run is a terminal error, and so
    /// is a stored output that no longer deserializes into `T`.
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
        E: Into<WorkflowError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
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
        let key = step_kv_key(&self.run_id, name);
        if !self.fresh {
            if let Some(stored) = self.stored::<T>(name, &key).await? {
                return Ok(stored);
            }
        }
        let started = std::time::Instant::now();
        let output = body().await.map_err(Into::into)?;
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
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| WorkflowError::terminal(format!("step {name:?}: {e}")))?;
        self.store.put(&key, bytes.into()).await.map_err(|e| {
            WorkflowError::retryable(format!(
                "storing the output of step {name:?} in polos_steps failed: {e}"
            ))
        })?;
        Ok(output)
    }

    /// The stored output of a step, if an earlier attempt completed it.
    async fn stored<T: DeserializeOwned>(
        &self,
        name: &str,
        key: &str,
    ) -> Result<Option<T>, WorkflowError> {
        let entry = self.store.entry(key).await.map_err(|e| {
            WorkflowError::retryable(format!(
                "reading step {name:?} from polos_steps failed: {e}"
            ))
        })?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Ok(None);
        };
        let record: StepRecord = serde_json::from_slice(&entry.value).map_err(|e| {
            WorkflowError::terminal(format!(
                "the stored record of step {name:?} at polos_steps {key} is not {{\"output\",\"completed_at\"}}: {e}; delete the key to run the step again"
            ))
        })?;
        serde_json::from_value(record.output).map(Some).map_err(|e| {
            WorkflowError::terminal(format!(
                "the stored output of step {name:?} no longer matches the type the code expects: {e}; delete polos_steps {key} to run the step again"
            ))
        })
    }
}
