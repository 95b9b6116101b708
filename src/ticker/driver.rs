//! The firing loop: one task owns the schedule table, applies changes from the loader, follows
//! the lease, and fires on a timer set to the earliest due instant.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv::Store};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::catchup::{plan, CatchupSettings};
use super::clock::Clock;
use super::error::TickerError;
use super::firing::{publish_all, Pipeline};
use super::index::{Entry, Index};
use super::loader::{self, Change};
use super::state::StateWriter;
use super::status::TickerStatus;
use crate::config::SchedulerConfig;
use crate::cron::CronSchedule;
use crate::metrics::Metrics;
use crate::model::{split_schedule_kv_key, Fire, SchedulePayload, ScheduleRecord, Trigger};

/// A fire found due later than this after its instant (the process stalled, the host slept) is
/// treated as missed and goes through the schedule's catch-up policy instead of firing as
/// `schedule`. It also bounds how late a change that arrived "a moment before its instant" may
/// still fire as an on-time fire.
pub const LATE_GRACE: Duration = Duration::from_secs(5);

/// Retry delays for fires whose publish failed (NATS briefly unavailable).
const PUBLISH_RETRIES: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Most changes applied between two checks of the timer, so a flood of updates cannot delay
/// due fires.
const CHANGE_BATCH: usize = 4096;

/// One planned fire: slot, instant, trigger, and the schedule's next instant after it (the
/// payload's `upcoming`, computed once where the fire is planned).
type Planned = (usize, DateTime<Utc>, Trigger, DateTime<Utc>);

pub(super) struct Loop {
    /// Every schedule and the timeline.
    index: Index,
    /// Source of schedule time.
    clock: Arc<dyn Clock>,
    /// Where fires are published.
    js: jetstream::Context,
    /// `polos_schedule_state`, read on takeover.
    states: Store,
    /// Background writer of `polos_schedule_state`.
    writer: StateWriter,
    /// Global catch-up defaults.
    defaults: SchedulerConfig,
    /// The lease says we lead.
    leader: bool,
    /// The initial load of `polos_schedules` is complete.
    loaded: bool,
    /// We lead, are loaded, and have planned: the timeline is armed and we fire.
    active: bool,
    /// Where [`TickerStatus`] snapshots go.
    status: watch::Sender<TickerStatus>,
    /// State records being read since leadership was won, for the takeover.
    state_load: Option<StateLoad>,
    /// Where fires, misses, leadership and table size are counted.
    metrics: Metrics,
}

/// A background read of every state record.
type StateLoad = tokio::task::JoinHandle<Result<HashMap<String, Bytes>, TickerError>>;

impl Loop {
    /// A loop that is not leading yet, with an empty table.
    pub(super) fn new(
        clock: Arc<dyn Clock>,
        js: jetstream::Context,
        states: Store,
        defaults: SchedulerConfig,
        status: watch::Sender<TickerStatus>,
        metrics: Metrics,
    ) -> Self {
        Loop {
            metrics,
            index: Index::default(),
            clock,
            js,
            writer: StateWriter::spawn(states.clone()),
            states,
            defaults,
            leader: false,
            loaded: false,
            active: false,
            status,
            state_load: None,
        }
    }

    /// Stops firing for good and hands back what outlives the loop: the state writer (to flush)
    /// and the status channel.
    pub(super) fn finish(self) -> (StateWriter, watch::Sender<TickerStatus>) {
        self.status.send_modify(|s| {
            s.active = false;
            s.next_fire = None;
        });
        if let Some(task) = self.state_load {
            task.abort();
        }
        (self.writer, self.status)
    }

