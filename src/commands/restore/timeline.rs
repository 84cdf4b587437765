//! Which WAL a restore follows: the target timeline, its history through
//! the archived `.history` files, and (for a target restore point) where the
//! restore point is on that path. Decided before anything is written.

use super::recovery::Recovery;
use super::target::{ArchiveEnd, RecoveryTarget, TimelineTarget};
use crate::catalog::BackupRow;
use crate::error::{Error, Hint, Result};
use crate::pg::history::TimelinePath;
use crate::pg::walrecord::RestorePointScanner;
use crate::pg::{Lsn, WalFileName};
use crate::repo::Repository;

/// The timeline recovery ends on, as PostgreSQL will choose it.
/// `complete` is oldest first; `set` is the backup the user chose.
pub(super) fn target_timeline(
    names: &[String],
    complete: &[BackupRow],
    set: Option<&str>,
    timeline: Option<&TimelineTarget>,
) -> u32 {
    let newest_backup = || {
        set.filter(|id| *id != "latest")
            .and_then(|id| complete.iter().find(|b| b.id == id))
            .or(complete.last())
            .map(|b| b.timeline)
            .unwrap_or(1)
    };
    match timeline {
        Some(TimelineTarget::Id(n)) => *n,
        Some(TimelineTarget::Current) => newest_backup(),
        // PostgreSQL's default since 12 is `latest`: the newest timeline
        // with a history file in the archive.
        None | Some(TimelineTarget::Latest) => names
            .iter()
            .filter_map(|n| WalFileName::parse(n).ok())
            .map(|w| w.timeline().0)
            .chain(std::iter::once(newest_backup()))
            .max()
            .unwrap_or(1),
    }
}

/// The path of timelines recovery to `tli` follows.
pub(super) fn path_to(
    repo: &Repository,
    cluster: &str,
    tli: u32,
    complete: &[BackupRow],
) -> Result<TimelinePath> {
    if tli == 1 {
        return Ok(TimelinePath::root(1));
    }
    let name = format!("{tli:08X}.history");
    match repo.wal_fetch(cluster, &name)? {
        Some(bytes) => TimelinePath::parse(tli, &String::from_utf8_lossy(&bytes)),
        None if complete.iter().any(|b| b.timeline == tli) => Ok(TimelinePath::root(tli)),
        None => Err(Error::NotFound(format!(
            "timeline {tli} has no history file ({name}) in the archive of cluster {cluster:?}: \
             choose another target timeline"
        ))
        .hint(Hint::SeeInfo)),
    }
}

/// What the archive holds on the path to the target timeline, and where a
/// named restore point is; refuses an unknown restore point name.
pub(super) fn archive_end(
    repo: &Repository,
    cluster: &str,
    names: &[String],
    seg_size: u64,
    complete: &[BackupRow],
    set: Option<&str>,
    recovery: &Recovery,
) -> Result<ArchiveEnd> {
    let (target, timeline) = (&recovery.target, recovery.timeline.as_ref());
    let tli = target_timeline(names, complete, set, timeline);
    let path = path_to(repo, cluster, tli, complete)?;
    let mut end = ArchiveEnd::on_path(names, seg_size, path, |n| repo.wal_archived_at(cluster, n))?;
    if let RecoveryTarget::Name(wanted) = target {
        let from = complete
            .iter()
            .filter(|b| end.path.reaches_from(b.timeline, b.start_lsn))
            .map(|b| b.start_lsn.0 / seg_size.max(1))
            .min()
            .unwrap_or(0);
        let mut scanner = RestorePointScanner::new();
        for seg in ArchiveEnd::segments_on_path(names, seg_size, &end.path) {
            if seg.segno < from {
                continue;
            }
            let name = seg.name(seg_size);
            let Some(bytes) = repo.wal_fetch(cluster, &name)? else {
                continue;
            };
            scanner.feed_segment(Lsn(seg.segno * seg_size), &bytes, &name)?;
        }
        let mut same: Vec<Lsn> = scanner
            .found
            .iter()
            .filter(|r| &r.name == wanted)
            .map(|r| r.lsn)
            .collect();
        same.sort();
        let rp = same.pop().ok_or_else(|| {
            Error::NotFound(format!(
                "restore point {wanted:?} is not in the archived WAL of cluster {cluster:?} on \
                 timeline {tli} after the oldest backup (nothing was written)"
            ))
        })?;
        end.restore_point = Some(rp);
        end.restore_point_floor = same.pop();
    }
    Ok(end)
}
