//! The JSON values stored in the KV buckets (README, "The contract"). Field names are the contract.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::error::shorten;
use super::time::{rfc3339, rfc3339_opt};
use std::borrow::Cow;

use super::key::split_schedule_kv_key_cow;
use super::schedule_id;

/// Who owns a schedule record: the API (users) or a worker's inline declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSource {
    /// Created through `polos.schedules.upsert`, the CLI, the client or a hand-written KV value.
    #[default]
    Api,
    /// Declared in a worker's code (`schedule = "0 9 * * *"`); workers keep it in sync.
    Inline,
}

/// What the scheduler does with instants it missed while no scheduler was leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchupPolicy {
    /// One fire (trigger `catchup`) for the most recent missed instant inside the window.
    #[default]
    Latest,
    /// Every missed instant inside the window, oldest first, up to a cap.
    All,
    /// No catch-up: missed instants are only counted.
    Skip,
}

/// What a fire does when an earlier run of its schedule is still executing (Temporal's overlap
/// policies). Enforced by workers where a run starts, so it holds with many workers and across
/// scheduler failover; see `worker/overlap.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// The new run does not start: it is recorded `skipped`, naming the run it yielded to.
    #[default]
    Skip,
    /// The new run waits until the running one ends; at most one waits (a later one is skipped).
    BufferOne,
    /// Every new run waits its turn, oldest scheduled instant first (at most 1,000 waiting).
    BufferAll,
    /// Runs start at once, overlapping freely.
    AllowAll,
    /// The running run is cancelled; the new one starts once it has stopped.
    CancelOther,
}

impl OverlapPolicy {
    /// The JSON / command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::BufferOne => "buffer_one",
            OverlapPolicy::BufferAll => "buffer_all",
            OverlapPolicy::AllowAll => "allow_all",
            OverlapPolicy::CancelOther => "cancel_other",
        }
    }

    /// Every policy's spelling, for error messages and request schemas.
    pub const NAMES: &'static [&'static str] = &[
        "skip",
        "buffer_one",
        "buffer_all",
        "allow_all",
        "cancel_other",
    ];
}

/// A schedule definition in `polos_schedules` at `<workflow>.<encoded key>`.
///
/// Only `cron` is required in a stored value: a value written by hand with just
/// `{"cron": "0 8 * * *", "timezone": "America/Los_Angeles"}` is a valid schedule whose
/// workflow, key and id come from its KV key (see [`ScheduleRecord::from_kv`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// `sch_` + base32 of SHA-256(workflow, key); derived, never chosen.
    #[serde(default)]
    pub schedule_id: String,
    /// The workflow this schedule fires.
    #[serde(default)]
    pub workflow: String,
    /// The schedule key (user id or `global`), verbatim.
    #[serde(default)]
    pub key: String,
    /// The 5-field cron expression as the user wrote it.
    pub cron: String,
    /// IANA zone the cron's wall clock is read in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A paused schedule keeps its definition but does not fire.
    #[serde(default)]
    pub paused: bool,
    /// Free text for operators (why it was paused, who asked for it).
    #[serde(default)]
    pub note: Option<String>,
    /// Who owns the record; workers only touch `inline` ones.
    #[serde(default)]
    pub source: ScheduleSource,
    /// When the record was first created.
    #[serde(default, with = "rfc3339_opt")]
    pub created_at: Option<DateTime<Utc>>,
    /// When the record was last changed.
    #[serde(default, with = "rfc3339_opt")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Per-schedule catch-up policy; `None` uses the scheduler's configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup: Option<CatchupPolicy>,
    /// Per-schedule catch-up window in seconds; `None` uses the scheduler's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_window_secs: Option<u64>,
    /// What a fire does while an earlier run of this schedule still executes; `None` is
    /// [`OverlapPolicy::Skip`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<OverlapPolicy>,
    /// Pause the schedule (with a note naming the run) when one of its runs fails after its
    /// last attempt; `None` is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_on_failure: Option<bool>,
    /// Each fire is published this many seconds after its instant at most: a deterministic
    /// offset in `[0, jitter_secs)` (see [`jitter_offset_ms`](super::jitter_offset_ms)); `None`
    /// uses the scheduler's `jitter_secs`, `0` turns jitter off for this schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_secs: Option<u64>,
    /// No instant before this one fires (nor counts as missed).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// No instant after this one fires: past it the schedule stays stored and shows as ended.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,
    /// The schedule ends once the scheduler has published this many fires of its cron (state
    /// `fires`: triggers `schedule` and `catchup`; manual triggers and back-fills do not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u64>,
    /// Back-fills requested through `polos.schedules.backfill` and not yet known to be done,
    /// oldest first; the scheduler records its progress in the state record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backfills: Vec<Backfill>,
}

