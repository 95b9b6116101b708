//! [`run`]: one `polos dev` session, from starting the server to the last clean stop.

use std::future::Future;
use std::path::PathBuf;

use super::{demo, watch, DevError, EmbeddedServer};
use crate::client::PolosClient;
use crate::config::{Config, DEFAULT_NATS_URL};
use crate::metrics::{HttpAddr, HttpError, Metrics};
use crate::scheduler::Service;
use crate::web::WebError;
use crate::worker::{Worker, Workflow};

/// How `polos dev` runs.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Data directory; the embedded server keeps its store in `<data_dir>/nats`.
    pub data_dir: PathBuf,
    /// Client port of the embedded server: `None` = 4222, or a free one if taken; `Some(0)` =
    /// any free port.
    pub port: Option<u16>,
    /// Where to serve the dashboard and `/metrics` (`PORT` or `HOST:PORT`); `None` means
    /// `http.addr` when set, else [`DEFAULT_DASHBOARD`] (a free port when that one is taken).
    pub http: Option<String>,
}

/// Where `polos dev` serves its dashboard unless told otherwise.
pub const DEFAULT_DASHBOARD: &str = "127.0.0.1:4280";

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            data_dir: PathBuf::from(super::DEFAULT_DATA_DIR),
            port: None,
            http: None,
        }
    }
}

