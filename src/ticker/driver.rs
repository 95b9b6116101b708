//! The firing loop: one task owns the schedule table, applies changes from the loader, follows
//! the lease through the [`Phase`] machine, and fires on a timer set to the earliest due instant.
//!
//! The loop never awaits NATS itself: fires go to the publishing task (`publisher`) and state to
//! the state writer (`state`), and their results come back as events. So a slow stream, a long
//! catch-up round or a reconnect never stops change handling or the lease.
//!
//! A fire's life: the timer finds a schedule due → [`resolve_due`] decides (on time, or the
//! catch-up policy) → the schedule leaves the timeline (`firing`) and its fire joins the queue →
//! it is built and handed to the publisher (at most [`MAX_IN_FLIGHT`] at once) → stored: the
//! schedule records it, is armed at its next instant and its state is queued; held or failed:
//! it goes back to the front of the queue and publishing pauses for a backoff (the whole queue,
//! so an outage costs a probe per backoff, not a publish per fire), for as long as this replica
//! leads. When leadership ends everything not yet stored is dropped; the successor fires it
//! through catch-up.
//!
//! Per-schedule policies ride on that life:
//! - **jitter**: the timeline holds each schedule at its jittered time (instant + offset); the
//!   fire still carries the nominal instant, and "late" is measured from the jittered time.
//! - **bounds**: arming never goes before `start_at` nor past `end_at`, and a schedule that has
//!   fired `max_runs` times is armed at nothing; either way it shows as `ended`. A `max_runs`
//!   fire is recorded ahead (state `pending`, confirmed by the state writer) before it joins the
//!   queue, so its count survives a crash exactly (see `state`).
//! - **back-fill**: instants requested by `polos.schedules.backfill` wait in a second queue,
//!   drained at `backfill_rate` and only while the on-time queue is empty. A back-filled fire is
//!   its schedule's one fire out; an on-time instant that comes due meanwhile is decided as of
//!   that moment once the back-fill is stored. Progress goes to the state record, so a successor
//!   continues where this replica stopped.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::Store;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::catchup::{continue_after, resolve_due, CatchupSettings, Jitter, Step, LATE_GRACE};
use super::clock::Clock;
use super::error::TickerError;
use super::fence::Leadership;
use super::index::{due_at, Entry, Index, DEFAULT_WINDOW};
use super::loader::{self, Backoff, Change, Schedule, SchedulePolicy};
use super::phase::{Action, Event, Phase};
use super::publisher::{Batch, Outgoing, Published, Publisher};
use super::rate::Rate;
use super::state::StateWriter;
use super::status::TickerStatus;
use crate::config::SchedulerConfig;
use crate::cron::CronSchedule;
use crate::metrics::Metrics;
use crate::model::{
    jitter_seed, names::runs_subject, next_backfill, previous_instant, push_schedule_id,
    split_schedule_kv_key, BackfillProgress, Ended, FireEncoder, PayloadRef, ScheduleState,
    Trigger,
};

/// Most fires handed to the publisher and not yet answered. Bounds what a round of a million
/// fires holds in memory as built messages; the rest wait as compact queue entries.
const MAX_IN_FLIGHT: usize = 8192;

/// Fires per batch handed to the publisher.
const BATCH: usize = 1024;

/// First pause of publishing after a failed batch; doubles per failed batch in a row up to
/// [`MAX_PUBLISH_RETRY`].
const FIRST_PUBLISH_RETRY: Duration = Duration::from_millis(50);
/// Longest pause between two attempts to publish.
const MAX_PUBLISH_RETRY: Duration = Duration::from_secs(2);
/// Pause before offering held fires (fenced, disconnected) again.
const HELD_RETRY: Duration = Duration::from_millis(100);
/// Least time between two warnings about failing publishes.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Most changes applied between two checks of the timer, so a flood of updates cannot delay
/// due fires.
const CHANGE_BATCH: usize = 4096;

/// One fire handed to publishing: which schedule, which instant, as what.
#[derive(Debug)]
pub(super) struct Due {
    /// The schedule's slot in the table.
    slot: usize,
    /// Its KV key, compared by pointer: a slot reused by another schedule is not this one.
    kv_key: Arc<str>,
    /// The scheduled instant.
    instant: DateTime<Utc>,
    /// Why it fires.
    trigger: Trigger,
    /// The lease term it was planned under.
    term: u64,
    /// The record revision it was planned from: a different one when it is stored means the
    /// schedule changed while the fire was out.
    revision: u64,
    /// Its jitter offset: lateness is measured from `instant` + this.
    offset_ms: u32,
    /// A `max_runs` fire a predecessor recorded as `pending`: it goes out even if the schedule
    /// was paused since (the predecessor may have published it; its count must stay exact).
    committed: bool,
}

/// A fire handed to the publisher, with what building it computed.
#[derive(Debug)]
pub(super) struct Sent {
    /// The fire.
    due: Due,
    /// Its schedule's next instant after it (the payload's `upcoming`, `None` when the cron
    /// has no later instant), so recording the fire does not compute it again.
    next: Option<DateTime<Utc>>,
    /// Its schedule id, for the state record's `last_run_id` (hashed once per fire, not twice;
    /// kept here rather than per schedule, where a million copies would cost 30 MB).
    id: IdText,
}

/// A schedule id (`sch_` + 26 base32 characters) kept inline.
#[derive(Debug, Clone, Copy)]
struct IdText {
    bytes: [u8; 30],
    len: usize,
}

impl IdText {
    fn new(id: &str) -> Self {
        let mut bytes = [0u8; 30];
        let len = id.len().min(bytes.len());
        bytes[..len].copy_from_slice(&id.as_bytes()[..len]);
        IdText { bytes, len }
    }

