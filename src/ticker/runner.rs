//! The public entry: [`Ticker`] and [`run`] wire the loader, the lease, the state writer and the
//! firing loop (`driver`) together, and stop them in the right order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv::Store};
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use super::clock::Clock;
use super::driver::Loop;
use super::error::TickerError;
use super::lease;
use super::loader;
use super::status::TickerStatus;
use crate::config::{Config, SchedulerConfig};
use crate::metrics::Metrics;
use crate::model::names::{SCHEDULES_BUCKET, SCHEDULE_STATE_BUCKET};

/// KV bucket holding the scheduler lease.
pub const LEASES_BUCKET: &str = "polos_leases";

/// Runs the scheduler's ticker with `clock` until `shutdown` completes: shorthand for
/// `Ticker::new(client, config).clock(clock).run(shutdown)`.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// let config = polos::config::Config::from_env()?;
/// let client = polos::nats::connect(&config.nats).await?;
/// let clock = Arc::new(polos::ticker::SystemClock);
/// polos::ticker::run(client, &config, clock, async { let _ = tokio::signal::ctrl_c().await; })
///     .await?;
/// # Ok(()) }
/// ```
pub async fn run<F>(
    client: async_nats::Client,
    config: &Config,
    clock: Arc<dyn Clock>,
    shutdown: F,
) -> Result<(), TickerError>
where
    F: Future<Output = ()>,
{
    Ticker::new(client, config).clock(clock).run(shutdown).await
}

/// The scheduler's ticker, configured and ready to [`run`](Ticker::run).
///
/// It competes for the lease in `polos_leases` with every other replica; while it leads, it
/// fires every schedule of `polos_schedules` at its instants (design §5) and keeps
/// `polos_schedule_state` current. Schedule times come from its [`Clock`]
/// ([`SystemClock`](super::SystemClock) unless set). The buckets must exist
/// (`polos streams apply`).
pub struct Ticker {
    /// The NATS connection (JetStream is used on it).
    client: async_nats::Client,
    /// `[scheduler]` settings: lease TTL, catch-up defaults.
    config: SchedulerConfig,
    /// Where schedule time comes from.
    clock: Arc<dyn Clock>,
    /// Published status; receivers come from [`Ticker::status`].
    status: watch::Sender<TickerStatus>,
    /// Where fires, misses and leadership are counted.
    metrics: Metrics,
}

impl Ticker {
    /// A ticker on `client` with the `[scheduler]` section of `config` and the system clock.
    pub fn new(client: async_nats::Client, config: &Config) -> Self {
        Ticker {
            client,
            config: config.scheduler.clone(),
            clock: Arc::new(super::SystemClock),
            status: watch::channel(TickerStatus::default()).0,
            metrics: Metrics::new(),
        }
    }

    /// Counts fires, misses, leadership and schedules in `metrics` (served at `/metrics`).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Uses `clock` for schedule time (tests pass a [`ManualClock`](super::ManualClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A receiver of the ticker's status (leading, schedules, fires, next fire).
    pub fn status(&self) -> watch::Receiver<TickerStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` completes. On shutdown it stops firing, flushes state, then
    /// releases the lease so a standby takes over at once. Dropping the future instead (an
    /// aborted task) stops everything too, without the flush and release: like a crash.
    pub async fn run<F>(self, shutdown: F) -> Result<(), TickerError>
    where
        F: Future<Output = ()>,
    {
        let js = jetstream::new(self.client);
        let schedules = open(&js, SCHEDULES_BUCKET).await?;
        let states = open(&js, SCHEDULE_STATE_BUCKET).await?;
        let leases = open(&js, LEASES_BUCKET).await?;
        let holder = format!("{}-{}", std::process::id(), nuid::next());
        info!(holder = %holder, lease_ttl = ?self.config.lease_ttl(), "scheduler ticker starting");

        let (lead_tx, lead_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (change_tx, change_rx) = mpsc::channel(64);
        let mut tasks = Tasks(vec![
            tokio::spawn(lease::run(
                leases,
                holder,
                self.config.lease_ttl(),
                lead_tx,
                stop_rx,
            )),
            tokio::spawn(async move {
                if let Err(e) = loader::follow(schedules, change_tx).await {
                    error!(error = %e, "schedule loader stopped");
                }
            }),
        ]);
        let mut ticker = Loop::new(
            self.clock,
            js,
            states,
            self.config,
            self.status,
            self.metrics,
        );
        let result = ticker.run_loop(change_rx, lead_rx, shutdown).await;
        // Order matters: stop firing, write state, and only then let a standby take over.
        let (writer, ticker_status) = ticker.finish();
        writer.close(Duration::from_secs(10)).await;
        let _ = stop_tx.send(true);
        if let Some(lease_task) = tasks.0.first_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
        }
        let status = ticker_status.borrow().clone();
        info!(
            fires = status.fires,
            missed = status.missed,
            last_fire = ?status.last_fire.map(crate::model::time::format_instant),
            "scheduler ticker stopped"
        );
        result
    }
}

/// Background tasks of one ticker, aborted when it stops or its future is dropped, so an
/// aborted ticker also stops renewing its lease.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn open(js: &jetstream::Context, bucket: &str) -> Result<Store, TickerError> {
    js.get_key_value(bucket)
        .await
        .map_err(|e| TickerError::Bucket {
            bucket: bucket.to_string(),
            message: e.to_string(),
        })
}
