//! The errors of the cron layer: a rejected expression or a rejected time zone.

use thiserror::Error;

/// A rejected cron expression or time zone. The message names the input and the fix; it
/// carries no API error code (the API maps each variant to its code, `api::error`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CronError {
    /// The expression does not parse or can never fire.
    #[error("invalid cron expression: {message}")]
    InvalidCron {
        /// The expression as given.
        expr: String,
        /// What is wrong, naming the field, the value and the allowed range.
        message: String,
    },
    /// The zone is not an IANA name chrono-tz knows.
    #[error("{message}")]
    InvalidTimezone {
        /// The zone as given.
        timezone: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl CronError {
    /// What is wrong, without the "invalid cron expression" lead-in (the API reply's `code`
    /// says that).
    pub fn message(&self) -> &str {
        match self {
            CronError::InvalidCron { message, .. } | CronError::InvalidTimezone { message, .. } => {
                message
            }
        }
    }
}
