//! Progress reporting seam: the library reports phases and bytes; the binary
//! decides how to show them (a bar on a terminal, one line per phase in a
//! log, nothing when quiet) and words them.

/// A wait that is not counted in bytes. Data, not words: the binary says
/// what it means and what the user can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Backup mode waits for the server's next checkpoint, spread over
    /// `checkpoint_completion_target` (the `StartFast` setting asks for an
    /// immediate one instead).
    SpreadCheckpoint,
}

pub trait Progress: Send + Sync {
    fn phase(&self, _phase: Phase) {}
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
