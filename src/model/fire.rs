//! A fire: the message on `polos.runs.<workflow>` that asks a worker to run a workflow once.
//!
//! One type builds it (scheduler ticker, manual trigger) and parses it (workers), so the body and
//! headers of the README's contract ("The contract") have exactly one implementation.

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use thiserror::Error;

use super::error::shorten;
use super::names::{
    runs_subject, HEADER_MSG_ID, HEADER_RUN_ID, HEADER_TRIGGER, RUNS_SUBJECT_PREFIX,
};
use super::time::{format_instant, push_instant};
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
        fire_headers(self.msg_id(), self.run_id.clone(), self.trigger)
    }

    /// The SchedulePayload JSON (the same bytes as `serde_json::to_vec(&self.payload)`).
    pub fn body(&self) -> Bytes {
        let mut text = String::with_capacity(192);
        push_payload(&mut text, PayloadRef::of(&self.payload));
        Bytes::from(text)
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

/// The fields of a [`SchedulePayload`], borrowed: what the ticker has at hand when it fires,
/// without building owned strings first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadRef<'a> {
    /// See [`SchedulePayload::timestamp`].
    pub timestamp: DateTime<Utc>,
    /// See [`SchedulePayload::last_timestamp`].
    pub last_timestamp: Option<DateTime<Utc>>,
    /// See [`SchedulePayload::timezone`].
    pub timezone: &'a str,
    /// See [`SchedulePayload::schedule_id`].
    pub schedule_id: &'a str,
    /// See [`SchedulePayload::key`].
    pub key: &'a str,
    /// See [`SchedulePayload::upcoming`].
    pub upcoming: DateTime<Utc>,
}

impl<'a> PayloadRef<'a> {
    /// The fields of `payload`.
    pub fn of(payload: &'a SchedulePayload) -> Self {
        PayloadRef {
            timestamp: payload.timestamp,
            last_timestamp: payload.last_timestamp,
            timezone: &payload.timezone,
            schedule_id: &payload.schedule_id,
            key: &payload.key,
            upcoming: payload.upcoming,
        }
    }
}

/// Encodes fires into reused buffers, for publishing many at once (the ticker's firing round).
///
/// The body is written field by field instead of through serde (the bytes are the same, see
/// the tests), and bodies are cut from one buffer: serializing and allocating were the largest
/// items of a 100,000-fire round's profile (BENCHMARKS.md).
#[derive(Debug, Default)]
pub struct FireEncoder {
    /// Where a body is written first.
    text: String,
    /// Bodies are cut from here.
    bodies: BytesMut,
}

/// Fresh space the body buffer takes when it runs out.
const BODY_CHUNK: usize = 64 * 1024;

impl FireEncoder {
    /// The SchedulePayload JSON of `payload`.
    pub fn body(&mut self, payload: PayloadRef<'_>) -> Bytes {
        self.text.clear();
        push_payload(&mut self.text, payload);
        if self.bodies.capacity() - self.bodies.len() < self.text.len() {
            self.bodies.reserve(BODY_CHUNK.max(self.text.len()));
        }
        self.bodies.extend_from_slice(self.text.as_bytes());
        self.bodies.split().freeze()
    }

    /// The headers of a scheduled or catch-up fire of `schedule_id` at `timestamp`.
    pub fn scheduled_headers(
        &mut self,
        schedule_id: &str,
        timestamp: DateTime<Utc>,
        trigger: Trigger,
    ) -> HeaderMap {
        let mut msg_id = String::with_capacity(schedule_id.len() + 21);
        msg_id.push_str(schedule_id);
        msg_id.push('@');
        push_instant(&mut msg_id, timestamp, true);
        fire_headers(msg_id, run_id_for(schedule_id, timestamp), trigger)
    }
}

/// `Nats-Msg-Id`, `Polos-Run-Id`, `Polos-Trigger`.
fn fire_headers(msg_id: String, run_id: String, trigger: Trigger) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // Names from constants and values from owned strings: no copy beyond the values' own.
    headers.insert(
        HeaderName::from_static(HEADER_MSG_ID),
        HeaderValue::from(msg_id),
    );
    headers.insert(
        HeaderName::from_static(HEADER_RUN_ID),
        HeaderValue::from(run_id),
    );
    headers.insert(
        HeaderName::from_static(HEADER_TRIGGER),
        HeaderValue::from(trigger.as_str()),
    );
    headers
}

