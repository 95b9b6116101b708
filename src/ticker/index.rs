//! The in-memory schedule table and its timeline: which schedule fires next.
//!
//! Entries live in a slab (`Vec<Option<Entry>>`) addressed by slot; a map finds a slot by KV key
//! and a `BTreeSet<(instant, slot)>` orders the armed schedules, so the ticker's timer waits on
//! the first element and firing pops a prefix — no scan of all schedules, ever. Compiled crons are
//! interned by `(expression, zone)` behind an `Arc`, so a million per-user schedules that share a
//! handful of crons each hold a pointer, not a parsed expression.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::cron::{CronError, CronSchedule};
use crate::model::{
    decode_key_cow, run_id_for, schedule_id, Backfill, BackfillProgress, CatchupPolicy, Ended,
    ScheduleState,
};

/// `Entry::catchup_window_secs` when the schedule sets no window (the scheduler's default).
pub(crate) const DEFAULT_WINDOW: u32 = u32::MAX;

/// One schedule as the ticker knows it: the parts of its record the ticker needs plus what it
/// has fired.
#[derive(Debug)]
pub(crate) struct Entry {
    /// `<workflow>.<encoded key>` in `polos_schedules` and `polos_schedule_state`.
    pub kv_key: Arc<str>,
    /// Workflow id, interned (many schedules share one workflow).
    pub workflow: Arc<str>,
    /// The compiled cron; `None` while the stored value is invalid.
    pub cron: Option<Arc<CronSchedule>>,
    /// Paused schedules stay in the table but not on the timeline.
    pub paused: bool,
    /// Its instant `next` has been handed to publishing (queued, in flight or waiting for a
    /// retry): off the timeline until the stream acknowledges it. A schedule has at most one
    /// fire out at a time, so its fires are stored in order and its state never skips one.
    pub firing: bool,
    /// Per-schedule catch-up policy override.
    pub catchup_policy: Option<CatchupPolicy>,
    /// Per-schedule catch-up window override, seconds; [`DEFAULT_WINDOW`] when not set (a
    /// sentinel rather than an `Option`, which would cost 4 more bytes per schedule).
    pub catchup_window_secs: u32,
    /// The jitter offset of the armed instant, in milliseconds: the timeline holds
    /// `next + offset` (kept, not recomputed, so a change of settings can never strand a
    /// timeline slot).
    pub offset_ms: u32,
    /// Bounds, a jitter override, back-fills and what the scheduler knows of them: boxed and
    /// absent for the many schedules that use none of it.
    pub policy: Option<Box<Policy>>,
    /// KV revision of the record version this entry reflects; older deliveries are ignored.
    pub revision: u64,
    /// When that version was written, on the ticker's clock: the base for "created/resumed/updated
    /// a moment before its instant".
    pub written_at: DateTime<Utc>,
    /// Scheduled instant of the last fire (payload `last_timestamp` of the next fire).
    pub last: Option<DateTime<Utc>>,
    /// The instant the timer is armed for (or, while `firing`, the instant being fired); `None`
    /// when paused, invalid or not leading.
    pub next: Option<DateTime<Utc>>,
    /// Fires published, carried over from the state record.
    pub fires: u64,
    /// Missed instants, carried over from the state record.
    pub missed: u64,
    /// Why the schedule cannot fire (bad value) or why its last fire failed.
    pub error: Option<Box<str>>,
}

/// The parts of a schedule that most schedules do not use (see [`Entry::policy`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Per-schedule jitter override, seconds.
    pub jitter_secs: Option<u32>,
    /// No instant before this fires.
    pub start_at: Option<DateTime<Utc>>,
    /// No instant after this fires.
    pub end_at: Option<DateTime<Utc>>,
    /// The schedule ends after this many fires (`fires`).
    pub max_runs: Option<u64>,
    /// The record's back-fill requests, by `seq`.
    pub backfills: Vec<Backfill>,
    /// How far they have been worked off (carried over from the state record).
    pub progress: Option<BackfillProgress>,
    /// Back-filled fires published (carried over from the state record).
    pub backfilled: u64,
    /// A `max_runs` fire recorded ahead of its publishing and not yet stored.
    pub pending: Option<DateTime<Utc>>,
    /// Why the schedule no longer fires, if it ended.
    pub ended: Option<Ended>,
    /// The back-filled instant being published (its request's `seq` and the instant): the
    /// schedule's one fire out.
    pub backfill_out: Option<(u64, DateTime<Utc>)>,
    /// When the schedule's on-time instant came due while a back-fill of it was out: it is
    /// decided as of that moment once the back-fill is stored, so the wait is never counted
    /// as lateness.
    pub held_due: Option<DateTime<Utc>>,
    /// In the driver's back-fill queue.
    pub backfill_queued: bool,
}

