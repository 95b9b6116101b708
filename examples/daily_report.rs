//! The documentation's first example: `daily-report`, an inline cron schedule (every day at 9:00 UTC)
//! with three durable steps.
//!
//! ```text
//! polos dev                                  # or any NATS server with `polos streams apply`
//! cargo run --example daily_report           # NATS_URL=nats://host:4222 to point elsewhere
//! polos schedules trigger daily-report       # run it now instead of waiting for 9:00
//! polos runs list --workflow daily-report
//! ```

use polos::model::SchedulePayload;
use polos::worker::{Worker, Workflow, WorkflowContext, WorkflowError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Serialize, Deserialize)]
struct DailyData {
    signups: u32,
    orders: u32,
}

async fn fetch_daily_data() -> Result<DailyData, WorkflowError> {
    Ok(DailyData {
        signups: 42,
        orders: 17,
    })
}

async fn create_report(data: &DailyData) -> Result<String, WorkflowError> {
    Ok(format!(
        "{} signups and {} orders yesterday",
        data.signups, data.orders
    ))
}

async fn email_report(report: &str) -> Result<(), WorkflowError> {
    println!("emailing report: {report}");
    Ok(())
}

async fn daily_report(
    ctx: WorkflowContext,
    payload: SchedulePayload,
) -> Result<Value, WorkflowError> {
    println!("Report generated at: {}", payload.timestamp);

    // Generate and send report; each step runs once per run, even across retries and crashes.
    let data = ctx.step.run("fetch_data", fetch_daily_data).await?;
    let report = ctx.step.run("generate", || create_report(&data)).await?;
    ctx.step.run("send", || email_report(&report)).await?;

    Ok(json!({"status": "completed"}))
}

/// The workflow this example declares (`polos dev` runs it too).
pub fn workflow() -> Workflow {
    Workflow::new("daily-report", daily_report).schedule("0 9 * * *") // 9:00 AM UTC
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
