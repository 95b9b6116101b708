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

/// `text` as quoted in an error message: at most `max` characters, the middle elided (` … `)
/// when longer, so both a value's start and serde's trailing "at line 1 column N" survive.
///
/// Stored values and messages can be as long as a NATS message (1 MiB); their errors are
/// logged and written into state records, which must stay readable and fit in one message.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let chars = text.chars().count();
    if chars <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max * 3 / 4).collect();
    let tail: String = text.chars().skip(chars - max / 4).collect();
    format!("{head} … {tail}")
}
