//! One run's lifecycle, from a delivered fire to its confirmed answer.
//!
//! | delivered message                        | what happens                                      | answer            |
//! |------------------------------------------|---------------------------------------------------|-------------------|
//! | not a fire (headers, run id, body)       | logged, counted in `rejected_fires`               | term (confirmed)  |
//! | its run finished (`completed`/`failed`)  | nothing runs                                      | ack / term        |
//! | another fire of its run is still queued  | nothing runs                                      | ack               |
//! | every attempt used, none finished        | record `failed`                                   | term              |
//! | claimed (see `claim.rs`)                 | the handler runs in its own task (below)          |                   |
//! | the claim cannot be decided (KV trouble) | nothing written, no attempt used                  | nak, 1 s          |
//!
//! | handler result                       | record (CAS on the claim's revision)  | answer                   |
//! |--------------------------------------|---------------------------------------|--------------------------|
//! | `Ok(output)`                         | `completed` + output                  | ack (confirmed)          |
//! | output larger than `max_payload`     | `failed`, the error names the limit   | term (confirmed)         |
//! | retryable error, attempts left       | `running` + error                     | nak with backoff delay   |
//! | timeout (cancelled)                  | as a retryable error                  | nak with backoff delay   |
//! | terminal error or last attempt       | `failed` + error                      | term (confirmed)         |
//! | shutdown grace period ended          | attempt given back (attempt − 1)      | nak now (another worker) |
//! | claim taken over by another execution| nothing: the CAS is refused           | ack only if finished     |
//!
//! An execution is *taken over* when the server redelivered its fire (it stalled past
//! `ack_wait` without in-progress acks) and the redelivery claimed the run. It notices at its
//! next step boundary once its hold on the fire has lapsed, or at the latest when its final
//! compare-and-swap is refused; either way it records nothing and leaves the answer to the
//! execution that owns the run. A transient failure of the final write is retried while the
//! fire is held, so it costs no attempt.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Stream as JsStream;
use async_nats::jetstream::{AckKind, Message};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use super::claim::{claim, Claim, Owned};
use super::consumer::Slot;
use super::context::{Owner, Step};
use super::hold::{confirm, keep, send, Hold};
use super::stats::{Counter, WorkerStats};
use super::workflow::{BoxedHandler, Output};
use super::{WorkflowContext, WorkflowError};
use crate::metrics::{Metrics, RunOutcome};
use crate::model::time::now_seconds;
use crate::model::{Fire, RunRecord, RunStatus, SchedulePayload};
use crate::store::{RunKey, RunStore, RunStoreError, StepStore};

/// Settings every run of a worker shares.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    /// Attempts before a run is recorded `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: Duration,
    /// The consumer's ack wait: how long a delivery is ours without an answer.
    pub ack_wait: Duration,
    /// How often an in-progress ack is sent while a fire is held (below `ack_wait`).
    pub progress_every: Duration,
}

/// What runs of a worker share.
pub(crate) struct RunEnv {
    /// `polos_runs`.
    pub runs: RunStore,
    /// `polos_steps`.
    pub steps: StepStore,
    /// `POLOS_RUNS`, to tell whether another fire of a run is still queued.
    pub stream: JsStream,
    /// Shared settings.
    pub settings: RunSettings,
    /// Becomes `true` when in-flight runs must be released (the shutdown grace period ended).
    pub abort: watch::Receiver<bool>,
    /// Counters.
    pub stats: WorkerStats,
    /// Where runs, retries and durations are counted (`/metrics`).
    pub metrics: Metrics,
}

/// The longest a retry is delayed, however many attempts came before.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Delay before a fire whose claim could not be decided is delivered again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);
/// The longest run error kept in a record (a handler may return megabytes of text).
const MAX_ERROR_BYTES: usize = 16 * 1024;

/// The delay before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A fire being executed: the message and what is known about it.
struct Execution<'a> {
    message: &'a Message,
    env: &'a RunEnv,
    key: RunKey,
    /// The message's stream sequence (for logs).
    seq: u64,
}

/// Executes one delivered message, received at `received`, to its answer. Never panics;
/// errors are logged and counted.
pub(crate) async fn execute(
    message: Message,
    slot: Slot,
    received: Instant,
    handler: BoxedHandler,
    timeout: Duration,
    env: Arc<RunEnv>,
) {
    let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
        // Without an ack subject there is nobody to answer; nothing else can be done.
        warn!(subject = %message.subject, "ignoring a message that is not a JetStream delivery");
        return;
    };
    let fire = match Fire::from_message(
        message.subject.as_str(),
        message.headers.as_ref(),
        &message.payload,
    ) {
        Ok(fire) => fire,
        Err(e) => return reject(&message, &env, seq, &e.to_string()).await,
    };
    let key = match RunKey::new(&fire.workflow, &fire.run_id) {
        Ok(key) => key,
        Err(e) => return reject(&message, &env, seq, &e.to_string()).await,
    };
    // Every log line of this execution, the handler's own included, carries the run's identity.
    let span = info_span!(
        "run",
        workflow = %fire.workflow,
        run_id = %fire.run_id,
        attempt = tracing::field::Empty
    );
    let run = Execution {
        message: &message,
        env: &env,
        key,
        seq,
    };
    run.decide(fire, slot, received, handler, timeout)
        .instrument(span)
        .await;
}

