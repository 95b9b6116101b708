//! Registration: the worker's `polos_workflows` record and the declarative sync of a workflow's
//! inline schedule (ARCHITECTURE.md, "Buckets and their one owner").
//!
//! The inline schedule is the `global` schedule with `source: "inline"`. At each start the worker
//! makes it match the code — created, updated, or deleted when the code no longer declares one —
//! through [`ScheduleStore`], the one writer of `polos_schedules` and `polos_workflows`, whose
//! compare-and-swap loop keeps concurrent workers and API calls from overwriting each other
//! blindly. Records with `source: "api"` are never touched.

use tracing::{info, warn};

use super::{Schedule, Workflow};
use crate::model::{RecordError, ScheduleRecord, ScheduleSource, WorkflowRecord, DEFAULT_KEY};
use crate::store::{ScheduleChange, ScheduleStore, StoreError};

/// What the inline-schedule sync did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The `global` schedule was created from the code.
    Created,
    /// It existed with another cron or zone and was updated.
    Updated,
    /// It already matched (or there was none to remove).
    Unchanged,
    /// The code no longer declares a schedule, so the inline record was deleted.
    Removed,
    /// An API-created `global` schedule exists; it was left alone.
    KeptApiSchedule,
}

/// Writes the workflow's `polos_workflows` record.
pub(crate) async fn register(
    schedules: &ScheduleStore,
    workflow: &Workflow,
) -> Result<(), StoreError> {
    schedules
        .register_workflow(&WorkflowRecord {
            workflow: workflow.id.clone(),
            schedulable: workflow.schedulable,
            schedule: workflow.inline_schedule(),
            updated_at: crate::model::time::now_seconds(),
        })
        .await
}

/// Whether `record` already says what `declared` asks for (policies left unset ask nothing).
fn matches(record: &ScheduleRecord, declared: &Schedule) -> bool {
    record.cron == declared.cron
        && record.timezone == declared.timezone
        && declared.overlap.is_none_or(|o| record.overlap == Some(o))
        && declared
            .pause_on_failure
            .is_none_or(|p| record.pause_on_failure == Some(p))
}

/// What the code's declaration asks of the stored `global` schedule.
fn decide(
    workflow: &str,
    current: Option<Result<ScheduleRecord, RecordError>>,
    declared: Option<&Schedule>,
) -> ScheduleChange<SyncOutcome> {
    match (current, declared) {
        (None, None) => ScheduleChange::Keep(SyncOutcome::Unchanged),
        (Some(Err(e)), _) => {
            // Unreadable: it is not ours to repair (it may be someone's hand-written value).
            warn!(workflow, error = %e, "leaving an unreadable global schedule alone");
            ScheduleChange::Keep(SyncOutcome::KeptApiSchedule)
        }
        (Some(Ok(record)), _) if record.source == ScheduleSource::Api => {
            if declared.is_some() {
                warn!(workflow, "an API-created global schedule exists; the inline schedule in code is not applied (delete the API schedule to let the code own it)");
            }
            ScheduleChange::Keep(SyncOutcome::KeptApiSchedule)
        }
        (None, Some(want)) => {
            let now = crate::model::time::now_seconds();
            let mut record = ScheduleRecord::new(workflow, DEFAULT_KEY, &want.cron, &want.timezone);
            record.source = ScheduleSource::Inline;
            record.overlap = want.overlap;
            record.pause_on_failure = want.pause_on_failure;
            record.created_at = Some(now);
            record.updated_at = Some(now);
            ScheduleChange::Write(record, SyncOutcome::Created)
        }
        (Some(Ok(record)), Some(want)) if matches(&record, want) => {
            ScheduleChange::Keep(SyncOutcome::Unchanged)
        }
        (Some(Ok(mut record)), Some(want)) => {
            // Keep what operators set (pause, note, policies the code leaves unset) and the
            // creation time.
            record.cron = want.cron.clone();
            record.timezone = want.timezone.clone();
            if want.overlap.is_some() {
                record.overlap = want.overlap;
            }
            if want.pause_on_failure.is_some() {
                record.pause_on_failure = want.pause_on_failure;
            }
            record.updated_at = Some(crate::model::time::now_seconds());
            ScheduleChange::Write(record, SyncOutcome::Updated)
        }
        // As with an API delete, the store purges its state: a schedule declared again later
        // must not inherit the old one's `last_timestamp`.
        (Some(Ok(_)), None) => ScheduleChange::Delete(SyncOutcome::Removed),
    }
}

/// Makes the workflow's `global` inline schedule match `declared`, through the schedules'
/// one writer ([`ScheduleStore::reconcile`]: compare-and-swap, decided again after a lost race).
pub(crate) async fn sync_inline_schedule(
    schedules: &ScheduleStore,
    workflow: &str,
    declared: Option<&Schedule>,
) -> Result<SyncOutcome, StoreError> {
    let outcome = schedules
        .reconcile(workflow, DEFAULT_KEY, |current| {
            Ok(decide(workflow, current, declared))
        })
        .await?;
    info!(workflow, ?outcome, "inline schedule synced");
    Ok(outcome)
}
