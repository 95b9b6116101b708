//! [`Counts`]: how many schedules each workflow has, for `limits.max_schedules_per_workflow`.
//!
//! JetStream cannot count the live keys under a prefix: a stream's per-subject state (stream
//! info with a subjects filter) and a last-per-subject consumer's pending count both include
//! deleted keys, whose tombstones stay in `polos_schedules`, and both cost a request per create
//! that grows with the workflow. So the service keeps the count itself: a headers-only pull
//! consumer reads the latest message of every key once (subjects and headers, no values), then
//! follows every change (pulled in batches), and a set of key hashes per workflow says what is
//! live.
//!
//! How exact it is:
//! - **One replica: exact.** The check and the reservation of an in-flight create happen under
//!   one lock, and a create counts from the moment it is admitted until the follower sees it,
//!   so N concurrent creates at one below the limit admit exactly one. An update of an existing
//!   schedule is never refused (when the view does not know the key, the handler reads it).
//! - **Several replicas:** each one sees the others' creates within about 10 ms (the
//!   follower's pull interval) after they are stored, so a workflow may end above its limit by
//!   the creates other replicas admitted in that moment — at most the concurrent creates of that workflow on the other replicas.
//! - Values written straight into KV count as soon as they are seen; they are never refused
//!   (KV writers are trusted roles; the API is the admission point).
//! - Keys are held as 64-bit hashes with a per-process random key (8 bytes each instead of the
//!   key): two keys of one workflow sharing a hash would count once, which for a million keys
//!   happens with a chance of about 3 in 100 million.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use tokio::sync::watch;

use crate::model::names::SCHEDULES_BUCKET;
use crate::model::{validate_workflow, LimitError, Limits};
use crate::store::is_tombstone;

/// How long a create waits for the first full read of the bucket before it is refused as
/// `internal` (retry): well inside a client's request timeout.
const LOAD_WAIT: Duration = Duration::from_secs(4);
/// The longest pause between attempts to read the bucket after an error.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Most messages one pull takes (headers only: about 100 bytes each).
const BATCH: usize = 5_000;
/// How long the follower waits between pulls while the bucket is being written: another
/// replica's create counts here at most this much later (plus a round trip).
const PULL_EVERY: Duration = Duration::from_millis(10);
/// How long a pull waits for the next write when the bucket is quiet.
const IDLE_WAIT: Duration = Duration::from_secs(2);
/// How long the server keeps the consumer after its last pull (the service stopped or lost its
/// connection); far above [`IDLE_WAIT`].
const INACTIVE: Duration = Duration::from_secs(60);

/// The live schedules of every workflow, followed from `polos_schedules`.
#[derive(Debug)]
pub(crate) struct Counts {
    /// Shared with the follower task and with [`Reservation`]s.
    table: Arc<Mutex<Table>>,
    /// `true` once the follower has read every key that existed when it started.
    loaded: watch::Receiver<bool>,
    /// The limits to check against.
    limits: Limits,
    /// The follower; stopped when this is dropped.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct Table {
    /// Hashes of the live KV keys, by workflow.
    live: HashMap<Box<str>, HashSet<u64>>,
    /// Creates admitted and not yet stored (or refused), by workflow.
    pending: HashMap<Box<str>, u64>,
    /// The per-process key of the hashes.
    hasher: RandomState,
}

impl Table {
    fn hash(&self, kv_key: &str) -> u64 {
        self.hasher.hash_one(kv_key)
    }

    fn put(&mut self, workflow: &str, hash: u64) {
        match self.live.get_mut(workflow) {
            Some(set) => {
                set.insert(hash);
            }
            None => {
                self.live.insert(workflow.into(), HashSet::from([hash]));
            }
        }
    }

    fn remove(&mut self, workflow: &str, hash: u64) {
        if let Some(set) = self.live.get_mut(workflow) {
            set.remove(&hash);
            if set.is_empty() {
                self.live.remove(workflow);
            }
        }
    }

    fn release(&mut self, workflow: &str) {
        if let Some(n) = self.pending.get_mut(workflow) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(workflow);
            }
        }
    }
}

/// Why a create could not be admitted.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The workflow has as many schedules as `limits.max_schedules_per_workflow` allows.
    Limit(LimitError),
    /// The first read of the bucket has not finished (the service just started).
    Loading,
}

