//! `polos schedules create|get|list|delete|pause|resume|trigger|backfill|next`: the schedules API from a
//! shell. Human output by default (instants shown in the schedule's zone), `--json` for scripts;
//! exit codes 2 (invalid input), 3 (not found), 4 (NATS unreachable or server trouble).

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::{Cli, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE};
use crate::api::{ApiError, ErrorCode, ScheduleView, UpsertRequest};
use crate::client::{schedules, ClientError, PolosClient};
use crate::cron::CronSchedule;
use crate::model::time::format_instant;
use crate::model::{OverlapPolicy, DEFAULT_KEY};

/// An overlap policy on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum OverlapArg {
    /// Do not start a run while the previous one executes; record it `skipped` (default).
    Skip,
    /// Let one run wait for the executing one; skip any further.
    BufferOne,
    /// Let every run wait its turn, in order.
    BufferAll,
    /// Start every run at once.
    AllowAll,
    /// Cancel the executing run, then start the new one.
    CancelOther,
}

impl From<OverlapArg> for OverlapPolicy {
    fn from(arg: OverlapArg) -> OverlapPolicy {
        match arg {
            OverlapArg::Skip => OverlapPolicy::Skip,
            OverlapArg::BufferOne => OverlapPolicy::BufferOne,
            OverlapArg::BufferAll => OverlapPolicy::BufferAll,
            OverlapArg::AllowAll => OverlapPolicy::AllowAll,
            OverlapArg::CancelOther => OverlapPolicy::CancelOther,
        }
    }
}

/// `polos schedules …`
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    /// Print JSON (the API's reply) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: SchedulesCommand,
}

/// The schedules subcommands.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Create or update the schedule of a workflow + key (same workflow and key = update).
    Create {
        /// Workflow id.
        workflow: String,
        /// 5-field cron expression, e.g. "0 8 * * *".
        cron: String,
        /// IANA time zone of the cron's wall clock.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Schedule key (a user id, …).
        #[arg(long, default_value = DEFAULT_KEY)]
        key: String,
        /// Store it paused.
        #[arg(long)]
        paused: bool,
        /// A note for operators.
        #[arg(long)]
        note: Option<String>,
        /// What a fire does while an earlier run still executes (kept when left out; a new
        /// schedule gets `skip`).
        #[arg(long, value_enum)]
        overlap: Option<OverlapArg>,
        /// Pause the schedule when one of its runs fails after its last attempt.
        #[arg(long, conflicts_with = "no_pause_on_failure")]
        pause_on_failure: bool,
        /// Do not pause it on failure (turns `--pause-on-failure` off again).
        #[arg(long)]
        no_pause_on_failure: bool,
        /// Delay each fire by a deterministic offset of up to this many seconds (spreads
        /// schedules due at the same instant); 0 turns the scheduler's default off.
        #[arg(long, value_name = "SECS")]
        jitter: Option<u64>,
        /// No instant before this one fires (RFC 3339; "" removes it).
        #[arg(long, value_name = "INSTANT")]
        start_at: Option<String>,
        /// No instant after this one fires; past it the schedule shows as ended ("" removes it).
        #[arg(long, value_name = "INSTANT")]
        end_at: Option<String>,
        /// End the schedule after this many fires (0 removes the limit).
        #[arg(long, value_name = "N")]
        max_runs: Option<u64>,
    },
    /// Show one schedule: state, next 10 fires, last 10 runs, counters, the run executing.
    Get {
        /// Workflow id.
        workflow: String,
        /// Schedule key.
        #[arg(long, default_value = DEFAULT_KEY)]
        key: String,
    },
    /// List schedules (a table; next fire in each schedule's zone).
    List {
        /// Only this workflow's schedules.
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Delete a schedule.
    Delete {
        /// Workflow id.
        workflow: String,
        /// Schedule key.
        #[arg(long, default_value = DEFAULT_KEY)]
        key: String,
    },
    /// Pause a schedule (it keeps its definition but does not fire).
    Pause {
        /// Workflow id.
        workflow: String,
        /// Schedule key.
        #[arg(long, default_value = DEFAULT_KEY)]
        key: String,
        /// Why (replaces the note).
        #[arg(long)]
        note: Option<String>,
    },
    /// Resume a paused schedule (fires from now on, no catch-up for the paused time).
    Resume {
        /// Workflow id.
        workflow: String,
        /// Schedule key.
        #[arg(long, default_value = DEFAULT_KEY)]
        key: String,
        /// Replaces the note.
        #[arg(long)]
        note: Option<String>,
    },
    /// Fire a schedule once now, outside its cron.
    Trigger {
        /// Workflow id.
        workflow: String,
        /// Schedule key.
        #[arg(long, default_value = DEFAULT_KEY)]
        key: String,
    },
    /// Fire every instant of a schedule's cron in a past range (trigger `backfill`, same run ids
    /// as scheduled fires: instants that already ran do not run again). The scheduler works it
    /// off behind on-time fires; `get` shows the progress.
    Backfill {
        /// Workflow id.
        workflow: String,
        /// Schedule key.
        #[arg(long, default_value = DEFAULT_KEY)]
        key: String,
        /// First instant of the range (RFC 3339, inclusive).
        #[arg(long, value_name = "INSTANT")]
        from: String,
        /// Last instant of the range (RFC 3339, inclusive, not in the future).
        #[arg(long, value_name = "INSTANT")]
        to: String,
    },
    /// The next fire instants of a stored schedule.
    Next {
        /// Workflow id.
        workflow: String,
        /// Schedule key.
        #[arg(long, default_value = DEFAULT_KEY)]
        key: String,
        /// How many instants.
        #[arg(short = 'n', long = "count", default_value_t = 5)]
        count: usize,
    },
}

