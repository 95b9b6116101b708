//! The cron and time-zone engine: pure code, no clock, no I/O (design §4).
//!
//! PROVISIONAL SURFACE — the cron helper replaces the internals; the signatures below are the
//! interface the rest of the crate codes against.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
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
    /// The contract's API error code.
    pub fn code(&self) -> &'static str {
        match self {
            CronError::InvalidCron { .. } => "invalid_cron",
            CronError::InvalidTimezone { .. } => "invalid_timezone",
        }
    }
}

/// A validated cron expression bound to a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    tz: Tz,
    cron: saffron::Cron,
}

impl CronSchedule {
    /// Parses and validates `expr` in zone `timezone`.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, CronError> {
        let tz: Tz = timezone.parse().map_err(|_| CronError::InvalidTimezone {
            timezone: timezone.to_string(),
            message: format!("unknown time zone {timezone:?}"),
        })?;
        let cron: saffron::Cron = expr.parse().map_err(|_| CronError::InvalidCron {
            expr: expr.to_string(),
            message: format!("cannot parse {expr:?}"),
        })?;
        Ok(CronSchedule {
            expr: expr.to_string(),
            tz,
            cron,
        })
    }

    /// The next fire instant strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.next_after(after)
    }

    /// The next `n` fire instants strictly after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }
}
