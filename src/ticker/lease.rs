//! Leadership among scheduler replicas: one lease key in KV `polos_leases`, renewed by
//! compare-and-swap.
//!
//! | role | step | outcome |
//! |---|---|---|
//! | waiting | the schedule table is not loaded yet | do not compete (a rolling deploy never hands the lease to a replica that would first spend seconds loading) |
//! | standby | key absent or deleted | `create` (fails if someone else created it first) → leader |
//! | standby | key names another holder, same revision for its TTL | `update` on exactly that revision → leader |
//! | standby | key names us (a renewal whose ack we lost, then stepped down) | `update` on the revision read → leader |
//! | leader | renewal `update(revision)` succeeds | deadline = start of this renewal + TTL |
//! | leader | `WrongLastRevision`, key still names us | our earlier renewal landed without its ack: adopt its revision, keep leading |
//! | leader | `WrongLastRevision`, key names another | lost: standby |
//! | leader | renewal fails or times out | keep trying; past the deadline the firing code is fenced |
//! | leader | stop | delete the key expecting our revision, so a standby takes over at once |
//!
//! The TTL a standby waits is the one written in the lease (`ttl_ms`, else `ttl_secs`), never
//! less than its own, so replicas configured differently never overlap. Expiry is "no renewal
//! seen for TTL on the standby's own clock": no server clock, no per-message TTL, skewed wall
//! clocks between machines do not matter. The leader's deadline is measured from the *start* of
//! its last successful renewal, before any standby can have seen that revision (see `fence`).
//! A renewal's timeout is capped at the time left before the deadline, so a hung request never
//! delays the leader noticing that it is fenced.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::fence::{BootInstant, Leadership};
use crate::model::names::LEASE_KEY;

/// The lease value, readable with `nats kv get polos_leases scheduler`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseValue {
    /// The replica holding the lease.
    pub holder: String,
    /// Seconds without renewal after which a standby takes over.
    pub ttl_secs: u64,
    /// The same TTL in milliseconds (exact for sub-second TTLs); standbys prefer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// When the holder last renewed (its wall clock; informational).
    #[serde(with = "crate::model::time::rfc3339")]
    pub renewed_at: chrono::DateTime<chrono::Utc>,
}

impl LeaseValue {
    /// The TTL the holder runs with.
    fn ttl(&self) -> Duration {
        match self.ttl_ms {
            Some(ms) => Duration::from_millis(ms),
            None => Duration::from_secs(self.ttl_secs),
        }
    }
}

/// The shortest TTL the lease runs with, whatever is configured.
pub(crate) const MIN_TTL: Duration = Duration::from_millis(200);

/// How often a standby looks at the lease.
fn poll_interval(ttl: Duration) -> Duration {
    (ttl / 5).clamp(Duration::from_millis(20), Duration::from_millis(200))
}

