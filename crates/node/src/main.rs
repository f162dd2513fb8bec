//! `spegel-node`: the host daemon. Parse config → init telemetry → build → run → shut down.
//! Everything else lives in the library crates.

mod config;
mod configuration;
mod downloads;
mod exit;
mod host;
mod membership;
mod p2p;
mod registry;
mod systemd;
mod tasks;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

use config::{Cli, Command};

/// Exit code for a configuration an operator must fix (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = exit::BAD_CONFIG;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Err(e) = telemetry::init(&cli.log) {
        eprintln!("spegel-node: {e:#}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("spegel-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Registry(args) => registry::run(args).await,
            Command::Configuration(args) => configuration::configure(&args),
            Command::Cleanup(args) => configuration::cleanup(&args),
            Command::GenerateSecret(args) => membership::generate(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<exit::BadConfig>() => {
            eprintln!("spegel-node: {e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "spegel-node failed");
            ExitCode::FAILURE
        }
    }
}
