//! Request and reply bodies of every endpoint (README, "The contract"). The Rust client serializes the same
//! types the service decodes, so the two cannot drift apart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(feature = "scheduler")]
use super::decode::{ApiRequest, Field, Kind};
use crate::model::{
    CatchupPolicy, OverlapPolicy, OverlapRun, RunStatus, ScheduleRecord, ScheduleState, Trigger,
    WorkflowRecord, DEFAULT_KEY,
};
use crate::store::InvalidEntry;

fn default_timezone() -> String {
    "UTC".to_string()
}

fn default_key() -> String {
    DEFAULT_KEY.to_string()
}

/// `polos.schedules.upsert`: create or update the schedule of `workflow` + `key`.
///
/// Optional fields left out (`paused`, `note`, `catchup`, `catchup_window_secs`, `overlap`,
/// `pause_on_failure`) keep the existing record's value on an update, so re-running a program's
/// `create` does not un-pause a schedule an operator paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    /// The workflow to fire.
    pub workflow: String,
    /// 5-field cron expression.
    pub cron: String,
    /// IANA zone of the cron's wall clock; `UTC` by default.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The schedule key (a user id, …); `global` by default.
    #[serde(default = "default_key")]
    pub key: String,
    /// Store the schedule paused (or un-pause it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What to do with instants missed while no scheduler ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup: Option<CatchupPolicy>,
    /// How far back catch-up looks, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_window_secs: Option<u64>,
    /// What a fire does while an earlier run of the schedule still executes (default `skip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<OverlapPolicy>,
    /// Pause the schedule when one of its runs fails after its last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_on_failure: Option<bool>,
    /// Delay each fire by a deterministic offset in `[0, jitter_secs)` (at most 86,400); `0`
    /// turns the scheduler's default jitter off for this schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_secs: Option<u64>,
    /// An RFC 3339 instant: no instant before it fires. `""` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// An RFC 3339 instant: no instant after it fires (the schedule then shows as ended).
    /// `""` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
    /// End the schedule after this many fires of its cron; `0` removes the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u64>,
}

impl UpsertRequest {
    /// A request for the `global` schedule of `workflow` in UTC; set the public fields for more.
    ///
    /// ```
    /// let request = polos::api::UpsertRequest {
    ///     timezone: "America/Los_Angeles".into(),
    ///     key: "user_123".into(),
    ///     ..polos::api::UpsertRequest::new("user-reminder", "0 8 * * *")
    /// };
    /// // On the wire: the contract's field names, the optional fields left out.
    /// assert_eq!(
    ///     serde_json::to_string(&request).unwrap(),
    ///     r#"{"workflow":"user-reminder","cron":"0 8 * * *","timezone":"America/Los_Angeles","key":"user_123"}"#
    /// );
    /// // Left alone, the contract's defaults: UTC and the key `global`.
    /// let plain = polos::api::UpsertRequest::new("daily-report", "0 9 * * *");
    /// assert_eq!((plain.timezone.as_str(), plain.key.as_str()), ("UTC", "global"));
    /// ```
    pub fn new(workflow: &str, cron: &str) -> UpsertRequest {
        UpsertRequest {
            workflow: workflow.to_string(),
            cron: cron.to_string(),
            timezone: default_timezone(),
            key: default_key(),
            paused: None,
            note: None,
            catchup: None,
            catchup_window_secs: None,
            overlap: None,
            pause_on_failure: None,
            jitter_secs: None,
            start_at: None,
            end_at: None,
            max_runs: None,
        }
    }
}

#[cfg(feature = "scheduler")]
impl ApiRequest for UpsertRequest {
    const EXAMPLE: &'static str = r#"{"workflow":"user-reminder","cron":"0 8 * * *","timezone":"America/Los_Angeles","key":"user_123"}"#;
    const FIELDS: &'static [Field] = &[
        Field::required("workflow", Kind::String),
        Field::required("cron", Kind::String),
        Field::optional("timezone", Kind::String),
        Field::optional("key", Kind::String),
        Field::optional("paused", Kind::Bool),
        Field::optional("note", Kind::String),
        Field::optional("catchup", Kind::OneOf(&["latest", "all", "skip"])),
        Field::optional("catchup_window_secs", Kind::Uint),
        Field::optional("overlap", Kind::OneOf(OverlapPolicy::NAMES)),
        Field::optional("pause_on_failure", Kind::Bool),
        Field::optional("jitter_secs", Kind::Uint),
        Field::optional("start_at", Kind::String),
        Field::optional("end_at", Kind::String),
        Field::optional("max_runs", Kind::Uint),
    ];
}

