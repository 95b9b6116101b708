//! The one way to read a bucket, and the one rule for a deleted entry.
//!
//! - [`is_live`] / [`is_tombstone`]: an entry is a value only when it is a `PUT`. A `DEL` or
//!   `PURGE` marker, or a server marker (a key removed by its TTL or the bucket's max age), reads
//!   as absent — for a KV [`Entry`](async_nats::jetstream::kv::Entry) and for a raw bucket
//!   message alike.
//! - [`scan`]: the latest value of every key under a filter, in one pass.
//! - [`follow`]: the latest value of every key, then every change, with the moment the first
//!   part ends marked.
//!
//! Both use one ordered push consumer with `DeliverPolicy::LastPerSubject`: a key costs one
//! message however often it was written — not one round trip per key as `keys()` + `get` would
//! — and the consumer's `num_pending` at creation is the number of entries before "caught up"
//! (zero: at once), which `watch_with_history` cannot tell.

use std::time::Duration;

use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv::Operation;
use async_nats::jetstream::stream::Stream;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use thiserror::Error;

use super::StoreError;

/// The header naming a KV operation (`PUT`, `DEL`, `PURGE`).
const KV_OPERATION: &str = "KV-Operation";

/// How long a listing may wait for its next entry before it is reported as stalled. Entries of
/// a last-per-subject replay arrive back to back, so this only trips when the server is gone.
const SCAN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a KV entry is a value (see the module doc: the one rule for a deleted entry).
pub fn is_live(operation: Operation) -> bool {
    operation == Operation::Put
}

/// Whether a raw bucket message is a delete, a purge or a server marker rather than a value
/// (see the module doc: the one rule for a deleted entry).
pub fn is_tombstone(headers: Option<&HeaderMap>) -> bool {
    headers.is_some_and(|h| {
        h.get(KV_OPERATION)
            .map(|op| op.as_str() != "PUT")
            .unwrap_or_else(|| h.get(async_nats::header::NATS_MARKER_REASON).is_some())
    })
}

/// Why reading a bucket (a listing, a followed filter, a watch) failed.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The server refused or failed the consumer, or a message of it.
    #[error("{0}")]
    Consumer(#[source] async_nats::Error),
    /// Entries stopped arriving before every expected one came.
    #[error("no entry arrived for {idle:?} after {read} of {expected}")]
    Stalled {
        /// How long nothing arrived.
        idle: Duration,
        /// Entries read.
        read: usize,
        /// Entries expected.
        expected: u64,
    },
    /// The consumer ended (the connection closed or the server deleted it).
    #[error("the consumer ended early")]
    Ended,
}

impl ReadError {
    /// A failure of the consumer or one of its messages.
    pub(crate) fn consumer(e: impl Into<async_nats::Error>) -> ReadError {
        ReadError::Consumer(e.into())
    }
}

/// The latest live value of one KV key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The KV key (without the `$KV.<bucket>.` prefix).
    pub kv_key: String,
    /// The stored bytes.
    pub value: Bytes,
    /// The entry's revision (stream sequence), for compare-and-swap.
    pub revision: u64,
}

/// One event of a followed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The key's latest value.
    Put {
        /// The KV key (without the `$KV.<bucket>.` prefix).
        kv_key: String,
        /// The stored bytes.
        value: Bytes,
    },
    /// The key was deleted or purged.
    Gone {
        /// The KV key.
        kv_key: String,
    },
    /// Every key that existed when following started has been delivered (sent once).
    CaughtUp,
}

/// The ordered consumer both readers use: each key's latest entry under `filter`, then (if the
/// caller keeps reading) every change. `name`d when given, so the request that creates it
/// carries its filter (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`) and NATS
/// permissions can confine a worker to its own workflows' keys. Returns the consumer and how
/// many entries precede "caught up".
async fn last_per_subject(
    client: &async_nats::Client,
    stream: &Stream,
    bucket: &str,
    filter: &str,
    name: Option<String>,
    description: &str,
) -> Result<
    (
        async_nats::jetstream::consumer::Consumer<OrderedConfig>,
        u64,
    ),
    async_nats::Error,
> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            name,
            deliver_subject: client.new_inbox(),
            description: Some(description.to_string()),
            filter_subject: format!("$KV.{bucket}.{filter}"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    Ok((consumer, pending))
}

