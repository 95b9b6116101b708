//! Everything about reaching NATS: connecting with the configured auth, applying the JetStream
//! definitions in `streams/`, and running a local `nats-server` (for `polos dev`, tests and
//! benchmarks).
//!
//! | file | what lives there |
//! |---|---|
//! | `connect.rs` | [`connect`]: every auth method, secrets from files, credentials in URLs |
//! | `url.rs` | credentials split off server URLs; [`redact`] for showing a URL |
//! | `denied.rs` | permission violations as errors within a second: [`Denials`], [`PermissionDenied`] |
//! | `permissions.rs` | least-privilege subjects per role, `polos permissions`, `deploy/nats/` |
//! | `streams.rs` | the JetStream definitions of `streams/` and `polos streams apply` |
//! | `server.rs` | a `nats-server` child process (dev, tests, benchmarks; feature `server`) |
//! | `writer.rs` | [`Writer`]: JetStream publishes of many concurrent callers, acks matched on one subscription |

mod connect;
mod denied;
pub mod permissions;
#[cfg(feature = "server")]
pub mod server;
pub mod streams;
mod url;
mod writer;

pub use connect::{connect, inbox_prefix, ConnectError, DEFAULT_INBOX};
pub use denied::{subject_matches, Action, Denials, PermissionDenied, Refusals};
pub use url::{redact, redact_all, split_credentials, BadUrl, UrlAuth};
pub use writer::{WriteError, Writer, ACK_TIMEOUT, WRONG_LAST_SEQUENCE};