/// The reply to an upsert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertReply {
    /// The schedule's id: the same for every upsert of one workflow + key.
    pub schedule_id: String,
    /// `true` when the schedule did not exist before.
    pub created: bool,
    /// The next 5 instants of the cron (whether or not the schedule is paused).
    #[serde(with = "rfc3339_vec")]
    pub next: Vec<DateTime<Utc>>,
    /// Set when no worker has registered the workflow yet: the schedule is stored, and its fires
    /// wait in the stream until a worker for it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Notes on the schedule itself, left out when there are none: what each daylight-saving
    /// change of the next 12 months does to it (`"02:30 does not exist on 2027-03-14 in
    /// America/New_York: fires at 03:00"`), and the advice that a schedule firing every minute
    /// is better served by events or queues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `get`, `delete` and `trigger`: names one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// The workflow.
    pub workflow: String,
    /// The schedule key; `global` by default.
    #[serde(default = "default_key")]
    pub key: String,
}

#[cfg(feature = "scheduler")]
impl ApiRequest for KeyRequest {
    const EXAMPLE: &'static str = r#"{"workflow":"user-reminder","key":"user_123"}"#;
    const FIELDS: &'static [Field] = &[
        Field::required("workflow", Kind::String),
        Field::optional("key", Kind::String),
    ];
}

/// `backfill`: fire every instant of a schedule's cron in `[from, to]` (both inclusive), with
/// trigger `backfill` and the run ids of scheduled fires, so instants that already ran do not
/// run again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// The workflow.
    pub workflow: String,
    /// The schedule key; `global` by default.
    #[serde(default = "default_key")]
    pub key: String,
    /// The first instant of the range, RFC 3339 (any offset).
    pub from: String,
    /// The last instant of the range, RFC 3339; not in the future.
    pub to: String,
}

#[cfg(feature = "scheduler")]
impl ApiRequest for BackfillRequest {
    const EXAMPLE: &'static str = r#"{"workflow":"daily-report","key":"global","from":"2026-05-01T00:00:00Z","to":"2026-05-07T23:59:59Z"}"#;
    const FIELDS: &'static [Field] = &[
        Field::required("workflow", Kind::String),
        Field::optional("key", Kind::String),
        Field::required("from", Kind::String),
        Field::required("to", Kind::String),
    ];
}

/// The reply to `backfill`: what was queued. The scheduler works it off behind on-time fires
/// (at `scheduler.backfill_rate`); `polos schedules get` shows its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillReply {
    /// The schedule's id.
    pub schedule_id: String,
    /// The request's number among the schedule's back-fills (state `backfill.seq` reaches it).
    pub seq: u64,
    /// How many instants will fire.
    pub instants: u64,
    /// The first of them.
    #[serde(with = "crate::model::time::rfc3339")]
    pub first: DateTime<Utc>,
    /// The last of them.
    #[serde(with = "crate::model::time::rfc3339")]
    pub last: DateTime<Utc>,
}

/// `pause` and `resume`: names one schedule, optionally with a note saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// The workflow.
    pub workflow: String,
    /// The schedule key; `global` by default.
    #[serde(default = "default_key")]
    pub key: String,
    /// Replaces the record's note when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[cfg(feature = "scheduler")]
impl ApiRequest for PauseRequest {
    const EXAMPLE: &'static str =
        r#"{"workflow":"user-reminder","key":"user_123","note":"user on holiday"}"#;
    const FIELDS: &'static [Field] = &[
        Field::required("workflow", Kind::String),
        Field::optional("key", Kind::String),
        Field::optional("note", Kind::String),
    ];
}

/// `list`: every schedule, or those of one workflow, one page at a time.
///
/// A reply must fit in one NATS message (1 MiB by default), so it holds at most `limit`
/// entries (valid and invalid together, in KV key order); when more remain, the reply's
/// `next_after` is the `after` of the next page. [`crate::schedules::list`] follows the pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Only this workflow's schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Start after this KV key (the previous reply's `next_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Most entries in the reply; at most (and by default) [`MAX_LIST_PAGE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// The largest page `list` replies with: 500 entries of at most ~1.5 KiB each stay well under
/// the 1 MiB default max payload.
pub const MAX_LIST_PAGE: u64 = 500;

#[cfg(feature = "scheduler")]
impl ApiRequest for ListRequest {
    const EXAMPLE: &'static str = r#"{"workflow":"user-reminder"}"#;
    const FIELDS: &'static [Field] = &[
        Field::optional("workflow", Kind::String),
        Field::optional("after", Kind::String),
        Field::optional("limit", Kind::Uint),
    ];
    const EMPTY_OK: bool = true;
}

/// `workflows.list`: no parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsRequest {}

#[cfg(feature = "scheduler")]
impl ApiRequest for WorkflowsRequest {
    const EXAMPLE: &'static str = "{}";
    const FIELDS: &'static [Field] = &[];
    const EMPTY_OK: bool = true;
}