    fn as_str(&self) -> &str {
        // Ids are ASCII, so any prefix of one is UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// How often the status and metrics show the count of schedules while they are loading.
const LOADING_STATUS: Duration = Duration::from_millis(100);

/// A background read of every state record for the takeover of one term.
struct StateRead {
    /// The term it is for.
    term: u64,
    /// Failed reads before this one (for the backoff).
    attempt: u32,
    /// The read.
    task: JoinHandle<Result<HashMap<Arc<str>, Bytes>, TickerError>>,
}

/// What one firing round did, for its summary line.
#[derive(Debug, Default)]
struct Round {
    fired: u64,
    duplicates: u64,
    catchup: u64,
    backfilled: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    worst_late_ms: i64,
}

/// What the loop is connected to (built by `runner`).
pub(super) struct Wiring {
    /// Source of schedule time.
    pub clock: Arc<dyn Clock>,
    /// The publishing task.
    pub publisher: Publisher<Sent>,
    /// `polos_schedule_state`.
    pub states: Store,
    /// `[scheduler]` settings.
    pub defaults: SchedulerConfig,
    /// What the lease task says.
    pub leadership: watch::Receiver<Leadership>,
    /// Tells the lease task the table is loaded.
    pub ready: watch::Sender<bool>,
    /// Where status snapshots go.
    pub status: watch::Sender<TickerStatus>,
    /// Where fires, misses and leadership are counted.
    pub metrics: Metrics,
}

pub(super) struct Loop {
    /// Every schedule and the timeline.
    index: Index,
    /// Source of schedule time.
    clock: Arc<dyn Clock>,
    /// `polos_schedule_state`, read on takeover.
    states: Store,
    /// Background writer of `polos_schedule_state`; hands back `max_runs` fires once their
    /// `pending` state landed.
    writer: StateWriter<Due>,
    /// Global catch-up defaults.
    defaults: SchedulerConfig,
    /// Where the ticker is: loading, standby, taking over, leading.
    phase: Phase,
    /// What the lease task says (term, deadline).
    leadership: watch::Receiver<Leadership>,
    /// Tells the lease task the table is loaded, so it may compete.
    ready: watch::Sender<bool>,
    /// The state read of a takeover in progress.
    state_read: Option<StateRead>,
    /// Decided fires waiting to be handed to the publisher, in order (failed ones go back to
    /// the front).
    queue: VecDeque<Due>,
    /// Publishing waits until then after a failure (no dispatch before).
    paused_until: Option<Instant>,
    /// Failed batches in a row, for the backoff.
    failed_rounds: u32,
    /// When failing publishes were last warned about.
    warned_at: Option<Instant>,
    /// Fires handed to the publisher and not yet answered.
    in_flight: usize,
    /// Schedules with back-fill work, each once (`Policy::backfill_queued`), served in turn
    /// while no on-time fire waits.
    backfills: VecDeque<(usize, Arc<str>)>,
    /// How fast back-filled fires may go out (`scheduler.backfill_rate`).
    backfill_rate: Rate,
    /// Back-filling waits until then for the rate (no back-fill dispatch before).
    backfill_wake: Option<Instant>,
    /// The publishing task.
    publisher: Publisher<Sent>,
    /// Writes fire bodies and headers into reused buffers.
    encoder: FireEncoder,
    /// The schedule id of the fire being built (a reused buffer).
    id: String,
    /// `polos.runs.<workflow>` of the workflow fired last, built once per workflow and round
    /// rather than once per fire.
    subject: Option<(Arc<str>, async_nats::Subject)>,
    /// The round being fired, for its summary line.
    round: Round,
    /// Where [`TickerStatus`] snapshots go.
    status: watch::Sender<TickerStatus>,
    /// When the status last changed while loading (see [`Loop::publish_status`]).
    status_at: Instant,
    /// Where fires, misses, leadership and schedules are counted (`/metrics`).
    metrics: Metrics,
}

impl Loop {
    /// A loop that is loading, with an empty table.
    pub(super) fn new(w: Wiring) -> Self {
        Loop {
            index: Index::default(),
            clock: w.clock,
            writer: StateWriter::spawn(w.states.clone(), w.leadership.clone()),
            states: w.states,
            backfills: VecDeque::new(),
            backfill_rate: Rate::new(w.defaults.backfill_rate),
            backfill_wake: None,
            defaults: w.defaults,
            phase: Phase::Loading,
            leadership: w.leadership,
            ready: w.ready,
            state_read: None,
            queue: VecDeque::new(),
            paused_until: None,
            failed_rounds: 0,
            warned_at: None,
            in_flight: 0,
            publisher: w.publisher,
            encoder: FireEncoder::default(),
            id: String::with_capacity(32),
            subject: None,
            round: Round::default(),
            status: w.status,
            status_at: Instant::now(),
            metrics: w.metrics,
        }
    }

    /// Stops firing for good and hands back what outlives the loop: the state writer (to flush)
    /// and the status channel. Fires still in flight have had their chance to be recorded.
    pub(super) fn finish(self) -> (StateWriter<Due>, watch::Sender<TickerStatus>) {
        self.status.send_modify(|s| {
            s.active = false;
            s.next_fire = None;
        });
        if let Some(read) = self.state_read {
            read.task.abort();
        }
        (self.writer, self.status)
    }

    /// Applies changes, follows leadership and fires until `shutdown` completes.
    pub(super) async fn run_loop<F>(
        &mut self,
        mut changes: mpsc::Receiver<Vec<Change>>,
        shutdown: F,
    ) -> Result<(), TickerError>
    where
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        loop {
            if self.phase.firing() {
                let now = self.clock.now();
                if self.index.earliest().is_some_and(|t| t <= now) {
                    self.collect_due(now);
                }
                self.dispatch();
            }
            self.writer
                .publishing(self.in_flight > 0 || !self.queue.is_empty());
            self.publish_status();
            let timer = match self.index.earliest().filter(|_| self.phase.firing()) {
                Some(t) => self.clock.sleep_until(t),
                None => Box::pin(std::future::pending()),
            };
            let resume_at = self.paused_until.filter(|_| self.phase.firing());
            let backfill_at = self.backfill_wake.filter(|_| self.phase.firing());
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(results) = self.publisher.results.recv() => self.published(results),
                Some(due) = self.writer.confirmed.recv() => self.recorded_ahead(due),
                changed = self.leadership.changed() => {
                    if changed.is_err() {
                        return Err(TickerError::Task { task: "lease" });
                    }
                    let l = *self.leadership.borrow_and_update();
                    self.transition(Event::Lease(l.leading().then_some(l.term)));
                }
                read = join_read(&mut self.state_read) => self.states_read(read),
                batch = changes.recv() => {
                    let Some(batch) = batch else {
                        return Err(TickerError::Task {
                            task: "schedule loader",
                        });
                    };
                    let mut applied = batch.len();
                    // Both clocks once per batch (a batch is applied in well under a
                    // millisecond): two clock reads per schedule showed in a cold start.
                    let now = (SystemTime::now(), self.clock.now());
                    batch.into_iter().for_each(|c| self.apply(c, now));
                    while applied < CHANGE_BATCH {
                        match changes.try_recv() {
                            Ok(batch) => {
                                applied += batch.len();
                                batch.into_iter().for_each(|c| self.apply(c, now));
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep_until_opt(resume_at) => self.paused_until = None,
                _ = sleep_until_opt(backfill_at) => self.backfill_wake = None,
                _ = timer => {}
            }
        }
        self.drain_in_flight().await;
        Ok(())
    }

    /// On shutdown: no new fires; wait (bounded) for the answers to fires already sent, so
    /// their state is written before the lease is released.
    async fn drain_in_flight(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        self.queue.clear();
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, self.publisher.results.recv()).await {
                Ok(Some(results)) => self.published(results),
                _ => break,
            }
        }
    }

    /// Moves the phase machine and carries out the transition's action.
    fn transition(&mut self, event: Event) {
        let (next, action) = self.phase.on(event);
        if next != self.phase {
            debug!(from = ?self.phase, to = ?next, ?event, "ticker phase");
        }
        self.phase = next;
        self.metrics.leading(self.phase.term().is_some());
        match action {
            Action::None => {}
            Action::Compete => {
                info!(
                    schedules = self.index.len(),
                    "loaded all schedules; competing for the lease"
                );
                self.ready.send_replace(true);
            }
            Action::ReadStates => {
                self.stop_firing();
                if let Some(term) = self.phase.term() {
                    self.start_state_read(term, 0);
                }
            }
            Action::StartFiring => {}
            Action::StandDown => {
                self.stop_firing();
                info!(
                    unpublished = self.in_flight,
                    "not leading: stopped firing (anything not yet stored is fired by the next leader)"
                );
            }
        }
    }

    /// Leaves firing: aborts a takeover's read, disarms every schedule and forgets fires not
    /// yet stored. Fires in flight still report back; they are recorded in memory only.
    fn stop_firing(&mut self) {
        if let Some(read) = self.state_read.take() {
            read.task.abort();
        }
        self.index.disarm_all();
        self.queue.clear();
        self.backfills.clear();
        self.backfill_wake = None;
        self.paused_until = None;
        self.failed_rounds = 0;
        self.end_round();
    }

    /// Reads every state record in the background (after a backoff when retrying).
    fn start_state_read(&mut self, term: u64, attempt: u32) {
        let states = self.states.clone();
        let delay = if attempt == 0 {
            Duration::ZERO
        } else {
            let mut b = Backoff::default();
            (1..attempt).for_each(|_| {
                b.next();
            });
            b.next()
        };
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            loader::load_all(&states).await
        });
        self.state_read = Some(StateRead {
            term,
            attempt,
            task,
        });
    }

