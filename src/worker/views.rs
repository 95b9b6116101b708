//! What a worker keeps in memory about its workflows' keys in other buckets, followed live: the
//! overlap policy of each schedule (`polos_schedules`) and the cancel requests of runs
//! (`polos_cancels`). A run then learns both without a KV read.
//!
//! Each workflow's keys are followed by one task (see `store/read.rs`). Until a view has
//! caught up — at start, and again after following failed and began anew — it answers
//! [`Lookup::Unknown`], and the caller reads the one key it needs from KV instead. So a fire
//! arriving before the view is complete never runs with a default it should not have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::model::{CancelRecord, OverlapPolicy, ScheduleRecord};
use crate::store::{CancelStore, Followed, ReadError, ScheduleStore};

/// Pause before following again after following failed; doubles up to [`MAX_REFOLLOW`].
const FIRST_REFOLLOW: Duration = Duration::from_millis(250);
/// The longest pause between two attempts to follow.
const MAX_REFOLLOW: Duration = Duration::from_secs(10);

/// What a view knows about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup<V> {
    /// The view is complete: the key's value, `None` when it has none.
    Known(Option<V>),
    /// The view has not caught up: read the key.
    Unknown,
}

/// One workflow's keys.
struct Keys<V> {
    /// Latest value per KV key (keys without a value, or with the default, are absent).
    values: RwLock<HashMap<String, V>>,
    /// Whether `values` holds everything stored.
    caught_up: AtomicBool,
    /// Bumped after every change, so waiters look again.
    changed: watch::Sender<()>,
}

impl<V: Clone> Keys<V> {
    fn new() -> Keys<V> {
        Keys {
            values: RwLock::new(HashMap::new()),
            caught_up: AtomicBool::new(false),
            changed: watch::channel(()).0,
        }
    }

    fn lookup(&self, kv_key: &str) -> Lookup<V> {
        if !self.caught_up.load(Ordering::Acquire) {
            return Lookup::Unknown;
        }
        let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
        Lookup::Known(values.get(kv_key).cloned())
    }

    fn set(&self, kv_key: String, value: Option<V>) {
        let mut values = self.values.write().unwrap_or_else(PoisonError::into_inner);
        match value {
            Some(v) => values.insert(kv_key, v),
            None => values.remove(&kv_key),
        };
    }
}

/// The followed keys of every workflow of a worker; the follow tasks stop when it is dropped.
pub(crate) struct View<V> {
    /// Per workflow id.
    workflows: HashMap<String, Arc<Keys<V>>>,
    /// The follow tasks.
    tasks: Vec<JoinHandle<()>>,
}

