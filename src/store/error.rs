use thiserror::Error;

use super::read::ReadError;
use crate::model::RecordError;

/// A read or write of a polos bucket failed: the one error of every store.
///
/// Every variant names the bucket and key involved. The API maps them all to `internal` (500)
/// except [`StoreError::InvalidRunId`] (`invalid_request`). [`StoreError::Conflict`] is the
/// expected outcome of a lost compare-and-swap (another execution wrote first);
/// [`StoreError::is_permanent`] says which ones retrying cannot help.
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
    /// Writing (create, update, delete) one key failed for a reason other than a lost
    /// compare-and-swap.
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
    #[error("cannot list {bucket} (filter {filter}): {source}")]
    Scan {
        /// The bucket name.
        bucket: &'static str,
        /// The key filter (`>` or `<workflow>.>`).
        filter: String,
        /// What went wrong.
        source: ReadError,
    },
    /// The key changed since `revision` was read: another writer got there first.
    #[error("{bucket} {kv_key} changed after revision {revision}: another execution of the run wrote it first")]
    Conflict {
        /// The bucket name.
        bucket: &'static str,
        /// The KV key.
        kv_key: String,
        /// The revision the write expected.
        revision: u64,
    },
    /// The value does not fit in one NATS message.
    #[error("the value for {bucket} {kv_key} is {size} bytes of JSON, but the NATS server takes at most {max_payload} bytes per message (its max_payload, of which polos keeps {HEADER_ROOM} for headers); store large data elsewhere (e.g. a JetStream object store) and keep a reference in the output")]
    TooLarge {
        /// The bucket name.
        bucket: &'static str,
        /// The KV key.
        kv_key: String,
        /// The encoded size in bytes.
        size: usize,
        /// The server's limit in bytes.
        max_payload: usize,
    },
    /// The stored value is not a record of the expected shape.
    #[error("{bucket} {kv_key} holds a value that is not a {what} record: {source}; delete it (`nats kv del {bucket} {kv_key}`) if it was written by hand")]
    BadValue {
        /// The bucket name.
        bucket: &'static str,
        /// The KV key.
        kv_key: String,
        /// `run` or `step`.
        what: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode the value for {bucket} {kv_key} as JSON: {source}")]
    Encode {
        /// The bucket name.
        bucket: &'static str,
        /// The KV key.
        kv_key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A run id that is not `<schedule_id>-<YYYYMMDDTHHMMSSZ>` or `<schedule_id>-m<nuid>`.
    #[error("{run_id:?} is not a run id ({reason}); a run id is sch_ + 26 base32 characters, then -YYYYMMDDTHHMMSSZ or -m<nuid>, e.g. sch_4xv32vp3oro5c6puhza43mst5t-20261126T090000Z")]
    InvalidRunId {
        /// The offending id (shortened when long).
        run_id: String,
        /// What is wrong with it.
        reason: &'static str,
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

/// Bytes of each message kept free for the headers of a compare-and-swap write, so a value
/// that passes the size check is never refused by the client for its headers.
pub const HEADER_ROOM: usize = 128;

impl StoreError {
    /// Whether retrying the same operation cannot succeed (a value too large or unreadable, an
    /// invalid run id).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StoreError::TooLarge { .. }
                | StoreError::BadValue { .. }
                | StoreError::Encode { .. }
                | StoreError::InvalidRunId { .. }
        )
    }
}
