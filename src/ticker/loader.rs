//! Reading a KV bucket completely, then following it live (ARCHITECTURE.md, "The scheduler").
//!
//! A last-per-subject read (`watch_with_history(">")`, or the pull consumer [`subscribe`]
//! makes) first delivers the latest value of every key (tombstones too) and
//! then every change, but says nothing when the initial data ends. So the bucket stream's last
//! sequence is read *before* reading: an empty bucket delivers nothing (caught up at once), and
//! an entry with `delta == 0` (nothing pending) or `revision >= last_sequence` is the moment we
//! have caught up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::Message;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::error::TickerError;
use chrono::{DateTime, Utc};

use crate::model::{Backfill, CatchupPolicy, Limits, ScheduleRecordRef};
use crate::store::{is_tombstone, ReadError};

/// One change of a bucket, in revision order.
#[derive(Debug)]
// Nearly every change is a `Put`; boxing it would add an allocation per schedule.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Change {
    /// A key was written.
    Put {
        /// The KV key (shared: the ticker keeps it as the schedule's name).
        kv_key: Arc<str>,
        /// Its revision (stream sequence).
        revision: u64,
        /// What the ticker keeps of the value (read here, on the loader's task, so a cold
        /// start parses in parallel with the ticker building its table), or why it is not a
        /// schedule.
        record: Result<Schedule, String>,
        /// When the server stored it. The ticker turns it into an age when it *applies* the
        /// change (not when it was read), to place "written a moment before its instant" on its
        /// own clock however long the change waited in between.
        written: SystemTime,
    },
    /// A key was deleted or purged.
    Delete {
        /// The KV key.
        kv_key: Arc<str>,
    },
    /// About this many keys are about to be delivered (the bucket's subject count): the table
    /// makes room for them at once instead of growing a million times.
    Expect(usize),
    /// Every value that existed when the watch started has been delivered.
    CaughtUp,
}

/// What the ticker keeps of a stored schedule value: a few fields, small and without
/// allocations (a `Change` of a million-key cold start is built, queued and dropped a million
/// times).
#[derive(Debug)]
pub(crate) struct Schedule {
    /// The cron expression.
    pub cron: Text,
    /// Its IANA zone.
    pub timezone: Text,
    /// Paused: stays in the table, off the timeline.
    pub paused: bool,
    /// Per-schedule catch-up policy.
    pub catchup: Option<CatchupPolicy>,
    /// Per-schedule catch-up window, seconds.
    pub catchup_window_secs: Option<u64>,
    /// Jitter override, bounds and back-fills; `None` when the value sets none of them (most
    /// schedules).
    pub policy: Option<Box<SchedulePolicy>>,
}

/// The rarely used fields of a schedule value (see [`Schedule::policy`]).
#[derive(Debug, Default)]
pub(crate) struct SchedulePolicy {
    /// `jitter_secs`.
    pub jitter_secs: Option<u64>,
    /// `start_at`.
    pub start_at: Option<DateTime<Utc>>,
    /// `end_at`.
    pub end_at: Option<DateTime<Utc>>,
    /// `max_runs`.
    pub max_runs: Option<u64>,
    /// `backfills`.
    pub backfills: Vec<Backfill>,
}

impl Schedule {
    /// Reads `value` (stored at `kv_key`) with the checks every reader applies
    /// ([`ScheduleRecordRef::from_kv`], then the record limits).
    pub fn read(kv_key: &str, value: &[u8], limits: &Limits) -> Result<Schedule, String> {
        let record = ScheduleRecordRef::from_kv(kv_key, value).map_err(|e| e.to_string())?;
        limits
            .check_stored(&record.key, &record.cron, record.note.as_deref())
            .map_err(|e| format!("value at {kv_key:?} cannot fire: {e}"))?;
        let policy = (record.jitter_secs.is_some()
            || record.start_at.is_some()
            || record.end_at.is_some()
            || record.max_runs.is_some()
            || !record.backfills.is_empty())
        .then(|| {
            Box::new(SchedulePolicy {
                jitter_secs: record.jitter_secs,
                start_at: record.start_at,
                end_at: record.end_at,
                max_runs: record.max_runs,
                backfills: record.backfills,
            })
        });
        Ok(Schedule {
            cron: Text::of(&record.cron),
            timezone: Text::of(&record.timezone),
            paused: record.paused,
            catchup: record.catchup,
            catchup_window_secs: record.catchup_window_secs,
            policy,
        })
    }
}

