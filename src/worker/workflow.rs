//! Declaring a workflow: an id, how it may be scheduled, and its handler — the Rust form of the
//! documented Python API's `@workflow(id=..., schedule=...)` decorator.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use super::{RetryPolicy, WorkflowContext, WorkflowError};
use crate::model::{InlineSchedule, OverlapPolicy, SchedulePayload};

/// A workflow's output once serialized: what the run record's `output` field holds.
pub(crate) type Output = Result<serde_json::Value, WorkflowError>;

/// The type-erased handler every workflow is stored as.
pub(crate) type BoxedHandler =
    Arc<dyn Fn(WorkflowContext, SchedulePayload) -> BoxFuture<'static, Output> + Send + Sync>;

/// An inline schedule: a cron expression read in a time zone (UTC unless set), and optionally
/// its run policies.
///
/// `"0 9 * * *"`, `("0 17 * * *", "America/New_York")` and
/// `Schedule::cron("0 17 * * *").timezone("America/New_York")` all convert into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The 5-field cron expression.
    pub cron: String,
    /// The IANA zone its wall clock is read in.
    pub timezone: String,
    /// The overlap policy the worker writes into the schedule; `None` leaves the stored one
    /// (default `skip`).
    pub overlap: Option<OverlapPolicy>,
    /// Whether a run failing for good pauses the schedule; `None` leaves the stored setting.
    pub pause_on_failure: Option<bool>,
}

impl Schedule {
    /// A schedule in UTC.
    pub fn cron(expr: impl Into<String>) -> Self {
        Schedule {
            cron: expr.into(),
            timezone: "UTC".to_string(),
            overlap: None,
            pause_on_failure: None,
        }
    }

    /// Reads the cron in this IANA zone instead (`"America/New_York"`); DST is handled.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// What a fire does while the previous run still executes (default
    /// [`OverlapPolicy::Skip`]); see the README's "Run policies".
    ///
    /// ```
    /// use polos::model::OverlapPolicy;
    /// use polos::worker::Schedule;
    /// let every_5 = Schedule::cron("*/5 * * * *").overlap(OverlapPolicy::BufferOne);
    /// ```
    pub fn overlap(mut self, policy: OverlapPolicy) -> Self {
        self.overlap = Some(policy);
        self
    }

    /// Pauses the schedule when one of its runs fails after its last attempt (the note names
    /// the run); resume it with `polos schedules resume`.
    pub fn pause_on_failure(mut self, pause: bool) -> Self {
        self.pause_on_failure = Some(pause);
        self
    }
}

impl From<&str> for Schedule {
    fn from(expr: &str) -> Self {
        Schedule::cron(expr)
    }
}

impl From<String> for Schedule {
    fn from(expr: String) -> Self {
        Schedule::cron(expr)
    }
}

impl From<(&str, &str)> for Schedule {
    fn from((expr, timezone): (&str, &str)) -> Self {
        Schedule::cron(expr).timezone(timezone)
    }
}

