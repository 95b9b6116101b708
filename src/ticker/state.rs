//! Writing `polos_schedule_state`, off the firing path.
//!
//! The ticker hands every change to a background writer and moves on; the writer coalesces
//! changes per key (only the newest state of a schedule is written) and writes a batch with many
//! puts in flight. So 100,000 fires at one instant do not wait for 100,000 KV round trips.
//!
//! Why a lagging state record cannot lose or double a fire:
//! - A fire's identity is its instant: `Nats-Msg-Id: <schedule_id>@<timestamp>` and run id
//!   `<schedule_id>-<YYYYMMDDTHHMMSSZ>`. Publishing the same instant twice inside the stream's
//!   2-minute duplicate window stores it once; a later duplicate reaches a worker that finds the
//!   run already completed.
//! - The state's `last_timestamp` only ever trails what was fired (it is written after the ack).
//!   A scheduler that starts or takes over re-plans from it: at worst it re-publishes the
//!   instants fired in the last flush interval (milliseconds, far inside the window), which the
//!   stream drops as duplicates; it never skips an instant that was not fired.
//! - A graceful stop flushes the writer before releasing the lease.
//! - The one thing a crash inside that window can skew is a payload field: if the leader dies
//!   after the stream stored fire T but before it recorded T, a successor whose catch-up fires a
//!   later instant (policy `latest`) reports the instant before T as `last_timestamp`, and counts
//!   T as missed. Which instants fire, and how often, is unaffected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::model::ScheduleState;

/// Most state writes in flight at once.
const WRITES_IN_FLIGHT: usize = 512;

enum Write {
    Put(ScheduleState),
    Delete,
}

/// Handle to the background writer.
pub(crate) struct StateWriter {
    /// Changes for the writer; unbounded so the ticker never blocks on KV.
    tx: mpsc::UnboundedSender<(Arc<str>, Write)>,
    /// The writer task, awaited on close so a clean stop leaves state current.
    task: JoinHandle<()>,
}

impl StateWriter {
    /// Starts the writer on bucket `kv`.
    pub fn spawn(kv: Store) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        StateWriter {
            tx,
            task: tokio::spawn(write_loop(kv, rx)),
        }
    }

    /// Queues `state` for `kv_key`.
    pub fn put(&self, kv_key: Arc<str>, state: ScheduleState) {
        let _ = self.tx.send((kv_key, Write::Put(state)));
    }

    /// Queues the removal of `kv_key`'s state (its schedule was deleted).
    pub fn delete(&self, kv_key: Arc<str>) {
        let _ = self.tx.send((kv_key, Write::Delete));
    }

    /// Writes everything queued, then stops (bounded by `limit`).
    pub async fn close(self, limit: Duration) {
        drop(self.tx);
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            warn!("schedule state writer did not finish within {limit:?}; some state records lag (the next scheduler re-plans from them safely)");
            task.abort();
        }
    }
}

async fn write_loop(kv: Store, mut rx: mpsc::UnboundedReceiver<(Arc<str>, Write)>) {
    let mut batch: HashMap<Arc<str>, Write> = HashMap::new();
    while let Some((key, write)) = rx.recv().await {
        batch.insert(key, write);
        while let Ok((key, write)) = rx.try_recv() {
            batch.insert(key, write);
        }
        let writes = batch
            .drain()
            .map(|(key, write)| write_one(kv.clone(), key, write));
        let failures: Vec<String> = futures::stream::iter(writes)
            .buffer_unordered(WRITES_IN_FLIGHT)
            .filter_map(std::future::ready)
            .collect()
            .await;
        // A cold start or a takeover may queue a million writes at once: give that memory back.
        if batch.capacity() > 4096 {
            batch = HashMap::new();
        }
        if let Some(first) = failures.first() {
            warn!(
                failed = failures.len(),
                "could not write schedule state (first: {first}); the next change rewrites it"
            );
        }
    }
}

/// Writes one state change; the error text (naming the key) when it fails.
async fn write_one(kv: Store, key: Arc<str>, write: Write) -> Option<String> {
    let result = match write {
        Write::Put(state) => {
            let body = serde_json::to_vec(&state).unwrap_or_default();
            kv.put(&*key, Bytes::from(body))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Write::Delete => kv.delete(&*key).await.map_err(|e| e.to_string()),
    };
    result.err().map(|e| format!("{key}: {e}"))
}
