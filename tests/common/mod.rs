//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream;
use polos::config::{Config, StorageConfig};
use polos::nats::server::{NatsCluster, NatsServer};

pub mod chromium;
pub mod faults;
pub mod http;
pub mod python;
pub mod secure;
pub mod webdriver;

/// How long any single wait for an event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh server with every polos bucket and stream applied.
pub struct TestEnv {
    /// The server; dropping the env kills it.
    pub server: NatsServer,
    /// A connected client.
    pub client: async_nats::Client,
    /// JetStream on that client.
    pub js: jetstream::Context,
}

impl TestEnv {
    /// Starts a server, connects and applies `streams/`.
    pub async fn start() -> TestEnv {
        let server = NatsServer::start().expect("start nats-server");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = jetstream::new(client.clone());
        polos::nats::streams::apply(&js, &StorageConfig::default())
            .await
            .expect("apply streams");
        TestEnv { server, client, js }
    }

    /// A config pointing at this server, everything else default.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.nats.url = self.server.url().to_string();
        config
    }

    /// A second, independent connection (a separate client process would look the same).
    pub async fn connect(&self) -> async_nats::Client {
        async_nats::connect(self.server.url())
            .await
            .expect("connect")
    }
}

/// A 3-node JetStream cluster, ready for R3 streams.
pub struct TestCluster {
    /// The servers.
    pub cluster: NatsCluster,
    /// A client connected to all members.
    pub client: async_nats::Client,
    /// JetStream on that client.
    pub js: jetstream::Context,
}

impl TestCluster {
    /// Starts 3 servers and waits (bounded) until JetStream answers and R3 streams apply.
    pub async fn start() -> TestCluster {
        let cluster = NatsCluster::start(3).expect("start cluster");
        let client = async_nats::connect(cluster.urls()).await.expect("connect");
        let js = jetstream::new(client.clone());
        let storage = StorageConfig {
            replicas: 3,
            ..StorageConfig::default()
        };
        eventually("JetStream cluster ready", || {
            let js = js.clone();
            let storage = storage.clone();
            async move { polos::nats::streams::apply(&js, &storage).await.is_ok() }
        })
        .await;
        TestCluster {
            cluster,
            client,
            js,
        }
    }
}

/// Polls `check` every 50 ms until it returns true; panics after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {WAIT:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits `fut` for at most [`WAIT`], panicking with `what` on timeout.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for: {what}"))
}

/// The current info (config and state) of stream `name`.
pub async fn stream_info(js: &jetstream::Context, name: &str) -> jetstream::stream::Info {
    js.get_stream(name)
        .await
        .expect("get stream")
        .info()
        .await
        .expect("stream info")
        .clone()
}

/// Runs the real `polos` binary against `url` (as a user would, quietly logged), bounded by
/// [`WAIT`].
pub async fn polos_cli(url: &str, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polos"));
    command
        .arg("--nats-url")
        .arg(url)
        .args(args)
        .env_remove("POLOS_CONFIG")
        .env("POLOS_LOG__LEVEL", "warn")
        .kill_on_drop(true);
    within("polos CLI", command.output()).await.unwrap()
}
