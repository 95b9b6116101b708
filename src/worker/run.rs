//! One run's lifecycle, from a delivered fire to its confirmed answer.
//!
//! | delivered message                        | what happens                                      | answer            |
//! |------------------------------------------|---------------------------------------------------|-------------------|
//! | not a fire (headers, run id, body)       | logged, counted in `rejected_fires`               | term (confirmed)  |
//! | another run of its schedule executes     | the overlap policy decides (see `overlap.rs`)     |                   |
//! | … policy says skip                       | record `skipped`, naming the run it yielded to    | ack (confirmed)   |
//! | … policy says wait                       | listed as waiting in `polos_overlap`; no record   | nak, 0.2–5 s      |
//! | its run finished (any final status)      | nothing runs                                      | ack / term        |
//! | another fire of its run is still queued  | nothing runs                                      | ack               |
//! | every attempt used, none finished        | record `failed`                                   | term              |
//! | cancel requested before it started       | record `cancelled`                                | term (confirmed)  |
//! | claimed (see `claim.rs`)                 | the handler runs in its own task (below)          |                   |
//! | the claim cannot be decided (KV trouble) | nothing written, no attempt used                  | nak, 1 s          |
//!
//! | handler result                       | record (CAS on the claim's revision)  | answer                   |
//! |--------------------------------------|---------------------------------------|--------------------------|
//! | `Ok(output)`                         | `completed` + output                  | ack (confirmed)          |
//! | output larger than `max_payload`     | `failed`, the error names the limit   | term (confirmed)         |
//! | error after a cancel request         | `cancelled`                           | term (confirmed)         |
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
//!
//! Once a run has its final status, the schedule's overlap record stops naming it active (so a
//! waiting run may start), and a `failed` run pauses its schedule when the schedule asks for
//! that (`pause_on_failure`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Stream as JsStream;
use async_nats::jetstream::{AckKind, Message};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use super::cancel::{cancelled_error, Cancellation};
use super::claim::{claim, Claim, Owned};
use super::context::{Owner, Step};
use super::hold::{answer_unconfirmed, confirm, keep, Hold};
use super::overlap::{wait_delay, Entered, Gate, Me, Ticket};
use super::slots::Slot;
use super::stats::{Counter, WorkerStats};
use super::views::{Cancels, Lookup, Policies};
use super::workflow::{BoxedHandler, Output};
use super::{RetryPolicy, WorkflowContext, WorkflowError};
use crate::metrics::{Metrics, RunOutcome};
use crate::model::time::now_seconds;
use crate::model::{
    schedule_kv_key, validate_key, CancelRecord, Fire, OverlapPolicy, RunRecord, RunStatus,
    SchedulePayload,
};
use crate::store::{
    CancelStore, OverlapStore, RunCreated, RunKey, RunStore, ScheduleStore, StepStore, StoreError,
};

/// Settings every run of a worker shares.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
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
    /// `polos_overlap`: which run of a schedule executes, which wait.
    pub overlap: OverlapStore,
    /// `polos_cancels`: cancel requests (read while the view has not caught up; written by
    /// `cancel_other`).
    pub cancels: CancelStore,
    /// `polos_schedules`: a schedule's policy while the view has not caught up, and pausing a
    /// schedule after a failure.
    pub schedules: ScheduleStore,
    /// The overlap policy of each schedule of the worker's workflows.
    pub policies: Arc<Policies>,
    /// The cancel requests of the worker's workflows.
    pub cancel_view: Arc<Cancels>,
    /// Shared settings.
    pub settings: RunSettings,
    /// Becomes `true` when in-flight runs must be released (the shutdown grace period ended).
    pub abort: watch::Receiver<bool>,
    /// Counters.
    pub stats: WorkerStats,
    /// Where runs, retries and durations are counted (`/metrics`).
    pub metrics: Metrics,
}

/// One workflow's handler and how its runs are tried.
pub(crate) struct RunSpec {
    /// The handler.
    pub handler: BoxedHandler,
    /// How long one attempt may run.
    pub timeout: Duration,
    /// How often a run is tried and how long between tries.
    pub retry: RetryPolicy,
}

/// Delay before a fire whose claim could not be decided is delivered again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);
/// The longest run error kept in a record (a handler may return megabytes of text).
const MAX_ERROR_BYTES: usize = 16 * 1024;

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
    spec: Arc<RunSpec>,
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
    run.decide(fire, slot, received, &spec)
        .instrument(span)
        .await;
}

