//! Workers: declare workflows, register them, consume their runs, execute durable steps.
//!
//! | file | concept |
//! |---|---|
//! | `workflow.rs` | [`Workflow`] and [`Schedule`]: id, inline schedule or schedulable, handler |
//! | `context.rs` | [`WorkflowContext`] and [`Step`]: run identity, `ctx.step.run(...)` |
//! | `runtime.rs` | [`Worker`]: validation, registration, one fetch loop per workflow, shutdown |
//! | `registration.rs` | `polos_workflows` record, declarative sync of the inline `global` schedule |
//! | `consumer.rs` | the shared durable consumer per workflow; the fetch loop (no more fires than free slots, re-creates a lost consumer) |
//! | `claim.rs` | who executes a delivered fire: claim the run record by create or compare-and-swap |
//! | `run.rs` | one run's lifecycle: claim, handler in its own task with a timeout, final CAS write, answer |
//! | `hold.rs` | holding the fire while it runs: in-progress acks, the hold's deadline, confirmed answers |
//! | `stats.rs` | [`WorkerStats`]: counters of runs, duplicates, rejected fires, lost consumers |
//! | `error.rs` | [`WorkflowError`] (retryable or terminal) and [`WorkerError`] |
//!
//! Run records and step results are read and written through [`crate::store::RunStore`] and
//! [`crate::store::StepStore`], their one owner.
//!
//! ```no_run
//! use polos::model::SchedulePayload;
//! use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
//!
//! async fn daily_report(ctx: WorkflowContext, payload: SchedulePayload) -> Result<serde_json::Value, WorkflowError> {
//!     println!("Report generated at: {}", payload.timestamp);
//!     let data: Vec<u32> = ctx.step.run("fetch_data", || async { Ok::<_, WorkflowError>(vec![1, 2, 3]) }).await?;
//!     let report = ctx.step.run("generate", || async { Ok::<_, WorkflowError>(format!("{data:?}")) }).await?;
//!     ctx.step.run("send", || async { println!("{report}"); Ok::<_, WorkflowError>(()) }).await?;
//!     Ok(serde_json::json!({"status": "completed"}))
//! }
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let config = polos::config::Config::from_env()?;
//! let client = polos::nats::connect(&config.nats).await?;
//! Worker::from_config(client, &config)
//!     .workflow(Workflow::new("daily-report", daily_report).schedule("0 9 * * *"))
//!     .run(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await?;
//! # Ok(()) }
//! ```

mod claim;
mod consumer;
mod context;
mod error;
mod hold;
mod registration;
mod run;
mod runtime;
mod stats;
mod workflow;

pub use consumer::consumer_name;
pub use context::{Step, WorkflowContext};
pub use error::{WorkerError, WorkflowError};
pub use registration::SyncOutcome;
pub use runtime::Worker;
pub use stats::{WorkerStats, WorkerStatsSnapshot};
pub use workflow::{Schedule, Workflow};
