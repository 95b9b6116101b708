//! The overlap policy, enforced where a run starts: may a delivered fire start while another run
//! of its schedule is still executing?
//!
//! # Where it lives and why
//!
//! Each schedule whose policy is not `allow_all` has one record in KV `polos_overlap`, at the
//! schedule's own key (see [`OverlapRecord`]): the *active* run, the runs *waiting*, and how
//! many were *skipped*. Every worker reads it and changes it by compare-and-swap, so two workers
//! deciding about fires of one schedule at the same moment cannot both start one, and nothing in
//! it depends on which scheduler published the fires (failover changes nothing).
//!
//! A crashed worker cannot leave a schedule stuck: an entry only counts while its run can still
//! execute — for the active run, while its run record is not finished *and* its fire is still in
//! `POLOS_RUNS` (a fire leaves the work queue once answered; a crashed worker's fire stays and is
//! redelivered, and that run resumes — it still is the schedule's active run); for a waiting run,
//! while its fire is in the stream. The first fire that finds an entry stale drops it. The active
//! run itself clears the record when it finishes (`completed`, `failed`, `cancelled`); a retry
//! waiting for its backoff keeps it, since the run is not over.
//!
//! # What each policy does with a fire that finds another run executing
//!
//! | policy         | the fire                                                                 |
//! |----------------|--------------------------------------------------------------------------|
//! | `skip`         | is recorded `skipped` (`yielded_to` names the active run) and acked      |
//! | `buffer_one`   | waits, if nobody else waits; else it is skipped                          |
//! | `buffer_all`   | waits its turn (by nominal instant; at most [`MAX_WAITING`], then skipped) |
//! | `cancel_other` | asks the active run to cancel and waits for it; an older fire is skipped, a newer one takes a waiting one's place |
//! | `allow_all`    | starts (no record is read or written)                                    |
//!
//! A fire that *waits* is not run and has no run record yet: it is put in the record's
//! `waiting` list and handed back to JetStream with a nak delayed [`wait_delay`] (200 ms,
//! doubling per delivery, at most 5 s). Each time it comes back it looks again; it starts when the
//! schedule is idle and it is first in line. So a buffered run starts at most 5 s after the run
//! before it ended, and waiting costs one KV read per fire per poll.
//!
//! The decision itself is [`decide`], a pure function tested below; [`Gate`] does its reads and
//! writes.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::stream::Stream as JsStream;
use chrono::{DateTime, Utc};
use thiserror::Error;

use super::claim::{still_queued, QueueCheckError};
use crate::model::time::now_seconds;
use crate::model::{OverlapPolicy, OverlapRecord, OverlapRun};
use crate::store::{OverlapStore, RunKey, RunStore, StoreError};

/// Most runs of one schedule waiting under `buffer_all`; a fire beyond is skipped (the record
/// must fit in one message, and a schedule that far behind will not catch up).
pub const MAX_WAITING: usize = 1000;
/// How often a decision is tried again after losing a compare-and-swap to another worker.
const ROUNDS: usize = 20;

/// The fire asking to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Me {
    /// Its run id.
    pub run_id: String,
    /// Its nominal instant.
    pub scheduled_for: DateTime<Utc>,
    /// Its stream sequence.
    pub seq: u64,
}

impl Me {
    fn entry(&self, since: Option<DateTime<Utc>>) -> OverlapRun {
        OverlapRun {
            run_id: self.run_id.clone(),
            scheduled_for: self.scheduled_for,
            fire_seq: self.seq,
            since,
        }
    }

    /// Whether this fire comes after `other` in the schedule's order (nominal instant, then run
    /// id, so two fires never tie).
    fn after(&self, other: &OverlapRun) -> bool {
        (self.scheduled_for, self.run_id.as_str()) > (other.scheduled_for, other.run_id.as_str())
    }
}

