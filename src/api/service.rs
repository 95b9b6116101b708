//! Registering the micro service `polos`, dispatching requests to handlers and answering them.
//!
//! Writes are spread over [`SHARDS`] sequential workers by a hash of workflow + key: requests
//! for different schedules run concurrently (the API keeps up with raw KV compare-and-swap),
//! while two plain publishes for the same schedule are applied in the order they arrived.
//! Reads run as independent tasks.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Request, Service, ServiceExt};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::{select_all, BoxStream};
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::counts::Counts;
use super::error::{ApiError, ErrorBody, RoundTripError, ServeError};
use super::handlers::Handlers;
use super::registry::Registry;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::names::{
    HEADER_SERVICE_ERROR, HEADER_SERVICE_ERROR_CODE, SCHEDULES_BUCKET, SERVICE_NAME,
};
use crate::model::DEFAULT_KEY;
use crate::nats::permissions::stream_info;
use crate::nats::{Action, Denials, Refusals};
use crate::store::{CancelStore, OverlapStore, RunStore, ScheduleStore, StoreError};

/// Number of sequential write workers.
const SHARDS: usize = 128;
/// Requests queued per write worker before the dispatcher waits (backpressure).
const SHARD_QUEUE: usize = 256;
/// Most read requests in flight at once.
const MAX_READS: usize = 256;
/// How long a round trip to the server may take at start and shutdown.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long start waits after registering for a refused subscription to be reported.
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(50);
/// How long shutdown waits for requests already accepted to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Upsert,
    Get,
    List,
    Delete,
    Pause,
    Resume,
    Trigger,
    Backfill,
    WorkflowsList,
    RunCancel,
}

impl Op {
    /// The endpoint's name in metrics: the subject without the `polos.` prefix.
    fn name(self) -> &'static str {
        match self {
            Op::Upsert => "schedules.upsert",
            Op::Get => "schedules.get",
            Op::List => "schedules.list",
            Op::Delete => "schedules.delete",
            Op::Pause => "schedules.pause",
            Op::Resume => "schedules.resume",
            Op::Trigger => "schedules.trigger",
            Op::Backfill => "schedules.backfill",
            Op::WorkflowsList => "workflows.list",
            Op::RunCancel => "run.cancel",
        }
    }

    fn is_write(self) -> bool {
        matches!(
            self,
            Op::Upsert | Op::Delete | Op::Pause | Op::Resume | Op::Trigger | Op::Backfill
        )
    }
}

/// The registered service, ready to answer once [`ApiServer::run`] is polled.
///
/// Its subscriptions exist (and the server has seen them) when [`start`] returns, so a request
/// sent after that is never answered with "no responders".
pub struct ApiServer {
    /// Keeps the micro service (ping/info/stats) registered.
    service: Service,
    /// Every endpoint's requests, tagged with the endpoint.
    requests: BoxStream<'static, (Op, Request)>,
    /// What answers them.
    handlers: Arc<Handlers>,
    /// The service's connection, checked at shutdown so the unsubscribes reach the server
    /// before `run` returns (a request sent afterwards gets "no responders", not a timeout).
    client: async_nats::Client,
    /// Refusals since before the endpoints subscribed: a refused subscription (reported on the
    /// connection, maybe after `start` returned) stops the service with the subject named
    /// instead of leaving it deaf.
    refusals: Refusals,
}

/// What the service subscribes to: its endpoints and micro discovery. (A refused *publish*, such
/// as a trigger's fire, fails only its request.)
const SERVICE_SUBJECTS: [&str; 2] = ["polos.>", "$SRV.>"];

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").finish_non_exhaustive()
    }
}

/// Opens the buckets and registers the micro service `polos` with every endpoint of the README's "The contract".
///
/// `config.limits` says what requests it accepts (sizes, schedules per workflow).
pub async fn start(client: async_nats::Client, config: &Config) -> Result<ApiServer, ServeError> {
    start_metered(client, config, Metrics::new()).await
}

