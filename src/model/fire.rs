//! A fire: the message on `polos.runs.<workflow>` that asks a worker to run a workflow once.
//!
//! One type builds it (scheduler ticker, manual trigger) and parses it (workers), so the body and
//! headers of design §3 have exactly one implementation.

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use thiserror::Error;

use super::error::shorten;
use super::names::{
    runs_subject, HEADER_MSG_ID, HEADER_RUN_ID, HEADER_TRIGGER, RUNS_SUBJECT_PREFIX,
};
use super::time::format_instant;
use super::{manual_run_id, run_id_for, SchedulePayload, Trigger};

/// One fire of one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// The workflow to run (the last subject token).
    pub workflow: String,
    /// `<schedule_id>-<YYYYMMDDTHHMMSSZ>` or `<schedule_id>-m<nuid>`.
    pub run_id: String,
    /// Why it fired.
    pub trigger: Trigger,
    /// The body.
    pub payload: SchedulePayload,
}

/// A message on `polos.runs.>` that is not a valid fire.
#[derive(Debug, Error)]
pub enum FireError {
    /// The subject is not `polos.runs.<workflow>`.
    #[error("subject {0:?} is not polos.runs.<workflow>")]
    Subject(String),
    /// The body is not a SchedulePayload.
    #[error(
        "fire on {subject} has a body that is not a SchedulePayload: {}",
        shorten(&.source.to_string(), 300)
    )]
    Body {
        /// The message subject.
        subject: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A required header is missing or unreadable.
    #[error("fire on {subject} lacks a valid {header} header")]
    Header {
        /// The message subject.
        subject: String,
        /// The header name.
        header: &'static str,
    },
}

impl Fire {
    /// A fire for scheduled instant `payload.timestamp` (trigger `schedule`, `catchup` or
    /// `backfill`); the run id is derived from the instant so duplicates of the same fire share
    /// it.
    pub fn scheduled(workflow: &str, trigger: Trigger, payload: SchedulePayload) -> Fire {
        Fire {
            workflow: workflow.to_string(),
            run_id: run_id_for(&payload.schedule_id, payload.timestamp),
            trigger,
            payload,
        }
    }

    /// A manual fire (`polos schedules trigger`): a fresh run id every time.
    pub fn manual(workflow: &str, payload: SchedulePayload) -> Fire {
        Fire {
            workflow: workflow.to_string(),
            run_id: manual_run_id(&payload.schedule_id),
            trigger: Trigger::Manual,
            payload,
        }
    }

    /// `polos.runs.<workflow>`.
    pub fn subject(&self) -> String {
        runs_subject(&self.workflow)
    }

    /// The de-duplication id: `<schedule_id>@<timestamp>` for scheduled, catch-up and back-filled
    /// fires (so a second publisher of the same instant is absorbed, and back-filling an instant
    /// that just fired publishes nothing new), the run id for manual fires (each trigger is its
    /// own run).
    pub fn msg_id(&self) -> String {
        match self.trigger {
            Trigger::Manual => self.run_id.clone(),
            Trigger::Schedule | Trigger::Catchup | Trigger::Backfill => format!(
                "{}@{}",
                self.payload.schedule_id,
                format_instant(self.payload.timestamp)
            ),
        }
    }

    /// `Nats-Msg-Id`, `Polos-Run-Id`, `Polos-Trigger`.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, self.msg_id().as_str());
        headers.insert(HEADER_RUN_ID, self.run_id.as_str());
        headers.insert(HEADER_TRIGGER, self.trigger.as_str());
        headers
    }

    /// The SchedulePayload JSON.
    pub fn body(&self) -> Bytes {
        // Serializing a struct of strings and instants cannot fail.
        Bytes::from(serde_json::to_vec(&self.payload).unwrap_or_default())
    }

    /// Parses a delivered message back into a fire.
    pub fn from_message(
        subject: &str,
        headers: Option<&HeaderMap>,
        body: &[u8],
    ) -> Result<Fire, FireError> {
        let workflow = subject
            .strip_prefix(RUNS_SUBJECT_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|w| super::validate_workflow(w).is_ok())
            .ok_or_else(|| FireError::Subject(subject.to_string()))?;
        let payload: SchedulePayload =
            serde_json::from_slice(body).map_err(|source| FireError::Body {
                subject: subject.to_string(),
                source,
            })?;
        let header = |name: &'static str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
                .ok_or(FireError::Header {
                    subject: subject.to_string(),
                    header: name,
                })
        };
        let trigger = Trigger::parse(&header(HEADER_TRIGGER)?).ok_or(FireError::Header {
            subject: subject.to_string(),
            header: HEADER_TRIGGER,
        })?;
        // A fire published by another client without a run id still gets the contract's one.
        let run_id = match header(HEADER_RUN_ID) {
            Ok(id) => id,
            Err(_) => run_id_for(&payload.schedule_id, payload.timestamp),
        };
        Ok(Fire {
            workflow: workflow.to_string(),
            run_id,
            trigger,
            payload,
        })
    }
}

