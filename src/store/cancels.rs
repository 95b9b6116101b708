//! [`CancelStore`]: the one reader and writer of `polos_cancels`.
//!
//! A cancel request is written once per run (create: asking twice keeps the first request) at
//! `<workflow>.<run_id>`, by the API or by a worker applying the overlap policy `cancel_other`.
//! Workers follow the keys of their workflows, so a request reaches the process executing the
//! run, whichever it is, within a message's latency; the run record then says `cancelled`.

use std::sync::Arc;

use async_nats::jetstream::Context;

use super::bucket::{Bucket, Created};
use super::read::{follow, Followed, ReadError};
use super::runs::RunKey;
use super::StoreError;
use crate::model::names::CANCELS_BUCKET;
use crate::model::CancelRecord;

/// Typed reads and create-only writes of `polos_cancels`.
#[derive(Debug, Clone)]
pub struct CancelStore {
    /// `polos_cancels`.
    bucket: Arc<Bucket>,
}

impl CancelStore {
    /// Opens `polos_cancels`; it must exist (`polos streams apply` creates it).
    pub async fn open(js: &Context) -> Result<CancelStore, StoreError> {
        Ok(CancelStore {
            bucket: Arc::new(Bucket::open(js, CANCELS_BUCKET).await?),
        })
    }

    /// Asks for run `key` to be cancelled. Returns `false` when it already was (the first
    /// request, and its reason, stay).
    pub async fn request(&self, key: &RunKey, record: &CancelRecord) -> Result<bool, StoreError> {
        let value = self.bucket.encode(key.kv_key(), record)?;
        Ok(matches!(
            self.bucket.create(key.kv_key(), value).await?,
            Created::New { .. }
        ))
    }

    /// The cancel request of run `key`, if there is one.
    pub async fn get(&self, key: &RunKey) -> Result<Option<CancelRecord>, StoreError> {
        match self.bucket.get(key.kv_key()).await? {
            None => Ok(None),
            Some((value, _)) => {
                serde_json::from_slice(&value)
                    .map(Some)
                    .map_err(|source| StoreError::BadValue {
                        bucket: CANCELS_BUCKET,
                        kv_key: key.kv_key().to_string(),
                        what: "cancel",
                        source,
                    })
            }
        }
    }

    /// Follows the cancel requests of `workflow` (see `store/read.rs`) until following fails;
    /// returns why.
    pub async fn follow(&self, workflow: &str, sink: impl FnMut(Followed)) -> ReadError {
        follow(
            &self.bucket.client,
            &self.bucket.kv.stream,
            CANCELS_BUCKET,
            &format!("{workflow}.>"),
            sink,
        )
        .await
    }
}