impl Execution<'_> {
    /// Claims the run of `fire` and acts on what the claim says.
    async fn decide(
        &self,
        fire: Fire,
        slot: Slot,
        received: Instant,
        handler: BoxedHandler,
        timeout: Duration,
    ) {
        let run = self;
        let env = self.env;
        let settings = &env.settings;
        match claim(
            &env.runs,
            &env.stream,
            &run.key,
            &fire,
            run.seq,
            settings.max_attempts,
        )
        .await
        {
            Ok(Claim::Owned(owned)) => {
                run.owned(owned, fire, slot, received, handler, timeout)
                    .await
            }
            Ok(Claim::Finished(status)) => {
                debug!(
                    run_id = run.run_id(),
                    ?status,
                    "run already finished; answering the duplicate fire"
                );
                env.stats.add(Counter::DuplicateFires);
                let kind = match status {
                    RunStatus::Failed => AckKind::Term,
                    RunStatus::Completed | RunStatus::Running => AckKind::Ack,
                };
                run.answer(kind).await;
            }
            Ok(Claim::Queued(other)) => {
                debug!(
                    run_id = run.run_id(),
                    other_seq = other,
                    "another fire of this run is still queued; acking this one"
                );
                env.stats.add(Counter::DuplicateFires);
                run.answer(AckKind::Ack).await;
            }
            Ok(Claim::Exhausted(stored)) => run.give_up(stored.record, stored.revision).await,
            Err(e) => {
                warn!(run_id = run.run_id(), error = %e, "cannot claim the run; it will be delivered again");
                run.nak(CLAIM_RETRY).await;
            }
        }
    }
}

/// Terminates a message that is not a fire, so it is not delivered again.
async fn reject(message: &Message, env: &RunEnv, seq: u64, reason: &str) {
    env.stats.add(Counter::RejectedFires);
    warn!(
        subject = %message.subject,
        stream_seq = seq,
        reason,
        "terminating a message that is not a valid fire (counted in rejected_fires); fix its publisher"
    );
    if let Err(e) = confirm(message, AckKind::Term).await {
        env.stats.add(Counter::UnconfirmedAnswers);
        warn!(subject = %message.subject, stream_seq = seq, error = %e, "the server did not confirm terminating the message");
    }
}

/// How the handler's task ended.
enum Ended {
    /// It returned, panicked or timed out.
    Returned(Output),
    /// The worker's shutdown grace period ended first.
    Released,
}

