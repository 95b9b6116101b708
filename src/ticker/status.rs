//! What a running ticker reports about itself, for tests, health checks and operators.

use chrono::{DateTime, Utc};

/// A snapshot of the ticker, published on a `tokio::sync::watch` channel
/// ([`Ticker::status`](super::Ticker::status)). Per-schedule numbers live in each schedule's
/// state record (`polos schedules get`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickerStatus {
    /// This replica holds the lease, has planned every schedule and is firing.
    pub active: bool,
    /// The initial load of `polos_schedules` is complete.
    pub loaded: bool,
    /// Schedules in the table (valid, paused and invalid ones).
    pub schedules: usize,
    /// Fires published by this replica since it started.
    pub fires: u64,
    /// Instants this replica counted as missed (catch-up policy, failed publishes).
    pub missed: u64,
    /// Back-filled fires published by this replica since it started (not in `fires`).
    pub backfilled: u64,
    /// Scheduled instant of the most recent fire by this replica.
    pub last_fire: Option<DateTime<Utc>>,
    /// When the earliest armed schedule is due: its instant plus its jitter (`None` when not
    /// active or nothing is armed).
    pub next_fire: Option<DateTime<Utc>>,
    /// Times this replica took over firing (won the lease and planned every schedule).
    pub takeovers: u64,
}
