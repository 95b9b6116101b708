//! `polos scheduler`: the long-running service — the ticker (and, beside it, the schedules API).

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use futures::FutureExt;

use super::{fail, Cli, EXIT_INVALID, EXIT_UNAVAILABLE};
use crate::config::Config;
use crate::nats::streams::apply;
use crate::ticker::{self, SystemClock};

pub(super) async fn run(cli: &Cli) -> ExitCode {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_INVALID, e),
    };
    let client = match crate::nats::connect(&config.nats).await {
        Ok(c) => c,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    let js = async_nats::jetstream::new(client.clone());
    if let Err(e) = apply(&js, &config.storage).await {
        return fail(EXIT_UNAVAILABLE, e);
    }
    match serve(client, &config, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_UNAVAILABLE, e),
    }
}

/// Runs every service of `polos scheduler` until `shutdown`. Today: the ticker. The schedules
/// API joins here: `let api = crate::api::serve(client.clone(), config, shutdown.clone());`
/// and `tokio::try_join!` it with the ticker.
pub async fn serve(
    client: async_nats::Client,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // Shared so each service gets its own copy of the same signal.
    let shutdown = shutdown.boxed().shared();
    let ticker = ticker::run(client, config, Arc::new(SystemClock), shutdown.clone());
    ticker.await.map_err(|e| e.to_string())
}

/// Ctrl-C, or SIGTERM on Unix (how process supervisors stop services).
async fn stop_signal() {
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