/// One back-fill request: every instant of the schedule's cron in `[from, to]` fires once, with
/// trigger `backfill` and the run id and `Nats-Msg-Id` a scheduled fire of that instant has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    /// Numbers the schedule's requests in the order they were made (1, 2, …).
    pub seq: u64,
    /// The first instant of the range (inclusive).
    #[serde(with = "rfc3339")]
    pub from: DateTime<Utc>,
    /// The last instant of the range (inclusive).
    #[serde(with = "rfc3339")]
    pub to: DateTime<Utc>,
    /// When it was requested. Instants after it are never back-filled (they are the
    /// scheduler's own); a hand-written request without it is cut at the record's write time.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<DateTime<Utc>>,
}

/// How far the scheduler has worked off a schedule's back-fills (state `backfill`): every
/// request with a lower `seq` is done, and request `seq` has fired every instant up to
/// `through`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackfillProgress {
    /// The request being worked off (or the last one finished).
    pub seq: u64,
    /// Its last back-filled instant; `null` before the first.
    #[serde(default, with = "rfc3339_opt")]
    pub through: Option<DateTime<Utc>>,
}

/// Why a schedule no longer fires although it is stored and not paused (state `ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Its next instant is after its `end_at`.
    EndAt,
    /// It has fired `max_runs` times.
    MaxRuns,
}

impl Ended {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::EndAt => "end_at",
            Ended::MaxRuns => "max_runs",
        }
    }
}

fn default_timezone() -> String {
    "UTC".to_string()
}

/// Why a stored value could not be read as a record.
#[derive(Debug, Error)]
pub enum RecordError {
    /// The KV key is not `<workflow>.<encoded key>` with a valid workflow and key.
    #[error("KV key {kv_key:?} is not <workflow>.<key> with a valid workflow id and key; delete it or re-create the schedule through the API")]
    BadKvKey {
        /// The offending KV key.
        kv_key: String,
    },
    /// The value is not JSON of the expected shape.
    #[error(
        "value at {kv_key:?} is not a valid {what} record: {}; write JSON like {example}",
        shorten(&.source.to_string(), 300)
    )]
    BadJson {
        /// The KV key whose value is broken.
        kv_key: String,
        /// Which record type was expected.
        what: &'static str,
        /// An example of a valid value.
        example: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The value names a different workflow or key than its KV key.
    #[error("value at {kv_key:?} says {field} {found:?} but its KV key says {expected:?}; remove the field or fix the key")]
    Mismatch {
        /// The KV key.
        kv_key: String,
        /// `workflow`, `key` or `schedule_id`.
        field: &'static str,
        /// What the value says.
        found: String,
        /// What the KV key implies.
        expected: String,
    },
}

impl ScheduleRecord {
    /// A new API record with defaults for everything but the identity and the cron.
    pub fn new(workflow: &str, key: &str, cron: &str, timezone: &str) -> Self {
        ScheduleRecord {
            schedule_id: schedule_id(workflow, key),
            workflow: workflow.to_string(),
            key: key.to_string(),
            cron: cron.to_string(),
            timezone: timezone.to_string(),
            paused: false,
            note: None,
            source: ScheduleSource::Api,
            created_at: None,
            updated_at: None,
            catchup: None,
            catchup_window_secs: None,
            overlap: None,
            pause_on_failure: None,
            jitter_secs: None,
            start_at: None,
            end_at: None,
            max_runs: None,
            backfills: Vec::new(),
        }
    }

