//! The documentation's `user-reminder`: a workflow marked schedulable, plus a program that creates a
//! per-user schedule for it through the API (8:00 AM Los Angeles time for `user_123`).
//!
//! ```text
//! polos dev                                  # runs the scheduler that answers the API
//! cargo run --example user_reminder          # worker + creates the schedule, then waits
//! polos schedules list --workflow user-reminder
//! polos schedules trigger user-reminder --key user_123
//! ```

use polos::model::SchedulePayload;
use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
use polos::{schedules, PolosClient};
use serde_json::{json, Value};

async fn send_user_reminder(user_id: &str) -> Result<(), WorkflowError> {
    println!("sending reminder to {user_id}");
    Ok(())
}

// Define workflow as schedulable
async fn user_reminder(
    ctx: WorkflowContext,
    payload: SchedulePayload,
) -> Result<Value, WorkflowError> {
    let user_id = payload.key; // Schedule key (e.g., user ID)
    println!("Reminder for user {user_id} at {}", payload.timestamp);

    ctx.step
        .run("send_reminder", || send_user_reminder(&user_id))
        .await?;
    Ok(json!({"status": "sent"}))
}

/// The workflow this example declares (`polos dev` runs it too).
pub fn workflow() -> Workflow {
    Workflow::new("user-reminder", user_reminder).schedulable() // Can be scheduled via API
}

// ---- Create schedule via API ----------------------------------------------------------------

async fn schedule_user_reminders(client: &PolosClient) -> Result<(), polos::client::ClientError> {
    // Schedule per-user reminder
    let schedule_id = schedules::create(
        client,
        "user-reminder",
        "0 8 * * *", // 8:00 AM daily
        "America/Los_Angeles",
        "user_123", // Per-user schedule
    )
    .await?;

    println!("Created schedule: {schedule_id}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), polos::client::MainError> {
    let (config, client) = polos::client::connect_from_env().await?;
    polos::cli::init_logging(&config);

    let worker = Worker::from_config(client.clone(), &config)
        .workflow(workflow())
        .run(async {
            tokio::signal::ctrl_c().await.ok();
        });
    let worker = tokio::spawn(worker);

    let client = PolosClient::from_nats(client);
    if let Err(e) = schedule_user_reminders(&client).await {
        eprintln!("could not create the schedule: {e}");
    }
    worker.await??;
    Ok(())
}