/// [`start`], counting requests (by endpoint and result code), their latency and manual fires
/// in `metrics`.
pub async fn start_metered(
    client: async_nats::Client,
    config: &Config,
    metrics: Metrics,
) -> Result<ApiServer, ServeError> {
    let js = async_nats::jetstream::new(client.clone());
    let store = ScheduleStore::open(&js).await?;
    let limits = config.limits.clone();
    // Counting costs a read of every key at start and 9-19 bytes per schedule: only with a cap.
    let counts = if limits.max_schedules_per_workflow == 0 {
        None
    } else {
        let stream = format!("KV_{SCHEDULES_BUCKET}");
        let found = store
            .denials()
            .guard(&[&stream_info(&stream)], js.get_stream(&stream))
            .await
            .map_err(|denied| ServeError::Store(StoreError::Denied(denied)))?
            .map_err(|e| {
                ServeError::Store(StoreError::Open {
                    bucket: SCHEDULES_BUCKET,
                    source: e.into(),
                })
            })?;
        Some(Counts::start(found, limits.clone()))
    };
    let runs = RunStore::open(&js).await?;
    let cancels = CancelStore::open(&js).await?;
    let overlap = OverlapStore::open(&js).await?;
    let mut refusals = Denials::of(&client).listen();
    let service = client
        .service_builder()
        .description(
            "polos schedules API: upsert, get, list, delete, pause, resume, trigger, backfill; run cancel",
        )
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|source| ServeError::Service { source })?;
    let schedules = service.group("polos").group("schedules");
    let workflows = service.group("polos").group("workflows");
    let run = service.group("polos").group("run");
    let mut streams: Vec<BoxStream<'static, (Op, Request)>> = Vec::new();
    for (op, group, name) in [
        (Op::Upsert, &schedules, "upsert"),
        (Op::Get, &schedules, "get"),
        (Op::List, &schedules, "list"),
        (Op::Delete, &schedules, "delete"),
        (Op::Pause, &schedules, "pause"),
        (Op::Resume, &schedules, "resume"),
        (Op::Trigger, &schedules, "trigger"),
        (Op::Backfill, &schedules, "backfill"),
        (Op::WorkflowsList, &workflows, "list"),
        (Op::RunCancel, &run, "cancel"),
    ] {
        let endpoint = group
            .endpoint(name)
            .await
            .map_err(|source| ServeError::Endpoint {
                endpoint: name,
                source,
            })?;
        streams.push(endpoint.map(move |request| (op, request)).boxed());
    }
    // A refused subscription is only reported on the connection, so a scheduler without the
    // permission would otherwise run deaf and clients would see "no responders". The server
    // answers the echo after the refusal; the short settle lets the refusal's event, which
    // travels on another task, arrive too, so it usually fails `start`; a later one stops `run`.
    let registered = async {
        round_trip(&client).await?;
        tokio::time::sleep(SUBSCRIBE_SETTLE).await;
        Ok::<(), RoundTripError>(())
    };
    tokio::select! {
        done = registered => done.map_err(|source| ServeError::Register { source })?,
        denied = refusals.next_of(Action::Subscribe, &SERVICE_SUBJECTS) => return Err(ServeError::Denied(denied)),
    }
    Ok(ApiServer {
        service,
        requests: select_all(streams).boxed(),
        handlers: Arc::new(Handlers {
            registry: Registry::start(store.clone()),
            store,
            js,
            metrics,
            limits,
            counts,
            runs,
            cancels,
            overlap,
            crons: Default::default(),
        }),
        client,
        refusals,
    })
}

/// Runs the API until `shutdown` completes: [`start`] then [`ApiServer::run`].
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let config = polos::config::Config::from_env()?;
/// let client = polos::nats::connect(&config.nats).await?;
/// polos::api::serve(client, &config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub async fn serve(
    client: async_nats::Client,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    start(client, config).await?.run(shutdown).await
}

