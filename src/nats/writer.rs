//! [`Writer`]: JetStream publishes whose acks all come back on one subscription.
//!
//! async-nats' `jetstream::Context::publish` (and the KV `create`/`update` built on it) costs
//! per message an inbox string, a request registration in the connection task, a oneshot, a
//! timer, a semaphore permit, a boxed future and an untagged-enum parse of the ack. A writer
//! that many concurrent requests share does better with one wildcard subscription
//! `<inbox>.*`: each publish carries the reply subject `<inbox>.<n>`, and the ack of publish
//! `n` is handed to whoever waits for `n`. The ticker's publisher (`ticker/publisher.rs`) does
//! the same for fires sent in order; this one serves independent callers (the schedules API's
//! compare-and-swap writes), so acks are matched by number, not by order.
//!
//! Every publish ends: with the server's ack, its error, "no responders" (no stream takes the
//! subject), a publish error, or after [`ACK_TIMEOUT`] (the server restarted and lost it, the
//! connection is down): never hung.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::oneshot;

/// How long a publish waits for its ack: the default timeout of async-nats' JetStream context,
/// which the KV calls this replaces used.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The JetStream error code of a refused expected-last-sequence header
/// (`JSStreamWrongLastSequenceErrF`): a lost compare-and-swap.
pub const WRONG_LAST_SEQUENCE: u64 = 10071;

/// Why a publish through a [`Writer`] did not get a positive ack.
#[derive(Debug, Error)]
pub enum WriteError {
    /// The client refused or could not send the message (e.g. larger than `max_payload`).
    #[error("cannot publish to {subject}: {source}")]
    Publish {
        /// The subject.
        subject: String,
        /// The client's error.
        source: async_nats::PublishError,
    },
    /// The stream refused the message; `err_code` says why ([`WRONG_LAST_SEQUENCE`]: another
    /// writer came first).
    #[error("the stream refused the message to {subject}: {description} (code {code}, error code {err_code})")]
    Refused {
        /// The subject.
        subject: String,
        /// The HTTP-like status (400, 503, ...).
        code: u16,
        /// The JetStream error code.
        err_code: u64,
        /// The server's description.
        description: String,
    },
    /// No stream takes the subject (or JetStream is not enabled).
    #[error(
        "no stream answered for {subject}; check that the stream exists (`polos streams apply`)"
    )]
    NoResponders {
        /// The subject.
        subject: String,
    },
    /// No ack within [`ACK_TIMEOUT`]: the message may or may not be stored.
    #[error(
        "no ack for the message to {subject} within {ACK_TIMEOUT:?}; it may or may not be stored"
    )]
    Timeout {
        /// The subject.
        subject: String,
    },
    /// The ack did not parse, or the writer's subscription ended (the client closed).
    #[error("no usable ack for the message to {subject}: {reason}")]
    Ack {
        /// The subject.
        subject: String,
        /// What was wrong.
        reason: String,
    },
}

impl WriteError {
    /// Whether another writer changed the subject since the expected sequence (a lost
    /// compare-and-swap, to be retried after reading again).
    pub fn is_wrong_last_sequence(&self) -> bool {
        matches!(self, WriteError::Refused { err_code, .. } if *err_code == WRONG_LAST_SEQUENCE)
    }
}

/// What the ack subscription hands a waiting publish.
enum Outcome {
    /// Stored at this stream sequence.
    Stored(u64),
    /// Refused by the stream: (status code, JetStream error code, description).
    Refused(u16, u64, String),
    /// Nobody listens on the subject.
    NoResponders,
    /// An ack that is neither.
    Unreadable(String),
}

/// The publishes waiting for their ack, by number.
#[derive(Default)]
struct Waiting {
    /// The number of the next publish.
    next: u64,
    /// Who waits for which ack.
    by_number: HashMap<u64, oneshot::Sender<Outcome>>,
}