    /// The takeover's state read finished.
    fn states_read(&mut self, read: (u64, u32, ReadResult)) {
        let (term, attempt, result) = read;
        match result {
            Ok(raw) => {
                let (_, action) = self.phase.on(Event::StatesRead(term));
                if action == Action::StartFiring {
                    self.transition(Event::StatesRead(term));
                    self.take_over(term, raw);
                }
            }
            Err(e) => {
                warn!(error = %e, attempt = attempt + 1, "cannot read the schedule states to take over; retrying");
                if self.phase == Phase::TakingOver(term) {
                    self.start_state_read(term, attempt + 1);
                }
            }
        }
    }

    fn publish_status(&mut self) {
        let active = self.phase.firing();
        let loaded = self.phase != Phase::Loading;
        let schedules = self.index.len();
        // While loading, only the count moves, a thousand times a second at a cold start, and
        // every change wakes each status watcher: count at most every `LOADING_STATUS`.
        if !loaded {
            if self.status_at.elapsed() < LOADING_STATUS {
                return;
            }
            self.status_at = Instant::now();
        }
        self.metrics.schedules_loaded(schedules);
        let next_fire = self.index.earliest().filter(|_| active);
        self.status.send_if_modified(|s| {
            let changed = s.active != active
                || s.loaded != loaded
                || s.schedules != schedules
                || s.next_fire != next_fire;
            s.active = active;
            s.loaded = loaded;
            s.schedules = schedules;
            s.next_fire = next_fire;
            changed
        });
    }

    fn settings(&self, e: &Entry) -> CatchupSettings {
        let policy = e.policy.as_deref();
        CatchupSettings {
            policy: e.catchup_policy.unwrap_or(self.defaults.catchup_policy),
            window: secs(match e.catchup_window_secs {
                DEFAULT_WINDOW => self.defaults.catchup_window_secs,
                own => u64::from(own),
            }),
            max_fires: self.defaults.catchup_max_fires,
            jitter: self.jitter(e),
            start: policy.and_then(|p| p.start_at),
            end: policy.and_then(|p| p.end_at),
        }
    }

    /// The schedule's jitter (its own `jitter_secs`, else the default). The seed needs the
    /// schedule id, a SHA-256: only computed when there is jitter at all.
    fn jitter(&self, e: &Entry) -> Jitter {
        let secs = e
            .policy
            .as_deref()
            .and_then(|p| p.jitter_secs)
            .map_or(self.defaults.jitter_secs, u64::from);
        if secs == 0 {
            return Jitter::default();
        }
        Jitter {
            seed: jitter_seed(&e.schedule_id()),
            secs,
        }
    }

    /// Arms `slot` at the nominal instant `next` (`None` disarms it) at its jittered time, and
    /// records why it ended (`ended`), or that it did not. Returns whether `ended` changed, so
    /// the caller writes the state.
    fn set_next(&mut self, slot: usize, next: Option<DateTime<Utc>>, ended: Option<Ended>) -> bool {
        let Some(e) = self.index.get(slot) else {
            return false;
        };
        let (next, ended) = match next {
            Some(_) if e.out_of_runs() => (None, Some(Ended::MaxRuns)),
            other => (other, ended),
        };
        let offset = match (next, &e.cron) {
            (Some(t), Some(cron)) => self.jitter(e).offset_ms(cron, t),
            _ => 0,
        };
        self.index.arm_jittered(slot, next, offset);
        self.set_ended(slot, ended)
    }

    /// Records `ended` in the schedule's policy; whether it changed.
    fn set_ended(&mut self, slot: usize, ended: Option<Ended>) -> bool {
        let Some(e) = self.index.get_mut(slot) else {
            return false;
        };
        match (e.policy.as_deref_mut(), ended) {
            (Some(p), ended) if p.ended != ended => {
                p.ended = ended;
                true
            }
            (None, Some(ended)) => {
                e.policy_mut().ended = Some(ended);
                true
            }
            _ => false,
        }
    }

    /// The first instant of `e` after `base` inside its bounds, and why there is none when it
    /// ended (an ended schedule shows as ended also while paused; an invalid one has no next).
    fn next_from(&self, e: &Entry, base: DateTime<Utc>) -> (Option<DateTime<Utc>>, Option<Ended>) {
        let Some(cron) = &e.cron else {
            return (None, None);
        };
        if e.out_of_runs() {
            return (None, Some(Ended::MaxRuns));
        }
        let policy = e.policy.as_deref();
        let base = match policy.and_then(|p| p.start_at) {
            Some(start) => base.max(start - chrono::Duration::seconds(1)),
            None => base,
        };
        match cron.next_after(base) {
            Some(t) if policy.and_then(|p| p.end_at).is_some_and(|end| t > end) => {
                (None, Some(Ended::EndAt))
            }
            _ if e.paused => (None, None),
            next => (next, None),
        }
    }

