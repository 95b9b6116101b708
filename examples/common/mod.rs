//! What every example shares: configuration and the connection.
#![allow(dead_code)] // not every example uses every part

use polos::config::Config;

/// Loads `polos.toml` / `POLOS_*` like any polos program; `NATS_URL` overrides the server.
pub async fn connect() -> anyhow::Result<(Config, async_nats::Client)> {
    let _ = tracing_subscriber::fmt().with_env_filter("info").try_init();
    let mut config = Config::from_env()?;
    if let Ok(url) = std::env::var("NATS_URL") {
        config.nats.url = url;
    }
    let client = polos::nats::connect(&config.nats).await?;
    Ok((config, client))
}

/// Resolves on Ctrl-C: the worker's shutdown signal.
pub async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}
