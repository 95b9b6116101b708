//! The public entry: [`Ticker`] and [`run`] wire the loader, the lease, the state writer and the
//! firing loop (`driver`) together, and stop them in the right order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::KeyValueErrorKind;
use async_nats::jetstream::{self, kv::Store};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::clock::Clock;
use super::driver::{Loop, Wiring};
use super::error::TickerError;
use super::fence::Leadership;
use super::lease::LeaseTask;
use super::loader::{self, Backoff};
use super::publisher::Publisher;
use super::status::TickerStatus;
use crate::config::{Config, SchedulerConfig};
use crate::metrics::Metrics;
use crate::model::names::{LEASES_BUCKET, SCHEDULES_BUCKET, SCHEDULE_STATE_BUCKET};
use crate::model::Limits;

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
/// fires every schedule of `polos_schedules` at its instants (README, "The scheduler") and keeps
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
    /// `[limits]`: a stored value beyond one is invalid (it does not fire).
    limits: Limits,
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
            limits: config.limits.clone(),
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
    ///
    /// Only a configuration error or a missing bucket ends it early: NATS or JetStream being
    /// unavailable (a stream electing its leader, a reconnect, a cluster that lost its quorum)
    /// makes it retry with backoff and, when the lease cannot be renewed, stand by.
    pub async fn run<F>(self, shutdown: F) -> Result<(), TickerError>
    where
        F: Future<Output = ()>,
    {
        self.config.validate().map_err(TickerError::Config)?;
        let js = jetstream::new(self.client.clone());
        let schedules = open(&js, SCHEDULES_BUCKET).await?;
        let states = open(&js, SCHEDULE_STATE_BUCKET).await?;
        let leases = open(&js, LEASES_BUCKET).await?;
        let holder = format!("{}-{}", std::process::id(), nuid::next());
        info!(holder = %holder, lease_ttl = ?self.config.lease_ttl(), "scheduler ticker starting");

        let (leadership_tx, leadership_rx) = watch::channel(Leadership::default());
        let (ready_tx, ready_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (change_tx, change_rx) = mpsc::channel(64);
        let lease = LeaseTask {
            kv: leases,
            holder,
            ttl: self.config.lease_ttl(),
            ready: ready_rx,
            leadership: leadership_tx,
            stop: stop_rx,
        };
        let mut tasks = Tasks(vec![
            tokio::spawn(lease.run()),
            tokio::spawn(loader::follow(schedules, change_tx, self.limits)),
        ]);
        let publisher = Publisher::spawn(self.client, leadership_rx.clone());
        let mut ticker = Loop::new(Wiring {
            clock: self.clock,
            publisher,
            states,
            defaults: self.config,
            leadership: leadership_rx,
            ready: ready_tx,
            status: self.status,
            metrics: self.metrics,
        });
        let result = ticker.run_loop(change_rx, shutdown).await;
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

/// Opens a bucket. A bucket that does not exist is an error (run `polos streams apply`); any
/// other failure (JetStream briefly unavailable) is retried with backoff.
async fn open(js: &jetstream::Context, bucket: &str) -> Result<Store, TickerError> {
    let mut delay = Backoff::default();
    loop {
        match js.get_key_value(bucket).await {
            Ok(store) => return Ok(store),
            Err(e) if e.kind() == KeyValueErrorKind::InvalidStoreName => {
                return Err(TickerError::Bucket {
                    bucket: bucket.to_string(),
                    source: e.into(),
                })
            }
            Err(e) if is_missing(&e) => {
                return Err(TickerError::Bucket {
                    bucket: bucket.to_string(),
                    source: e.into(),
                })
            }
            Err(e) => {
                warn!(bucket, error = %e, "cannot open the bucket yet; retrying");
                tokio::time::sleep(delay.next()).await;
            }
        }
    }
}

/// Whether opening a bucket failed because its stream does not exist.
fn is_missing(e: &async_nats::jetstream::context::KeyValueError) -> bool {
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
    use async_nats::jetstream::ErrorCode;
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<GetStreamError>())
        .is_some_and(|s| match s.kind() {
            GetStreamErrorKind::JetStream(js) => js.error_code() == ErrorCode::STREAM_NOT_FOUND,
            _ => false,
        })
}
