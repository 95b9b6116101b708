//! [`OverlapStore`]: the one reader and writer of `polos_overlap`.
//!
//! One record per schedule that has an overlap policy other than `allow_all`, at the schedule's
//! own key (`<workflow>.<encoded key>`), so `nats kv get polos_overlap user-reminder.user_123`
//! shows what the schedule is busy with. Written only by compare-and-swap on the revision read:
//! two workers deciding about fires of one schedule at once cannot both take it.

use std::sync::Arc;

use async_nats::jetstream::Context;

use super::bucket::{Bucket, Created};
use super::StoreError;
use crate::model::names::OVERLAP_BUCKET;
use crate::model::{schedule_kv_key, OverlapRecord};

/// A stored overlap record with the revision a compare-and-swap must name.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOverlap {
    /// The record (an unreadable value reads as an empty record, so it is replaced).
    pub record: OverlapRecord,
    /// Its revision; `None` when the key holds no value yet.
    pub revision: Option<u64>,
}

/// Typed reads and compare-and-swap writes of `polos_overlap`.
#[derive(Debug, Clone)]
pub struct OverlapStore {
    /// `polos_overlap`.
    bucket: Arc<Bucket>,
}

impl OverlapStore {
    /// Opens `polos_overlap`; it must exist (`polos streams apply` creates it).
    pub async fn open(js: &Context) -> Result<OverlapStore, StoreError> {
        Ok(OverlapStore {
            bucket: Arc::new(Bucket::open(js, OVERLAP_BUCKET).await?),
        })
    }

    /// The record of schedule `workflow` + `key`: an empty one when there is none. A value that
    /// is not an overlap record (written by hand) also reads as empty, with its revision, so the
    /// next write replaces it; it is logged.
    pub async fn get(&self, workflow: &str, key: &str) -> Result<StoredOverlap, StoreError> {
        let kv_key = schedule_kv_key(workflow, key);
        Ok(match self.bucket.get(&kv_key).await? {
            None => StoredOverlap {
                record: OverlapRecord::default(),
                revision: None,
            },
            Some((value, revision)) => StoredOverlap {
                record: self.decode_logged(&kv_key, &value),
                revision: Some(revision),
            },
        })
    }

    /// Writes `record` if the key is still at `revision` (`None`: if it holds no value).
    /// Returns the new revision, or [`StoreError::Conflict`] when another writer got there
    /// first.
    pub async fn put(
        &self,
        workflow: &str,
        key: &str,
        record: &OverlapRecord,
        revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        let kv_key = schedule_kv_key(workflow, key);
        let value = self.bucket.encode(&kv_key, record)?;
        match revision {
            Some(revision) => self.bucket.update(&kv_key, value, revision).await,
            None => match self.bucket.create(&kv_key, value).await? {
                Created::New { revision, .. } => Ok(revision),
                Created::Exists { .. } => Err(StoreError::Conflict {
                    bucket: OVERLAP_BUCKET,
                    kv_key,
                    revision: 0,
                }),
            },
        }
    }

    fn decode_logged(&self, kv_key: &str, value: &[u8]) -> OverlapRecord {
        serde_json::from_slice(value).unwrap_or_else(|e| {
            tracing::warn!(bucket = OVERLAP_BUCKET, kv_key, error = %e, "replacing a value that is not an overlap record");
            OverlapRecord::default()
        })
    }
}
