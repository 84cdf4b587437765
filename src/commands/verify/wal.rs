//! WAL checks: every segment from a backup's start to its stop is archived
//! (without them the backup never becomes consistent), every archived object
//! decodes to what its hash says, and the archive has no gap on a timeline
//! between the oldest backup's start and the newest segment (a gap stops
//! point-in-time recovery of every older backup at the gap).

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use super::{Problem, ProblemKind};
use crate::catalog::BackupRow;
use crate::error::Result;
use crate::pg::{TimelineId, WalFileName, WalSegment};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::WalStored;

const DEFAULT_SEG_SIZE: u64 = 16 << 20;

fn range_text(tli: TimelineId, a: u64, b: u64, seg: u64) -> String {
    let n = |s| {
        WalSegment {
            timeline: tli,
            segno: s,
        }
        .name(seg)
    };
    if a == b {
        format!("segment {}", n(a))
    } else {
        format!("segments {} .. {} ({} files)", n(a), n(b), b - a + 1)
    }
}

/// Runs of consecutive missing segment numbers in `lo..=hi`.
fn gaps(present: &BTreeSet<u64>, lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut s = lo;
    while s <= hi {
        if present.contains(&s) {
            s += 1;
            continue;
        }
        let start = s;
        while s <= hi && !present.contains(&s) {
            s += 1;
        }
        out.push((start, s - 1));
    }
    out
}

/// A backup and the first and last segment of its own WAL range.
type Range<'a> = (&'a BackupRow, WalSegment, WalSegment);

/// Check the WAL of one cluster for `backups` (complete ones, oldest first).
/// `full_scan` also verifies objects no backup in scope needs.
pub(super) fn check(
    repo: &Repository,
    cluster: &str,
    backups: &[BackupRow],
    full_scan: bool,
    progress: &dyn Progress,
    problems: &mut Vec<Problem>,
) -> Result<u64> {
    let seg = backups
        .first()
        .map(|b| b.wal_seg_size)
        .unwrap_or(DEFAULT_SEG_SIZE);
    let objects = repo.wal_objects(cluster)?;
    let mut present: BTreeMap<TimelineId, BTreeSet<u64>> = BTreeMap::new();
    for w in &objects {
        if let Ok(WalFileName::Segment { .. }) = WalFileName::parse(&w.name) {
            if let Ok(s) = WalSegment::from_name(&w.name, seg) {
                present.entry(s.timeline).or_default().insert(s.segno);
            }
        }
    }
    let ranges: Vec<Range<'_>> = backups
        .iter()
        .filter_map(|b| {
            let a = WalSegment::from_name(b.wal_start.as_deref()?, seg).ok()?;
            let z = WalSegment::from_name(b.wal_stop.as_deref()?, seg).ok()?;
            Some((b, a, z))
        })
        .collect();
    own_ranges(cluster, &ranges, &present, seg, problems);
    gaps_after(cluster, &ranges, &present, seg, problems);
    contents(
        repo, cluster, &objects, &ranges, seg, full_scan, progress, problems,
    )
}

/// Every segment from a backup's start to its stop is archived.
fn own_ranges(
    cluster: &str,
    ranges: &[Range<'_>],
    present: &BTreeMap<TimelineId, BTreeSet<u64>>,
    seg: u64,
    problems: &mut Vec<Problem>,
) {
    for (b, a, z) in ranges {
        let have = present.get(&a.timeline).cloned().unwrap_or_default();
        for (x, y) in gaps(&have, a.segno, z.segno) {
            problems.push(Problem {
                kind: ProblemKind::WalMissing,
                object: format!("wal/{cluster}"),
                detail: format!(
                    "{} between the backup's start and stop {} not archived: the backup can \
                     never become consistent",
                    range_text(a.timeline, x, y, seg),
                    if x == y { "is" } else { "are" }
                ),
                backups: vec![b.id.clone()],
                files: Vec::new(),
            });
        }
    }
}

/// Gaps after a backup's stop and before the newest segment of its
/// timeline: recovery of that backup stops at the gap.
fn gaps_after(
    cluster: &str,
    ranges: &[Range<'_>],
    present: &BTreeMap<TimelineId, BTreeSet<u64>>,
    seg: u64,
    problems: &mut Vec<Problem>,
) {
    for (tli, have) in present {
        let on_tli: Vec<&Range<'_>> = ranges.iter().filter(|r| r.1.timeline == *tli).collect();
        let Some(lo) = on_tli.iter().map(|r| r.1.segno).min() else {
            continue;
        };
        let Some(&hi) = have.iter().next_back() else {
            continue;
        };
        for (x, y) in gaps(have, lo, hi) {
            let hit: Vec<String> = on_tli
                .iter()
                .filter(|r| r.2.segno < x)
                .map(|r| r.0.id.clone())
                .collect();
            if hit.is_empty() {
                continue; // inside a backup's own range: reported above
            }
            problems.push(Problem {
                kind: ProblemKind::WalGap,
                object: format!("wal/{cluster}"),
                detail: format!(
                    "{} missing from the archive: recovery from these backups stops before {} \
                     and cannot reach newer WAL",
                    range_text(*tli, x, y, seg),
                    WalSegment {
                        timeline: *tli,
                        segno: x
                    }
                    .name(seg)
                ),
                backups: hit,
                files: Vec::new(),
            });
        }
    }
}

/// Every object (that a backup in scope needs, or all) decodes and matches
/// its hash, checked in parallel, each streamed a piece at a time
/// (`format::wal::check`). Returns how many were checked.
#[allow(clippy::too_many_arguments)]
fn contents(
    repo: &Repository,
    cluster: &str,
    objects: &[WalStored],
    ranges: &[Range<'_>],
    seg: u64,
    full_scan: bool,
    progress: &dyn Progress,
    problems: &mut Vec<Problem>,
) -> Result<u64> {
    // The backups whose recovery reads segment `w`.
    let needed_by = |w: &WalStored| -> Vec<String> {
        let Ok(s) = WalSegment::from_name(&w.name, seg) else {
            return Vec::new();
        };
        ranges
            .iter()
            .filter(|(_, a, _)| a.timeline == s.timeline && a.segno <= s.segno)
            .map(|(b, _, _)| b.id.clone())
            .collect()
    };
    let todo: Vec<&WalStored> = objects
        .iter()
        .filter(|w| full_scan || !needed_by(w).is_empty())
        .collect();
    let found: Vec<Problem> = todo
        .par_iter()
        .filter_map(|w| {
            let r = repo.wal_check(cluster, &w.name);
            progress.advance(w.size);
            let e = r.err()?;
            Some(Problem {
                kind: ProblemKind::WalCorrupt,
                object: w.key.clone(),
                detail: e.to_string(),
                backups: needed_by(w),
                files: Vec::new(),
            })
        })
        .collect();
    problems.extend(found);
    Ok(todo.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_runs() {
        let have: BTreeSet<u64> = [1, 2, 5, 6, 9].into_iter().collect();
        assert_eq!(gaps(&have, 1, 9), vec![(3, 4), (7, 8)]);
        assert_eq!(gaps(&have, 0, 2), vec![(0, 0)]);
        assert!(gaps(&have, 5, 6).is_empty());
    }
}
