//! [`WebError`]: why the dashboard cannot start.

use thiserror::Error;

/// The dashboard could not start.
#[derive(Debug, Error)]
pub enum WebError {
    /// A bucket it reads does not exist or cannot be opened.
    #[error("the dashboard cannot open bucket {bucket}: {source}; run `polos streams apply` against this server first")]
    Open {
        /// The bucket.
        bucket: &'static str,
        /// The server's answer.
        source: async_nats::Error,
    },
    /// A store it reads through could not be opened.
    #[error("the dashboard cannot start: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] crate::metrics::HttpError),
}
