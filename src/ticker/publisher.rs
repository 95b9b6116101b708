//! Publishing fires to `POLOS_RUNS`: a task of its own, pipelined, fenced.
//!
//! The firing loop hands batches of encoded fires to this task and goes on applying changes and
//! following the lease; results come back on a channel. Within the task every fire is sent
//! without waiting for the previous one's ack; at most [`IN_FLIGHT`] acks are outstanding. So
//! 10,000 fires due at one instant cost a few round trips, not 10,000, and a slow or unavailable
//! stream never blocks the loop.
//!
//! A JetStream publish is a core publish with a reply subject: the stream answers on it with a
//! PubAck (`{"stream","seq","duplicate"}` or `{"error"}`). This task does that itself instead of
//! calling `jetstream::Context::publish`, which per message creates an inbox string, a oneshot,
//! a timer, a semaphore permit and a boxed future, and parses the ack through an untagged enum:
//! the profile of a 100,000-fire round put a quarter of the ticker's CPU there (BENCHMARKS.md).
//! Here one subscription (`<inbox>.*`) receives every ack, the reply subject of fire `n` is
//! `<inbox>.<n>`, and the fires awaiting their ack sit in send order in a queue, so an ack finds
//! its fire by subtraction. One timer runs, for the oldest outstanding fire (acks come back in
//! send order, so when the oldest has its answer the others are quick to follow).
//!
//! Right before each fire goes out the task checks the fence and that the connection is up: a
//! fire is never handed to a disconnected client (which would keep it and write it after
//! reconnecting, possibly after a standby took over), and never after the lease deadline
//! ([`Leadership::may_publish`]). The check is cheap: the lease's [`Leadership`] is re-read only
//! when the lease task has published a change (an atomic version compare), and the deadline is
//! compared per fire on the boot clock (one vDSO clock read, no lock). A fire that may not go out
//! comes back [`Published::Held`], and the loop offers it again shortly; a fire whose publish
//! failed or was not acknowledged comes back [`Published::Failed`] and is retried with backoff.
//! Only the loop decides when to give up (when this replica stops leading; the successor fires it
//! through catch-up).

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{HeaderMap, StatusCode, Subject, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::fence::{BootInstant, Leadership};

/// Most fires awaiting their ack at once.
pub const IN_FLIGHT: usize = 4096;

/// Results are handed back at least this often (in fires), so the loop records fires, re-arms
/// schedules and writes their state while a large round is still going out.
const RESULT_CHUNK: usize = 1024;

/// How long the stream may take to acknowledge a fire before it counts as failed (and is
/// retried: a fire that was stored after all is then answered `duplicate`). The same as
/// async-nats' JetStream default.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Published {
    /// The stream stored it; `duplicate` when it already had (same `Nats-Msg-Id` inside the
    /// duplicate window: another publisher fired the same instant).
    Stored {
        /// The stream answered "duplicate".
        duplicate: bool,
    },
    /// Not sent: this replica is fenced (lease deadline passed, or another term) or the
    /// connection is down.
    Held,
    /// Sent, but the stream did not acknowledge it (the error text).
    Failed(String),
}

/// One fire as it goes on the wire.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// `polos.runs.<workflow>` (shared by every fire of the workflow).
    pub subject: Subject,
    /// `Nats-Msg-Id`, `Polos-Run-Id`, `Polos-Trigger`.
    pub headers: HeaderMap,
    /// The SchedulePayload JSON.
    pub body: Bytes,
}

/// Fires planned under one lease term, each with the caller's token.
pub(crate) struct Batch<T> {
    /// The term they were planned under: they go out only while it is current.
    pub term: u64,
    /// The fires, in order.
    pub fires: Vec<(T, Outgoing)>,
}

/// The loop's end of the publishing task.
pub(crate) struct Publisher<T> {
    /// Batches to publish.
    tx: mpsc::UnboundedSender<Batch<T>>,
    /// Results, in chunks.
    pub results: mpsc::UnboundedReceiver<Vec<(T, Published)>>,
}

