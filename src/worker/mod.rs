//! Workers: declare workflows, register them, consume their runs, execute durable steps.
//!
//! | file | concept |
//! |---|---|
//! | `workflow.rs` | [`Workflow`] and [`Schedule`]: id, inline schedule or schedulable, handler |
//! | `context.rs` | [`WorkflowContext`] and [`Step`]: run identity, `ctx.step.run(...)` |
//! | `runtime.rs` | [`Worker`]: validation, registration, one fetch loop per workflow, shutdown |
//! | `registration.rs` | `polos_workflows` record, declarative sync of the inline `global` schedule |
//! | `consumer.rs` | the shared durable consumer per workflow; the fetch loop (no more fires than free slots, re-creates a lost consumer) |
//! | `slots.rs` | the fetch loop's free slots, each held by one execution until its handler returns |
//! | `claim.rs` | who executes a delivered fire: claim the run record by create or compare-and-swap |
//! | `overlap.rs` | the overlap policy: may a fire start while another run of its schedule executes (`polos_overlap`) |
//! | `cancel.rs` | a run's cancellation: requested in `polos_cancels`, seen at step boundaries and by the handler |
//! | `views.rs` | followed in memory: each schedule's overlap policy, each run's cancel request |
//! | `retry.rs` | [`RetryPolicy`]: attempts and backoff of a workflow or of one step |
//! | `run.rs` | one run's lifecycle: claim, handler in its own task with a timeout, final CAS write, answer |
//! | `hold.rs` | holding the fire while it runs: in-progress acks, the hold's deadline, confirmed answers |
//! | `stats.rs` | [`WorkerStats`]: counters of runs, duplicates, rejected fires, lost consumers |
//! | `error.rs` | [`WorkflowError`] (retryable or terminal, source kept), [`ErrorExt`] / [`ResultExt`], [`WorkerError`] |
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

mod cancel;
mod claim;
mod consumer;
mod context;
mod error;
mod hold;
mod overlap;
mod registration;
mod retry;
mod run;
mod runtime;
mod slots;
mod stats;
mod views;
mod workflow;

pub use consumer::consumer_name;
pub use context::{RetryingStep, Step, WorkflowContext};
pub use error::{ErrorExt, IntoWorkflowError, ResultExt, WorkerError, WorkflowError};
pub use overlap::MAX_WAITING;
pub use registration::SyncOutcome;
pub use retry::RetryPolicy;
pub use runtime::Worker;
pub use stats::{WorkerStats, WorkerStatsSnapshot};
pub use workflow::{Schedule, Workflow};