    /// Reads a stored value, filling `workflow`, `key` and `schedule_id` from the KV key.
    ///
    /// The KV key is authoritative; a value that names another workflow, key or id is refused
    /// rather than silently moved. Cron and zone are *not* validated here (that is the cron
    /// layer's job, so its error message can name the field).
    pub fn from_kv(kv_key: &str, value: &[u8]) -> Result<Self, RecordError> {
        let mut record = Self::from_kv_without_id(kv_key, value)?;
        if record.schedule_id.is_empty() {
            record.schedule_id = schedule_id(&record.workflow, &record.key);
        }
        Ok(record)
    }

    /// [`ScheduleRecord::from_kv`] with the same validation and errors, but `schedule_id` is
    /// left empty unless the value carries one (then it is checked as usual). The SHA-256
    /// behind the id is a large share of parsing a schedule, and a reader that derives the id
    /// on demand need not pay it per key.
    pub fn from_kv_without_id(kv_key: &str, value: &[u8]) -> Result<Self, RecordError> {
        ScheduleRecordRef::from_kv(kv_key, value).map(ScheduleRecordRef::into_owned)
    }
}

/// A stored schedule value read without copying its strings: the same fields, defaults and
/// errors as [`ScheduleRecord`], its text borrowed from the value (copied only where JSON
/// escapes it). [`ScheduleRecord::from_kv`] is built on it, so there is one reading of a
/// stored value; the ticker reads a million of them at a cold start and keeps only a few
/// fields, so the `String`s it would allocate and free were a fifth of its work there
/// (BENCHMARKS.md). `tests::the_borrowed_view_reads_like_the_record` holds the two derive
/// lists together.
#[derive(Debug, Deserialize)]
// Errors name the type a stored value is ("… expected struct ScheduleRecord …").
#[serde(rename = "ScheduleRecord", expecting = "struct ScheduleRecord")]
pub(crate) struct ScheduleRecordRef<'a> {
    /// As [`ScheduleRecord::schedule_id`]; after [`ScheduleRecordRef::from_kv`] it is empty,
    /// or checked against the KV key.
    #[serde(default, borrow)]
    pub schedule_id: Cow<'a, str>,
    /// As [`ScheduleRecord::workflow`]; after `from_kv` the KV key's.
    #[serde(default, borrow)]
    pub workflow: Cow<'a, str>,
    /// As [`ScheduleRecord::key`]; after `from_kv` the KV key's.
    #[serde(default, borrow)]
    pub key: Cow<'a, str>,
    /// As [`ScheduleRecord::cron`].
    #[serde(borrow)]
    pub cron: Cow<'a, str>,
    /// As [`ScheduleRecord::timezone`].
    #[serde(default = "utc", borrow)]
    pub timezone: Cow<'a, str>,
    /// As [`ScheduleRecord::paused`].
    #[serde(default)]
    pub paused: bool,
    /// As [`ScheduleRecord::note`].
    #[serde(default, borrow)]
    pub note: Option<Cow<'a, str>>,
    /// As [`ScheduleRecord::source`].
    #[serde(default)]
    pub source: ScheduleSource,
    /// As [`ScheduleRecord::created_at`].
    #[serde(default, with = "rfc3339_opt")]
    pub created_at: Option<DateTime<Utc>>,
    /// As [`ScheduleRecord::updated_at`].
    #[serde(default, with = "rfc3339_opt")]
    pub updated_at: Option<DateTime<Utc>>,
    /// As [`ScheduleRecord::catchup`].
    #[serde(default)]
    pub catchup: Option<CatchupPolicy>,
    /// As [`ScheduleRecord::catchup_window_secs`].
    #[serde(default)]
    pub catchup_window_secs: Option<u64>,
    /// As [`ScheduleRecord::overlap`].
    #[serde(default)]
    pub overlap: Option<OverlapPolicy>,
    /// As [`ScheduleRecord::pause_on_failure`].
    #[serde(default)]
    pub pause_on_failure: Option<bool>,
    /// As [`ScheduleRecord::jitter_secs`].
    #[serde(default)]
    pub jitter_secs: Option<u64>,
    /// As [`ScheduleRecord::start_at`].
    #[serde(default, with = "rfc3339_opt")]
    pub start_at: Option<DateTime<Utc>>,
    /// As [`ScheduleRecord::end_at`].
    #[serde(default, with = "rfc3339_opt")]
    pub end_at: Option<DateTime<Utc>>,
    /// As [`ScheduleRecord::max_runs`].
    #[serde(default)]
    pub max_runs: Option<u64>,
    /// As [`ScheduleRecord::backfills`].
    #[serde(default)]
    pub backfills: Vec<Backfill>,
}

