//! The `polos` command line. Each subcommand lives in its own file and returns an exit code;
//! `src/main.rs` only parses arguments and calls [`run`].

mod cron;
mod dev;
mod runs;
pub mod scheduler;
mod schedules;
mod streams;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// Exit code for invalid input (bad cron, bad zone, bad arguments).
pub const EXIT_INVALID: u8 = 2;
/// Exit code when the named schedule or run does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code when NATS cannot be reached or refuses.
pub const EXIT_UNAVAILABLE: u8 = 4;

/// Scheduled, durable workflows on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "polos", version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: ./polos.toml if present; env POLOS_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// NATS server URL(s), comma-separated (overrides nats.url / POLOS_NATS__URL).
    #[arg(long, global = true, value_name = "URL")]
    pub nats_url: Option<String>,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// JetStream buckets and streams.
    #[command(subcommand)]
    Streams(streams::StreamsCommand),
    /// Cron expressions: check when one fires.
    #[command(subcommand)]
    Cron(cron::CronCommand),
    /// Create, inspect and manage schedules through the API.
    Schedules(schedules::SchedulesArgs),
    /// Run the scheduler service (ticker + schedules API) until Ctrl-C / SIGTERM.
    Scheduler,
    /// Runs recorded by workers: list them, or show one with its steps.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Local development: NATS, scheduler and the example workflows in one command.
    Dev(dev::DevArgs),
}

impl Cli {
    /// Loads the configuration with this invocation's flags as the top layer.
    pub fn load_config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut overrides = figment::Figment::new();
        if let Some(url) = &self.nats_url {
            overrides = overrides.merge(figment::providers::Serialized::default("nats.url", url));
        }
        Config::load(self.config.as_deref(), overrides)
    }
}

/// Runs a parsed command line to completion and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Streams(ref cmd) => streams::run(&cli, cmd).await,
        Command::Cron(ref cmd) => cron::run(cmd),
        Command::Schedules(ref args) => schedules::run(&cli, args).await,
        Command::Scheduler => scheduler::run(&cli).await,
        Command::Runs(ref cmd) => runs::run(&cli, cmd).await,
        Command::Dev(ref args) => dev::run(&cli, args).await,
    }
}

/// Installs the tracing subscriber described by `[log]`. Called once by `main`.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Prints an error to stderr and returns `code`.
pub(crate) fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}
