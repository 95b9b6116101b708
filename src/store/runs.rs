//! [`RunStore`]: the one reader and writer of `polos_runs`.
//!
//! A run record is created once and from then on only replaced by compare-and-swap on the
//! revision its writer read, so two executions of one run can never both believe they wrote
//! the last word: the one whose revision is stale gets [`StoreError::Conflict`]. A deleted or
//! purged key reads as absent (the rule every reader here shares).

use std::sync::Arc;

use async_nats::jetstream::Context;
use futures::{Stream, StreamExt};

use super::bucket::{Bucket, Created};
use super::read::{is_live, ReadError};
use super::StoreError;
use crate::model::names::RUNS_BUCKET;
use crate::model::{run_kv_key, validate_workflow, RunRecord};

/// A validated key of `polos_runs`: `<workflow>.<run_id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunKey {
    /// The workflow id.
    workflow: String,
    /// The run id.
    run_id: String,
    /// `<workflow>.<run_id>`.
    kv_key: String,
}

impl RunKey {
    /// The key of run `run_id` of `workflow`; refuses ids that do not follow the contract, so a
    /// hand-published fire cannot address another key (or none).
    pub fn new(workflow: &str, run_id: &str) -> Result<RunKey, StoreError> {
        validate_workflow(workflow).map_err(|_| StoreError::InvalidRunId {
            run_id: format!("{workflow}.{run_id}"),
            reason: "the workflow id is not [A-Za-z0-9_-]{1,128}",
        })?;
        validate_run_id(run_id)?;
        Ok(RunKey {
            workflow: workflow.to_string(),
            run_id: run_id.to_string(),
            kv_key: run_kv_key(workflow, run_id),
        })
    }

    /// The workflow id.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// `<workflow>.<run_id>`.
    pub fn kv_key(&self) -> &str {
        &self.kv_key
    }
}