/// An admitted create, counted until it is stored or dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    table: Arc<Mutex<Table>>,
    workflow: String,
    hash: u64,
    /// Whether the write is known to be stored.
    stored: bool,
}

impl Reservation {
    /// The create was stored: it now counts as a live key.
    pub fn stored(mut self) {
        self.stored = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        table.release(&self.workflow);
        if self.stored {
            table.put(&self.workflow, self.hash);
        }
    }
}

/// A poisoned lock only means a panic elsewhere while counting; the counts stay usable.
fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

impl Counts {
    /// Starts following `polos_schedules` (its stream `KV_polos_schedules`).
    pub(crate) fn start(stream: Stream, limits: Limits) -> Counts {
        let table = Arc::new(Mutex::new(Table::default()));
        let (loaded_tx, loaded) = watch::channel(false);
        let task = tokio::spawn(follow(stream, table.clone(), loaded_tx));
        Counts {
            table,
            loaded,
            limits,
            task,
        }
    }

    /// Admits a write of `kv_key` (of `workflow`): `None` when the key is already live (an
    /// update, never refused), a [`Reservation`] for a create below the limit.
    pub(crate) async fn admit(
        &self,
        workflow: &str,
        kv_key: &str,
    ) -> Result<Option<Reservation>, Refusal> {
        let mut loaded = self.loaded.clone();
        match tokio::time::timeout(LOAD_WAIT, loaded.wait_for(|l| *l)).await {
            Ok(Ok(_)) => {}
            _ => return Err(Refusal::Loading),
        }
        let mut table = lock(&self.table);
        let hash = table.hash(kv_key);
        let live = table.live.get(workflow);
        if live.is_some_and(|set| set.contains(&hash)) {
            return Ok(None);
        }
        let existing = live.map_or(0, |set| set.len() as u64)
            + table.pending.get(workflow).copied().unwrap_or(0);
        self.limits
            .check_schedule_count(workflow, existing)
            .map_err(Refusal::Limit)?;
        *table.pending.entry(workflow.into()).or_default() += 1;
        drop(table);
        Ok(Some(Reservation {
            table: self.table.clone(),
            workflow: workflow.to_string(),
            hash,
            stored: false,
        }))
    }

    /// `kv_key` was deleted by this service: it stops counting at once (the follower confirms).
    pub(crate) fn deleted(&self, workflow: &str, kv_key: &str) {
        let mut table = lock(&self.table);
        let hash = table.hash(kv_key);
        table.remove(workflow, hash);
    }
}

