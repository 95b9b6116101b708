//! Everything about reaching NATS: connecting with the configured auth, applying the JetStream
//! definitions in `streams/`, and running a local `nats-server` (for `polos dev`, tests and
//! benchmarks).

mod connect;
pub mod permissions;
pub mod server;
pub mod streams;

pub use connect::{connect, ConnectError};
