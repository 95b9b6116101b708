//! Permission violations, turned from a silent timeout into an error within a second.
//!
//! When NATS refuses a publish or a subscription it does not fail the call: the server sends
//! `-ERR 'Permissions Violation for Publish to "…"'` on the connection, async-nats hands it to
//! the connection's event callback, and the request itself waits for a reply that never comes
//! (a KV write then fails after the JetStream timeout with "timed out"). [`crate::nats::connect`]
//! installs a callback that logs each violation once and broadcasts it to [`Denials`]; code that
//! waits on NATS wraps the wait in [`Denials::guard`], which ends it as soon as a violation of
//! one of the operation's own subjects arrives.
//!
//! Matching is by subject, never by "any violation during the call": the API runs many writes at
//! once, and another key's refusal must not fail a write that succeeded. A refused
//! subscription to the reply inbox fails every request of the connection (nothing can come
//! back), so it is remembered until the next reconnect and fails guarded calls at once.
//!
//! A connection made without [`crate::nats::connect`] has no callback: its guards simply wait
//! for the operation, as before.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use async_nats::{Event, ServerError, Statistics};
use thiserror::Error;
use tokio::sync::broadcast;

/// What the server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Publishing (a request, a KV write, an ack) to the subject.
    Publish,
    /// Subscribing to the subject (replies, a service endpoint).
    Subscribe,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish to",
            Action::Subscribe => "subscribe to",
        })
    }
}

/// The server refused an action of this connection's user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Error)]
#[error("permission denied: {action} {subject}")]
pub struct PermissionDenied {
    /// What was refused.
    pub action: Action,
    /// The subject, as the server reported it.
    pub subject: String,
}

impl PermissionDenied {
    /// Reads a server error text such as `Permissions Violation for Publish to "foo.bar"`;
    /// `None` for any other error.
    pub fn parse(text: &str) -> Option<PermissionDenied> {
        let rest = text.trim().strip_prefix("Permissions Violation for ")?;
        let (action, rest) = if let Some(r) = rest.strip_prefix("Publish with Reply of ") {
            // The reply subject is what the user may not subscribe to.
            (Action::Subscribe, r)
        } else if let Some(r) = rest.strip_prefix("Publish to ") {
            (Action::Publish, r)
        } else if let Some(r) = rest.strip_prefix("Subscription to ") {
            (Action::Subscribe, r)
        } else {
            return None;
        };
        let subject = rest.strip_prefix('"')?.split('"').next()?.to_string();
        Some(PermissionDenied { action, subject })
    }

    /// Whether this refusal is of one of `patterns` (NATS subjects; `*` and `>` wildcards).
    pub fn concerns(&self, patterns: &[&str]) -> bool {
        patterns.iter().any(|p| subject_matches(p, &self.subject))
    }
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// One connection's violations.
#[derive(Debug)]
struct Watch {
    /// The connection's reply prefix: a refused subscription under it means no reply can come.
    inbox_prefix: String,
    /// Each violation as it arrives, to wake guards waiting on its subject.
    tx: broadcast::Sender<PermissionDenied>,
    /// A refused inbox subscription, kept until the connection reconnects.
    inbox: Mutex<Option<PermissionDenied>>,
    /// Violations already logged, so a refused subject repeated in a loop is logged once.
    logged: Mutex<HashSet<PermissionDenied>>,
}

/// Most distinct violations logged per connection; past that they are only counted as errors of
/// the calls that hit them.
const MAX_LOGGED: usize = 1024;

impl Watch {
    /// A refused subscription to this connection's own replies: every request is affected.
    fn is_own_inbox(&self, denied: &PermissionDenied) -> bool {
        denied.action == Action::Subscribe
            && denied
                .subject
                .strip_prefix(&self.inbox_prefix)
                .is_some_and(|rest| rest.starts_with('.'))
    }