/// Appends the SchedulePayload JSON of `p`, exactly as serde_json writes a [`SchedulePayload`].
fn push_payload(out: &mut String, p: PayloadRef<'_>) {
    out.push_str("{\"timestamp\":\"");
    push_instant(out, p.timestamp, true);
    out.push_str("\",\"last_timestamp\":");
    match p.last_timestamp {
        Some(last) => {
            out.push('"');
            push_instant(out, last, true);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"timezone\":");
    push_json_str(out, p.timezone);
    out.push_str(",\"schedule_id\":");
    push_json_str(out, p.schedule_id);
    out.push_str(",\"key\":");
    push_json_str(out, p.key);
    out.push_str(",\"upcoming\":\"");
    push_instant(out, p.upcoming, true);
    out.push_str("\"}");
}

/// Appends `s` as a JSON string the way serde_json escapes it: `"` and `\`, the short forms
/// `\b \t \n \f \r`, other control characters as `\u00xx`, everything else as is.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
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

    /// Keys are any UTF-8 (quotes, backslashes, control characters, emoji): the hand-written
    /// body must be byte for byte what serde_json writes, or workers in other languages would
    /// see a different payload than before.
    fn serde_body(p: &SchedulePayload) -> Vec<u8> {
        serde_json::to_vec(p).unwrap()
    }

    #[test]
    fn encoded_body_is_serde_jsons_for_awkward_strings() {
        let t = parse_instant("2026-03-08T07:00:00Z").unwrap();
        let awkward = [
            "global",
            "",
            "quote\"and\\backslash",
            "tab\tnew\nline\r\u{8}\u{c}",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "ünïcødé ✓ 🎉",
            "</script>",
        ];
        let mut encoder = FireEncoder::default();
        for (i, key) in awkward.iter().enumerate() {
            let p = SchedulePayload {
                timestamp: t,
                last_timestamp: (i % 2 == 0).then_some(t - chrono::Duration::days(1)),
                timezone: key.to_string(),
                schedule_id: crate::model::schedule_id("wf", key),
                key: key.to_string(),
                upcoming: t + chrono::Duration::days(1),
            };
            assert_eq!(encoder.body(PayloadRef::of(&p)), serde_body(&p), "{key:?}");
            let fire = Fire::scheduled("wf", Trigger::Catchup, p.clone());
            assert_eq!(fire.body(), serde_body(&p), "{key:?}");
            assert_eq!(
                Fire::from_message("polos.runs.wf", Some(&fire.headers()), &fire.body())
                    .unwrap()
                    .payload,
                p
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn encoded_body_is_serde_jsons_for_any_key(key in ".{0,40}", zone in "\\PC{0,12}") {
            let t = parse_instant("2026-11-26T09:00:00Z").unwrap();
            let p = SchedulePayload {
                timestamp: t,
                last_timestamp: None,
                timezone: zone,
                schedule_id: "sch_x".into(),
                key,
                upcoming: t,
            };
            proptest::prop_assert_eq!(
                FireEncoder::default().body(PayloadRef::of(&p)).to_vec(),
                serde_body(&p)
            );
        }
    }

    #[test]
    fn encoder_headers_match_the_fires() {
        let record = ScheduleRecord::new("wf", "u1", "0 9 * * *", "UTC");
        let t = parse_instant("2026-11-26T09:00:00Z").unwrap();
        let fire = Fire::scheduled("wf", Trigger::Catchup, payload(&record, t, None, t));
        let encoded =
            FireEncoder::default().scheduled_headers(&record.schedule_id, t, Trigger::Catchup);
        for name in [HEADER_MSG_ID, HEADER_RUN_ID, HEADER_TRIGGER] {
            assert_eq!(encoded.get(name), fire.headers().get(name), "{name}");
        }
        assert_eq!(
            encoded.get(HEADER_MSG_ID).unwrap().as_str(),
            format!("{}@2026-11-26T09:00:00Z", record.schedule_id)
        );
    }
}
