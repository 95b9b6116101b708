//! The stores: typed reads and compare-and-swap writes over the KV buckets (design §3). Each
//! bucket has one owner module here, and every reader of a bucket goes through it.
//!
//! | file | owns |
//! |---|---|
//! | `schedules.rs` | `polos_schedules`, `polos_schedule_state`, `polos_workflows` (read) |
//! | `runs.rs` | `polos_runs`: run records, created once, then only compare-and-swap |
//! | `steps.rs` | `polos_steps`: step results, create-only (the first stored output wins) |
//! | `overlap.rs` | `polos_overlap`: per-schedule overlap records, compare-and-swap only |
//! | `cancels.rs` | `polos_cancels`: run cancel requests, create-only, followed by workers |
//! | `follow.rs` | following a bucket's keys under a filter: latest values, then changes |
//! | `bucket.rs` | what `runs.rs` and `steps.rs` share: the tombstone rule, create, CAS, size limit |
//! | `scan.rs` | one-pass listings of a bucket's latest values |
//!
//! Every write to a schedule goes through a read-modify-CAS loop, so concurrent upserts of one
//! workflow + key converge to one record (one schedule id) and no update is lost.

mod bucket;
mod cancels;
mod error;
mod follow;
mod overlap;
mod run_error;
mod runs;
mod scan;
mod schedules;
mod steps;

pub use cancels::CancelStore;
pub use error::StoreError;
pub use follow::Followed;
pub use overlap::{OverlapStore, StoredOverlap};
pub use run_error::{RunStoreError, HEADER_ROOM};
pub use runs::{validate_run_id, RunCreated, RunKey, RunListing, RunStore, StoredRun};
pub use scan::RawEntry;
pub use schedules::{InvalidEntry, Listing, ScheduleStore, StoredSchedule, Upserted};
pub use steps::{StepCreated, StepStore, StoredStep};