/// Every live key of `bucket` matching `filter` (`>` or `<workflow>.>`), with its latest value.
pub(super) async fn scan(
    client: &async_nats::Client,
    stream: &Stream,
    bucket: &'static str,
    filter: &str,
) -> Result<Vec<RawEntry>, StoreError> {
    let fail = |source: ReadError| StoreError::Scan {
        bucket,
        filter: filter.to_string(),
        source,
    };
    let (consumer, expected) =
        last_per_subject(client, stream, bucket, filter, None, "polos listing")
            .await
            .map_err(|e| fail(ReadError::Consumer(e)))?;
    if expected == 0 {
        return Ok(Vec::new());
    }
    let mut messages: Ordered = consumer
        .messages()
        .await
        .map_err(|e| fail(ReadError::consumer(e)))?;
    let prefix = format!("$KV.{bucket}.");
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).min(1 << 20));
    loop {
        let message = match tokio::time::timeout(SCAN_IDLE_TIMEOUT, messages.next()).await {
            Err(_) => {
                return Err(fail(ReadError::Stalled {
                    idle: SCAN_IDLE_TIMEOUT,
                    read: out.len(),
                    expected,
                }))
            }
            Ok(None) => return Err(fail(ReadError::Ended)),
            Ok(Some(Err(e))) => return Err(fail(ReadError::consumer(e))),
            Ok(Some(Ok(message))) => message,
        };
        let info = message.info().map_err(|e| fail(ReadError::Consumer(e)))?;
        let (pending, revision) = (info.pending, info.stream_sequence);
        if !is_tombstone(message.headers.as_ref()) {
            if let Some(kv_key) = message.subject.as_str().strip_prefix(&prefix) {
                out.push(RawEntry {
                    kv_key: kv_key.to_string(),
                    value: message.payload.clone(),
                    revision,
                });
            }
        }
        if pending == 0 {
            return Ok(out);
        }
    }
}

/// Follows the keys of `bucket` matching `filter` (`<workflow>.>`), handing each event to
/// `sink`, until the consumer fails; returns why (the caller names the bucket and filter). The caller follows again after a pause (the
/// first events then repeat the latest values, so applying them again must be harmless).
pub(crate) async fn follow(
    client: &async_nats::Client,
    stream: &Stream,
    bucket: &str,
    filter: &str,
    mut sink: impl FnMut(Followed),
) -> ReadError {
    let name = Some(format!("polos_follow_{}", nuid::next()));
    let description = "polos follows a bucket's keys";
    let (consumer, pending) =
        match last_per_subject(client, stream, bucket, filter, name, description).await {
            Ok(created) => created,
            Err(e) => return ReadError::Consumer(e),
        };
    let mut caught_up = pending == 0;
    if caught_up {
        sink(Followed::CaughtUp);
    }
    let mut messages = match consumer.messages().await {
        Ok(messages) => messages,
        Err(e) => return ReadError::consumer(e),
    };
    let prefix = format!("$KV.{bucket}.");
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => return ReadError::consumer(e),
        };
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        if let Some(kv_key) = message.subject.as_str().strip_prefix(&prefix) {
            let kv_key = kv_key.to_string();
            sink(if is_tombstone(message.headers.as_ref()) {
                Followed::Gone { kv_key }
            } else {
                Followed::Put {
                    kv_key,
                    value: message.payload.clone(),
                }
            });
        }
        if !caught_up && pending == 0 {
            caught_up = true;
            sink(Followed::CaughtUp);
        }
    }
    ReadError::Ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_put_is_a_value() {
        let mut headers = HeaderMap::new();
        assert!(!is_tombstone(None), "a plain put carries no headers");
        assert!(!is_tombstone(Some(&headers)));
        headers.insert(KV_OPERATION, "PUT");
        assert!(!is_tombstone(Some(&headers)));
        for op in ["DEL", "PURGE"] {
            let mut headers = HeaderMap::new();
            headers.insert(KV_OPERATION, op);
            assert!(is_tombstone(Some(&headers)), "{op}");
        }
        let mut marker = HeaderMap::new();
        marker.insert(async_nats::header::NATS_MARKER_REASON, "MaxAge");
        assert!(
            is_tombstone(Some(&marker)),
            "a server marker removes the key"
        );
        assert!(is_live(Operation::Put));
        assert!(!is_live(Operation::Delete) && !is_live(Operation::Purge));
    }
}
