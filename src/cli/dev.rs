//! `polos dev`: a local NATS server, the scheduler and the example workflows in one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{fail, Cli, EXIT_INVALID, EXIT_UNAVAILABLE};
use crate::dev::{self, DevOptions};

/// Arguments of `polos dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Client port of the embedded server (default 4222, or a free one if taken; 0 = any free
    /// port). Ignored when a NATS URL is configured.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Where the embedded server keeps its data; a second start reuses it.
    #[arg(long, value_name = "DIR", default_value = dev::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where to serve the dashboard and /metrics: PORT (on 127.0.0.1) or HOST:PORT (default
    /// http.addr, else 127.0.0.1:4280 or a free port if taken; 0 = any free port).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
}

pub(super) async fn run(cli: &Cli, args: &DevArgs) -> ExitCode {
    let config = match cli.load_config() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_INVALID, e),
    };
    let options = DevOptions {
        data_dir: args.data_dir.clone(),
        port: args.port,
        http: args.http.clone(),
    };
    match dev::run(
        config,
        options,
        dev::example_workflows(),
        super::scheduler::stop_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_UNAVAILABLE, e),
    }
}
