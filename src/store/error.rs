use thiserror::Error;

use crate::model::RecordError;

/// A KV operation of the schedule store failed.
///
/// Every variant names the bucket and key involved; none of them is the caller's fault, so the
/// API maps them all to `internal` (500) except [`StoreError::BadRecord`], which names a stored
/// value that must be fixed by hand or overwritten with an upsert.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A bucket is missing or JetStream did not answer when the store was opened.
    #[error("cannot open KV bucket {bucket}: {source}; create it with `polos streams apply`")]
    Open {
        /// The bucket name.
        bucket: &'static str,
        /// The client's error.
        source: async_nats::Error,
    },
    /// Reading one key failed.
    #[error("cannot read {bucket} {kv_key}: {source}")]
    Read {
        /// The bucket name.
        bucket: &'static str,
        /// The KV key.
        kv_key: String,
        /// The client's error.
        source: async_nats::Error,
    },
    /// Writing (create, update, delete) one key failed.
    #[error("cannot write {bucket} {kv_key}: {source}")]
    Write {
        /// The bucket name.
        bucket: &'static str,
        /// The KV key.
        kv_key: String,
        /// The client's error.
        source: async_nats::Error,
    },
    /// Listing a bucket failed or stalled.
    #[error("cannot list {bucket} (filter {filter}): {reason}")]
    Scan {
        /// The bucket name.
        bucket: &'static str,
        /// The key filter (`>` or `<workflow>.>`).
        filter: String,
        /// What went wrong.
        reason: String,
    },
    /// Other writers changed the key on every one of our compare-and-swap attempts.
    #[error("{bucket} {kv_key} changed under {attempts} consecutive compare-and-swap attempts; retry the request")]
    Contended {
        /// The bucket name.
        bucket: &'static str,
        /// The KV key.
        kv_key: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// NATS refused one of the scheduler's own reads or writes: its user lacks a permission.
    #[error("{0} (check the scheduler's NATS permissions)")]
    Denied(#[from] crate::nats::PermissionDenied),
    /// The stored value cannot be read as a record, so it cannot be modified in place.
    #[error(transparent)]
    BadRecord(#[from] RecordError),
}
