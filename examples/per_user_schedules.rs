//! The seed's "Per-user schedules" and "Managing schedules via API": one `daily-digest`
//! schedule per user in the user's own zone, a global schedule, and an update by re-creating
//! with the same workflow and key.
//!
//! ```sh
//! cargo run --example per_user_schedules
//! ```

use std::collections::HashMap;

use polos::client::ClientError;
use polos::{schedules, PolosClient};

async fn setup_user_schedule(
    client: &PolosClient,
    user_id: &str,
    preferences: &HashMap<&str, &str>,
) -> Result<String, ClientError> {
    // Create/update per-user schedule
    schedules::create(
        client,
        "daily-digest",
        "0 8 * * *", // 8 AM
        preferences["timezone"],
        user_id, // Unique per user
    )
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = PolosClient::from_env().await?;

    // Each user gets their own schedule
    for (user, zone) in [
        ("user_123", "America/New_York"),
        ("user_456", "Europe/London"),
    ] {
        let id = setup_user_schedule(&client, user, &HashMap::from([("timezone", zone)])).await?;
        println!("{user}: {id}");
    }

    // Global schedule (one per workflow)
    let id = schedules::create(&client, "cleanup-task", "0 3 * * *", "UTC", "global").await?;
    println!("cleanup-task: {id}");

    // Per-user schedule, then an update: same workflow and key = same schedule, new cron.
    let first = schedules::create(
        &client,
        "user-notification",
        "0 12 * * *", // Noon daily
        "America/Chicago",
        "user_789",
    )
    .await?;
    let updated = schedules::create(
        &client,
        "user-notification",
        "0 15 * * *", // Change to 3 PM
        "America/Chicago",
        "user_789", // Same key = update
    )
    .await?;
    assert_eq!(first, updated);

    for view in schedules::list(&client, None).await?.schedules {
        let next = view.next.first().map(|t| t.to_string()).unwrap_or_default();
        println!(
            "{:<18} {:<10} {:<11} {:<17} next {next}",
            view.record.workflow, view.record.key, view.record.cron, view.record.timezone
        );
    }
    Ok(())
}