fn utc() -> Cow<'static, str> {
    Cow::Borrowed("UTC")
}

impl<'a> ScheduleRecordRef<'a> {
    /// Reads a stored value the way [`ScheduleRecord::from_kv_without_id`] does (same checks,
    /// same errors): workflow and key come from the KV key, a value naming others is refused,
    /// `schedule_id` is empty unless the value carries one (then it is checked).
    pub fn from_kv(kv_key: &'a str, value: &'a [u8]) -> Result<Self, RecordError> {
        let (workflow, key) =
            split_schedule_kv_key_cow(kv_key).ok_or_else(|| RecordError::BadKvKey {
                kv_key: kv_key.to_string(),
            })?;
        let mut record: ScheduleRecordRef<'a> =
            serde_json::from_slice(value).map_err(|source| RecordError::BadJson {
                kv_key: kv_key.to_string(),
                what: "schedule",
                example: r#"{"cron":"0 8 * * *","timezone":"America/Los_Angeles"}"#,
                source,
            })?;
        let id = if record.schedule_id.is_empty() {
            String::new()
        } else {
            schedule_id(workflow, &key)
        };
        for (field, found, expected) in [
            ("workflow", &*record.workflow, workflow),
            ("key", &*record.key, &*key),
            ("schedule_id", &*record.schedule_id, id.as_str()),
        ] {
            if !found.is_empty() && found != expected {
                return Err(RecordError::Mismatch {
                    kv_key: kv_key.to_string(),
                    field,
                    // The value may be up to a NATS message long; the error is stored in a
                    // state record and must fit in one.
                    found: shorten(found, 120),
                    expected: expected.to_string(),
                });
            }
        }
        record.workflow = Cow::Borrowed(workflow);
        record.key = key;
        record.schedule_id = Cow::Owned(id);
        Ok(record)
    }

    /// The owned record.
    pub fn into_owned(self) -> ScheduleRecord {
        ScheduleRecord {
            schedule_id: self.schedule_id.into_owned(),
            workflow: self.workflow.into_owned(),
            key: self.key.into_owned(),
            cron: self.cron.into_owned(),
            timezone: self.timezone.into_owned(),
            paused: self.paused,
            note: self.note.map(Cow::into_owned),
            source: self.source,
            created_at: self.created_at,
            updated_at: self.updated_at,
            catchup: self.catchup,
            catchup_window_secs: self.catchup_window_secs,
            overlap: self.overlap,
            pause_on_failure: self.pause_on_failure,
            jitter_secs: self.jitter_secs,
            start_at: self.start_at,
            end_at: self.end_at,
            max_runs: self.max_runs,
            backfills: self.backfills,
        }
    }
}

