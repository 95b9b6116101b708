//! The scheduler service: what `polos scheduler` runs and `polos dev` embeds — the ticker (fires
//! while this replica holds the lease), the schedules API (answers on every replica, queue group
//! `polos`) and, when asked for, the dashboard with `/metrics`. A library module so the CLI and
//! `polos dev` assemble it the same way, and a deployment of its own can too.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let config = polos::config::Config::from_env()?;
//! let client = polos::nats::connect(&config.nats).await?;
//! polos::scheduler::Service::new(client, &config)
//!     .run(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use thiserror::Error;

use crate::api::{ApiServer, ServeError};
use crate::config::Config;
use crate::metrics::{bind, HttpAddr, HttpError, Metrics};
use crate::ticker::{SystemClock, Ticker, TickerError};
use crate::web::WebError;

/// Which part of the scheduler service stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerErrorKind {
    /// The ticker.
    Ticker,
    /// The schedules API.
    Api,
}

/// The scheduler service stopped with an error; the message is the failing part's own.
#[derive(Debug, Error)]
pub enum SchedulerError {
    /// The ticker could not run.
    #[error(transparent)]
    Ticker(#[from] TickerError),
    /// The schedules API could not start or stopped.
    #[error(transparent)]
    Api(#[from] ServeError),
}

impl SchedulerError {
    /// Which part failed.
    pub fn kind(&self) -> SchedulerErrorKind {
        match self {
            SchedulerError::Ticker(_) => SchedulerErrorKind::Ticker,
            SchedulerError::Api(_) => SchedulerErrorKind::Api,
        }
    }
}

/// The scheduler service of one replica: the ticker and the schedules API over one connection,
/// counting into one [`Metrics`].
#[derive(Debug, Clone)]
pub struct Service {
    /// The connection both parts use.
    client: async_nats::Client,
    /// The whole configuration: the ticker reads `[scheduler]`, the API `[limits]`.
    config: Config,
    /// Where both parts count (and the dashboard reads, when started).
    metrics: Metrics,
}

impl Service {
    /// A service over `client` with `config`, counting into a fresh [`Metrics`].
    pub fn new(client: async_nats::Client, config: &Config) -> Service {
        Service {
            client,
            config: config.clone(),
            metrics: Metrics::new(),
        }
    }

    /// Counts into `metrics` instead (to serve one `/metrics` for several parts of a process).
    pub fn metrics(mut self, metrics: Metrics) -> Service {
        self.metrics = metrics;
        self
    }

    /// Binds `addr` (`PORT` or `HOST:PORT`) and serves the dashboard and `/metrics` on it until
    /// `shutdown`; returns the base URL (`http://127.0.0.1:4280/`). An address other machines
    /// can reach needs `http.token`.
    pub async fn start_dashboard(
        &self,
        addr: &str,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<String, WebError> {
        let addr = HttpAddr::parse(addr)?;
        let token = self.config.http.token.clone();
        let listener = bind(&addr, token.as_deref()).await?;
        let local = listener.local_addr().map_err(|source| HttpError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let dashboard =
            crate::web::Dashboard::start(self.client.clone(), self.metrics.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = crate::web::serve(listener, dashboard, token.as_deref(), shutdown).await
            {
                tracing::error!(error = %e, "the dashboard stopped");
            }
        });
        Ok(format!("http://{local}/"))
    }

    /// Starts the schedules API: when this returns, its subscriptions exist and the server has
    /// seen them, so a client request sent after it is answered (not "no responders"). What
    /// `polos scheduler` waits for before it says it is up.
    pub async fn start(self) -> Result<Started, SchedulerError> {
        let api =
            crate::api::start_metered(self.client.clone(), &self.config, self.metrics.clone())
                .await?;
        Ok(Started { service: self, api })
    }

    /// [`Service::start`], then [`Started::run`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SchedulerError> {
        self.start().await?.run(shutdown).await
    }
}

/// A [`Service`] whose schedules API answers; the ticker starts with [`Started::run`].
#[derive(Debug)]
pub struct Started {
    /// The connection, configuration and metrics the ticker runs with.
    service: Service,
    /// The registered API service.
    api: ApiServer,
}

impl Started {
    /// Runs the ticker and the schedules API until `shutdown`. If either fails, both stop, and
    /// the first one's error (the ticker's when both fail) is returned.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SchedulerError> {
        let Started {
            service:
                Service {
                    client,
                    config,
                    metrics,
                },
            api,
        } = self;
        // Shared so each part gets its own copy of the same signal; `failed` stops the other
        // part when one returns an error.
        let (failed_tx, failed_rx) = tokio::sync::watch::channel(false);
        let stop = futures::future::select(
            shutdown.boxed(),
            async move {
                let mut failed_rx = failed_rx;
                let _ = failed_rx.wait_for(|f| *f).await;
            }
            .boxed(),
        )
        .map(|_| ())
        .shared();
        let ticker = async {
            let r = Ticker::new(client, &config)
                .clock(Arc::new(SystemClock))
                .metrics(metrics)
                .run(stop.clone())
                .await
                .map_err(SchedulerError::from);
            if r.is_err() {
                let _ = failed_tx.send(true);
            }
            r
        };
        let api = async {
            let r = api.run(stop.clone()).await.map_err(SchedulerError::from);
            if r.is_err() {
                let _ = failed_tx.send(true);
            }
            r
        };
        let (ticker, api) = tokio::join!(ticker, api);
        ticker.and(api)
    }
}
