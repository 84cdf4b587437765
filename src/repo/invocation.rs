//! How PostgreSQL (`archive_command`, `restore_command`) and pgstrata's own
//! background workers call pgstrata again.
//!
//! Only the binary knows its command line: the program's path, how it names
//! the repository, the cluster and its options. The library asks it through
//! this one value, built by the binary and passed in the options, and never
//! spells a command line itself.

use std::ffi::OsString;
use std::fmt::Debug;
use std::path::Path;

use super::PassphraseSource;

/// pgstrata's own command line, as its binary spells it.
pub trait Invocation: Debug + Send + Sync {
    /// The shell command for `archive_command` that archives the WAL of
    /// `cluster` into the repository (PostgreSQL's `%p` included), unlocking
    /// an encrypted repository as `unlocked_by` did.
    fn archive_command(&self, cluster: &str, unlocked_by: Option<&PassphraseSource>) -> String;

    /// The shell command for `restore_command` that fetches WAL of entry
    /// `history` of `cluster`'s history (`%f` and `%p` included).
    fn restore_command(
        &self,
        cluster: &str,
        history: u32,
        unlocked_by: Option<&PassphraseSource>,
    ) -> String;

    /// The background WAL prefetcher's command line, program first: it keeps
    /// `count` segments of `segment_size` bytes fetched ahead into `spool`.
    fn prefetcher(
        &self,
        cluster: &str,
        history: u32,
        spool: &Path,
        count: usize,
        segment_size: u64,
    ) -> Vec<OsString>;
}

/// `archive_command = '...'` as the operator should set it, or words that
/// say so when the caller gave no invocation.
pub(crate) fn archive_command_setting(
    inv: Option<&dyn Invocation>,
    cluster: &str,
    unlocked_by: Option<&PassphraseSource>,
) -> String {
    match inv {
        Some(i) => format!(
            "archive_command = {}",
            crate::util::quote(&i.archive_command(cluster, unlocked_by))
        ),
        None => "an archive_command that archives into this repository".into(),
    }
}

/// A stand-in for unit tests: a recognizable command per call.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    #[derive(Debug)]
    pub struct Fake;

    impl Invocation for Fake {
        fn archive_command(&self, cluster: &str, _: Option<&PassphraseSource>) -> String {
            format!("pgstrata-test push {cluster} %p")
        }
        fn restore_command(
            &self,
            cluster: &str,
            history: u32,
            unlocked_by: Option<&PassphraseSource>,
        ) -> String {
            let unlocked = unlocked_by.is_some();
            format!("pgstrata-test get {cluster} history={history} unlocked={unlocked} %f \"%p\"")
        }
        fn prefetcher(&self, _: &str, _: u32, _: &Path, _: usize, _: u64) -> Vec<OsString> {
            vec!["true".into()]
        }
    }

    pub fn fake() -> Option<std::sync::Arc<dyn Invocation>> {
        Some(std::sync::Arc::new(Fake))
    }
}
