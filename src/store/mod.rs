//! The schedule store: typed reads and compare-and-swap writes over the KV buckets
//! `polos_schedules`, `polos_schedule_state` and `polos_workflows` (design §3).
//!
//! Every write to a schedule goes through a read-modify-CAS loop, so concurrent upserts of one
//! workflow + key converge to one record (one schedule id) and no update is lost.

mod error;
mod scan;
mod schedules;

pub use error::StoreError;
pub use scan::RawEntry;
pub use schedules::{InvalidEntry, Listing, ScheduleStore, StoredSchedule, Upserted};