/// What the fire does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start the run (the record names it active).
    Start,
    /// Do not run: record it `skipped`, yielded to this run.
    Skip {
        /// The run it yields to.
        yielded_to: String,
    },
    /// Wait (the record lists it among the waiting) and look again later.
    Wait {
        /// Under `cancel_other`: the active run to ask to cancel.
        cancel: Option<String>,
    },
}

/// Which run's liveness a decision needs before it can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// The active run: is its record unfinished and its fire still in the stream?
    Active(OverlapRun),
    /// A waiting run: is its fire still in the stream?
    Waiting(OverlapRun),
}

/// One step of deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Look this up, put the answer in `live`, and decide again.
    Need(Need),
    /// The decision, and the record to write for it (for `Skip`, the caller only counts the
    /// skip once the run is recorded).
    Done(Decision, OverlapRecord),
}

/// Decides what fire `me` does under `policy`, given the schedule's `record` and what is known
/// about its runs (`live`: run id → whether it can still execute). Never called for
/// `allow_all`. `now` stamps a run that becomes active.
///
/// | schedule                  | first in line?       | decision                                      |
/// |---------------------------|----------------------|-----------------------------------------------|
/// | active run is this fire   | —                    | start (a redelivery resuming it)              |
/// | another run active, live  | —                    | by policy (table in the module doc)           |
/// | idle, nobody waiting      | —                    | start                                         |
/// | idle, this fire first     | yes                  | start                                         |
/// | idle, another waits, live | no                   | `skip`: start; `buffer_all`: line up by instant (start if that puts it first); `buffer_one`: skipped; `cancel_other`: the newer of the two goes |
///
/// Entries found dead are dropped before deciding.
pub(crate) fn decide(
    policy: OverlapPolicy,
    me: &Me,
    record: &OverlapRecord,
    live: &HashMap<String, bool>,
    now: DateTime<Utc>,
) -> Step {
    let mut rec = record.clone();
    let dead = |run: &OverlapRun| live.get(&run.run_id) == Some(&false);
    if rec.active.as_ref().is_some_and(dead) {
        rec.active = None;
    }
    rec.waiting.retain(|w| !dead(w));
    let mine = |run: &OverlapRun| run.run_id == me.run_id;

    if let Some(active) = rec.active.clone() {
        if mine(&active) {
            rec.waiting.retain(|w| !mine(w));
            rec.active = Some(OverlapRun {
                fire_seq: me.seq,
                ..active
            });
            return Step::Done(Decision::Start, rec);
        }
        let position = rec.waiting.iter().position(mine);
        // Only the fire that would go next checks whether the active run is still alive; the
        // rest of the line waits without reads.
        let must_check = match policy {
            OverlapPolicy::BufferOne | OverlapPolicy::BufferAll => {
                position == Some(0) || (position.is_none() && rec.waiting.is_empty())
            }
            _ => true,
        };
        if must_check && !live.contains_key(&active.run_id) {
            return Step::Need(Need::Active(active));
        }
        return busy(policy, me, rec, &active, position, live);
    }
    idle(policy, me, rec, live, now)
}