/// How often a schedule fired, missed, skipped and back-filled (in `get`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleCounters {
    /// Fires published (the state record's `fires`).
    pub fired: u64,
    /// Instants not fired (the state record's `missed`).
    pub missed: u64,
    /// Runs not started because another run of the schedule was executing (`polos_overlap`).
    pub skipped: u64,
    /// Fires published by a backfill (the state record's `backfilled`; `null` from a scheduler
    /// that does not count them).
    #[serde(default)]
    pub backfilled: Option<u64>,
}

/// One recent run of a schedule (in `get`): a nominal instant of the cron and its run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRun {
    /// `<schedule_id>-<YYYYMMDDTHHMMSSZ>`.
    pub run_id: String,
    /// The nominal instant.
    #[serde(with = "crate::model::time::rfc3339")]
    pub scheduled_for: DateTime<Utc>,
    /// The run's status; `null` when it has no record (not fired, still queued for a worker,
    /// or older than the runs' 30 days).
    pub status: Option<RunStatus>,
    /// What fired it (`schedule`, `catchup`, …), when recorded.
    #[serde(default)]
    pub trigger: Option<Trigger>,
    /// When its current (or last) attempt started: the actual start.
    #[serde(default, with = "crate::model::time::rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, with = "crate::model::time::rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Attempts used.
    #[serde(default)]
    pub attempt: Option<u32>,
    /// For a skipped run: the run it yielded to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yielded_to: Option<String>,
}

/// One schedule as `get` and `list` show it: the stored record, the scheduler's state and the
/// upcoming instants; `get` adds the next 10 fires, recent runs, counters and what the overlap
/// policy holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleView {
    /// The stored record (its fields appear at the top level of the JSON).
    #[serde(flatten)]
    pub record: ScheduleRecord,
    /// The scheduler's state record, `null` before the first fire.
    pub state: Option<ScheduleState>,
    /// Upcoming instants of the cron: 5 from `get`, 1 from `list`.
    #[serde(with = "rfc3339_vec")]
    pub next: Vec<DateTime<Utc>>,
    /// Why the stored cron or zone cannot fire, when it cannot (only `get` shows such records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `get`: the next 10 instants of the cron (nominal; a paused schedule does not fire them).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "rfc3339_vec")]
    pub next_fires: Vec<DateTime<Utc>>,
    /// `get`: the last 10 instants of the cron up to the last fire, newest first, each with its
    /// run (manual runs are not included: `polos runs list` shows them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<RecentRun>,
    /// `get`: fired, missed, skipped by the overlap policy, back-filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<ScheduleCounters>,
    /// `get`: the run of this schedule executing now, as the overlap policy knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_run: Option<OverlapRun>,
    /// `get`: runs waiting for it to end (`buffer_one`, `buffer_all`, `cancel_other`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_runs: Vec<OverlapRun>,
}

impl ScheduleView {
    /// A view with only what `list` shows: record, state, upcoming instants.
    pub fn basic(
        record: ScheduleRecord,
        state: Option<ScheduleState>,
        next: Vec<DateTime<Utc>>,
        error: Option<String>,
    ) -> ScheduleView {
        ScheduleView {
            record,
            state,
            next,
            error,
            next_fires: Vec::new(),
            recent_runs: Vec::new(),
            counters: None,
            active_run: None,
            waiting_runs: Vec::new(),
        }
    }
}

/// `polos.run.cancel`: stop a run at its next step boundary, or before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// The run (`sch_…-20261126T090000Z` or `sch_…-m<nuid>`).
    pub run_id: String,
    /// Its workflow: needed only for a run that has not started yet (no record names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Why; recorded in the run's `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(feature = "scheduler")]
impl ApiRequest for CancelRequest {
    const EXAMPLE: &'static str =
        r#"{"run_id":"sch_4xv32vp3oro5c6puhza43mst5t-20261126T090000Z","reason":"wrong data"}"#;
    const FIELDS: &'static [Field] = &[
        Field::required("run_id", Kind::String),
        Field::optional("workflow", Kind::String),
        Field::optional("reason", Kind::String),
    ];
}

/// The reply to `polos.run.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// The run.
    pub run_id: String,
    /// Its workflow.
    pub workflow: String,
    /// Its status now; `null` when it has not started (it is cancelled when it would start).
    pub status: Option<RunStatus>,
    /// Whether a cancel request for it is stored (`false` when it had already finished).
    pub cancel_requested: bool,
}

