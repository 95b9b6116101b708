//! The documentation's Timezones example: `morning-report` at 9 AM Eastern, adjusting for DST
//! automatically (13:00 UTC in summer, 14:00 UTC in winter).

use polos::model::SchedulePayload;
use polos::worker::{Schedule, Worker, Workflow, WorkflowContext, WorkflowError};
use serde_json::{json, Value};

async fn morning_report(
    _ctx: WorkflowContext,
    payload: SchedulePayload,
) -> Result<Value, WorkflowError> {
    // Runs at 9 AM Eastern time, adjusts for DST automatically
    Ok(json!({"executed_at": payload.timestamp}))
}

/// The workflow this example declares (`polos dev` runs it too).
pub fn workflow() -> Workflow {
    Workflow::new("morning-report", morning_report).schedule(
        Schedule::cron("0 9 * * *").timezone("America/New_York"), // Runs at 9 AM Eastern
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
