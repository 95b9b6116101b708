//! What can stop the ticker. Bad schedule values never do: they are skipped and reported in
//! their state record.

use thiserror::Error;

/// The ticker could not run.
#[derive(Debug, Error)]
pub enum TickerError {
    /// A polos bucket is missing or unreachable.
    #[error("cannot open KV bucket {bucket}: {message}; create the buckets with `polos streams apply` (polos scheduler applies them at start)")]
    Bucket {
        /// The bucket name.
        bucket: String,
        /// The server's error.
        message: String,
    },
    /// Watching a bucket failed in a way the ticker cannot resume from.
    #[error("cannot watch KV bucket {bucket}: {message}; check that the NATS server is reachable and JetStream is enabled")]
    Watch {
        /// The bucket name.
        bucket: String,
        /// The server's error.
        message: String,
    },
    /// A `[scheduler]` setting cannot work.
    #[error(transparent)]
    Config(crate::config::ConfigError),
    /// A background task of the ticker ended unexpectedly.
    #[error("the ticker's {task} task stopped: {message}")]
    Task {
        /// Which task.
        task: &'static str,
        /// Why.
        message: String,
    },
}
