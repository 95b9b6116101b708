use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cron::CronError;
use crate::model::{Limit, LimitError, ValidationError};
use crate::store::StoreError;

/// The error codes of the contract (README, "The contract"), as they appear in `{"error":{"code"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, a required field missing, an unknown field, a wrong type, too large.
    InvalidRequest,
    /// The cron expression does not parse or can never fire.
    InvalidCron,
    /// The zone is not an IANA name.
    InvalidTimezone,
    /// The workflow id is not `[A-Za-z0-9_-]{1,128}`.
    InvalidWorkflow,
    /// The key is empty or longer than 256 bytes.
    InvalidKey,
    /// The workflow is registered with `schedulable: false`.
    NotSchedulable,
    /// No such schedule (404).
    NotFound,
    /// KV or JetStream trouble on the server side (500).
    Internal,
    /// A code this version does not know (a newer server); treated like `internal`.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidCron => "invalid_cron",
            ErrorCode::InvalidTimezone => "invalid_timezone",
            ErrorCode::InvalidWorkflow => "invalid_workflow",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::NotSchedulable => "not_schedulable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The `Nats-Service-Error-Code` status: 404 for `not_found`, 500 for `internal`, else 400.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::NotFound => 404,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
            _ => 400,
        }
    }

    /// Whether the caller sent something wrong (as opposed to a missing schedule or a server
    /// problem).
    pub fn is_invalid_input(self) -> bool {
        self.status() == 400
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API error: the body `{"error":{"code","message"}}` and the micro error headers.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The contract's error code.
    pub code: ErrorCode,
    /// What was wrong and how to fix it.
    pub message: String,
}

/// The reply body of a failed request: `{"error":{"code","message"}}`.
#[cfg(feature = "scheduler")]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    /// The error.
    pub error: ApiError,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let code = match e {
            ValidationError::InvalidWorkflow { .. } => ErrorCode::InvalidWorkflow,
            ValidationError::InvalidKey { .. } => ErrorCode::InvalidKey,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<CronError> for ApiError {
    fn from(e: CronError) -> Self {
        let code = match e {
            CronError::InvalidCron { .. } => ErrorCode::InvalidCron,
            CronError::InvalidTimezone { .. } => ErrorCode::InvalidTimezone,
        };
        ApiError::new(code, e.message())
    }
}

/// A limit's refusal keeps the code the same input gets without a configured limit: a key too
/// long is `invalid_key`, a cron too long `invalid_cron`, anything else `invalid_request`.
impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        let code = match e.limit {
            Limit::KeyBytes => ErrorCode::InvalidKey,
            Limit::CronBytes => ErrorCode::InvalidCron,
            Limit::RequestBytes | Limit::NoteBytes | Limit::SchedulesPerWorkflow => {
                ErrorCode::InvalidRequest
            }
        };
        ApiError::new(code, e.to_string())
    }
}

/// A run id that is not one is the caller's mistake; every other store failure is ours.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidRunId { .. } => ApiError::invalid_request(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// Why the server did not confirm that it processed everything a connection sent.
#[cfg(feature = "scheduler")]
#[derive(Debug, Error)]
pub enum RoundTripError {
    /// Subscribing to the echo inbox failed.
    #[error("{0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// Publishing the echo failed.
    #[error("{0}")]
    Publish(#[from] async_nats::PublishError),
    /// The connection closed before the echo came back.
    #[error("the connection closed")]
    Closed,
    /// No echo within the timeout.
    #[error("no echo from the server within {0:?}")]
    Timeout(std::time::Duration),
}

/// Why the API service could not start or stopped with an error.
#[cfg(feature = "scheduler")]
#[derive(Debug, Error)]
pub enum ServeError {
    /// The KV buckets could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The micro service could not be registered.
    #[error("cannot start the NATS micro service polos: {source}")]
    Service {
        /// async-nats' error.
        source: async_nats::Error,
    },
    /// One endpoint of the micro service could not be registered.
    #[error("cannot start the NATS micro service polos: endpoint {endpoint}: {source}")]
    Endpoint {
        /// The endpoint (`upsert`, `list`, …).
        endpoint: &'static str,
        /// async-nats' error.
        source: async_nats::Error,
    },
    /// The server did not confirm the service's subscriptions.
    #[error("cannot start the NATS micro service polos: registering subscriptions: {source}")]
    Register {
        /// Why the confirmation failed.
        source: RoundTripError,
    },
    /// NATS refused a subscription of the service (its endpoints or `$SRV` discovery).
    #[error("cannot serve the schedules API: {0} (check the scheduler's NATS permissions)")]
    Denied(crate::nats::PermissionDenied),
}
