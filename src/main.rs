//! The `polos` binary: parse arguments, load config, dispatch. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = polos::cli::Cli::parse();
    if let Ok(config) = cli.load_config() {
        polos::cli::init_logging(&config);
    }
    polos::cli::run(cli).await
}
