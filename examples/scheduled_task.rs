//! The seed's `scheduled-task` (every 6 hours): prints every field of the `SchedulePayload`.
//!
//! ```text
//! cargo run --example scheduled_task
//! polos schedules trigger scheduled-task     # a manual fire: timestamp = now
//! ```

mod common;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, client) = common::connect().await?;

    Worker::from_config(client, &config)
        .workflow(Workflow::new("scheduled-task", scheduled_task).schedule("0 */6 * * *"))
        .run(common::ctrl_c())
        .await?;
    Ok(())
}