    /// Applies one change of `polos_schedules`.
    /// Applies one change; `now` is the system clock and the ticker's clock, read once for a
    /// batch of changes.
    fn apply(&mut self, change: Change, now: (SystemTime, DateTime<Utc>)) {
        match change {
            Change::CaughtUp => self.transition(Event::Loaded),
            Change::Expect(keys) => self.index.reserve(keys),
            Change::Delete { kv_key } => {
                if let Some(e) = self.index.remove(&kv_key) {
                    self.metrics
                        .invalid_schedules_changed(-i64::from(e.error.is_some()));
                    debug!(kv_key = %kv_key, schedule_id = %e.schedule_id(), "schedule deleted: no further fires");
                    if self.phase.firing() {
                        self.writer.delete(e.kv_key);
                    }
                }
            }
            Change::Put {
                kv_key,
                revision,
                record,
                written,
            } => {
                let slot = self.index.slot(&kv_key);
                if let Some(e) = slot.and_then(|s| self.index.get(s)) {
                    if e.revision >= revision {
                        return;
                    }
                }
                // The server's timestamp, placed on our clock as of now (see `Change::Put`).
                let age = now.0.duration_since(written).unwrap_or(Duration::ZERO);
                let written_at = now.1 - chrono::Duration::from_std(age).unwrap_or_default();
                match self.compile(&kv_key, record) {
                    Ok((record, cron)) => {
                        self.upsert(slot, kv_key, revision, written_at, record, cron)
                    }
                    Err(message) => self.invalid(slot, &kv_key, revision, written_at, message),
                }
            }
        }
    }

    fn compile(
        &mut self,
        kv_key: &str,
        record: Result<Schedule, String>,
    ) -> Result<(Schedule, Arc<CronSchedule>), String> {
        let record = record?;
        let cron = self
            .index
            .cron(record.cron.as_str(), record.timezone.as_str())
            .map_err(|e| format!("{e} (schedule {kv_key})"))?;
        Ok((record, cron))
    }

    fn upsert(
        &mut self,
        slot: Option<usize>,
        kv_key: Arc<str>,
        revision: u64,
        written_at: DateTime<Utc>,
        record: Schedule,
        cron: Arc<CronSchedule>,
    ) {
        // A readable value's KV key is `<workflow>.<key>` (`Schedule::read` checked it).
        let workflow = kv_key.split_once('.').map_or("", |(workflow, _)| workflow);
        let workflow = self.index.intern(workflow);
        let slot = match slot {
            Some(slot) => {
                let Some(e) = self.index.get_mut(slot) else {
                    return;
                };
                let old = e.cron.replace(cron);
                self.metrics
                    .invalid_schedules_changed(-i64::from(e.error.is_some()));
                e.workflow = workflow;
                e.paused = record.paused;
                e.catchup_policy = record.catchup;
                e.catchup_window_secs = window_secs(record.catchup_window_secs);
                e.revision = revision;
                e.written_at = written_at;
                e.error = None;
                apply_policy(e, &record);
                self.index.release_cron(old.as_ref());
                slot
            }
            None => {
                let mut e = Entry {
                    cron: Some(cron),
                    paused: record.paused,
                    catchup_policy: record.catchup,
                    catchup_window_secs: window_secs(record.catchup_window_secs),
                    ..Entry::new(kv_key, workflow, revision, written_at)
                };
                apply_policy(&mut e, &record);
                self.index.insert(e)
            }
        };
        if self.phase.firing() {
            self.rearm_live(slot);
            self.queue_backfill(slot);
        }
    }

    /// Re-plans a schedule changed while we fire: the change takes effect for the next
    /// instant after the moment it was written (resume continues from then, with no catch-up
    /// for the paused time) and never re-fires an instant already fired. A schedule whose fire
    /// is being published keeps it; it is re-armed from the new version once that is stored.
    fn rearm_live(&mut self, slot: usize) {
        let now = self.clock.now();
        let Some(e) = self.index.get(slot) else {
            return;
        };
        if !e.firing {
            let (next, ended) = match (&e.cron, e.paused, e.next) {
                // Already due and about to fire: the change came after its (jittered) instant.
                (Some(_), false, Some(armed))
                    if due_at(armed, e.offset_ms) <= now
                        && due_at(armed, e.offset_ms) <= e.written_at
                        && !e.out_of_runs() =>
                {
                    (Some(armed), None)
                }
                _ => self.next_from(e, e.last.map_or(e.written_at, |l| l.max(e.written_at))),
            };
            self.set_next(slot, next, ended);
        }
        self.write_state(slot);
    }

    /// Puts `slot` in the back-fill queue if it has back-fill work and is not there yet.
    fn queue_backfill(&mut self, slot: usize) {
        if !self.phase.firing() {
            return;
        }
        let Some(e) = self.index.get(slot) else {
            return;
        };
        let (Some(p), Some(cron)) = (e.policy.as_deref(), &e.cron) else {
            return;
        };
        if p.backfill_queued
            || next_backfill(&p.backfills, p.progress, e.written_at, |t| {
                cron.next_after(t)
            })
            .is_none()
        {
            return;
        }
        let key = e.kv_key.clone();
        if let Some(e) = self.index.get_mut(slot) {
            e.policy_mut().backfill_queued = true;
        }
        self.backfills.push_back((slot, key));
    }

    /// Records a value that cannot be scheduled: skip it, warn once, report it in its state.
    fn invalid(
        &mut self,
        slot: Option<usize>,
        kv_key: &str,
        revision: u64,
        written_at: DateTime<Utc>,
        message: String,
    ) {
        let slot = match slot {
            Some(slot) => slot,
            None => {
                // An unreadable KV key keeps an empty workflow (no id, no key).
                let (workflow, _) = split_schedule_kv_key(kv_key).unwrap_or_default();
                let workflow = self.index.intern(&workflow);
                self.index.insert(Entry::new(
                    Arc::from(kv_key),
                    workflow,
                    revision,
                    written_at,
                ))
            }
        };
        let Some(e) = self.index.get_mut(slot) else {
            return;
        };
        if e.error.as_deref() != Some(message.as_str()) {
            warn!(kv_key = %kv_key, revision, error = %message, "skipping invalid schedule value");
        }
        self.metrics
            .invalid_schedules_changed(i64::from(e.error.is_none()));
        let old = e.cron.take();
        e.error = Some(message.into());
        e.revision = revision;
        e.written_at = written_at;
        let firing = e.firing;
        self.index.release_cron(old.as_ref());
        if !firing {
            self.index.arm(slot, None);
        }
        if self.phase.firing() {
            self.write_state(slot);
        }
    }

    /// Queues the state record of `slot`.
    fn write_state(&self, slot: usize) {
        if let Some(e) = self.index.get(slot) {
            self.writer.put(e.kv_key.clone(), e.state());
        }
    }

