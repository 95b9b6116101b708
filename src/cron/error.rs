//! The errors of the cron layer: a rejected expression or a rejected time zone.

use thiserror::Error;

/// A rejected cron expression or time zone. The message names the input and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CronError {
    /// The expression does not parse or can never fire.
    #[error("invalid_cron: {message}")]
    InvalidCron {
        /// The expression as given.
        expr: String,
        /// What is wrong, naming the field, the value and the allowed range.
        message: String,
    },
    /// The zone is not an IANA name chrono-tz knows.
    #[error("invalid_timezone: {message}")]
    InvalidTimezone {
        /// The zone as given.
        timezone: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl CronError {
    /// The human-readable message without the code prefix.
    pub fn message(&self) -> &str {
        match self {
            CronError::InvalidCron { message, .. } | CronError::InvalidTimezone { message, .. } => {
                message
            }
        }
    }
}
