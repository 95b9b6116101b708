//! The stores: typed reads and compare-and-swap writes over the KV buckets (README, "The
//! contract"; owners in ARCHITECTURE.md). Each bucket has one owner module here, and every
//! reader of a bucket goes through it or through `read.rs`'s one tombstone rule.
//!
//! | file | owns |
//! |---|---|
//! | `schedules.rs` | `polos_schedules`, `polos_schedule_state`, `polos_workflows` (read) |
//! | `runs.rs` | `polos_runs`: run records, created once, then only compare-and-swap |
//! | `steps.rs` | `polos_steps`: step results, create-only (the first stored output wins) |
//! | `overlap.rs` | `polos_overlap`: per-schedule overlap records, compare-and-swap only |
//! | `cancels.rs` | `polos_cancels`: run cancel requests, create-only, followed by workers |
//! | `read.rs` | the one way to read a bucket: the tombstone rule, one-pass listings, following a filter |
//! | `bucket.rs` | what `runs.rs` and `steps.rs` share: create over a tombstone, CAS, size limit |
//!
//! Every write to a schedule goes through a read-modify-CAS loop, so concurrent upserts of one
//! workflow + key converge to one record (one schedule id) and no update is lost.

mod bucket;
mod cancels;
mod error;
mod overlap;
mod read;
mod runs;
mod schedules;
mod steps;

pub use cancels::CancelStore;
pub use error::{StoreError, HEADER_ROOM};
pub use overlap::{OverlapStore, StoredOverlap};
#[cfg(feature = "scheduler")]
pub(crate) use read::follow;
pub use read::{is_live, is_tombstone, Followed, RawEntry, ReadError};
pub use runs::{validate_run_id, RunCreated, RunKey, RunListing, RunStore, StoredRun};
pub use schedules::{
    InvalidEntry, Listing, ScheduleChange, ScheduleStore, StoredSchedule, Upserted,
};
pub use steps::{StepCreated, StepStore, StoredStep};
