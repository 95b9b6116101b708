//! The documentation's `scheduled-task` (every 6 hours): prints every field of the `SchedulePayload`.
//!
//! ```text
//! cargo run --example scheduled_task
//! polos schedules trigger scheduled-task     # a manual fire: timestamp = now
//! ```

use polos::model::SchedulePayload;
use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
use serde_json::{json, Value};

async fn scheduled_task(
    _ctx: WorkflowContext,
    payload: SchedulePayload,
) -> Result<Value, WorkflowError> {
    // Access schedule information
    println!("Current run: {}", payload.timestamp);
    match payload.last_timestamp {
        Some(last) => println!("Last run: {last}"),
        None => println!("Last run: None (first run)"),
    }
    println!("Next run: {}", payload.upcoming);
    println!("Schedule ID: {}", payload.schedule_id);
    println!("Key: {}, timezone: {}", payload.key, payload.timezone);

    Ok(json!({"executed_at": payload.timestamp}))
}

/// The workflow this example declares (`polos dev` runs it too).
pub fn workflow() -> Workflow {
    Workflow::new("scheduled-task", scheduled_task).schedule("0 */6 * * *")
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
