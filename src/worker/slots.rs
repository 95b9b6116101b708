//! The slots of one fetch loop: how many executions hold a fire now. The fetch loop
//! (`consumer.rs`) asks for no more fires than free slots; each execution (`run.rs`) holds a
//! [`Slot`] until its handler returns. Its own file so neither of the two imports the other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The slots of one fetch loop, shared with the executions that hold them.
#[derive(Default, Clone)]
pub(crate) struct Slots {
    /// Slots taken now.
    taken: Arc<AtomicUsize>,
    /// Wakes the fetch loop when one is given back.
    freed: Arc<Notify>,
}

impl Slots {
    /// Resolves when a slot is given back.
    pub(crate) async fn freed(&self) {
        self.freed.notified().await;
    }

    /// Slots taken now.
    pub(crate) fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    /// Takes a slot; it is given back when the returned [`Slot`] is dropped.
    pub(crate) fn take(&self) -> Slot {
        self.taken.fetch_add(1, Ordering::AcqRel);
        Slot(self.clone())
    }
}

/// One taken slot; dropping it gives it back (when the handler returns, or the task ends).
pub(crate) struct Slot(Slots);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}
