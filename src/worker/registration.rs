//! Registration: the worker's `polos_workflows` record and the declarative sync of a workflow's
//! inline schedule (design §5).
//!
//! The inline schedule is the `global` schedule with `source: "inline"`. At each start the worker
//! makes it match the code — created, updated, or deleted when the code no longer declares one —
//! with compare-and-swap writes so concurrent workers and API calls never overwrite each other
//! blindly. Records with `source: "api"` are never touched.

use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use tracing::{info, warn};

use super::{Schedule, Workflow};
use crate::model::{schedule_kv_key, ScheduleRecord, ScheduleSource, WorkflowRecord, DEFAULT_KEY};

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

/// How often a compare-and-swap is retried when others keep writing the same key.
const CAS_ATTEMPTS: usize = 10;

/// Writes the workflow's `polos_workflows` record.
pub(crate) async fn register(
    workflows: &Store,
    workflow: &Workflow,
) -> Result<(), async_nats::Error> {
    let record = WorkflowRecord {
        workflow: workflow.id.clone(),
        schedulable: workflow.schedulable,
        schedule: workflow.inline_schedule(),
        updated_at: crate::model::time::now_seconds(),
    };
    workflows
        .put(&workflow.id, serde_json::to_vec(&record)?.into())
        .await?;
    Ok(())
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

/// Makes the workflow's `global` inline schedule match `declared`.
pub(crate) async fn sync_inline_schedule(
    schedules: &Store,
    state: &Store,
    workflow: &str,
    declared: Option<&Schedule>,
) -> Result<SyncOutcome, async_nats::Error> {
    let key = schedule_kv_key(workflow, DEFAULT_KEY);
    for _ in 0..CAS_ATTEMPTS {
        let current = schedules
            .entry(key.as_str())
            .await?
            .filter(|e| e.operation == Operation::Put);
        let existing = match &current {
            Some(entry) => match ScheduleRecord::from_kv(&key, &entry.value) {
                Ok(record) => Some((record, entry.revision)),
                Err(e) => {
                    // Unreadable: it is not ours to repair (it may be someone's hand-written value).
                    warn!(key, error = %e, "leaving an unreadable global schedule alone");
                    return Ok(SyncOutcome::KeptApiSchedule);
                }
            },
            None => None,
        };
        let attempt = match (existing, declared) {
            (None, None) => return Ok(SyncOutcome::Unchanged),
            (Some((record, _)), _) if record.source == ScheduleSource::Api => {
                if declared.is_some() {
                    warn!(workflow, "an API-created global schedule exists; the inline schedule in code is not applied (delete the API schedule to let the code own it)");
                }
                return Ok(SyncOutcome::KeptApiSchedule);
            }
            (None, Some(want)) => {
                let now = crate::model::time::now_seconds();
                let mut record =
                    ScheduleRecord::new(workflow, DEFAULT_KEY, &want.cron, &want.timezone);
                record.source = ScheduleSource::Inline;
                record.overlap = want.overlap;
                record.pause_on_failure = want.pause_on_failure;
                record.created_at = Some(now);
                record.updated_at = Some(now);
                match schedules
                    .create(key.as_str(), serde_json::to_vec(&record)?.into())
                    .await
                {
                    Ok(_) => Ok(SyncOutcome::Created),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Err(()),
                    Err(e) => return Err(e.into()),
                }
            }
            (Some((record, _)), Some(want)) if matches(&record, want) => {
                return Ok(SyncOutcome::Unchanged);
            }
            (Some((mut record, revision)), Some(want)) => {
                // Keep what operators set (pause, note, policies the code leaves unset) and
                // the creation time.
                record.cron = want.cron.clone();
                record.timezone = want.timezone.clone();
                if want.overlap.is_some() {
                    record.overlap = want.overlap;
                }
                if want.pause_on_failure.is_some() {
                    record.pause_on_failure = want.pause_on_failure;
                }
                record.updated_at = Some(crate::model::time::now_seconds());
                match schedules
                    .update(key.as_str(), serde_json::to_vec(&record)?.into(), revision)
                    .await
                {
                    Ok(_) => Ok(SyncOutcome::Updated),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(()),
                    Err(e) => return Err(e.into()),
                }
            }
            (Some((_, revision)), None) => {
                match schedules
                    .delete_expect_revision(key.as_str(), Some(revision))
                    .await
                {
                    Ok(()) => {
                        // As with an API delete: a schedule declared again later must not
                        // inherit the old one's `last_timestamp`.
                        if let Err(e) = state.purge(key.as_str()).await {
                            warn!(key, error = %e, "could not purge the removed schedule's state");
                        }
                        Ok(SyncOutcome::Removed)
                    }
                    // Any failure here is most likely a concurrent write: look again.
                    Err(e) => {
                        warn!(key, error = %e, "deleting the inline schedule raced; retrying");
                        Err(())
                    }
                }
            }
        };
        if let Ok(outcome) = attempt {
            info!(workflow, ?outcome, "inline schedule synced");
            return Ok(outcome);
        }
    }
    Err(format!(
        "the global schedule of workflow {workflow:?} kept changing during {CAS_ATTEMPTS} compare-and-swap attempts; restart the worker"
    )
    .into())
}
