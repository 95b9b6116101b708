//! The demo schedule `polos dev` creates so something runs within a minute of starting.

use std::time::{Duration, Instant};

use crate::client::{schedules, ClientError, PolosClient};

/// The demo schedule's workflow (the documentation's `user-reminder`, from `examples/user_reminder.rs`).
pub const DEMO_WORKFLOW: &str = "user-reminder";
/// The demo schedule's key.
pub const DEMO_KEY: &str = "dev-demo";
/// Every minute, so the first run comes within 60 seconds.
pub const DEMO_CRON: &str = "* * * * *";

/// How long to wait for the schedules API (started beside this call) to answer.
const API_WAIT: Duration = Duration::from_secs(15);

/// Creates (or updates, on a restart) the demo schedule, retrying while the API that starts
/// concurrently does not answer yet. Returns the schedule id.
pub(super) async fn create(client: &PolosClient) -> Result<String, ClientError> {
    let deadline = Instant::now() + API_WAIT;
    loop {
        match schedules::create(client, DEMO_WORKFLOW, DEMO_CRON, "UTC", DEMO_KEY).await {
            Err(ClientError::NoService { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}