impl<T: Send + 'static> Publisher<T> {
    /// Starts the task on `client`, fenced by `leadership`.
    pub fn spawn(client: async_nats::Client, leadership: watch::Receiver<Leadership>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (results_tx, results) = mpsc::unbounded_channel();
        tokio::spawn(publish_loop(client, leadership, rx, results_tx));
        Publisher { tx, results }
    }

    /// Queues a batch. Unbounded: the loop bounds what it has in flight itself.
    pub fn send(&self, batch: Batch<T>) {
        let _ = self.tx.send(batch);
    }
}

/// The fence as of the last change the lease task published.
struct Fence {
    /// The lease as last read.
    leadership: watch::Receiver<Leadership>,
    /// Its term.
    term: u64,
    /// Its deadline, `None` while not leading.
    valid_until: Option<BootInstant>,
}

impl Fence {
    fn new(mut leadership: watch::Receiver<Leadership>) -> Fence {
        let l = *leadership.borrow_and_update();
        Fence {
            leadership,
            term: l.term,
            valid_until: l.valid_until,
        }
    }

    /// [`Leadership::may_publish`]`(term)`, right now.
    fn may_publish(&mut self, term: u64) -> bool {
        // A renewal or a lost lease changes the watch's version: re-read only then.
        if self.leadership.has_changed().unwrap_or(false) {
            let l = *self.leadership.borrow_and_update();
            self.term = l.term;
            self.valid_until = l.valid_until;
        }
        Leadership {
            term: self.term,
            valid_until: self.valid_until,
        }
        .may_publish(term)
    }
}

/// A PubAck as the stream sends it; only what decides the outcome is read.
#[derive(Deserialize)]
struct Ack {
    /// The stream already had a message with this `Nats-Msg-Id`.
    #[serde(default)]
    duplicate: bool,
    /// Set instead of the rest when the stream refused the message.
    error: Option<AckError>,
}

#[derive(Deserialize)]
struct AckError {
    #[serde(default)]
    description: String,
    #[serde(default)]
    err_code: u64,
}

/// What a reply on the ack subscription says about its fire.
fn outcome_of(message: &async_nats::Message) -> Published {
    match message.status {
        Some(StatusCode::NO_RESPONDERS) => {
            return Published::Failed(
                "no stream stores the fire's subject (stream POLOS_RUNS is missing: run `polos streams apply`)".into(),
            )
        }
        Some(status) if status != StatusCode::OK => {
            return Published::Failed(format!(
                "the server answered the publish with status {status}{}",
                message
                    .description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ))
        }
        _ => {}
    }
    match serde_json::from_slice::<Ack>(&message.payload) {
        Ok(Ack {
            error: None,
            duplicate,
        }) => Published::Stored { duplicate },
        Ok(Ack { error: Some(e), .. }) => Published::Failed(format!(
            "the stream refused the fire: {} (error {})",
            e.description, e.err_code
        )),
        Err(e) => Published::Failed(format!(
            "unreadable acknowledgement from the stream ({e}): {}",
            String::from_utf8_lossy(&message.payload[..message.payload.len().min(200)])
        )),
    }
}

/// One sent fire waiting for its ack.
struct Pending<T> {
    /// The caller's token.
    token: T,
    /// When it was handed to the connection.
    sent: Instant,
    /// Its ack, once it came (acks that overtake an older one wait here).
    outcome: Option<Published>,
}

/// The ack side: one subscription, the sent fires in send order.
struct Acks<T> {
    client: async_nats::Client,
    /// `<inbox>` of the subscription; `None` until subscribed.
    inbox: Option<(String, Subscriber)>,
    /// Sequence number of the first entry of `pending`.
    first: u64,
    /// Sent fires awaiting their ack, oldest first; fire `first + i` is `pending[i]`.
    pending: VecDeque<Pending<T>>,
    /// Reply subjects are cut from this buffer (one allocation per few hundred fires).
    replies: BytesMut,
}

