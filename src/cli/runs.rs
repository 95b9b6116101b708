//! `polos runs list` and `polos runs get`: what ran, how it went, and each step;
//! `polos runs cancel`: stop a run (through the API, like every write).
//!
//! Everything is read through [`RunStore`] and [`StepStore`], the owners of `polos_runs` and
//! `polos_steps` (one pass over the matching keys; deleted entries read as absent), so `get
//! <run_id>` needs no workflow.

use std::process::ExitCode;

use async_nats::jetstream;
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::{fail, Cli, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE};
use crate::model::{validate_workflow, RunRecord, RunStatus, StepRecord};
use crate::store::{RunStore, StepStore, StoreError};

/// `polos runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs in this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Show at most this many (0 = all).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON (`{"runs":[...]}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: status, attempts, timing, output or error, and each step.
    Get {
        /// The run id (`sch_…-20261126T090000Z`).
        run_id: String,
        /// Print JSON (the run record plus `"steps"`).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run: a running one stops at its next step boundary (recorded `cancelled`, not
    /// retried), one not started yet is cancelled when it would start. Works wherever it runs.
    Cancel {
        /// The run id (`sch_…-20261126T090000Z`).
        run_id: String,
        /// Its workflow: needed only for a run that has not started yet.
        #[arg(long)]
        workflow: Option<String>,
        /// Why (recorded in the run's error).
        #[arg(long)]
        reason: Option<String>,
        /// Print the API's reply as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A run status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Executing, or waiting for a retry.
    Running,
    /// Finished with an output.
    Completed,
    /// Retries exhausted or a terminal error.
    Failed,
    /// Cancelled on request (`polos runs cancel`) or by the overlap policy `cancel_other`.
    Cancelled,
    /// Not run: another run of its schedule was executing (overlap policy).
    Skipped,
}

impl StatusArg {
    fn matches(self, status: RunStatus) -> bool {
        matches!(
            (self, status),
            (StatusArg::Running, RunStatus::Running)
                | (StatusArg::Completed, RunStatus::Completed)
                | (StatusArg::Failed, RunStatus::Failed)
                | (StatusArg::Cancelled, RunStatus::Cancelled)
                | (StatusArg::Skipped, RunStatus::Skipped)
        )
    }
}

/// A step of a run, in execution order.
struct StepRow {
    name: String,
    record: StepRecord,
}

pub(super) async fn run(cli: &Cli, cmd: &RunsCommand) -> ExitCode {
    if let RunsCommand::Cancel {
        run_id,
        workflow,
        reason,
        json,
    } = cmd
    {
        return cancel(cli, run_id, workflow.as_deref(), reason.as_deref(), *json).await;
    }
    let (_, client) = match super::connect(cli).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    // One read at a time: any refusal on the connection is this command's.
    let denials = crate::nats::Denials::of(&client);
    match denials.guard_any(read(client, cmd)).await {
        Ok(code) => code,
        Err(denied) => fail(
            EXIT_UNAVAILABLE,
            format!("{denied} (check this user's NATS permissions; `polos permissions operator` lists what reading runs needs)"),
        ),
    }
}

async fn read(client: async_nats::Client, cmd: &RunsCommand) -> ExitCode {
    let js = jetstream::new(client);
    let (runs, steps) = match (RunStore::open(&js).await, StepStore::open(&js).await) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => return fail(EXIT_UNAVAILABLE, e.to_string()),
    };
    let result = match cmd {
        RunsCommand::List {
            workflow,
            status,
            limit,
            json,
        } => list(&runs, workflow.as_deref(), *status, *limit, *json).await,
        RunsCommand::Get { run_id, json } => get(&runs, &steps, run_id, *json).await,
        RunsCommand::Cancel { .. } => return ExitCode::SUCCESS,
    };
    result.unwrap_or_else(|(code, message)| fail(code, message))
}

type CmdResult = Result<ExitCode, (u8, String)>;

/// `polos runs cancel`: one request to `polos.run.cancel`.
async fn cancel(
    cli: &Cli,
    run_id: &str,
    workflow: Option<&str>,
    reason: Option<&str>,
    as_json: bool,
) -> ExitCode {
    use crate::client::{ClientError, PolosClient};
    let failed = |e: ClientError| {
        let code = match &e {
            ClientError::Api { code, .. } if *code == crate::api::ErrorCode::NotFound => {
                EXIT_NOT_FOUND
            }
            ClientError::Api { code, .. } if code.is_invalid_input() => EXIT_INVALID,
            ClientError::Config(_) => EXIT_INVALID,
            _ => EXIT_UNAVAILABLE,
        };
        if as_json {
            if let ClientError::Api { code, message } = &e {
                println!("{}", json!({"error": {"code": code, "message": message}}));
            }
        }
        fail(code, e)
    };
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => return failed(e.into()),
    };
    let client = match PolosClient::connect(&config).await {
        Ok(client) => client,
        Err(e) => return failed(e),
    };
    let reply = match crate::runs::cancel(&client, run_id, workflow, reason).await {
        Ok(reply) => reply,
        Err(e) => return failed(e),
    };
    if as_json {
        println!("{}", json!(reply));
    } else if !reply.cancel_requested {
        let status = reply.status.map_or("finished", RunStatus::as_str);
        println!("Run {run_id} already {status}; nothing to cancel");
    } else if reply.status.is_none() {
        println!(
            "Cancel requested for run {run_id} ({}): it has not started, and is cancelled when it would",
            reply.workflow
        );
    } else {
        println!(
            "Cancel requested for run {run_id} ({}): it stops at its next step; `polos runs get {run_id}` shows it cancelled",
            reply.workflow
        );
    }
    ExitCode::SUCCESS
}

