//! `polos cron next`: how anyone checks the cron and DST semantics (README, "Cron and time zones").

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{fail, EXIT_INVALID};
use crate::cron::CronSchedule;
use crate::model::time::{format_instant, parse_instant};

/// `polos cron …`
#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Print the next fire instants of a cron expression in a time zone.
    Next(NextArgs),
}

/// Arguments of `polos cron next`.
#[derive(Debug, Args)]
pub struct NextArgs {
    /// The cron expression, e.g. "30 2 * * *" or "@hourly" (quote it).
    pub expr: String,
    /// IANA time zone the expression is read in.
    #[arg(long, default_value = "UTC", value_name = "TZ")]
    pub timezone: String,
    /// List fires strictly after this RFC 3339 instant (default: now).
    #[arg(long, value_name = "RFC3339")]
    pub after: Option<String>,
    /// How many fire instants to print.
    #[arg(short = 'n', long = "count", default_value_t = 5, value_name = "N")]
    pub count: usize,
    /// Print only a JSON array of RFC 3339 UTC instants.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(cmd: &CronCommand) -> ExitCode {
    let CronCommand::Next(args) = cmd;
    let schedule = match CronSchedule::parse(&args.expr, &args.timezone) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_INVALID, e),
    };
    let after = match &args.after {
        None => chrono::Utc::now(),
        Some(text) => match parse_instant(text) {
            Ok(t) => t,
            Err(e) => {
                return fail(
                    EXIT_INVALID,
                    format!("--after {text:?} is not an RFC 3339 instant ({e}); write e.g. 2026-03-07T12:00:00Z"),
                )
            }
        },
    };
    let fires = schedule.upcoming(after, args.count);
    if args.json {
        let list: Vec<String> = fires.into_iter().map(format_instant).collect();
        match serde_json::to_string(&list) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(EXIT_INVALID, e),
        }
        return ExitCode::SUCCESS;
    }
    let tz = schedule.timezone();
    let kind = if schedule.is_interval() {
        "interval"
    } else {
        "fixed-time"
    };
    println!("{:?} in {} ({kind} schedule)", args.expr, tz.name());
    println!("{:<22}{}", "UTC", tz.name());
    for fire in fires {
        let local = fire.with_timezone(&tz);
        println!(
            "{:<22}{}",
            format_instant(fire),
            local.format("%Y-%m-%d %H:%M:%S %a %Z (%:z)")
        );
    }
    ExitCode::SUCCESS
}
