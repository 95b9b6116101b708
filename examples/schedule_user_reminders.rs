//! The seed's "Create schedule via API": one per-user schedule for the schedulable workflow
//! `user-reminder`.
//!
//! Needs a running scheduler (`polos dev`, or `polos scheduler` against your NATS); reads the
//! NATS address from `polos.toml` / `POLOS_NATS__URL` like every polos program.
//!
//! ```sh
//! cargo run --example schedule_user_reminders
//! ```

use polos::{schedules, PolosClient};

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
async fn main() -> anyhow::Result<()> {
    let client = PolosClient::from_env().await?;
    schedule_user_reminders(&client).await?;
    Ok(())
}
