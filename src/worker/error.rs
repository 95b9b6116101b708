//! Errors of the worker: what a handler or step returns ([`WorkflowError`]) and why a worker
//! could not start or keep running ([`WorkerError`]).

use std::fmt;

use thiserror::Error;

use crate::cron::CronError;
use crate::model::ValidationError;

/// The error a workflow handler or a step returns.
///
/// Retries are decided by type, as in restate: any ordinary error (`?` on anything that
/// implements [`std::error::Error`]) is *retryable* — the run is redelivered with backoff until
/// its last attempt — while a *terminal* error fails the run at once. The original error is kept:
/// [`source`](Self::source) and [`downcast_ref`](Self::downcast_ref) give it back.
///
/// Like `anyhow::Error`, this type deliberately does not implement `std::error::Error` itself;
/// that is what lets `?` convert every error type into it. Errors that are not
/// `std::error::Error` (`anyhow::Error`, `Box<dyn Error + Send + Sync>`, a `String`) convert with
/// [`ErrorExt`] / [`ResultExt`], which also say which kind they are:
///
/// ```
/// use polos::worker::{ResultExt, WorkflowError};
///
/// fn parse(input: &str) -> Result<u32, WorkflowError> {
///     let n: u32 = input.parse()?; // a ParseIntError: retryable
///     if n == 0 {
///         return Err(WorkflowError::terminal("zero users: nothing to report"));
///     }
///     Ok(n)
/// }
/// assert!(!parse("x").unwrap_err().is_terminal());
/// assert!(parse("0").unwrap_err().is_terminal());
///
/// // Any error, marked: no `map_err`, no `Ok::<_, WorkflowError>`.
/// let bad: Result<u32, WorkflowError> = "-1".parse::<u32>().terminal();
/// let e = bad.unwrap_err();
/// assert!(e.is_terminal());
/// assert!(e.downcast_ref::<std::num::ParseIntError>().is_some());
/// ```
pub struct WorkflowError {
    /// What went wrong, with the error's source chain joined by `: `.
    message: String,
    /// Whether retrying cannot help (the run fails at once).
    terminal: bool,
    /// The error this one was made from, for callers that inspect it.
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl WorkflowError {
    /// A retryable error with this message.
    pub fn retryable(message: impl fmt::Display) -> Self {
        WorkflowError {
            message: message.to_string(),
            terminal: false,
            source: None,
        }
    }

    /// A terminal error: the run is recorded `failed` without further attempts.
    pub fn terminal(message: impl fmt::Display) -> Self {
        WorkflowError {
            message: message.to_string(),
            terminal: true,
            source: None,
        }
    }

    /// Turns this error into a terminal one (e.g. `.map_err(|e| WorkflowError::from(e).into_terminal())`).
    pub fn into_terminal(mut self) -> Self {
        self.terminal = true;
        self
    }

    /// Turns this error into a retryable one.
    pub fn into_retryable(mut self) -> Self {
        self.terminal = false;
        self
    }

    /// Whether the run fails at once instead of being retried.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// The message, as stored in the run record's `error` field.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error this one was made from (`None` for one made from a message).
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// The original error, if it is an `E`. (An `anyhow::Error` is kept as anyhow hands it
    /// over, inside its own wrapper: its message and causes are kept, but it does not downcast
    /// back to the type inside; mark the concrete error instead if the handler needs it.)
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.as_deref()?.downcast_ref::<E>()
    }

