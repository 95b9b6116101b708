//! [`StepStore`]: the one reader and writer of `polos_steps`.
//!
//! A step result is written once, with create: the first stored output of a step wins, and an
//! execution that finds one already stored uses it instead of its own. Every output handed back
//! to a workflow is decoded from the stored bytes, so the first execution sees exactly what a
//! replay would.

use std::sync::Arc;

use async_nats::jetstream::Context;

use super::bucket::{Bucket, Created};
use super::runs::validate_run_id;
use super::StoreError;
use crate::model::names::STEPS_BUCKET;
use crate::model::{decode_key, step_kv_key, StepRecord};

/// The outcome of [`StepStore::create`]: the record now stored, read back from its bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum StepCreated {
    /// This call stored it.
    New(StepRecord),
    /// Another execution stored one first; this is theirs.
    Exists(StepRecord),
}

/// One stored step of a run.
#[derive(Debug)]
pub struct StoredStep {
    /// The step name as the workflow wrote it.
    pub name: String,
    /// The revision: steps of one run in revision order are in completion order.
    pub revision: u64,
    /// The record, or why the stored value is not one.
    pub record: Result<StepRecord, StoreError>,
}

/// Typed reads and create-only writes of `polos_steps`.
#[derive(Debug, Clone)]
pub struct StepStore {
    /// `polos_steps`.
    /// Shared: a KV handle carries its stream's whole config, too much to copy per run.
    bucket: Arc<Bucket>,
}

impl StepStore {
    /// Opens `polos_steps`; it must exist (`polos streams apply` creates it).
    pub async fn open(js: &Context) -> Result<StepStore, StoreError> {
        Ok(StepStore {
            bucket: Arc::new(Bucket::open(js, STEPS_BUCKET).await?),
        })
    }

    /// The stored result of `step` in `run_id`; `None` when there is none (never stored,
    /// deleted or purged).
    pub async fn get(&self, run_id: &str, step: &str) -> Result<Option<StepRecord>, StoreError> {
        let kv_key = step_kv_key(run_id, step);
        match self.bucket.get(&kv_key).await? {
            Some((value, _)) => self.decode(&kv_key, &value).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `record` unless the step already has a result, and returns what is stored, decoded
    /// from the stored bytes. [`StoreError::TooLarge`] when it does not fit in a message.
    pub async fn create(
        &self,
        run_id: &str,
        step: &str,
        record: &StepRecord,
    ) -> Result<StepCreated, StoreError> {
        let kv_key = step_kv_key(run_id, step);
        let value = self.bucket.encode(&kv_key, record)?;
        match self.bucket.create(&kv_key, value.clone()).await? {
            Created::New { .. } => self.decode(&kv_key, &value).map(StepCreated::New),
            Created::Exists { value, .. } => self.decode(&kv_key, &value).map(StepCreated::Exists),
        }
    }

    /// Every stored step of `run_id`, in the order they completed.
    pub async fn list(&self, run_id: &str) -> Result<Vec<StoredStep>, StoreError> {
        validate_run_id(run_id)?;
        let prefix = format!("{run_id}.");
        let mut steps: Vec<StoredStep> = self
            .bucket
            .scan(&format!("{run_id}.>"))
            .await?
            .into_iter()
            .map(|entry| {
                let encoded = entry.kv_key.strip_prefix(&prefix).unwrap_or(&entry.kv_key);
                StoredStep {
                    name: decode_key(encoded).unwrap_or_else(|| encoded.to_string()),
                    revision: entry.revision,
                    record: self.decode(&entry.kv_key, &entry.value),
                }
            })
            .collect();
        steps.sort_by_key(|s| s.revision);
        Ok(steps)
    }

    fn decode(&self, kv_key: &str, value: &[u8]) -> Result<StepRecord, StoreError> {
        serde_json::from_slice(value).map_err(|source| StoreError::BadValue {
            bucket: STEPS_BUCKET,
            kv_key: kv_key.to_string(),
            what: "step",
            source,
        })
    }
}
