//! [`EmbeddedServer`]: the `nats-server -js` child `polos dev` runs when no NATS URL is
//! configured.

use std::path::{Path, PathBuf};

use super::{DataDirLock, DevError};
use crate::nats::server::{NatsServer, ServerOptions};

/// Where `polos dev` keeps its data, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".polos";
/// The client port the embedded server prefers: the NATS default, so other tools need no flag.
pub const DEFAULT_PORT: u16 = 4222;

/// A JetStream server on loopback with its store in `<data dir>/nats`; killed when dropped, its
/// data kept for the next start. Holds the data directory's [`DataDirLock`] while it runs.
#[derive(Debug)]
pub struct EmbeddedServer {
    /// The child process.
    server: NatsServer,
    /// `<data dir>/nats`, absolute.
    store_dir: PathBuf,
    /// Held while the server runs; dropped after it (field order).
    _lock: DataDirLock,
}

impl EmbeddedServer {
    /// Starts the server (finding or installing `nats-server` like the tests do) and waits
    /// until it accepts clients. Installing and waiting block, so they run on tokio's blocking
    /// pool, not on the async worker that awaits this.
    ///
    /// `port`: `None` means [`DEFAULT_PORT`] if it is free, else any free port; `Some(0)` any
    /// free port; `Some(p)` exactly `p`.
    pub async fn start(data_dir: &Path, port: Option<u16>) -> Result<EmbeddedServer, DevError> {
        let dir = data_dir.to_path_buf();
        match tokio::task::spawn_blocking(move || EmbeddedServer::start_blocking(&dir, port)).await
        {
            Ok(started) => started,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(DevError::Interrupted),
        }
    }

    fn start_blocking(data_dir: &Path, port: Option<u16>) -> Result<EmbeddedServer, DevError> {
        let lock = DataDirLock::acquire(data_dir)?;
        let store_dir =
            std::path::absolute(data_dir.join("nats")).unwrap_or_else(|_| data_dir.join("nats"));
        let port = match port {
            None if port_is_free(DEFAULT_PORT) => Some(DEFAULT_PORT),
            None | Some(0) => None,
            Some(p) => Some(p),
        };
        let server = NatsServer::start_with(ServerOptions {
            store_dir: Some(store_dir.clone()),
            port,
            ..ServerOptions::default()
        })
        .map_err(|source| DevError::Server {
            data_dir: data_dir.display().to_string(),
            source,
        })?;
        Ok(EmbeddedServer {
            server,
            store_dir,
            _lock: lock,
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The server's store directory (absolute).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Stops the server (its data stays on disk).
    pub fn stop(mut self) {
        self.server.kill();
    }
}

/// Whether nothing listens on loopback `port` (checked by binding it for a moment).
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}
