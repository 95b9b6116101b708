//! [`ScheduleStore`]: the typed view of the three buckets the schedules API works on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{DeleteErrorKind, Store, UpdateErrorKind};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use tokio::sync::OnceCell;

use super::read::{is_live, scan, RawEntry, ReadError};
use super::StoreError;
use crate::model::names::{SCHEDULES_BUCKET, SCHEDULE_STATE_BUCKET, WORKFLOWS_BUCKET};
use crate::model::{schedule_kv_key, RecordError, ScheduleRecord, ScheduleState, WorkflowRecord};
use crate::nats::permissions::{direct_get, kv_write, stream_info};
use crate::nats::{Denials, Writer};

/// How many compare-and-swap rounds one write may lose before giving up. Every lost round means
/// another writer succeeded, so with N concurrent writers of one key N rounds always suffice.
const MAX_CAS_ATTEMPTS: u32 = 200;

/// The schedule definitions, their scheduler state and the workflow registrations.
#[derive(Clone)]
pub struct ScheduleStore {
    /// Needed for the inbox of listing consumers.
    client: async_nats::Client,
    /// `polos_schedules`: definitions, written here with CAS.
    schedules: Store,
    /// The stream behind `polos_schedules`, for one-pass listings.
    schedules_stream: Stream,
    /// `polos_schedule_state`: read here, written by the scheduler.
    state: Store,
    /// The stream behind `polos_schedule_state`.
    state_stream: Stream,
    /// `polos_workflows`: read here, written by workers.
    workflows: Store,
    /// The stream behind `polos_workflows`.
    workflows_stream: Stream,
    /// Refusals of this connection's reads and writes, so a missing permission fails the call
    /// within a second instead of timing out (see `nats::denied`).
    denials: Denials,
    /// The compare-and-swap writes of `polos_schedules`, made on first use (a store that only
    /// reads never subscribes for acks).
    writer: Arc<OnceCell<Writer>>,
}

impl std::fmt::Debug for ScheduleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleStore").finish_non_exhaustive()
    }
}

/// A schedule's latest stored value, read or not.
#[derive(Debug)]
pub struct StoredSchedule {
    /// `<workflow>.<encoded key>`.
    pub kv_key: String,
    /// The record, or why the stored value is not one.
    pub record: Result<ScheduleRecord, RecordError>,
}

/// The result of a successful upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    /// What is now stored.
    pub record: ScheduleRecord,
    /// Whether no live value existed before (a create, not an update).
    pub created: bool,
}

/// What [`ScheduleStore::reconcile`] does with a stored schedule, and what it then returns.
#[derive(Debug)]
// Built once per write attempt and matched at once: boxing the record buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum ScheduleChange<T> {
    /// Leave the stored value as it is.
    Keep(T),
    /// Store this record (create, or replace what was read).
    Write(ScheduleRecord, T),
    /// Delete the live value (and purge its state record); nothing when there is none.
    Delete(T),
}

/// A stored value a listing skipped because it is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidEntry {
    /// The KV key of the broken value.
    pub kv_key: String,
    /// Why it is not valid and how to fix it.
    pub error: String,
}

/// All valid records under a filter plus the values that could not be read.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The valid records, in KV key order (`<workflow>.<encoded key>`).
    pub schedules: Vec<ScheduleRecord>,
    /// The values that are not records.
    pub invalid: Vec<InvalidEntry>,
}

