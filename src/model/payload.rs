//! The message a workflow receives at each fire.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::time::{rfc3339, rfc3339_opt};

/// Timing information delivered to a scheduled workflow — exactly the fields of the documented Python
/// API (README, "The contract").
///
/// This is also the body of every message on `polos.runs.<workflow>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulePayload {
    /// The scheduled instant of this fire (not the publish time); for a catch-up fire the missed
    /// instant; for a manual trigger the trigger time.
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// `timestamp` of this schedule's previous fire; `None` for the first.
    #[serde(with = "rfc3339_opt")]
    pub last_timestamp: Option<DateTime<Utc>>,
    /// The schedule's IANA zone.
    pub timezone: String,
    /// The schedule's id (`sch_…`).
    pub schedule_id: String,
    /// The schedule key: a user id, or `global`.
    pub key: String,
    /// The next scheduled fire after `timestamp`.
    #[serde(with = "rfc3339")]
    pub upcoming: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::parse_instant;

    #[test]
    fn exact_wire_shape() {
        let p = SchedulePayload {
            timestamp: parse_instant("2026-11-26T16:00:00Z").unwrap(),
            last_timestamp: None,
            timezone: "UTC".into(),
            schedule_id: "sch_x".into(),
            key: "global".into(),
            upcoming: parse_instant("2026-11-27T16:00:00Z").unwrap(),
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"timestamp":"2026-11-26T16:00:00Z","last_timestamp":null,"timezone":"UTC","schedule_id":"sch_x","key":"global","upcoming":"2026-11-27T16:00:00Z"}"#
        );
        assert_eq!(serde_json::from_str::<SchedulePayload>(&json).unwrap(), p);
    }
}