impl<T> Acks<T> {
    fn new(client: async_nats::Client) -> Self {
        Acks {
            client,
            inbox: None,
            first: 0,
            pending: VecDeque::new(),
            replies: BytesMut::new(),
        }
    }

    /// Subscribes to the ack subject if not yet done.
    async fn subscribe(&mut self) -> Result<(), String> {
        if self.inbox.is_none() {
            let inbox = self.client.new_inbox();
            let sub = self
                .client
                .subscribe(format!("{inbox}.*"))
                .await
                .map_err(|e| format!("cannot subscribe to the publish acknowledgements: {e}"))?;
            self.inbox = Some((inbox, sub));
        }
        Ok(())
    }

    /// The reply subject of the next fire sent.
    fn next_reply(&mut self) -> Option<Subject> {
        let (inbox, _) = self.inbox.as_ref()?;
        let next = self.first + self.pending.len() as u64;
        if self.replies.capacity() - self.replies.len() < inbox.len() + 21 {
            self.replies.reserve(64 * 1024);
        }
        self.replies.put_slice(inbox.as_bytes());
        self.replies.put_u8(b'.');
        push_decimal(&mut self.replies, next);
        Subject::from_utf8(self.replies.split().freeze()).ok()
    }

    /// The fire with the reply subject last returned was sent.
    fn sent(&mut self, token: T) {
        self.pending.push_back(Pending {
            token,
            sent: Instant::now(),
            outcome: None,
        });
    }

    /// Waits for the next ack (or the oldest fire's timeout) and moves what is answered, in
    /// send order, to `results`. Cancel-safe: nothing is lost when the wait is dropped.
    async fn next(&mut self, results: &mut Vec<(T, Published)>) {
        enum Event {
            Ack(async_nats::Message),
            Closed,
            Timeout,
        }
        let deadline = self.pending.front().map(|p| p.sent + ACK_TIMEOUT);
        let Some((_, sub)) = self.inbox.as_mut() else {
            return std::future::pending().await;
        };
        let event = tokio::select! {
            message = sub.next() => message.map_or(Event::Closed, Event::Ack),
            _ = sleep_until_opt(deadline) => Event::Timeout,
        };
        match event {
            Event::Ack(message) => self.answer(&message),
            Event::Closed => {
                // The client was closed: nothing will be acknowledged any more.
                self.inbox = None;
                for p in &mut self.pending {
                    p.outcome.get_or_insert_with(|| {
                        Published::Failed("the connection was closed".into())
                    });
                }
            }
            Event::Timeout => {
                let now = Instant::now();
                for p in self
                    .pending
                    .iter_mut()
                    .take_while(|p| p.sent + ACK_TIMEOUT <= now)
                {
                    p.outcome.get_or_insert_with(|| {
                        Published::Failed(format!(
                            "the stream did not acknowledge the fire within {ACK_TIMEOUT:?}"
                        ))
                    });
                }
            }
        }
        while self.pending.front().is_some_and(|p| p.outcome.is_some()) {
            if let Some(Pending {
                token,
                outcome: Some(outcome),
                ..
            }) = self.pending.pop_front()
            {
                results.push((token, outcome));
            }
            self.first += 1;
        }
    }

