//! What every example shares: configuration, the connection, and (until the Rust schedules
//! client is merged) the seed's `schedules.create`.
#![allow(dead_code)] // each example uses a different part

use polos::config::Config;
use serde_json::{json, Value};

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

/// The seed's `schedules.create(client, workflow, cron, timezone, key)`: creates the schedule,
/// or updates it when one exists for the same workflow and key; returns its schedule id.
///
/// MERGE NOTE: becomes `polos::schedules::create(&client, workflow, cron, timezone, key)` once
/// the Rust client (branch `schedules`) is merged. Until then it sends the contract's request to
/// `polos.schedules.upsert` itself, which any polos scheduler (`polos dev`) answers.
pub async fn create_schedule(
    client: &async_nats::Client,
    workflow: &str,
    cron: &str,
    timezone: &str,
    key: &str,
) -> anyhow::Result<String> {
    let request = json!({"workflow": workflow, "cron": cron, "timezone": timezone, "key": key});
    let reply = client
        .request("polos.schedules.upsert", request.to_string().into())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the schedules API did not answer ({e}); is `polos dev` or `polos scheduler` running?"
            )
        })?;
    let reply: Value = serde_json::from_slice(&reply.payload)?;
    match reply["schedule_id"].as_str() {
        Some(id) => Ok(id.to_string()),
        None => anyhow::bail!("the schedules API refused: {}", reply["error"]),
    }
}