/// What the overlap policy let a fire do.
enum Admitted {
    /// Claim the run; the ticket when the overlap record names it active.
    Claim(Option<Ticket>),
    /// Answered already (skipped, or waiting).
    Answered,
}

impl Execution<'_> {
    /// Applies the overlap policy, claims the run of `fire` and acts on what the claim says.
    async fn decide(&self, fire: Fire, slot: Slot, received: Instant, spec: &RunSpec) {
        let run = self;
        let env = self.env;
        let cancel = Cancellation::new(
            env.cancel_view.clone(),
            env.cancels.clone(),
            self.key.clone(),
        );
        let policy = match self.policy(&fire).await {
            Ok(policy) => policy,
            Err(e) => {
                warn!(run_id = run.run_id(), error = %e, "cannot read the schedule's overlap policy; the fire will be delivered again");
                return run.nak(CLAIM_RETRY).await;
            }
        };
        let cancelled = cancel.requested().await;
        let ticket = match (policy, &cancelled) {
            // A cancelled run is only recorded: no turn to wait for.
            (OverlapPolicy::AllowAll, _) | (_, Some(_)) => None,
            (policy, None) => match self.admit(policy, &fire).await {
                Admitted::Claim(ticket) => ticket,
                Admitted::Answered => return,
            },
        };
        let overlapped = policy != OverlapPolicy::AllowAll;
        match claim(
            &env.runs,
            &env.stream,
            &run.key,
            &fire,
            run.seq,
            spec.retry.max_attempts,
        )
        .await
        {
            Ok(Claim::Owned(owned)) => match cancelled {
                Some(reason) => {
                    let cancelled_before = self.cancel_unstarted(owned, reason.as_deref()).await;
                    if cancelled_before && overlapped {
                        self.leave(&fire, ticket).await;
                    }
                }
                None => {
                    run.owned(
                        owned, fire, slot, received, spec, cancel, overlapped, ticket,
                    )
                    .await
                }
            },
            Ok(Claim::Finished(status)) => {
                debug!(
                    run_id = run.run_id(),
                    ?status,
                    "run already finished; answering the duplicate fire"
                );
                env.stats.add(Counter::DuplicateFires);
                if overlapped {
                    self.leave(&fire, ticket).await;
                }
                run.answer(answer_for(status)).await;
            }
            Ok(Claim::Queued(other)) => {
                // The overlap record (if it names this run) stays: the queued fire runs it.
                debug!(
                    run_id = run.run_id(),
                    other_seq = other,
                    "another fire of this run is still queued; acking this one"
                );
                env.stats.add(Counter::DuplicateFires);
                run.answer(AckKind::Ack).await;
            }
            Ok(Claim::Exhausted(stored)) => {
                if let Some(failed) = run.give_up(stored.record, stored.revision).await {
                    if overlapped {
                        self.leave(&fire, ticket).await;
                    }
                    self.pause_after_failure(&failed).await;
                }
            }
            Err(e) => {
                warn!(run_id = run.run_id(), error = %e, "cannot claim the run; it will be delivered again");
                run.nak(CLAIM_RETRY).await;
            }
        }
    }

    /// The overlap policy of the fire's schedule: from the followed view, or read from KV while
    /// the view has not caught up. A fire whose key is not a schedule key has no schedule to
    /// overlap with.
    async fn policy(&self, fire: &Fire) -> Result<OverlapPolicy, crate::store::StoreError> {
        let key = &fire.payload.key;
        if validate_key(key).is_err() {
            return Ok(OverlapPolicy::AllowAll);
        }
        let kv_key = schedule_kv_key(&fire.workflow, key);
        match self.env.policies.lookup(&fire.workflow, &kv_key) {
            Lookup::Known(policy) => Ok(policy.unwrap_or_default()),
            Lookup::Unknown => Ok(self
                .env
                .schedules
                .get(&fire.workflow, key)
                .await?
                .and_then(|stored| stored.record.ok())
                .and_then(|record| record.overlap)
                .unwrap_or_default()),
        }
    }

    fn gate<'a>(&'a self, fire: &'a Fire) -> Gate<'a> {
        Gate {
            overlap: &self.env.overlap,
            runs: &self.env.runs,
            stream: &self.env.stream,
            workflow: &fire.workflow,
            key: &fire.payload.key,
        }
    }

    /// Asks the overlap record whether the fire may start; skips or parks it when not.
    async fn admit(&self, policy: OverlapPolicy, fire: &Fire) -> Admitted {
        let me = Me {
            run_id: fire.run_id.clone(),
            scheduled_for: fire.payload.timestamp,
            seq: self.seq,
        };
        let gate = self.gate(fire);
        match gate.enter(policy, &me).await {
            Ok(Entered::Start(ticket)) => Admitted::Claim(Some(ticket)),
            Ok(Entered::Skip(yielded_to)) => self.skip(fire, yielded_to, &gate).await,
            Ok(Entered::Wait(cancel)) => {
                if let Some(other) = cancel {
                    self.cancel_other(fire, &other).await;
                }
                let delivered = self.message.info().map_or(1, |i| i.delivered);
                let delay = wait_delay(delivered);
                debug!(run_id = self.run_id(), ?policy, retry_in = ?delay, "another run of the schedule is executing; this one waits");
                self.env.stats.add(Counter::RunsWaited);
                self.nak(delay).await;
                Admitted::Answered
            }
            Err(e) => {
                warn!(run_id = self.run_id(), error = %e, "cannot apply the overlap policy; the fire will be delivered again");
                self.nak(CLAIM_RETRY).await;
                Admitted::Answered
            }
        }
    }

    /// Records the run `skipped` (it never runs) and counts the skip in the overlap record. A
    /// run that already has a record is not skipped: a finished one is a duplicate, a started
    /// one resumes (it began before the schedule was busy).
    async fn skip(&self, fire: &Fire, yielded_to: String, gate: &Gate<'_>) -> Admitted {
        let now = now_seconds();
        let record = RunRecord {
            finished_at: Some(now),
            yielded_to: Some(yielded_to.clone()),
            ..RunRecord::of_fire(fire, self.seq, RunStatus::Skipped, 0, now)
        };
        match self.env.runs.create(&self.key, &record).await {
            Ok(RunCreated::New { .. }) => {
                if let Err(e) = gate.count_skip().await {
                    warn!(run_id = self.run_id(), error = %e, "the skipped run is recorded but could not be counted in polos_overlap");
                }
                info!(
                    run_id = self.run_id(),
                    yielded_to,
                    "skipped: another run of the schedule is executing (overlap policy)"
                );
                self.env.stats.add(Counter::RunsSkipped);
                self.env
                    .metrics
                    .run_finished(&fire.workflow, RunOutcome::Skipped, Duration::ZERO);
                self.answer(AckKind::Ack).await;
                Admitted::Answered
            }
            Ok(RunCreated::Exists {
                record: Ok(existing),
                ..
            }) if existing.status.is_finished() => {
                self.env.stats.add(Counter::DuplicateFires);
                self.answer(answer_for(existing.status)).await;
                Admitted::Answered
            }
            Ok(RunCreated::Exists { .. }) => Admitted::Claim(None),
            Err(e) => {
                warn!(run_id = self.run_id(), error = %e, "cannot record the run skipped; the fire will be delivered again");
                self.nak(CLAIM_RETRY).await;
                Admitted::Answered
            }
        }
    }

    /// `cancel_other`: asks the active run `other` to cancel (once; the request stays).
    async fn cancel_other(&self, fire: &Fire, other: &str) {
        let Ok(key) = RunKey::new(&fire.workflow, other) else {
            return;
        };
        if let Lookup::Known(Some(_)) = self.env.cancel_view.lookup(&fire.workflow, key.kv_key()) {
            return;
        }
        let record = CancelRecord {
            run_id: other.to_string(),
            workflow: fire.workflow.clone(),
            requested_at: now_seconds(),
            reason: Some(format!(
                "overlap policy cancel_other: run {} of the same schedule is waiting to start",
                fire.run_id
            )),
        };
        match self.env.cancels.request(&key, &record).await {
            Ok(true) => info!(
                run_id = self.run_id(),
                cancelled = other,
                "asked the executing run of the schedule to cancel (overlap policy cancel_other)"
            ),
            Ok(false) => {}
            Err(e) => {
                warn!(run_id = self.run_id(), other, error = %e, "cannot ask the executing run to cancel; asking again on the next delivery")
            }
        }
    }

    /// Clears the overlap record's active run if it is this one (it has its final status). A
    /// failure only delays the next run of the schedule: the next fire finds the entry stale.
    async fn leave(&self, fire: &Fire, ticket: Option<Ticket>) {
        if validate_key(&fire.payload.key).is_err() {
            return;
        }
        if let Err(e) = self.gate(fire).leave(&fire.run_id, ticket).await {
            warn!(run_id = self.run_id(), error = %e, "cannot clear the run from polos_overlap; the next fire of the schedule will find it finished");
        }
    }

    /// Pauses the run's schedule when it asks to be paused on failure.
    async fn pause_after_failure(&self, record: &RunRecord) {
        if validate_key(&record.key).is_err() {
            return;
        }
        let note = format!(
            "paused on failure: run {} failed after {} attempt(s): {}",
            record.run_id,
            record.attempt,
            record
                .error
                .as_deref()
                .map(|e| shorten_to(e, 512))
                .unwrap_or_default()
        );
        let mut delay = Duration::from_millis(200);
        for tries in 1..=5 {
            match self
                .env
                .schedules
                .pause_after_failure(&record.workflow, &record.key, &note, now_seconds())
                .await
            {
                Ok(true) => {
                    self.env.stats.add(Counter::SchedulesPaused);
                    warn!(run_id = self.run_id(), key = %record.key, "schedule paused: its run failed and the schedule has pause_on_failure");
                    return;
                }
                Ok(false) => return,
                Err(e) if tries < 5 => {
                    debug!(run_id = self.run_id(), error = %e, "cannot pause the schedule yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::error!(run_id = self.run_id(), key = %record.key, error = %e, "the run failed and its schedule has pause_on_failure, but pausing it failed; pause it by hand (`polos schedules pause`)");
                }
            }
        }
    }

    /// A run cancelled before its handler started: recorded `cancelled`. Returns whether it
    /// was recorded.
    async fn cancel_unstarted(&self, owned: Owned, reason: Option<&str>) -> bool {
        let mut record = owned.record;
        record.status = RunStatus::Cancelled;
        record.attempt = record.attempt.saturating_sub(1);
        record.finished_at = Some(now_seconds());
        record.error = Some(cancelled_error(reason));
        match self.write(&record, owned.revision).await {
            Ok(()) => {
                info!(run_id = self.run_id(), "cancelled before it started");
                self.env.stats.add(Counter::RunsCancelled);
                self.env.metrics.run_finished(
                    self.key.workflow(),
                    RunOutcome::Cancelled,
                    Duration::ZERO,
                );
                self.answer(AckKind::Term).await;
                true
            }
            Err(StoreError::Conflict { .. }) => {
                self.superseded().await;
                false
            }
            Err(e) => {
                self.unwritten(&e).await;
                false
            }
        }
    }
}

