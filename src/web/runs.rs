//! [`RunReader`]: runs newest first, one bounded page at a time, and one run with its steps.
//!
//! `polos_runs` keeps one message per key (history 1), so the bucket's stream in sequence order
//! is every run at the position of its latest update. A page reads that stream backwards in
//! windows of [`WINDOW`] sequences from a cursor, so it costs the same with 3 runs or 3 million.

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::kv::Store;
use futures::StreamExt;

use crate::model::{RunRecord, RunStatus, StepRecord};
use crate::store::{is_tombstone, validate_run_id, ReadError, RunStore, StepStore, StoreError};

/// Sequences read per window.
const WINDOW: u64 = 2_000;
/// Windows one page may read before it returns what it found (with a cursor to go on).
const MAX_WINDOWS: usize = 10;
/// How long a window may wait for its next message.
const IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Which runs a page lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs of this schedule (run ids start with its id).
    pub schedule_id: Option<String>,
}

/// One page of runs, most recently updated first.
#[derive(Debug, Clone, Default)]
pub struct RunPage {
    /// The runs.
    pub runs: Vec<RunRecord>,
    /// Pass as `before` for older runs; `None` when the oldest was reached.
    pub before: Option<u64>,
}

/// One step of a run, in completion order.
#[derive(Debug, Clone)]
pub struct StepView {
    /// The step name.
    pub name: String,
    /// The stored record, or why it cannot be read.
    pub record: Result<StepRecord, String>,
}

/// Reads `polos_runs` and `polos_steps`.
#[derive(Clone)]
pub struct RunReader {
    /// `polos_runs` as a stream, for pages by sequence (the one read no store offers).
    runs: Store,
    /// `polos_runs`' owner, for one run.
    run_store: RunStore,
    /// `polos_steps`' owner, for a run's steps.
    step_store: StepStore,
}

impl std::fmt::Debug for RunReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunReader").finish_non_exhaustive()
    }
}

impl RunReader {
    /// A reader of the two buckets.
    pub fn new(runs: Store, run_store: RunStore, step_store: StepStore) -> RunReader {
        RunReader {
            runs,
            run_store,
            step_store,
        }
    }

    /// Up to `limit` runs matching `filter` whose latest update is older than cursor `before`
    /// (`None`: the newest).
    pub async fn recent(
        &self,
        filter: &RunFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<RunPage, ReadError> {
        let mut stream = self.runs.stream.clone();
        let info = stream.info().await.map_err(ReadError::consumer)?;
        let (first, last) = (info.state.first_sequence.max(1), info.state.last_sequence);
        let subject = match &filter.workflow {
            Some(w) => format!("{}{w}.>", self.runs.prefix),
            None => format!("{}>", self.runs.prefix),
        };
        let mut end = before.unwrap_or(last + 1).min(last + 1);
        let mut page = RunPage::default();
        for _ in 0..MAX_WINDOWS {
            if end <= first || info.state.messages == 0 {
                return Ok(page);
            }
            let start = end.saturating_sub(WINDOW).max(first);
            let mut window = self.read_range(&subject, start, end).await?;
            window.reverse();
            for (seq, record) in window {
                let wanted = filter.status.is_none_or(|s| s == record.status)
                    && filter
                        .schedule_id
                        .as_ref()
                        .is_none_or(|id| record.run_id.starts_with(&format!("{id}-")));
                if !wanted {
                    continue;
                }
                page.runs.push(record);
                if page.runs.len() == limit {
                    page.before = Some(seq);
                    return Ok(page);
                }
            }
            end = start;
        }
        page.before = (end > first).then_some(end);
        Ok(page)
    }

    /// The runs among sequences `[start, end)` on `subject`, in sequence order; values that are
    /// not run records are skipped.
    async fn read_range(
        &self,
        subject: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, RunRecord)>, ReadError> {
        let consumer = self
            .runs
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: subject.to_string(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(ReadError::consumer)?;
        let mut out = Vec::new();
        let expected = consumer.cached_info().num_pending;
        if expected == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.map_err(ReadError::consumer)?;
        loop {
            let message = match tokio::time::timeout(IDLE, messages.next()).await {
                Err(_) => {
                    return Err(ReadError::Stalled {
                        idle: IDLE,
                        read: out.len(),
                        expected,
                    })
                }
                Ok(None) => return Ok(out),
                Ok(Some(m)) => m.map_err(ReadError::consumer)?,
            };
            let info = message.info().map_err(ReadError::Consumer)?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if seq >= end {
                return Ok(out);
            }
            if !is_tombstone(message.headers.as_ref()) {
                if let Ok(record) = serde_json::from_slice::<RunRecord>(&message.payload) {
                    out.push((seq, record));
                }
            }
            if pending == 0 {
                return Ok(out);
            }
        }
    }

    /// The run `run_id` and its steps in completion order; `None` when there is no such run.
    /// Read through the buckets' owners, like `polos runs get`.
    pub async fn run(
        &self,
        run_id: &str,
    ) -> Result<Option<(RunRecord, Vec<StepView>)>, StoreError> {
        if validate_run_id(run_id).is_err() {
            return Ok(None);
        }
        let Some(record) = self.run_store.find(run_id).await? else {
            return Ok(None);
        };
        let steps = self
            .step_store
            .list(run_id)
            .await?
            .into_iter()
            .map(|step| StepView {
                name: step.name,
                record: step.record.map_err(|e| e.to_string()),
            })
            .collect();
        Ok(Some((record, steps)))
    }
}
