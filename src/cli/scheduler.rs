//! `polos scheduler`: the long-running service — the ticker, the schedules API and, when asked
//! for, the dashboard with `/metrics`.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use futures::FutureExt;

use super::{fail, Cli, EXIT_INVALID, EXIT_UNAVAILABLE};
use crate::config::Config;
use crate::metrics::{bind, HttpAddr, HttpError, Metrics};
use crate::nats::streams::apply;
use crate::ticker::{SystemClock, Ticker};
use crate::web::WebError;

/// Arguments of `polos scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Serve the dashboard and /metrics on ADDR: PORT (on 127.0.0.1) or HOST:PORT. An address
    /// other machines can reach needs http.token. Overrides http.addr.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
}

pub(super) async fn run(cli: &Cli, args: &SchedulerArgs) -> ExitCode {
    let (config, client) = match super::connect(cli).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let js = async_nats::jetstream::new(client.clone());
    match crate::nats::Denials::of(&client)
        .guard_any(apply(&js, &config.storage))
        .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return fail(EXIT_UNAVAILABLE, e),
        // The scheduler role may only look at the definitions; creating or changing them is
        // the admin's `polos streams apply`.
        Err(denied) => {
            return fail(
                EXIT_UNAVAILABLE,
                format!("{denied} (check the scheduler's NATS permissions; with least privilege, run `polos streams apply` as the admin user first so the scheduler finds every stream as defined)"),
            )
        }
    }
    let metrics = Metrics::new();
    let stop = stop_signal().shared();
    let addr = args
        .http
        .clone()
        .or_else(|| Some(config.http.addr.clone()).filter(|a| !a.trim().is_empty()));
    if let Some(addr) = addr {
        let url = match start_dashboard(&client, &config, &addr, &metrics, stop.clone()).await {
            Ok(url) => url,
            Err(WebError::Http(
                e @ (HttpError::BadAddr { .. } | HttpError::TokenRequired { .. }),
            )) => return fail(EXIT_INVALID, e),
            Err(e) => return fail(EXIT_UNAVAILABLE, e),
        };
        println!("polos scheduler: dashboard {url}  metrics {url}metrics");
    }
    match serve(client, &config, metrics, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_UNAVAILABLE, e),
    }
}

/// Binds `addr` and serves the dashboard and `/metrics` on it until `shutdown`; returns the
/// base URL (`http://127.0.0.1:4280/`).
pub(crate) async fn start_dashboard(
    client: &async_nats::Client,
    config: &Config,
    addr: &str,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<String, WebError> {
    let addr = HttpAddr::parse(addr)?;
    let token = config.http.token.clone();
    let listener = bind(&addr, token.as_deref()).await?;
    let local = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let dashboard = crate::web::Dashboard::start(client.clone(), metrics.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = crate::web::serve(listener, dashboard, token.as_deref(), shutdown).await {
            tracing::error!(error = %e, "the dashboard stopped");
        }
    });
    Ok(format!("http://{local}/"))
}

/// Runs every service of `polos scheduler` until `shutdown`: the ticker (fires while this
/// replica holds the lease) and the schedules API (answers on every replica, queue group
/// `polos`), both counting into `metrics`. If either fails, both stop.
pub async fn serve(
    client: async_nats::Client,
    config: &Config,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // Shared so each service gets its own copy of the same signal; `failed` stops the other
    // service when one returns an error.
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
        let r = Ticker::new(client.clone(), config)
            .clock(Arc::new(SystemClock))
            .metrics(metrics.clone())
            .run(stop.clone())
            .await
            .map_err(|e| e.to_string());
        if r.is_err() {
            let _ = failed_tx.send(true);
        }
        r
    };
    let api = async {
        let r = async {
            crate::api::start_metered(client.clone(), config, metrics.clone())
                .await?
                .run(stop.clone())
                .await
        }
        .await
        .map_err(|e| e.to_string());
        if r.is_err() {
            let _ = failed_tx.send(true);
        }
        r
    };
    let (ticker, api) = tokio::join!(ticker, api);
    ticker.and(api)
}

/// Ctrl-C, or SIGTERM on Unix (how process supervisors stop services). The handlers are
/// installed when this is called, not when the future is first polled: a signal that arrives
/// while the services are still starting stops them cleanly instead of killing the process
/// (with a lease held and state unwritten).
pub(super) fn stop_signal() -> futures::future::BoxFuture<'static, ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut interrupt)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            return async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            .boxed();
        }
    }
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
    .boxed()
}