/// How a fire of a run with a final status is answered: a failure or a cancel terminates it
/// (visible as a terminated message), the rest are acked.
fn answer_for(status: RunStatus) -> AckKind {
    match status {
        RunStatus::Failed | RunStatus::Cancelled => AckKind::Term,
        RunStatus::Completed | RunStatus::Running | RunStatus::Skipped => AckKind::Ack,
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
    #[allow(clippy::too_many_arguments)]
    async fn owned(
        &self,
        owned: Owned,
        fire: Fire,
        slot: Slot,
        received: Instant,
        spec: &RunSpec,
        cancel: Cancellation,
        overlapped: bool,
        ticket: Option<Ticket>,
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
                .metered(env.metrics.clone(), &fire.workflow)
                .cancellable(cancel.clone()),
            cancel.clone(),
        );
        let payload = fire.payload.clone();
        env.stats.add(Counter::RunsStarted);
        let in_flight = env.metrics.run_started(&fire.workflow);
        let started = std::time::Instant::now();
        let ended = keep(
            self.message,
            &hold,
            settings.progress_every,
            run_handler(
                spec.handler.clone(),
                ctx,
                payload,
                spec.timeout,
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
        let cancelled = match &result {
            Err(_) => cancel.requested().await,
            Ok(_) => None,
        };
        let (kind, counter) = match result {
            Ok(output) => {
                record.status = RunStatus::Completed;
                record.finished_at = Some(now_seconds());
                record.output = Some(output);
                record.error = None;
                (AckKind::Ack, Counter::RunsCompleted)
            }
            Err(e) if cancelled.is_some() => {
                let reason = cancelled.flatten();
                info!(run_id = self.run_id(), attempt, error = %e, "run cancelled");
                record.status = RunStatus::Cancelled;
                record.finished_at = Some(now_seconds());
                record.error = Some(cancelled_error(reason.as_deref()));
                (AckKind::Term, Counter::RunsCancelled)
            }
            Err(e) if e.is_terminal() || attempt >= spec.retry.max_attempts => {
                warn!(run_id = self.run_id(), attempt, error = %e, "run failed");
                record.status = RunStatus::Failed;
                record.finished_at = Some(now_seconds());
                record.error = Some(shorten_error(e.message()));
                (AckKind::Term, Counter::RunsFailed)
            }
            Err(e) => {
                let delay = spec.retry.delay(self.run_id(), attempt);
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
                    Counter::RunsCancelled => RunOutcome::Cancelled,
                    _ => RunOutcome::Retried,
                };
                env.metrics
                    .run_finished(&fire.workflow, outcome, started.elapsed());
                if record.status.is_finished() {
                    // The answer and the overlap record are independent: the next run of the
                    // schedule may start while the server confirms this one's ack.
                    if overlapped {
                        tokio::join!(self.answer(kind), self.leave(&fire, ticket));
                    } else {
                        self.answer(kind).await;
                    }
                    if record.status == RunStatus::Failed {
                        self.pause_after_failure(&record).await;
                    }
                } else {
                    self.answer(kind).await;
                }
            }
            Err(e @ StoreError::TooLarge { .. }) if record.status == RunStatus::Completed => {
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
                        if overlapped {
                            self.leave(&fire, ticket).await;
                        }
                        self.pause_after_failure(&record).await;
                    }
                    Err(StoreError::Conflict { .. }) => self.superseded().await,
                    Err(e) => self.unwritten(&e).await,
                }
            }
            Err(StoreError::Conflict { .. }) => self.superseded().await,
            Err(e) => self.unwritten(&e).await,
        }
    }

    /// Writes this execution's record over the claim's `revision`. Transient failures are
    /// retried (the fire is kept meanwhile) until the write lands, is refused, or the worker
    /// releases its runs.
    async fn write(&self, record: &RunRecord, revision: u64) -> Result<(), StoreError> {
        let mut delay = Duration::from_millis(100);
        let mut maybe_landed = false;
        loop {
            match self.env.runs.update(&self.key, record, revision).await {
                Ok(_) => return Ok(()),
                Err(e @ StoreError::Conflict { .. }) if maybe_landed => {
                    // An earlier try may have been stored before its answer was lost.
                    return match self.env.runs.get(&self.key).await {
                        Ok(Some(stored)) if same_json(&stored.record, record) => Ok(()),
                        _ => Err(e),
                    };
                }
                Err(e) if e.is_permanent() || matches!(e, StoreError::Conflict { .. }) => {
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
                let _ = answer_unconfirmed(self.message, AckKind::Ack).await;
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
        let _ = answer_unconfirmed(self.message, AckKind::Nak(None)).await;
    }

    /// Every attempt was used and the last never finished: record `failed`. Returns the
    /// record when it was written.
    async fn give_up(&self, mut record: RunRecord, revision: u64) -> Option<RunRecord> {
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
                Some(record)
            }
            Err(e) => {
                debug!(run_id = self.run_id(), error = %e, "cannot record the run failed; looking again later");
                self.nak(CLAIM_RETRY).await;
                None
            }
        }
    }

    /// The record could not be written: the fire goes back, and the next delivery resumes.
    async fn unwritten(&self, e: &StoreError) {
        warn!(run_id = self.run_id(), error = %e, "cannot write the run record; the run will be delivered again");
        self.nak(Duration::from_secs(1)).await;
    }

    /// An ack or term the server confirms; counted when it does not.
    async fn answer(&self, kind: AckKind) {
        if matches!(kind, AckKind::Nak(_)) {
            let _ = answer_unconfirmed(self.message, kind).await;
            return;
        }
        if let Err(e) = confirm(self.message, kind).await {
            self.env.stats.add(Counter::UnconfirmedAnswers);
            warn!(run_id = self.run_id(), error = %e, "the server did not confirm the answer; a redelivery will find the run record and answer again");
        }
    }

    async fn nak(&self, delay: Duration) {
        if let Err(e) = answer_unconfirmed(self.message, AckKind::Nak(Some(delay))).await {
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
    shorten_to(message, MAX_ERROR_BYTES)
}

/// `message`, cut to at most `limit` bytes on a char boundary, saying how long it was.
fn shorten_to(message: &str, limit: usize) -> String {
    if message.len() <= limit {
        return message.to_string();
    }
    let mut end = limit;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &message[..end], message.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let short = shorten_error(&long);
        assert!(short.len() < MAX_ERROR_BYTES + 40, "{}", short.len());
        assert!(short.ends_with(&format!("({} bytes in all)", long.len())));
        assert_eq!(shorten_error("boom"), "boom");
    }
}