    /// Records an ack; one for a fire no longer waiting (timed out) is ignored.
    fn answer(&mut self, message: &async_nats::Message) {
        let seq = message
            .subject
            .rsplit_once('.')
            .and_then(|(_, n)| n.parse::<u64>().ok());
        let Some(index) = seq.and_then(|s| s.checked_sub(self.first)) else {
            return;
        };
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        if let Some(p) = self.pending.get_mut(index) {
            p.outcome.get_or_insert_with(|| outcome_of(message));
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Writes `n` in decimal.
fn push_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        // A remainder below 10 fits a byte.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

async fn publish_loop<T: Send + 'static>(
    client: async_nats::Client,
    leadership: watch::Receiver<Leadership>,
    mut batches: mpsc::UnboundedReceiver<Batch<T>>,
    results_tx: mpsc::UnboundedSender<Vec<(T, Published)>>,
) {
    let mut fence = Fence::new(leadership);
    let mut acks = Acks::new(client.clone());
    let mut results: Vec<(T, Published)> = Vec::new();
    let mut open = true;
    loop {
        if !open && acks.pending.is_empty() {
            // Input closed and every ack is in.
            if !results.is_empty() {
                let _ = results_tx.send(results);
            }
            return;
        }
        tokio::select! {
            biased;
            _ = acks.next(&mut results), if !acks.pending.is_empty() => {}
            batch = batches.recv(), if open => {
                let Some(batch) = batch else {
                    open = false;
                    continue;
                };
                send_batch(&client, &mut fence, &mut acks, batch, &mut results).await;
            }
        }
        let flush =
            !results.is_empty() && (acks.pending.is_empty() || results.len() >= RESULT_CHUNK);
        if flush && results_tx.send(std::mem::take(&mut results)).is_err() {
            return;
        }
    }
}

/// Sends every fire of `batch` that may go out, waiting for acks whenever [`IN_FLIGHT`] are
/// outstanding.
async fn send_batch<T>(
    client: &async_nats::Client,
    fence: &mut Fence,
    acks: &mut Acks<T>,
    batch: Batch<T>,
    results: &mut Vec<(T, Published)>,
) {
    if let Err(e) = acks.subscribe().await {
        results.extend(
            batch
                .fires
                .into_iter()
                .map(|(token, _)| (token, Published::Failed(e.clone()))),
        );
        return;
    }
    for (token, fire) in batch.fires {
        while acks.pending.len() >= IN_FLIGHT {
            acks.next(results).await;
        }
        if !fence.may_publish(batch.term) || client.connection_state() != State::Connected {
            results.push((token, Published::Held));
            continue;
        }
        let Some(reply) = acks.next_reply() else {
            results.push((
                token,
                Published::Failed("no subscription for acknowledgements".into()),
            ));
            continue;
        };
        // Sending only queues the message on the connection; its ack comes back on the
        // subscription.
        match client
            .publish_with_reply_and_headers(fire.subject, reply, fire.headers, fire.body)
            .await
        {
            Ok(()) => acks.sent(token),
            Err(e) => results.push((token, Published::Failed(e.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(payload: &'static str, status: Option<StatusCode>) -> async_nats::Message {
        async_nats::Message {
            subject: Subject::from_static("_INBOX.x.7"),
            reply: None,
            payload: Bytes::from_static(payload.as_bytes()),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn reads_acks_refusals_and_garbage() {
        assert_eq!(
            outcome_of(&reply(r#"{"stream":"POLOS_RUNS","seq":12}"#, None)),
            Published::Stored { duplicate: false }
        );
        assert_eq!(
            outcome_of(&reply(
                r#"{"stream":"POLOS_RUNS","seq":12,"duplicate":true}"#,
                None
            )),
            Published::Stored { duplicate: true }
        );
        let refused = outcome_of(&reply(
            r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
            None,
        ));
        assert!(
            matches!(&refused, Published::Failed(e) if e.contains("maximum messages exceeded")),
            "{refused:?}"
        );
        let none = outcome_of(&reply("", Some(StatusCode::NO_RESPONDERS)));
        assert!(
            matches!(&none, Published::Failed(e) if e.contains("polos streams apply")),
            "{none:?}"
        );
        let garbage = outcome_of(&reply("not json", None));
        assert!(
            matches!(&garbage, Published::Failed(e) if e.contains("unreadable")),
            "{garbage:?}"
        );
    }

    #[test]
    fn decimal_digits() {
        let mut out = BytesMut::new();
        for n in [0u64, 7, 10, 4096, u64::MAX] {
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }
}
