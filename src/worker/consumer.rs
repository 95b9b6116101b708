//! The durable pull consumer a workflow's workers share, and the loop that fetches from it.
//!
//! Every worker of workflow `W` binds the consumer `polos_W` on `polos.runs.W` (a work-queue
//! stream allows only one consumer per filter subject, which is what makes it a queue).
//!
//! Fetching keeps one subscription and sends its own pull requests, so it knows exactly how
//! many messages are requested and running: `running + requested` never exceeds the
//! concurrency. A worker busy with a long run therefore holds no fire another worker could
//! start now; the price is one round trip between a run ending and the next one arriving,
//! hidden under load by asking for several at once. A slot is free once its handler has
//! returned: writing the run's record and the server's confirmation of the ack overlap the
//! next fire's arrival.
//!
//! | the server says                              | the loop                                        |
//! |----------------------------------------------|-------------------------------------------------|
//! | a message                                    | starts it (naks it if no slot is free)          |
//! | 408 request expired / 404 no messages        | forgets the unfilled part of the request        |
//! | 409 consumer deleted, 503 no responders      | backs off, creates the consumer again, warns    |
//! | any other status ending a request            | backs off before the next request               |
//! | nothing for a request's lifetime + 2 s       | forgets it (lost with a reconnect) and asks again |

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream as JsStream;
use async_nats::jetstream::{self, AckKind};
use async_nats::StatusCode;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::run::{execute, RunEnv, RunSpec};
use super::slots::Slots;
use super::stats::Counter;
use super::WorkerError;
use crate::model::names::runs_subject;

/// The durable consumer name of a workflow.
pub fn consumer_name(workflow: &str) -> String {
    format!("polos_{workflow}")
}

/// How long one pull request waits for messages before the server ends it.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// First delay after the server refuses requests; doubled per refusal.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between attempts to fetch or to create a lost consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Creates the workflow's consumer, or updates its settings when they changed (async-nats
/// 0.51: `create_consumer` updates, `get_or_create_consumer` would keep stale settings).
pub(crate) async fn ensure(
    stream: &JsStream,
    workflow: &str,
    ack_wait: Duration,
) -> Result<PullConsumer, WorkerError> {
    let name = consumer_name(workflow);
    let config = pull::Config {
        durable_name: Some(name.clone()),
        description: Some(format!("polos workers of workflow {workflow}")),
        filter_subject: runs_subject(workflow),
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        // Unlimited: the worker counts attempts itself (in the run record), so a worker that
        // dies during the last attempt still gets its run recorded `failed` on the next delivery.
        max_deliver: -1,
        ..Default::default()
    };
    stream
        .create_consumer(config)
        .await
        .map_err(|e| WorkerError::Consumer {
            workflow: workflow.to_string(),
            consumer: name,
            source: e.into(),
        })
}

/// What one workflow's fetch loop runs and how.
pub(crate) struct FetchSpec {
    /// The workflow id.
    pub workflow: String,
    /// The workflow's handler, timeout and retry policy.
    pub run: Arc<RunSpec>,
    /// Most runs at once.
    pub concurrency: usize,
}

/// Fetches and runs messages until `stop` becomes true. Returns the in-flight runs for the
/// caller to drain.
pub(crate) async fn fetch_loop(
    js: jetstream::Context,
    consumer: PullConsumer,
    spec: FetchSpec,
    env: Arc<RunEnv>,
    stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut fetcher = Fetcher {
        js,
        consumer,
        concurrency: spec.concurrency.max(1),
        spec,
        env,
        runs: JoinSet::new(),
        slots: Slots::default(),
        requested: 0,
        last_request: None,
        backoff: MIN_BACKOFF,
        next_request: None,
    };
    fetcher.run(stop).await;
    fetcher.runs
}

/// The state of one workflow's fetch loop.
struct Fetcher {
    /// Turns raw deliveries back into ackable JetStream messages.
    js: jetstream::Context,
    /// The shared durable consumer (replaced when it has to be created again).
    consumer: PullConsumer,
    /// The workflow.
    spec: FetchSpec,
    /// What runs need.
    env: Arc<RunEnv>,
    /// Most runs at once.
    concurrency: usize,
    /// Every execution task, until it ends (drained at shutdown).
    runs: JoinSet<()>,
    /// Slots taken: executions whose handler has not returned yet.
    slots: Slots,
    /// Messages asked for and not yet delivered or expired.
    requested: usize,
    /// When the last pull request went out (requests lost with a connection are forgotten after
    /// they would have expired).
    last_request: Option<Instant>,
    /// The current delay after a refusal; reset by a delivered message.
    backoff: Duration,
    /// No request before this instant (set after the server refused one).
    next_request: Option<Instant>,
}

/// What a status message from the server means for the loop.
enum Signal {
    /// Nothing to change.
    Fine,
    /// The consumer is gone (deleted, or its stream has no leader): create it again.
    ConsumerLost(String),
    /// The server refused or cut a request: wait before the next one.
    Refused(String),
}

