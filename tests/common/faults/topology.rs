//! The NATS side of a scenario: one nats-server or a 3-node JetStream cluster on loopback, each
//! server with its own store, so it can be killed, restarted or stopped cleanly and come back
//! with its data on the same port.

use std::time::Duration;

use async_nats::jetstream;
use polos::config::StorageConfig;
use polos::nats::server::{NatsCluster, NatsServer};

use super::procs::tail_lines;

/// Single server or cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One nats-server; buckets and stream R1.
    Single,
    /// Three clustered servers; buckets and stream R3 (`POLOS_STORAGE__REPLICAS=3`).
    Cluster,
}

/// The running servers.
pub struct Nats {
    /// The servers, `s1`..`s3` in a cluster.
    pub servers: Vec<NatsServer>,
    /// Replicas of every bucket and stream.
    pub replicas: usize,
}

impl Nats {
    /// Starts the servers (blocking work off the runtime's threads).
    pub async fn start(topology: Topology) -> Nats {
        tokio::task::spawn_blocking(move || match topology {
            Topology::Single => Nats {
                servers: vec![NatsServer::start().expect("start nats-server")],
                replicas: 1,
            },
            Topology::Cluster => Nats {
                servers: NatsCluster::start(3)
                    .expect("start a 3-node cluster")
                    .servers,
                replicas: 3,
            },
        })
        .await
        .expect("starting nats-server panicked")
    }

    /// Every server's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url().to_string()).collect()
    }

    /// The storage settings of this topology.
    pub fn storage(&self) -> StorageConfig {
        StorageConfig {
            replicas: self.replicas,
            ..StorageConfig::default()
        }
    }

    /// Applies `streams/` with this topology's replicas, retrying (bounded) while a new cluster
    /// elects its meta leader.
    pub async fn apply_streams(&self, js: &jetstream::Context) {
        let storage = self.storage();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match polos::nats::streams::apply(js, &storage).await {
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    panic!("streams apply did not succeed within 60 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// The index of the server named `name` (`s2` → 1).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name() == Some(name))
    }

    /// kill -9 server `i`, keeping its store.
    pub fn kill(&mut self, i: usize) {
        let server = &mut self.servers[i];
        tokio::task::block_in_place(|| server.kill());
    }

    /// Starts server `i` again on its port and store.
    pub fn restart(&mut self, i: usize) {
        let server = &mut self.servers[i];
        tokio::task::block_in_place(|| server.restart())
            .unwrap_or_else(|e| panic!("restart nats-server {i}: {e}"));
    }

    /// SIGTERM server `i`, wait for it to exit, start it again.
    pub fn clean_restart(&mut self, i: usize) {
        let server = &mut self.servers[i];
        tokio::task::block_in_place(|| server.clean_restart(Duration::from_secs(15)))
            .unwrap_or_else(|e| panic!("clean restart of nats-server {i}: {e}"));
    }

    /// The name of the server leading `stream` (`cluster.leader` of its info), if one does.
    pub async fn stream_leader(js: &jetstream::Context, stream: &str) -> Option<String> {
        let mut stream = js.get_stream(stream).await.ok()?;
        let info = stream.info().await.ok()?;
        info.cluster.as_ref().and_then(|c| c.leader.clone())
    }

    /// The last lines of each server's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, server) in self.servers.iter().enumerate() {
            let name = server
                .name()
                .map_or_else(|| format!("#{i}"), str::to_string);
            out.push_str(&format!(
                "--- nats-server {name} ({}) ---\n{}\n",
                server.url(),
                tail_lines(&server.store_dir().join("nats-server.log"), lines)
            ));
        }
        out
    }
}