/// What the scheduler knows about a schedule, in `polos_schedule_state` (same key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The scheduled instant of the most recent fire (`SchedulePayload.timestamp`).
    #[serde(default, with = "rfc3339_opt")]
    pub last_timestamp: Option<DateTime<Utc>>,
    /// The next instant the scheduler will fire, `null` when paused or invalid.
    #[serde(default, with = "rfc3339_opt")]
    pub next: Option<DateTime<Utc>>,
    /// How many fires were published for this schedule.
    #[serde(default)]
    pub fires: u64,
    /// How many due instants were not fired (scheduler down beyond the catch-up policy).
    #[serde(default)]
    pub missed: u64,
    /// Run id of the most recent fire.
    #[serde(default)]
    pub last_run_id: Option<String>,
    /// Why the schedule cannot fire (bad cron, bad zone, unreadable value), `null` when healthy.
    #[serde(default)]
    pub error: Option<String>,
    /// The `polos_schedules` revision this state describes. A scheduler taking over compares it
    /// with the record it loaded: equal means the previous leader planned this very version
    /// (continue at `next`); different means the record changed while no leader ran, so the
    /// change takes effect from the moment it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_revision: Option<u64>,
    /// How many back-filled fires were published (instants that had already run are published
    /// too; the worker answers them from the run record without running them again).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backfilled: u64,
    /// How far the record's `backfills` have been worked off; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillProgress>,
    /// Set when the schedule stopped firing for good: past its `end_at`, or out of `max_runs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
    /// A fire of a schedule with `max_runs` that was decided and recorded here *before* it was
    /// published, so that a scheduler taking over after a crash publishes it (again: the stream
    /// or the run record absorbs a copy) instead of counting it as missed; `max_runs` stays
    /// exact. Cleared once the fire is stored.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub pending: Option<DateTime<Utc>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A workflow's registration in `polos_workflows`, written by workers at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// The workflow id.
    pub workflow: String,
    /// Whether the API may create schedules for it.
    pub schedulable: bool,
    /// The inline schedule its code declares, if any.
    pub schedule: Option<InlineSchedule>,
    /// When a worker last registered it.
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// An inline schedule as declared in code: cron plus zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineSchedule {
    /// The 5-field cron expression.
    pub cron: String,
    /// IANA zone; `UTC` when the code does not say.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A cron instant fired on time.
    Schedule,
    /// A missed instant fired when a scheduler took the lease.
    Catchup,
    /// `polos.schedules.trigger` / `polos schedules trigger`.
    Manual,
    /// An instant of the cron fired by `polos.schedules.backfill` / `polos schedules backfill`.
    Backfill,
}

impl Trigger {
    /// The header / JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Catchup => "catchup",
            Trigger::Manual => "manual",
            Trigger::Backfill => "backfill",
        }
    }

    /// Parses the header spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "schedule" => Some(Trigger::Schedule),
            "catchup" => Some(Trigger::Catchup),
            "manual" => Some(Trigger::Manual),
            "backfill" => Some(Trigger::Backfill),
            _ => None,
        }
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A worker is executing it (or died executing it and redelivery is pending).
    Running,
    /// The handler returned `Ok`; `output` holds its value.
    Completed,
    /// Retries are exhausted or the error was terminal; `error` says why.
    Failed,
    /// Stopped by `polos.run.cancel` (or an overlap policy `cancel_other`) at a step boundary,
    /// or before it started; never retried.
    Cancelled,
    /// Never started: an earlier run of its schedule was still executing and the overlap policy
    /// said skip; `yielded_to` names that run.
    Skipped,
}

impl RunStatus {
    /// The JSON / command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
        }
    }

    /// Parses the JSON spelling.
    pub fn parse(text: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Skipped,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the run has its final status: its record is never written again.
    pub fn is_finished(self) -> bool {
        self != RunStatus::Running
    }
}

