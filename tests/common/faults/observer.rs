//! Sees every fire from outside: a core NATS subscription on `polos.runs.>` receives each
//! publish — including those the stream de-duplicates or that fail — and one on `_INBOX.>`
//! receives the stream's PubAck to each (a JetStream publish is a request; its reply subject is
//! on the message). Joined, they say how many distinct stream sequences every `Nats-Msg-Id`
//! was stored under, and which process connection published when.
//!
//! The observer reconnects like any client; while it is disconnected from a killed server it
//! can miss messages, so the verdict also compares the stream's total with the run records.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;

/// A publish of a fire, as it crossed the wire.
#[derive(Debug, Clone)]
pub struct Publish {
    /// When the observer received it.
    pub at: Instant,
    /// Its `Nats-Msg-Id` (`<schedule_id>@<instant>` for scheduled fires).
    pub msg_id: String,
    /// Its `Polos-Trigger`.
    pub trigger: String,
    /// The reply subject its PubAck goes to; the prefix names the publishing connection.
    pub reply: Option<String>,
}

/// A PubAck from `POLOS_RUNS`.
#[derive(Debug, Clone, Copy)]
pub struct PubAck {
    /// The stream sequence the message is stored under (the first copy's, for a duplicate).
    pub seq: u64,
    /// Whether the stream recognised the `Nats-Msg-Id` and stored nothing.
    pub duplicate: bool,
}

#[derive(Default)]
struct Seen {
    publishes: Vec<Publish>,
    acks: HashMap<String, PubAck>,
}

/// The running observer.
pub struct Observer {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Observer {
    /// Connects to `urls` and subscribes; returns once the subscriptions are registered.
    pub async fn start(urls: &[String]) -> Observer {
        let client = async_nats::ConnectOptions::new()
            .name("fault-suite-observer")
            .connect(urls)
            .await
            .expect("observer connects");
        let mut fires = client.subscribe("polos.runs.>").await.expect("subscribe");
        let mut inboxes = client.subscribe("_INBOX.>").await.expect("subscribe");
        client.flush().await.expect("flush subscriptions");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let fires_task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(m) = fires.next().await {
                    let header = |name: &str| {
                        m.headers
                            .as_ref()
                            .and_then(|h| h.get(name))
                            .map(|v| v.as_str().to_string())
                            .unwrap_or_default()
                    };
                    let publish = Publish {
                        at: Instant::now(),
                        msg_id: header("Nats-Msg-Id"),
                        trigger: header("Polos-Trigger"),
                        reply: m.reply.as_ref().map(|r| r.to_string()),
                    };
                    seen.lock().unwrap().publishes.push(publish);
                }
            })
        };
        let acks_task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(m) = inboxes.next().await {
                    // Cheap filter: most inbox traffic is KV and consumer replies.
                    if !m.payload.windows(10).any(|w| w == b"POLOS_RUNS") {
                        continue;
                    }
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                        continue;
                    };
                    if v["stream"] != "POLOS_RUNS" {
                        continue;
                    }
                    let Some(seq) = v["seq"].as_u64() else {
                        continue;
                    };
                    let ack = PubAck {
                        seq,
                        duplicate: v["duplicate"].as_bool().unwrap_or(false),
                    };
                    seen.lock().unwrap().acks.insert(m.subject.to_string(), ack);
                }
                drop(client);
            })
        };
        Observer {
            seen,
            tasks: vec![fires_task, acks_task],
        }
    }

    /// Every publish seen so far, in arrival order.
    pub fn publishes(&self) -> Vec<Publish> {
        self.seen.lock().unwrap().publishes.clone()
    }

    /// `msg_id` → the distinct stream sequences its publishes were acknowledged with: more than
    /// one means the stream stored the fire more than once.
    pub fn stored_sequences(&self) -> HashMap<String, BTreeSet<u64>> {
        let seen = self.seen.lock().unwrap();
        let mut out: HashMap<String, BTreeSet<u64>> = HashMap::new();
        for p in &seen.publishes {
            if let Some(ack) = p.reply.as_ref().and_then(|r| seen.acks.get(r)) {
                out.entry(p.msg_id.clone()).or_default().insert(ack.seq);
            }
        }
        out
    }

    /// Publishes received after `t` whose `Nats-Msg-Id` had already been published before `t`.
    pub fn republished_after(&self, t: Instant) -> Vec<Publish> {
        let seen = self.seen.lock().unwrap();
        let before: BTreeSet<&str> = seen
            .publishes
            .iter()
            .filter(|p| p.at < t)
            .map(|p| p.msg_id.as_str())
            .collect();
        seen.publishes
            .iter()
            .filter(|p| p.at >= t && before.contains(p.msg_id.as_str()))
            .cloned()
            .collect()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