impl ApiServer {
    /// Answers requests until `shutdown` completes, then unregisters the service and lets the
    /// requests already accepted finish (bounded by a drain timeout).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let ApiServer {
            service,
            mut requests,
            handlers,
            client,
            mut refusals,
        } = self;
        let mut failed = None;
        let mut tasks = JoinSet::new();
        let mut shards = Vec::with_capacity(SHARDS);
        for _ in 0..SHARDS {
            let (tx, mut rx) = mpsc::channel::<(Op, Request)>(SHARD_QUEUE);
            let handlers = handlers.clone();
            tasks.spawn(async move {
                while let Some((op, request)) = rx.recv().await {
                    // A bug that panics in one handler fails that request, not every later
                    // write of this worker. Caught in place rather than by a task per request:
                    // spawning copied the handler's large future twice per write (BENCHMARKS.md,
                    // "API").
                    let handled = AssertUnwindSafe(handle(&handlers, op, request))
                        .catch_unwind()
                        .await;
                    if handled.is_err() {
                        tracing::error!(
                            endpoint = op.name(),
                            "a schedules API handler panicked; its request is not answered"
                        );
                    }
                }
            });
            shards.push(tx);
        }
        let reads = Arc::new(Semaphore::new(MAX_READS));
        tokio::pin!(shutdown);
        loop {
            let (op, request) = tokio::select! {
                _ = &mut shutdown => break,
                denied = refusals.next_of(Action::Subscribe, &SERVICE_SUBJECTS) => {
                    failed = Some(ServeError::Denied(denied));
                    break;
                }
                next = requests.next() => match next {
                    Some(next) => next,
                    None => break,
                },
            };
            if op.is_write() {
                let shard = shard_of(&request.message.payload, handlers.limits.max_request_bytes);
                if shards[shard].send((op, request)).await.is_err() {
                    tracing::error!("a write worker of the schedules API stopped; request dropped");
                }
            } else {
                let Ok(permit) = reads.clone().acquire_owned().await else {
                    break;
                };
                let handlers = handlers.clone();
                // Boxed: the handler's future is large, and a task moves what it is given.
                let handled = Box::pin(async move {
                    handle(&handlers, op, request).await;
                    drop(permit);
                });
                tasks.spawn(handled);
            }
        }
        drop(requests);
        if let Err(e) = service.stop().await {
            tracing::warn!(error = %e, "stopping the micro service");
        }
        if let Err(e) = round_trip(&client).await {
            tracing::warn!(error = %e, "confirming the unsubscribes of the schedules API");
        }
        drop(shards);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "schedules API requests still running after {DRAIN_TIMEOUT:?}; abandoned"
            );
        }
        failed.map_or(Ok(()), Err)
    }
}

/// Waits until the server has processed everything this connection sent so far (subscribes,
/// unsubscribes): a message to our own inbox comes back only after them. `flush` alone only
/// empties our socket buffer, which leaves another connection's request free to race ahead.
async fn round_trip(client: &async_nats::Client) -> Result<(), RoundTripError> {
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, Bytes::new()).await?;
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(RoundTripError::Closed),
        Err(_) => Err(RoundTripError::Timeout(ROUND_TRIP_TIMEOUT)),
    }
}

/// The write worker of a request: a hash of its workflow and key, so writes to one schedule stay
/// in order. Bodies that are too big or not JSON go to worker 0, which refuses them.
fn shard_of(body: &[u8], max_request_bytes: usize) -> usize {
    #[derive(serde::Deserialize)]
    struct Target {
        workflow: Option<String>,
        key: Option<String>,
    }
    if body.len() > max_request_bytes {
        return 0;
    }
    let Ok(Target { workflow, key }) = serde_json::from_slice::<Target>(body) else {
        return 0;
    };
    let mut hasher = DefaultHasher::new();
    workflow.unwrap_or_default().hash(&mut hasher);
    key.as_deref().unwrap_or(DEFAULT_KEY).hash(&mut hasher);
    // The remainder is below SHARDS, so it fits any usize.
    usize::try_from(hasher.finish() % SHARDS as u64).unwrap_or(0)
}