    /// Takes the original error out.
    pub fn into_source(self) -> Option<Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.source
    }

    /// An error made from `error` (its message is its display with every cause after `: `).
    fn from_boxed(
        error: Box<dyn std::error::Error + Send + Sync + 'static>,
        terminal: bool,
    ) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        WorkflowError {
            message,
            terminal,
            source: Some(error),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for WorkflowError {
    fn from(error: E) -> Self {
        WorkflowError::from_boxed(Box::new(error), false)
    }
}

/// Marks any error as retryable or terminal, converting it into a [`WorkflowError`] that keeps
/// it as its source. Implemented for every `std::error::Error`, `anyhow::Error`,
/// `Box<dyn Error + Send + Sync>`, `String` and `&str` (everything that converts into
/// `Box<dyn Error + Send + Sync>`).
///
/// ```
/// use polos::worker::ErrorExt;
///
/// let e = std::io::Error::other("disk full").terminal();
/// assert!(e.is_terminal());
/// assert_eq!(e.message(), "disk full");
/// let boxed: Box<dyn std::error::Error + Send + Sync> = "timeout".into();
/// assert!(!boxed.retryable().is_terminal());
/// ```
pub trait ErrorExt: Sized {
    /// A retryable [`WorkflowError`]: the run (or step) is tried again.
    fn retryable(self) -> WorkflowError;
    /// A terminal [`WorkflowError`]: the run fails at once.
    fn terminal(self) -> WorkflowError;
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>> ErrorExt for E {
    fn retryable(self) -> WorkflowError {
        WorkflowError::from_boxed(self.into(), false)
    }

    fn terminal(self) -> WorkflowError {
        WorkflowError::from_boxed(self.into(), true)
    }
}

/// [`ErrorExt`] on a `Result`: `fetch().await.retryable()?` or, as a step body's last
/// expression, `charge(user).await.terminal()` — the body then returns
/// `Result<T, WorkflowError>` without a turbofish.
///
/// ```no_run
/// use polos::worker::{ResultExt, WorkflowContext, WorkflowError};
/// # async fn fetch_rates() -> anyhow::Result<Vec<f64>> { Ok(vec![]) }
/// # async fn f(ctx: WorkflowContext) -> Result<(), WorkflowError> {
/// let rates = ctx.step.run("rates", || async { fetch_rates().await.retryable() }).await?;
/// # Ok(()) }
/// ```
pub trait ResultExt<T> {
    /// The error, if any, as a retryable [`WorkflowError`].
    fn retryable(self) -> Result<T, WorkflowError>;
    /// The error, if any, as a terminal [`WorkflowError`].
    fn terminal(self) -> Result<T, WorkflowError>;
}

impl<T, E: ErrorExt> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, WorkflowError> {
        self.map_err(ErrorExt::retryable)
    }

    fn terminal(self) -> Result<T, WorkflowError> {
        self.map_err(ErrorExt::terminal)
    }
}

/// What a step body may fail with: a [`WorkflowError`] as it is, or any other error as a
/// retryable one (every `std::error::Error`, `anyhow::Error`, `Box<dyn Error + Send + Sync>`).
pub trait IntoWorkflowError {
    /// The error as a [`WorkflowError`].
    fn into_workflow_error(self) -> WorkflowError;
}

impl IntoWorkflowError for WorkflowError {
    fn into_workflow_error(self) -> WorkflowError {
        self
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>> IntoWorkflowError for E {
    fn into_workflow_error(self) -> WorkflowError {
        WorkflowError::from_boxed(self.into(), false)
    }
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terminal {
            write!(f, "terminal: {}", self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl fmt::Debug for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowError")
            .field("message", &self.message)
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

/// Why [`crate::worker::Worker::run`] could not start or had to stop.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The `/metrics` endpoint (`worker.metrics_addr`) could not start.
    #[error("the worker's metrics endpoint (worker.metrics_addr): {0}")]
    Metrics(#[from] crate::metrics::HttpError),
    /// `Worker::run` was called without any workflow.
    #[error("the worker has no workflows; add one with Worker::workflow(Workflow::new(\"id\", handler))")]
    NoWorkflows,
    /// A workflow id is not a valid subject token.
    #[error("workflow {workflow:?} cannot be registered: {source}")]
    InvalidWorkflow {
        /// The id as declared.
        workflow: String,
        /// What is wrong with it.
        source: ValidationError,
    },
    /// Two workflows with the same id in one worker.
    #[error("workflow {0:?} is declared twice in this worker; give each workflow its own id")]
    DuplicateWorkflow(String),
    /// An inline schedule whose cron or zone does not parse.
    #[error("workflow {workflow:?} declares an invalid inline schedule: {source}")]
    InvalidSchedule {
        /// The workflow declaring it.
        workflow: String,
        /// The cron layer's error, naming the field.
        source: CronError,
    },
    /// A bucket or stream polos needs does not exist on the server.
    #[error("JetStream {what} {name} is missing ({source}); run `polos streams apply` (or `polos dev`) against this server first")]
    Missing {
        /// `bucket` or `stream`.
        what: &'static str,
        /// Its name.
        name: &'static str,
        /// The server's answer.
        source: async_nats::Error,
    },
    /// Writing the registration or syncing the inline schedule failed.
    #[error("registering workflow {workflow:?} failed: {source}")]
    Registration {
        /// The workflow.
        workflow: String,
        /// The store's error.
        source: crate::store::StoreError,
    },
    /// A setting that cannot work.
    #[error("invalid {setting}: {reason}")]
    InvalidSetting {
        /// The setting, as written in the config or the builder.
        setting: &'static str,
        /// Why, and what to set instead.
        reason: String,
    },
    /// The durable consumer could not be created or updated.
    #[error("cannot create consumer {consumer} on stream POLOS_RUNS for workflow {workflow:?}: {source}. If another consumer already filters polos.runs.{workflow}, delete it (`nats consumer rm POLOS_RUNS <name>`)")]
    Consumer {
        /// The workflow.
        workflow: String,
        /// The durable name.
        consumer: String,
        /// The server's answer.
        source: async_nats::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn any_error_converts_with_its_chain_and_is_retryable() {
        let e: WorkflowError = Outer(std::io::Error::other("disk full")).into();
        assert_eq!(e.message(), "outer: disk full");
        assert!(!e.is_terminal());
        let t = WorkflowError::terminal("bad user");
        assert!(t.is_terminal());
        assert_eq!(t.to_string(), "terminal: bad user");
        assert!(WorkflowError::retryable("x").into_terminal().is_terminal());
        assert!(!WorkflowError::terminal("x").into_retryable().is_terminal());
    }

    #[test]
    fn the_source_is_kept_and_can_be_downcast() {
        let e: WorkflowError = Outer(std::io::Error::other("disk full")).into();
        assert!(e.downcast_ref::<Outer>().is_some());
        assert!(e.downcast_ref::<std::fmt::Error>().is_none());
        assert_eq!(e.source().unwrap().to_string(), "outer");
        assert!(WorkflowError::retryable("plain").source().is_none());
    }

    #[test]
    fn any_error_is_marked_without_map_err() {
        let anyhow_err = anyhow::anyhow!("upstream said no").context("fetching rates");
        let e = anyhow_err.terminal();
        assert!(e.is_terminal());
        assert_eq!(e.message(), "fetching rates: upstream said no");
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(std::fmt::Error);
        let e = boxed.retryable();
        assert!(!e.is_terminal());
        assert!(e.downcast_ref::<std::fmt::Error>().is_some());
        let r: Result<u8, _> = Err(std::io::Error::other("x"));
        assert!(r.terminal().unwrap_err().is_terminal());
        let ok: Result<u8, std::io::Error> = Ok(3);
        assert_eq!(ok.retryable().unwrap(), 3);
        let from_anyhow: anyhow::Result<u8> =
            Err(anyhow::Error::new(std::fmt::Error).context("formatting the report"));
        let e = from_anyhow.retryable().unwrap_err();
        assert_eq!(
            e.message(),
            "formatting the report: an error occurred when formatting an argument"
        );
        assert_eq!("no user".terminal().message(), "no user");
        assert_eq!(String::from("gone").into_workflow_error().message(), "gone");
        assert!(WorkflowError::terminal("t")
            .into_workflow_error()
            .is_terminal());
    }
}
