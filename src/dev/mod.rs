//! `polos dev`: everything on one machine in one process tree — an embedded `nats-server`
//! (unless a NATS URL is configured), the scheduler (ticker + schedules API), the example
//! workflows of `examples/`, a demo schedule, and one printed line per run status change.
//!
//! | file | concept |
//! |---|---|
//! | `embedded` | [`EmbeddedServer`]: the `nats-server -js` child on loopback, data in `./.polos/` |
//! | `examples` | [`example_workflows`]: the workflows of `examples/*.rs`, compiled in |
//! | `lock` | [`DataDirLock`]: one `polos dev` per data directory |
//! | `demo` | the demo schedule `user-reminder` / `dev-demo`, every minute |
//! | `watch` | [`RunPrinter`]: follows KV `polos_runs`, one line per status change |
//! | `session` | [`run`]: wires it together until the shutdown future resolves |
//! | `error` | [`DevError`] |

mod demo;
mod embedded;
mod error;
mod examples;
mod lock;
mod session;
mod watch;

pub use demo::{DEMO_CRON, DEMO_KEY, DEMO_WORKFLOW};
pub use embedded::{EmbeddedServer, DEFAULT_DATA_DIR, DEFAULT_PORT};
pub use error::DevError;
pub use examples::example_workflows;
pub use lock::DataDirLock;
pub use session::{run, DevOptions, DEFAULT_DASHBOARD};
pub use watch::RunPrinter;
