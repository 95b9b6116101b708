use std::time::Duration;

use thiserror::Error;

use crate::api::ErrorCode;

/// A client call that did not produce a reply.
///
/// [`ClientError::Api`] is the service saying no (match on `code`); everything else is about
/// reaching it.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The service refused the request: bad input, missing schedule, or server trouble.
    #[error("{code}: {message}")]
    Api {
        /// The contract's error code.
        code: ErrorCode,
        /// What was wrong and how to fix it.
        message: String,
    },
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] crate::nats::ConnectError),
    /// NATS is reachable but nothing serves the API.
    #[error("no polos scheduler answers on {subject}; start one with `polos scheduler` (or `polos dev`)")]
    NoService {
        /// The request subject.
        subject: String,
    },
    /// The service did not answer in time.
    #[error("no reply on {subject} within {timeout:?}; is the scheduler overloaded or the connection down?")]
    Timeout {
        /// The request subject.
        subject: String,
        /// The request timeout.
        timeout: Duration,
    },
    /// NATS refused this client's request (or the subscription its reply needs): the client's
    /// NATS user lacks a permission.
    #[error("{denied} (check this client's NATS permissions)")]
    Denied {
        /// What was refused.
        denied: crate::nats::PermissionDenied,
    },
    /// The request could not be sent.
    #[error("request on {subject} failed: {source}")]
    Request {
        /// The request subject.
        subject: String,
        /// The client's error.
        source: async_nats::RequestError,
    },
    /// The reply is not what the contract says (a different server version?).
    #[error("unreadable reply on {subject}: {source}")]
    Reply {
        /// The request subject.
        subject: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The API error code, when the service answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the service said the schedule does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }
}
