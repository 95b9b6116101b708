//! The ticker: fires every schedule on time, exactly once, across restarts, failover and DST
//! (ARCHITECTURE.md, "The scheduler"). Runs inside `polos scheduler`.
//!
//! | file | concept |
//! |---|---|
//! | `clock` | injected time: [`SystemClock`], [`ManualClock`] for tests |
//! | `index` | schedule table + timeline ordered by next instant, interned crons |
//! | `loader` | full read then live follow of a KV bucket, caught-up detection |
//! | `lease` | leadership among replicas in KV `polos_leases` |
//! | `fence` | the lease deadline fires are checked against (boot clock) |
//! | `phase` | the ticker's state machine: loading, standby, taking over, leading |
//! | `catchup` | the `latest` / `all` / `skip` policies, the firing grace, jitter and bounds, pure |
//! | `rate` | the back-fill rate (a token bucket), pure |
//! | `publisher` | the publishing task: pipelined, fenced, results back to the loop |
//! | `state` | batched, retried writes of `polos_schedule_state` (and `max_runs` fires recorded ahead) and why they keep fires exact |
//! | `status` | [`TickerStatus`]: leading, schedules, fires, next fire |
//! | `driver` | the firing loop: applies changes, takes over, fires due schedules, retries, back-fills |
//! | `runner` | the public entry wiring it all: [`Ticker`], [`run`] |

mod catchup;
mod clock;
mod driver;
mod error;
mod fence;
mod index;
mod lease;
mod loader;
mod phase;
mod publisher;
mod rate;
mod runner;
mod state;
mod status;

pub use catchup::{plan, CatchupPlan, CatchupSettings, Jitter, LATE_GRACE, MAX_SCAN};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::TickerError;
pub use lease::LeaseValue;
pub use runner::{run, Ticker};
pub use status::TickerStatus;
