//! `peer` — nats-server's own message schedules (ADR-51) fed the same instants as polos.
//!
//! Both sides get `n` schedules due at the same whole minute of the real clock: polos as
//! `polos_schedules` records fired by a `Ticker` on the system clock, the server as `n` schedule
//! messages in a stream with `allow_msg_schedules` (`Nats-Schedule: 0 <M> <H> * * *`,
//! `Nats-Schedule-Time-Zone: UTC`, `Nats-Schedule-Target: peer.fire.<i>`, a body shaped like a
//! fire). Lateness of a fire is the time the server *stored* it (its stream timestamp) minus the
//! instant, read back by sequence from each stream: one clock and one definition for
//! both sides. The two fire in the same second on the same server, so each pays for the other's
//! burst; that is the fair setting, as both would share a production server too.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, DurationRound, Timelike, Utc};
use futures::StreamExt;
use polos::ticker::{ManualClock, SystemClock};

use crate::raw;
use crate::support::Bench;
use crate::ticker::start_with;

/// Lateness of every fire of each side, sorted, in milliseconds.
pub struct Peer {
    /// Ours: the instant to the fire stored in `POLOS_RUNS`.
    pub ours: Vec<f64>,
    /// nats-server's scheduler: the instant to the generated message stored in its stream.
    pub server: Vec<f64>,
    /// The instant both fired at.
    pub instant: DateTime<Utc>,
}

/// The stream holding the server's schedules and what they generate (targets must be in the
/// schedule's own stream).
const STREAM: &str = "BENCH_PEER";

/// `n` schedules per side due at the first whole minute at least `lead` from now.
pub async fn peer(b: &Bench, n: usize, lead: Duration) -> anyhow::Result<Peer> {
    let lead = chrono::Duration::from_std(lead)?;
    let instant = (Utc::now() + lead + chrono::Duration::minutes(1))
        .duration_trunc(chrono::Duration::minutes(1))?;
    let (minute, hour) = (instant.minute(), instant.hour());

    // Ours: records as a worker-less deployment would hold them.
    let value = Bytes::from(format!(
        r#"{{"cron":"{minute} {hour} * * *","timezone":"UTC"}}"#
    ));
    raw::fill_bucket(&b.js, "polos_schedules", n, |i| {
        (format!("bench-peer.user_{i}"), value.clone())
    })
    .await?;

    // The server's: one schedule message per subject (a subject holds one schedule).
    b.js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["peer.sched.*".into(), "peer.fire.*".into()],
        allow_message_schedules: true,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let cron = format!("0 {minute} {hour} * * *");
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Schedule", cron.as_str());
        headers.insert("Nats-Schedule-Target", format!("peer.fire.{i}").as_str());
        headers.insert("Nats-Schedule-Time-Zone", "UTC");
        let body = format!(
            r#"{{"timestamp":"{}","timezone":"UTC","key":"user_{i}"}}"#,
            polos::model::time::format_instant(instant)
        );
        let ack =
            b.js.publish_with_headers(format!("peer.sched.{i}"), headers, body.into())
                .await?;
        acks.push(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = acks.next().await {
        ack.map_err(|e| anyhow::anyhow!("the server refused a schedule message: {e}"))?;
    }

    // Its own connection, like `polos scheduler`.
    let client = async_nats::connect(b.server.url()).await?;
    let unused = ManualClock::frozen(instant);
    let mut t = start_with(b, client, Arc::new(SystemClock), unused);
    t.status.wait_for(|s| s.active && s.schedules >= n).await?;
    anyhow::ensure!(
        Utc::now() < instant,
        "loading took past the instant; give the section more lead"
    );
    let wait = (instant - Utc::now()).to_std()? + Duration::from_secs(30);
    tokio::time::timeout(wait, t.status.wait_for(|s| s.fires >= n as u64))
        .await
        .map_err(|_| anyhow::anyhow!("our {n} fires did not all come within 30 s"))??;
    t.shutdown().await;

    let ours = stored_lateness(&b.js, "POLOS_RUNS", "polos.runs.bench-peer", n, instant).await?;
    let server = stored_lateness(&b.js, STREAM, "peer.fire.", n, instant).await?;
    Ok(Peer {
        ours,
        server,
        instant,
    })
}

/// Reads the stored time of every message of `stream` whose subject starts with `prefix` (by
/// sequence: `POLOS_RUNS` is a work queue, which takes no ordered consumer), waiting up to 30 s
/// for `n` of them; returns how long after `instant` each was stored, sorted, in ms.
async fn stored_lateness(
    js: &jetstream::Context,
    stream: &str,
    prefix: &str,
    n: usize,
    instant: DateTime<Utc>,
) -> anyhow::Result<Vec<f64>> {
    let mut s = js.get_stream(stream).await?;
    let at = instant
        .timestamp_nanos_opt()
        .ok_or_else(|| anyhow::anyhow!("instant out of range"))? as i128;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut late = Vec::with_capacity(n);
    let mut next = 1u64;
    while late.len() < n {
        let last = s.info().await?.state.last_sequence;
        while next <= last {
            let m = s.get_raw_message(next).await;
            next += 1;
            // A schedule's own message is replaced as it fires: gaps are expected.
            let Ok(m) = m else { continue };
            if m.subject.starts_with(prefix) {
                late.push((m.time.unix_timestamp_nanos() - at) as f64 / 1e6);
            }
        }
        if late.len() < n {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{stream}: {} of {n} fires on {prefix}* stored",
                late.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    late.sort_by(f64::total_cmp);
    Ok(late)
}