/// Runs the handler of `op` and answers; a request without a reply subject (a plain publish) is
/// applied all the same, and its outcome is logged instead.
async fn handle(handlers: &Handlers, op: Op, request: Request) {
    let started = std::time::Instant::now();
    let body = &request.message.payload;
    let result = match op {
        Op::Upsert => json(handlers.upsert(body).await),
        Op::Get => json(handlers.get(body).await),
        Op::List => json(handlers.list(body).await),
        Op::Delete => json(handlers.delete(body).await),
        Op::Pause => json(handlers.set_paused(body, true).await),
        Op::Resume => json(handlers.set_paused(body, false).await),
        Op::Trigger => json(handlers.trigger(body).await),
        Op::Backfill => json(handlers.backfill(body).await),
        Op::WorkflowsList => json(handlers.workflows(body).await),
        Op::RunCancel => json(handlers.cancel(body).await),
    };
    let code = result.as_ref().err().map(|e| e.code.as_str());
    handlers
        .metrics
        .api_request(op.name(), code, started.elapsed());
    let subject = request.message.subject.as_str();
    if request.message.reply.is_none() {
        match &result {
            Ok(_) => tracing::debug!(subject, "applied a request published without reply subject"),
            Err(e) => {
                tracing::warn!(subject, error = %e, "refused a request published without reply subject")
            }
        }
        return;
    }
    if let Err(e) = &result {
        tracing::debug!(subject, error = %e, "refused a request");
    }
    let sent = match result {
        Ok(body) => request.respond(Ok(body)).await,
        Err(error) => {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_SERVICE_ERROR, header_text(&error).as_str());
            headers.insert(
                HEADER_SERVICE_ERROR_CODE,
                error.code.status().to_string().as_str(),
            );
            let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
            request
                .respond_with_headers(Ok(Bytes::from(body)), headers)
                .await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(subject, error = %e, "could not send a reply");
    }
}

fn json<T: Serialize>(result: Result<T, ApiError>) -> Result<Bytes, ApiError> {
    let value = result?;
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot encode the reply: {e}")))
}

/// The `Nats-Service-Error` header: the error on one printable-ASCII line (headers cannot carry
/// line breaks, and a long message belongs in the body).
fn header_text(error: &ApiError) -> String {
    let text: String = error
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(256)
        .collect();
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::limits::DEFAULT_MAX_REQUEST_BYTES;

    /// `polos scheduler` spawns the API next to the ticker: the future must be `Send`. This
    /// does not compile otherwise.
    #[allow(dead_code)]
    fn serve_is_send(client: async_nats::Client, config: &Config) -> impl Send + '_ {
        serve(client, config, async {})
    }

    #[test]
    fn writes_of_one_schedule_share_a_worker() {
        let a = shard_of(
            br#"{"workflow":"wf","cron":"0 8 * * *","key":"user_1"}"#,
            DEFAULT_MAX_REQUEST_BYTES,
        );
        let b = shard_of(
            br#"{"key":"user_1","workflow":"wf","note":"x"}"#,
            DEFAULT_MAX_REQUEST_BYTES,
        );
        assert_eq!(a, b);
        // No key means the default key.
        assert_eq!(
            shard_of(br#"{"workflow":"wf"}"#, DEFAULT_MAX_REQUEST_BYTES),
            shard_of(
                br#"{"workflow":"wf","key":"global"}"#,
                DEFAULT_MAX_REQUEST_BYTES
            )
        );
        assert!((0..SHARDS).contains(&shard_of(b"not json", DEFAULT_MAX_REQUEST_BYTES)));
    }
}
