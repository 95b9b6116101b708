//! polos — scheduled, durable workflows for Rust on NATS JetStream.
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`model`] | the contract: ids, key encoding, KV records, `SchedulePayload`, subject names |
//! | [`cron`] | pure cron + time-zone engine: parse, normalize into saffron, DST rules, `next_after` |
//! | [`config`] | figment layers: defaults < `polos.toml` < `POLOS_*` env < flags |
//! | [`nats`] | connecting with auth (secrets masked), permission refusals as errors, least-privilege permissions per role, applying `streams/*.json`, (feature `server`) running a local `nats-server` |
//! | [`store`] | the one owner of each bucket: typed reads and compare-and-swap writes; the one bucket reader and tombstone rule |
//! | [`api`] | the schedules API's request and reply bodies and error codes; with `scheduler`, the NATS micro service `polos` |
//! | [`client`] | the Rust client: [`PolosClient`], [`schedules`] (`create`, `get`, `list`, …) and [`runs`] (`cancel`) over NATS requests |
//! | `scheduler` | (feature `scheduler`) the scheduler service: ticker + schedules API (+ dashboard), as `polos scheduler` and `polos dev` run it |
//! | `ticker` | (feature `scheduler`) the scheduler's ticker: load schedules, lease, timer on the earliest instant, pipelined fires, catch-up |
//! | [`worker`] | the SDK: `Workflow`, `WorkflowContext` + durable steps, `Worker` (registration, consumers, runs) |
//! | [`metrics`] | Prometheus metrics of the scheduler, API and workers, and (feature `http`) the `/metrics` HTTP endpoint |
//! | `web` | (feature `scheduler`) the dashboard: server-rendered pages of schedules, runs and the load ahead |
//! | `dev` | (feature `cli`) `polos dev`: embedded nats-server, scheduler and the example workflows in one process tree |
//! | `cli` | (feature `cli`) the `polos` command line; `src/main.rs` only parses and dispatches |
//!
//! A user's worker or client depends on the library without default features
//! (`polos = { version = "0.1", default-features = false }`): [`worker`], [`client`], [`model`],
//! [`cron`], [`config`], [`store`], [`metrics`], [`nats`] (connecting) and the request types of
//! [`api`]. The rest is what the `polos` binary runs, behind cargo features: `scheduler`
//! (`scheduler`, `ticker`, `web`, the API service), `http` (serving `/metrics`), `server` (a
//! local nats-server child, `nats::server`) and `cli` (`cli`, `dev`; the default).
//!
//! # How data flows
//!
//! Users upsert schedules (API service or straight into KV `polos_schedules`). The scheduler
//! watches that bucket, keeps a timer on the earliest due instant and publishes a
//! `SchedulePayload` to `polos.runs.<workflow>` (stream `POLOS_RUNS`) at each fire. Workers share
//! one durable consumer per workflow, record runs in `polos_runs` and step results in
//! `polos_steps`, so a redelivered run skips completed steps.

pub mod api;
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod config;
pub mod cron;
#[cfg(feature = "cli")]
pub mod dev;
pub mod metrics;
pub mod model;
pub mod nats;
#[cfg(feature = "scheduler")]
pub mod scheduler;
pub mod store;
#[cfg(feature = "scheduler")]
pub mod ticker;
#[cfg(feature = "scheduler")]
pub mod web;
pub mod worker;

pub use client::{runs, schedules, PolosClient};

// Lets the example files compiled into `dev` (see `src/dev/examples.rs`) say `polos::…`.
#[cfg(feature = "cli")]
extern crate self as polos;