/// What a subcommand ends with: text for people, a JSON value for scripts, and an exit code.
struct Outcome {
    text: String,
    json: serde_json::Value,
    code: u8,
}

impl Outcome {
    fn ok(text: String, json: impl Serialize) -> Result<Outcome, Failure> {
        Ok(Outcome {
            text,
            json: serde_json::to_value(json).unwrap_or_default(),
            code: 0,
        })
    }
}

/// A failed subcommand: exit code plus the error in API form.
struct Failure {
    code: u8,
    error: ApiError,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Api { code, message } => Failure {
                code: match code {
                    ErrorCode::NotFound => EXIT_NOT_FOUND,
                    c if c.is_invalid_input() => EXIT_INVALID,
                    _ => EXIT_UNAVAILABLE,
                },
                error: ApiError { code, message },
            },
            ClientError::Config(e) => Failure {
                code: EXIT_INVALID,
                error: ApiError::invalid_request(e.to_string()),
            },
            other => Failure {
                code: EXIT_UNAVAILABLE,
                error: ApiError::internal(other.to_string()),
            },
        }
    }
}

pub(super) async fn run(cli: &Cli, args: &SchedulesArgs) -> ExitCode {
    let outcome = execute(cli, &args.command).await;
    match (outcome, args.json) {
        (Ok(outcome), true) => {
            println!("{}", outcome.json);
            ExitCode::from(outcome.code)
        }
        (Ok(outcome), false) => {
            if !outcome.text.is_empty() {
                println!("{}", outcome.text.trim_end());
            }
            ExitCode::from(outcome.code)
        }
        (Err(failure), json) => {
            if json {
                println!("{}", serde_json::json!({ "error": failure.error }));
            }
            // A failure on this side (NATS unreachable, no scheduler) reads better without the
            // API's `internal:` prefix; the API's own codes stay.
            match failure.error.code {
                ErrorCode::Internal => super::fail(failure.code, failure.error.message),
                _ => super::fail(failure.code, failure.error),
            }
        }
    }
}