/// Another run is executing.
fn busy(
    policy: OverlapPolicy,
    me: &Me,
    mut rec: OverlapRecord,
    active: &OverlapRun,
    position: Option<usize>,
    live: &HashMap<String, bool>,
) -> Step {
    let skip = |rec: OverlapRecord| {
        Step::Done(
            Decision::Skip {
                yielded_to: active.run_id.clone(),
            },
            rec,
        )
    };
    let wait = |rec: OverlapRecord, cancel: bool| {
        Step::Done(
            Decision::Wait {
                cancel: cancel.then(|| active.run_id.clone()),
            },
            rec,
        )
    };
    match policy {
        OverlapPolicy::Skip | OverlapPolicy::AllowAll => skip(rec),
        OverlapPolicy::BufferAll => {
            if position.is_some() {
                return wait(rec, false);
            }
            if rec.waiting.len() >= MAX_WAITING {
                return skip(rec);
            }
            line_up(&mut rec, me);
            wait(rec, false)
        }
        OverlapPolicy::BufferOne => {
            if position.is_some() {
                return wait(rec, false);
            }
            if let Some(other) = rec.waiting.first().cloned() {
                if !live.contains_key(&other.run_id) {
                    return Step::Need(Need::Waiting(other));
                }
                return skip(rec);
            }
            rec.waiting.push(me.entry(None));
            wait(rec, false)
        }
        OverlapPolicy::CancelOther => {
            if !me.after(active) {
                // An older fire never cancels a newer run.
                return skip(rec);
            }
            match rec.waiting.first() {
                Some(first) if first.run_id == me.run_id => {}
                Some(first) if !me.after(first) => return skip(rec),
                // Empty, or an older fire waits: this newer one takes its place (the older one
                // finds itself displaced when it comes back, and is skipped).
                _ => rec.waiting = vec![me.entry(None)],
            }
            rec.waiting.truncate(1);
            wait(rec, true)
        }
    }
}

/// No run is executing.
fn idle(
    policy: OverlapPolicy,
    me: &Me,
    mut rec: OverlapRecord,
    live: &HashMap<String, bool>,
    now: DateTime<Utc>,
) -> Step {
    let start = |mut rec: OverlapRecord| {
        rec.waiting.retain(|w| w.run_id != me.run_id);
        rec.active = Some(me.entry(Some(now)));
        Step::Done(Decision::Start, rec)
    };
    let Some(first) = rec.waiting.first().cloned() else {
        return start(rec);
    };
    if first.run_id == me.run_id || policy == OverlapPolicy::Skip {
        // (`skip` ignores a line left by an earlier buffering policy.)
        return start(rec);
    }
    if !live.contains_key(&first.run_id) {
        return Step::Need(Need::Waiting(first));
    }
    match policy {
        OverlapPolicy::BufferAll => {
            if !rec.waiting.iter().any(|w| w.run_id == me.run_id) {
                if rec.waiting.len() >= MAX_WAITING {
                    return Step::Done(
                        Decision::Skip {
                            yielded_to: first.run_id,
                        },
                        rec,
                    );
                }
                line_up(&mut rec, me);
            }
            if rec.waiting.first().is_some_and(|w| w.run_id == me.run_id) {
                start(rec)
            } else {
                Step::Done(Decision::Wait { cancel: None }, rec)
            }
        }
        OverlapPolicy::CancelOther if me.after(&first) => {
            rec.waiting.clear();
            start(rec)
        }
        _ => Step::Done(
            Decision::Skip {
                yielded_to: first.run_id,
            },
            rec,
        ),
    }
}

/// Puts `me` among the waiting, in nominal-instant order.
fn line_up(rec: &mut OverlapRecord, me: &Me) {
    let at = rec
        .waiting
        .iter()
        .position(|w| !me.after(w))
        .unwrap_or(rec.waiting.len());
    rec.waiting.insert(at, me.entry(None));
}

/// The nak delay of a waiting fire on its `delivered`-th delivery: 200 ms doubling, at most 5 s.
pub(crate) fn wait_delay(delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 10)).unwrap_or(10);
    (Duration::from_millis(200) * 2u32.pow(doublings)).min(Duration::from_secs(5))
}

/// Why a decision could not be made (nothing was decided; the fire is delivered again).
#[derive(Debug, Error)]
pub(crate) enum GateError {
    /// Reading or writing the overlap record or a run record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Whether a run's fire is still queued could not be checked.
    #[error(transparent)]
    Stream(#[from] QueueCheckError),
    /// Other workers changed the record on every round.
    #[error("the overlap record of schedule {workflow}/{key} changed on each of {ROUNDS} compare-and-swap rounds")]
    Contended {
        /// The workflow.
        workflow: String,
        /// The schedule key.
        key: String,
    },
}

/// Reads and writes of the overlap record around one fire.
pub(crate) struct Gate<'a> {
    /// `polos_overlap`.
    pub overlap: &'a OverlapStore,
    /// `polos_runs`, to tell whether the active run finished.
    pub runs: &'a RunStore,
    /// `POLOS_RUNS`, to tell whether a run's fire is still queued.
    pub stream: &'a JsStream,
    /// The schedule's workflow.
    pub workflow: &'a str,
    /// The schedule's key.
    pub key: &'a str,
}