/// Text of a schedule value (its cron, its zone) held inline when short, as nearly all are: no
/// allocation, and nothing shared with the message, whose buffer would otherwise be released
/// (an atomic count shared by every message of a read) on the ticker's thread, once per
/// schedule.
#[derive(Debug, Clone)]
pub(crate) enum Text {
    /// Up to [`INLINE_TEXT`] bytes: length and bytes.
    Inline(u8, [u8; INLINE_TEXT]),
    /// Longer text.
    Heap(Box<str>),
}

/// The longest [`Text`] held inline (`"America/Argentina/ComodRivadavia"` is 32 bytes).
const INLINE_TEXT: usize = 38;

impl Text {
    fn of(text: &str) -> Text {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE_TEXT => {
                let mut bytes = [0; INLINE_TEXT];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                Text::Inline(len, bytes)
            }
            _ => Text::Heap(text.into()),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            // Copied from a `str` whole, so always UTF-8.
            Text::Inline(len, bytes) => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Text::Heap(text) => text,
        }
    }
}

/// The bucket's last stream sequence, whether it holds any message, and how many keys.
async fn last_sequence(kv: &Store) -> Result<(u64, bool, u64), TickerError> {
    let mut stream = kv.stream.clone();
    let info = stream.info().await.map_err(|e| TickerError::Watch {
        bucket: kv.name.clone(),
        source: ReadError::consumer(e),
    })?;
    Ok((
        info.state.last_sequence,
        info.state.messages > 0,
        info.state.subjects_count,
    ))
}

/// One bucket message as read off the wire, before its value is parsed.
enum Raw {
    /// A key was written: its value still as bytes.
    Put {
        kv_key: Arc<str>,
        revision: u64,
        value: Bytes,
        written: SystemTime,
    },
    /// A key was deleted or purged.
    Delete { kv_key: Arc<str> },
    /// The initial data ends here.
    CaughtUp,
}

/// Reads a bucket message the way the KV watcher does: key from the subject, operation from the
/// `KV-Operation` header (or a server marker: `store::is_tombstone`, the one rule), revision
/// and time from the reply subject. Also returns the revision and the consumer's pending count.
fn decode_message(kv: &Store, message: &Message) -> Result<(Raw, Position), ReadError> {
    let fields = match message.reply.as_deref().and_then(ack_fields) {
        Some(fields) => fields,
        // Whatever the short parse does not know, async-nats decides (and names the error).
        None => {
            let info = message.info().map_err(ReadError::consumer)?;
            AckFields {
                stream_sequence: info.stream_sequence,
                consumer_sequence: info.consumer_sequence,
                nanos: u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
                pending: info.pending,
            }
        }
    };
    let (stream_sequence, nanos) = (fields.stream_sequence, fields.nanos);
    let kv_key = message
        .subject
        .strip_prefix(kv.prefix.as_str())
        .ok_or_else(|| {
            ReadError::consumer(format!("message on {} outside the bucket", message.subject))
        })?;
    let kv_key = Arc::<str>::from(kv_key);
    let raw = if is_tombstone(message.headers.as_ref()) {
        Raw::Delete { kv_key }
    } else {
        Raw::Put {
            kv_key,
            revision: stream_sequence,
            value: message.payload.clone(),
            written: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
        }
    };
    Ok((
        raw,
        Position {
            revision: stream_sequence,
            delivered: fields.consumer_sequence,
            pending: fields.pending,
        },
    ))
}

/// Where a message stands in the read: its revision, its number in the consumer's deliveries
/// (1, 2, … without a gap, or a message was lost) and how many are left after it.
struct Position {
    revision: u64,
    delivered: u64,
    pending: u64,
}

/// The numbers of a JetStream message's reply subject the loader uses.
#[derive(Debug, PartialEq, Eq)]
struct AckFields {
    stream_sequence: u64,
    consumer_sequence: u64,
    nanos: u64,
    pending: u64,
}