/// A workflow: id, scheduling, handler. Register it with [`crate::worker::Worker::workflow`].
///
/// ```no_run
/// use polos::worker::{Schedule, Workflow, WorkflowContext, WorkflowError};
/// use polos::model::SchedulePayload;
///
/// async fn daily_report(
///     ctx: WorkflowContext,
///     payload: SchedulePayload,
/// ) -> Result<serde_json::Value, WorkflowError> {
///     println!("Report generated at: {}", payload.timestamp);
///     Ok(serde_json::json!({"status": "completed"}))
/// }
///
/// // Inline cron, UTC:
/// let a = Workflow::new("daily-report", daily_report).schedule("0 9 * * *");
/// // Inline cron in a zone:
/// let b = Workflow::new("end-of-day-sync", daily_report)
///     .schedule(Schedule::cron("0 17 * * *").timezone("America/New_York"));
/// // Schedules created through the API (per user, per entity):
/// let c = Workflow::new("user-reminder", daily_report).schedulable();
/// ```
#[derive(Clone)]
pub struct Workflow {
    /// The workflow id (`[A-Za-z0-9_-]{1,128}`), validated when the worker starts.
    pub(crate) id: String,
    /// The inline schedule this code declares; the worker keeps the `global` schedule in sync.
    pub(crate) schedule: Option<Schedule>,
    /// Whether the API may create schedules for it (`schedule=True` in the documented Python API).
    pub(crate) schedulable: bool,
    /// The handler, erased to one type so a worker can hold many workflows.
    pub(crate) handler: BoxedHandler,
    /// How long one attempt may run; `None` uses the worker's `run_timeout_secs`.
    pub(crate) timeout: Option<Duration>,
    /// How often a run is tried; `None` uses the worker's `max_attempts` and backoff.
    pub(crate) retry: Option<RetryPolicy>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("id", &self.id)
            .field("schedule", &self.schedule)
            .field("schedulable", &self.schedulable)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Workflow {
    /// A workflow `id` run by `handler`, an `async fn(WorkflowContext, SchedulePayload) ->
    /// Result<T, WorkflowError>` whose `T` is stored as the run's output.
    ///
    /// Without [`schedule`](Self::schedule) or [`schedulable`](Self::schedulable) it only runs
    /// when a fire is published for it.
    pub fn new<F, Fut, T>(id: impl Into<String>, handler: F) -> Self
    where
        F: Fn(WorkflowContext, SchedulePayload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, WorkflowError>> + Send + 'static,
        T: Serialize,
    {
        let handler: BoxedHandler = Arc::new(move |ctx, payload| {
            let fut = handler(ctx, payload);
            Box::pin(async move {
                let value = fut.await?;
                serde_json::to_value(value).map_err(|e| {
                    WorkflowError::terminal(format!(
                        "the handler's return value cannot be serialized to JSON: {e}"
                    ))
                })
            })
        });
        Workflow {
            id: id.into(),
            schedule: None,
            schedulable: false,
            handler,
            timeout: None,
            retry: None,
        }
    }

    /// Declares an inline schedule (`"0 9 * * *"` in UTC, or a [`Schedule`] with a zone). The
    /// worker creates or updates the workflow's `global` schedule to match at each start, and
    /// removes it when the code no longer declares one. Implies [`schedulable`](Self::schedulable).
    pub fn schedule(mut self, schedule: impl Into<Schedule>) -> Self {
        self.schedule = Some(schedule.into());
        self.schedulable = true;
        self
    }

    /// Allows schedules for this workflow to be created through the API (one per key: a user,
    /// an entity), as the documented Python API's `schedule=True`.
    pub fn schedulable(mut self) -> Self {
        self.schedulable = true;
        self
    }

    /// The longest one attempt may run (default: the worker's `run_timeout_secs`, one hour).
    /// An attempt still running then is cancelled and counts as a retryable failure, so a hung
    /// run frees its slot and is retried. Cancelling takes effect at the handler's next
    /// `.await`: run blocking code with `tokio::task::spawn_blocking` so it never holds a
    /// runtime thread.
    ///
    /// ```
    /// # use polos::worker::{Workflow, WorkflowContext, WorkflowError};
    /// # async fn sync_data(_c: WorkflowContext, _p: polos::model::SchedulePayload) -> Result<(), WorkflowError> { Ok(()) }
    /// use std::time::Duration;
    /// let wf = Workflow::new("end-of-day-sync", sync_data).timeout(Duration::from_secs(15 * 60));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How often this workflow's runs are tried and how long to wait in between, instead of
    /// the worker's `max_attempts` and `retry_backoff_secs`. A retryable error (or a timeout)
    /// is retried until `max_attempts`; a terminal one fails the run at once.
    ///
    /// ```
    /// # use polos::worker::{RetryPolicy, Workflow, WorkflowContext, WorkflowError};
    /// # async fn charge(_c: WorkflowContext, _p: polos::model::SchedulePayload) -> Result<(), WorkflowError> { Ok(()) }
    /// use std::time::Duration;
    /// let wf = Workflow::new("billing", charge).retry(RetryPolicy {
    ///     max_attempts: 6,
    ///     initial_backoff: Duration::from_secs(5),
    ///     multiplier: 3.0,
    ///     max_backoff: Duration::from_secs(3600),
    ///     jitter: 0.2,
    /// });
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The workflow id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The inline schedule as stored in `polos_workflows`.
    pub(crate) fn inline_schedule(&self) -> Option<InlineSchedule> {
        self.schedule.as_ref().map(|s| InlineSchedule {
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
        })
    }
}
