//! Publishing fires to `POLOS_RUNS`, pipelined.
//!
//! Every fire is sent without waiting for the previous one's ack; acks are awaited together
//! (up to [`IN_FLIGHT`] outstanding, below async-nats' default ack semaphore of 5,000, which a
//! caller holding more un-awaited acks would deadlock on). So 10,000 fires due at one instant cost
//! a few round trips, not 10,000.

use async_nats::jetstream;
use futures::future::Either;
use futures::stream::{FuturesOrdered, StreamExt};

use crate::model::Fire;

/// Most fires awaiting their ack at once.
pub const IN_FLIGHT: usize = 4096;

/// Publishes `fires` in order and returns, per fire, `Ok(duplicate)` (the stream had already
/// stored it: another publisher fired this instant within the duplicate window) or the error.
pub(crate) async fn publish_all(
    js: &jetstream::Context,
    fires: &[Fire],
) -> Vec<Result<bool, String>> {
    let mut results = Vec::with_capacity(fires.len());
    let mut acks = FuturesOrdered::new();
    for fire in fires {
        if acks.len() >= IN_FLIGHT {
            if let Some(r) = acks.next().await {
                results.push(r);
            }
        }
        // Sending only queues the message on the connection; the ack is awaited later.
        match js
            .publish_with_headers(fire.subject(), fire.headers(), fire.body())
            .await
        {
            Ok(ack) => acks.push_back(Either::Left(async move {
                ack.await.map(|a| a.duplicate).map_err(|e| e.to_string())
            })),
            Err(e) => acks.push_back(Either::Right(std::future::ready(Err(e.to_string())))),
        }
    }
    while let Some(r) = acks.next().await {
        results.push(r);
    }
    results
}