/// The stream sequence, stored time (ns since the epoch) and pending count of a JetStream
/// message, read from its reply subject (ADR-15: `$JS.ACK.[<domain>.<account hash>.]<stream>.
/// <consumer>.<delivered>.<stream seq>.<consumer seq>.<nanos>.<pending>[.<token>]`, the same
/// token rules as async-nats' `Message::info`) without building that `Info`: a full parse (its
/// timestamp as an i128 turned into a date) was ≈ 2.5 % of the process's CPU in the cold start
/// of a million schedules (BENCHMARKS.md). `None` for anything else.
fn ack_fields(reply: &str) -> Option<AckFields> {
    let mut tokens = [""; 10];
    let mut n = 0;
    for (slot, token) in tokens
        .iter_mut()
        .zip(reply.strip_prefix("$JS.ACK.")?.split('.'))
    {
        *slot = token;
        n += 1;
    }
    let first = match n {
        7 => 0,
        9.. => 2,
        _ => return None,
    };
    Some(AckFields {
        stream_sequence: tokens[first + 3].parse().ok()?,
        consumer_sequence: tokens[first + 4].parse().ok()?,
        nanos: tokens[first + 5].parse().ok()?,
        pending: tokens[first + 6].parse().ok()?,
    })
}

fn to_change(raw: Raw, limits: &Limits) -> Change {
    match raw {
        Raw::Put {
            kv_key,
            revision,
            value,
            written,
        } => Change::Put {
            record: Schedule::read(&kv_key, &value, limits),
            kv_key,
            revision,
            written,
        },
        Raw::Delete { kv_key } => Change::Delete { kv_key },
        Raw::CaughtUp => Change::CaughtUp,
    }
}

/// Most changes sent to the ticker in one message: batching keeps the channel's per-message
/// cost out of a million-key cold start.
const BATCH: usize = 1024;

/// Raw batches buffered between reading and parsing: enough to keep both busy. Reading is
/// flow-controlled (a pull consumer), so a full buffer only slows the server down, it never
/// drops messages.
const RAW_BATCHES: usize = 16;

/// Messages asked for per pull. A pull of 10,000 instead of the ordered consumer's 500 made a
/// bare read of a million keys 1.3–1.5× faster, with 20 % less server CPU per key
/// (BENCHMARKS.md); at most one and a half pulls are buffered (≈ 2 MB of schedules), well
/// inside the client's subscription buffer, so the client never drops one as a slow consumer.
const PULL_BATCH: usize = 10_000;

/// Bytes asked for per pull at most: nats-server's largest `max_payload`, so any one value
/// fits, while a bucket of oversized values (written by hand) cannot buffer 10,000 of them.
const PULL_BYTES: usize = 64 * 1024 * 1024;

/// How often the server says an open pull is still alive: a consumer lost with a restarted
/// server (it lives in memory) shows as two missed heartbeats, and the read resumes on a new
/// one. (The ordered consumer used 15 s; a read that waits for a schedule change should notice
/// sooner.)
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// How long the server keeps a reader's consumer after the reader went away (a crash, a lost
/// connection): the loader makes a new one when it resumes.
const CONSUMER_IDLE: Duration = Duration::from_secs(60);

/// A pull consumer over the whole bucket: the latest value of every key first (`from == 0`),
/// or every message from revision `from`. Not async-nats' ordered consumer, whose pulls are
/// 500 messages: this one is ephemeral, unacknowledged and in memory like it, and the loader
/// does what the ordered one did itself: a gap in the delivery numbers
/// ([`Position::delivered`]) or a read error ends the read, which resumes on a new consumer.
async fn subscribe(kv: &Store, from: u64) -> Result<pull::Stream, ReadError> {
    let deliver_policy = if from == 0 {
        DeliverPolicy::LastPerSubject
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: from,
        }
    };
    let consumer = kv
        .stream
        .create_consumer(pull::Config {
            filter_subject: format!("{}>", kv.prefix),
            deliver_policy,
            ack_policy: AckPolicy::None,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: CONSUMER_IDLE,
            ..Default::default()
        })
        .await
        .map_err(ReadError::consumer)?;
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .max_bytes_per_batch(PULL_BYTES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(ReadError::consumer)
}