impl Policy {
    /// Whether nothing here differs from a schedule without a policy (the box can go).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

impl Entry {
    /// A schedule seen for the first time: nothing fired, nothing armed, no error, no cron; the
    /// caller fills in what its value says.
    pub fn new(
        kv_key: Arc<str>,
        workflow: Arc<str>,
        revision: u64,
        written_at: DateTime<Utc>,
    ) -> Entry {
        Entry {
            kv_key,
            workflow,
            cron: None,
            paused: false,
            firing: false,
            catchup_policy: None,
            catchup_window_secs: DEFAULT_WINDOW,
            offset_ms: 0,
            policy: None,
            revision,
            written_at,
            last: None,
            next: None,
            fires: 0,
            missed: 0,
            error: None,
        }
    }

    /// `sch_…` (payload `schedule_id`, run ids, `Nats-Msg-Id`). Derived on demand rather than
    /// stored: a SHA-256 of a few dozen bytes per fire is cheaper than 60 bytes per schedule
    /// for a million schedules. Empty for a value whose KV key names no valid schedule.
    pub fn schedule_id(&self) -> String {
        if self.workflow.is_empty() {
            String::new()
        } else {
            schedule_id(&self.workflow, &self.key())
        }
    }

    /// The schedule key, verbatim (payload `key`): decoded from the KV key rather than stored
    /// twice. Empty for a value whose KV key names no valid schedule.
    pub fn key(&self) -> String {
        self.key_cow().into_owned()
    }

    /// [`Entry::key`], borrowed from the KV key when it is written verbatim (most keys).
    pub fn key_cow(&self) -> Cow<'_, str> {
        if self.workflow.is_empty() {
            return Cow::Borrowed("");
        }
        self.kv_key
            .get(self.workflow.len() + 1..)
            .and_then(decode_key_cow)
            .unwrap_or_default()
    }

    /// The state record that describes this entry.
    pub fn state(&self) -> ScheduleState {
        self.state_with(|| self.schedule_id())
    }

    /// [`Entry::state`] when the caller already knows the schedule id (a fire just built it).
    pub fn state_with_id(&self, schedule_id: &str) -> ScheduleState {
        self.state_with(|| schedule_id.to_string())
    }

    /// The state, asking for the schedule id only when a run id is written (never fired: no
    /// hash, which a takeover of a million new schedules would otherwise pay).
    fn state_with(&self, schedule_id: impl FnOnce() -> String) -> ScheduleState {
        ScheduleState {
            last_timestamp: self.last,
            next: self.next,
            fires: self.fires,
            missed: self.missed,
            last_run_id: self.last.map(|t| run_id_for(&schedule_id(), t)),
            error: self.error.as_deref().map(str::to_string),
            schedule_revision: Some(self.revision),
            backfilled: self.policy.as_ref().map_or(0, |p| p.backfilled),
            backfill: self.policy.as_ref().and_then(|p| p.progress),
            ended: self.policy.as_ref().and_then(|p| p.ended),
            pending: self.policy.as_ref().and_then(|p| p.pending),
        }
    }

    /// The policy, created when the schedule has none yet.
    pub fn policy_mut(&mut self) -> &mut Policy {
        self.policy.get_or_insert_with(Box::default)
    }

    /// The schedule's `max_runs`, if any.
    pub fn max_runs(&self) -> Option<u64> {
        self.policy.as_ref().and_then(|p| p.max_runs)
    }

