//! The durable pull consumer a workflow's workers share, and the loop that fetches from it.
//!
//! Every worker of workflow `W` binds the consumer `polos_W` on `polos.runs.W` (a work-queue
//! stream allows only one consumer per filter subject, which is what makes it a queue).
//!
//! Fetching keeps one subscription and sends its own pull requests, so it knows exactly how
//! many messages are requested, buffered and running: `running + buffered + requested` never
//! exceeds twice the concurrency (one window running, one prefetched so the next run starts
//! without a round trip). A prefetched message waiting for a slot gets in-progress acks like a
//! running one, so it is never redelivered to another worker while still queued here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream as JsStream;
use async_nats::jetstream::{self, AckKind};
use async_nats::StatusCode;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::run::{execute, RunEnv};
use super::workflow::BoxedHandler;
use super::WorkerError;
use crate::model::names::runs_subject;

/// The durable consumer name of a workflow.
pub fn consumer_name(workflow: &str) -> String {
    format!("polos_{workflow}")
}

/// How long one pull request waits for messages before the server ends it.
const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// Creates the workflow's consumer, or updates its settings when they changed (design §9:
/// `create_consumer` updates, `get_or_create_consumer` would keep stale settings).
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
        // Unlimited: the worker counts attempts itself, so a worker that dies during the last
        // attempt still gets its run recorded `failed` on the next delivery.
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

/// Fetches and runs messages until `stop` becomes true, with at most `concurrency` runs at once.
/// Returns the in-flight runs for the caller to drain.
pub(crate) async fn fetch_loop(
    js: jetstream::Context,
    consumer: PullConsumer,
    handler: BoxedHandler,
    env: Arc<RunEnv>,
    concurrency: usize,
    stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let progress_every = env.settings.progress_every;
    let mut fetcher = Fetcher {
        js,
        consumer,
        handler,
        env,
        concurrency: concurrency.max(1),
        runs: JoinSet::new(),
        buffered: VecDeque::new(),
        requested: 0,
        last_request: None,
    };
    fetcher.run(stop, progress_every).await;
    fetcher.runs
}

/// The state of one workflow's fetch loop.
struct Fetcher {
    /// Turns raw deliveries back into ackable JetStream messages.
    js: jetstream::Context,
    /// The shared durable consumer.
    consumer: PullConsumer,
    /// The workflow's handler.
    handler: BoxedHandler,
    /// What runs need.
    env: Arc<RunEnv>,
    /// Most runs at once.
    concurrency: usize,
    /// Runs in flight.
    runs: JoinSet<()>,
    /// Delivered messages waiting for a slot, with when they last told the server we hold them.
    buffered: VecDeque<(jetstream::Message, Instant)>,
    /// Messages asked for and not yet delivered or expired.
    requested: usize,
    /// When the last pull request went out (requests lost with a connection are forgotten after
    /// they would have expired).
    last_request: Option<Instant>,
}

impl Fetcher {
    async fn run(&mut self, mut stop: watch::Receiver<bool>, progress_every: Duration) {
        let client = self.js.client();
        let inbox = client.new_inbox();
        let mut deliveries = match client.subscribe(inbox.clone()).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot subscribe for runs; this workflow is not consumed");
                return;
            }
        };
        let mut progress = tokio::time::interval(progress_every);
        let mut error_delay = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                break;
            }
            if let Err(e) = self.request_more(&inbox).await {
                warn!(error = %e, "pull request failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(error_delay) => {}
                    _ = stop.changed() => break,
                }
                error_delay = (error_delay * 2).min(Duration::from_secs(5));
                continue;
            }
            error_delay = Duration::from_millis(100);
            let lost_requests_after = self
                .last_request
                .map(|t| t + PULL_EXPIRES + Duration::from_secs(2))
                .filter(|_| self.requested > 0);
            tokio::select! {
                delivery = deliveries.next() => match delivery {
                    Some(message) => self.delivered(message),
                    None => break,
                },
                Some(_) = self.runs.join_next(), if !self.runs.is_empty() => {
                    self.start_buffered();
                }
                _ = progress.tick() => self.keep_buffered(progress_every).await,
                _ = sleep_until_opt(lost_requests_after) => {
                    debug!(requested = self.requested, "pull requests lost (reconnect?); asking again");
                    self.requested = 0;
                }
                _ = stop.changed() => {}
            }
        }
        // Stopping: nothing more is requested, and prefetched runs go straight back.
        drop(deliveries);
        for (message, _) in self.buffered.drain(..) {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
    }

    /// Asks for enough messages to fill both windows, in batches of at least a quarter window
    /// so a busy worker sends few requests.
    async fn request_more(&mut self, inbox: &str) -> Result<(), async_nats::Error> {
        let held = self.runs.len() + self.buffered.len() + self.requested;
        let room = (2 * self.concurrency).saturating_sub(held);
        let worth_it = room >= (self.concurrency / 2).max(1) || (self.requested == 0 && room > 0);
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
    fn delivered(&mut self, message: async_nats::Message) {
        match message.status {
            None | Some(StatusCode::OK) => {
                self.requested = self.requested.saturating_sub(1);
                let message = jetstream::Message {
                    message,
                    context: self.js.clone(),
                };
                self.buffered.push_back((message, Instant::now()));
                self.start_buffered();
            }
            Some(StatusCode::IDLE_HEARTBEAT) => {}
            Some(status) => {
                // 408 (expired) and 409 (e.g. leadership change) end a request; the header says
                // how many of its messages will not come.
                let unfilled = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse::<usize>().ok());
                match unfilled {
                    Some(n) => self.requested = self.requested.saturating_sub(n),
                    None => {
                        debug!(%status, description = ?message.description, "pull request ended");
                        self.requested = 0;
                    }
                }
            }
        }
    }

    /// Starts buffered messages while slots are free.
    fn start_buffered(&mut self) {
        while self.runs.len() < self.concurrency {
            let Some((message, _)) = self.buffered.pop_front() else {
                return;
            };
            self.runs
                .spawn(execute(message, self.handler.clone(), self.env.clone()));
        }
    }

    /// Tells the server we still hold the prefetched messages that have waited a while.
    async fn keep_buffered(&mut self, every: Duration) {
        let now = Instant::now();
        for (message, since) in self.buffered.iter_mut() {
            if now.duration_since(*since) >= every {
                let _ = message.ack_with(AckKind::Progress).await;
                *since = now;
            }
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
