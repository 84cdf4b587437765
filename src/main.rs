//! The `pgstrata` binary: parse, set up logging, call the library, map the
//! result to an exit status (0 success, 1 failure, 2 usage).
#![forbid(unsafe_code)]

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let cfg = match cli::load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgstrata: {e:#}");
            return ExitCode::from(2);
        }
    };
    let level = args
        .log_level
        .clone()
        .or(cfg.log_level.clone())
        .unwrap_or_else(|| "warn".into());
    let filter = match tracing_subscriber::EnvFilter::try_new(format!("pgstrata={level}")) {
        Ok(f) if ["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) => f,
        _ => {
            eprintln!("pgstrata: invalid --log-level {level:?} (error, warn, info, debug, trace)");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    match cli::run(args, cfg) {
        Ok(cli::Outcome::Ok) => ExitCode::SUCCESS,
        Ok(cli::Outcome::QuietFailure) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pgstrata: error: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                tracing::debug!("caused by: {s}");
                src = s.source();
            }
            ExitCode::from(1)
        }
    }
}
