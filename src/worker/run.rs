//! One run's lifecycle, from a delivered fire to its ack.
//!
//! | seen in `polos_runs`            | what happens                                              |
//! |---------------------------------|-----------------------------------------------------------|
//! | nothing (first delivery)        | create `running`, run the handler                         |
//! | `completed`                     | ack, do not run again (a late duplicate)                  |
//! | `running` / `failed`            | write `running` with this attempt, run (stored steps skip)|
//! | attempt > max attempts          | `failed` unless completed (a worker died in the last try) |
//!
//! | handler result                  | record                          | message                  |
//! |---------------------------------|---------------------------------|--------------------------|
//! | `Ok(output)`                    | `completed` + output            | ack                      |
//! | retryable error, attempts left  | `running` + error               | nak with backoff delay   |
//! | terminal error or last attempt  | `failed` + error                | term                     |
//! | worker shutting down too long   | left `running`                  | nak now (another worker) |

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use async_nats::jetstream::{AckKind, Message};
use chrono::Utc;
use futures::FutureExt;
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

use super::context::Step;
use super::workflow::BoxedHandler;
use super::{WorkflowContext, WorkflowError};
use crate::metrics::{Metrics, RunOutcome};
use crate::model::{run_kv_key, Fire, RunRecord, RunStatus};

/// Settings every run of a worker shares.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    /// Attempts before a run is recorded `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    /// How often an in-progress ack is sent while the handler runs (below `ack_wait`).
    pub progress_every: Duration,
}

/// Handles the worker needs for a run.
#[derive(Clone)]
pub(crate) struct RunEnv {
    /// `polos_runs` (shared: a `Store` carries its stream's whole config, too much to clone per run).
    pub runs: Arc<Store>,
    /// `polos_steps`.
    pub steps: Arc<Store>,
    /// Shared settings.
    pub settings: RunSettings,
    /// Becomes `true` when in-flight runs must be released (the shutdown grace period ended).
    pub abort: watch::Receiver<bool>,
    /// Where runs, retries and durations are counted.
    pub metrics: Metrics,
}

/// The longest a retry is delayed, however many attempts came before.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// The delay before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Executes one delivered fire to its ack/nak/term. Never panics; errors are logged.
pub(crate) async fn execute(message: Message, handler: BoxedHandler, env: Arc<RunEnv>) {
    let fire = match Fire::from_message(
        message.subject.as_str(),
        message.headers.as_ref(),
        &message.payload,
    ) {
        Ok(fire) => fire,
        Err(e) => {
            // Redelivering an unreadable message cannot help.
            warn!(error = %e, "dropping a message that is not a fire");
            send(&message, AckKind::Term).await;
            return;
        }
    };
    let attempt = message
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1)
        .max(1);
    // Every log line of this attempt, the handler's own included, carries the run's identity.
    let span = info_span!("run", workflow = %fire.workflow, run_id = %fire.run_id, attempt);
    execute_attempt(message, fire, attempt, handler, env)
        .instrument(span)
        .await
}

/// Executes attempt `attempt` of `fire` (inside its span).
async fn execute_attempt(
    message: Message,
    fire: Fire,
    attempt: u32,
    handler: BoxedHandler,
    env: Arc<RunEnv>,
) {
    let key = run_kv_key(&fire.workflow, &fire.run_id);
    let mut record = RunRecord {
        run_id: fire.run_id.clone(),
        workflow: fire.workflow.clone(),
        schedule_id: fire.payload.schedule_id.clone(),
        key: fire.payload.key.clone(),
        trigger: fire.trigger,
        scheduled_for: fire.payload.timestamp,
        status: RunStatus::Running,
        attempt,
        started_at: Utc::now(),
        finished_at: None,
        output: None,
        error: None,
    };
    let settings = &env.settings;

    if attempt > settings.max_attempts {
        // The server redelivered after the last attempt's worker stopped without an answer —
        // unless it stopped between writing `completed` and acking.
        if let Ok(Some(entry)) = env.runs.entry(key.as_str()).await {
            let done = entry.operation == Operation::Put
                && serde_json::from_slice::<RunRecord>(&entry.value)
                    .is_ok_and(|r| r.status == RunStatus::Completed);
            if done {
                send(&message, AckKind::Ack).await;
                return;
            }
        }
        record.status = RunStatus::Failed;
        record.attempt = settings.max_attempts;
        record.finished_at = Some(Utc::now());
        record.error = Some(format!(
            "gave up after {} attempts: the worker running the last attempt stopped without finishing it",
            settings.max_attempts
        ));
        env.metrics
            .run_finished(&fire.workflow, RunOutcome::Failed, Duration::ZERO);
        finish(&message, &env.runs, &key, &record, AckKind::Term).await;
        return;
    }

    let fresh = match claim(&env.runs, &key, &record).await {
        Ok(Claim::Fresh) => true,
        Ok(Claim::Existing) => false,
        Ok(Claim::Completed) => {
            debug!(run_id = %fire.run_id, "run already completed; acking the duplicate");
            send(&message, AckKind::Ack).await;
            return;
        }
        Err(e) => {
            warn!(run_id = %fire.run_id, error = %e, "cannot record the run; retrying later");
            send(
                &message,
                AckKind::Nak(Some(backoff(settings.retry_backoff, attempt))),
            )
            .await;
            return;
        }
    };

    let ctx = WorkflowContext::new(
        fire.run_id.clone(),
        fire.workflow.clone(),
        attempt,
        fire.trigger,
        Step::new(env.steps.clone(), &fire.run_id, fresh)
            .metered(env.metrics.clone(), &fire.workflow),
    );
    let (_in_flight, started) = (env.metrics.run_started(&fire.workflow), Instant::now());
    let result = match run_handler(
        &message,
        handler,
        ctx,
        fire.payload,
        settings.progress_every,
        env.abort.clone(),
    )
    .await
    {
        Some(result) => result,
        None => {
            info!(run_id = %fire.run_id, "worker shutting down; releasing the run to another worker");
            env.metrics
                .run_finished(&fire.workflow, RunOutcome::Released, started.elapsed());
            send(&message, AckKind::Nak(None)).await;
            return;
        }
    };

    match result {
        Ok(output) => {
            env.metrics
                .run_finished(&fire.workflow, RunOutcome::Completed, started.elapsed());
            record.status = RunStatus::Completed;
            record.finished_at = Some(Utc::now());
            record.output = Some(output);
            finish(&message, &env.runs, &key, &record, AckKind::Ack).await;
        }
        Err(e) if e.is_terminal() || attempt >= settings.max_attempts => {
            warn!(run_id = %fire.run_id, attempt, error = %e, "run failed");
            env.metrics
                .run_finished(&fire.workflow, RunOutcome::Failed, started.elapsed());
            record.status = RunStatus::Failed;
            record.finished_at = Some(Utc::now());
            record.error = Some(e.message().to_string());
            finish(&message, &env.runs, &key, &record, AckKind::Term).await;
        }
        Err(e) => {
            let delay = backoff(settings.retry_backoff, attempt);
            env.metrics
                .run_finished(&fire.workflow, RunOutcome::Retried, started.elapsed());
            warn!(run_id = %fire.run_id, attempt, error = %e, retry_in = ?delay, "run attempt failed; retrying");
            record.error = Some(e.message().to_string());
            // The retry happens whether or not this write lands; it only informs operators.
            if let Err(e) = put(&env.runs, &key, &record).await {
                warn!(run_id = %fire.run_id, error = %e, "cannot record the failed attempt");
            }
            send(&message, AckKind::Nak(Some(delay))).await;
        }
    }
}

