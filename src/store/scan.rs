//! Reading the latest value of every key of a bucket (optionally under one prefix) in one pass.
//!
//! One ordered consumer with `DeliverPolicy::LastPerSubject` delivers each key's latest entry
//! once, so a listing costs one message per key — not one round trip per key as `keys()` + `get`
//! would. Unlike `watch_with_history` we can tell an empty result from a slow one: the consumer's
//! `num_pending` at creation is the number of entries to expect.

use std::time::Duration;

use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures::StreamExt;

use super::StoreError;

/// How long a listing may wait for its next entry before it is reported as stalled. Entries of
/// a last-per-subject replay arrive back to back, so this only trips when the server is gone.
const SCAN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Every live (not deleted, not purged) key of `bucket` matching `filter` (`>` or
/// `<workflow>.>`), with its latest value.
pub(super) async fn scan(
    client: &async_nats::Client,
    stream: &Stream,
    bucket: &'static str,
    filter: &str,
) -> Result<Vec<RawEntry>, StoreError> {
    let fail = |reason: String| StoreError::Scan {
        bucket,
        filter: filter.to_string(),
        reason,
    };
    let prefix = format!("$KV.{bucket}.");
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("polos listing".to_string()),
            filter_subject: format!("{prefix}{filter}"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| fail(e.to_string()))?;
    let expected = consumer.cached_info().num_pending;
    if expected == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer.messages().await.map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).min(1 << 20));
    loop {
        let message = match tokio::time::timeout(SCAN_IDLE_TIMEOUT, messages.next()).await {
            Err(_) => {
                return Err(fail(format!(
                    "no entry arrived for {SCAN_IDLE_TIMEOUT:?} after {} of {expected}",
                    out.len()
                )))
            }
            Ok(None) => return Err(fail("the consumer ended early".to_string())),
            Ok(Some(Err(e))) => return Err(fail(e.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        let info = message.info().map_err(|e| fail(e.to_string()))?;
        let (pending, revision) = (info.pending, info.stream_sequence);
        let deleted = message
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
        if !deleted {
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
