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
/// `max_attempts` — while [`WorkflowError::terminal`] fails the run at once.
///
/// Like `anyhow::Error`, this type deliberately does not implement `std::error::Error` itself;
/// that is what lets `?` convert every error type into it.
///
/// ```
/// use polos::worker::WorkflowError;
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
/// ```
pub struct WorkflowError {
    /// What went wrong, with the error's source chain joined by `: `.
    message: String,
    /// Whether retrying cannot help (the run fails at once).
    terminal: bool,
}

impl WorkflowError {
    /// A retryable error with this message.
    pub fn retryable(message: impl fmt::Display) -> Self {
        WorkflowError {
            message: message.to_string(),
            terminal: false,
        }
    }

    /// A terminal error: the run is recorded `failed` without further attempts.
    pub fn terminal(message: impl fmt::Display) -> Self {
        WorkflowError {
            message: message.to_string(),
            terminal: true,
        }
    }

    /// Turns this error into a terminal one (e.g. `.map_err(|e| WorkflowError::from(e).into_terminal())`).
    pub fn into_terminal(mut self) -> Self {
        self.terminal = true;
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
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for WorkflowError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        WorkflowError {
            message,
            terminal: false,
        }
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
            .finish()
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
        /// The KV error.
        source: async_nats::Error,
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
    }
}