/// A delivery that is not the one after `last` (a message lost between server and client).
fn gap(last: u64, delivered: u64) -> Option<ReadError> {
    (delivered != last + 1).then(|| {
        ReadError::consumer(format!(
            "delivery {delivered} followed delivery {last}: a message was lost"
        ))
    })
}

/// Streams every key of `kv` and then every change into `tx`, in batches, with one
/// [`Change::CaughtUp`] after the initial data. Survives read errors (a stream electing its
/// leader, a reconnect, JetStream briefly unavailable) by retrying with backoff and resuming after
/// the last revision seen: it never gives up. Returns when `tx` is closed (the ticker stopped).
///
/// Why a pull consumer rather than `watch_with_history`: the watch is a push consumer, and at a
/// million keys it delivers faster than values can be parsed, so the client drops messages as a
/// slow consumer and the ordered consumer restarts and re-sends them (≈20,000 times per cold
/// start on 2 cores; 3,600–13,500 again when tried with today's faster parse). A pull consumer
/// only receives what was asked for. Parsing runs on its own task so reading the next batch
/// overlaps it.
///
/// A value beyond one of the `limits` (key, cron or note size) is passed on as invalid.
pub(crate) async fn follow(kv: Store, tx: mpsc::Sender<Vec<Change>>, limits: Limits) {
    let mut delay = Backoff::default();
    let (last_seq, any, keys) = loop {
        match last_sequence(&kv).await {
            Ok(found) => break found,
            Err(e) => {
                warn!(error = %e, "cannot read the schedules bucket yet; retrying");
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(delay.next()).await;
            }
        }
    };
    let mut caught_up = !any;
    let first = if caught_up {
        Change::CaughtUp
    } else {
        Change::Expect(usize::try_from(keys).unwrap_or(0))
    };
    if tx.send(vec![first]).await.is_err() {
        return;
    }
    let mut messages = loop {
        match subscribe(&kv, 0).await {
            Ok(m) => break m,
            Err(e) => {
                warn!(bucket = %kv.name, error = %e, "cannot read the schedules bucket yet; retrying");
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(delay.next()).await;
            }
        }
    };
    let (raw_tx, mut raw_rx) = mpsc::channel::<Vec<Raw>>(RAW_BATCHES);
    tokio::spawn(async move {
        while let Some(batch) = raw_rx.recv().await {
            let changes = batch
                .into_iter()
                .map(|raw| to_change(raw, &limits))
                .collect();
            if tx.send(changes).await.is_err() {
                return;
            }
        }
    });
    let mut seen = 0u64;
    // The delivery number of the last message of the current consumer.
    let mut delivered = 0u64;
    loop {
        let mut batch = Vec::new();
        let mut next = Some(messages.next().await);
        let mut failure = None;
        // Take whatever is ready, without waiting, up to a batch.
        while let Some(item) = next.take() {
            let read =
                match item {
                    Some(Ok(message)) => decode_message(&kv, &message).and_then(|(raw, at)| {
                        match gap(delivered, at.delivered) {
                            Some(lost) => Err(lost),
                            None => Ok((raw, at)),
                        }
                    }),
                    Some(Err(e)) => Err(ReadError::consumer(e)),
                    None => Err(ReadError::Ended),
                };
            match read {
                Ok((raw, at)) => {
                    let (revision, pending) = (at.revision, at.pending);
                    delivered = at.delivered;
                    seen = seen.max(revision);
                    let done = !caught_up && (pending == 0 || revision >= last_seq);
                    batch.push(raw);
                    if done {
                        caught_up = true;
                        batch.push(Raw::CaughtUp);
                    }
                    if batch.len() < BATCH {
                        next = messages.next().now_or_never();
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        if !batch.is_empty() && raw_tx.send(batch).await.is_err() {
            return;
        }
        let Some(failure) = failure else {
            delay = Backoff::default();
            continue;
        };
        warn!(bucket = %kv.name, error = %failure, "reading the bucket failed; resuming after revision {seen}");
        if raw_tx.is_closed() {
            return;
        }
        // Before the initial data is complete, start over from the latest values (the revision
        // order of a last-per-subject read is not a resumable position); after it, continue.
        // The failed read is not read again: its consumer may be gone (a restarted server
        // keeps no in-memory consumer), and it would say so only at its next heartbeat.
        let from = if caught_up { seen + 1 } else { 0 };
        messages = loop {
            tokio::time::sleep(delay.next()).await;
            match subscribe(&kv, from).await {
                Ok(m) => break m,
                Err(e) => {
                    warn!(bucket = %kv.name, error = %e, "cannot resume reading the bucket yet");
                    if raw_tx.is_closed() {
                        return;
                    }
                }
            }
        };
        delivered = 0;
    }
}

/// Longest wait for the next message while reading a bucket once: a read that stalls this long
/// (a stream without a leader) is abandoned and retried by the caller.
const READ_STALL: Duration = Duration::from_secs(10);

/// Reads the latest value of every live key of `kv` once, with the same pull consumer and
/// tombstone rule as [`follow`].
pub(crate) async fn load_all(kv: &Store) -> Result<HashMap<Arc<str>, Bytes>, TickerError> {
    let (last_seq, any, keys) = last_sequence(kv).await?;
    let mut out = HashMap::with_capacity(usize::try_from(keys).unwrap_or(0));
    if !any {
        return Ok(out);
    }
    let read_err = |source: ReadError| TickerError::Watch {
        bucket: kv.name.clone(),
        source,
    };
    let mut messages = subscribe(kv, 0).await.map_err(read_err)?;
    let mut delivered = 0u64;
    loop {
        let message = match tokio::time::timeout(READ_STALL, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(read_err(ReadError::consumer(e))),
            Ok(None) => return Err(read_err(ReadError::Ended)),
            Err(_) => {
                return Err(read_err(ReadError::Stalled {
                    idle: READ_STALL,
                    read: out.len(),
                    expected: keys,
                }))
            }
        };
        let (raw, at) = decode_message(kv, &message).map_err(read_err)?;
        if let Some(lost) = gap(delivered, at.delivered) {
            return Err(read_err(lost));
        }
        let (revision, pending) = (at.revision, at.pending);
        delivered = at.delivered;
        match raw {
            Raw::Put { kv_key, value, .. } => {
                out.insert(kv_key, value);
            }
            Raw::Delete { kv_key } => {
                out.remove(&*kv_key);
            }
            Raw::CaughtUp => {}
        }
        if pending == 0 || revision >= last_seq {
            return Ok(out);
        }
    }
}

/// Delays between attempts to read a bucket that is not available: 250 ms doubling to 5 s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(250))
    }
}

impl Backoff {
    /// The next delay.
    pub fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::{ack_fields, gap, AckFields};

    #[test]
    fn ack_fields_read_both_reply_subject_forms() {
        // Stream sequence 42, stored at 1_777_000_000_123_456_789 ns, 7 pending.
        let stamp = 1_777_000_000_123_456_789u64;
        let v1 = format!("$JS.ACK.KV_polos_schedules.c1.1.42.3.{stamp}.7");
        let v2 = format!("$JS.ACK._.ACCHASH.KV_polos_schedules.c1.1.42.3.{stamp}.7.tok");
        let v2_short = format!("$JS.ACK.dom.ACCHASH.KV_polos_schedules.c1.1.42.3.{stamp}.7");
        for reply in [&v1, &v2, &v2_short] {
            assert_eq!(
                ack_fields(reply),
                Some(AckFields {
                    stream_sequence: 42,
                    consumer_sequence: 3,
                    nanos: stamp,
                    pending: 7
                }),
                "{reply}"
            );
        }
        for bad in [
            "$JS.ACK.S.c.1.42.3.9",
            "_INBOX.x.y",
            "$JS.ACK.S.c.1.x.3.9.7",
            "$JS.ACK.S.c.1.42.3.-5.7",
        ] {
            assert_eq!(ack_fields(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_skipped_delivery_number_is_a_lost_message() {
        assert!(gap(0, 1).is_none());
        assert!(gap(41, 42).is_none());
        assert!(gap(0, 2).is_some(), "the first message was lost");
        assert!(gap(41, 43).is_some());
        assert!(gap(41, 41).is_some(), "a delivery repeated");
    }
}
