//! The seed's `end-of-day-sync`: an inline schedule with a time zone — 5:00 PM New York time,
//! following daylight saving time.
//!
//! ```text
//! cargo run --example end_of_day_sync
//! polos schedules next end-of-day-sync       # the next fires, as UTC instants
//! ```

use polos::model::SchedulePayload;
use polos::worker::{Schedule, Worker, Workflow, WorkflowContext, WorkflowError};
use serde_json::{json, Value};

async fn sync_to_warehouse() -> Result<u64, WorkflowError> {
    println!("copying today's rows to the warehouse");
    Ok(1_204)
}

async fn end_of_day_sync(
    ctx: WorkflowContext,
    payload: SchedulePayload,
) -> Result<Value, WorkflowError> {
    println!("Syncing at {} Eastern Time", payload.timestamp);

    let rows = ctx.step.run("sync_data", sync_to_warehouse).await?;
    Ok(json!({"status": "synced", "rows": rows}))
}

/// The workflow this example declares (`polos dev` runs it too).
pub fn workflow() -> Workflow {
    Workflow::new("end-of-day-sync", end_of_day_sync).schedule(
        Schedule::cron("0 17 * * *") // 5:00 PM
            .timezone("America/New_York"),
    )
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