    /// Whether the schedule has fired `max_runs` times.
    pub fn out_of_runs(&self) -> bool {
        self.max_runs().is_some_and(|m| self.fires >= m)
    }
}

/// When a schedule armed at `instant` with `offset_ms` of jitter is due.
pub(crate) fn due_at(instant: DateTime<Utc>, offset_ms: u32) -> DateTime<Utc> {
    instant + chrono::Duration::milliseconds(i64::from(offset_ms))
}

/// The KV key of the entry in `slot`.
fn key_of(slots: &[Option<Entry>], slot: usize) -> Option<&str> {
    slots.get(slot).and_then(Option::as_ref).map(|e| &*e.kv_key)
}

/// The hash `Index::by_key` files `slot` under (its entry's KV key).
fn hash_slot(hasher: &RandomState, slots: &[Option<Entry>], slot: usize) -> u64 {
    hasher.hash_one(key_of(slots, slot).unwrap_or_default())
}

/// The table, the timeline and the cron interner.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Entries by slot; `None` marks a free slot.
    slots: Vec<Option<Entry>>,
    /// Free slots to reuse.
    free: Vec<usize>,
    /// Slot by KV key: slots hashed by their entry's KV key, so the key is held once (by the
    /// entry) and the table costs 8 bytes per schedule instead of 24. Hashed with std's keyed
    /// SipHash ([`RandomState`]): keys are user input, and a per-process random key keeps
    /// crafted colliding keys from degrading the table.
    by_key: HashTable<usize>,
    /// The key of `by_key`'s hash.
    hasher: RandomState,
    /// Armed schedules ordered by their next instant.
    timeline: BTreeSet<(DateTime<Utc>, usize)>,
    /// Between [`Index::begin_arming_all`] and [`Index::end_arming_all`]: arming only sets the
    /// entries, and the timeline is built from them at the end.
    arming_all: bool,
    /// Compiled crons by zone, then expression (two levels so a lookup borrows, never allocates).
    crons: HashMap<Box<str>, HashMap<Box<str>, Arc<CronSchedule>>>,
    /// Interned workflow ids and zone names.
    strings: HashMap<Box<str>, Arc<str>>,
    /// The cron found last, checked before the map: a million per-user schedules loaded in a
    /// row mostly share one (and hashing two strings per schedule showed in the cold start).
    last_cron: Option<Arc<CronSchedule>>,
    /// The strings interned last (workflow ids), for the same reason.
    last_strings: [Option<Arc<str>>; 2],
}

impl Index {
    /// The compiled cron for `(expr, timezone)`, parsing it once.
    pub fn cron(&mut self, expr: &str, timezone: &str) -> Result<Arc<CronSchedule>, CronError> {
        if let Some(c) = self
            .last_cron
            .as_ref()
            .filter(|c| c.expr() == expr && c.timezone().name() == timezone)
        {
            return Ok(c.clone());
        }
        if let Some(c) = self.crons.get(timezone).and_then(|m| m.get(expr)) {
            self.last_cron = Some(c.clone());
            return Ok(c.clone());
        }
        let compiled = Arc::new(CronSchedule::parse(expr, timezone)?);
        self.crons
            .entry(timezone.into())
            .or_default()
            .insert(expr.into(), compiled.clone());
        self.last_cron = Some(compiled.clone());
        Ok(compiled)
    }

