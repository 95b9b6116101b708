//! Leadership among scheduler replicas: one lease key in KV `polos_leases`, renewed by
//! compare-and-swap.
//!
//! - The leader rewrites the key every `ttl / 3` with `kv.update(key, value, revision)`. A
//!   conflict means someone else holds it: step down at once.
//! - A standby polls the key. When the revision has not changed for a full `ttl` measured on the
//!   standby's *own* monotonic clock from the moment it first saw that revision, it takes over
//!   with `kv.update` on exactly that revision (or `kv.create` when the key is absent or
//!   deleted), so of several standbys only one wins.
//! - The leader stops firing when `ttl` has passed since it *started* its last successful
//!   renewal, which is before any standby can have seen that revision, so without clock-rate
//!   anomalies leaders never overlap. If they do (a paused process), `Nats-Msg-Id` absorbs the
//!   duplicate fires.
//! - A leader that shuts down deletes the key (expecting its revision) so a standby takes over
//!   immediately.
//!
//! No server clock and no per-message TTL is involved: expiry is "no renewal seen for ttl",
//! which tolerates skewed wall clocks between machines.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The key every replica competes for.
pub const LEASE_KEY: &str = "scheduler";

/// The lease value, readable with `nats kv get polos_leases scheduler`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The replica holding the lease.
    pub holder: String,
    /// Seconds without renewal after which a standby takes over.
    pub ttl_secs: u64,
    /// When the holder last renewed (its wall clock; informational).
    #[serde(with = "crate::model::time::rfc3339")]
    pub renewed_at: chrono::DateTime<chrono::Utc>,
}

/// How often a standby looks at the lease.
fn poll_interval(ttl: Duration) -> Duration {
    (ttl / 5).clamp(Duration::from_millis(20), Duration::from_millis(200))
}

fn value(holder: &str, ttl: Duration) -> Bytes {
    let v = LeaseValue {
        holder: holder.to_string(),
        ttl_secs: ttl.as_secs(),
        renewed_at: chrono::Utc::now(),
    };
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

fn holder_of(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<LeaseValue>(bytes)
        .ok()
        .map(|v| v.holder)
}

enum Role {
    Standby {
        /// The revision last seen and when (our monotonic clock) we first saw it.
        seen: Option<(u64, Instant)>,
    },
    Leader {
        /// Our current revision of the lease key.
        revision: u64,
        /// When our last successful renewal was *started*.
        renewed: Instant,
    },
}

/// Competes for the lease until `stop` turns true, publishing whether this replica leads on
/// `leading`. On stop, a leader releases the lease (after the caller stopped firing).
pub(crate) async fn run(
    kv: Store,
    holder: String,
    ttl: Duration,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = ttl.max(Duration::from_millis(200));
    let mut role = Role::Standby { seen: None };
    loop {
        if *stop.borrow() {
            break;
        }
        role = match role {
            Role::Standby { seen } => standby_step(&kv, &holder, ttl, seen).await,
            Role::Leader { revision, renewed } => {
                leader_step(&kv, &holder, ttl, revision, renewed).await
            }
        };
        let is_leader = matches!(role, Role::Leader { .. });
        leading.send_if_modified(|l| {
            let changed = *l != is_leader;
            *l = is_leader;
            changed
        });
        let pause = match role {
            Role::Standby { .. } => poll_interval(ttl),
            // Never sleep past our own deadline: a leader that cannot renew must notice in time.
            Role::Leader { renewed, .. } => (ttl / 3).min(ttl.saturating_sub(renewed.elapsed())),
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
    leading.send_replace(false);
    if let Role::Leader { revision, .. } = role {
        match kv.delete_expect_revision(LEASE_KEY, Some(revision)).await {
            Ok(()) => info!(holder = %holder, "released the scheduler lease"),
            Err(e) => debug!(error = %e, "could not release the lease; it expires by itself"),
        }
    }
}

async fn standby_step(
    kv: &Store,
    holder: &str,
    ttl: Duration,
    seen: Option<(u64, Instant)>,
) -> Role {
    let started = Instant::now();
    let entry = match kv.entry(LEASE_KEY).await {
        Ok(entry) => entry,
        Err(e) => {
            debug!(error = %e, "cannot read the lease");
            return Role::Standby { seen };
        }
    };
    let free = match &entry {
        None => true,
        Some(e) => e.operation != Operation::Put,
    };
    if free {
        return match kv.create(LEASE_KEY, value(holder, ttl)).await {
            Ok(revision) => {
                info!(holder = %holder, "took the scheduler lease (it was free)");
                Role::Leader {
                    revision,
                    renewed: started,
                }
            }
            Err(_) => Role::Standby { seen: None },
        };
    }
    let Some(entry) = entry else {
        return Role::Standby { seen: None };
    };
    // Our own lease (a renewal whose ack we lost): continue leading on its revision.
    if holder_of(&entry.value).as_deref() == Some(holder) {
        return Role::Leader {
            revision: entry.revision,
            renewed: started,
        };
    }
    let seen = match seen {
        Some((rev, at)) if rev == entry.revision => (rev, at),
        _ => (entry.revision, Instant::now()),
    };
    if seen.1.elapsed() < ttl {
        return Role::Standby { seen: Some(seen) };
    }
    match kv.update(LEASE_KEY, value(holder, ttl), seen.0).await {
        Ok(revision) => {
            info!(
                holder = %holder,
                previous = holder_of(&entry.value).unwrap_or_default(),
                "took over the scheduler lease (no renewal for {ttl:?})"
            );
            Role::Leader {
                revision,
                renewed: started,
            }
        }
        Err(_) => Role::Standby { seen: None },
    }
}

async fn leader_step(
    kv: &Store,
    holder: &str,
    ttl: Duration,
    revision: u64,
    renewed: Instant,
) -> Role {
    let started = Instant::now();
    match tokio::time::timeout(ttl / 2, kv.update(LEASE_KEY, value(holder, ttl), revision)).await {
        Ok(Ok(revision)) => Role::Leader {
            revision,
            renewed: started,
        },
        Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
            warn!(holder = %holder, "lost the scheduler lease to another replica; standing by");
            Role::Standby { seen: None }
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_string(),
            };
            if renewed.elapsed() >= ttl {
                warn!(holder = %holder, error = %why, "cannot renew the scheduler lease for {ttl:?}; standing by");
                Role::Standby { seen: None }
            } else {
                debug!(error = %why, "lease renewal failed; retrying");
                Role::Leader { revision, renewed }
            }
        }
    }
}