/// Reads every key's latest message, then every change, into `table`; never gives up.
async fn follow(stream: Stream, table: Arc<Mutex<Table>>, loaded: watch::Sender<bool>) {
    let prefix = format!("$KV.{SCHEDULES_BUCKET}.");
    let mut retry = Duration::from_millis(250);
    // The position to resume from: 0 until the first full read is done (a last-per-subject
    // read has no resumable position), then one past the last revision applied.
    let mut from = 0u64;
    loop {
        match read(&stream, &prefix, &table, &loaded, &mut from).await {
            Ok(()) => retry = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(error = %e, "counting the schedules per workflow: cannot read {SCHEDULES_BUCKET}; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// One consumer's worth of [`follow`]: returns when pulling fails or a message was lost.
///
/// Messages are pulled in batches rather than streamed: a streamed consumer costs a task
/// wake-up, a heartbeat timer reset and a server flush for every write of the bucket, which
/// measured about as much CPU as the API's own work per upsert (BENCHMARKS.md, "API"). While
/// writes come in, one pull every [`PULL_EVERY`] takes what the last message said was left;
/// when nothing is left, one waiting pull of a single message ([`IDLE_WAIT`]) holds until the
/// next write, so an idle service sends one request per [`IDLE_WAIT`].
async fn read(
    stream: &Stream,
    prefix: &str,
    table: &Mutex<Table>,
    loaded: &watch::Sender<bool>,
    from: &mut u64,
) -> Result<(), String> {
    let mut info_stream = stream.clone();
    let info = info_stream.info().await.map_err(|e| e.to_string())?;
    let (last, messages) = (info.state.last_sequence, info.state.messages);
    if !*loaded.borrow() && messages == 0 {
        loaded.send_replace(true);
    }
    let consumer = create(stream, prefix, *from).await?;
    // The consumer sequence of the last message applied: a jump means a message was lost on
    // the way (a slow-consumer drop), and the count would drift; the caller starts over.
    let mut delivered = 0u64;
    // What the consumer had left after the last message applied (`None` before the first).
    let mut left: Option<u64> = None;
    loop {
        // A pull asks for no more than is known to be there, so the server fills it at once
        // and it ends by itself: a pull left open would take later messages to an inbox
        // nobody reads any more. With nothing known to be there, it waits for one message.
        let want = match left {
            Some(0) | None => 1,
            Some(n) => usize::try_from(n).unwrap_or(BATCH).min(BATCH),
        };
        let mut batch = consumer
            .batch()
            .max_messages(want)
            .expires(IDLE_WAIT)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut got = 0usize;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| e.to_string())?;
            let info = message.info().map_err(|e| e.to_string())?;
            let (revision, pending) = (info.stream_sequence, info.pending);
            if info.consumer_sequence != delivered + 1 {
                return Err(format!(
                    "message {} of the consumer arrived after {delivered}: one was lost",
                    info.consumer_sequence
                ));
            }
            delivered = info.consumer_sequence;
            left = Some(pending);
            got += 1;
            let kv_key = message.subject.as_str().strip_prefix(prefix).unwrap_or("");
            let workflow = kv_key.split_once('.').map_or("", |(w, _)| w);
            if validate_workflow(workflow).is_ok() {
                let deleted = is_tombstone(message.headers.as_ref());
                let mut table = lock(table);
                let hash = table.hash(kv_key);
                if deleted {
                    table.remove(workflow, hash);
                } else {
                    table.put(workflow, hash);
                }
            }
            if *loaded.borrow() {
                *from = revision + 1;
            } else if pending == 0 || revision >= last {
                *from = last.max(revision) + 1;
                loaded.send_replace(true);
            }
        }
        // While writes come in, gather them for a moment instead of pulling each one; a
        // backlog (the first read, a burst) is pulled without pause.
        if got > 0 && got < BATCH && *loaded.borrow() {
            tokio::time::sleep(PULL_EVERY).await;
        }
    }
}

/// An ephemeral pull consumer of every key's headers (no values), from `from` (`0`: the latest
/// message of every key first). The server removes it when the service is gone.
async fn create(
    stream: &Stream,
    prefix: &str,
    from: u64,
) -> Result<Consumer<pull::Config>, String> {
    let deliver_policy = if from == 0 {
        DeliverPolicy::LastPerSubject
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: from,
        }
    };
    stream
        .create_consumer(pull::Config {
            filter_subject: format!("{prefix}>"),
            description: Some("polos: schedules per workflow".to_string()),
            headers_only: true,
            deliver_policy,
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: INACTIVE,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(max: u64) -> Counts {
        let (loaded_tx, loaded) = watch::channel(true);
        drop(loaded_tx);
        Counts {
            table: Arc::new(Mutex::new(Table::default())),
            loaded,
            limits: Limits {
                max_schedules_per_workflow: max,
                ..Limits::default()
            },
            task: tokio::spawn(async {}),
        }
    }

    #[tokio::test]
    async fn concurrent_creates_at_one_below_the_limit_admit_exactly_one() {
        let counts = counts(3);
        for key in ["wf.a", "wf.b"] {
            counts.admit("wf", key).await.unwrap().unwrap().stored();
        }
        let first = counts.admit("wf", "wf.c").await.unwrap();
        assert!(first.is_some(), "the third schedule is admitted");
        assert!(
            matches!(counts.admit("wf", "wf.d").await, Err(Refusal::Limit(_))),
            "a fourth is refused while the third is in flight"
        );
        // Another workflow has its own count; an update of a live key is never refused.
        assert!(counts.admit("other", "other.a").await.unwrap().is_some());
        assert!(counts.admit("wf", "wf.a").await.unwrap().is_none());
        // The third create failed: its place is free again.
        drop(first);
        counts.admit("wf", "wf.d").await.unwrap().unwrap().stored();
        assert!(matches!(
            counts.admit("wf", "wf.e").await,
            Err(Refusal::Limit(_))
        ));
        counts.deleted("wf", "wf.a");
        assert!(counts.admit("wf", "wf.e").await.unwrap().is_some());
    }
}
