//! [`HttpError`]: why the `/metrics` endpoint or the dashboard cannot serve.

use thiserror::Error;

/// The HTTP endpoint could not start or stopped.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The address is neither `PORT` nor `HOST:PORT`.
    #[error("invalid HTTP address {addr:?}: {reason}; write PORT (served on 127.0.0.1) or HOST:PORT, e.g. 127.0.0.1:4280")]
    BadAddr {
        /// The address as configured.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A non-loopback address without a token would let anyone on the network pause, trigger
    /// and delete schedules.
    #[error("{addr} is reachable from other machines: set a token (http.token / POLOS_HTTP__TOKEN) so only holders of it get in, or bind 127.0.0.1")]
    TokenRequired {
        /// The address as configured.
        addr: String,
    },
    /// The port is taken or not allowed.
    #[error("cannot listen on {addr}: {source}; pick another port (port 0 picks any free one)")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the HTTP server on {addr} stopped: {source}")]
    Serve {
        /// The address it listened on.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}
