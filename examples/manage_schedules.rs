//! The seed's "Managing schedules via API": a global schedule for `cleanup-task`, a per-user one
//! for `user-notification`, then the same call again with a new time — which updates it (same
//! schedule id) instead of creating a second one. A client only: no worker runs here.
//!
//! ```text
//! polos dev
//! cargo run --example manage_schedules
//! ```

mod common;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_config, client) = common::connect().await?;

    // Global schedule (one per workflow)
    let schedule_id =
        common::create_schedule(&client, "cleanup-task", "0 3 * * *", "UTC", "global").await?; // 3 AM daily
    println!("cleanup-task: {schedule_id}");

    // Per-user schedule
    let schedule_id = common::create_schedule(
        &client,
        "user-notification",
        "0 12 * * *", // Noon daily
        "America/Chicago",
        "user_789",
    )
    .await?;
    println!("user-notification/user_789: {schedule_id}");

    // Calling create() with the same workflow and key updates it
    let updated = common::create_schedule(
        &client,
        "user-notification",
        "0 15 * * *", // Change to 3 PM
        "America/Chicago",
        "user_789", // Same key = update
    )
    .await?;
    println!("updated, same id: {}", updated == schedule_id);
    Ok(())
}