    /// Becoming the firing leader: continue each schedule where the previous leader stopped
    /// (from the state records just read), apply catch-up for what nobody fired, arm the
    /// timeline.
    fn take_over(&mut self, term: u64, raw: HashMap<Arc<str>, Bytes>) {
        let now = self.clock.now();
        let (mut catchup_fires, mut missed_total) = (0usize, 0u64);
        // The plan of the last schedule continued, kept when it was "nothing missed, arm at
        // `next`" for a schedule without bounds or jitter: `(cron, from, next)`. For another
        // such schedule of the same cron whose base is in `[from, next)`, `next_after(base)` is
        // `next` too (no instant lies in `(from, next)`), and `next` was not due at `now`, so
        // its plan is the same whatever its catch-up policy and window (they only judge due
        // instants). Only schedules without a policy (no start_at/end_at/max_runs/jitter/
        // back-fill, no pending fire) and no default jitter share it; a million such schedules
        // of one cron then cost one plan, not a million.
        let mut known: Option<(Arc<CronSchedule>, DateTime<Utc>, DateTime<Utc>)> = None;
        self.index.begin_arming_all();
        for slot in self.index.slots() {
            let Some(e) = self.index.get(slot) else {
                continue;
            };
            let settings = self.settings(e);
            let stored: Option<ScheduleState> = raw
                .get(&*e.kv_key)
                .and_then(|b| serde_json::from_slice(b).ok());
            let before = stored.clone().unwrap_or_default();
            let Some(e) = self.index.get_mut(slot) else {
                continue;
            };
            if let Some(st) = &stored {
                // Our own memory may be ahead of a lagging record (we led before): keep the max.
                e.last = e.last.max(st.last_timestamp);
                e.fires = e.fires.max(st.fires);
                e.missed = e.missed.max(st.missed);
                if st.backfilled > 0 || st.backfill.is_some() {
                    let p = e.policy_mut();
                    p.backfilled = p.backfilled.max(st.backfilled);
                    p.progress = p.progress.max(st.backfill);
                }
            }
            // A `max_runs` fire the previous leader recorded ahead and may have published: it
            // fires again whatever the policy (a copy is absorbed), so `fires` stays exact.
            let pending = stored
                .as_ref()
                .and_then(|st| st.pending)
                .filter(|t| Some(*t) > e.last);
            if pending.is_some() || e.policy.as_ref().is_some_and(|p| p.pending.is_some()) {
                e.policy_mut().pending = pending;
            }
            let step = match (&e.cron, e.paused, pending) {
                (Some(cron), _, Some(t)) => {
                    let late = now - settings.jitter.due(cron, t)
                        > chrono::Duration::from_std(LATE_GRACE).unwrap_or_default();
                    Step {
                        fire: Some((
                            t,
                            if late {
                                Trigger::Catchup
                            } else {
                                Trigger::Schedule
                            },
                        )),
                        ..Step::default()
                    }
                }
                (Some(cron), false, None) => {
                    let base = takeover_base(e, stored.as_ref());
                    let plain = e.policy.is_none() && settings.jitter == Jitter::default();
                    match &known {
                        Some((c, from, next))
                            if plain && Arc::ptr_eq(c, cron) && *from <= base && base < *next =>
                        {
                            Step {
                                next: Some(*next),
                                ..Step::default()
                            }
                        }
                        _ => {
                            let step = continue_after(cron, base, now, settings);
                            if let (true, None, 0, Some(next), false) =
                                (plain, &step.fire, step.missed, step.next, step.ended)
                            {
                                known = Some((cron.clone(), base, next));
                            }
                            step
                        }
                    }
                }
                _ => Step::default(),
            };
            catchup_fires += usize::from(step.fire.is_some());
            missed_total += step.missed;
            self.index.arm(slot, None);
            self.apply_step(slot, step, term);
            self.queue_backfill(slot);
            if let Some(e) = self.index.get(slot) {
                let state = e.state();
                // A schedule that has no record yet and nothing to report gets one at its first
                // fire: a cold start with a million new schedules must not queue a million
                // state writes just to say when each fires next (the API computes that too).
                let nothing_to_report = stored.is_none()
                    && state.last_timestamp.is_none()
                    && state.fires == 0
                    && state.missed == 0
                    && state.error.is_none()
                    && state.ended.is_none();
                if state != before && !nothing_to_report {
                    self.writer.put(e.kv_key.clone(), state);
                }
            }
        }
        self.index.end_arming_all();
        self.status.send_modify(|s| s.takeovers += 1);
        info!(
            schedules = self.index.len(),
            catchup_fires,
            missed = missed_total,
            next = %self
                .index
                .earliest()
                .map(crate::model::time::format_instant)
                .unwrap_or_else(|| "none".into()),
            "leading: firing schedules"
        );
    }

    /// Carries out a planning step for `slot`: count what was missed, then either hand its fire
    /// to publishing or arm it at its next instant.
    fn apply_step(&mut self, slot: usize, step: Step, term: u64) {
        if step.missed > 0 {
            if let Some(e) = self.index.get_mut(slot) {
                e.missed += step.missed;
                self.metrics.missed(&e.workflow, step.missed);
            }
            self.status.send_modify(|s| s.missed += step.missed);
        }
        match step.fire {
            Some((instant, trigger)) => {
                let Some(e) = self.index.get(slot) else {
                    return;
                };
                let committed = e
                    .policy
                    .as_deref()
                    .is_some_and(|p| p.pending == Some(instant));
                if e.out_of_runs() && !committed {
                    self.set_next(slot, None, Some(Ended::MaxRuns));
                    self.write_state(slot);
                    return;
                }
                // The offset the timeline used when it fired on time; computed for catch-up.
                let offset_ms = match (&e.cron, e.next) {
                    (_, Some(armed)) if armed == instant && !e.firing => e.offset_ms,
                    (Some(cron), _) => self.jitter(e).offset_ms(cron, instant),
                    (None, _) => 0,
                };
                let due = Due {
                    slot,
                    kv_key: e.kv_key.clone(),
                    instant,
                    trigger,
                    term,
                    revision: e.revision,
                    offset_ms,
                    committed,
                };
                let ahead = e.max_runs().is_some() && !committed;
                self.index.start_firing(slot, instant);
                let ended_changed = self.set_ended(slot, None);
                if !ahead {
                    self.queue.push_back(due);
                    if ended_changed {
                        self.write_state(slot);
                    }
                    return;
                }
                // Recorded before it is published: see `state` (why `max_runs` stays exact).
                if let Some(e) = self.index.get_mut(slot) {
                    e.policy_mut().pending = Some(instant);
                    let state = e.state();
                    self.writer.put_then(e.kv_key.clone(), state, due);
                }
            }
            None => {
                let ended = step.ended.then_some(Ended::EndAt);
                let ended_changed = self.set_next(slot, step.next, ended);
                if step.missed > 0 || ended_changed {
                    self.write_state(slot);
                }
            }
        }
    }

    /// A `max_runs` fire's `pending` state landed: it may be published now.
    fn recorded_ahead(&mut self, due: Due) {
        if self.phase != Phase::Leading(due.term) {
            return;
        }
        let still = self
            .entry_of(&due)
            .is_some_and(|e| e.firing && e.next == Some(due.instant));
        if still {
            self.queue.push_back(due);
        }
    }

