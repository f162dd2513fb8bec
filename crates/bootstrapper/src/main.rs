//! `spegel-bootstrapper`: parse config → init logging → build → run → shut down.
//! Everything else lives in the library half of this crate.

use std::process::ExitCode;

use clap::Parser;
use spegel_bootstrapper::run::{cancel_on_signals, init_logging};
use spegel_bootstrapper::{Cli, Listeners, kube_client, run};
use tokio_util::sync::CancellationToken;

/// Exit code for a configuration an operator must fix (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let config = match cli.validate().and_then(|config| {
        init_logging(&config.log_level, config.log_format)?;
        Ok(config)
    }) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("spegel-bootstrapper: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("spegel-bootstrapper: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        let client = kube_client(config.kubeconfig.as_deref()).await?;
        let listeners = Listeners::bind(&config).await?;
        run(config, client, listeners, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_bad_config() => {
            tracing::error!(error = %e, "bad configuration");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = %e, "spegel-bootstrapper failed");
            ExitCode::FAILURE
        }
    }
}