fn value(holder: &str, ttl: Duration) -> Bytes {
    let v = LeaseValue {
        holder: holder.to_string(),
        ttl_secs: ttl.as_secs(),
        ttl_ms: Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        renewed_at: chrono::Utc::now(),
    };
    // A struct of strings and integers always serializes.
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

fn parse(bytes: &[u8]) -> Option<LeaseValue> {
    serde_json::from_slice::<LeaseValue>(bytes).ok()
}

enum Role {
    Standby {
        /// The revision last seen and when (our monotonic clock) we first saw it.
        seen: Option<(u64, Instant)>,
    },
    Leader {
        /// Our current revision of the lease key.
        revision: u64,
        /// Publishing is safe strictly before this (start of the last good renewal + TTL).
        valid_until: BootInstant,
    },
}

/// Everything the lease task needs.
pub(crate) struct LeaseTask {
    /// `polos_leases`.
    pub kv: Store,
    /// This replica's unique holder name.
    pub holder: String,
    /// Our TTL (at least [`MIN_TTL`]).
    pub ttl: Duration,
    /// Becomes true once the schedule table is loaded: only then do we compete.
    pub ready: watch::Receiver<bool>,
    /// Where leadership (term and deadline) is published.
    pub leadership: watch::Sender<Leadership>,
    /// Becomes true when the ticker stops (after it stopped firing).
    pub stop: watch::Receiver<bool>,
}

impl LeaseTask {
    /// Competes for the lease until `stop` turns true. On stop, a leader releases the lease.
    pub async fn run(mut self) {
        self.ttl = self.ttl.max(MIN_TTL);
        let ready = async {
            let _ = self.ready.wait_for(|r| *r).await;
        };
        tokio::select! {
            _ = ready => {}
            _ = self.stop.wait_for(|s| *s) => return,
        }
        let mut role = Role::Standby { seen: None };
        let mut term = 0u64;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let was_leader = matches!(role, Role::Leader { .. });
            role = match role {
                Role::Standby { seen } => self.standby_step(seen).await,
                Role::Leader {
                    revision,
                    valid_until,
                } => self.leader_step(revision, valid_until).await,
            };
            match &role {
                Role::Leader { valid_until, .. } => {
                    if !was_leader {
                        term += 1;
                    }
                    self.leadership.send_replace(Leadership {
                        term,
                        valid_until: Some(*valid_until),
                    });
                }
                Role::Standby { .. } => {
                    if was_leader {
                        self.leadership.send_replace(Leadership {
                            term,
                            valid_until: None,
                        });
                    }
                }
            }
            let pause = match &role {
                Role::Standby { .. } => poll_interval(self.ttl),
                // Renew every third of the TTL; never sleep past our own deadline.
                Role::Leader { valid_until, .. } => (self.ttl / 3).min(valid_until.remaining()),
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.changed() => {}
            }
        }
        self.leadership.send_modify(|l| l.valid_until = None);
        if let Role::Leader { revision, .. } = role {
            match self
                .kv
                .delete_expect_revision(LEASE_KEY, Some(revision))
                .await
            {
                Ok(()) => info!(holder = %self.holder, "released the scheduler lease"),
                Err(e) => debug!(error = %e, "could not release the lease; it expires by itself"),
            }
        }
    }

    async fn standby_step(&self, seen: Option<(u64, Instant)>) -> Role {
        let started = BootInstant::now();
        let read = tokio::time::timeout(self.ttl, self.kv.entry(LEASE_KEY)).await;
        let entry = match read {
            Ok(Ok(entry)) => entry,
            Ok(Err(e)) => {
                debug!(error = %e, "cannot read the lease");
                return Role::Standby { seen };
            }
            Err(_) => {
                debug!("reading the lease timed out");
                return Role::Standby { seen };
            }
        };
        let live = entry.filter(|e| e.operation == Operation::Put);
        let Some(entry) = live else {
            // Absent or deleted: `create` succeeds for exactly one replica.
            return match self
                .kv
                .create(LEASE_KEY, value(&self.holder, self.ttl))
                .await
            {
                Ok(revision) => {
                    info!(holder = %self.holder, "took the scheduler lease (it was free)");
                    Role::Leader {
                        revision,
                        valid_until: started.add(self.ttl),
                    }
                }
                Err(e) => {
                    debug!(error = %e, "another replica took the free lease first");
                    Role::Standby { seen: None }
                }
            };
        };
        let current = parse(&entry.value);
        let ours = current.as_ref().is_some_and(|v| v.holder == self.holder);
        let seen = match seen {
            Some((rev, at)) if rev == entry.revision => (rev, at),
            _ => (entry.revision, Instant::now()),
        };
        // Wait the holder's TTL (never less than ours); an unreadable value gets ours.
        let wait = current.as_ref().map_or(self.ttl, |v| v.ttl().max(self.ttl));
        if !ours && seen.1.elapsed() < wait {
            return Role::Standby { seen: Some(seen) };
        }
        match self
            .kv
            .update(LEASE_KEY, value(&self.holder, self.ttl), seen.0)
            .await
        {
            Ok(revision) => {
                if ours {
                    info!(holder = %self.holder, "reclaimed the scheduler lease still naming this replica");
                } else {
                    info!(
                        holder = %self.holder,
                        previous = current.map(|v| v.holder).unwrap_or_default(),
                        "took over the scheduler lease (no renewal for {wait:?})"
                    );
                }
                Role::Leader {
                    revision,
                    valid_until: started.add(self.ttl),
                }
            }
            Err(e) => {
                debug!(error = %e, "the lease changed while taking it over");
                Role::Standby { seen: None }
            }
        }
    }

    async fn leader_step(&self, revision: u64, valid_until: BootInstant) -> Role {
        let started = BootInstant::now();
        // Capped at the time left, so a hung renewal cannot hide that we are past the deadline;
        // once past it, each try still gets a fair chance to land (a success proves nobody took
        // over, since a takeover writes a new revision).
        let left = valid_until.remaining();
        let limit = if left.is_zero() {
            self.ttl / 2
        } else {
            left.min(self.ttl / 2)
        };
        let renewal = self
            .kv
            .update(LEASE_KEY, value(&self.holder, self.ttl), revision);
        match tokio::time::timeout(limit, renewal).await {
            Ok(Ok(revision)) => Role::Leader {
                revision,
                valid_until: started.add(self.ttl),
            },
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                self.after_conflict(revision, valid_until).await
            }
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {limit:?}"),
                };
                if valid_until.has_passed() {
                    warn!(holder = %self.holder, error = %why, "cannot renew the scheduler lease; not firing until it is renewed or lost");
                } else {
                    debug!(error = %why, "lease renewal failed; retrying");
                }
                Role::Leader {
                    revision,
                    valid_until,
                }
            }
        }
    }

    /// A renewal was refused: either an earlier renewal of ours landed without its ack reaching
    /// us (the key still names us, at a newer revision) or another replica took over.
    async fn after_conflict(&self, revision: u64, valid_until: BootInstant) -> Role {
        match self.kv.entry(LEASE_KEY).await {
            Ok(Some(entry))
                if entry.operation == Operation::Put
                    && parse(&entry.value).is_some_and(|v| v.holder == self.holder) =>
            {
                // Only we write our holder name, so that revision is our own renewal; the deadline
                // stays where the last confirmed one put it until the next renewal confirms.
                debug!(
                    from = revision,
                    to = entry.revision,
                    "a lease renewal landed without its ack; continuing on its revision"
                );
                Role::Leader {
                    revision: entry.revision,
                    valid_until,
                }
            }
            Ok(_) => {
                warn!(holder = %self.holder, "lost the scheduler lease to another replica; standing by");
                Role::Standby { seen: None }
            }
            Err(e) => {
                debug!(error = %e, "cannot read the lease after a conflict; retrying");
                Role::Leader {
                    revision,
                    valid_until,
                }
            }
        }
    }
}