    /// The schedule's back-filled fire is over (stored, or dropped): it may fire on time again.
    /// An on-time instant that came due meanwhile is decided as of the moment it did.
    fn release_backfill(&mut self, slot: usize) {
        let Some(p) = self
            .index
            .get_mut(slot)
            .and_then(|e| e.policy.as_deref_mut())
        else {
            return;
        };
        p.backfill_out = None;
        let Some(found) = p.held_due.take() else {
            return;
        };
        let (Some(term), Some(e)) = (self.phase.term(), self.index.get(slot)) else {
            return;
        };
        match (e.cron.clone(), e.next, e.paused) {
            (Some(cron), Some(armed), false) => {
                let step = resolve_due(&cron, armed, found, self.settings(e));
                self.apply_step(slot, step, term);
            }
            _ => self.index.arm(slot, None),
        }
    }

    /// Hands back-filled fires to the publisher: only while no on-time fire waits, at most
    /// `backfill_rate` a second, one per schedule at a time, schedules in turn.
    fn dispatch_backfills(&mut self, term: u64) {
        if !self.queue.is_empty() || self.backfills.is_empty() {
            return;
        }
        if self.backfill_wake.is_some_and(|t| t > Instant::now()) {
            return;
        }
        let now = Instant::now();
        let mut fires = Vec::new();
        while fires.len() < BATCH && self.in_flight + fires.len() < MAX_IN_FLIGHT {
            let Some((slot, key)) = self.backfills.pop_front() else {
                break;
            };
            let Some(e) = self
                .index
                .get_mut(slot)
                .filter(|e| Arc::ptr_eq(&e.kv_key, &key))
            else {
                continue;
            };
            let (firing, revision, written_at, cron) =
                (e.firing, e.revision, e.written_at, e.cron.clone());
            let Some(p) = e.policy.as_deref_mut() else {
                continue;
            };
            p.backfill_queued = false;
            // Its one fire is out: it comes back here once that fire is stored.
            if firing || p.backfill_out.is_some() {
                continue;
            }
            let Some(cron) = cron else {
                continue;
            };
            let Some((seq, instant)) =
                next_backfill(&p.backfills, p.progress, written_at, |t| cron.next_after(t))
            else {
                continue;
            };
            if let Err(wake) = self.backfill_rate.take(now) {
                p.backfill_queued = true;
                self.backfills.push_front((slot, key));
                self.backfill_wake = Some(wake);
                break;
            }
            p.backfill_out = Some((seq, instant));
            let due = Due {
                slot,
                kv_key: key,
                instant,
                trigger: Trigger::Backfill,
                term,
                revision,
                offset_ms: 0,
                committed: false,
            };
            if let Some((next, fire)) = self.build(&due) {
                let id = IdText::new(&self.id);
                fires.push((Sent { due, next, id }, fire));
            }
        }
        if !fires.is_empty() {
            self.in_flight += fires.len();
            self.publisher.send(Batch { term, fires });
        }
    }

    /// Decides every schedule due at `now`, at once: each is judged on time or late against
    /// the same `now`, however long the resulting round takes to publish.
    fn collect_due(&mut self, now: DateTime<Utc>) {
        let Some(term) = self.phase.term() else {
            return;
        };
        for slot in self.index.due(now) {
            let Some(e) = self.index.get(slot) else {
                continue;
            };
            let (Some(cron), Some(armed), false) = (e.cron.clone(), e.next, e.paused) else {
                self.index.arm(slot, None);
                continue;
            };
            if e.policy.as_ref().is_some_and(|p| p.backfill_out.is_some()) {
                // Its one fire out is a back-fill: decided as of now once that is stored.
                self.index.start_firing(slot, armed);
                if let Some(e) = self.index.get_mut(slot) {
                    e.policy_mut().held_due = Some(now);
                }
                continue;
            }
            let step = resolve_due(&cron, armed, now, self.settings(e));
            self.apply_step(slot, step, term);
        }
    }

    /// Hands queued fires to the publisher while fewer than [`MAX_IN_FLIGHT`] are out (and
    /// publishing is not pausing after a failure).
    fn dispatch(&mut self) {
        let Some(term) = self.phase.term() else {
            return;
        };
        if self.paused_until.is_some_and(|t| t > Instant::now()) {
            return;
        }
        while self.in_flight < MAX_IN_FLIGHT && !self.queue.is_empty() {
            let room = BATCH.min(MAX_IN_FLIGHT - self.in_flight);
            let mut fires = Vec::with_capacity(room.min(self.queue.len()));
            while fires.len() < room {
                let Some(due) = self.queue.pop_front() else {
                    break;
                };
                if let Some((next, fire)) = self.build(&due) {
                    let id = IdText::new(&self.id);
                    fires.push((Sent { due, next, id }, fire));
                }
            }
            if fires.is_empty() {
                continue;
            }
            self.in_flight += fires.len();
            self.publisher.send(Batch { term, fires });
        }
        if self.in_flight < MAX_IN_FLIGHT {
            self.dispatch_backfills(term);
        }
    }

    /// The schedule a fire belongs to, if it is still the same schedule.
    fn entry_of(&self, due: &Due) -> Option<&Entry> {
        self.index
            .get(due.slot)
            .filter(|e| Arc::ptr_eq(&e.kv_key, &due.kv_key))
    }

    /// Builds the message for `due` into reused buffers (its schedule id stays in `self.id`)
    /// and returns its schedule's next instant after it, or `None` when its schedule was
    /// deleted or paused since (delete and pause stop fires at once; back-fills go on while
    /// paused, as requested).
    fn build(&mut self, due: &Due) -> Option<(Option<DateTime<Utc>>, Outgoing)> {
        // Not `entry_of`: the entry is borrowed from `index` alone, so the buffers of `self`
        // can be written while it is.
        let e = self
            .index
            .get(due.slot)
            .filter(|e| Arc::ptr_eq(&e.kv_key, &due.kv_key))?;
        let backfill = due.trigger == Trigger::Backfill;
        let cron = match (&e.cron, e.paused && !backfill && !due.committed) {
            (Some(cron), false) => cron.clone(),
            _ => {
                if backfill {
                    self.release_backfill(due.slot);
                } else {
                    if let Some(p) = self
                        .index
                        .get_mut(due.slot)
                        .and_then(|e| e.policy.as_deref_mut())
                    {
                        p.pending = None;
                    }
                    self.index.arm(due.slot, None);
                }
                self.write_state(due.slot);
                return None;
            }
        };
        let last_timestamp = if backfill {
            // What it would have been had this instant fired on time.
            previous_instant(due.instant, |t| cron.next_after(t))
        } else {
            e.last
        };
        let next = cron.next_after(due.instant);
        let key = e.key_cow();
        self.id.clear();
        push_schedule_id(&mut self.id, &e.workflow, &key);
        let body = self.encoder.body(PayloadRef {
            timestamp: due.instant,
            last_timestamp,
            timezone: cron.timezone().name(),
            schedule_id: &self.id,
            key: &key,
            upcoming: next.unwrap_or(due.instant),
        });
        let headers = self
            .encoder
            .scheduled_headers(&self.id, due.instant, due.trigger);
        let subject = match &self.subject {
            Some((workflow, subject)) if Arc::ptr_eq(workflow, &e.workflow) => subject.clone(),
            _ => {
                let subject = async_nats::Subject::from(runs_subject(&e.workflow));
                self.subject = Some((e.workflow.clone(), subject.clone()));
                subject
            }
        };
        Some((
            next,
            Outgoing {
                subject,
                headers,
                body,
            },
        ))
    }

