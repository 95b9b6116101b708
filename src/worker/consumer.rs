//! The durable pull consumer a workflow's workers share, and the loop that fetches from it.
//!
//! Every worker of workflow `W` binds the consumer `polos_W` on `polos.runs.W` (a work-queue
//! stream allows only one consumer per filter subject, which is what makes it a queue). Fetching
//! is sized by free run slots: a pull request asks for exactly as many messages as this worker
//! can start now, so no message waits in a client buffer while its ack timer runs (it would be
//! redelivered to another worker while still queued here).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream as JsStream;
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
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
/// Returns the set of in-flight runs for the caller to drain.
pub(crate) async fn fetch_loop(
    consumer: PullConsumer,
    handler: BoxedHandler,
    env: RunEnv,
    concurrency: usize,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut runs = JoinSet::new();
    let mut error_delay = Duration::from_millis(100);
    loop {
        // Reap finished runs so the set does not grow without bound.
        while runs.try_join_next().is_some() {}
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        if *stop.borrow() {
            break;
        }
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => {
                error_delay = Duration::from_millis(100);
                b
            }
            Err(e) => {
                warn!(error = %e, "pull request failed; retrying");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(error_delay) => {}
                    _ = stop.changed() => break,
                }
                error_delay = (error_delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        // Drain the batch in its own task so the next pull can go out as soon as a slot frees.
        let handler = handler.clone();
        let env = env.clone();
        let mut stop_batch = stop.clone();
        runs.spawn(async move {
            let mut inner = JoinSet::new();
            loop {
                let next = tokio::select! {
                    next = batch.next() => next,
                    // Shutting down: stop waiting on the pull request (dropping it unsubscribes).
                    _ = stop_batch.changed() => break,
                };
                let message = match next {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        debug!(error = %e, "pull request ended with an error");
                        break;
                    }
                };
                let Some(permit) = permits.pop() else {
                    // The server never sends more than requested; answer it anyway.
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    continue;
                };
                let handler = handler.clone();
                let env = env.clone();
                inner.spawn(async move {
                    execute(message, handler, env).await;
                    drop(permit);
                });
            }
            // Unused slots go back as soon as the pull request ends.
            drop(batch);
            drop(permits);
            while inner.join_next().await.is_some() {}
        });
    }
    runs
}