/// Checks the contract's run id shape: `sch_` + 26 base32 characters, then
/// `-YYYYMMDDTHHMMSSZ` (a scheduled instant) or `-m` + a nuid (a manual trigger).
///
/// ```
/// use polos::store::validate_run_id;
/// assert!(validate_run_id("sch_4xv32vp3oro5c6puhza43mst5t-20261126T090000Z").is_ok());
/// assert!(validate_run_id("sch_4xv32vp3oro5c6puhza43mst5t-mA1b2C3d4E5f6G7h8I9j0K1").is_ok());
/// assert!(validate_run_id("sch_4xv32vp3oro5c6puhza43mst5t-2026").is_err());
/// assert!(validate_run_id("hello").is_err());
/// ```
pub fn validate_run_id(run_id: &str) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::InvalidRunId {
        run_id: shorten(run_id),
        reason,
    };
    let rest = run_id
        .strip_prefix("sch_")
        .ok_or_else(|| invalid("it does not start with sch_"))?;
    let (id, suffix) = rest
        .split_once('-')
        .ok_or_else(|| invalid("there is no - after the schedule id"))?;
    if id.len() != 26 || !id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')) {
        return Err(invalid(
            "the schedule id is not 26 lowercase base32 characters",
        ));
    }
    let instant = suffix.len() == 16
        && suffix.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    let manual = suffix.strip_prefix('m').is_some_and(|n| {
        (1..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if instant || manual {
        Ok(())
    } else {
        Err(invalid(
            "the part after the schedule id is neither YYYYMMDDTHHMMSSZ nor m<nuid>",
        ))
    }
}

/// `text`, cut to a length fit for an error message (a hostile header may be megabytes).
fn shorten(text: &str) -> String {
    const LIMIT: usize = 200;
    match text.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A run record as stored, with the revision a compare-and-swap must name.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    /// The record.
    pub record: RunRecord,
    /// Its revision.
    pub revision: u64,
}

/// The outcome of [`RunStore::create`].
// Returned once per claim and matched at once, never stored: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RunCreated {
    /// This call wrote the first record of the run.
    New {
        /// Its revision.
        revision: u64,
        /// A deleted or purged record was there before, so step results of the run may exist.
        over_tombstone: bool,
    },
    /// A record exists (nothing was written); `Err` when its value is not a run record.
    Exists {
        /// The stored record, or why it is unreadable.
        record: Result<RunRecord, StoreError>,
        /// Its revision (to replace it by compare-and-swap).
        revision: u64,
    },
}

/// A listing of run records.
#[derive(Debug, Default)]
pub struct RunListing {
    /// Readable records, in KV key order.
    pub runs: Vec<RunRecord>,
    /// Values that are not run records.
    pub invalid: Vec<StoreError>,
}

/// Typed reads and compare-and-swap writes of `polos_runs`.
#[derive(Debug, Clone)]
pub struct RunStore {
    /// `polos_runs`.
    /// Shared: a KV handle carries its stream's whole config, too much to copy per run.
    bucket: Arc<Bucket>,
}

impl RunStore {
    /// Opens `polos_runs`; it must exist (`polos streams apply` creates it).
    pub async fn open(js: &Context) -> Result<RunStore, StoreError> {
        Ok(RunStore {
            bucket: Arc::new(Bucket::open(js, RUNS_BUCKET).await?),
        })
    }

    /// The run's record; `None` when there is none (never written, deleted or purged).
    pub async fn get(&self, key: &RunKey) -> Result<Option<StoredRun>, StoreError> {
        let Some((value, revision)) = self.bucket.get(key.kv_key()).await? else {
            return Ok(None);
        };
        Ok(Some(StoredRun {
            record: self.decode(key.kv_key(), &value)?,
            revision,
        }))
    }

    /// Writes the run's first record, unless one exists (then returns it, read in the same
    /// call). One round trip on a run's first delivery.
    pub async fn create(&self, key: &RunKey, record: &RunRecord) -> Result<RunCreated, StoreError> {
        let value = self.bucket.encode(key.kv_key(), record)?;
        Ok(match self.bucket.create(key.kv_key(), value).await? {
            Created::New {
                revision,
                over_tombstone,
            } => RunCreated::New {
                revision,
                over_tombstone,
            },
            Created::Exists { value, revision } => RunCreated::Exists {
                record: self.decode(key.kv_key(), &value),
                revision,
            },
        })
    }

    /// Replaces the record at `revision`; [`StoreError::Conflict`] when another writer
    /// changed it since, [`StoreError::TooLarge`] when it does not fit in a message.
    pub async fn update(
        &self,
        key: &RunKey,
        record: &RunRecord,
        revision: u64,
    ) -> Result<u64, StoreError> {
        let value = self.bucket.encode(key.kv_key(), record)?;
        self.bucket.update(key.kv_key(), value, revision).await
    }

    /// The record of `run_id`, whatever its workflow.
    pub async fn find(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        validate_run_id(run_id)?;
        let entries = self.bucket.scan(&format!("*.{run_id}")).await?;
        match entries.into_iter().next() {
            Some(entry) => self.decode(&entry.kv_key, &entry.value).map(Some),
            None => Ok(None),
        }
    }

    /// Every run record, or those of one workflow.
    pub async fn list(&self, workflow: Option<&str>) -> Result<RunListing, StoreError> {
        let filter = workflow.map_or_else(|| ">".to_string(), |w| format!("{w}.>"));
        let mut listing = RunListing::default();
        for entry in self.bucket.scan(&filter).await? {
            match self.decode(&entry.kv_key, &entry.value) {
                Ok(record) => listing.runs.push(record),
                Err(e) => listing.invalid.push(e),
            }
        }
        Ok(listing)
    }

    /// Every run record written from now on, as it is written. Deleted and purged keys are
    /// skipped; a value that is not a run record arrives as [`StoreError::BadValue`] (the
    /// watch goes on); a failed watch ends with another error.
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = Result<RunRecord, StoreError>> + use<>, StoreError> {
        let failed = |e: async_nats::Error| StoreError::Scan {
            bucket: RUNS_BUCKET,
            filter: ">".to_string(),
            source: ReadError::Consumer(e),
        };
        let updates = self
            .bucket
            .kv
            .watch_all()
            .await
            .map_err(|e| failed(e.into()))?;
        let store = self.clone();
        Ok(updates.filter_map(move |update| {
            let decoded = match update {
                Ok(entry) if !is_live(entry.operation) => None,
                Ok(entry) => Some(store.decode(&entry.key, &entry.value)),
                Err(e) => Some(Err(failed(e.into()))),
            };
            std::future::ready(decoded)
        }))
    }

    fn decode(&self, kv_key: &str, value: &[u8]) -> Result<RunRecord, StoreError> {
        serde_json::from_slice(value).map_err(|source| StoreError::BadValue {
            bucket: RUNS_BUCKET,
            kv_key: kv_key.to_string(),
            what: "run",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_follow_the_contract() {
        let sch = crate::model::schedule_id("wf", "global");
        let at = crate::model::time::parse_instant("2026-11-26T09:00:00Z").unwrap();
        assert!(validate_run_id(&crate::model::run_id_for(&sch, at)).is_ok());
        assert!(validate_run_id(&crate::model::manual_run_id(&sch)).is_ok());
        for bad in [
            "",
            "hello",
            "has spaces",
            &sch,
            &format!("{sch}-"),
            &format!("{sch}-20261126T090000"),
            &format!("{sch}-m"),
            &format!("{sch}-mab.cd"),
            &format!("{sch}-20261126T090000Z.x"),
            "sch_ABCDEFGHIJKLMNOPQRSTUVWXYZ-20261126T090000Z",
            "sch_x.y",
        ] {
            let e = validate_run_id(bad).unwrap_err();
            assert!(e.to_string().contains("is not a run id"), "{bad}: {e}");
        }
        assert!(RunKey::new("a.b", &crate::model::manual_run_id(&sch)).is_err());
    }
}