    fn record(&self, denied: PermissionDenied) {
        if self.is_own_inbox(&denied) {
            if let Ok(mut inbox) = self.inbox.lock() {
                *inbox = Some(denied.clone());
            }
        }
        let first = self
            .logged
            .lock()
            .map(|mut seen| seen.len() < MAX_LOGGED && seen.insert(denied.clone()))
            .unwrap_or(false);
        if first {
            tracing::error!(
                action = %denied.action,
                subject = %denied.subject,
                "{denied}: this NATS user lacks the permission; `polos permissions <role>` prints what each role needs"
            );
        }
        // No receiver just means no guarded call is waiting right now.
        let _ = self.tx.send(denied);
    }
}

/// Connections made by [`crate::nats::connect`], found again from any clone of their client.
///
/// async-nats' `Client` has no slot for our data, but every clone shares one `Statistics`
/// allocation for the life of the connection (reconnects included), so its address identifies
/// the connection. Entries hold it weakly and are dropped with the connection.
static WATCHES: Mutex<Vec<(Weak<Statistics>, Arc<Watch>)>> = Mutex::new(Vec::new());

/// The event callback half: installed on the options before connecting.
#[derive(Debug, Clone)]
pub(crate) struct Recorder(Arc<Watch>);

impl Recorder {
    /// A recorder for a connection whose replies come to `inbox_prefix`.
    pub(crate) fn new(inbox_prefix: &str) -> Recorder {
        let (tx, _) = broadcast::channel(256);
        Recorder(Arc::new(Watch {
            inbox_prefix: inbox_prefix.to_string(),
            tx,
            inbox: Mutex::new(None),
            logged: Mutex::new(HashSet::new()),
        }))
    }

    /// Handles one connection event.
    pub(crate) fn on_event(&self, event: &Event) {
        match event {
            Event::ServerError(ServerError::Other(text)) => {
                if let Some(denied) = PermissionDenied::parse(text) {
                    self.0.record(denied);
                }
            }
            // A new connection subscribes its inbox again; whether that is allowed shows anew.
            Event::Connected => {
                if let Ok(mut inbox) = self.0.inbox.lock() {
                    *inbox = None;
                }
            }
            _ => {}
        }
    }

    /// Associates the connected client with this recorder.
    pub(crate) fn attach(&self, client: &async_nats::Client) {
        if let Ok(mut watches) = WATCHES.lock() {
            watches.retain(|(stats, _)| stats.strong_count() > 0);
            watches.push((Arc::downgrade(&client.statistics()), self.0.clone()));
        }
    }
}

/// The violations of one connection, for guarding calls on it. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Denials(Option<Arc<Watch>>);

impl Denials {
    /// The violations of `client`'s connection; empty (guards only wait) when it was not made
    /// by [`crate::nats::connect`].
    pub fn of(client: &async_nats::Client) -> Denials {
        let stats = Arc::as_ptr(&client.statistics());
        let found = WATCHES.lock().ok().and_then(|watches| {
            watches
                .iter()
                .find(|(s, _)| std::ptr::eq(s.as_ptr(), stats))
                .map(|(_, watch)| watch.clone())
        });
        Denials(found)
    }