    /// Applies changes, follows leadership and fires until `shutdown` completes.
    pub(super) async fn run_loop<F>(
        &mut self,
        mut changes: mpsc::Receiver<Vec<Change>>,
        mut leading: watch::Receiver<bool>,
        shutdown: F,
    ) -> Result<(), TickerError>
    where
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        loop {
            if self.leader && self.loaded && !self.active {
                self.take_over().await?;
            }
            if self.active {
                if let Some(t) = self.index.earliest() {
                    if t <= self.clock.now() {
                        self.fire_due().await;
                        continue;
                    }
                }
            }
            self.publish_status();
            let sleep = match self.index.earliest().filter(|_| self.active) {
                Some(t) => self.clock.sleep_until(t),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                batch = changes.recv() => {
                    let Some(batch) = batch else {
                        return Err(TickerError::Task {
                            task: "schedule loader",
                            message: "the watch of polos_schedules ended (see the log above)".into(),
                        });
                    };
                    let mut applied = batch.len();
                    batch.into_iter().for_each(|c| self.apply(c));
                    while applied < CHANGE_BATCH {
                        match changes.try_recv() {
                            Ok(batch) => {
                                applied += batch.len();
                                batch.into_iter().for_each(|c| self.apply(c));
                            }
                            Err(_) => break,
                        }
                    }
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        return Err(TickerError::Task {
                            task: "lease",
                            message: "the lease task ended".into(),
                        });
                    }
                    self.leader = *leading.borrow_and_update();
                    self.metrics.leading(self.leader);
                    if self.leader && !self.active && self.state_load.is_none() {
                        // Read the state records while the schedules are still loading: a cold
                        // start then costs about one bucket load, not two in a row.
                        let states = self.states.clone();
                        self.state_load = Some(tokio::spawn(async move {
                            loader::load_all(&states).await
                        }));
                    }
                    if !self.leader {
                        if let Some(task) = self.state_load.take() {
                            task.abort();
                        }
                    }
                    if !self.leader && self.active {
                        self.active = false;
                        self.index.disarm_all();
                        info!("not leading: stopped firing");
                    }
                }
                _ = sleep => {}
            }
        }
    }

    fn publish_status(&self) {
        let (active, loaded, schedules) = (self.active, self.loaded, self.index.len());
        let next_fire = self.index.earliest().filter(|_| active);
        self.metrics.schedules_loaded(schedules);
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
        CatchupSettings {
            policy: e.catchup.unwrap_or(self.defaults.catchup_policy),
            window: secs(
                e.catchup_window_secs
                    .map_or(self.defaults.catchup_window_secs, u64::from),
            ),
            max_fires: self.defaults.catchup_max_fires,
        }
    }

    /// Applies one change of `polos_schedules`.
    fn apply(&mut self, change: Change) {
        match change {
            Change::CaughtUp => {
                self.loaded = true;
                info!(schedules = self.index.len(), "loaded all schedules");
            }
            Change::Delete { kv_key } => {
                if let Some(e) = self.index.remove(&kv_key) {
                    self.metrics
                        .invalid_schedules_changed(-i64::from(e.error.is_some()));
                    info!(kv_key = %kv_key, schedule_id = %e.schedule_id(), "schedule deleted: no further fires");
                    if self.active {
                        self.writer.delete(e.kv_key);
                    }
                }
            }
            Change::Put {
                kv_key,
                revision,
                record,
                age,
            } => {
                let slot = self.index.slot(&kv_key);
                if let Some(e) = slot.and_then(|s| self.index.get(s)) {
                    if e.revision >= revision {
                        return;
                    }
                }
                let written_at =
                    self.clock.now() - chrono::Duration::from_std(age).unwrap_or_default();
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
        record: Result<ScheduleRecord, String>,
    ) -> Result<(ScheduleRecord, Arc<CronSchedule>), String> {
        let record = record?;
        let cron = self
            .index
            .cron(&record.cron, &record.timezone)
            .map_err(|e| format!("{e} (schedule {kv_key})"))?;
        Ok((record, cron))
    }

    fn upsert(
        &mut self,
        slot: Option<usize>,
        kv_key: String,
        revision: u64,
        written_at: DateTime<Utc>,
        record: ScheduleRecord,
        cron: Arc<CronSchedule>,
    ) {
        let workflow = self.index.intern(&record.workflow);
        let timezone = self.index.intern(&record.timezone);
        let slot = match slot {
            Some(slot) => {
                let Some(e) = self.index.get_mut(slot) else {
                    return;
                };
                self.metrics
                    .invalid_schedules_changed(-i64::from(e.error.is_some()));
                let old = e.cron.replace(cron);
                e.workflow = workflow;
                e.timezone = timezone;
                e.paused = record.paused;
                e.catchup = record.catchup;
                e.catchup_window_secs = window_secs(record.catchup_window_secs);
                e.revision = revision;
                e.written_at = written_at;
                e.error = None;
                self.index.release_cron(old.as_ref());
                slot
            }
            None => self.index.insert(Entry {
                cron: Some(cron),
                paused: record.paused,
                catchup: record.catchup,
                catchup_window_secs: window_secs(record.catchup_window_secs),
                ..new_entry(&kv_key, workflow, timezone, revision, written_at)
            }),
        };
        if self.active {
            self.rearm_live(slot);
        }
    }

    /// Re-plans a schedule changed while we fire: the change takes effect for the next
    /// instant after the moment it was written (resume continues from then, with no catch-up
    /// for the paused time) and never re-fires an instant already fired.
    fn rearm_live(&mut self, slot: usize) {
        let now = self.clock.now();
        let Some(e) = self.index.get(slot) else {
            return;
        };
        let next = match (&e.cron, e.paused) {
            (Some(cron), false) => match e.next {
                // Already due and about to fire: the change came after its instant.
                Some(armed) if armed <= now && armed <= e.written_at => Some(armed),
                _ => {
                    let base = e.last.map_or(e.written_at, |l| l.max(e.written_at));
                    cron.next_after(base)
                }
            },
            _ => None,
        };
        self.index.arm(slot, next);
        if let Some(e) = self.index.get(slot) {
            self.writer.put(e.kv_key.clone(), e.state());
        }
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
                let timezone = self.index.intern("UTC");
                self.index
                    .insert(new_entry(kv_key, workflow, timezone, revision, written_at))
            }
        };
        self.index.arm(slot, None);
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
        let (key, state) = (e.kv_key.clone(), e.state());
        self.index.release_cron(old.as_ref());
        if self.active {
            self.writer.put(key, state);
        }
    }

    /// Becoming the firing leader: read every state record, continue each schedule where the
    /// previous leader stopped, apply catch-up for what nobody fired, arm the timeline.
    async fn take_over(&mut self) -> Result<(), TickerError> {
        // Read when leadership was won (see `run_loop`); a failed prefetch is simply redone.
        let mut prefetched = match self.state_load.take() {
            Some(task) => task.await.ok().and_then(Result::ok),
            None => None,
        };
        let mut raw = None;
        for attempt in 0..3u32 {
            let result = match prefetched.take() {
                Some(r) => Ok(r),
                None => loader::load_all(&self.states).await,
            };
            match result {
                Ok(r) => {
                    raw = Some(r);
                    break;
                }
                Err(e) if attempt < 2 => {
                    warn!(error = %e, "cannot read schedule states yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let raw = raw.unwrap_or_default();
        let now = self.clock.now();
        let mut rounds: Vec<Vec<Planned>> = Vec::new();
        let (mut catchup_fires, mut missed_total) = (0usize, 0u64);
        for slot in self.index.slots() {
            let settings = match self.index.get(slot) {
                Some(e) => self.settings(e),
                None => continue,
            };
            let Some(e) = self.index.get_mut(slot) else {
                continue;
            };
            let stored: Option<crate::model::ScheduleState> = raw
                .get(&*e.kv_key)
                .and_then(|b| serde_json::from_slice(b).ok());
            let before = stored.clone().unwrap_or_default();
            if let Some(st) = &stored {
                // Our own memory may be ahead of a lagging record (we led before): keep the max.
                e.last = e.last.max(st.last_timestamp);
                e.fires = e.fires.max(st.fires);
                e.missed = e.missed.max(st.missed);
            }
            let next = match (&e.cron, e.paused) {
                (Some(cron), false) => {
                    let was_paused = stored
                        .as_ref()
                        .is_some_and(|s| s.next.is_none() && s.last_timestamp.is_some());
                    let base = match e.last {
                        // Resumed while nobody led: no catch-up for the paused time.
                        Some(last) if was_paused => last.max(e.written_at),
                        Some(last) => last,
                        // Never fired: from when this version was written, never before.
                        None => e.written_at,
                    };
                    let p = plan(cron, base, now, settings);
                    e.missed += p.missed;
                    self.metrics.missed(&e.workflow, p.missed);
                    missed_total += p.missed;
                    self.status.send_modify(|s| s.missed += p.missed);
                    for (k, instant) in p.fire.into_iter().enumerate() {
                        if rounds.len() <= k {
                            rounds.push(Vec::new());
                        }
                        let upcoming = cron.next_after(instant).unwrap_or(instant);
                        rounds[k].push((slot, instant, Trigger::Catchup, upcoming));
                        catchup_fires += 1;
                    }
                    p.next
                }
                _ => None,
            };
            self.index.arm(slot, next);
            if let Some(e) = self.index.get(slot) {
                let state = e.state();
                // A schedule that has no record yet and nothing to report gets one at its first
                // fire: a cold start with a million new schedules must not queue a million
                // state writes just to say when each fires next (the API computes that too).
                let nothing_to_report = stored.is_none()
                    && state.last_timestamp.is_none()
                    && state.fires == 0
                    && state.missed == 0
                    && state.error.is_none();
                if state != before && !nothing_to_report {
                    self.writer.put(e.kv_key.clone(), state);
                }
            }
        }
        self.active = true;
        info!(
            schedules = self.index.len(),
            catchup_fires,
            missed = missed_total,
            next = ?self.index.earliest().map(crate::model::time::format_instant),
            "leading: firing schedules"
        );
        self.fire_rounds(rounds).await;
        Ok(())
    }

    /// Fires everything due now.
    async fn fire_due(&mut self) {
        let now = self.clock.now();
        let grace = secs(LATE_GRACE.as_secs());
        let mut rounds: Vec<Vec<Planned>> = vec![Vec::new()];
        for slot in self.index.due(now) {
            let Some(e) = self.index.get(slot) else {
                continue;
            };
            let (Some(cron), Some(instant)) = (e.cron.clone(), e.next) else {
                self.index.arm(slot, None);
                continue;
            };
            if now - instant <= grace {
                // The next instant both re-arms the schedule and is this fire's `upcoming`.
                let next = cron.next_after(instant);
                rounds[0].push((slot, instant, Trigger::Schedule, next.unwrap_or(instant)));
                self.index.arm(slot, next);
                continue;
            }
            // Far too late (the process stalled): what it missed goes through catch-up.
            let p = plan(
                &cron,
                instant - chrono::Duration::seconds(1),
                now,
                self.settings(e),
            );
            for (k, t) in p.fire.into_iter().enumerate() {
                if rounds.len() <= k {
                    rounds.push(Vec::new());
                }
                let upcoming = cron.next_after(t).unwrap_or(t);
                rounds[k].push((slot, t, Trigger::Catchup, upcoming));
            }
            if let Some(e) = self.index.get_mut(slot) {
                e.missed += p.missed;
                self.metrics.missed(&e.workflow, p.missed);
            }
            self.status.send_modify(|s| s.missed += p.missed);
            self.index.arm(slot, p.next);
        }
        self.fire_rounds(rounds).await;
    }

    /// Publishes planned fires: round `k` holds each schedule's `k`-th fire, so one schedule's
    /// fires go out in order and each carries the previous one as `last_timestamp`.
    async fn fire_rounds(&mut self, rounds: Vec<Vec<Planned>>) {
        let mut touched = Vec::new();
        for round in rounds {
            if round.is_empty() {
                continue;
            }
            self.publish_round(&round).await;
            touched.extend(round.iter().map(|(slot, ..)| *slot));
        }
        touched.sort_unstable();
        touched.dedup();
        for slot in touched {
            if let Some(e) = self.index.get(slot) {
                self.writer.put(e.kv_key.clone(), e.state());
            }
        }
    }

    async fn publish_round(&mut self, round: &[Planned]) {
        // Build each fire right before sending it, so building overlaps with publishing.
        let mut planned = Vec::with_capacity(round.len());
        let mut fires = Vec::with_capacity(round.len());
        let mut pipeline = Pipeline::new(&self.js, round.len());
        for &(slot, instant, trigger, upcoming) in round {
            let Some(e) = self.index.get(slot) else {
                continue;
            };
            if e.cron.is_none() {
                continue;
            }
            let key = e.key();
            let payload = SchedulePayload {
                timestamp: instant,
                last_timestamp: e.last,
                timezone: e.timezone.to_string(),
                schedule_id: crate::model::schedule_id(&e.workflow, &key),
                key,
                upcoming,
            };
            let fire = Fire::scheduled(&e.workflow, trigger, payload);
            pipeline.send(&fire).await;
            planned.push((slot, instant, trigger));
            fires.push(fire);
        }
        let mut results = pipeline.finish().await;
        for delay in PUBLISH_RETRIES {
            let failed: Vec<usize> = (0..results.len())
                .filter(|i| results[*i].is_err())
                .collect();
            if failed.is_empty() || !self.leader {
                break;
            }
            warn!(
                failed = failed.len(),
                "publishing fires failed; retrying in {delay:?}"
            );
            tokio::time::sleep(delay).await;
            let retry: Vec<Fire> = failed.iter().map(|i| fires[*i].clone()).collect();
            for (i, r) in failed.into_iter().zip(publish_all(&self.js, &retry).await) {
                results[i] = r;
            }
        }
        let now = self.clock.now();
        let (mut fired, mut failed, mut last_fire) = (0u64, 0u64, None);
        let (mut first_fire, mut worst_late_ms, mut duplicates) = (None, 0i64, 0u64);
        for ((slot, instant, trigger), (fire, result)) in
            planned.iter().zip(fires.iter().zip(results))
        {
            let Some(e) = self.index.get_mut(*slot) else {
                continue;
            };
            let late_ms = (now - *instant).num_milliseconds();
            match result {
                Ok(duplicate) => {
                    fired += 1;
                    last_fire = last_fire.max(Some(*instant));
                    e.last = Some(*instant);
                    e.fires += 1;
                    e.error = None;
                    self.metrics
                        .fired(&e.workflow, *trigger, now - *instant, duplicate);
                    first_fire =
                        Some(first_fire.map_or(*instant, |f: DateTime<Utc>| f.min(*instant)));
                    worst_late_ms = worst_late_ms.max(late_ms);
                    duplicates += u64::from(duplicate);
                    debug!(
                        workflow = %e.workflow,
                        key = %fire.payload.key,
                        run_id = %fire.run_id,
                        scheduled = %crate::model::time::format_instant(*instant),
                        trigger = trigger.as_str(),
                        late_ms,
                        duplicate,
                        "fired"
                    );
                }
                Err(message) => {
                    failed += 1;
                    e.missed += 1;
                    self.metrics.missed(&e.workflow, 1);
                    e.error = Some(
                        format!(
                            "publishing the fire for {} failed: {message}",
                            crate::model::time::format_instant(*instant)
                        )
                        .into(),
                    );
                    error!(workflow = %e.workflow, key = %fire.payload.key, run_id = %fire.run_id, error = %message, "fire not published");
                }
            }
        }
        // One line per round at info (100,000 fires at 08:00 are one line); each fire at debug.
        info!(
            fires = fired,
            failed,
            duplicates,
            first = %first_fire.map(crate::model::time::format_instant).unwrap_or_default(),
            last = %last_fire.map(crate::model::time::format_instant).unwrap_or_default(),
            worst_late_ms,
            "fired a round"
        );
        // One status update per round, not per fire: watchers wake once.
        self.status.send_modify(|s| {
            s.fires += fired;
            s.missed += failed;
            s.last_fire = s.last_fire.max(last_fire);
        });
    }
}

fn secs(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

/// A schedule seen for the first time: nothing fired, nothing armed, no error, no cron; the
/// caller fills in what its value says.
fn new_entry(
    kv_key: &str,
    workflow: Arc<str>,
    timezone: Arc<str>,
    revision: u64,
    written_at: DateTime<Utc>,
) -> Entry {
    Entry {
        kv_key: Arc::from(kv_key),
        workflow,
        cron: None,
        timezone,
        paused: false,
        catchup: None,
        catchup_window_secs: None,
        revision,
        written_at,
        last: None,
        next: None,
        fires: 0,
        missed: 0,
        error: None,
    }
}

/// A per-schedule window in the compact form the table keeps (over 136 years saturates).
fn window_secs(secs: Option<u64>) -> Option<u32> {
    secs.map(|s| u32::try_from(s).unwrap_or(u32::MAX))
}
