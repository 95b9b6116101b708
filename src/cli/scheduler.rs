//! `polos scheduler`: applies the streams, then runs [`crate::scheduler::Service`] (the ticker,
//! the schedules API and, when asked for, the dashboard with `/metrics`) until a signal.

use std::process::ExitCode;

use clap::Args;
use futures::FutureExt;

use super::{fail, Cli, EXIT_INVALID, EXIT_UNAVAILABLE};
use crate::metrics::HttpError;
use crate::nats::streams::apply;
use crate::scheduler::Service;
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
    let service = Service::new(client, &config);
    let stop = stop_signal().shared();
    let addr = args
        .http
        .clone()
        .or_else(|| Some(config.http.addr.clone()).filter(|a| !a.trim().is_empty()));
    let url = match addr {
        Some(addr) => match service.start_dashboard(&addr, stop.clone()).await {
            Ok(url) => Some(url),
            Err(WebError::Http(
                e @ (HttpError::BadAddr { .. } | HttpError::TokenRequired { .. }),
            )) => return fail(EXIT_INVALID, e),
            Err(e) => return fail(EXIT_UNAVAILABLE, e),
        },
        None => None,
    };
    // The line that says where the dashboard is also says the scheduler is up: it comes once
    // the schedules API answers, so whoever waits for it can send requests at once.
    let started = match service.start().await {
        Ok(started) => started,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    if let Some(url) = url {
        println!("polos scheduler: dashboard {url}  metrics {url}metrics");
    }
    match started.run(stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_UNAVAILABLE, e),
    }
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
