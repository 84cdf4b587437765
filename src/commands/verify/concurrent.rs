//! Removals by another command while verify runs.
//!
//! Verify takes no lock, so that an hours-long verify never holds up the
//! hourly backup. Backups only add to the repository, and verify copes with
//! that (a pack it does not know is a note). `expire` and `repair` remove:
//! rows and packs verify has already read about can be gone when it reads
//! them, which would look like damage. So verify remembers which complete
//! backups and packs the catalog had when it began; if it finds problems
//! (or fails) and some of them are gone by then, it checks again. In object
//! storage an expire elsewhere publishes its catalog only when it ends: a
//! run with problems while one holds the lock waits for it, then checks
//! again. Verify also registers as a reader, so an expire leaves the packs
//! it replaces while verify runs (`repo::lock::readers`).

use std::collections::HashSet;

use super::VerifyReport;
use crate::catalog::{BackupStatus, Catalog};
use crate::error::Result;
use crate::format::PackId;
use crate::repo::Repository;

/// Runs of verify when backups or packs are removed under it each time.
const ATTEMPTS: u32 = 3;
/// How long verify waits for an expire of object storage running elsewhere
/// to publish its catalog before it checks again.
const REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Run verify (`once`) until no removal is seen under a run with problems,
/// at most [`ATTEMPTS`] times.
pub(super) fn run(
    repo: &Repository,
    once: impl Fn() -> Result<VerifyReport>,
) -> Result<VerifyReport> {
    // An expire beside verify leaves the packs it replaces, but its catalog
    // changes are still seen.
    let _reading = repo.register_reader();
    let mut again = 0;
    loop {
        let before = Before::read(&repo.catalog()?)?;
        let r = once();
        if matches!(&r, Ok(report) if report.is_ok()) && again == 0 {
            return r;
        }
        // A fresh view of the catalog, after any expire of object storage
        // running elsewhere has published its own; if that cannot be read,
        // the run's own result stands.
        let removed = !matches!(&r, Ok(report) if report.is_ok())
            && (repo.waited_for_removal(REMOVAL_WAIT).unwrap_or(false)
                || repo
                    .catalog()
                    .and_then(|c| before.removed_since(&c))
                    .unwrap_or(false));
        if removed && again + 1 < ATTEMPTS {
            again += 1;
            tracing::info!(
                "verify: backups or packs were removed while it ran (an expire?); checking again"
            );
            continue;
        }
        return r.map(|mut report| {
            if removed {
                report.notes.push(
                    "backups or packs were removed while verify ran, each of the last \
                     three times (an expire or repair running beside it): run verify again \
                     when nothing else runs before trusting the problems above"
                        .into(),
                );
            } else if again > 0 {
                report.notes.push(format!(
                    "backups or packs were removed while verify ran (an expire or repair \
                     beside it): verified again ({} run(s)), after they were gone",
                    again + 1
                ));
            }
            report
        });
    }
}

/// What a verify run began with.
pub(super) struct Before {
    backups: HashSet<String>,
    packs: HashSet<PackId>,
}

impl Before {
    /// Complete backups and packs (32 bytes a pack, and a pack holds
    /// megabytes, so this stays small however large the repository).
    pub(super) fn read(cat: &Catalog) -> Result<Self> {
        let mut backups = HashSet::new();
        for c in cat.clusters().list()? {
            for b in cat.backups().of_cluster(c.id)? {
                if b.status == BackupStatus::Complete {
                    backups.insert(b.id);
                }
            }
        }
        let packs = cat.packs().list()?.into_iter().map(|(id, _)| id).collect();
        Ok(Before { backups, packs })
    }

    /// Whether any of them is gone from `now` (a fresh view of the catalog).
    pub(super) fn removed_since(&self, now: &Catalog) -> Result<bool> {
        let after = Before::read(now)?;
        Ok(!self.backups.is_subset(&after.backups) || !self.packs.is_subset(&after.packs))
    }
}
