//! Holding a fire message while its run executes: the [`Hold`] (until when this worker is
//! certain nobody else has the message), in-progress acks that extend it, and answers the
//! server confirms.
//!
//! The server redelivers a message when `ack_wait` passes without an answer; an in-progress
//! ack restarts that clock. A worker only knows the clock restarted when the server confirms an
//! in-progress ack, and only from the moment it sent it. So the hold ends `window` (two thirds
//! of `ack_wait`, a third left for delivery latency) after the delivery arrived or after the
//! last confirmed in-progress ack was sent, and once it has ended it stays ended: a redelivery
//! may have happened meanwhile, and later acks cannot undo that (the server takes an
//! in-progress ack for the message from any of its deliveries).

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use futures::future::Either;
use tokio::time::Instant;
use tracing::debug;

/// How long the server has to confirm one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at a confirmed ack or term before it is reported as unconfirmed.
const ANSWER_TRIES: u32 = 3;

/// Until when this worker is certain the server has not given its message to another worker.
#[derive(Debug)]
pub(crate) struct Hold {
    /// How long one confirmation (or the delivery itself) keeps the message ours.
    window: Duration,
    /// Guarded together: a deadline is only extended by an ack sent before it passed.
    state: Mutex<HoldState>,
}

#[derive(Debug)]
struct HoldState {
    /// The hold ends here unless a confirmed in-progress ack moves it.
    deadline: Instant,
    /// Sticky: the deadline passed (or another execution showed itself) at least once.
    lapsed: bool,
}

impl Hold {
    /// The hold of a message received at `received` from a consumer with `ack_wait`.
    pub fn new(received: Instant, ack_wait: Duration) -> Hold {
        let window = ack_wait.mul_f64(2.0 / 3.0);
        Hold {
            window,
            state: Mutex::new(HoldState {
                deadline: received + window,
                lapsed: false,
            }),
        }
    }

    /// Whether the message is certainly still ours alone.
    pub fn holds(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.lapsed && Instant::now() >= state.deadline {
            state.lapsed = true;
        }
        !state.lapsed
    }

    /// An in-progress ack sent at `sent` was confirmed by the server.
    fn confirmed(&self, sent: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.lapsed || sent >= state.deadline {
            state.lapsed = true;
        } else {
            state.deadline = state.deadline.max(sent + self.window);
        }
    }

    /// Ends the hold for good (another execution of the run showed itself).
    pub fn lapse(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lapsed = true;
    }
}

/// Runs `work` while sending an in-progress ack for `message` every `every`; each one the server
/// confirms extends `hold`.
pub(crate) async fn keep<F: Future>(
    message: &Message,
    hold: &Hold,
    every: Duration,
    work: F,
) -> F::Output {
    let progress = async {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sent = Instant::now();
            match confirm_once(message, AckKind::Progress).await {
                Ok(()) => hold.confirmed(sent),
                Err(e) => debug!(error = %e, "in-progress ack not confirmed"),
            }
        }
    };
    tokio::pin!(work);
    tokio::pin!(progress);
    match futures::future::select(work, progress).await {
        Either::Left((output, _)) => output,
        // The progress loop never ends; finish the work if it somehow does.
        Either::Right(((), work)) => work.await,
    }
}

/// Sends `kind` (an ack or a term) and waits until the server confirms it, a few times if
/// needed. A lost answer would leave the server to redeliver a finished run.
pub(crate) async fn confirm(message: &Message, kind: AckKind) -> Result<(), async_nats::Error> {
    let mut delay = Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match confirm_once(message, kind).await {
            Ok(()) => return Ok(()),
            Err(e) if tries >= ANSWER_TRIES => return Err(e),
            Err(e) => {
                debug!(error = %e, tries, "answer not confirmed; sending it again");
                tokio::time::sleep(delay).await;
                delay *= 2;
                tries += 1;
            }
        }
    }
}

/// Sends `kind` without waiting for the server: for naks, whose loss only means the server
/// redelivers after `ack_wait` instead of after the delay asked for.
pub(crate) async fn answer_unconfirmed(
    message: &Message,
    kind: AckKind,
) -> Result<(), async_nats::Error> {
    message.ack_with(kind).await
}

/// One confirmed answer: a request on the message's ack subject, which the server answers once
/// it has applied it.
async fn confirm_once(message: &Message, kind: AckKind) -> Result<(), async_nats::Error> {
    let reply = message
        .message
        .reply
        .clone()
        .ok_or("the message has no reply subject, so it is not a JetStream delivery")?;
    let client = message.context.client();
    let request = client.request(reply, kind.into());
    tokio::time::timeout(ANSWER_TIMEOUT, request)
        .await
        .map_err(|_| format!("the server did not confirm within {ANSWER_TIMEOUT:?}"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_hold_ends_after_its_window_and_stays_ended() {
        let hold = Hold::new(Instant::now(), Duration::from_secs(3));
        assert!(hold.holds());
        tokio::time::advance(Duration::from_millis(1500)).await;
        // Confirmed while held: extended to 2 s after it was sent.
        hold.confirmed(Instant::now());
        tokio::time::advance(Duration::from_millis(1900)).await;
        assert!(hold.holds(), "extended by the confirmed ack");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!hold.holds());
        // A confirmation after a gap does not bring it back: a redelivery may have happened.
        hold.confirmed(Instant::now());
        assert!(!hold.holds());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_sent_after_the_deadline_does_not_extend_an_unobserved_gap() {
        let hold = Hold::new(Instant::now(), Duration::from_secs(3));
        // Nobody looked while the thread was stalled past the deadline.
        tokio::time::advance(Duration::from_secs(5)).await;
        hold.confirmed(Instant::now());
        assert!(!hold.holds());
    }

    #[tokio::test(start_paused = true)]
    async fn lapse_is_final() {
        let hold = Hold::new(Instant::now(), Duration::from_secs(30));
        hold.lapse();
        hold.confirmed(Instant::now());
        assert!(!hold.holds());
    }
}
