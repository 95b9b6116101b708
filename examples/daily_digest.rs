//! The documentation's per-user schedules: `daily-digest` is schedulable, and `setup_user_schedule`
//! gives each user their own 8 AM schedule in their own zone (`user_123` in New York,
//! `user_456` in London). Calling it again with the same user updates, never duplicates.
//!
//! ```text
//! polos dev
//! cargo run --example daily_digest
//! polos schedules list --workflow daily-digest   # two schedules, two zones
//! polos schedules trigger daily-digest --key user_456
//! polos runs list --workflow daily-digest
//! ```

use polos::model::SchedulePayload;
use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
use polos::{schedules, PolosClient};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: String,
    email: String,
}

async fn get_user(user_id: &str) -> Result<User, WorkflowError> {
    Ok(User {
        id: user_id.to_string(),
        email: format!("{user_id}@example.com"),
    })
}

async fn create_digest(user: &User) -> Result<String, WorkflowError> {
    Ok(format!("3 new items for {}", user.id))
}

async fn send_email(email: &str, digest: &str) -> Result<(), WorkflowError> {
    println!("to {email}: {digest}");
    Ok(())
}

async fn daily_digest(
    ctx: WorkflowContext,
    payload: SchedulePayload,
) -> Result<Value, WorkflowError> {
    let user_id = payload.key; // Get user from schedule key

    // Fetch user-specific data
    let user = ctx.step.run("get_user", || get_user(&user_id)).await?;
    let digest = ctx.step.run("generate", || create_digest(&user)).await?;
    ctx.step
        .run("send", || send_email(&user.email, &digest))
        .await?;

    Ok(json!({"user_id": user_id, "sent": true}))
}

/// The workflow this example declares (`polos dev` runs it too).
pub fn workflow() -> Workflow {
    Workflow::new("daily-digest", daily_digest).schedulable()
}

// ---- Per-user schedules ---------------------------------------------------------------------

struct Preferences {
    timezone: &'static str,
}

async fn setup_user_schedule(
    client: &PolosClient,
    user_id: &str,
    preferences: &Preferences,
) -> Result<String, polos::client::ClientError> {
    // Create/update per-user schedule
    let schedule_id = schedules::create(
        client,
        "daily-digest",
        "0 8 * * *", // 8 AM
        preferences.timezone,
        user_id, // Unique per user
    )
    .await?;

    Ok(schedule_id)
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

    // Each user gets their own schedule
    for (user_id, preferences) in [
        (
            "user_123",
            Preferences {
                timezone: "America/New_York",
            },
        ),
        (
            "user_456",
            Preferences {
                timezone: "Europe/London",
            },
        ),
    ] {
        match setup_user_schedule(&client, user_id, &preferences).await {
            Ok(id) => println!("{user_id}: schedule {id} at 8 AM {}", preferences.timezone),
            Err(e) => eprintln!("{user_id}: could not create the schedule: {e}"),
        }
    }
    worker.await??;
    Ok(())
}
