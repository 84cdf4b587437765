//! The `pgstrata` binary: parse, set up logging, call the library, map the
//! result to an exit status (0 success, 1 failure, 2 usage).
//!
//! Unsafe code: one call, in `cli::malloc`, tuning glibc's allocator.
#![deny(unsafe_code)]

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing::Level;

const USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One prefix for every error, clap's included.
            let text = e.render().to_string();
            eprint!("pgstrata: {}", text.trim_start());
            if !text.ends_with('\n') {
                eprintln!();
            }
            return ExitCode::from(USAGE);
        }
    };
    let cfg = match cli::ConfigFile::load(args.global.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgstrata: error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let in_file = cfg
        .read::<cli::args::GlobalArgs>()
        .map(|g| g.log_level)
        .unwrap_or_default();
    let level = match log_level(args.global.log_level.as_deref(), in_file.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pgstrata: error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    // RFC 3339 UTC timestamps: cron and systemd logs need them.
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli::run(args, &cfg) {
        Ok(cli::Outcome::Ok) => ExitCode::SUCCESS,
        Ok(cli::Outcome::QuietFailure) => ExitCode::from(1),
        Err(Ok(cli::Usage(msg))) => {
            eprintln!("pgstrata: error: {msg}");
            ExitCode::from(USAGE)
        }
        Err(Err(e)) => {
            eprintln!("pgstrata: error: {}", cli::render_error(&e));
            let mut src = e.source();
            while let Some(s) = src {
                tracing::debug!("caused by: {s}");
                src = s.source();
            }
            ExitCode::from(1)
        }
    }
}

/// The log level: `--log-level`, else `PGSTRATA_LOG`, else `RUST_LOG` (a
/// bare level, or `pgstrata=LEVEL` among directives), else the config file,
/// else warn (the command line beats the environment, which beats the file,
/// as for every setting). Any case.
fn log_level(given: Option<&str>, file: Option<&str>) -> Result<Level, String> {
    let parse = |s: &str, from: &str| -> Result<Level, String> {
        s.trim().parse::<Level>().map_err(|_| {
            format!("invalid log level {s:?} in {from} (error, warn, info, debug or trace)")
        })
    };
    if let Some(l) = given {
        return parse(l, "--log-level");
    }
    if let Some(l) = std::env::var("PGSTRATA_LOG").ok().filter(|v| !v.is_empty()) {
        return parse(&l, "PGSTRATA_LOG");
    }
    if let Some(l) = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()) {
        // Directives: take ours, or a bare level; ignore other crates'.
        for d in l.split(',') {
            match d.split_once('=') {
                Some(("pgstrata", lvl)) => return parse(lvl, "RUST_LOG"),
                None => return parse(d, "RUST_LOG"),
                Some(_) => {}
            }
        }
    }
    match file {
        Some(l) => parse(l, "the config file's log-level"),
        None => Ok(Level::WARN),
    }
}
