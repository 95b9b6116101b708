//! Writing `polos_schedule_state`, off the firing path, without ever dropping a write.
//!
//! The ticker hands every change to a background writer and moves on; the writer coalesces
//! changes per key (only the newest state of a schedule is written) and writes a batch with many
//! puts in flight. So 100,000 fires at one instant do not wait for 100,000 KV round trips.
//!
//! While fires are being published the writer holds its writes back, for at most
//! [`MAX_DEFER`]: a state write costs the server as much as a fire, and on shared cores a round
//! of 100,000 fires interleaved with 100,000 state writes took twice as long (BENCHMARKS.md).
//! The writes then go out together right after the round (or every [`MAX_DEFER`] during a
//! longer one).
//!
//! A write that fails (a stream electing its leader, a reconnect, a timeout) stays pending and is
//! retried with backoff until it lands, unless a newer state of the same schedule replaced it.
//! Writes only go out while this replica leads and its lease deadline has not passed (the same
//! fence as fires), so a replica that lost the lease can never overwrite its successor's state;
//! when leadership ends, what is still pending is dropped and the successor re-plans from what
//! is stored.
//!
//! Why a lagging state record cannot lose or double a fire:
//! - A fire's identity is its instant: `Nats-Msg-Id: <schedule_id>@<timestamp>` and run id
//!   `<schedule_id>-<YYYYMMDDTHHMMSSZ>`. Publishing the same instant twice inside the stream's
//!   2-minute duplicate window stores it once; a later duplicate reaches a worker that finds the
//!   run already recorded and does not run it again.
//! - The state's `last_timestamp` only ever trails what was fired (it is written after the ack).
//!   A scheduler that takes over re-plans from it: what its predecessor fired but had not yet
//!   recorded is at most the fires of its last moments (a crash between an ack and the write of
//!   its state, or writes pending when the lease was lost). A successor takes over within the
//!   lease TTL, far inside the duplicate window, so those re-publishes are absorbed; it never
//!   skips an instant that was not fired. Holding writes back during a round widens the window
//!   by at most [`MAX_DEFER`] (2 s against the 2-minute duplicate window).
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
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::fence::Leadership;
use crate::model::ScheduleState;

/// Most state writes in flight at once.
const WRITES_IN_FLIGHT: usize = 512;

/// Longest a state write waits for a firing round to finish before it goes out anyway.
pub(crate) const MAX_DEFER: Duration = Duration::from_secs(2);

/// First retry delay of a failed write; doubles per failed round up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between two rounds of retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Write {
    Put(ScheduleState),
    Delete,
}

/// Handle to the background writer.
pub(crate) struct StateWriter {
    /// Changes for the writer; unbounded so the ticker never blocks on KV.
    tx: mpsc::UnboundedSender<(Arc<str>, Write)>,
    /// Whether fires are being published (writes wait, up to [`MAX_DEFER`]).
    publishing: watch::Sender<bool>,
    /// The writer task, awaited on close so a clean stop leaves state current.
    task: JoinHandle<()>,
}

impl StateWriter {
    /// Starts the writer on bucket `kv`; it writes while `leadership` says this replica may.
    pub fn spawn(kv: Store, leadership: watch::Receiver<Leadership>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (publishing, publishing_rx) = watch::channel(false);
        StateWriter {
            tx,
            publishing,
            task: tokio::spawn(write_loop(kv, rx, leadership, publishing_rx)),
        }
    }

    /// Tells the writer whether fires are being published right now.
    pub fn publishing(&self, busy: bool) {
        self.publishing
            .send_if_modified(|b| std::mem::replace(b, busy) != busy);
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
        drop(self.publishing);
        let mut task = self.task;
        if tokio::time::timeout(limit, &mut task).await.is_err() {
            warn!("schedule state writer did not finish within {limit:?}; some state records lag (the next scheduler re-plans from them safely)");
            task.abort();
        }
    }
}

