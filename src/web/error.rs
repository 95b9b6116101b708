//! [`WebError`]: why the dashboard cannot start.

use thiserror::Error;

/// The dashboard could not start.
#[derive(Debug, Error)]
pub enum WebError {
    /// A bucket it reads does not exist or cannot be opened.
    #[error("the dashboard cannot open bucket {bucket}: {reason}; run `polos streams apply` against this server first")]
    Open {
        /// The bucket.
        bucket: &'static str,
        /// The server's answer.
        reason: String,
    },
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] crate::metrics::HttpError),
}
