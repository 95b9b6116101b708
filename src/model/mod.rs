//! The contract: identifiers, KV key encoding, the JSON records stored in JetStream and the
//! `SchedulePayload` delivered to workflows. Every name and field here is part of what users,
//! other-language clients and the `nats` CLI depend on (README, "The contract"); change nothing
//! casually. Names, subjects and headers are in [`names`], limits and their defaults in
//! [`limits`].

mod backfill;
mod error;
mod fire;
#[cfg(test)]
mod hostile_tests;
mod ids;
mod jitter;
mod key;
pub mod limits;
pub mod names;
mod payload;
mod records;
pub mod time;

pub use backfill::{
    backfill_done, backfill_until, count_instants, next_backfill, previous_instant,
    MAX_BACKFILL_INSTANTS, MAX_PENDING_BACKFILLS,
};
pub use error::ValidationError;
pub use fire::{payload, Fire, FireEncoder, FireError, PayloadRef};
#[cfg(feature = "scheduler")]
pub(crate) use ids::push_schedule_id;
pub use ids::{
    manual_run_id, run_id_for, schedule_id, validate_key, validate_workflow, DEFAULT_KEY,
    MAX_KEY_BYTES, MAX_WORKFLOW_LEN,
};
pub use jitter::{jitter_offset_ms, jitter_seed, jitter_window_ms, MAX_JITTER_SECS};
#[cfg(feature = "scheduler")]
pub(crate) use key::decode_key_cow;
pub use key::{
    decode_key, encode_key, run_kv_key, schedule_kv_key, split_schedule_kv_key, step_kv_key,
};
pub use limits::{InvalidLimit, Limit, LimitError, Limits};
pub use payload::SchedulePayload;
// The ticker's reader (the rest of the crate reads through `ScheduleRecord::from_kv`).
#[cfg(feature = "scheduler")]
pub(crate) use records::ScheduleRecordRef;
pub use records::{
    Backfill, BackfillProgress, CancelRecord, CatchupPolicy, Ended, InlineSchedule, OverlapPolicy,
    OverlapRecord, OverlapRun, RecordError, RunRecord, RunStatus, ScheduleRecord, ScheduleSource,
    ScheduleState, StepRecord, Trigger, WorkflowRecord,
};
