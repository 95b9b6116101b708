//! Publishing fires to `POLOS_RUNS`: a task of its own, pipelined, fenced.
//!
//! The firing loop hands batches of fires to this task and goes on applying changes and
//! following the lease; results come back on a channel. Within the task every fire is sent
//! without waiting for the previous one's ack; acks are awaited together (at most [`IN_FLIGHT`]
//! outstanding, below async-nats' default ack semaphore of 5,000, which a caller holding more
//! un-awaited acks would deadlock on). So 10,000 fires due at one instant cost a few round trips,
//! not 10,000, and a slow or unavailable stream never blocks the loop.
//!
//! Right before each fire goes out, the task checks the fence ([`Leadership::may_publish`]) and
//! that the connection is up: a fire is never handed to a disconnected client (which would keep
//! it and write it after reconnecting, possibly after a standby took over). Such a fire comes back
//! [`Published::Held`], and the loop offers it again shortly; a fire whose publish failed comes
//! back [`Published::Failed`] and is retried with backoff. Only the loop decides when to give up
//! (when this replica stops leading; the successor fires it through catch-up).

use std::future::IntoFuture;

use async_nats::connection::State;
use async_nats::jetstream;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, watch};

use super::fence::Leadership;
use crate::model::Fire;

/// Most fires awaiting their ack at once.
pub const IN_FLIGHT: usize = 4096;

/// Results are handed back at least this often (in fires), so the loop records fires, re-arms
/// schedules and writes their state while a large round is still going out.
const RESULT_CHUNK: usize = 1024;

/// What became of one fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Published {
    /// The stream stored it; `duplicate` when it already had (same `Nats-Msg-Id` inside the
    /// duplicate window: another publisher fired the same instant).
    Stored {
        /// The stream answered "duplicate".
        duplicate: bool,
    },
    /// Not sent: this replica is fenced (lease deadline passed, or another term) or the
    /// connection is down.
    Held,
    /// Sent, but the stream did not acknowledge it (the error text).
    Failed(String),
}

/// Fires planned under one lease term, each with the caller's token.
pub(crate) struct Batch<T> {
    /// The term they were planned under: they go out only while it is current.
    pub term: u64,
    /// The fires, in order.
    pub fires: Vec<(T, Fire)>,
}

/// The loop's end of the publishing task.
pub(crate) struct Publisher<T> {
    /// Batches to publish.
    tx: mpsc::UnboundedSender<Batch<T>>,
    /// Results, in chunks, in the order the fires were sent.
    pub results: mpsc::UnboundedReceiver<Vec<(T, Published)>>,
}

impl<T: Send + 'static> Publisher<T> {
    /// Starts the task on `js`, fenced by `leadership`.
    pub fn spawn(js: jetstream::Context, leadership: watch::Receiver<Leadership>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (results_tx, results) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(js, leadership, rx, results_tx));
        Publisher { tx, results }
    }

    /// Queues a batch. Unbounded: the loop bounds what it has in flight itself.
    pub fn send(&self, batch: Batch<T>) {
        let _ = self.tx.send(batch);
    }
}

async fn publish_loop<T: Send + 'static>(
    js: jetstream::Context,
    leadership: watch::Receiver<Leadership>,
    mut batches: mpsc::UnboundedReceiver<Batch<T>>,
    results_tx: mpsc::UnboundedSender<Vec<(T, Published)>>,
) {
    let client = js.client();
    let mut acks = FuturesOrdered::new();
    let mut results: Vec<(T, Published)> = Vec::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = acks.next(), if !acks.is_empty() => {
                results.push(done);
            }
            batch = batches.recv(), if open => {
                let Some(batch) = batch else {
                    open = false;
                    continue;
                };
                for (token, fire) in batch.fires {
                    if acks.len() >= IN_FLIGHT {
                        if let Some(done) = acks.next().await {
                            results.push(done);
                        }
                    }
                    let may = leadership.borrow().may_publish(batch.term)
                        && client.connection_state() == State::Connected;
                    if !may {
                        results.push((token, Published::Held));
                        continue;
                    }
                    // Sending only queues the message on the connection; the ack is awaited
                    // later, together with the others.
                    match js
                        .publish_with_headers(fire.subject(), fire.headers(), fire.body())
                        .await
                    {
                        Ok(ack) => {
                            let ack = ack.into_future();
                            acks.push_back(async move {
                                let outcome = match ack.await {
                                    Ok(a) => Published::Stored { duplicate: a.duplicate },
                                    Err(e) => Published::Failed(e.to_string()),
                                };
                                (token, outcome)
                            });
                        }
                        Err(e) => results.push((token, Published::Failed(e.to_string()))),
                    }
                }
            }
            else => {
                // Input closed and every ack is in.
                if !results.is_empty() {
                    let _ = results_tx.send(std::mem::take(&mut results));
                }
                return;
            }
        }
        let flush = !results.is_empty() && (acks.is_empty() || results.len() >= RESULT_CHUNK);
        if flush && results_tx.send(std::mem::take(&mut results)).is_err() {
            return;
        }
    }
}