/// The reply to `list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListReply {
    /// Valid schedules, in KV key order.
    pub schedules: Vec<ScheduleView>,
    /// Stored values that are not valid schedules, with the reason; never fatal.
    #[serde(default)]
    pub invalid: Vec<InvalidEntry>,
    /// Present when more entries remain: send it as `after` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// The reply to `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReply {
    /// Whether a schedule existed and was deleted.
    pub deleted: bool,
}

/// The reply to `trigger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerReply {
    /// The run id of the manual fire (`<schedule_id>-m<nuid>`).
    pub run_id: String,
}

/// The reply to `workflows.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowsReply {
    /// Every workflow a worker registered.
    pub workflows: Vec<WorkflowRecord>,
    /// Stored values that are not registrations.
    #[serde(default)]
    pub invalid: Vec<InvalidEntry>,
}

/// serde for a list of instants in the contract's form.
mod rfc3339_vec {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[DateTime<Utc>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|t| crate::model::time::format_instant(*t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DateTime<Utc>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| {
                crate::model::time::parse_instant(text).map_err(|e| {
                    serde::de::Error::custom(format!("{text:?} is not an RFC 3339 instant: {e}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoding schema of each request must name exactly the struct's fields, and both
    /// exactly the contract's request fields (README, "The contract"), written out here.
    fn fields_match<T: ApiRequest + Serialize>(full: T, contract: &[&str]) {
        let value = serde_json::to_value(full).unwrap();
        let mut names: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut schema: Vec<&str> = T::FIELDS.iter().map(|f| f.name).collect();
        let mut contract = contract.to_vec();
        names.sort_unstable();
        schema.sort_unstable();
        contract.sort_unstable();
        assert_eq!(names, schema);
        assert_eq!(names, contract);
    }

    #[test]
    fn schemas_match_structs() {
        fields_match(
            UpsertRequest {
                paused: Some(true),
                note: Some("n".into()),
                catchup: Some(CatchupPolicy::All),
                catchup_window_secs: Some(1),
                overlap: Some(OverlapPolicy::BufferOne),
                pause_on_failure: Some(true),
                jitter_secs: Some(30),
                start_at: Some("2026-01-01T00:00:00Z".into()),
                end_at: Some("2027-01-01T00:00:00Z".into()),
                max_runs: Some(3),
                ..UpsertRequest::new("wf", "* * * * *")
            },
            &[
                "workflow",
                "cron",
                "timezone",
                "key",
                "paused",
                "note",
                "catchup",
                "catchup_window_secs",
                "overlap",
                "pause_on_failure",
                "jitter_secs",
                "start_at",
                "end_at",
                "max_runs",
            ],
        );
        fields_match(
            BackfillRequest {
                workflow: "wf".into(),
                key: "k".into(),
                from: "2026-01-01T00:00:00Z".into(),
                to: "2026-01-02T00:00:00Z".into(),
            },
            &["workflow", "key", "from", "to"],
        );
        fields_match(
            CancelRequest {
                run_id: "r".into(),
                workflow: Some("wf".into()),
                reason: Some("x".into()),
            },
            &["run_id", "workflow", "reason"],
        );
        fields_match(
            KeyRequest {
                workflow: "wf".into(),
                key: "k".into(),
            },
            &["workflow", "key"],
        );
        fields_match(
            PauseRequest {
                workflow: "wf".into(),
                key: "k".into(),
                note: Some("n".into()),
            },
            &["workflow", "key", "note"],
        );
        fields_match(
            ListRequest {
                workflow: Some("wf".into()),
                after: Some("wf.a".into()),
                limit: Some(5),
            },
            &["workflow", "after", "limit"],
        );
        fields_match(WorkflowsRequest {}, &[]);
    }

    #[test]
    fn view_flattens_the_record() {
        let view = ScheduleView::basic(
            ScheduleRecord::new("wf", "global", "0 9 * * *", "UTC"),
            None,
            vec![crate::model::time::parse_instant("2026-11-26T09:00:00Z").unwrap()],
            None,
        );
        let v = serde_json::to_value(&view).unwrap();
        // What `get` and `list` clients read: the record's contract fields at the top level
        // (the optional catch-up and overlap fields left out when unset), then `state` and `next`;
        // `list` leaves out what only `get` describes (next_fires, recent_runs, counters, …).
        assert_eq!(
            v,
            serde_json::json!({
                "schedule_id": "sch_75kzkam7helbf5gveseghys5y5",
                "workflow": "wf",
                "key": "global",
                "cron": "0 9 * * *",
                "timezone": "UTC",
                "paused": false,
                "note": null,
                "source": "api",
                "created_at": null,
                "updated_at": null,
                "state": null,
                "next": ["2026-11-26T09:00:00Z"]
            })
        );
        let back: ScheduleView = serde_json::from_value(v).unwrap();
        assert_eq!(back, view);
    }
}
