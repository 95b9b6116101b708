//! A run's cancellation as its execution sees it: asked for in `polos_cancels` (by
//! `polos.run.cancel` or the overlap policy `cancel_other`), known to this worker through the
//! followed view of its workflows' cancel requests (see `views.rs`), so noticing costs no KV read.
//!
//! | where                         | what a request does                                      |
//! |-------------------------------|----------------------------------------------------------|
//! | a fire is claimed             | the run is recorded `cancelled` and its fire terminated   |
//! | a step boundary               | `ctx.step.run` returns a terminal error instead of running |
//! | in the handler                | `ctx.is_cancelled()` is true, `ctx.cancelled()` resolves  |
//! | the handler returned an error | the run is recorded `cancelled`, not retried              |
//! | the handler returned `Ok`     | the run completed before it noticed: `completed`          |

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::views::{Cancels, Lookup};
use super::WorkflowError;
use crate::model::run_kv_key;
use crate::store::{CancelStore, RunKey};

/// The cancellation of one run; cheap to clone.
#[derive(Clone)]
pub(crate) struct Cancellation {
    /// `None` for a context that cannot be cancelled (tests building one by hand).
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// The followed cancel requests of this worker's workflows.
    view: Arc<Cancels>,
    /// For a KV read while the view has not caught up.
    store: CancelStore,
    /// The run.
    key: RunKey,
    /// `<workflow>.<run_id>`, the key in the view.
    kv_key: String,
    /// A request found by reading KV (while the view had not caught up), with its reason.
    found: Mutex<Option<Option<String>>>,
}

impl Cancellation {
    /// The cancellation of run `key`.
    pub(crate) fn new(view: Arc<Cancels>, store: CancelStore, key: RunKey) -> Cancellation {
        let kv_key = run_kv_key(key.workflow(), key.run_id());
        Cancellation {
            inner: Some(Arc::new(Inner {
                view,
                store,
                key,
                kv_key,
                found: Mutex::new(None),
            })),
        }
    }

    /// A cancellation that is never requested.
    pub(crate) fn never() -> Cancellation {
        Cancellation { inner: None }
    }

    /// Whether cancelling was asked for, from memory only: `Some(reason)` when it was.
    pub(crate) fn requested_now(&self) -> Option<Option<String>> {
        let inner = self.inner.as_ref()?;
        if let Some(found) = inner
            .found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Some(found);
        }
        match inner.view.lookup(inner.key.workflow(), &inner.kv_key) {
            Lookup::Known(reason) => reason,
            Lookup::Unknown => None,
        }
    }

    /// Whether cancelling was asked for; reads KV when the view has not caught up (at start, or
    /// after following failed). A failed read counts as "not asked" (the next boundary looks
    /// again).
    pub(crate) async fn requested(&self) -> Option<Option<String>> {
        let inner = self.inner.as_ref()?;
        if let Some(found) = self.requested_now() {
            return Some(found);
        }
        if inner.view.lookup(inner.key.workflow(), &inner.kv_key) != Lookup::Unknown {
            return None;
        }
        match inner.store.get(&inner.key).await {
            Ok(Some(record)) => {
                let reason = record.reason;
                *inner.found.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
                Some(reason)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(run_id = inner.key.run_id(), error = %e, "cannot read the run's cancel request; looking again at the next step");
                None
            }
        }
    }

    /// Resolves once cancelling is asked for (never, for a run nobody cancels).
    pub(crate) async fn wait(&self) {
        let Some(inner) = self.inner.as_ref() else {
            return std::future::pending().await;
        };
        let Some(mut changes): Option<watch::Receiver<()>> =
            inner.view.changes(inner.key.workflow())
        else {
            return std::future::pending().await;
        };
        loop {
            if self.requested().await.is_some() {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// The error a step boundary returns once the run is cancelled.
    pub(crate) fn error(&self, before: &str, reason: Option<&str>) -> WorkflowError {
        let run_id = self.inner.as_ref().map_or("", |i| i.key.run_id());
        WorkflowError::terminal(format!(
            "run {run_id} was cancelled{}; it stops before {before}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ))
    }
}

/// The text recorded in a cancelled run's `error`.
pub(crate) fn cancelled_error(reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("cancelled: {reason}"),
        None => "cancelled on request (polos.run.cancel)".to_string(),
    }
}