impl Fetcher {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        let client = self.js.client();
        let inbox = client.new_inbox();
        let mut deliveries = match client.subscribe(inbox.clone()).await {
            Ok(s) => s,
            Err(e) => {
                warn!(workflow = %self.spec.workflow, error = %e, "cannot subscribe for runs; this workflow is not consumed");
                return;
            }
        };
        let mut lost: Option<String> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            if let Some(why) = lost.take() {
                if !self.recreate(&why, &mut stop).await {
                    if *stop.borrow() {
                        break;
                    }
                    lost = Some(why);
                    continue;
                }
            }
            if let Err(e) = self.request_more(&inbox).await {
                warn!(workflow = %self.spec.workflow, error = %e, "pull request failed; retrying");
                self.refused();
            }
            let lost_requests_after = self
                .last_request
                .map(|t| t + PULL_EXPIRES + Duration::from_secs(2))
                .filter(|_| self.requested > 0);
            tokio::select! {
                delivery = deliveries.next() => match delivery {
                    Some(message) => match self.delivered(message) {
                        Signal::Fine => {}
                        Signal::ConsumerLost(why) => lost = Some(why),
                        Signal::Refused(why) => {
                            debug!(workflow = %self.spec.workflow, why, "pull request refused; backing off");
                            self.refused();
                        }
                    },
                    None => break,
                },
                Some(_) = self.runs.join_next(), if !self.runs.is_empty() => {}
                () = self.slots.freed() => {}
                () = sleep_until_opt(lost_requests_after) => {
                    debug!(requested = self.requested, "pull requests lost (reconnect?); asking again");
                    self.requested = 0;
                }
                () = sleep_until_opt(self.next_request.filter(|_| self.requested == 0)) => {
                    self.next_request = None;
                }
                _ = stop.changed() => {}
            }
        }
        // Stopping: nothing more is requested; what already arrived goes straight back (it was
        // never claimed, so it uses no attempt).
        let _ = deliveries.unsubscribe().await;
        while let Some(Some(message)) = deliveries.next().now_or_never() {
            if message.status.is_none() || message.status == Some(StatusCode::OK) {
                let message = jetstream::Message {
                    message,
                    context: self.js.clone(),
                };
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        }
    }

    /// Asks for as many messages as there are free slots, in batches of at least an eighth of
    /// the concurrency while some are already requested, so a busy worker sends few requests.
    async fn request_more(&mut self, inbox: &str) -> Result<(), async_nats::Error> {
        if self.next_request.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        let room = self
            .concurrency
            .saturating_sub(self.slots.taken() + self.requested);
        let worth_it = room >= (self.concurrency / 8).max(1) || (self.requested == 0 && room > 0);
        if !worth_it {
            return Ok(());
        }
        let batch = BatchConfig {
            batch: room,
            expires: Some(PULL_EXPIRES),
            ..Default::default()
        };
        self.consumer
            .request_batch(batch, inbox.to_string().into())
            .await?;
        self.requested += room;
        self.last_request = Some(Instant::now());
        Ok(())
    }

    /// One message on the inbox: a run, or the server's word about a pull request.
    fn delivered(&mut self, message: async_nats::Message) -> Signal {
        match message.status {
            None | Some(StatusCode::OK) => {
                self.requested = self.requested.saturating_sub(1);
                self.backoff = MIN_BACKOFF;
                let message = jetstream::Message {
                    message,
                    context: self.js.clone(),
                };
                if self.slots.taken() >= self.concurrency {
                    // Delivered to a request we had given up as lost: no slot, so it goes back
                    // at once rather than waiting here.
                    self.runs.spawn(async move {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                    });
                    return Signal::Fine;
                }
                self.runs.spawn(execute(
                    message,
                    self.slots.take(),
                    Instant::now(),
                    self.spec.run.clone(),
                    self.env.clone(),
                ));
                Signal::Fine
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Signal::Fine,
            Some(StatusCode::NO_RESPONDERS) => {
                self.requested = 0;
                Signal::ConsumerLost("no responders for the pull request".to_string())
            }
            Some(status) => {
                let description = message.description.clone().unwrap_or_default();
                if description.eq_ignore_ascii_case("consumer deleted") {
                    self.requested = 0;
                    return Signal::ConsumerLost(description);
                }
                // The header says how many of the request's messages will not come.
                let unfilled = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse::<usize>().ok());
                match unfilled {
                    Some(n) => self.requested = self.requested.saturating_sub(n),
                    None => self.requested = 0,
                }
                if status == StatusCode::TIMEOUT || status == StatusCode::NOT_FOUND {
                    // The request lived its life and expired: the consumer works.
                    self.backoff = MIN_BACKOFF;
                    Signal::Fine
                } else {
                    Signal::Refused(format!("{status} {description}"))
                }
            }
        }
    }

    /// Waits out the backoff, then creates the consumer again. `false` when it is still
    /// missing (or the worker is stopping).
    async fn recreate(&mut self, why: &str, stop: &mut watch::Receiver<bool>) -> bool {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return false,
        }
        let workflow = &self.spec.workflow;
        match ensure(&self.env.stream, workflow, self.env.settings.ack_wait).await {
            Ok(consumer) => {
                self.consumer = consumer;
                self.requested = 0;
                self.next_request = None;
                self.env.stats.add(Counter::ConsumerRecreations);
                warn!(workflow = %workflow, consumer = %consumer_name(workflow), why, "the consumer was lost; created it again, consuming runs");
                true
            }
            Err(e) => {
                warn!(workflow = %workflow, why, error = %e, retry_in = ?self.backoff, "the consumer is lost and cannot be created yet; retrying");
                false
            }
        }
    }

    /// The server refused a request: wait (doubling) before the next.
    fn refused(&mut self) {
        self.next_request = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_name_is_the_contract_name() {
        assert_eq!(consumer_name("daily-report"), "polos_daily-report");
    }
}
