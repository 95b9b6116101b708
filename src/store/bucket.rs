//! [`Bucket`]: the KV primitives the run and step stores share — create over a tombstone,
//! compare-and-swap, and a size check against the server's `max_payload` (reads and the
//! tombstone rule: `read.rs`).

use async_nats::jetstream::kv::{Store, UpdateErrorKind};
use async_nats::jetstream::Context;
use bytes::Bytes;
use serde::Serialize;

use super::error::{StoreError, HEADER_ROOM};
use super::read::{is_live, scan, RawEntry};

/// The outcome of [`Bucket::create`].
#[derive(Debug)]
pub(super) enum Created {
    /// Written; no live value was there.
    New {
        /// The new revision.
        revision: u64,
        /// A deleted or purged value was there before (so related keys may still exist).
        over_tombstone: bool,
    },
    /// A live value exists; nothing was written.
    Exists {
        /// The stored value.
        value: Bytes,
        /// Its revision.
        revision: u64,
    },
}

/// One KV bucket with typed errors naming it.
pub(super) struct Bucket {
    /// The bucket name (`polos_runs`, `polos_steps`).
    pub name: &'static str,
    /// The KV handle.
    pub kv: Store,
    /// The connection: its negotiated `max_payload` bounds every value, and listings need its
    /// inboxes.
    pub client: async_nats::Client,
}

// A KV handle prints its stream's whole config; the name says all a log needs.
impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    /// Opens an existing bucket.
    pub async fn open(js: &Context, name: &'static str) -> Result<Bucket, StoreError> {
        let kv = js.get_key_value(name).await.map_err(|e| StoreError::Open {
            bucket: name,
            source: e.into(),
        })?;
        Ok(Bucket {
            name,
            kv,
            client: js.client(),
        })
    }

    /// JSON of `value`, refused when it would not fit in one message.
    pub fn encode<T: Serialize>(&self, kv_key: &str, value: &T) -> Result<Bytes, StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            bucket: self.name,
            kv_key: kv_key.to_string(),
            source,
        })?;
        let max_payload = self.client.max_payload();
        if bytes.len() + HEADER_ROOM > max_payload {
            return Err(StoreError::TooLarge {
                bucket: self.name,
                kv_key: kv_key.to_string(),
                size: bytes.len(),
                max_payload,
            });
        }
        Ok(bytes.into())
    }

    /// The live value of `kv_key` and its revision; `None` when absent, deleted or purged.
    pub async fn get(&self, kv_key: &str) -> Result<Option<(Bytes, u64)>, StoreError> {
        let entry = self
            .kv
            .entry(kv_key)
            .await
            .map_err(|e| self.read_error(kv_key, e.into()))?;
        Ok(entry
            .filter(|e| is_live(e.operation))
            .map(|e| (e.value, e.revision)))
    }

    /// Writes `value` unless a live value exists. One round trip when the key was never
    /// written (the common case); a deleted or purged key is overwritten by compare-and-swap on
    /// its marker.
    pub async fn create(&self, kv_key: &str, value: Bytes) -> Result<Created, StoreError> {
        let mut expected = 0;
        // Two rounds: the first finds out what is there; the second acts on it. A third would
        // only be needed if the key changed twice in between, which is reported as a conflict.
        for _ in 0..2 {
            match self.kv.update(kv_key, value.clone(), expected).await {
                Ok(revision) => {
                    return Ok(Created::New {
                        revision,
                        over_tombstone: expected != 0,
                    })
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(self.write_error(kv_key, e.into())),
            }
            let entry = self
                .kv
                .entry(kv_key)
                .await
                .map_err(|e| self.read_error(kv_key, e.into()))?;
            match entry {
                Some(e) if is_live(e.operation) => {
                    return Ok(Created::Exists {
                        value: e.value,
                        revision: e.revision,
                    })
                }
                Some(marker) => expected = marker.revision,
                // Gone again (purged with its history): try a plain create once more.
                None => expected = 0,
            }
        }
        Err(StoreError::Conflict {
            bucket: self.name,
            kv_key: kv_key.to_string(),
            revision: expected,
        })
    }

    /// Replaces the value at `revision` (compare-and-swap); [`StoreError::Conflict`] when
    /// the key changed since.
    pub async fn update(
        &self,
        kv_key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<u64, StoreError> {
        match self.kv.update(kv_key, value, revision).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Err(StoreError::Conflict {
                bucket: self.name,
                kv_key: kv_key.to_string(),
                revision,
            }),
            Err(e) => Err(self.write_error(kv_key, e.into())),
        }
    }

    /// The latest live value of every key matching `filter`, in one pass.
    pub async fn scan(&self, filter: &str) -> Result<Vec<RawEntry>, StoreError> {
        scan(&self.client, &self.kv.stream, self.name, filter).await
    }

    fn read_error(&self, kv_key: &str, source: async_nats::Error) -> StoreError {
        StoreError::Read {
            bucket: self.name,
            kv_key: kv_key.to_string(),
            source,
        }
    }

    fn write_error(&self, kv_key: &str, source: async_nats::Error) -> StoreError {
        StoreError::Write {
            bucket: self.name,
            kv_key: kv_key.to_string(),
            source,
        }
    }
}
