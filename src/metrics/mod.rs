//! Prometheus metrics: every metric polos exports, the registry, the OpenMetrics text encoding
//! and the HTTP endpoint that serves it (`GET /metrics`).
//!
//! | file | concept |
//! |---|---|
//! | `registry` | [`Metrics`]: the metric definitions and one typed method per thing recorded |
//! | `addr` | [`HttpAddr`], [`bind`]: where to listen; a reachable address needs a token |
//! | `http` | the token check and the `/metrics` route, `serve_metrics` (feature `http`: axum) |
//! | `error` | [`HttpError`] |
//!
//! A [`Metrics`] is a cheap handle (`Clone` shares the same registry). `polos scheduler` hands one
//! to its ticker and API; a [`Worker`](crate::worker::Worker) keeps its own unless given one;
//! `polos dev` shares one between all its parts. Each call site is one line:
//!
//! ```
//! use polos::metrics::{Metrics, RunOutcome};
//! use polos::model::Trigger;
//! use std::time::Duration;
//!
//! let metrics = Metrics::new();
//! metrics.fired("daily-report", Trigger::Schedule, chrono::TimeDelta::milliseconds(2), false);
//! metrics.run_finished("daily-report", RunOutcome::Completed, Duration::from_millis(40));
//! assert!(metrics.encode().contains("polos_fires_total{workflow=\"daily-report\",trigger=\"schedule\"} 1"));
//! ```
//!
//! Labels are bounded by what code declares (workflows, steps, endpoints, error codes): schedule
//! keys and run ids never become labels, so 100,000 per-user schedules cost no extra series.

mod addr;
mod error;
#[cfg(feature = "http")]
mod http;
mod registry;

pub use addr::{bind, HttpAddr};
pub use error::HttpError;
#[cfg(feature = "http")]
pub use http::{check_token, metrics_router, require_token, serve_metrics, TOKEN_COOKIE};
#[cfg(feature = "http")]
pub(crate) use http::{serve_router, urlencode};
pub use registry::{InFlight, Metrics, RunOutcome, OPENMETRICS_CONTENT_TYPE};
