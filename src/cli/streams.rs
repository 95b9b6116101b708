//! `polos streams apply`.

use std::process::ExitCode;

use clap::Subcommand;

use super::{fail, Cli, EXIT_INVALID, EXIT_UNAVAILABLE};
use crate::nats::streams::{apply, Outcome};

/// `polos streams …`
#[derive(Debug, Subcommand)]
pub enum StreamsCommand {
    /// Create or update every bucket and stream of streams/*.json (idempotent).
    Apply,
}

pub(super) async fn run(cli: &Cli, cmd: &StreamsCommand) -> ExitCode {
    let StreamsCommand::Apply = cmd;
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_INVALID, e),
    };
    let client = match crate::nats::connect(&config.nats).await {
        Ok(c) => c,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    let js = async_nats::jetstream::new(client);
    match apply(&js, &config.storage).await {
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
