use thiserror::Error;

/// An identifier (workflow id or schedule key) that the contract does not allow.
///
/// Each variant's message names the offending input and says how to fix it; the API maps each
/// variant to its error code (`api::error`), so the message carries none.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    /// A workflow id outside `[A-Za-z0-9_-]{1,128}`.
    #[error(
        "invalid workflow id {workflow:?}: {reason}; use 1-128 characters from A-Z a-z 0-9 _ -"
    )]
    InvalidWorkflow {
        /// The rejected workflow id, verbatim.
        workflow: String,
        /// What exactly is wrong with it.
        reason: String,
    },
    /// A schedule key that is empty or longer than 256 bytes.
    #[error(
        "invalid schedule key {key:?}: {reason}; use a non-empty UTF-8 string of at most 256 bytes"
    )]
    InvalidKey {
        /// The rejected key (truncated to 300 characters so logs stay readable).
        key: String,
        /// What exactly is wrong with it.
        reason: String,
    },
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
