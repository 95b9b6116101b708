//! Following a bucket under one key filter: the latest value of every key, then every change,
//! with the moment the first part ends marked.
//!
//! One ordered push consumer (`DeliverPolicy::LastPerSubject`, then live): a key costs one
//! message however often it was written, and the consumer's `num_pending` at creation says how
//! many entries precede "caught up" (zero: at once). The consumer is named, so the request that
//! creates it carries its filter (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`) and NATS
//! permissions can confine a worker to its own workflows' keys.

use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures::StreamExt;

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

/// Follows the keys of `bucket` matching `filter` (`<workflow>.>`), handing each event to
/// `sink`, until the consumer fails; returns why. The caller follows again after a pause (the
/// first events then repeat the latest values, so applying them again must be harmless).
pub(crate) async fn follow(
    client: &async_nats::Client,
    stream: &Stream,
    bucket: &str,
    filter: &str,
    mut sink: impl FnMut(Followed),
) -> String {
    let prefix = format!("$KV.{bucket}.");
    let consumer = match stream
        .create_consumer(push::OrderedConfig {
            name: Some(format!("polos_follow_{}", nuid::next())),
            deliver_subject: client.new_inbox(),
            description: Some("polos worker follows its workflows' keys".to_string()),
            filter_subject: format!("{prefix}{filter}"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
    {
        Ok(consumer) => consumer,
        Err(e) => return format!("cannot follow {bucket} {filter}: {e}"),
    };
    let mut caught_up = consumer.cached_info().num_pending == 0;
    if caught_up {
        sink(Followed::CaughtUp);
    }
    let mut messages = match consumer.messages().await {
        Ok(messages) => messages,
        Err(e) => return format!("cannot follow {bucket} {filter}: {e}"),
    };
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => return format!("following {bucket} {filter} failed: {e}"),
        };
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        let deleted = message
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
        if let Some(kv_key) = message.subject.as_str().strip_prefix(&prefix) {
            let kv_key = kv_key.to_string();
            sink(if deleted {
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
    format!("following {bucket} {filter} ended")
}