/// The payload of a fire at `timestamp`, given the schedule's previous fire and its next instant.
pub fn payload(
    record: &super::ScheduleRecord,
    timestamp: DateTime<Utc>,
    last_timestamp: Option<DateTime<Utc>>,
    upcoming: DateTime<Utc>,
) -> SchedulePayload {
    SchedulePayload {
        timestamp,
        last_timestamp,
        timezone: record.timezone.clone(),
        schedule_id: record.schedule_id.clone(),
        key: record.key.clone(),
        upcoming,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::parse_instant;
    use crate::model::ScheduleRecord;

    #[test]
    fn round_trip_with_contract_headers() {
        let record = ScheduleRecord::new("daily-report", "global", "0 9 * * *", "UTC");
        let t = parse_instant("2026-11-26T09:00:00Z").unwrap();
        let up = parse_instant("2026-11-27T09:00:00Z").unwrap();
        let fire = Fire::scheduled(
            "daily-report",
            Trigger::Schedule,
            payload(&record, t, None, up),
        );
        assert_eq!(fire.subject(), "polos.runs.daily-report");
        let h = fire.headers();
        assert_eq!(
            h.get("Nats-Msg-Id").unwrap().as_str(),
            format!("{}@2026-11-26T09:00:00Z", record.schedule_id)
        );
        assert_eq!(
            h.get("Polos-Run-Id").unwrap().as_str(),
            format!("{}-20261126T090000Z", record.schedule_id)
        );
        assert_eq!(h.get("Polos-Trigger").unwrap().as_str(), "schedule");
        let back = Fire::from_message(&fire.subject(), Some(&h), &fire.body()).unwrap();
        assert_eq!(back, fire);
    }

    #[test]
    fn a_backfilled_instant_is_the_scheduled_fire_with_another_trigger() {
        let record = ScheduleRecord::new("wf", "u1", "0 9 * * *", "UTC");
        let t = parse_instant("2026-11-26T09:00:00Z").unwrap();
        let on_time = Fire::scheduled("wf", Trigger::Schedule, payload(&record, t, None, t));
        let backfill = Fire::scheduled("wf", Trigger::Backfill, payload(&record, t, None, t));
        assert_eq!(backfill.run_id, on_time.run_id);
        assert_eq!(backfill.msg_id(), on_time.msg_id());
        let h = backfill.headers();
        assert_eq!(h.get("Polos-Trigger").unwrap().as_str(), "backfill");
        let back = Fire::from_message(&backfill.subject(), Some(&h), &backfill.body()).unwrap();
        assert_eq!(back.trigger, Trigger::Backfill);
    }

    #[test]
    fn manual_fires_are_unique_and_bad_messages_rejected() {
        let record = ScheduleRecord::new("wf", "u1", "0 9 * * *", "UTC");
        let t = parse_instant("2026-11-26T09:00:00Z").unwrap();
        let a = Fire::manual("wf", payload(&record, t, None, t));
        let b = Fire::manual("wf", payload(&record, t, None, t));
        assert_ne!(a.msg_id(), b.msg_id());
        assert!(Fire::from_message("polos.runs.wf", None, &a.body()).is_err());
        assert!(Fire::from_message("other.wf", Some(&a.headers()), &a.body()).is_err());
        assert!(Fire::from_message("polos.runs.wf", Some(&a.headers()), b"{").is_err());
    }
}