async fn execute(cli: &Cli, command: &SchedulesCommand) -> Result<Outcome, Failure> {
    let config = cli.load_config().map_err(ClientError::from)?;
    let client = PolosClient::connect(&config).await?;
    match command {
        SchedulesCommand::Create {
            workflow,
            cron,
            timezone,
            key,
            paused,
            note,
            overlap,
            pause_on_failure,
            no_pause_on_failure,
            jitter,
            start_at,
            end_at,
            max_runs,
        } => {
            let request = UpsertRequest {
                timezone: timezone.clone(),
                key: key.clone(),
                paused: paused.then_some(true),
                note: note.clone(),
                overlap: overlap.map(OverlapPolicy::from),
                pause_on_failure: if *pause_on_failure {
                    Some(true)
                } else if *no_pause_on_failure {
                    Some(false)
                } else {
                    None
                },
                jitter_secs: *jitter,
                start_at: start_at.clone(),
                end_at: end_at.clone(),
                max_runs: *max_runs,
                ..UpsertRequest::new(workflow, cron)
            };
            let reply = schedules::upsert(&client, &request).await?;
            if let Some(warning) = &reply.warning {
                eprintln!("warning: {warning}");
            }
            let verb = if reply.created { "Created" } else { "Updated" };
            let zone = CronSchedule::parse(cron, timezone).ok();
            let mut text = format!(
                "{verb} schedule {} ({workflow} / {key})\n{}\nnext: {}",
                reply.schedule_id,
                zone.as_ref().map(crate::cron::describe).unwrap_or_default(),
                reply
                    .next
                    .iter()
                    .map(|t| in_zone(*t, zone.as_ref()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for note in &reply.warnings {
                text += &format!("\nnote: {note}");
            }
            Outcome::ok(text, reply)
        }
        SchedulesCommand::Get { workflow, key } => {
            let view = schedules::get(&client, workflow, key).await?;
            Outcome::ok(describe(&view), view)
        }
        SchedulesCommand::List { workflow } => {
            let reply = schedules::list(&client, workflow.as_deref()).await?;
            for invalid in &reply.invalid {
                eprintln!("invalid: {}: {}", invalid.kv_key, invalid.error);
            }
            Outcome::ok(table(&reply.schedules), reply)
        }
        SchedulesCommand::Delete { workflow, key } => {
            let deleted = schedules::delete(&client, workflow, key).await?;
            if !deleted {
                return Err(Failure {
                    code: EXIT_NOT_FOUND,
                    error: ApiError::not_found(format!(
                        "no schedule for workflow {workflow:?} with key {key:?}; nothing deleted"
                    )),
                });
            }
            Outcome::ok(
                format!("Deleted schedule {workflow} / {key}"),
                serde_json::json!({ "deleted": true }),
            )
        }
        SchedulesCommand::Pause {
            workflow,
            key,
            note,
        } => {
            let record = schedules::pause(&client, workflow, key, note.as_deref()).await?;
            Outcome::ok(format!("Paused schedule {workflow} / {key}"), record)
        }
        SchedulesCommand::Resume {
            workflow,
            key,
            note,
        } => {
            let record = schedules::resume(&client, workflow, key, note.as_deref()).await?;
            Outcome::ok(format!("Resumed schedule {workflow} / {key}"), record)
        }
        SchedulesCommand::Trigger { workflow, key } => {
            let run_id = schedules::trigger(&client, workflow, key).await?;
            Outcome::ok(
                format!("Triggered run {run_id}"),
                serde_json::json!({ "run_id": run_id }),
            )
        }
        SchedulesCommand::Backfill {
            workflow,
            key,
            from,
            to,
        } => {
            let reply = schedules::backfill(&client, workflow, key, from, to).await?;
            Outcome::ok(
                format!(
                    "Back-filling {} instant{} of {workflow} / {key} ({} to {}), request {}; `polos schedules get {workflow} --key {key}` shows the progress",
                    reply.instants,
                    if reply.instants == 1 { "" } else { "s" },
                    format_instant(reply.first),
                    format_instant(reply.last),
                    reply.seq
                ),
                reply,
            )
        }
        SchedulesCommand::Next {
            workflow,
            key,
            count,
        } => {
            let view = schedules::get(&client, workflow, key).await?;
            let cron =
                CronSchedule::parse(&view.record.cron, &view.record.timezone).map_err(|e| {
                    Failure {
                        code: EXIT_INVALID,
                        error: ApiError::from(e),
                    }
                })?;
            let next = cron.upcoming(Utc::now(), *count);
            let text = next
                .iter()
                .map(|t| format!("{}  ({})", format_instant(*t), in_zone(*t, Some(&cron))))
                .collect::<Vec<_>>()
                .join("\n");
            let json: Vec<String> = next.iter().map(|t| format_instant(*t)).collect();
            Outcome::ok(text, json)
        }
    }
}

/// An instant as wall-clock time in the schedule's zone (`2026-11-26 08:00 PST`), or in UTC when
/// the zone is unknown.
fn in_zone(instant: DateTime<Utc>, cron: Option<&CronSchedule>) -> String {
    match cron {
        Some(cron) => instant
            .with_timezone(&cron.timezone())
            .format("%Y-%m-%d %H:%M %Z")
            .to_string(),
        None => instant.format("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

fn describe(view: &ScheduleView) -> String {
    let r = &view.record;
    let cron = CronSchedule::parse(&r.cron, &r.timezone).ok();
    let opt = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_string(), format_instant);
    let mut lines = vec![
        format!("schedule_id  {}", r.schedule_id),
        format!("workflow     {}", r.workflow),
        format!("key          {}", printable(&r.key)),
        format!("cron         {}", r.cron),
        format!(
            "             {}",
            cron.as_ref().map(crate::cron::describe).unwrap_or_default()
        ),
        format!("timezone     {}", r.timezone),
        format!("paused       {}", r.paused),
        format!("note         {}", r.note.as_deref().unwrap_or("-")),
        format!(
            "source       {}",
            if r.source == crate::model::ScheduleSource::Inline {
                "inline"
            } else {
                "api"
            }
        ),
        format!("created_at   {}", opt(r.created_at)),
        format!("updated_at   {}", opt(r.updated_at)),
        format!("overlap      {}", r.overlap.unwrap_or_default().as_str()),
        format!(
            "on failure   {}",
            if r.pause_on_failure == Some(true) {
                "pause the schedule"
            } else {
                "keep firing"
            }
        ),
    ];
    if let Some(jitter) = r.jitter_secs {
        lines.push(format!(
            "jitter       {jitter} s (each fire a fixed offset below it after its instant)"
        ));
    }
    if r.start_at.is_some() || r.end_at.is_some() {
        lines.push(format!(
            "runs from    {} to {}",
            opt(r.start_at),
            opt(r.end_at)
        ));
    }
    if let Some(max) = r.max_runs {
        let fired = view.state.as_ref().map_or(0, |s| s.fires);
        lines.push(format!("max_runs     {max}  ({fired} fired)"));
    }
    if let Some(state) = &view.state {
        lines.push(format!(
            "last fire    {}",
            state
                .last_timestamp
                .map_or_else(|| "-".to_string(), |t| in_zone(t, cron.as_ref()))
        ));
        lines.push(format!(
            "fires        {}  (missed {})",
            state.fires, state.missed
        ));
        if let Some(ended) = state.ended {
            lines.push(format!(
                "ended        {}  (stored, no longer fires)",
                match ended {
                    crate::model::Ended::EndAt => "past end_at",
                    crate::model::Ended::MaxRuns => "fired max_runs times",
                }
            ));
        }
        if let Some(error) = &state.error {
            lines.push(format!("state error  {error}"));
        }
    }
    if let Some(counters) = &view.counters {
        lines.push(format!(
            "counters     fired {}  missed {}  skipped {}  backfilled {}",
            counters.fired,
            counters.missed,
            counters.skipped,
            counters
                .backfilled
                .map_or_else(|| "-".to_string(), |n| n.to_string())
        ));
    }
    if let Some(active) = &view.active_run {
        lines.push(format!(
            "executing    {}  (since {})",
            active.run_id,
            opt(active.since)
        ));
    }
    for (i, waiting) in view.waiting_runs.iter().enumerate() {
        let label = if i == 0 { "waiting" } else { "" };
        lines.push(format!(
            "{label:<12} {}  ({})",
            waiting.run_id,
            in_zone(waiting.scheduled_for, cron.as_ref())
        ));
    }
    let progress = view.state.as_ref().and_then(|s| s.backfill);
    for (i, b) in r.backfills.iter().enumerate() {
        let label = if i == 0 { "backfills" } else { "" };
        let done = cron.as_ref().is_some_and(|c| {
            crate::model::backfill_done(b, progress, Utc::now(), |t| c.next_after(t))
        });
        let status = match progress {
            _ if done => "done".to_string(),
            Some(p) if p.seq == b.seq => format!("through {}", opt(p.through)),
            _ => "waiting".to_string(),
        };
        lines.push(format!(
            "{label:<12} #{} {} to {}: {status}",
            b.seq,
            format_instant(b.from),
            format_instant(b.to)
        ));
    }
    if let Some(error) = &view.error {
        lines.push(format!("error        {error}"));
    }
    let next = if view.next_fires.is_empty() {
        &view.next
    } else {
        &view.next_fires
    };
    for (i, t) in next.iter().enumerate() {
        let label = if i == 0 { "next" } else { "" };
        lines.push(format!("{label:<12} {}", in_zone(*t, cron.as_ref())));
    }
    if !view.recent_runs.is_empty() {
        lines.push(format!(
            "{:<12} {:<22} {:<20} {:<9} {:>7}  {}",
            "last runs", "SCHEDULED FOR", "STARTED", "TRIGGER", "ATTEMPT", "STATUS"
        ));
        for run in &view.recent_runs {
            let status = match (run.status, &run.yielded_to) {
                (Some(s), Some(other)) => format!("{} (yielded to {other})", s.as_str()),
                (Some(s), None) => s.as_str().to_string(),
                (None, _) => "no record".to_string(),
            };
            lines.push(format!(
                "{:<12} {:<22} {:<20} {:<9} {:>7}  {status}",
                "",
                in_zone(run.scheduled_for, cron.as_ref()),
                opt(run.started_at),
                run.trigger.map_or("-", |t| t.as_str()),
                run.attempt
                    .map_or_else(|| "-".to_string(), |a| a.to_string())
            ));
        }
    }
    let notes = cron
        .as_ref()
        .map(|c| crate::cron::schedule_notes(c, Utc::now()))
        .unwrap_or_default();
    for (i, note) in notes.iter().enumerate() {
        let label = if i == 0 { "notes" } else { "" };
        lines.push(format!("{label:<12} {note}"));
    }
    lines.join("\n")
}

/// A key as one printable line: control characters (a key may hold any UTF-8) are escaped so
/// they cannot break the table or the terminal.
fn printable(key: &str) -> String {
    if key.chars().any(char::is_control) {
        key.escape_debug().to_string()
    } else {
        key.to_string()
    }
}

fn table(views: &[ScheduleView]) -> String {
    if views.is_empty() {
        return "no schedules".to_string();
    }
    let header = ["WORKFLOW", "KEY", "CRON", "ZONE", "PAUSED", "NEXT FIRE"].map(String::from);
    let mut rows = vec![header];
    for view in views {
        let r = &view.record;
        let cron = CronSchedule::parse(&r.cron, &r.timezone).ok();
        rows.push([
            r.workflow.clone(),
            printable(&r.key),
            r.cron.clone(),
            r.timezone.clone(),
            if r.paused { "yes" } else { "no" }.to_string(),
            match view.state.as_ref().and_then(|s| s.ended) {
                Some(ended) => format!("- (ended: {})", ended.as_str()),
                None => view
                    .next
                    .first()
                    .map_or_else(|| "-".to_string(), |t| in_zone(*t, cron.as_ref())),
            },
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