/// What the run record said when this attempt started.
enum Claim {
    /// There was none: this attempt created it (no steps can be stored yet).
    Fresh,
    /// An earlier attempt exists and did not complete.
    Existing,
    /// The run already completed.
    Completed,
}

/// Writes `running` for this attempt, learning what was there before in the same round trip
/// on the common path: a create (expected revision 0) fails only when a record exists.
async fn claim(runs: &Store, key: &str, record: &RunRecord) -> Result<Claim, async_nats::Error> {
    let bytes = bytes::Bytes::from(serde_json::to_vec(record)?);
    match runs.update(key, bytes.clone(), 0).await {
        Ok(_) => return Ok(Claim::Fresh),
        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(entry) = runs.entry(key).await? {
        if entry.operation == Operation::Put {
            if let Ok(existing) = serde_json::from_slice::<RunRecord>(&entry.value) {
                if existing.status == RunStatus::Completed {
                    return Ok(Claim::Completed);
                }
            }
        }
    }
    runs.put(key, bytes).await?;
    Ok(Claim::Existing)
}

/// Runs the handler, sending in-progress acks so a long run keeps its message. `None` when the
/// worker's shutdown grace period ended first.
async fn run_handler(
    message: &Message,
    handler: BoxedHandler,
    ctx: WorkflowContext,
    payload: crate::model::SchedulePayload,
    progress_every: Duration,
    mut abort: watch::Receiver<bool>,
) -> Option<Result<serde_json::Value, WorkflowError>> {
    let run = AssertUnwindSafe(handler(ctx, payload)).catch_unwind();
    tokio::pin!(run);
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
    loop {
        tokio::select! {
            result = &mut run => {
                return Some(result.unwrap_or_else(|panic| {
                    let text = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_string());
                    Err(WorkflowError::retryable(format!("the handler panicked: {text}")))
                }));
            }
            _ = progress.tick() => send(message, AckKind::Progress).await,
            changed = abort.changed() => {
                if changed.is_err() || *abort.borrow() {
                    return None;
                }
            }
        }
    }
}

/// Writes the final record, then answers the message. If the write fails the message is nak'ed
/// so another attempt writes it (completed steps are not run again).
async fn finish(message: &Message, runs: &Store, key: &str, record: &RunRecord, kind: AckKind) {
    match put(runs, key, record).await {
        Ok(()) => send(message, kind).await,
        Err(e) => {
            warn!(key, error = %e, "cannot write the run record; the run will be redelivered");
            send(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
    }
}

async fn put(runs: &Store, key: &str, record: &RunRecord) -> Result<(), async_nats::Error> {
    runs.put(key, serde_json::to_vec(record)?.into()).await?;
    Ok(())
}

/// Answers the server; a lost answer only means a redelivery, which the run record absorbs.
async fn send(message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        warn!(error = %e, "cannot answer the server for a run message; it will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 1), Duration::from_secs(1));
        assert_eq!(backoff(base, 2), Duration::from_secs(2));
        assert_eq!(backoff(base, 4), Duration::from_secs(8));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }
}
