//! Reading a KV bucket completely, then following it live (design §9).
//!
//! `watch_with_history(">")` first delivers the latest value of every key (tombstones too) and
//! then every change, but says nothing when the initial data ends. So the bucket stream's last
//! sequence is read *before* watching: an empty bucket delivers nothing (caught up at once), and
//! an entry with `delta == 0` or `revision >= last_sequence` is the moment we have caught up.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::{Entry, Operation, Store};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::error::TickerError;
use crate::model::ScheduleRecord;

/// One change of a bucket, in revision order.
#[derive(Debug)]
// Nearly every change is a `Put`; boxing it would add an allocation per schedule.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Change {
    /// A key was written.
    Put {
        /// The KV key.
        kv_key: String,
        /// Its revision (stream sequence).
        revision: u64,
        /// The value read as a schedule record (parsed here, on the loader's task, so a cold
        /// start parses in parallel with the ticker building its table), or why it is not one.
        record: Result<ScheduleRecord, String>,
        /// How long ago the server stored it (real time), to place "written a moment before
        /// its instant" on the ticker's clock.
        age: Duration,
    },
    /// A key was deleted or purged.
    Delete {
        /// The KV key.
        kv_key: String,
    },
    /// Every value that existed when the watch started has been delivered.
    CaughtUp,
}

/// The bucket's last stream sequence and whether it holds any message.
async fn last_sequence(kv: &Store) -> Result<(u64, bool), TickerError> {
    let mut stream = kv.stream.clone();
    let info = stream.info().await.map_err(|e| TickerError::Watch {
        bucket: kv.name.clone(),
        message: e.to_string(),
    })?;
    Ok((info.state.last_sequence, info.state.messages > 0))
}

fn to_change(entry: Entry) -> Change {
    match entry.operation {
        Operation::Put => {
            let written = SystemTime::UNIX_EPOCH
                + Duration::from_nanos(
                    u64::try_from(entry.created.unix_timestamp_nanos()).unwrap_or(0),
                );
            let age = SystemTime::now()
                .duration_since(written)
                .unwrap_or(Duration::ZERO);
            Change::Put {
                record: ScheduleRecord::from_kv(&entry.key, &entry.value)
                    .map_err(|e| e.to_string()),
                kv_key: entry.key,
                revision: entry.revision,
                age,
            }
        }
        Operation::Delete | Operation::Purge => Change::Delete { kv_key: entry.key },
    }
}

/// Most changes sent to the ticker in one message: batching keeps the channel's per-message
/// cost out of a million-key cold start.
const BATCH: usize = 1024;

/// Streams every key of `kv` and then every change into `tx`, in batches, with one
/// [`Change::CaughtUp`] after the initial data. Survives watch errors by resuming after the last
/// revision seen. Returns when `tx` is closed (the ticker stopped).
pub(crate) async fn follow(kv: Store, tx: mpsc::Sender<Vec<Change>>) -> Result<(), TickerError> {
    let (last_seq, any) = last_sequence(&kv).await?;
    let mut caught_up = !any;
    if caught_up && tx.send(vec![Change::CaughtUp]).await.is_err() {
        return Ok(());
    }
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| TickerError::Watch {
            bucket: kv.name.clone(),
            message: e.to_string(),
        })?;
    let mut seen = 0u64;
    loop {
        let mut batch = Vec::new();
        let mut next = Some(watch.next().await);
        let mut failure = None;
        // Take whatever the watch has ready, without waiting, up to a batch.
        while let Some(item) = next.take() {
            match item {
                Some(Ok(entry)) => {
                    seen = seen.max(entry.revision);
                    let done = !caught_up && (entry.delta == 0 || entry.revision >= last_seq);
                    batch.push(to_change(entry));
                    if done {
                        caught_up = true;
                        batch.push(Change::CaughtUp);
                    }
                    if batch.len() < BATCH {
                        next = watch.next().now_or_never();
                    }
                }
                other => failure = Some(other),
            }
        }
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return Ok(());
        }
        let Some(failure) = failure else {
            continue;
        };
        match failure {
            Some(Err(e)) => {
                warn!(bucket = %kv.name, error = %e, "watch failed; resuming after revision {seen}")
            }
            _ => warn!(bucket = %kv.name, "watch ended; resuming after revision {seen}"),
        }
        if tx.is_closed() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        match kv.watch_all_from_revision(seen + 1).await {
            Ok(w) => watch = w,
            Err(e) => warn!(bucket = %kv.name, error = %e, "cannot resume the watch yet"),
        }
    }
}

/// Reads the latest value of every live key of `kv` once.
pub(crate) async fn load_all(kv: &Store) -> Result<HashMap<String, Bytes>, TickerError> {
    let (last_seq, any) = last_sequence(kv).await?;
    let mut out = HashMap::new();
    if !any {
        return Ok(out);
    }
    let watch_err = |e: &dyn std::fmt::Display| TickerError::Watch {
        bucket: kv.name.clone(),
        message: e.to_string(),
    };
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| watch_err(&e))?;
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| watch_err(&e))?;
        let done = entry.delta == 0 || entry.revision >= last_seq;
        match entry.operation {
            Operation::Put => {
                out.insert(entry.key, entry.value);
            }
            Operation::Delete | Operation::Purge => {
                out.remove(&entry.key);
            }
        }
        if done {
            return Ok(out);
        }
    }
    Err(watch_err(&"the watch ended before the initial values"))
}
