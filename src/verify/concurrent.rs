//! Removals by another command while verify runs.
//!
//! Verify takes no lock, so that an hours-long verify never holds up the
//! hourly backup. Backups only add to the repository, and verify copes with
//! that (a pack it does not know is a note). `expire` and `repair` remove:
//! rows and packs verify has already read about can be gone when it reads
//! them, which would look like damage. So verify remembers which complete
//! backups and packs the catalog had when it began; if it finds problems
//! (or fails) and some of them are gone by then, it checks again.

use std::collections::HashSet;

use crate::catalog::{BackupStatus, Catalog};
use crate::error::Result;
use crate::format::PackId;

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
        for c in cat.clusters()? {
            for b in cat.backups(c.id)? {
                if b.status == BackupStatus::Complete {
                    backups.insert(b.id);
                }
            }
        }
        let packs = cat.packs()?.into_iter().map(|(id, _)| id).collect();
        Ok(Before { backups, packs })
    }

    /// Whether any of them is gone from `now` (a fresh view of the catalog).
    pub(super) fn removed_since(&self, now: &Catalog) -> Result<bool> {
        let after = Before::read(now)?;
        Ok(!self.backups.is_subset(&after.backups) || !self.packs.is_subset(&after.packs))
    }
}