/// A run in `polos_runs` at `<workflow>.<run_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `<schedule_id>-<YYYYMMDDTHHMMSSZ>` or `<schedule_id>-m<nuid>`.
    pub run_id: String,
    /// The workflow that ran.
    pub workflow: String,
    /// The schedule that fired it.
    pub schedule_id: String,
    /// The schedule key.
    pub key: String,
    /// What started the run.
    pub trigger: Trigger,
    /// The payload's `timestamp`.
    #[serde(with = "rfc3339")]
    pub scheduled_for: DateTime<Utc>,
    /// Current status.
    pub status: RunStatus,
    /// 1 for the first delivery, incremented on each retry.
    pub attempt: u32,
    /// When the current attempt started.
    #[serde(with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// When it completed or failed.
    #[serde(default, with = "rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The handler's return value once completed.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// The last error, if any.
    #[serde(default)]
    pub error: Option<String>,
    /// The `POLOS_RUNS` stream sequence of the fire the current attempt executes. A second
    /// message for the same run (a fire published again after the duplicate window) defers to
    /// this one while it is still in the stream, so it cannot take over a live execution.
    /// Absent in records written before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_seq: Option<u64>,
    /// For a `skipped` run: the run of the same schedule that was executing and made it skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yielded_to: Option<String>,
}

impl RunRecord {
    /// The first record of a run of `fire`, delivered as `POLOS_RUNS` sequence `fire_seq`:
    /// `status` at `attempt`, started at `at`; nothing finished, no output, no error.
    pub fn of_fire(
        fire: &super::Fire,
        fire_seq: u64,
        status: RunStatus,
        attempt: u32,
        at: DateTime<Utc>,
    ) -> RunRecord {
        RunRecord {
            run_id: fire.run_id.clone(),
            workflow: fire.workflow.clone(),
            schedule_id: fire.payload.schedule_id.clone(),
            key: fire.payload.key.clone(),
            trigger: fire.trigger,
            scheduled_for: fire.payload.timestamp,
            status,
            attempt,
            started_at: at,
            finished_at: None,
            output: None,
            error: None,
            fire_seq: Some(fire_seq),
            yielded_to: None,
        }
    }
}

/// One run named by an overlap record: the one executing, or one waiting its turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlapRun {
    /// The run id.
    pub run_id: String,
    /// Its nominal instant (`SchedulePayload.timestamp`): buffered runs start in this order.
    #[serde(with = "rfc3339")]
    pub scheduled_for: DateTime<Utc>,
    /// The `POLOS_RUNS` stream sequence of its fire. While that message is in the stream the run
    /// can still execute (it is running, waiting for a retry, or will be redelivered after its
    /// worker died); once it is gone, the entry is stale and is dropped by the next fire.
    pub fire_seq: u64,
    /// When it became the active run (absent for a waiting one).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339_opt")]
    pub since: Option<DateTime<Utc>>,
}

/// What the overlap policy knows about one schedule, in `polos_overlap` at the schedule's key
/// (`<workflow>.<encoded key>`). Written by workers with compare-and-swap; only schedules whose
/// policy is not `allow_all` have one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlapRecord {
    /// The run executing now, `null` when the schedule is idle.
    #[serde(default)]
    pub active: Option<OverlapRun>,
    /// Runs waiting for the active one to end (`buffer_one`, `buffer_all`, `cancel_other`),
    /// in the order they will start.
    #[serde(default)]
    pub waiting: Vec<OverlapRun>,
    /// How many runs of this schedule were skipped because another one was executing.
    #[serde(default)]
    pub skipped: u64,
    /// When a worker last changed the record.
    #[serde(default, with = "rfc3339_opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// A request to cancel a run, in `polos_cancels` at `<workflow>.<run_id>` (kept 30 days, like