    /// Runs `operation`, unless the server refuses one of `subjects` (patterns with `*`/`>`)
    /// or the reply inbox first: then the refusal is returned at once.
    ///
    /// ```no_run
    /// # async fn f(client: async_nats::Client, kv: async_nats::jetstream::kv::Store) {
    /// use polos::nats::Denials;
    /// let denials = Denials::of(&client);
    /// match denials.guard(&["$KV.polos_schedules.wf.key"], kv.put("wf.key", "{}".into())).await {
    ///     Ok(written) => { /* the put's own result */ }
    ///     Err(denied) => eprintln!("{denied}"), // permission denied: publish to $KV.…
    /// }
    /// # }
    /// ```
    pub async fn guard<F: Future>(
        &self,
        subjects: &[&str],
        operation: F,
    ) -> Result<F::Output, PermissionDenied> {
        let Some(watch) = &self.0 else {
            return Ok(operation.await);
        };
        // Subscribe before the operation sends anything, so its refusal cannot slip past.
        let mut refusals = watch.tx.subscribe();
        if let Some(inbox) = watch.inbox.lock().ok().and_then(|i| i.clone()) {
            return Err(inbox);
        }
        let refused = async {
            loop {
                match refusals.recv().await {
                    Ok(denied) if denied.concerns(subjects) || watch.is_own_inbox(&denied) => {
                        return denied
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    // The recorder lives as long as the connection; if it is gone, only the
                    // operation can end the wait.
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            biased;
            output = operation => Ok(output),
            denied = refused => Err(denied),
        }
    }

    /// Like [`Denials::guard`], ending at any refusal on the connection: for one-shot commands
    /// that do one thing at a time, where every refusal is this operation's.
    pub async fn guard_any<F: Future>(&self, operation: F) -> Result<F::Output, PermissionDenied> {
        self.guard(&[">"], operation).await
    }

    /// Starts listening for refusals from now on, for a long-lived task that must notice one
    /// whenever it comes (the API service stops when its subscriptions are refused).
    pub fn listen(&self) -> Refusals {
        Refusals(self.0.as_ref().map(|watch| watch.tx.subscribe()))
    }
}

/// Refusals of one connection since [`Denials::listen`].
#[derive(Debug)]
pub struct Refusals(Option<broadcast::Receiver<PermissionDenied>>);

impl Refusals {
    /// Waits for the next refusal of `action` on one of `subjects`; never resolves on a
    /// connection that is not watched.
    pub async fn next_of(&mut self, action: Action, subjects: &[&str]) -> PermissionDenied {
        let Some(rx) = &mut self.0 else {
            return std::future::pending().await;
        };
        loop {
            match rx.recv().await {
                Ok(denied) if denied.action == action && denied.concerns(subjects) => {
                    return denied
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_servers_violation_texts() {
        assert_eq!(
            PermissionDenied::parse(
                r#"Permissions Violation for Publish to "$KV.polos_schedules.user-reminder.u1""#
            ),
            Some(PermissionDenied {
                action: Action::Publish,
                subject: "$KV.polos_schedules.user-reminder.u1".into()
            })
        );
        assert_eq!(
            PermissionDenied::parse(
                r#"Permissions Violation for Subscription to "polos.schedules.upsert" using queue "q""#
            ),
            Some(PermissionDenied {
                action: Action::Subscribe,
                subject: "polos.schedules.upsert".into()
            })
        );
        assert_eq!(
            PermissionDenied::parse(
                r#"Permissions Violation for Publish with Reply of "_INBOX.x.y""#
            )
            .map(|d| d.action),
            Some(Action::Subscribe)
        );
        assert_eq!(PermissionDenied::parse("Authorization Violation"), None);
        assert_eq!(
            PermissionDenied::parse("Permissions Violation for Publish to no-quotes"),
            None
        );
    }

    #[test]
    fn the_message_names_the_action_and_subject() {
        let d = PermissionDenied {
            action: Action::Publish,
            subject: "$KV.polos_schedules.a.b".into(),
        };
        assert_eq!(
            d.to_string(),
            "permission denied: publish to $KV.polos_schedules.a.b"
        );
    }

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches(">", "$KV.x.y"));
    }

    #[test]
    fn a_refusal_concerns_its_own_subject_and_the_own_inbox_only() {
        let other_key = PermissionDenied {
            action: Action::Publish,
            subject: "$KV.polos_schedules.wf.other".into(),
        };
        assert!(!other_key.concerns(&["$KV.polos_schedules.wf.key"]));
        assert!(other_key.concerns(&["$KV.polos_schedules.wf.other"]));
        let watch = Recorder::new("_INBOX.me").0;
        let own = PermissionDenied {
            action: Action::Subscribe,
            subject: "_INBOX.me.abc.*".into(),
        };
        assert!(watch.is_own_inbox(&own));
        // Trying to read someone else's replies is refused, and fails nothing of ours.
        for subject in ["_INBOX.other.>", "_INBOX.meow.x"] {
            let foreign = PermissionDenied {
                action: Action::Subscribe,
                subject: subject.into(),
            };
            assert!(!watch.is_own_inbox(&foreign), "{subject}");
        }
    }

    #[tokio::test]
    async fn a_guard_without_a_recorder_just_waits() {
        let denials = Denials::default();
        assert_eq!(denials.guard(&["x"], async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_matching_refusal_ends_the_wait_and_others_do_not() {
        let recorder = Recorder::new("_INBOX");
        let denials = Denials(Some(recorder.0.clone()));
        let refused = Event::ServerError(ServerError::Other(
            r#"Permissions Violation for Publish to "polos.schedules.upsert""#.into(),
        ));
        let unrelated = Event::ServerError(ServerError::Other(
            r#"Permissions Violation for Publish to "polos.schedules.delete""#.into(),
        ));
        let pending = denials.guard(&["polos.schedules.upsert"], std::future::pending::<()>());
        let fire = async {
            tokio::task::yield_now().await;
            recorder.on_event(&unrelated);
            recorder.on_event(&refused);
        };
        let (result, ()) = tokio::join!(pending, fire);
        assert_eq!(
            result.unwrap_err().to_string(),
            "permission denied: publish to polos.schedules.upsert"
        );
    }

    #[tokio::test]
    async fn a_listener_sees_only_the_refusals_it_asks_for() {
        let recorder = Recorder::new("_INBOX");
        let mut refusals = Denials(Some(recorder.0.clone())).listen();
        for text in [
            r#"Permissions Violation for Publish to "polos.runs.wf""#,
            r#"Permissions Violation for Subscription to "polos.schedules.get" using queue "q""#,
        ] {
            recorder.on_event(&Event::ServerError(ServerError::Other(text.into())));
        }
        let denied = refusals.next_of(Action::Subscribe, &["polos.>"]).await;
        assert_eq!(
            denied.subject, "polos.schedules.get",
            "the publish refusal is skipped"
        );
    }
}
