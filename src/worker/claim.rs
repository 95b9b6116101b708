//! Claiming a run: deciding, from its record in `polos_runs`, whether a delivered fire executes.
//!
//! | record found                                   | claim                                              |
//! |------------------------------------------------|----------------------------------------------------|
//! | none (or deleted)                              | create it `running`, attempt 1: [`Claim::Owned`]   |
//! | a final status (`completed`, `failed`, `cancelled`, `skipped`) | [`Claim::Finished`]: never written again |
//! | `running`, carried by another fire still queued | [`Claim::Queued`]: this fire is a duplicate        |
//! | `running`, attempt ≥ max attempts              | [`Claim::Exhausted`]: the last attempt never ended |
//! | `running` otherwise                            | CAS it to attempt + 1 with this fire: [`Claim::Owned`] |
//!
//! The claim keeps the revision it wrote, and every later write of the record by this execution
//! is a compare-and-swap on it: an execution another claim has taken over can no longer write.
//! A fire redelivered by the server (same stream sequence) takes over, because the server only
//! redelivers once the previous delivery stopped answering; a *different* fire of the same run
//! (published again after the duplicate window) defers while the fire named in the record is
//! still in the stream, since whoever holds that one will finish the run.

use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream as JsStream};
use thiserror::Error;
use tracing::warn;

use crate::model::names::HEADER_RUN_ID;
use crate::model::time::now_seconds;
use crate::model::{Fire, RunRecord, RunStatus};
use crate::store::{RunCreated, RunKey, RunStore, StoreError, StoredRun};

/// How often a claim looks again after losing a compare-and-swap to another claim.
const CLAIM_ROUNDS: usize = 3;

/// What a delivered fire may do.
#[derive(Debug)]
pub(crate) enum Claim {
    /// This execution owns the run: run the handler.
    Owned(Owned),
    /// The run already finished with this status; answer the fire without running.
    Finished(RunStatus),
    /// Another fire of the same run (this stream sequence) is still queued or running.
    Queued(u64),
    /// Every attempt was used by executions that never finished (their workers died).
    Exhausted(StoredRun),
}

/// A run this execution owns.
#[derive(Debug)]
pub(crate) struct Owned {
    /// The record the claim wrote (attempt, start, fire).
    pub record: RunRecord,
    /// Its revision: the only one this execution may overwrite.
    pub revision: u64,
    /// No record existed before, so no step result can exist yet.
    pub fresh: bool,
}

/// Why a claim could not be decided (nothing was written; the fire is delivered again).
#[derive(Debug, Error)]
pub(crate) enum ClaimError {
    /// Reading or writing the run record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Whether the fire named in the record is still queued could not be checked.
    #[error(transparent)]
    Stream(#[from] QueueCheckError),
}

/// Whether a run's fire is still queued could not be checked ([`still_queued`]).
#[derive(Debug, Error)]
#[error("cannot check whether fire {seq} of run {run_id} is still in POLOS_RUNS: {source}")]
pub(crate) struct QueueCheckError {
    /// The stream sequence.
    seq: u64,
    /// The run.
    run_id: String,
    /// The server's answer.
    source: async_nats::Error,
}

/// Claims `key` for `fire`, delivered as stream sequence `seq`.
pub(crate) async fn claim(
    runs: &RunStore,
    stream: &JsStream,
    key: &RunKey,
    fire: &Fire,
    seq: u64,
    max_attempts: u32,
) -> Result<Claim, ClaimError> {
    let first = RunRecord::of_fire(fire, seq, RunStatus::Running, 1, now_seconds());
    for _ in 0..CLAIM_ROUNDS {
        let (current, revision) = match runs.create(key, &first).await? {
            RunCreated::New {
                revision,
                over_tombstone,
            } => {
                return Ok(Claim::Owned(Owned {
                    record: first,
                    revision,
                    fresh: !over_tombstone,
                }))
            }
            RunCreated::Exists { record, revision } => (record, revision),
        };
        let next = match current {
            Ok(current) => {
                if current.status.is_finished() {
                    return Ok(Claim::Finished(current.status));
                }
                if let Some(other) = current.fire_seq.filter(|s| *s != seq) {
                    if still_queued(stream, other, key.run_id()).await? {
                        return Ok(Claim::Queued(other));
                    }
                }
                if current.attempt >= max_attempts {
                    return Ok(Claim::Exhausted(StoredRun {
                        record: current,
                        revision,
                    }));
                }
                RunRecord {
                    status: RunStatus::Running,
                    attempt: current.attempt + 1,
                    started_at: now_seconds(),
                    finished_at: None,
                    output: None,
                    fire_seq: Some(seq),
                    ..current
                }
            }
            Err(e) => {
                // The key is this run's; a value that is not a run record cannot be resumed
                // from, so the run starts over in its place.
                warn!(error = %e, "replacing an unreadable run record");
                first.clone()
            }
        };
        match runs.update(key, &next, revision).await {
            Ok(revision) => {
                return Ok(Claim::Owned(Owned {
                    record: next,
                    revision,
                    fresh: false,
                }))
            }
            // Another claim wrote in between: look at what it wrote.
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Conflict {
        bucket: crate::model::names::RUNS_BUCKET,
        kv_key: key.kv_key().to_string(),
        revision: 0,
    }
    .into())
}

/// Whether stream sequence `seq` still holds a fire of `run_id` (a work queue drops a message
/// once it is acked or terminated).
pub(crate) async fn still_queued(
    stream: &JsStream,
    seq: u64,
    run_id: &str,
) -> Result<bool, QueueCheckError> {
    match stream.get_raw_message(seq).await {
        Ok(message) => Ok(message
            .headers
            .get(HEADER_RUN_ID)
            .is_some_and(|id| id.as_str() == run_id)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(QueueCheckError {
            seq,
            run_id: run_id.to_string(),
            source: e.into(),
        }),
    }
}
