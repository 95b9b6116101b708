//! All integration tests, in one binary (one link, shared fixtures). Each test starts its own
//! nats-server on a random loopback port with its own store; nothing depends on a server at 4222.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod it;