/// The exit code for a store error: bad input is the user's to fix, the rest is NATS.
fn store_failure(e: StoreError) -> (u8, String) {
    match e {
        StoreError::InvalidRunId { .. } | StoreError::BadValue { .. } => {
            (EXIT_INVALID, e.to_string())
        }
        other => (
            EXIT_UNAVAILABLE,
            format!("reading from NATS failed: {other}"),
        ),
    }
}

async fn list(
    runs: &RunStore,
    workflow: Option<&str>,
    status: Option<StatusArg>,
    limit: usize,
    as_json: bool,
) -> CmdResult {
    if let Some(w) = workflow {
        validate_workflow(w).map_err(|e| (EXIT_INVALID, e.to_string()))?;
    }
    let listing = runs.list(workflow).await.map_err(store_failure)?;
    for invalid in &listing.invalid {
        eprintln!("warning: {invalid}");
    }
    let mut records: Vec<RunRecord> = listing
        .runs
        .into_iter()
        .filter(|r| status.is_none_or(|s| s.matches(r.status)))
        .collect();
    records.sort_by(|a, b| {
        (b.started_at, b.scheduled_for, &b.run_id).cmp(&(a.started_at, a.scheduled_for, &a.run_id))
    });
    if limit > 0 {
        records.truncate(limit);
    }
    if as_json {
        println!("{}", json!({ "runs": records }));
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        println!("no runs");
        return Ok(ExitCode::SUCCESS);
    }
    let id_width = records.iter().map(|r| r.run_id.len()).max().unwrap_or(6);
    let wf_width = records
        .iter()
        .map(|r| r.workflow.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:<id_width$}  {:<wf_width$}  {:<10} {:>7}  {:<20}  {:>9}",
        "RUN ID", "WORKFLOW", "STATUS", "ATTEMPT", "SCHEDULED FOR", "DURATION"
    );
    for r in &records {
        println!(
            "{:<id_width$}  {:<wf_width$}  {:<10} {:>7}  {:<20}  {:>9}",
            r.run_id,
            r.workflow,
            status_text(r.status),
            r.attempt,
            crate::model::time::format_instant(r.scheduled_for),
            duration_text(r),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(runs: &RunStore, steps: &StepStore, run_id: &str, as_json: bool) -> CmdResult {
    let Some(record) = runs.find(run_id).await.map_err(store_failure)? else {
        return Err((
            EXIT_NOT_FOUND,
            format!("run {run_id} not found in polos_runs; list runs with `polos runs list`"),
        ));
    };
    let mut rows = Vec::new();
    // Listed in revision order: the order the steps completed.
    for step in steps.list(run_id).await.map_err(store_failure)? {
        match step.record {
            Ok(record) => rows.push(StepRow {
                name: step.name,
                record,
            }),
            Err(e) => eprintln!("warning: {e}"),
        }
    }

    if as_json {
        let mut value = serde_json::to_value(&record).map_err(|e| (EXIT_INVALID, e.to_string()))?;
        let steps: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "output": r.record.output,
                    "completed_at": crate::model::time::format_instant(r.record.completed_at),
                })
            })
            .collect();
        value["steps"] = Value::Array(steps);
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    let instant = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(|| "-".to_string(), crate::model::time::format_instant)
    };
    println!("run:           {}", record.run_id);
    println!("workflow:      {}", record.workflow);
    println!("schedule:      {} (key {})", record.schedule_id, record.key);
    println!("trigger:       {}", record.trigger.as_str());
    println!("status:        {}", status_text(record.status));
    println!("attempt:       {}", record.attempt);
    println!("scheduled for: {}", instant(Some(record.scheduled_for)));
    println!("started:       {}", instant(Some(record.started_at)));
    println!("finished:      {}", instant(record.finished_at));
    println!("duration:      {}", duration_text(&record));
    if let Some(output) = &record.output {
        println!("output:        {output}");
    }
    if let Some(error) = &record.error {
        println!("error:         {error}");
    }
    if let Some(other) = &record.yielded_to {
        println!("yielded to:    {other} (it was executing; overlap policy)");
    }
    if rows.is_empty() {
        println!("steps:         none");
    } else {
        println!("steps:");
        let width = rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(0);
        for (i, row) in rows.iter().enumerate() {
            println!(
                "  {}. {:<width$}  completed {}  output {}",
                i + 1,
                row.name,
                crate::model::time::format_instant(row.record.completed_at),
                row.record.output
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status_text(status: RunStatus) -> &'static str {
    status.as_str()
}

fn duration_text(r: &RunRecord) -> String {
    match r.finished_at {
        Some(end) => format!("{}s", (end - r.started_at).num_seconds().max(0)),
        None => "-".to_string(),
    }
}
