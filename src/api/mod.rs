//! The schedules API: the request and reply bodies and error codes every client uses, and (feature
//! `scheduler`) the NATS micro service `polos` that `polos scheduler` hosts (README, "The
//! contract").
//!
//! Every replica joins the same queue group, so a request is answered by exactly one of them.
//! Validation lives only here (the Rust client, the CLI and other-language clients all send plain
//! requests), and a request is validated completely before anything is written.
//!
//! | subject | request | reply |
//! |---|---|---|
//! | `polos.schedules.upsert` | [`UpsertRequest`] `{"workflow","cron","timezone"?,"key"?,"paused"?,"note"?,"catchup"?,"catchup_window_secs"?,"overlap"?,"pause_on_failure"?,"jitter_secs"?,"start_at"?,"end_at"?,"max_runs"?}` | [`UpsertReply`] `{"schedule_id","created","next":[5],"warning"?,"warnings"?}` |
//! | `polos.schedules.get` | [`KeyRequest`] `{"workflow","key"?}` | [`ScheduleView`]: the record + `"state"` + `"next":[5]` + `"next_fires":[10]`, `"recent_runs"`, `"counters"`, `"active_run"`, `"waiting_runs"` (+ `"error"` when its cron/zone is invalid) |
//! | `polos.schedules.list` | [`ListRequest`] `{"workflow"?,"after"?,"limit"?}` | [`ListReply`] `{"schedules":[..],"invalid":[{"kv_key","error"}],"next_after"?}` |
//! | `polos.schedules.delete` | [`KeyRequest`] | [`DeleteReply`] `{"deleted"}` |
//! | `polos.schedules.pause` / `.resume` | [`PauseRequest`] `{"workflow","key"?,"note"?}` | the record |
//! | `polos.schedules.trigger` | [`KeyRequest`] | [`TriggerReply`] `{"run_id"}` |
//! | `polos.schedules.backfill` | [`BackfillRequest`] `{"workflow","key"?,"from","to"}` | [`BackfillReply`] `{"schedule_id","seq","instants","first","last"}` |
//! | `polos.workflows.list` | `{}` | [`WorkflowsReply`] `{"workflows":[..],"invalid":[..]}` |
//! | `polos.run.cancel` | [`CancelRequest`] `{"run_id","workflow"?,"reason"?}` | [`CancelReply`] `{"run_id","workflow","status","cancel_requested"}` |
//!
//! Errors carry the micro headers `Nats-Service-Error-Code` (400, 404 for `not_found`, 500 for
//! `internal`) and `Nats-Service-Error`, and the body `{"error":{"code","message"}}` (see
//! [`ErrorCode`]). A request published without a reply subject is applied all the same.
//! Omitted optional upsert fields keep an existing record's value (`paused`, `note`, catch-up,
//! overlap, jitter, bounds; `""` removes a `start_at`/`end_at`, `0` a `max_runs`).
//!
//! What it accepts is bounded by `[limits]` ([`Limits`](crate::model::Limits)): request, key,
//! cron and note sizes, and schedules per workflow, counted by `counts` from a live view of
//! the bucket (its module doc argues how exact that count is).

#[cfg(feature = "scheduler")]
mod counts;
#[cfg(feature = "scheduler")]
mod decode;
mod error;
#[cfg(feature = "scheduler")]
mod handlers;
#[cfg(feature = "scheduler")]
mod registry;
#[cfg(feature = "scheduler")]
mod service;
mod types;

pub use crate::store::InvalidEntry;
pub use error::{ApiError, ErrorCode};
#[cfg(feature = "scheduler")]
pub use error::{RoundTripError, ServeError};
#[cfg(feature = "scheduler")]
pub use service::{serve, start, start_metered, ApiServer};
pub use types::{
    BackfillReply, BackfillRequest, CancelReply, CancelRequest, DeleteReply, KeyRequest, ListReply,
    ListRequest, PauseRequest, RecentRun, ScheduleCounters, ScheduleView, TriggerReply,
    UpsertReply, UpsertRequest, WorkflowsReply, WorkflowsRequest, MAX_LIST_PAGE,
};
