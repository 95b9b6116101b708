use thiserror::Error;

/// An identifier (workflow id or schedule key) that the contract does not allow.
///
/// Each variant's message names the offending input and says how to fix it; `code()` is the
/// API error code the contract assigns to it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// A workflow id outside `[A-Za-z0-9_-]{1,128}`.
    #[error("invalid_workflow: {reason} in workflow id {workflow:?}; use 1-128 characters from A-Z a-z 0-9 _ -")]
    InvalidWorkflow {
        /// The rejected workflow id, verbatim.
        workflow: String,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// A schedule key that is empty or longer than 256 bytes.
    #[error(
        "invalid_key: {reason} (key {key:?}); use a non-empty UTF-8 string of at most 256 bytes"
    )]
    InvalidKey {
        /// The rejected key (truncated to 300 characters so logs stay readable).
        key: String,
        /// What exactly is wrong with it.
        reason: String,
    },
}

impl ValidationError {
    /// The contract's error code: `invalid_workflow` or `invalid_key`.
    pub fn code(&self) -> &'static str {
        match self {
            ValidationError::InvalidWorkflow { .. } => "invalid_workflow",
            ValidationError::InvalidKey { .. } => "invalid_key",
        }
    }
}