async fn write_loop(
    kv: Store,
    mut rx: mpsc::UnboundedReceiver<(Arc<str>, Write)>,
    mut leadership: watch::Receiver<Leadership>,
    mut publishing: watch::Receiver<bool>,
) {
    let mut pending: HashMap<Arc<str>, Write> = HashMap::new();
    let mut open = true;
    let mut failed_rounds = 0u32;
    loop {
        if pending.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some((key, write)) => {
                    pending.insert(key, write);
                }
                None => return,
            }
            // Hold back while a round publishes, at most MAX_DEFER after this first write.
            // What arrives meanwhile waits in the channel: coalescing it now would put a hash
            // of every fire's key into the round.
            let deadline = tokio::time::Instant::now() + MAX_DEFER;
            while *publishing.borrow_and_update() {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    // Closed: the writer is being flushed.
                    changed = publishing.changed() => if changed.is_err() { break },
                }
            }
        }
        while let Ok((key, write)) = rx.try_recv() {
            pending.insert(key, write);
        }
        let now = *leadership.borrow_and_update();
        if !now.leading() {
            warn!(
                unwritten = pending.len(),
                "not leading any more: dropping unwritten schedule states (the next leader re-plans from what is stored)"
            );
            pending.clear();
            continue;
        }
        if !now.may_publish(now.term) {
            // Fenced until the lease is renewed or lost: wait for either (or more work).
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return },
                more = rx.recv(), if open => match more {
                    Some((key, write)) => { pending.insert(key, write); }
                    None => open = false,
                },
            }
            continue;
        }
        let batch: Vec<(Arc<str>, Write)> = pending.drain().collect();
        let total = batch.len();
        let writes = batch
            .into_iter()
            .map(|(key, write)| write_one(&kv, key, write));
        let failures: Vec<(Arc<str>, Write, String)> = futures::stream::iter(writes)
            .buffer_unordered(WRITES_IN_FLIGHT)
            .filter_map(std::future::ready)
            .collect()
            .await;
        // A cold start or a takeover may queue a million writes at once: give that memory back.
        if pending.capacity() > 4096 && pending.is_empty() {
            pending = HashMap::new();
        }
        if failures.is_empty() {
            failed_rounds = 0;
            continue;
        }
        failed_rounds += 1;
        let delay = retry_delay(failed_rounds);
        warn!(
            failed = failures.len(),
            of = total,
            first = %failures[0].2,
            retry_in = ?delay,
            "could not write schedule states; retrying"
        );
        for (key, write, _) in failures {
            // A newer state queued meanwhile supersedes the failed one.
            pending.entry(key).or_insert(write);
        }
        let backoff = tokio::time::sleep(delay);
        tokio::pin!(backoff);
        loop {
            tokio::select! {
                _ = &mut backoff => break,
                more = rx.recv(), if open => match more {
                    Some((key, write)) => { pending.insert(key, write); }
                    None => open = false,
                },
                changed = leadership.changed() => {
                    if changed.is_err() || !leadership.borrow().leading() { break }
                }
            }
        }
        debug!(pending = pending.len(), "retrying schedule state writes");
    }
}

fn retry_delay(failed_rounds: u32) -> Duration {
    FIRST_RETRY_DELAY
        .saturating_mul(2u32.saturating_pow(failed_rounds.saturating_sub(1).min(10)))
        .min(MAX_RETRY_DELAY)
}

/// Writes one state change; on failure the write back with the error text (naming the key).
async fn write_one(kv: &Store, key: Arc<str>, write: Write) -> Option<(Arc<str>, Write, String)> {
    let result = match &write {
        Write::Put(state) => {
            // A struct of strings, numbers and instants always serializes.
            let body = serde_json::to_vec(state).unwrap_or_default();
            kv.put(&*key, Bytes::from(body))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Write::Delete => kv.delete(&*key).await.map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => None,
        Err(e) => {
            let text = format!("{key}: {e}");
            Some((key, write, text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_cap() {
        assert_eq!(retry_delay(1), FIRST_RETRY_DELAY);
        assert_eq!(retry_delay(2), FIRST_RETRY_DELAY * 2);
        assert_eq!(retry_delay(40), MAX_RETRY_DELAY);
    }
}
