//! The documentation's `end-of-day-sync`: an inline schedule with a time zone — 5:00 PM New York time,
//! following daylight saving time. It also shows retry policies: the warehouse copy is tried 3
//! times in place before the attempt fails, and the run up to 5 times, a minute apart at first.
//!
//! ```text
//! cargo run --example end_of_day_sync
//! polos schedules next end-of-day-sync       # the next fires, as UTC instants
//! ```

use std::time::Duration;

use polos::model::SchedulePayload;
use polos::worker::{RetryPolicy, Schedule, Worker, Workflow, WorkflowContext, WorkflowError};
use serde_json::{json, Value};

async fn sync_to_warehouse() -> Result<u64, std::io::Error> {
    println!("copying today's rows to the warehouse");
    Ok(1_204)
}

async fn end_of_day_sync(
    ctx: WorkflowContext,
    payload: SchedulePayload,
) -> Result<Value, WorkflowError> {
    println!("Syncing at {} Eastern Time", payload.timestamp);

    // A dropped connection is tried again right here, without failing the whole attempt.
    let rows = ctx
        .step
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(2),
            ..RetryPolicy::default()
        })
        .run("sync_data", sync_to_warehouse)
        .await?;
    Ok(json!({"status": "synced", "rows": rows}))
}

/// The workflow this example declares (`polos dev` runs it too).
pub fn workflow() -> Workflow {
    Workflow::new("end-of-day-sync", end_of_day_sync)
        .schedule(
            Schedule::cron("0 17 * * *") // 5:00 PM
                .timezone("America/New_York"),
        )
        // Instead of the worker's settings: 5 attempts, 1 min, 2 min, 4 min, 8 min apart.
        .retry(RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(60),
            ..RetryPolicy::default()
        })
}

#[tokio::main]
async fn main() -> Result<(), polos::client::MainError> {
    let (config, client) = polos::client::connect_from_env().await?;
    polos::cli::init_logging(&config);

    Worker::from_config(client, &config)
        .workflow(workflow())
        .run(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}
