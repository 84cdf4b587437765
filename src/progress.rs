//! Progress reporting seam: the library reports phases and bytes; the binary
//! decides how to show them (a bar on a terminal, one line per phase in a
//! log, nothing when quiet).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub trait Progress: Send + Sync {
    /// A wait that is not counted in bytes (e.g. a spread checkpoint).
    fn phase(&self, _what: &str) {}
    fn begin(&self, what: &str, total_bytes: u64);
    fn advance(&self, bytes: u64);
    fn end(&self);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}

/// For logs (cron, systemd): each phase as one line on stderr.
pub struct Lines;

impl Progress for Lines {
    fn phase(&self, what: &str) {
        eprintln!("pgstrata: {what}");
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
    fn phase(&self, what: &str) {
        self.bar.set_length(0);
        self.bar.set_message(what.to_string());
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
