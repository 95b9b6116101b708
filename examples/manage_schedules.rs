//! The documentation's "Managing schedules via API": a global schedule for `cleanup-task`, a per-user one
//! for `user-notification`, then the same call again with a new time — which updates it (same
//! schedule id) instead of creating a second one. A client only: no worker runs here.
//!
//! ```text
//! polos dev
//! cargo run --example manage_schedules
//! ```

use polos::{schedules, PolosClient};

#[tokio::main]
async fn main() -> Result<(), polos::client::MainError> {
    let (config, nats) = polos::client::connect_from_env().await?;
    polos::cli::init_logging(&config);
    let client = PolosClient::from_nats(nats); // the documentation's PolosClient()

    // Global schedule (one per workflow)
    let schedule_id =
        schedules::create(&client, "cleanup-task", "0 3 * * *", "UTC", "global").await?; // 3 AM daily
    println!("cleanup-task: {schedule_id}");

    // Per-user schedule
    let schedule_id = schedules::create(
        &client,
        "user-notification",
        "0 12 * * *", // Noon daily
        "America/Chicago",
        "user_789",
    )
    .await?;
    println!("user-notification/user_789: {schedule_id}");

    // Calling create() with the same workflow and key updates it
    let updated = schedules::create(
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
