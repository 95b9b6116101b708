//! Publishing fires to `POLOS_RUNS`, pipelined.
//!
//! Every fire is sent without waiting for the previous one's ack; acks are awaited together
//! (up to [`IN_FLIGHT`] outstanding, below async-nats' default ack semaphore of 5,000, which a
//! caller holding more un-awaited acks would deadlock on). So 10,000 fires due at one instant cost
//! a few round trips, not 10,000. Callers build each fire just before sending it, so building
//! overlaps with the connection writing and the server storing the ones before.

use std::future::{ready, IntoFuture, Ready};

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, context::PublishAckFuture};
use futures::future::Either;
use futures::stream::{FuturesOrdered, StreamExt};

use crate::model::Fire;

/// Most fires awaiting their ack at once.
pub const IN_FLIGHT: usize = 4096;

type AckResult = Result<PublishAck, PublishError>;
type Ack = Either<<PublishAckFuture as IntoFuture>::IntoFuture, Ready<AckResult>>;

/// A stream of fires in flight: [`Pipeline::send`] each, then [`Pipeline::finish`].
pub(crate) struct Pipeline<'a> {
    /// Where to publish.
    js: &'a jetstream::Context,
    /// Acks not yet received, in send order.
    acks: FuturesOrdered<Ack>,
    /// Per fire, in send order: `Ok(duplicate)` or the error.
    results: Vec<Result<bool, String>>,
}

impl<'a> Pipeline<'a> {
    /// An empty pipeline on `js`.
    pub fn new(js: &'a jetstream::Context, expected: usize) -> Self {
        Pipeline {
            js,
            acks: FuturesOrdered::new(),
            results: Vec::with_capacity(expected),
        }
    }

    /// Sends `fire` (waiting for the oldest ack only when [`IN_FLIGHT`] are outstanding).
    pub async fn send(&mut self, fire: &Fire) {
        if self.acks.len() >= IN_FLIGHT {
            if let Some(r) = self.acks.next().await {
                self.results.push(outcome(r));
            }
        }
        // Sending only queues the message on the connection; the ack is awaited later.
        let ack = match self
            .js
            .publish_with_headers(fire.subject(), fire.headers(), fire.body())
            .await
        {
            Ok(ack) => Either::Left(ack.into_future()),
            Err(e) => Either::Right(ready(Err(e))),
        };
        self.acks.push_back(ack);
    }

    /// Waits for every outstanding ack; one result per sent fire, in order. `Ok(true)` means the
    /// stream had already stored this fire (another publisher fired the same instant within the
    /// duplicate window).
    pub async fn finish(mut self) -> Vec<Result<bool, String>> {
        while let Some(r) = self.acks.next().await {
            self.results.push(outcome(r));
        }
        self.results
    }
}

fn outcome(r: AckResult) -> Result<bool, String> {
    r.map(|a| a.duplicate).map_err(|e| e.to_string())
}

/// Publishes `fires` in order through one [`Pipeline`].
pub(crate) async fn publish_all(
    js: &jetstream::Context,
    fires: &[Fire],
) -> Vec<Result<bool, String>> {
    let mut pipeline = Pipeline::new(js, fires.len());
    for fire in fires {
        pipeline.send(fire).await;
    }
    pipeline.finish().await
}