/// the run). Written by the API (`polos.run.cancel`) or by a worker applying `cancel_other`;
/// every worker of the workflow follows these keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRecord {
    /// The run to cancel.
    pub run_id: String,
    /// Its workflow.
    pub workflow: String,
    /// When cancelling was asked for.
    #[serde(with = "rfc3339")]
    pub requested_at: DateTime<Utc>,
    /// Why, as the requester said (recorded in the run's `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A durable step result in `polos_steps` at `<run_id>.<encoded step>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's serialized output.
    pub output: serde_json::Value,
    /// When the step finished.
    #[serde(with = "rfc3339")]
    pub completed_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ScheduleRecordRef` (the one reader of stored values) against the serde derive of
    /// `ScheduleRecord`, an independent decoder of the same contract: same record for every
    /// value the derive accepts (identity fields filled from the KV key), the same JSON error
    /// for every value it refuses. Fails when a field, default, type or instant format of one
    /// list drifts from the other.
    #[test]
    fn the_borrowed_view_reads_like_the_record() {
        let kv_key = "wf.user_1";
        let id = schedule_id("wf", "user_1");
        let values = [
            r#"{"cron":"0 8 * * *"}"#.to_string(),
            r#"{"cron":"0 8 * * *","timezone":"Europe/Berlin"}"#.to_string(),
            // Escapes: the view copies these instead of borrowing.
            r#"{"cron":"0 8 * * \u002a","timezone":"Europe\/Berlin","note":"line\nbreak \"q\""}"#.to_string(),
            format!(
                r#"{{"schedule_id":"{id}","workflow":"wf","key":"user_1","cron":"*/5 * * * *","timezone":"UTC","paused":true,"note":"n","source":"inline","created_at":"2026-05-01T08:00:00Z","updated_at":"2026-05-01T10:00:00+02:00","catchup":"all","catchup_window_secs":60,"overlap":"buffer_all","pause_on_failure":true,"jitter_secs":30,"start_at":"2026-05-01T00:00:00Z","end_at":"2026-06-01T00:00:00.5Z","max_runs":7,"backfills":[{{"seq":1,"from":"2026-04-01T00:00:00Z","to":"2026-04-02T00:00:00Z"}}],"unknown":{{"x":[1,2]}}}}"#
            ),
            r#"{"cron":"0 8 * * *","note":null,"created_at":null,"catchup":null,"start_at":null}"#.to_string(),
            // Refused, each for one field.
            r#"{"timezone":"UTC"}"#.to_string(),
            r#"{"cron":5}"#.to_string(),
            r#"{"cron":"0 8 * * *","timezone":null}"#.to_string(),
            r#"{"cron":"0 8 * * *","timezone":7}"#.to_string(),
            r#"{"cron":"0 8 * * *","paused":"yes"}"#.to_string(),
            r#"{"cron":"0 8 * * *","note":["x"]}"#.to_string(),
            r#"{"cron":"0 8 * * *","source":"robot"}"#.to_string(),
            r#"{"cron":"0 8 * * *","created_at":"yesterday"}"#.to_string(),
            r#"{"cron":"0 8 * * *","updated_at":1777000000}"#.to_string(),
            r#"{"cron":"0 8 * * *","start_at":"2026-13-01T00:00:00Z"}"#.to_string(),
            r#"{"cron":"0 8 * * *","end_at":{}}"#.to_string(),
            r#"{"cron":"0 8 * * *","catchup":"sometimes"}"#.to_string(),
            r#"{"cron":"0 8 * * *","catchup_window_secs":-1}"#.to_string(),
            r#"{"cron":"0 8 * * *","overlap":"queue"}"#.to_string(),
            r#"{"cron":"0 8 * * *","jitter_secs":1.5}"#.to_string(),
            r#"{"cron":"0 8 * * *","max_runs":"3"}"#.to_string(),
            r#"{"cron":"0 8 * * *","backfills":[{"seq":1,"from":"x","to":"2026-04-02T00:00:00Z"}]}"#.to_string(),
            r#"{"cron":"0 8 * * *","cron":"0 9 * * *"}"#.to_string(),
            r#"{"cron":"0 8 * * *""#.to_string(),
            r#"["0 8 * * *"]"#.to_string(),
            "null".to_string(),
        ];
        for value in &values {
            let view = ScheduleRecordRef::from_kv(kv_key, value.as_bytes());
            match serde_json::from_str::<ScheduleRecord>(value) {
                Ok(mut expected) => {
                    expected.workflow = "wf".into();
                    expected.key = "user_1".into();
                    let view = view.unwrap_or_else(|e| panic!("{value}: {e}"));
                    if expected.schedule_id.is_empty() {
                        assert_eq!(view.schedule_id, "", "{value}");
                    }
                    expected.schedule_id = view.schedule_id.to_string();
                    assert_eq!(view.into_owned(), expected, "{value}");
                }
                Err(e) => {
                    let view = view.err().unwrap_or_else(|| panic!("{value} was read"));
                    // The one difference: an array in place of the object is refused without
                    // the derive's field count.
                    let e = e.to_string().replace(" with 19 elements", "");
                    assert!(
                        view.to_string().contains(&e),
                        "{value}: {view} does not carry {e}"
                    );
                }
            }
        }
        // Borrowed where the JSON does not escape: no copy of the text.
        let plain = br#"{"cron":"0 8 * * *","timezone":"Asia/Tokyo"}"#;
        let view = ScheduleRecordRef::from_kv(kv_key, plain).unwrap();
        assert!(matches!(view.cron, Cow::Borrowed(_)));
        assert!(matches!(view.timezone, Cow::Borrowed(_)));
    }

    #[test]
    fn hand_written_value_gets_defaults_and_identity() {
        let r = ScheduleRecord::from_kv(
            "user-reminder.user_123",
            br#"{"cron":"0 8 * * *","timezone":"America/Los_Angeles"}"#,
        )
        .unwrap();
        assert_eq!(r.workflow, "user-reminder");
        assert_eq!(r.key, "user_123");
        assert_eq!(r.schedule_id, schedule_id("user-reminder", "user_123"));
        assert_eq!(r.source, ScheduleSource::Api);
        assert!(!r.paused);
        let only_cron = ScheduleRecord::from_kv("wf.global", br#"{"cron":"0 8 * * *"}"#).unwrap();
        assert_eq!(only_cron.timezone, "UTC");
    }

    #[test]
    fn broken_values_are_named() {
        let e = ScheduleRecord::from_kv("wf.k", b"not json").unwrap_err();
        assert!(e.to_string().contains("wf.k"), "{e}");
        let e = ScheduleRecord::from_kv("wf.k", br#"{"timezone":"UTC"}"#).unwrap_err();
        assert!(e.to_string().contains("cron"), "{e}");
        let e = ScheduleRecord::from_kv("wf.k", br#"{"cron":"* * * * *","workflow":"other"}"#)
            .unwrap_err();
        assert!(matches!(
            e,
            RecordError::Mismatch {
                field: "workflow",
                ..
            }
        ));
        assert!(matches!(
            ScheduleRecord::from_kv("no-dot", br#"{"cron":"* * * * *"}"#),
            Err(RecordError::BadKvKey { .. })
        ));
    }

    #[test]
    fn record_json_has_contract_fields() {
        let mut r = ScheduleRecord::new("wf", "global", "0 9 * * *", "UTC");
        r.created_at = Some(crate::model::time::parse_instant("2026-01-01T00:00:00Z").unwrap());
        let v = serde_json::to_value(&r).unwrap();
        for f in [
            "schedule_id",
            "workflow",
            "key",
            "cron",
            "timezone",
            "paused",
            "note",
            "source",
            "created_at",
            "updated_at",
        ] {
            assert!(v.get(f).is_some(), "missing {f}: {v}");
        }
        assert_eq!(v["source"], "api");
        assert_eq!(v["created_at"], "2026-01-01T00:00:00Z");
        let s = serde_json::to_value(ScheduleState::default()).unwrap();
        for f in [
            "last_timestamp",
            "next",
            "fires",
            "missed",
            "last_run_id",
            "error",
        ] {
            assert!(s.get(f).is_some(), "missing {f}: {s}");
        }
    }
}
