//! `polos scheduler`: the long-running service — the ticker (and, beside it, the schedules API).

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use futures::FutureExt;

use super::{fail, Cli, EXIT_UNAVAILABLE};
use crate::config::Config;
use crate::nats::streams::apply;
use crate::ticker::{self, SystemClock};

pub(super) async fn run(cli: &Cli) -> ExitCode {
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
    match serve(client, &config, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_UNAVAILABLE, e),
    }
}

/// Runs every service of `polos scheduler` until `shutdown`: the ticker (fires while this
/// replica holds the lease) and the schedules API (answers on every replica, queue group
/// `polos`). If either fails, both stop.
pub async fn serve(
    client: async_nats::Client,
    config: &Config,
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
        let r = ticker::run(client.clone(), config, Arc::new(SystemClock), stop.clone())
            .await
            .map_err(|e| e.to_string());
        if r.is_err() {
            let _ = failed_tx.send(true);
        }
        r
    };
    let api = async {
        let r = crate::api::serve(client.clone(), config, stop.clone())
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

/// Ctrl-C, or SIGTERM on Unix (how process supervisors stop services).
pub(super) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
