//! An in-memory view of `polos_workflows`, kept current by a KV watch.
//!
//! Upserts check the target workflow's registration. Reading it from KV would cost every upsert
//! one more round trip, so the common case — a workflow registered as schedulable — is answered
//! from memory. Everything else (unknown, not schedulable) is confirmed with a KV read, so a
//! registration made a moment ago is never missed; the only window of staleness is a workflow
//! flipped from schedulable to not schedulable in the last milliseconds.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use futures::StreamExt;

use crate::model::WorkflowRecord;
use crate::store::ScheduleStore;

/// How long the watch waits before re-subscribing after an error.
const REWATCH_DELAY: Duration = Duration::from_secs(1);

/// Workflows registered as schedulable; the watch task stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Registry {
    /// Workflow ids with `schedulable: true` in their latest registration.
    schedulable: Arc<RwLock<HashSet<String>>>,
    /// The watch task.
    task: tokio::task::JoinHandle<()>,
}

impl Registry {
    /// Starts watching `polos_workflows`.
    pub(crate) fn start(store: ScheduleStore) -> Registry {
        let schedulable = Arc::new(RwLock::new(HashSet::new()));
        let task = tokio::spawn(watch(store, schedulable.clone()));
        Registry { schedulable, task }
    }

    /// Whether the latest registration seen says `schedulable: true`.
    pub(crate) fn is_schedulable(&self, workflow: &str) -> bool {
        self.schedulable
            .read()
            .map(|set| set.contains(workflow))
            .unwrap_or(false)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(store: ScheduleStore, schedulable: Arc<RwLock<HashSet<String>>>) {
    loop {
        match store.watch_workflows().await {
            Ok(mut entries) => {
                while let Some(entry) = entries.next().await {
                    let Ok(entry) = entry else { break };
                    let registered = entry.operation == Operation::Put
                        && serde_json::from_slice::<WorkflowRecord>(&entry.value)
                            .is_ok_and(|r| r.schedulable);
                    if let Ok(mut set) = schedulable.write() {
                        if registered {
                            set.insert(entry.key);
                        } else {
                            set.remove(&entry.key);
                        }
                    }
                }
                tracing::debug!("the polos_workflows watch ended; watching again");
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch polos_workflows; retrying"),
        }
        tokio::time::sleep(REWATCH_DELAY).await;
    }
}