/// The record as this run's start wrote it: leaving tries a compare-and-swap on it first.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    /// The record written.
    record: OverlapRecord,
    /// Its revision.
    revision: u64,
}

/// What [`Gate::enter`] decided, with what the caller needs next.
#[derive(Debug)]
pub(crate) enum Entered {
    /// The record names this run active.
    Start(Ticket),
    /// Skip the run (nothing written yet).
    Skip(String),
    /// The record lists this run as waiting.
    Wait(Option<String>),
}

impl Gate<'_> {
    /// Decides and writes what fire `me` does under `policy`.
    pub(crate) async fn enter(&self, policy: OverlapPolicy, me: &Me) -> Result<Entered, GateError> {
        for _ in 0..ROUNDS {
            let stored = self.overlap.get(self.workflow, self.key).await?;
            let mut live = HashMap::new();
            let (decision, mut record) = loop {
                match decide(policy, me, &stored.record, &live, now_seconds()) {
                    Step::Done(decision, record) => break (decision, record),
                    Step::Need(Need::Active(run)) => {
                        let alive = self.active_alive(&run).await?;
                        live.insert(run.run_id, alive);
                    }
                    Step::Need(Need::Waiting(run)) => {
                        let alive = self.queued(run.fire_seq, &run.run_id).await?;
                        live.insert(run.run_id, alive);
                    }
                }
            };
            if let Decision::Skip { yielded_to } = decision {
                return Ok(Entered::Skip(yielded_to));
            }
            if record == stored.record {
                if let (Decision::Wait { cancel }, Some(_)) = (&decision, stored.revision) {
                    return Ok(Entered::Wait(cancel.clone()));
                }
            }
            record.updated_at = Some(now_seconds());
            match self
                .overlap
                .put(self.workflow, self.key, &record, stored.revision)
                .await
            {
                Ok(revision) => {
                    return Ok(match decision {
                        Decision::Start => Entered::Start(Ticket { record, revision }),
                        Decision::Wait { cancel } => Entered::Wait(cancel),
                        Decision::Skip { yielded_to } => Entered::Skip(yielded_to),
                    })
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.contended())
    }

    /// Counts one skipped run in the record.
    pub(crate) async fn count_skip(&self) -> Result<(), GateError> {
        self.change(|record| {
            record.skipped += 1;
            true
        })
        .await
    }

    /// Clears the record's active run if it is `run_id` (the run finished). The record the
    /// start wrote (`ticket`) is tried first, without a read: usually nobody changed it since.
    pub(crate) async fn leave(
        &self,
        run_id: &str,
        ticket: Option<Ticket>,
    ) -> Result<(), GateError> {
        if let Some(Ticket {
            mut record,
            revision,
        }) = ticket
        {
            if record.active.as_ref().is_some_and(|a| a.run_id == run_id) {
                record.active = None;
                record.updated_at = Some(now_seconds());
                match self
                    .overlap
                    .put(self.workflow, self.key, &record, Some(revision))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.change(|record| {
            if record.active.as_ref().is_some_and(|a| a.run_id == run_id) {
                record.active = None;
                true
            } else {
                false
            }
        })
        .await
    }

    /// Read, `change` (returns whether it changed anything), compare-and-swap; again on conflict.
    async fn change(
        &self,
        mut change: impl FnMut(&mut OverlapRecord) -> bool,
    ) -> Result<(), GateError> {
        for _ in 0..ROUNDS {
            let stored = self.overlap.get(self.workflow, self.key).await?;
            let mut record = stored.record;
            if !change(&mut record) {
                return Ok(());
            }
            record.updated_at = Some(now_seconds());
            match self
                .overlap
                .put(self.workflow, self.key, &record, stored.revision)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.contended())
    }

    /// Whether the active run can still execute: its record is not finished and its fire is
    /// still in the stream.
    async fn active_alive(&self, run: &OverlapRun) -> Result<bool, GateError> {
        let Ok(key) = RunKey::new(self.workflow, &run.run_id) else {
            // Not a run id (a hand-edited record): nothing can be executing under it.
            return Ok(false);
        };
        let seq = match self.runs.get(&key).await {
            Ok(Some(stored)) if stored.record.status.is_finished() => return Ok(false),
            Ok(Some(stored)) => stored.record.fire_seq.unwrap_or(run.fire_seq),
            Ok(None) => run.fire_seq,
            // An unreadable record is replaced by the next claim of its run; its fire decides.
            Err(e) if e.is_permanent() => run.fire_seq,
            Err(e) => return Err(e.into()),
        };
        self.queued(seq, &run.run_id).await
    }

    async fn queued(&self, seq: u64, run_id: &str) -> Result<bool, GateError> {
        Ok(still_queued(self.stream, seq, run_id).await?)
    }

    fn contended(&self) -> GateError {
        GateError::Contended {
            workflow: self.workflow.to_string(),
            key: self.key.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::parse_instant;
    use OverlapPolicy::*;

    fn at(minute: u32) -> DateTime<Utc> {
        parse_instant(&format!("2026-11-26T09:{minute:02}:00Z")).unwrap()
    }

    fn me(minute: u32) -> Me {
        Me {
            run_id: format!("r{minute}"),
            scheduled_for: at(minute),
            seq: u64::from(minute) + 100,
        }
    }

    fn run(minute: u32) -> OverlapRun {
        me(minute).entry(None)
    }

    fn record(active: Option<u32>, waiting: &[u32]) -> OverlapRecord {
        OverlapRecord {
            active: active.map(|m| OverlapRun {
                since: Some(at(0)),
                ..run(m)
            }),
            waiting: waiting.iter().map(|m| run(*m)).collect(),
            ..OverlapRecord::default()
        }
    }

    fn live(entries: &[(u32, bool)]) -> HashMap<String, bool> {
        entries
            .iter()
            .map(|(m, alive)| (format!("r{m}"), *alive))
            .collect()
    }

    /// Decides with an oracle that answers every need from `alive`.
    fn run_decide(
        policy: OverlapPolicy,
        fire: u32,
        rec: &OverlapRecord,
        alive: &[(u32, bool)],
    ) -> (Decision, OverlapRecord, Vec<Need>) {
        let oracle = live(alive);
        let mut known = HashMap::new();
        let mut needs = Vec::new();
        loop {
            match decide(policy, &me(fire), rec, &known, at(59)) {
                Step::Done(d, r) => return (d, r, needs),
                Step::Need(need) => {
                    let id = match &need {
                        Need::Active(r) | Need::Waiting(r) => r.run_id.clone(),
                    };
                    known.insert(
                        id.clone(),
                        *oracle.get(&id).expect("asked about an unexpected run"),
                    );
                    needs.push(need);
                }
            }
        }
    }

    fn waiting_ids(rec: &OverlapRecord) -> Vec<String> {
        rec.waiting.iter().map(|w| w.run_id.clone()).collect()
    }

    #[test]
    fn an_idle_schedule_starts_the_fire_under_every_policy() {
        for policy in [Skip, BufferOne, BufferAll, CancelOther] {
            let (d, rec, needs) = run_decide(policy, 1, &OverlapRecord::default(), &[]);
            assert_eq!(d, Decision::Start, "{policy:?}");
            assert_eq!(rec.active.as_ref().unwrap().run_id, "r1");
            assert_eq!(rec.active.unwrap().since, Some(at(59)));
            assert!(needs.is_empty(), "no reads when idle");
        }
    }

    #[test]
    fn the_active_run_itself_starts_again_a_redelivery() {
        for policy in [Skip, BufferOne, BufferAll, CancelOther] {
            let (d, rec, needs) = run_decide(policy, 1, &record(Some(1), &[2]), &[]);
            assert_eq!(d, Decision::Start);
            assert!(needs.is_empty());
            assert_eq!(waiting_ids(&rec), ["r2"], "the line is kept");
        }
    }

    #[test]
    fn skip_yields_to_a_live_active_run_and_takes_over_a_dead_one() {
        let (d, _, needs) = run_decide(Skip, 2, &record(Some(1), &[]), &[(1, true)]);
        assert_eq!(
            d,
            Decision::Skip {
                yielded_to: "r1".into()
            }
        );
        assert_eq!(
            needs,
            [Need::Active(OverlapRun {
                since: Some(at(0)),
                ..run(1)
            })]
        );
        let (d, rec, _) = run_decide(Skip, 2, &record(Some(1), &[]), &[(1, false)]);
        assert_eq!(d, Decision::Start);
        assert_eq!(rec.active.unwrap().run_id, "r2");
    }

    #[test]
    fn buffer_one_keeps_one_waiting_and_skips_the_rest() {
        let busy = record(Some(1), &[]);
        let (d, rec, _) = run_decide(BufferOne, 2, &busy, &[(1, true)]);
        assert_eq!(d, Decision::Wait { cancel: None });
        assert_eq!(waiting_ids(&rec), ["r2"]);
        // A third fire finds the buffer full.
        let (d, rec3, _) = run_decide(BufferOne, 3, &rec, &[(1, true), (2, true)]);
        assert_eq!(
            d,
            Decision::Skip {
                yielded_to: "r1".into()
            }
        );
        assert_eq!(waiting_ids(&rec3), ["r2"]);
        // The waiting one comes back while r1 still runs: it waits, without a read.
        let (d, _, needs) = run_decide(BufferOne, 2, &rec, &[(1, true)]);
        assert_eq!(d, Decision::Wait { cancel: None });
        assert_eq!(needs.len(), 1, "the next in line checks the active run");
        // r1 is gone (finished, its record cleared): r2 starts.
        let (d, rec, _) = run_decide(BufferOne, 2, &record(None, &[2]), &[]);
        assert_eq!(d, Decision::Start);
        assert!(rec.waiting.is_empty());
        // A waiting run whose fire vanished is replaced.
        let (d, rec, _) = run_decide(
            BufferOne,
            3,
            &record(Some(1), &[2]),
            &[(1, true), (2, false)],
        );
        assert_eq!(d, Decision::Wait { cancel: None });
        assert_eq!(waiting_ids(&rec), ["r3"]);
    }

    #[test]
    fn buffer_all_lines_up_by_instant_and_only_the_first_checks() {
        let mut rec = record(Some(1), &[]);
        for fire in [4, 2, 3] {
            let (d, next, _) = run_decide(BufferAll, fire, &rec, &[(1, true)]);
            assert_eq!(d, Decision::Wait { cancel: None });
            rec = next;
        }
        assert_eq!(waiting_ids(&rec), ["r2", "r3", "r4"]);
        let (_, _, needs) = run_decide(BufferAll, 3, &rec, &[]);
        assert!(needs.is_empty(), "a fire further back waits without reads");
        // r1 finished: only r2 may start; r3 waits.
        rec.active = None;
        let (d, _, _) = run_decide(BufferAll, 3, &rec, &[(2, true)]);
        assert_eq!(d, Decision::Wait { cancel: None });
        let (d, after, _) = run_decide(BufferAll, 2, &rec, &[]);
        assert_eq!(d, Decision::Start);
        assert_eq!(waiting_ids(&after), ["r3", "r4"]);
        // The first in line vanished: the next one goes.
        let (d, after, _) = run_decide(BufferAll, 3, &rec, &[(2, false)]);
        assert_eq!(d, Decision::Start);
        assert_eq!(waiting_ids(&after), ["r4"]);
    }

    #[test]
    fn buffer_all_skips_past_its_cap() {
        let mut rec = record(Some(0), &[]);
        rec.waiting = (1..=MAX_WAITING as u32)
            .map(|i| OverlapRun {
                run_id: format!("w{i}"),
                ..run(1)
            })
            .collect();
        let (d, _, _) = run_decide(BufferAll, 5, &rec, &[]);
        assert_eq!(
            d,
            Decision::Skip {
                yielded_to: "r0".into()
            }
        );
    }

    #[test]
    fn cancel_other_cancels_the_active_run_and_the_newest_fire_wins() {
        let (d, rec, _) = run_decide(CancelOther, 2, &record(Some(1), &[]), &[(1, true)]);
        assert_eq!(
            d,
            Decision::Wait {
                cancel: Some("r1".into())
            }
        );
        assert_eq!(waiting_ids(&rec), ["r2"]);
        // A newer fire displaces the waiting one.
        let (d, rec, _) = run_decide(CancelOther, 3, &rec, &[(1, true)]);
        assert_eq!(
            d,
            Decision::Wait {
                cancel: Some("r1".into())
            }
        );
        assert_eq!(waiting_ids(&rec), ["r3"]);
        // The displaced one comes back: older than the waiting one, so skipped.
        let (d, _, _) = run_decide(CancelOther, 2, &rec, &[(1, true)]);
        assert_eq!(
            d,
            Decision::Skip {
                yielded_to: "r1".into()
            }
        );
        // An older fire never cancels a newer active run.
        let (d, _, _) = run_decide(CancelOther, 0, &record(Some(1), &[]), &[(1, true)]);
        assert_eq!(
            d,
            Decision::Skip {
                yielded_to: "r1".into()
            }
        );
        // The cancelled run ended: the waiting one starts.
        let (d, _, _) = run_decide(CancelOther, 3, &record(None, &[3]), &[]);
        assert_eq!(d, Decision::Start);
    }

    #[test]
    fn an_idle_schedule_with_a_line_serves_the_line_first() {
        let rec = record(None, &[2]);
        let (d, _, _) = run_decide(BufferOne, 3, &rec, &[(2, true)]);
        assert_eq!(
            d,
            Decision::Skip {
                yielded_to: "r2".into()
            }
        );
        let (d, _, _) = run_decide(BufferAll, 3, &rec, &[(2, true)]);
        assert_eq!(d, Decision::Wait { cancel: None });
        let (d, after, _) = run_decide(BufferAll, 1, &rec, &[(2, true)]);
        assert_eq!(d, Decision::Start, "an older instant lines up first");
        assert_eq!(waiting_ids(&after), ["r2"]);
        let (d, after, _) = run_decide(CancelOther, 3, &rec, &[(2, true)]);
        assert_eq!(d, Decision::Start, "the newest goes");
        assert!(after.waiting.is_empty());
        let (d, _, _) = run_decide(Skip, 3, &rec, &[]);
        assert_eq!(
            d,
            Decision::Start,
            "skip ignores a line an earlier policy left"
        );
    }

    #[test]
    fn waits_back_off_to_five_seconds() {
        assert_eq!(wait_delay(1), Duration::from_millis(200));
        assert_eq!(wait_delay(2), Duration::from_millis(400));
        assert_eq!(wait_delay(6), Duration::from_millis(5000));
        assert_eq!(wait_delay(1000), Duration::from_secs(5));
        assert_eq!(wait_delay(0), Duration::from_millis(200));
    }
}
