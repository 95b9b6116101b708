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
//! - A fire of a schedule with `max_runs` is the exception that must not be re-planned from a
//!   lagging record (its count would drift by the fire in between): it is written *ahead*, as
//!   the state's `pending`, with a confirmation ([`StateWriter::put_then`]), and published only
//!   once that write landed. A successor that finds `pending` publishes that instant (again, if
//!   it went out: absorbed) instead of judging it by the catch-up policy.
//! - The one thing a crash inside that window can skew is a payload field: if the leader dies
//!   after the stream stored fire T but before it recorded T, a successor whose catch-up fires a
//!   later instant (policy `latest`) reports the instant before T as `last_timestamp`, and counts
//!   T as missed. Which instants fire, and how often, is unaffected.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
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

/// One change for the writer: a key, what to write, and who waits for it to land.
type Change<T> = (Arc<str>, Write, Option<T>);

/// Handle to the background writer. `T` is what a caller of [`StateWriter::put_then`] gets
/// back once its write landed.
pub(crate) struct StateWriter<T> {
    /// Changes for the writer; unbounded so the ticker never blocks on KV.
    tx: mpsc::UnboundedSender<Change<T>>,
    /// Whether fires are being published (writes wait, up to [`MAX_DEFER`]).
    publishing: watch::Sender<bool>,
    /// Rung by [`StateWriter::put_then`]: a fire waits for that write, so it goes out at once.
    urgent: Arc<Notify>,
    /// The writer task, awaited on close so a clean stop leaves state current.
    task: JoinHandle<()>,
    /// Tokens of [`StateWriter::put_then`] writes that landed (or were superseded by a newer
    /// write of the same key that landed). A write dropped because leadership ended never
    /// answers.
    pub confirmed: mpsc::UnboundedReceiver<T>,
}

impl<T: Send + 'static> StateWriter<T> {
    /// Starts the writer on bucket `kv`; it writes while `leadership` says this replica may.
    pub fn spawn(kv: Store, leadership: watch::Receiver<Leadership>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (publishing, publishing_rx) = watch::channel(false);
        let (confirm_tx, confirmed) = mpsc::unbounded_channel();
        let urgent = Arc::new(Notify::new());
        StateWriter {
            tx,
            publishing,
            urgent: urgent.clone(),
            task: tokio::spawn(write_loop(
                kv,
                rx,
                leadership,
                Hold {
                    publishing: publishing_rx,
                    urgent,
                },
                confirm_tx,
            )),
            confirmed,
        }
    }

    /// Tells the writer whether fires are being published right now.
    pub fn publishing(&self, busy: bool) {
        self.publishing
            .send_if_modified(|b| std::mem::replace(b, busy) != busy);
    }

    /// Queues `state` for `kv_key`.
    pub fn put(&self, kv_key: Arc<str>, state: ScheduleState) {
        let _ = self.tx.send((kv_key, Write::Put(state), None));
    }

    /// Queues `state` for `kv_key` and hands `token` back on [`StateWriter::confirmed`] once it
    /// (or a newer state of the same key) is stored.
    pub fn put_then(&self, kv_key: Arc<str>, state: ScheduleState, token: T) {
        let _ = self.tx.send((kv_key, Write::Put(state), Some(token)));
        self.urgent.notify_one();
    }

    /// Queues the removal of `kv_key`'s state (its schedule was deleted).
    pub fn delete(&self, kv_key: Arc<str>) {
        let _ = self.tx.send((kv_key, Write::Delete, None));
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

/// What holds writes back while fires are published.
struct Hold {
    /// Whether a round is publishing.
    publishing: watch::Receiver<bool>,
    /// A write a fire waits for was queued: stop holding.
    urgent: Arc<Notify>,
}

/// The newest write of a key and the tokens waiting for it.
type Pending<T> = HashMap<Arc<str>, (Write, Vec<T>)>;

/// Adds a change: a newer write of a key replaces the older one and inherits its waiters.
fn merge<T>(pending: &mut Pending<T>, (key, write, token): Change<T>) {
    match pending.entry(key) {
        Entry::Occupied(mut slot) => {
            let slot = slot.get_mut();
            slot.0 = write;
            slot.1.extend(token);
        }
        Entry::Vacant(slot) => {
            slot.insert((write, token.into_iter().collect()));
        }
    }
}

async fn write_loop<T: Send + 'static>(
    kv: Store,
    mut rx: mpsc::UnboundedReceiver<Change<T>>,
    mut leadership: watch::Receiver<Leadership>,
    mut hold: Hold,
    confirm: mpsc::UnboundedSender<T>,
) {
    let mut pending: Pending<T> = HashMap::new();
    let mut open = true;
    let mut failed_rounds = 0u32;
    loop {
        if pending.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(change) => merge(&mut pending, change),
                None => return,
            }
            // Hold back while a round publishes, at most MAX_DEFER after this first write.
            // What arrives meanwhile waits in the channel: coalescing it now would put a hash
            // of every fire's key into the round. A write a fire waits for (`max_runs`) never
            // waits: holding it would delay that fire.
            let deadline = tokio::time::Instant::now() + MAX_DEFER;
            let awaited = pending.values().any(|(_, tokens)| !tokens.is_empty());
            while !awaited && *hold.publishing.borrow_and_update() {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = hold.urgent.notified() => break,
                    // Closed: the writer is being flushed.
                    changed = hold.publishing.changed() => if changed.is_err() { break },
                }
            }
        }
        while let Ok(change) = rx.try_recv() {
            merge(&mut pending, change);
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
                    Some(change) => merge(&mut pending, change),
                    None => open = false,
                },
            }
            continue;
        }
        let batch: Vec<_> = pending.drain().collect();
        let total = batch.len();
        let writes = batch.into_iter().map(|(key, (write, tokens))| {
            let kv = &kv;
            async move {
                match write_one(kv, &key, &write).await {
                    Ok(()) => Ok(tokens),
                    Err(e) => Err((key, write, tokens, e)),
                }
            }
        });
        let mut failures: Vec<(Arc<str>, Write, Vec<T>, String)> = Vec::new();
        let mut results = futures::stream::iter(writes).buffer_unordered(WRITES_IN_FLIGHT);
        while let Some(result) = results.next().await {
            match result {
                Ok(tokens) => tokens.into_iter().for_each(|t| {
                    let _ = confirm.send(t);
                }),
                Err(failure) => failures.push(failure),
            }
        }
        drop(results);
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
            first = %failures[0].3,
            retry_in = ?delay,
            "could not write schedule states; retrying"
        );
        for (key, write, tokens, _) in failures {
            // A newer state queued meanwhile supersedes the failed one (and answers its
            // waiters when it lands).
            let slot = pending.entry(key).or_insert((write, Vec::new()));
            slot.1.extend(tokens);
        }
        let backoff = tokio::time::sleep(delay);
        tokio::pin!(backoff);
        loop {
            tokio::select! {
                _ = &mut backoff => break,
                more = rx.recv(), if open => match more {
                    Some(change) => merge(&mut pending, change),
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

/// Writes one state change; on failure the error text (naming the key).
async fn write_one(kv: &Store, key: &str, write: &Write) -> Result<(), String> {
    let result = match write {
        Write::Put(state) => {
            // A struct of strings, numbers and instants always serializes.
            let body = serde_json::to_vec(state).unwrap_or_default();
            kv.put(key, Bytes::from(body))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Write::Delete => kv.delete(key).await.map_err(|e| e.to_string()),
    };
    result.map_err(|e| format!("{key}: {e}"))
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