    /// An interned copy of `text`.
    pub fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(s) = self.last_strings.iter().flatten().find(|s| ***s == *text) {
            return s.clone();
        }
        let s = match self.strings.get(text) {
            Some(s) => s.clone(),
            None => {
                let s: Arc<str> = Arc::from(text);
                self.strings.insert(text.into(), s.clone());
                s
            }
        };
        self.last_strings.swap(0, 1);
        self.last_strings[0] = Some(s.clone());
        s
    }

    /// Makes room for `schedules` more entries at once (a cold start knows how many come).
    pub fn reserve(&mut self, schedules: usize) {
        self.slots.reserve(schedules);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_key
            .reserve(schedules, |slot| hash_slot(hasher, slots, *slot));
    }

    /// The slot of `kv_key`.
    pub fn slot(&self, kv_key: &str) -> Option<usize> {
        let slots = &self.slots;
        self.by_key
            .find(self.hasher.hash_one(kv_key), |slot| {
                key_of(slots, *slot) == Some(kv_key)
            })
            .copied()
    }

    /// The entry in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Entry> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// The entry in `slot`, mutably. Change `next` only through [`Index::arm`].
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Entry> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// Inserts a new entry (its `next` must be `None`) and returns its slot.
    pub fn insert(&mut self, entry: Entry) -> usize {
        let hash = self.hasher.hash_one(&*entry.kv_key);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_key
            .insert_unique(hash, slot, |slot| hash_slot(hasher, slots, *slot));
        slot
    }

    /// Removes the entry of `kv_key`, disarming it.
    pub fn remove(&mut self, kv_key: &str) -> Option<Entry> {
        let slots = &self.slots;
        let (slot, _) = self
            .by_key
            .find_entry(self.hasher.hash_one(kv_key), |slot| {
                key_of(slots, *slot) == Some(kv_key)
            })
            .ok()?
            .remove();
        self.arm(slot, None);
        let entry = self.slots.get_mut(slot).and_then(Option::take);
        self.free.push(slot);
        if let Some(e) = &entry {
            self.release_cron(e.cron.as_ref());
        }
        entry
    }

    /// Drops the interned cron when `old` was its last user (besides the interner).
    pub fn release_cron(&mut self, old: Option<&Arc<CronSchedule>>) {
        if let Some(old) = old {
            if self.last_cron.as_ref().is_some_and(|c| Arc::ptr_eq(c, old)) {
                self.last_cron = None;
            }
            // 2 = the caller's entry + the interner's copy.
            if Arc::strong_count(old) <= 2 {
                // Find it by identity: the zone it was interned under is the name it was given.
                for by_expr in self.crons.values_mut() {
                    if by_expr.get(old.expr()).is_some_and(|c| Arc::ptr_eq(c, old)) {
                        by_expr.remove(old.expr());
                        break;
                    }
                }
                self.crons.retain(|_, by_expr| !by_expr.is_empty());
            }
        }
    }

    /// Sets the instant `slot` fires at (`None` disarms it), with no jitter; it is no longer
    /// firing.
    pub fn arm(&mut self, slot: usize, next: Option<DateTime<Utc>>) {
        self.arm_jittered(slot, next, 0);
    }

    /// Sets the instant `slot` fires at (`None` disarms it), due `offset_ms` after it; it is no
    /// longer firing.
    pub fn arm_jittered(&mut self, slot: usize, next: Option<DateTime<Utc>>, offset_ms: u32) {
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let (Some(old), false) = (entry.next, entry.firing) {
            self.timeline.remove(&(due_at(old, entry.offset_ms), slot));
        }
        entry.firing = false;
        entry.next = next;
        entry.offset_ms = if next.is_some() { offset_ms } else { 0 };
        if let (Some(new), false) = (next, self.arming_all) {
            self.timeline.insert((due_at(new, offset_ms), slot));
        }
    }

    /// Starts arming every schedule at once (a takeover): until [`Index::end_arming_all`],
    /// the timeline is left alone and must not be read.
    pub fn begin_arming_all(&mut self) {
        self.arming_all = true;
    }

    /// Builds the timeline from the entries' armed instants: sorting them once and building
    /// the tree from the sorted run costs a fraction of a million single inserts.
    pub fn end_arming_all(&mut self) {
        self.arming_all = false;
        let mut armed: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| {
                let e = e.as_ref().filter(|e| !e.firing)?;
                e.next.map(|next| (due_at(next, e.offset_ms), slot))
            })
            .collect();
        armed.sort_unstable();
        self.timeline = BTreeSet::from_iter(armed);
    }

    /// Takes `slot` off the timeline while its fire at `instant` is being published.
    pub fn start_firing(&mut self, slot: usize, instant: DateTime<Utc>) {
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let (Some(old), false) = (entry.next, entry.firing) {
            self.timeline.remove(&(due_at(old, entry.offset_ms), slot));
        }
        entry.firing = true;
        entry.next = Some(instant);
    }

    /// The earliest time a schedule is due (its armed instant plus its jitter).
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.timeline.first().map(|(t, _)| *t)
    }

    /// Slots due (armed instant plus jitter) at or before `now`, earliest first. They stay
    /// armed: the caller re-arms each.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<usize> {
        self.timeline
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, slot)| *slot)
            .collect()
    }

    /// Disarms everything and forgets what was being fired (leadership lost): entries keep
    /// what they fired.
    pub fn disarm_all(&mut self) {
        self.timeline.clear();
        for entry in self.slots.iter_mut().flatten() {
            entry.next = None;
            entry.firing = false;
            entry.offset_ms = 0;
            if let Some(p) = entry.policy.as_mut() {
                p.backfill_out = None;
                p.held_due = None;
                p.backfill_queued = false;
            }
        }
    }

    /// Every occupied slot.
    pub fn slots(&self) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|_| i))
            .collect()
    }

    /// Number of schedules.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn entry(index: &mut Index, kv_key: &str, cron: &str) -> Entry {
        Entry {
            cron: Some(index.cron(cron, "UTC").unwrap()),
            ..Entry::new(Arc::from(kv_key), index.intern("wf"), 1, Utc::now())
        }
    }

    #[test]
    fn timeline_orders_and_rearms() {
        let mut index = Index::default();
        let t = |m| Utc.with_ymd_and_hms(2026, 1, 1, 0, m, 0).unwrap();
        let e = entry(&mut index, "wf.a", "* * * * *");
        let a = index.insert(e);
        let e = entry(&mut index, "wf.b", "* * * * *");
        let b = index.insert(e);
        assert!(Arc::ptr_eq(
            index.get(a).unwrap().cron.as_ref().unwrap(),
            index.get(b).unwrap().cron.as_ref().unwrap()
        ));
        index.arm(a, Some(t(5)));
        index.arm(b, Some(t(3)));
        assert_eq!(index.earliest(), Some(t(3)));
        assert_eq!(index.due(t(4)), vec![b]);
        index.arm(b, Some(t(7)));
        assert_eq!(index.due(t(6)), vec![a]);
        index.remove("wf.a");
        assert_eq!(index.earliest(), Some(t(7)));
        index.start_firing(b, t(7));
        assert_eq!(
            index.earliest(),
            None,
            "a firing schedule is off the timeline"
        );
        assert_eq!(index.get(b).unwrap().next, Some(t(7)));
        index.arm(b, Some(t(8)));
        assert!(!index.get(b).unwrap().firing);
        assert_eq!(index.earliest(), Some(t(8)));
        index.arm_jittered(b, Some(t(9)), 1500);
        assert_eq!(
            index.earliest(),
            Some(t(9) + chrono::Duration::milliseconds(1500)),
            "the timeline holds the jittered time"
        );
        assert_eq!(index.due(t(9)), Vec::<usize>::new());
        index.arm_jittered(b, Some(t(10)), 200);
        assert_eq!(
            index.earliest(),
            Some(t(10) + chrono::Duration::milliseconds(200))
        );
        index.start_firing(b, t(10));
        assert_eq!(
            index.earliest(),
            None,
            "the jittered slot was found and removed"
        );
        index.arm(b, Some(t(8)));
        index.disarm_all();
        assert_eq!(index.earliest(), None);
        assert_eq!(index.len(), 1);
        let e = entry(&mut index, "wf.c", "0 * * * *");
        let c = index.insert(e);
        assert_eq!(c, a, "slots are reused");
    }
}

#[cfg(test)]
mod size {
    #[test]
    fn entry_stays_small() {
        // The inline part of an entry; with its strings, map and timeline slots a schedule costs
        // under 300 bytes (BENCHMARKS.md, the cold start's memory per schedule).
        let size = std::mem::size_of::<Option<super::Entry>>();
        eprintln!("Entry: {size} bytes");
        assert!(size <= 136, "Entry is {size} bytes");
    }
}
