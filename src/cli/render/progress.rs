//! Progress as the command line shows it: a bar on a terminal, one line per
//! phase in a log (cron, systemd), and the library's phases in its words.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pgstrata::{Phase, Progress, Setting};

use super::error::flag;

/// A phase in words, with the flag that changes it.
pub fn phase(p: Phase) -> String {
    match p {
        Phase::SpreadCheckpoint => format!(
            "waiting for the next checkpoint (spread); {} asks for an immediate one",
            flag(Setting::StartFast)
        ),
    }
}

/// For logs: each phase as one line on stderr.
pub struct Lines;

impl Progress for Lines {
    fn phase(&self, p: Phase) {
        eprintln!("pgstrata: {}", phase(p));
    }
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

/// A terminal progress bar on stderr: bytes, rate and ETA.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Bar { bar }
    }
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Bar {
    fn phase(&self, p: Phase) {
        self.bar.set_length(0);
        self.bar.set_message(phase(p));
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }
    fn begin(&self, what: &str, total_bytes: u64) {
        self.bar.set_message(what.to_string());
        self.bar.set_length(total_bytes);
        self.bar.set_position(0);
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn end(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_checkpoint_names_the_flag_that_skips_it() {
        assert_eq!(
            phase(Phase::SpreadCheckpoint),
            "waiting for the next checkpoint (spread); --start-fast asks for an immediate one"
        );
    }
}
