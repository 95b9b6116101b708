//! [`connect_from_env`]: how an example or a small worker program gets its configuration and
//! connection in one line.

use super::ClientError;
use crate::config::Config;

/// Loads the configuration like every polos program (defaults < `polos.toml` < `POLOS_*`
/// variables), lets `NATS_URL` override the server, and connects.
///
/// Returns the configuration too, so a worker can take its `[worker]` settings from it.
///
/// ```no_run
/// # async fn f() -> Result<(), polos::client::ClientError> {
/// let (config, nats) = polos::client::connect_from_env().await?;
/// # Ok(()) }
/// ```
pub async fn connect_from_env() -> Result<(Config, async_nats::Client), ClientError> {
    let mut config = Config::from_env()?;
    // `NATS_URL` is the variable the NATS tools use; honouring it keeps `NATS_URL=… cargo run
    // --example …` working without a polos-specific name.
    if let Ok(url) = std::env::var("NATS_URL") {
        if !url.trim().is_empty() {
            config.nats.url = url;
        }
    }
    let client = crate::nats::connect(&config.nats).await?;
    Ok((config, client))
}
