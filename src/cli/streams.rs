//! `polos streams apply`.

use std::process::ExitCode;

use clap::Subcommand;

use super::{fail, Cli, EXIT_UNAVAILABLE};
use crate::nats::streams::{apply, Outcome};

/// `polos streams …`
#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// Create or update every bucket and stream of streams/*.json (idempotent).
    Apply,
}

pub(super) async fn run(cli: &Cli, cmd: &StreamsCommand) -> ExitCode {
    let StreamsCommand::Apply = cmd;
    let (config, client) = match super::connect(cli).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let denials = crate::nats::Denials::of(&client);
    let js = async_nats::jetstream::new(client);
    let applied = match denials.guard_any(apply(&js, &config.storage)).await {
        Ok(applied) => applied,
        Err(denied) => {
            return fail(
                EXIT_UNAVAILABLE,
                format!("{denied} (check the admin's NATS permissions: `polos permissions admin`)"),
            )
        }
    };
    match applied {
        Ok(outcomes) => {
            for (name, outcome) in outcomes {
                let what = match outcome {
                    Outcome::Created => "created",
                    Outcome::Updated => "updated",
                    Outcome::Unchanged => "unchanged",
                };
                println!("{name:<28} {what}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_UNAVAILABLE, e),
    }
}
