//! [`DevError`]: why `polos dev` could not start or stopped.

use thiserror::Error;

/// `polos dev` failed.
#[derive(Debug, Error)]
pub enum DevError {
    /// The embedded `nats-server` could not be found, installed or started.
    #[error("cannot start the embedded nats-server (data in {data_dir}): {source}. Set POLOS_NATS_SERVER to a nats-server binary, or point polos at a running server with --nats-url")]
    Server {
        /// The data directory it was to use.
        data_dir: String,
        /// Why.
        source: crate::nats::server::ServerError,
    },
    /// The runtime shut down while the embedded server was starting.
    #[error("polos dev stopped while the embedded nats-server was starting")]
    Interrupted,
    /// The data directory could not be created or written.
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another `polos dev` runs on the same data directory.
    #[error("another polos dev (pid {pid}) is using {path}; stop it, or start this one with --data-dir <another dir>")]
    InUse {
        /// The directory.
        path: String,
        /// The other process.
        pid: u32,
    },
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] crate::nats::ConnectError),
    /// The buckets and stream could not be applied.
    #[error("cannot apply the JetStream buckets and stream: {0}")]
    Streams(#[source] crate::nats::streams::StreamsError),
    /// The scheduler (ticker or API) stopped with an error.
    #[error("the scheduler stopped: {0}")]
    Scheduler(#[source] crate::scheduler::SchedulerError),
    /// The example worker stopped with an error.
    #[error("the example worker stopped: {0}")]
    Worker(#[from] crate::worker::WorkerError),
    /// The dashboard could not start.
    #[error("cannot start the dashboard: {0}; choose another address with --http ADDR")]
    Dashboard(#[from] crate::web::WebError),
    /// The `polos_runs` bucket could not be watched.
    #[error("cannot watch the runs bucket {bucket}: {source}")]
    Watch {
        /// The bucket.
        bucket: &'static str,
        /// Why.
        source: crate::store::StoreError,
    },
}