impl<V> Drop for View<V> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl<V: Clone + Send + Sync + 'static> View<V> {
    /// What the view knows about `kv_key` of `workflow` (`Unknown` for a workflow not followed).
    pub(crate) fn lookup(&self, workflow: &str, kv_key: &str) -> Lookup<V> {
        self.workflows
            .get(workflow)
            .map_or(Lookup::Unknown, |keys| keys.lookup(kv_key))
    }

    /// Starts one task per workflow that follows its keys with `follow` forever (`what` names
    /// them in logs), applying each value through `parse`.
    fn start<F, Fut>(
        what: &'static str,
        workflows: &[String],
        parse: fn(&str, &[u8]) -> Option<V>,
        follow: F,
    ) -> View<V>
    where
        F: Fn(String, Box<dyn FnMut(Followed) + Send>) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ReadError> + Send + 'static,
    {
        let mut view = View {
            workflows: HashMap::new(),
            tasks: Vec::new(),
        };
        for workflow in workflows {
            let keys = Arc::new(Keys::new());
            view.tasks.push(tokio::spawn(keep_following(
                what,
                workflow.clone(),
                keys.clone(),
                parse,
                follow.clone(),
            )));
            view.workflows.insert(workflow.clone(), keys);
        }
        view
    }

    /// A receiver that sees every change of `workflow`'s keys.
    pub(crate) fn changes(&self, workflow: &str) -> Option<watch::Receiver<()>> {
        self.workflows.get(workflow).map(|k| k.changed.subscribe())
    }

    /// Waits until every workflow's view caught up, for at most `timeout`; `false` if one
    /// did not (lookups then read KV until it does).
    pub(crate) async fn caught_up(&self, timeout: Duration) -> bool {
        let all = async {
            for keys in self.workflows.values() {
                let mut changes = keys.changed.subscribe();
                while !keys.caught_up.load(Ordering::Acquire) {
                    if changes.changed().await.is_err() {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }
}

/// Follows `workflow` with `follow` forever, applying each event through `parse` (`None`: the
/// key has no value worth keeping).
async fn keep_following<V, F, Fut>(
    what: &'static str,
    workflow: String,
    keys: Arc<Keys<V>>,
    parse: fn(&str, &[u8]) -> Option<V>,
    follow: F,
) where
    V: Clone + Send + Sync + 'static,
    F: Fn(String, Box<dyn FnMut(Followed) + Send>) -> Fut,
    Fut: std::future::Future<Output = ReadError>,
{
    let mut pause = FIRST_REFOLLOW;
    loop {
        let sink_keys = keys.clone();
        let sink = Box::new(move |event: Followed| {
            match event {
                Followed::Put { kv_key, value } => {
                    let parsed = parse(&kv_key, &value);
                    sink_keys.set(kv_key, parsed);
                }
                Followed::Gone { kv_key } => sink_keys.set(kv_key, None),
                Followed::CaughtUp => sink_keys.caught_up.store(true, Ordering::Release),
            }
            sink_keys.changed.send_replace(());
        });
        let why = follow(workflow.clone(), sink).await;
        if keys.caught_up.swap(false, Ordering::AcqRel) {
            // It worked for a while: start over quickly.
            pause = FIRST_REFOLLOW;
        }
        keys.changed.send_replace(());
        warn!(workflow, what, error = %why, retry_in = ?pause, "stopped following; following again (until then each run reads its key)");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_REFOLLOW);
    }
}

/// The overlap policy of every schedule of the worker's workflows (only those that are not the
/// default `skip` are kept, so 100,000 default schedules cost no memory).
pub(crate) type Policies = View<OverlapPolicy>;

/// Starts following the schedules of `workflows`.
pub(crate) fn follow_policies(store: &ScheduleStore, workflows: &[String]) -> Policies {
    fn parse(kv_key: &str, value: &[u8]) -> Option<OverlapPolicy> {
        let record = ScheduleRecord::from_kv_without_id(kv_key, value).ok()?;
        record.overlap.filter(|p| *p != OverlapPolicy::default())
    }
    let store = store.clone();
    View::start("schedules", workflows, parse, move |workflow, sink| {
        let store = store.clone();
        async move { store.follow(&workflow, sink).await }
    })
}

/// The cancel requests of the worker's workflows: reason per `<workflow>.<run_id>`.
pub(crate) type Cancels = View<Option<String>>;

/// Starts following the cancel requests of `workflows`.
pub(crate) fn follow_cancels(store: &CancelStore, workflows: &[String]) -> Cancels {
    fn parse(kv_key: &str, value: &[u8]) -> Option<Option<String>> {
        match serde_json::from_slice::<CancelRecord>(value) {
            Ok(record) => Some(record.reason),
            Err(e) => {
                // A request written by hand in another shape still asks for a cancel.
                debug!(kv_key, error = %e, "a cancel request that is not a cancel record; cancelling all the same");
                Some(None)
            }
        }
    }
    let store = store.clone();
    View::start(
        "cancel requests",
        workflows,
        parse,
        move |workflow, sink| {
            let store = store.clone();
            async move { store.follow(&workflow, sink).await }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_answers_only_once_caught_up() {
        let keys: Keys<u8> = Keys::new();
        keys.set("wf.a".into(), Some(1));
        assert_eq!(keys.lookup("wf.a"), Lookup::Unknown);
        keys.caught_up.store(true, Ordering::Release);
        assert_eq!(keys.lookup("wf.a"), Lookup::Known(Some(1)));
        assert_eq!(keys.lookup("wf.b"), Lookup::Known(None));
        keys.set("wf.a".into(), None);
        assert_eq!(keys.lookup("wf.a"), Lookup::Known(None));
    }
}
