//! Connecting to NATS with the configured servers and credentials.

use std::time::Duration;

use thiserror::Error;

use crate::config::NatsConfig;

/// The connection could not be made.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The creds file could not be read.
    #[error("cannot read NATS creds file {path}: {source}")]
    Creds {
        /// The configured path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No server answered.
    #[error("cannot connect to NATS at {urls}: {source}. Is a server running there? Start one with `polos dev`, or set nats.url / POLOS_NATS__URL to your server")]
    Unreachable {
        /// The URLs that were tried.
        urls: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
}

/// Connects with every auth option of `[nats]` (user/password, token, nkey, creds, TLS).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let config = polos::config::Config::from_env()?;
/// let client = polos::nats::connect(&config.nats).await?;
/// # Ok(()) }
/// ```
pub async fn connect(config: &NatsConfig) -> Result<async_nats::Client, ConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(&config.name)
        .connection_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)));
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(seed) = &config.nkey_seed {
        options = options.nkey(seed.clone());
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| ConnectError::Creds {
                path: path.clone(),
                source,
            })?;
    }
    if config.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let urls = config.server_urls();
    let joined = urls.join(",");
    options
        .connect(urls)
        .await
        .map_err(|source| ConnectError::Unreachable {
            urls: joined,
            source,
        })
}