impl ScheduleStore {
    /// Opens the three buckets; they must exist (`polos streams apply` creates them).
    pub async fn open(js: &Context) -> Result<ScheduleStore, StoreError> {
        let denials = Denials::of(&js.client());
        let open_kv = |bucket: &'static str| {
            let denials = denials.clone();
            async move {
                let info = stream_info(&format!("KV_{bucket}"));
                denials
                    .guard(&[&info], js.get_key_value(bucket))
                    .await?
                    .map_err(|e| StoreError::Open {
                        bucket,
                        source: e.into(),
                    })
            }
        };
        let open_stream = |bucket: &'static str| {
            let denials = denials.clone();
            async move {
                let info = stream_info(&format!("KV_{bucket}"));
                denials
                    .guard(&[&info], js.get_stream(format!("KV_{bucket}")))
                    .await?
                    .map_err(|e| StoreError::Open {
                        bucket,
                        source: e.into(),
                    })
            }
        };
        Ok(ScheduleStore {
            denials: denials.clone(),
            client: js.client(),
            schedules: open_kv(SCHEDULES_BUCKET).await?,
            schedules_stream: open_stream(SCHEDULES_BUCKET).await?,
            state: open_kv(SCHEDULE_STATE_BUCKET).await?,
            state_stream: open_stream(SCHEDULE_STATE_BUCKET).await?,
            workflows: open_kv(WORKFLOWS_BUCKET).await?,
            workflows_stream: open_stream(WORKFLOWS_BUCKET).await?,
            writer: Arc::default(),
        })
    }

    /// The refusals of the store's connection, for guarding other calls made on it.
    pub fn denials(&self) -> &Denials {
        &self.denials
    }

    /// The latest live value of `workflow` + `key`, `None` when there is none (never written,
    /// deleted or purged).
    pub async fn get(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<StoredSchedule>, StoreError> {
        let kv_key = schedule_kv_key(workflow, key);
        let entry = self.entry(&kv_key).await?;
        Ok(entry
            .filter(|e| is_live(e.operation))
            .map(|e| StoredSchedule {
                record: ScheduleRecord::from_kv(&kv_key, &e.value),
                kv_key,
            }))
    }

    /// The one read-decide-write loop every change of a schedule goes through: `decide` sees
    /// the stored record (`None`: no live value; `Some(Err)`: a value that is not a record) and
    /// says what to do; a write or delete is a compare-and-swap on what `decide` saw, and a lost
    /// race calls `decide` again with the winner's value. So concurrent writers (the API, every
    /// replica, workers syncing their inline schedules) never overwrite each other blindly, and
    /// whatever `decide` keeps from the current record (`created_at`) is never lost.
    pub async fn reconcile<T, F>(
        &self,
        workflow: &str,
        key: &str,
        mut decide: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(
            Option<Result<ScheduleRecord, RecordError>>,
        ) -> Result<ScheduleChange<T>, StoreError>,
    {
        let kv_key = schedule_kv_key(workflow, key);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let entry = self.entry(&kv_key).await?;
            // A tombstone has a revision too: expecting it makes re-creating a deleted key a
            // CAS as well. Revision 0 means "the key must not exist".
            let expected = entry.as_ref().map_or(0, |e| e.revision);
            let current = entry
                .filter(|e| is_live(e.operation))
                .map(|e| ScheduleRecord::from_kv(&kv_key, &e.value));
            let live = current.is_some();
            let done = match decide(current)? {
                ScheduleChange::Keep(out) => return Ok(out),
                ScheduleChange::Write(record, out) => {
                    self.cas(&kv_key, &record, expected).await?.map(|_| out)
                }
                ScheduleChange::Delete(out) if !live => return Ok(out),
                ScheduleChange::Delete(out) => {
                    self.delete_at(&kv_key, expected).await?.then_some(out)
                }
            };
            match done {
                Some(out) => return Ok(out),
                None => backoff(attempt).await,
            }
        }
        Err(self.contended(kv_key))
    }

    /// Creates or updates `workflow` + `key` with compare-and-swap.
    ///
    /// `build` receives the current record (`None` when there is none or the stored value is
    /// unreadable) and returns the record to store; see [`ScheduleStore::reconcile`].
    pub async fn upsert<F>(
        &self,
        workflow: &str,
        key: &str,
        mut build: F,
    ) -> Result<Upserted, StoreError>
    where
        F: FnMut(Option<&ScheduleRecord>) -> ScheduleRecord,
    {
        // Optimistic create first: a new schedule then costs one KV round trip instead of a
        // read plus a write. If the key has any history (a value or a tombstone) the write is
        // refused and the read-modify-CAS loop takes over.
        let record = build(None);
        let kv_key = schedule_kv_key(workflow, key);
        if self.cas(&kv_key, &record, 0).await?.is_some() {
            return Ok(Upserted {
                record,
                created: true,
            });
        }
        self.reconcile(workflow, key, |current| {
            let created = current.is_none();
            let record = build(current.and_then(Result::ok).as_ref());
            Ok(ScheduleChange::Write(
                record.clone(),
                Upserted { record, created },
            ))
        })
        .await
    }

    /// Applies `change` to the stored record with compare-and-swap. `Ok(None)` when there is no
    /// live record; [`StoreError::BadRecord`] when the stored value is not a record.
    pub async fn modify<F>(
        &self,
        workflow: &str,
        key: &str,
        mut change: F,
    ) -> Result<Option<ScheduleRecord>, StoreError>
    where
        F: FnMut(&mut ScheduleRecord),
    {
        self.reconcile(workflow, key, |current| match current {
            None => Ok(ScheduleChange::Keep(None)),
            Some(record) => {
                let mut record = record?;
                change(&mut record);
                Ok(ScheduleChange::Write(record.clone(), Some(record)))
            }
        })
        .await
    }

    /// Pauses or resumes a schedule, replacing its note when one is given and stamping
    /// `updated_at` (the scheduler resumes from that instant, without catching up the paused
    /// time). `Ok(None)` when there is no such schedule.
    pub async fn set_paused(
        &self,
        workflow: &str,
        key: &str,
        paused: bool,
        note: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        self.modify(workflow, key, |record| {
            record.paused = paused;
            if let Some(note) = note {
                record.note = Some(note.to_string());
            }
            record.updated_at = Some(now);
        })
        .await
    }

    /// Pauses the schedule after run `run_id` failed for good — only when its stored record asks
    /// for it (`pause_on_failure: true`) and it is not paused already. The note names the run.
    /// Returns whether this call paused it. Read and written by compare-and-swap like every
    /// other change of a schedule, so it cannot undo a concurrent upsert (an upsert that turned
    /// `pause_on_failure` off in between wins).
    pub async fn pause_after_failure(
        &self,
        workflow: &str,
        key: &str,
        note: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError> {
        self.reconcile(workflow, key, |current| {
            let Some(Ok(mut record)) = current else {
                return Ok(ScheduleChange::Keep(false));
            };
            if record.pause_on_failure != Some(true) || record.paused {
                return Ok(ScheduleChange::Keep(false));
            }
            record.paused = true;
            record.note = Some(note.to_string());
            record.updated_at = Some(now);
            Ok(ScheduleChange::Write(record, true))
        })
        .await
    }

    /// Follows the schedules of `workflow` (see `store/read.rs`) until following fails;
    /// returns why.
    pub async fn follow(&self, workflow: &str, sink: impl FnMut(super::Followed)) -> ReadError {
        super::read::follow(
            &self.client,
            &self.schedules_stream,
            SCHEDULES_BUCKET,
            &format!("{workflow}.>"),
            sink,
        )
        .await
    }

    /// Deletes a schedule (a KV tombstone, so watchers see the delete) and purges its state.
    /// Returns whether a live value existed.
    pub async fn delete(&self, workflow: &str, key: &str) -> Result<bool, StoreError> {
        self.reconcile(workflow, key, |current| {
            Ok(match current {
                Some(_) => ScheduleChange::Delete(true),
                None => ScheduleChange::Keep(false),
            })
        })
        .await
    }

    /// Deletes `kv_key` if its last revision is still `revision`; `Ok(false)` when another
    /// write came first. Then purges its state record: a schedule created again later must not
    /// inherit the old one's `last_timestamp`. The scheduler owns `polos_schedule_state`; this
    /// purge is the one write to it from elsewhere, because the deleting writer is the only one
    /// that knows the definition is gone *before* a replica may re-create it (ARCHITECTURE.md,
    /// "Buckets and their one owner").
    async fn delete_at(&self, kv_key: &str, revision: u64) -> Result<bool, StoreError> {
        let write = kv_write(SCHEDULES_BUCKET, kv_key);
        let deleted = self
            .denials
            .guard(
                &[&write],
                self.schedules
                    .delete_expect_revision(kv_key, Some(revision)),
            )
            .await?;
        match deleted {
            Ok(()) => {}
            Err(e) if e.kind() == DeleteErrorKind::WrongLastRevision => return Ok(false),
            Err(e) => {
                return Err(StoreError::Write {
                    bucket: SCHEDULES_BUCKET,
                    kv_key: kv_key.to_string(),
                    source: e.into(),
                })
            }
        }
        let purge = kv_write(SCHEDULE_STATE_BUCKET, kv_key);
        match self
            .denials
            .guard(&[&purge], self.state.purge(kv_key))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(kv_key, error = %e, "could not purge the state of a deleted schedule")
            }
            Err(denied) => {
                tracing::warn!(kv_key, error = %StoreError::Denied(denied), "could not purge the state of a deleted schedule")
            }
        }
        Ok(true)
    }

    /// Writes a worker's registration of its workflow (`polos_workflows`, keyed by workflow id;
    /// the last start wins, as the registration describes the code that runs now).
    pub async fn register_workflow(&self, record: &WorkflowRecord) -> Result<(), StoreError> {
        let kv_key = record.workflow.as_str();
        let fail = |source: async_nats::Error| StoreError::Write {
            bucket: WORKFLOWS_BUCKET,
            kv_key: kv_key.to_string(),
            source,
        };
        let bytes = serde_json::to_vec(record).map_err(|e| fail(e.into()))?;
        let write = kv_write(WORKFLOWS_BUCKET, kv_key);
        self.denials
            .guard(&[&write], self.workflows.put(kv_key, bytes.into()))
            .await?
            .map_err(|e| fail(e.into()))?;
        Ok(())
    }

    /// Every schedule (or every schedule of `workflow`), split into valid records and values
    /// that are not records. One pass over the bucket, never one request per key.
    pub async fn list(&self, workflow: Option<&str>) -> Result<Listing, StoreError> {
        let filter = workflow.map_or_else(|| ">".to_string(), |w| format!("{w}.>"));
        let entries = self
            .scan(&self.schedules_stream, SCHEDULES_BUCKET, &filter)
            .await?;
        let mut listing = Listing::default();
        for RawEntry { kv_key, value, .. } in entries {
            match ScheduleRecord::from_kv(&kv_key, &value) {
                Ok(record) => listing.schedules.push(record),
                Err(e) => listing.invalid.push(InvalidEntry {
                    error: e.to_string(),
                    kv_key,
                }),
            }
        }
        // The replay comes in write order; people and scripts expect key order.
        listing
            .schedules
            .sort_by(|a, b| (&a.workflow, &a.key).cmp(&(&b.workflow, &b.key)));
        listing.invalid.sort_by(|a, b| a.kv_key.cmp(&b.kv_key));
        Ok(listing)
    }

    /// The scheduler's state record of one schedule. An unreadable state value counts as none
    /// (the scheduler rewrites it at the next fire) and is logged.
    pub async fn state(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<ScheduleState>, StoreError> {
        let kv_key = schedule_kv_key(workflow, key);
        let read = direct_get(SCHEDULE_STATE_BUCKET, &kv_key);
        let value = self
            .denials
            .guard(&[&read], self.state.get(&kv_key))
            .await?
            .map_err(|e| StoreError::Read {
                bucket: SCHEDULE_STATE_BUCKET,
                kv_key: kv_key.clone(),
                source: e.into(),
            })?;
        Ok(value.and_then(|v| parse_logged(SCHEDULE_STATE_BUCKET, &kv_key, &v)))
    }

    /// The state records of every schedule (or every schedule of `workflow`), by KV key.
    pub async fn states(
        &self,
        workflow: Option<&str>,
    ) -> Result<HashMap<String, ScheduleState>, StoreError> {
        let filter = workflow.map_or_else(|| ">".to_string(), |w| format!("{w}.>"));
        let entries = self
            .scan(&self.state_stream, SCHEDULE_STATE_BUCKET, &filter)
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let state = parse_logged(SCHEDULE_STATE_BUCKET, &e.kv_key, &e.value)?;
                Some((e.kv_key, state))
            })
            .collect())
    }

    /// A workflow's registration, `None` when no worker registered it yet. An unreadable value
    /// counts as unregistered and is logged.
    pub async fn workflow(&self, workflow: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        let read = direct_get(WORKFLOWS_BUCKET, workflow);
        let value = self
            .denials
            .guard(&[&read], self.workflows.get(workflow))
            .await?
            .map_err(|e| StoreError::Read {
                bucket: WORKFLOWS_BUCKET,
                kv_key: workflow.to_string(),
                source: e.into(),
            })?;
        Ok(value.and_then(|v| parse_logged(WORKFLOWS_BUCKET, workflow, &v)))
    }

    /// Every workflow registration, plus the values that are not registrations.
    pub async fn workflows(&self) -> Result<(Vec<WorkflowRecord>, Vec<InvalidEntry>), StoreError> {
        let entries = self
            .scan(&self.workflows_stream, WORKFLOWS_BUCKET, ">")
            .await?;
        let mut valid = Vec::with_capacity(entries.len());
        let mut invalid = Vec::new();
        for RawEntry { kv_key, value, .. } in entries {
            match serde_json::from_slice::<WorkflowRecord>(&value) {
                Ok(record) => valid.push(record),
                Err(e) => invalid.push(InvalidEntry {
                    error: format!("value at {kv_key:?} is not a workflow registration: {e}"),
                    kv_key,
                }),
            }
        }
        valid.sort_by(|a, b| a.workflow.cmp(&b.workflow));
        Ok((valid, invalid))
    }

    /// A watch over `polos_workflows` that first delivers every current registration.
    pub async fn watch_workflows(&self) -> Result<async_nats::jetstream::kv::Watch, StoreError> {
        let consumers = format!("$JS.API.CONSUMER.CREATE.KV_{WORKFLOWS_BUCKET}");
        let named = format!("{consumers}.>");
        self.denials
            .guard(
                &[&consumers, &named],
                self.workflows.watch_with_history(">"),
            )
            .await?
            .map_err(|e| StoreError::Scan {
                bucket: WORKFLOWS_BUCKET,
                filter: ">".to_string(),
                source: ReadError::consumer(e),
            })
    }

    async fn entry(
        &self,
        kv_key: &str,
    ) -> Result<Option<async_nats::jetstream::kv::Entry>, StoreError> {
        let read = direct_get(SCHEDULES_BUCKET, kv_key);
        self.denials
            .guard(&[&read], self.schedules.entry(kv_key))
            .await?
            .map_err(|e| StoreError::Read {
                bucket: SCHEDULES_BUCKET,
                kv_key: kv_key.to_string(),
                source: e.into(),
            })
    }

    /// Writes `record` if the key's last revision is still `expected`; `Ok(None)` when another
    /// writer got there first.
    ///
    /// Through the store's [`Writer`] (acks of every concurrent write on one subscription): the
    /// same message a KV `update` publishes (the value to `$KV.<bucket>.<key>` with
    /// `Nats-Expected-Last-Subject-Sequence`), without its per-write inbox, timer and boxed
    /// future. A bucket reached through a JetStream domain prefix, or a key the KV rules refuse,
    /// takes the KV call itself (which reports the key).
    async fn cas(
        &self,
        kv_key: &str,
        record: &ScheduleRecord,
        expected: u64,
    ) -> Result<Option<u64>, StoreError> {
        let fail = |source: async_nats::Error| StoreError::Write {
            bucket: SCHEDULES_BUCKET,
            kv_key: kv_key.to_string(),
            source,
        };
        let bytes = Bytes::from(serde_json::to_vec(record).map_err(|e| fail(e.into()))?);
        let write = kv_write(SCHEDULES_BUCKET, kv_key);
        if self.schedules.use_jetstream_prefix || !is_valid_kv_key(kv_key) {
            return match self
                .denials
                .guard(&[&write], self.schedules.update(kv_key, bytes, expected))
                .await?
            {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(fail(e.into())),
            };
        }
        let writer = self
            .writer
            .get_or_try_init(|| Writer::new(self.client.clone()))
            .await
            .map_err(|e| fail(e.into()))?;
        let prefix = self
            .schedules
            .put_prefix
            .as_ref()
            .unwrap_or(&self.schedules.prefix);
        let mut subject = String::with_capacity(prefix.len() + kv_key.len());
        subject.push_str(prefix);
        subject.push_str(kv_key);
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            HeaderValue::from(expected),
        );
        match self
            .denials
            .guard(&[&write], writer.publish(&subject, headers, bytes))
            .await?
        {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.is_wrong_last_sequence() => Ok(None),
            Err(e) => Err(fail(e.into())),
        }
    }

    /// One pass over a bucket (see `scan`), ended early when NATS refuses the listing consumer
    /// or its flow control replies.
    async fn scan(
        &self,
        stream: &Stream,
        bucket: &'static str,
        filter: &str,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let consumers = format!("$JS.API.CONSUMER.CREATE.KV_{bucket}");
        let named = format!("{consumers}.>");
        let flow_control = format!("$JS.FC.KV_{bucket}.>");
        self.denials
            .guard(
                &[&consumers, &named, &flow_control],
                scan(&self.client, stream, bucket, filter),
            )
            .await?
    }

    fn contended(&self, kv_key: String) -> StoreError {
        StoreError::Contended {
            bucket: SCHEDULES_BUCKET,
            kv_key,
            attempts: MAX_CAS_ATTEMPTS,
        }
    }
}

/// Waits a little after a lost compare-and-swap race so that many writers of one key do not
/// retry in lock step. The jitter comes from the clock's nanoseconds: good enough to spread
/// retries, and it needs no random number generator.
async fn backoff(attempt: u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let ceiling_micros = 200 * u64::from(attempt.min(10) + 1);
    tokio::time::sleep(Duration::from_micros(u64::from(nanos) % ceiling_micros)).await;
}

/// The KV rule for keys (async-nats checks it before a KV write): `[-/_=.a-zA-Z0-9]+`, not
/// starting or ending with `.`.
fn is_valid_kv_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

fn parse_logged<T: serde::de::DeserializeOwned>(
    bucket: &str,
    kv_key: &str,
    value: &[u8],
) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(bucket, kv_key, error = %e, "ignoring an unreadable value");
            None
        }
    }
}
