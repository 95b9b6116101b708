//! The `polos` command line. Each subcommand lives in its own file and returns an exit code;
//! `src/main.rs` only parses arguments and calls [`run`].

mod cron;
mod dev;
mod permissions;
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
/// Exit code when NATS cannot be reached, refuses (credentials, permissions) or fails.
pub const EXIT_UNAVAILABLE: u8 = 4;

/// Shown after `polos --help`: where to start, exit codes, where settings come from.
const AFTER_HELP: &str = "\
Getting started:
  polos dev                              local NATS + scheduler + the example workflows
  polos schedules list                   what is scheduled, and when it fires next
  polos schedules trigger daily-report   run a workflow now
  polos runs list                        what ran, with status and attempts
  polos cron next \"0 9 * * *\" --timezone America/New_York

Settings: ./polos.toml, then POLOS_* variables (e.g. POLOS_NATS__URL), then flags.
Exit codes: 0 ok, 2 invalid input, 3 not found, 4 NATS unreachable, permission denied or server trouble.";

/// Scheduled, durable workflows on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "polos", version, about, long_about = None, after_help = AFTER_HELP)]
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
    #[command(
        subcommand,
        after_help = "Example:\n  polos streams apply --nats-url nats://prod:4222   # once per server or cluster"
    )]
    Streams(streams::StreamsCommand),
    /// Cron expressions: check when one fires.
    #[command(
        subcommand,
        after_help = "Examples:\n  polos cron next \"0 9 * * *\"\n  polos cron next \"30 2 * * *\" --timezone America/New_York --after 2026-03-07T00:00:00Z -n 3"
    )]
    Cron(cron::CronCommand),
    /// Create, inspect and manage schedules through the API.
    #[command(after_help = "\
Examples:
  polos schedules create user-reminder \"0 8 * * *\" --timezone America/Los_Angeles --key user_123
  polos schedules list --workflow user-reminder
  polos schedules trigger daily-report
  polos schedules pause user-reminder --key user_123 --note \"holiday\"

Needs a running scheduler (`polos scheduler`, or `polos dev`) to answer the API.")]
    Schedules(schedules::SchedulesArgs),
    /// Run the scheduler service (ticker + schedules API) until Ctrl-C / SIGTERM.
    #[command(after_help = "\
Run one or more replicas against the same NATS: one holds the lease and fires, every replica
answers the API. Apply the streams first (`polos streams apply`).

Example:
  polos scheduler --nats-url nats://prod:4222
  polos scheduler --http 4280                # dashboard + /metrics on 127.0.0.1:4280")]
    Scheduler(scheduler::SchedulerArgs),
    /// Runs recorded by workers: list them, or show one with its steps.
    #[command(
        subcommand,
        after_help = "Examples:\n  polos runs list --workflow daily-report --status failed\n  polos runs get <run_id>"
    )]
    Runs(runs::RunsCommand),
    /// Local development: NATS, the scheduler and the example workflows in one command.
    #[command(
        display_order = 0,
        after_help = "\
Starts nats-server with JetStream on 127.0.0.1 (data in ./.polos, reused on the next start)
unless a NATS URL is configured (--nats-url, nats.url, POLOS_NATS__URL), then the scheduler,
the workflows of examples/, and a demo schedule (user-reminder, key dev-demo, every minute).
Prints one line per run status change. Ctrl-C stops everything.

Examples:
  polos dev
  polos dev --port 0                         # any free port instead of 4222
  polos dev --nats-url nats://127.0.0.1:4222 # use a running server"
    )]
    Dev(dev::DevArgs),
    /// NATS permissions per role (least privilege), for nats-server or a user JWT.
    #[command(after_help = "\
Examples:
  polos permissions > permissions.conf                 # every role, as shipped in deploy/nats/
  polos permissions worker --workflow daily-report     # a worker limited to its workflows
  polos permissions scheduler --format nsc             # an `nsc add user` command (JWT)")]
    Permissions(permissions::PermissionsArgs),
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
        Command::Scheduler(ref args) => scheduler::run(&cli, args).await,
        Command::Runs(ref cmd) => runs::run(&cli, cmd).await,
        Command::Dev(ref args) => dev::run(&cli, args).await,
        Command::Permissions(ref args) => permissions::run(args),
    }
}

/// Installs the tracing subscriber described by `[log]`, writing to stderr. Called once by
/// `main` (and by worker programs). Colours only when stderr is a terminal (and `NO_COLOR` is
/// unset), so logs piped to a file or a container log are plain text; `log.format = "json"`
/// writes one JSON object per line, with the fields of the enclosing spans (a worker's
/// `workflow`, `run_id`, `attempt`).
pub fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ =
        tracing::subscriber::set_global_default(log_subscriber(&config.log, std::io::stderr, ansi));
}

/// The subscriber [`init_logging`] installs, writing to `writer` (tests capture it with
/// `tracing::subscriber::set_default`).
pub fn log_subscriber<W>(
    log: &crate::config::LogConfig,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match tracing_subscriber::EnvFilter::try_new(&log.level) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "warning: log.level {:?} is not a valid filter ({e}); logging at info. Write e.g. \"info\" or \"polos=debug,async_nats=warn\"",
                log.level
            );
            tracing_subscriber::EnvFilter::new("info")
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match log.format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// Loads the configuration and connects to NATS; on failure prints the error and returns the exit
/// code (`EXIT_INVALID` for a bad configuration, `EXIT_UNAVAILABLE` when NATS cannot be reached).
pub(crate) async fn connect(cli: &Cli) -> Result<(Config, async_nats::Client), ExitCode> {
    let config = cli.load_config().map_err(|e| fail(EXIT_INVALID, e))?;
    let client = crate::nats::connect(&config.nats)
        .await
        .map_err(|e| fail(EXIT_UNAVAILABLE, e))?;
    Ok((config, client))
}

/// Prints an error to stderr and returns `code`.
pub(crate) fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}