/// Runs `polos dev` until `shutdown` resolves: starts an embedded server unless
/// `config.nats` names one, applies the streams, runs the scheduler
/// ([`Service`], as `polos scheduler` does) and a worker with `workflows`, creates the demo
/// schedule and prints each run's status changes. Everything stops when `shutdown` resolves or
/// one part fails; the embedded server is stopped last and its data kept.
pub async fn run(
    mut config: Config,
    options: DevOptions,
    workflows: Vec<Workflow>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DevError> {
    let server = if config.nats.is_configured() {
        None
    } else {
        let server = EmbeddedServer::start(&options.data_dir, options.port).await?;
        config.nats.url = server.url().to_string();
        Some(server)
    };
    let result = serve(&config, &options, server.as_ref(), workflows, shutdown).await;
    if let Some(server) = server {
        server.stop();
        println!(
            "nats-server stopped; data kept in {}",
            options.data_dir.display()
        );
    }
    result
}

async fn serve(
    config: &Config,
    options: &DevOptions,
    server: Option<&EmbeddedServer>,
    workflows: Vec<Workflow>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DevError> {
    let client = crate::nats::connect(&config.nats).await?;
    let js = async_nats::jetstream::new(client.clone());
    crate::nats::streams::apply(&js, &config.storage)
        .await
        .map_err(DevError::Streams)?;
    let ids: Vec<String> = workflows.iter().map(|w| w.id().to_string()).collect();

    // One stop signal for every part: the caller's shutdown, or any part failing.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    // One registry for the scheduler, the API and the worker: one /metrics for all of dev.
    let metrics = Metrics::new();
    let service = Service::new(client.clone(), config).metrics(metrics.clone());
    let dashboard = dashboard(&service, config, options, &stopped).await?;
    print!("{}", banner(config, server, &ids, &dashboard));
    let stop_all = |failed: bool| {
        if failed {
            let _ = stop_tx.send(true);
        }
    };
    let signal = {
        let stopped = stopped();
        async {
            tokio::select! {
                _ = shutdown => {
                    println!("stopping…");
                    let _ = stop_tx.send(true);
                }
                _ = stopped => {}
            }
        }
    };
    let scheduler = async {
        let r = service.run(stopped()).await.map_err(DevError::Scheduler);
        stop_all(r.is_err());
        r
    };
    let worker = async {
        let worker = workflows.into_iter().fold(
            Worker::from_config(client.clone(), config).metrics(metrics.clone()),
            Worker::workflow,
        );
        let r = worker.run(stopped()).await.map_err(DevError::from);
        stop_all(r.is_err());
        r
    };
    let runs = async {
        let r = tokio::select! {
            r = watch::print_runs(&js) => r,
            _ = stopped() => Ok(()),
        };
        stop_all(r.is_err());
        r
    };
    let demo = async {
        let api = PolosClient::from_nats(client.clone());
        tokio::select! {
            r = demo::create(&api) => match r {
                Ok(id) => println!(
                    "demo: schedule {id} ({} / {}, cron \"{}\" UTC) fires at the start of every minute; remove it with `polos{} schedules delete {} --key {}`\n",
                    demo::DEMO_WORKFLOW,
                    demo::DEMO_KEY,
                    demo::DEMO_CRON,
                    url_flag(config),
                    demo::DEMO_WORKFLOW,
                    demo::DEMO_KEY,
                ),
                Err(e) => eprintln!("demo: could not create the demo schedule: {e}"),
            },
            _ = stopped() => {}
        }
    };
    let (_, scheduler, worker, runs, _) = tokio::join!(signal, scheduler, worker, runs, demo);
    scheduler.and(worker).and(runs)
}

/// Starts the dashboard on the chosen address and returns its URL. The default address falls
/// back to a free port when taken (another `polos dev`, say); an address the user chose must
/// be free.
async fn dashboard<F: Future<Output = ()> + Send + 'static>(
    service: &Service,
    config: &Config,
    options: &DevOptions,
    stopped: impl Fn() -> F,
) -> Result<String, DevError> {
    let chosen = options
        .http
        .clone()
        .or_else(|| Some(config.http.addr.clone()).filter(|a| !a.trim().is_empty()));
    let addr = chosen
        .clone()
        .unwrap_or_else(|| DEFAULT_DASHBOARD.to_string());
    match service.start_dashboard(&addr, stopped()).await {
        Ok(url) => Ok(url),
        Err(WebError::Http(HttpError::Bind { .. })) if chosen.is_none() => {
            let any = HttpAddr::parse(DEFAULT_DASHBOARD)
                .map(|a| a.with_port(0).to_string())
                .unwrap_or_else(|_| "0".into());
            Ok(service.start_dashboard(&any, stopped()).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The configured server URLs as they may be printed: passwords and tokens masked.
fn shown_urls(config: &Config) -> String {
    crate::nats::redact_all(&config.nats.server_urls())
}

/// ` --nats-url <url>` when other commands would not find the server by default.
fn url_flag(config: &Config) -> String {
    // Credentials in a configured URL are shown masked, never printed back.
    let urls = shown_urls(config);
    if urls == DEFAULT_NATS_URL {
        String::new()
    } else {
        format!(" --nats-url {urls}")
    }
}

/// What `polos dev` prints at start: where things are and what to try next.
fn banner(
    config: &Config,
    server: Option<&EmbeddedServer>,
    workflows: &[String],
    dashboard: &str,
) -> String {
    let urls = shown_urls(config);
    let flag = url_flag(config);
    let mut out = String::from("polos dev\n");
    match server {
        Some(s) => {
            out += &format!("  NATS       {urls}  (embedded nats-server, JetStream)\n");
            out += &format!("  data       {}\n", s.store_dir().display());
        }
        None => {
            out += &format!("  NATS       {urls}  (configured server; none started)\n");
            out += "  data       in that server's JetStream\n";
        }
    }
    out += "  scheduler  ticker + schedules API\n";
    out += &format!("  dashboard  {dashboard}\n");
    out += &format!("  metrics    {dashboard}metrics\n");
    out += &format!("  workflows  {}\n", workflows.join(", "));
    out += "\nTry, in another terminal:\n";
    out += &format!("  polos{flag} schedules list\n");
    out += &format!("  polos{flag} runs list\n");
    out += &format!("  polos{flag} schedules trigger daily-report\n");
    out += "  polos cron next \"0 9 * * *\" --timezone America/New_York\n";
    out += "\nRuns (UTC; one line per status change; Ctrl-C stops everything):\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_masks_credentials_of_a_configured_url() {
        let mut config = Config::default();
        config.nats.url = "nats://polos:hunter2@nats.internal:4222".into();
        let text = banner(
            &config,
            None,
            &["daily-report".to_string()],
            "http://127.0.0.1:4280",
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("nats://polos:***@nats.internal:4222"),
            "{text}"
        );
    }
}