impl Execution<'_> {
    fn run_id(&self) -> &str {
        self.key.run_id()
    }

    /// Runs the handler of a claimed run, records the result with compare-and-swap and answers.
    async fn owned(
        &self,
        owned: Owned,
        fire: Fire,
        slot: Slot,
        received: Instant,
        handler: BoxedHandler,
        timeout: Duration,
    ) {
        let env = self.env;
        let settings = &env.settings;
        let hold = Arc::new(Hold::new(received, settings.ack_wait));
        let owner = Arc::new(Owner::new(
            env.runs.clone(),
            self.key.clone(),
            owned.revision,
            owned.fresh,
            hold.clone(),
        ));
        let attempt = owned.record.attempt;
        tracing::Span::current().record("attempt", attempt);
        let ctx = WorkflowContext::new(
            fire.run_id.clone(),
            fire.workflow.clone(),
            attempt,
            fire.trigger,
            Step::new(env.steps.clone(), &fire.run_id, owner.clone())
                .metered(env.metrics.clone(), &fire.workflow),
        );
        env.stats.add(Counter::RunsStarted);
        let in_flight = env.metrics.run_started(&fire.workflow);
        let started = std::time::Instant::now();
        let ended = keep(
            self.message,
            &hold,
            settings.progress_every,
            run_handler(
                handler,
                ctx,
                fire.payload,
                timeout,
                env.abort.clone(),
                &env.stats,
            ),
        )
        .await;
        // The handler is done: the next fire may start while this one's record is written, so
        // a slot is idle for no round trip of ours.
        drop(slot);
        drop(in_flight);
        let result = match ended {
            Ended::Returned(result) => result,
            Ended::Released => {
                env.metrics
                    .run_finished(&fire.workflow, RunOutcome::Released, started.elapsed());
                return self.release(owned).await;
            }
        };
        if owner.superseded() {
            return self.superseded().await;
        }

        let mut record = owned.record;
        let (kind, counter) = match result {
            Ok(output) => {
                record.status = RunStatus::Completed;
                record.finished_at = Some(now_seconds());
                record.output = Some(output);
                record.error = None;
                (AckKind::Ack, Counter::RunsCompleted)
            }
            Err(e) if e.is_terminal() || attempt >= settings.max_attempts => {
                warn!(run_id = self.run_id(), attempt, error = %e, "run failed");
                record.status = RunStatus::Failed;
                record.finished_at = Some(now_seconds());
                record.error = Some(shorten_error(e.message()));
                (AckKind::Term, Counter::RunsFailed)
            }
            Err(e) => {
                let delay = backoff(settings.retry_backoff, attempt);
                warn!(run_id = self.run_id(), attempt, error = %e, retry_in = ?delay, "run attempt failed; retrying");
                record.error = Some(shorten_error(e.message()));
                (AckKind::Nak(Some(delay)), Counter::RunsRetried)
            }
        };
        let written = keep(
            self.message,
            &hold,
            settings.progress_every,
            self.write(&record, owned.revision),
        )
        .await;
        match written {
            Ok(()) => {
                env.stats.add(counter);
                let outcome = match counter {
                    Counter::RunsCompleted => RunOutcome::Completed,
                    Counter::RunsFailed => RunOutcome::Failed,
                    _ => RunOutcome::Retried,
                };
                env.metrics
                    .run_finished(&fire.workflow, outcome, started.elapsed());
                self.answer(kind).await;
            }
            Err(e @ RunStoreError::TooLarge { .. }) if record.status == RunStatus::Completed => {
                // Terminal: the same output would be too large on every attempt.
                record.status = RunStatus::Failed;
                record.output = None;
                record.error = Some(format!("the run's output cannot be stored: {e}"));
                warn!(run_id = self.run_id(), error = %e, "run failed: its output is too large");
                match self.write(&record, owned.revision).await {
                    Ok(()) => {
                        env.stats.add(Counter::RunsFailed);
                        env.metrics.run_finished(
                            &fire.workflow,
                            RunOutcome::Failed,
                            started.elapsed(),
                        );
                        self.answer(AckKind::Term).await;
                    }
                    Err(RunStoreError::Conflict { .. }) => self.superseded().await,
                    Err(e) => self.unwritten(&e).await,
                }
            }
            Err(RunStoreError::Conflict { .. }) => self.superseded().await,
            Err(e) => self.unwritten(&e).await,
        }
    }

    /// Writes this execution's record over the claim's `revision`. Transient failures are
    /// retried (the fire is kept meanwhile) until the write lands, is refused, or the worker
    /// releases its runs.
    async fn write(&self, record: &RunRecord, revision: u64) -> Result<(), RunStoreError> {
        let mut delay = Duration::from_millis(100);
        let mut maybe_landed = false;
        loop {
            match self.env.runs.update(&self.key, record, revision).await {
                Ok(_) => return Ok(()),
                Err(e @ RunStoreError::Conflict { .. }) if maybe_landed => {
                    // An earlier try may have been stored before its answer was lost.
                    return match self.env.runs.get(&self.key).await {
                        Ok(Some(stored)) if same_json(&stored.record, record) => Ok(()),
                        _ => Err(e),
                    };
                }
                Err(e) if e.is_permanent() || matches!(e, RunStoreError::Conflict { .. }) => {
                    return Err(e)
                }
                Err(e) => {
                    if *self.env.abort.borrow() {
                        return Err(e);
                    }
                    warn!(run_id = self.run_id(), error = %e, retry_in = ?delay, "cannot write the run record; retrying");
                    maybe_landed = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The run was taken over by another execution: record nothing. Its fire is answered by
    /// the owner (for a redelivery it is the same message); acked here only when the run has
    /// finished, so a fire nobody else holds does not linger.
    async fn superseded(&self) {
        self.env.stats.add(Counter::Superseded);
        info!(run_id = self.run_id(), stream_seq = self.seq, "another execution took this run over (the fire was redelivered after ack_wait while this one still ran); this result is not recorded");
        if let Ok(Some(stored)) = self.env.runs.get(&self.key).await {
            if stored.record.status != RunStatus::Running {
                // Unconfirmed: the owner has most likely answered this very message already.
                let _ = send(self.message, AckKind::Ack).await;
            }
        }
    }

    /// The shutdown grace period ended: give the attempt back and let another worker resume
    /// the run from its stored steps.
    async fn release(&self, owned: Owned) {
        self.env.stats.add(Counter::RunsReleased);
        info!(
            run_id = self.run_id(),
            "worker shutting down; releasing the run to another worker"
        );
        let mut record = owned.record;
        record.attempt = record.attempt.saturating_sub(1);
        if let Err(e) = self
            .env
            .runs
            .update(&self.key, &record, owned.revision)
            .await
        {
            debug!(run_id = self.run_id(), error = %e, "could not give the attempt back");
        }
        let _ = send(self.message, AckKind::Nak(None)).await;
    }

    /// Every attempt was used and the last never finished: record `failed`.
    async fn give_up(&self, mut record: RunRecord, revision: u64) {
        let attempts = record.attempt;
        record.status = RunStatus::Failed;
        record.finished_at = Some(now_seconds());
        record.error = Some(format!(
            "gave up after {attempts} attempts: the worker running attempt {attempts} stopped without finishing it (it crashed, or stalled past ack_wait)"
        ));
        match self.env.runs.update(&self.key, &record, revision).await {
            Ok(_) => {
                warn!(
                    run_id = self.run_id(),
                    attempts, "run failed: its last attempt never finished"
                );
                self.env.stats.add(Counter::RunsFailed);
                self.env.metrics.run_finished(
                    self.key.workflow(),
                    RunOutcome::Failed,
                    Duration::ZERO,
                );
                self.answer(AckKind::Term).await;
            }
            Err(e) => {
                debug!(run_id = self.run_id(), error = %e, "cannot record the run failed; looking again later");
                self.nak(CLAIM_RETRY).await;
            }
        }
    }

    /// The record could not be written: the fire goes back, and the next delivery resumes.
    async fn unwritten(&self, e: &RunStoreError) {
        warn!(run_id = self.run_id(), error = %e, "cannot write the run record; the run will be delivered again");
        self.nak(Duration::from_secs(1)).await;
    }

    /// An ack or term the server confirms; counted when it does not.
    async fn answer(&self, kind: AckKind) {
        if matches!(kind, AckKind::Nak(_)) {
            let _ = send(self.message, kind).await;
            return;
        }
        if let Err(e) = confirm(self.message, kind).await {
            self.env.stats.add(Counter::UnconfirmedAnswers);
            warn!(run_id = self.run_id(), error = %e, "the server did not confirm the answer; a redelivery will find the run record and answer again");
        }
    }

    async fn nak(&self, delay: Duration) {
        if let Err(e) = send(self.message, AckKind::Nak(Some(delay))).await {
            debug!(run_id = self.run_id(), error = %e, "cannot nak; the fire is redelivered after ack_wait");
        }
    }
}

/// Aborts the handler's task when dropped, so a run that is given up (timeout, release, the
/// worker itself dropped) does not keep running in the background past its next `.await`.
struct AbortOnDrop(JoinHandle<Output>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the handler in its own task (so blocking code in it cannot stop the in-progress acks),
/// for at most `timeout`.
async fn run_handler(
    handler: BoxedHandler,
    ctx: WorkflowContext,
    payload: SchedulePayload,
    timeout: Duration,
    mut abort: watch::Receiver<bool>,
    stats: &WorkerStats,
) -> Ended {
    // The handler's own task carries the run's span, so its log lines name the run.
    let mut task = AbortOnDrop(tokio::spawn(
        handler(ctx, payload).instrument(tracing::Span::current()),
    ));
    tokio::select! {
        joined = &mut task.0 => Ended::Returned(match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(WorkflowError::retryable(format!("the handler panicked: {text}")))
            }
            Err(e) => Err(WorkflowError::retryable(format!("the handler's task ended: {e}"))),
        }),
        () = tokio::time::sleep(timeout) => {
            stats.add(Counter::RunsTimedOut);
            Ended::Returned(Err(WorkflowError::retryable(format!(
                "the run did not finish within its timeout of {timeout:?} and was cancelled; raise it with Workflow::timeout or worker.run_timeout_secs, and run blocking code in tokio::task::spawn_blocking"
            ))))
        }
        () = released(&mut abort) => Ended::Released,
    }
}

/// Resolves when in-flight runs must be released.
async fn released(abort: &mut watch::Receiver<bool>) {
    if abort.wait_for(|released| *released).await.is_err() {
        // The worker is gone without a decision: its task is being dropped anyway.
        std::future::pending::<()>().await;
    }
}

/// Whether two records are equal once stored (instants are kept to the second).
fn same_json(a: &RunRecord, b: &RunRecord) -> bool {
    matches!((serde_json::to_value(a), serde_json::to_value(b)), (Ok(x), Ok(y)) if x == y)
}

/// `message`, cut to [`MAX_ERROR_BYTES`] so the record stays small.
fn shorten_error(message: &str) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message.to_string();
    }
    let mut end = MAX_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &message[..end], message.len())
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

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let short = shorten_error(&long);
        assert!(short.len() < MAX_ERROR_BYTES + 40, "{}", short.len());
        assert!(short.ends_with(&format!("({} bytes in all)", long.len())));
        assert_eq!(shorten_error("boom"), "boom");
    }
}