    /// Results from the publisher.
    fn published(&mut self, results: Vec<(Sent, Published)>) {
        self.in_flight = self.in_flight.saturating_sub(results.len());
        let now = self.clock.now();
        let (fired_before, backfilled_before) = (self.round.fired, self.round.backfilled);
        let mut again = Vec::new();
        let (mut stored, mut failed, mut first_error) = (false, false, None);
        for (Sent { due, next, id }, outcome) in results {
            let current = self.phase == Phase::Leading(due.term);
            match outcome {
                Published::Stored { duplicate } => {
                    stored = true;
                    self.stored(&due, next, id, duplicate, current, now);
                }
                Published::Held if current => again.push(due),
                Published::Failed(error) if current => {
                    failed = true;
                    first_error.get_or_insert(error);
                    again.push(due);
                }
                // Planned under a term that is over: the successor (or our next takeover)
                // fires it through catch-up.
                Published::Held | Published::Failed(_) => {}
            }
        }
        if stored {
            self.failed_rounds = 0;
            // One status update per chunk of results, not per fire: watchers wake once.
            let (fired, last) = (self.round.fired - fired_before, self.round.last);
            let backfilled = self.round.backfilled - backfilled_before;
            self.status.send_modify(|s| {
                s.fires += fired;
                s.backfilled += backfilled;
                s.last_fire = s.last_fire.max(last);
            });
        }
        if !again.is_empty() {
            // Back to the front, in order, and publishing pauses for a while.
            for due in again.into_iter().rev() {
                self.queue.push_front(due);
            }
            let pause = if failed {
                self.failed_rounds += 1;
                publish_retry(self.failed_rounds)
            } else {
                HELD_RETRY
            };
            let until = Instant::now() + pause;
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
            if let Some(error) = first_error {
                if self.warned_at.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
                    self.warned_at = Some(Instant::now());
                    warn!(
                        waiting = self.queue.len(),
                        error = %error,
                        retry_in = ?pause,
                        "publishing fires failed; retrying with backoff while this replica leads"
                    );
                }
            }
        }
        if self.queue.is_empty() && self.in_flight == 0 {
            self.end_round();
        }
    }

    /// The stream stored a fire; `next` is what its schedule's cron gives after it (computed
    /// when it was built), `id` its schedule id.
    fn stored(
        &mut self,
        due: &Due,
        next: Option<DateTime<Utc>>,
        id: IdText,
        duplicate: bool,
        current: bool,
        now: DateTime<Utc>,
    ) {
        // Lateness counts from the jittered time: the offset is a choice, not a delay.
        let late = now - due_at(due.instant, due.offset_ms);
        let late_ms = late.num_milliseconds();
        let Some(e) = self.index.get(due.slot) else {
            return;
        };
        if !Arc::ptr_eq(&e.kv_key, &due.kv_key) {
            return;
        }
        self.metrics
            .fired(&e.workflow, due.trigger, late, duplicate);
        debug!(
            workflow = %e.workflow,
            kv_key = %e.kv_key,
            scheduled = %crate::model::time::format_instant(due.instant),
            trigger = due.trigger.as_str(),
            late_ms,
            duplicate,
            "fired"
        );
        if due.trigger == Trigger::Backfill {
            self.backfill_stored(due, duplicate, current);
            return;
        }
        let same = e.revision == due.revision;
        let base = if same {
            due.instant
        } else {
            // A change made while this fire was out takes effect after the moment it was
            // written.
            due.instant.max(e.written_at)
        };
        // The version it was built from, with no bounds to check: `next_from` would give
        // `cron.next_after(due.instant)`, which building the fire computed.
        let known_next = (same && e.policy.is_none()).then_some(next);
        let Some(e) = self.index.get_mut(due.slot) else {
            return;
        };
        e.last = e.last.max(Some(due.instant));
        e.fires += 1;
        e.error = None;
        if let Some(p) = e.policy.as_deref_mut() {
            if p.pending == Some(due.instant) {
                p.pending = None;
            }
        }
        // Counted here, published to the status once per chunk of results (see `published`).
        let r = &mut self.round;
        r.fired += 1;
        r.duplicates += u64::from(duplicate);
        r.catchup += u64::from(due.trigger == Trigger::Catchup);
        r.first = Some(r.first.map_or(due.instant, |f| f.min(due.instant)));
        r.last = r.last.max(Some(due.instant));
        r.worst_late_ms = r.worst_late_ms.max(late_ms);
        if current {
            let (next, ended) = match (self.index.get(due.slot), known_next) {
                (Some(e), Some(next)) if e.cron.is_some() && !e.paused => (next, None),
                (Some(e), _) => self.next_from(e, base),
                (None, _) => (None, None),
            };
            self.set_next(due.slot, next, ended);
            if let Some(e) = self.index.get(due.slot) {
                self.writer
                    .put(e.kv_key.clone(), e.state_with_id(id.as_str()));
            }
            self.queue_backfill(due.slot);
        }
    }

    /// The stream stored a back-filled fire: record the progress, let the schedule fire on time
    /// again, and queue its next back-filled instant.
    fn backfill_stored(&mut self, due: &Due, duplicate: bool, current: bool) {
        let Some(e) = self.index.get_mut(due.slot) else {
            return;
        };
        let p = e.policy_mut();
        if let Some((seq, instant)) = p.backfill_out.filter(|(_, i)| *i == due.instant) {
            let done = BackfillProgress {
                seq,
                through: Some(instant),
            };
            p.progress = p.progress.max(Some(done));
        }
        p.backfilled += 1;
        let r = &mut self.round;
        r.backfilled += 1;
        r.duplicates += u64::from(duplicate);
        if current {
            self.release_backfill(due.slot);
            self.queue_backfill(due.slot);
            self.write_state(due.slot);
        }
    }

    /// Logs the summary line of the round that just finished, if it fired anything.
    fn end_round(&mut self) {
        let r = std::mem::take(&mut self.round);
        if r.fired == 0 && r.backfilled == 0 {
            return;
        }
        let fmt = |t: Option<DateTime<Utc>>| {
            t.map(crate::model::time::format_instant)
                .unwrap_or_default()
        };
        info!(
            fires = r.fired,
            catchup = r.catchup,
            backfilled = r.backfilled,
            duplicates = r.duplicates,
            first = %fmt(r.first),
            last = %fmt(r.last),
            worst_late_ms = r.worst_late_ms,
            "fired a round"
        );
    }
}

