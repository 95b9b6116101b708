//! polos — scheduled, durable workflows for Rust on NATS JetStream.
//!
//! # Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`model`] | the contract: ids, key encoding, KV records, `SchedulePayload`, subject names |
//! | [`cron`] | pure cron + time-zone engine: parse, normalize into saffron, DST rules, `next_after` |
//! | [`config`] | figment layers: defaults < `polos.toml` < `POLOS_*` env < flags |
//! | [`nats`] | connecting with auth (secrets masked), permission refusals as errors, least-privilege permissions per role, applying `streams/*.json`, running a local `nats-server` |
//! | [`store`] | typed reads and compare-and-swap writes over `polos_schedules`, `polos_schedule_state`, `polos_workflows`; the one owner of `polos_runs` and `polos_steps` |
//! | [`api`] | the schedules API: NATS micro service `polos` (`polos.schedules.*`, `polos.workflows.list`) |
//! | [`client`] | the Rust client: [`PolosClient`], [`schedules`] (`create`, `get`, `list`, …) and [`runs`] (`cancel`) over NATS requests |
//! | [`scheduler`] | the scheduler service: ticker + schedules API (+ dashboard), as `polos scheduler` and `polos dev` run it |
//! | [`ticker`] | the scheduler's ticker: load schedules, lease, timer on the earliest instant, pipelined fires, catch-up |
//! | [`worker`] | the SDK: `Workflow`, `WorkflowContext` + durable steps, `Worker` (registration, consumers, runs) |
//! | [`metrics`] | Prometheus metrics of the scheduler, API and workers, and the `/metrics` HTTP endpoint |
//! | [`web`] | the dashboard: server-rendered pages of schedules, runs and the load ahead |
//! | [`dev`] | `polos dev`: embedded nats-server, scheduler and the example workflows in one process tree |
//! | [`cli`] | the `polos` command line; `src/main.rs` only parses and dispatches |
//!
//! # How data flows
//!
//! Users upsert schedules (API service or straight into KV `polos_schedules`). The scheduler
//! watches that bucket, keeps a timer on the earliest due instant and publishes a
//! `SchedulePayload` to `polos.runs.<workflow>` (stream `POLOS_RUNS`) at each fire. Workers share
//! one durable consumer per workflow, record runs in `polos_runs` and step results in
//! `polos_steps`, so a redelivered run skips completed steps.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod cron;
pub mod dev;
pub mod metrics;
pub mod model;
pub mod nats;
pub mod scheduler;
pub mod store;
pub mod ticker;
pub mod web;
pub mod worker;

pub use client::{runs, schedules, PolosClient};

// Lets the example files compiled into `dev` (see `src/dev/examples.rs`) say `polos::…`.
extern crate self as polos;