/// Shared by every clone; stops the ack task when the last one goes.
struct Inner {
    client: async_nats::Client,
    /// `<inbox>.`: a publish's reply subject is this plus its number.
    prefix: String,
    waiting: Arc<Mutex<Waiting>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// JetStream publishes with their acks matched on one subscription; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means a panic elsewhere while registering; the map stays usable.
fn lock(waiting: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    waiting.lock().unwrap_or_else(|p| p.into_inner())
}

/// The ack body: `{"stream","seq"}` or `{"error":{"code","err_code","description"}}`.
#[derive(Deserialize)]
struct AckBody {
    seq: Option<u64>,
    error: Option<AckError>,
}

#[derive(Deserialize)]
struct AckError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

fn outcome(message: &async_nats::Message) -> Outcome {
    if message.status == Some(StatusCode::NO_RESPONDERS) {
        return Outcome::NoResponders;
    }
    match serde_json::from_slice::<AckBody>(&message.payload) {
        Ok(AckBody {
            error: Some(error), ..
        }) => Outcome::Refused(error.code, error.err_code, error.description),
        Ok(AckBody { seq: Some(seq), .. }) => Outcome::Stored(seq),
        Ok(_) => Outcome::Unreadable("an ack without a sequence or an error".to_string()),
        Err(e) => Outcome::Unreadable(format!("an ack that is not JSON ({e})")),
    }
}

/// Removes a publish's registration if it ends without its ack (timeout, error, dropped).
struct Registration<'a> {
    waiting: &'a Mutex<Waiting>,
    number: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        lock(self.waiting).by_number.remove(&self.number);
    }
}

impl Writer {
    /// Subscribes to a fresh inbox of `client` for the acks.
    pub async fn new(client: async_nats::Client) -> Result<Writer, async_nats::SubscribeError> {
        let inbox = client.new_inbox();
        let prefix = format!("{inbox}.");
        let mut acks = client.subscribe(format!("{inbox}.*")).await?;
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let task = tokio::spawn({
            let waiting = waiting.clone();
            let prefix = prefix.clone();
            async move {
                while let Some(message) = acks.next().await {
                    let number = message
                        .subject
                        .as_str()
                        .strip_prefix(prefix.as_str())
                        .and_then(|n| n.parse::<u64>().ok());
                    // An ack for a publish that gave up waiting (timed out) finds nobody.
                    let waiter = number.and_then(|n| lock(&waiting).by_number.remove(&n));
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(outcome(&message));
                    }
                }
                // The client closed: every waiting publish learns it at once.
                lock(&waiting).by_number.clear();
            }
        });
        Ok(Writer {
            inner: Arc::new(Inner {
                client,
                prefix,
                waiting,
                task,
            }),
        })
    }

    /// Publishes `payload` with `headers` to `subject` and waits for the stream's ack: the
    /// stream sequence it was stored at.
    pub async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, WriteError> {
        let inner = &self.inner;
        let (tx, rx) = oneshot::channel();
        let number = {
            let mut waiting = lock(&inner.waiting);
            let number = waiting.next;
            waiting.next += 1;
            waiting.by_number.insert(number, tx);
            number
        };
        let _registration = Registration {
            waiting: &inner.waiting,
            number,
        };
        let mut reply = String::with_capacity(inner.prefix.len() + 20);
        reply.push_str(&inner.prefix);
        // Writing to a String cannot fail.
        let _ = write!(reply, "{number}");
        inner
            .client
            .publish_with_reply_and_headers(subject.to_string(), reply, headers, payload)
            .await
            .map_err(|source| WriteError::Publish {
                subject: subject.to_string(),
                source,
            })?;
        let outcome = match tokio::time::timeout(ACK_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Unreadable(
                "the writer's ack subscription ended (the connection closed)".to_string(),
            ),
            Err(_) => {
                return Err(WriteError::Timeout {
                    subject: subject.to_string(),
                })
            }
        };
        match outcome {
            Outcome::Stored(sequence) => Ok(sequence),
            Outcome::Refused(code, err_code, description) => Err(WriteError::Refused {
                subject: subject.to_string(),
                code,
                err_code,
                description,
            }),
            Outcome::NoResponders => Err(WriteError::NoResponders {
                subject: subject.to_string(),
            }),
            Outcome::Unreadable(reason) => Err(WriteError::Ack {
                subject: subject.to_string(),
                reason,
            }),
        }
    }
}