type ReadResult = Result<HashMap<Arc<str>, Bytes>, TickerError>;

/// Awaits the takeover's state read, if one runs; pending forever otherwise.
async fn join_read(read: &mut Option<StateRead>) -> (u64, u32, ReadResult) {
    let Some(r) = read.as_mut() else {
        return std::future::pending().await;
    };
    let result = match (&mut r.task).await {
        Ok(result) => result,
        Err(e) => Err(TickerError::TaskFailed {
            task: "state read",
            source: e,
        }),
    };
    let (term, attempt) = (r.term, r.attempt);
    *read = None;
    (term, attempt, result)
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The instant a schedule continues after at a takeover.
///
/// - The state describes this very version of the record (`schedule_revision` matches): the
///   previous leader planned it, so continue where it would have fired next — a resume it saw
///   does not catch up the paused time.
/// - The record changed after the state was written (while no leader ran, or the write was
///   lost): the change takes effect from the moment it was written, so neither the instants of a
///   new cron from before it nor the paused time before a resume are fired.
/// - Never fired: from when the record was written, never before.
fn takeover_base(e: &Entry, stored: Option<&ScheduleState>) -> DateTime<Utc> {
    let changed_since = |last: DateTime<Utc>| last.max(e.written_at);
    match (stored, e.last) {
        (Some(st), last) if st.schedule_revision == Some(e.revision) => match st.next {
            Some(next) => {
                let before_next = next - chrono::Duration::seconds(1);
                last.map_or(before_next, |l| l.max(before_next))
            }
            None => last.unwrap_or(e.written_at),
        },
        // Written by a scheduler that knew the revision: this version is newer than the state.
        (Some(st), Some(last)) if st.schedule_revision.is_some() => changed_since(last),
        // A state without a revision (written by hand or by an older polos): a leader that saw
        // a pause left `next` empty; otherwise continue from the last fire.
        (Some(st), Some(last)) if st.next.is_none() => changed_since(last),
        (Some(_), Some(last)) => last,
        // No state, but we fired it while we led before.
        (None, Some(last)) => changed_since(last),
        (_, None) => e.written_at,
    }
}

fn publish_retry(failures: u32) -> Duration {
    FIRST_PUBLISH_RETRY
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(10)))
        .min(MAX_PUBLISH_RETRY)
}

fn secs(s: u64) -> chrono::Duration {
    chrono::Duration::try_seconds(i64::try_from(s).unwrap_or(i64::MAX))
        .unwrap_or(chrono::Duration::MAX)
}

/// A per-schedule window in the compact form the table keeps (over 136 years saturates).
fn window_secs(secs: Option<u64>) -> u32 {
    secs.map_or(DEFAULT_WINDOW, |s| {
        u32::try_from(s).unwrap_or(u32::MAX).min(DEFAULT_WINDOW - 1)
    })
}

/// Takes a record's bounds, jitter and back-fill requests into the entry's policy, keeping what
/// the scheduler knows of them (progress, counts); the box goes when nothing is left in it.
fn apply_policy(e: &mut Entry, record: &Schedule) {
    if record.policy.is_none() && e.policy.is_none() {
        return;
    }
    let none = SchedulePolicy::default();
    let wanted = record.policy.as_deref().unwrap_or(&none);
    let p = e.policy_mut();
    p.jitter_secs = wanted
        .jitter_secs
        .map(|s| u32::try_from(s.min(crate::model::MAX_JITTER_SECS)).unwrap_or(u32::MAX));
    p.start_at = wanted.start_at;
    p.end_at = wanted.end_at;
    // 0 is "no limit", as the API's way to remove one.
    p.max_runs = wanted.max_runs.filter(|m| *m > 0);
    p.backfills = wanted.backfills.clone();
    p.backfills.sort_by_key(|b| b.seq);
    if p.is_empty() {
        e.policy = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, h, m, 0).unwrap()
    }

    fn entry(revision: u64, written_at: DateTime<Utc>, last: Option<DateTime<Utc>>) -> Entry {
        Entry {
            last,
            ..Entry::new(Arc::from("wf.k"), Arc::from("wf"), revision, written_at)
        }
    }

    fn state(
        revision: Option<u64>,
        last: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> ScheduleState {
        ScheduleState {
            last_timestamp: Some(last),
            next,
            schedule_revision: revision,
            ..ScheduleState::default()
        }
    }

    #[test]
    fn takeover_continues_where_the_previous_leader_planned_this_version() {
        // Resumed at 10:30 under a leader that armed 11:00: the paused hours are not caught up.
        let e = entry(7, at(10, 30), Some(at(8, 0)));
        let st = state(Some(7), at(8, 0), Some(at(11, 0)));
        assert_eq!(
            takeover_base(&e, Some(&st)),
            at(11, 0) - chrono::Duration::seconds(1)
        );
    }

    #[test]
    fn a_change_no_leader_saw_takes_effect_from_when_it_was_written() {
        let e = entry(9, at(10, 30), Some(at(8, 0)));
        let st = state(Some(7), at(8, 0), Some(at(9, 0)));
        assert_eq!(takeover_base(&e, Some(&st)), at(10, 30));
        // Unchanged since the last fire (the record is older): catch up from the last fire.
        let e = entry(9, at(7, 0), Some(at(8, 0)));
        assert_eq!(takeover_base(&e, Some(&st)), at(8, 0));
        // A state without a revision: from the last fire, unless a leader saw it paused.
        let e = entry(9, at(10, 30), Some(at(8, 0)));
        let legacy = state(None, at(8, 0), Some(at(9, 0)));
        assert_eq!(takeover_base(&e, Some(&legacy)), at(8, 0));
        let paused = state(None, at(8, 0), None);
        assert_eq!(takeover_base(&e, Some(&paused)), at(10, 30));
        // Never fired: from when it was written.
        let e = entry(9, at(7, 0), None);
        assert_eq!(takeover_base(&e, None), at(7, 0));
    }

    #[test]
    fn publish_retries_back_off_and_cap() {
        assert_eq!(publish_retry(1), FIRST_PUBLISH_RETRY);
        assert_eq!(publish_retry(3), FIRST_PUBLISH_RETRY * 4);
        assert_eq!(publish_retry(50), MAX_PUBLISH_RETRY);
    }

    #[test]
    fn huge_windows_saturate() {
        assert_eq!(secs(u64::MAX), chrono::Duration::MAX);
        assert_eq!(secs(60), chrono::Duration::minutes(1));
    }
}
