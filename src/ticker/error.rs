//! What can stop the ticker. Bad schedule values never do: they are skipped and reported in
//! their state record.

use thiserror::Error;

use crate::store::ReadError;

/// The ticker could not run.
#[derive(Debug, Error)]
pub enum TickerError {
    /// A polos bucket is missing or unreachable.
    #[error("cannot open KV bucket {bucket}: {source}; create the buckets with `polos streams apply` (polos scheduler applies them at start)")]
    Bucket {
        /// The bucket name.
        bucket: String,
        /// The client's error.
        source: async_nats::Error,
    },
    /// Watching a bucket failed in a way the ticker cannot resume from.
    #[error("cannot watch KV bucket {bucket}: {source}; check that the NATS server is reachable and JetStream is enabled")]
    Watch {
        /// The bucket name.
        bucket: String,
        /// What went wrong.
        source: ReadError,
    },
    /// A `[scheduler]` setting cannot work.
    #[error(transparent)]
    Config(crate::config::ConfigError),
    /// A background task of the ticker ended unexpectedly (its own log lines say why).
    #[error("the ticker's {task} task stopped (see the log above)")]
    Task {
        /// Which task.
        task: &'static str,
    },
    /// A background task of the ticker panicked or was cancelled.
    #[error("the ticker's {task} task failed: {source}")]
    TaskFailed {
        /// Which task.
        task: &'static str,
        /// The runtime's report.
        source: tokio::task::JoinError,
    },
}
