//! WAL checks: every segment from a backup's start to its stop is archived
//! (without them the backup never becomes consistent), every archived object
//! decodes to what its hash says, and the archive has no gap on a timeline
//! between the oldest backup's start and the newest segment (a gap stops
//! point-in-time recovery of every older backup at the gap).

use std::collections::{BTreeMap, BTreeSet};

use super::{Problem, ProblemKind};
use crate::archive;
use crate::catalog::BackupRow;
use crate::error::Result;
use crate::pg::{TimelineId, WalFileName, WalSegment};
use crate::progress::Progress;
use crate::repo::Repository;

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

/// Check the WAL of one cluster for `backups` (complete ones, oldest first).
/// `full_scan` also verifies objects no backup in scope needs.
pub fn check(
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
    let names = archive::list(repo, cluster)?;
    let mut present: BTreeMap<TimelineId, BTreeSet<u64>> = BTreeMap::new();
    for n in &names {
        if let Ok(WalFileName::Segment { .. }) = WalFileName::parse(n) {
            if let Ok(s) = WalSegment::from_name(n, seg) {
                present.entry(s.timeline).or_default().insert(s.segno);
            }
        }
    }
    // Each backup's own range, as segments.
    let ranges: Vec<(&BackupRow, WalSegment, WalSegment)> = backups
        .iter()
        .filter_map(|b| {
            let a = WalSegment::from_name(b.wal_start.as_deref()?, seg).ok()?;
            let z = WalSegment::from_name(b.wal_stop.as_deref()?, seg).ok()?;
            Some((b, a, z))
        })
        .collect();
    for (b, a, z) in &ranges {
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
    // Gaps after a backup's stop and before the newest segment of its
    // timeline: recovery of that backup stops at the gap.
    for (tli, have) in &present {
        let on_tli: Vec<&(&BackupRow, WalSegment, WalSegment)> =
            ranges.iter().filter(|r| r.1.timeline == *tli).collect();
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
    // Contents: every object decodes and matches its hash.
    let mut checked = 0;
    for n in &names {
        let needed_by: Vec<String> = match WalSegment::from_name(n, seg) {
            Ok(s) => ranges
                .iter()
                .filter(|(_, a, _)| a.timeline == s.timeline && a.segno <= s.segno)
                .map(|(b, _, _)| b.id.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        if !full_scan && needed_by.is_empty() {
            continue;
        }
        checked += 1;
        let key = archive::wal_key(cluster, n)?;
        let size = repo.backend().size(&key)?.unwrap_or(0);
        if let Err(e) = archive::fetch(repo, cluster, n) {
            problems.push(Problem {
                kind: ProblemKind::WalCorrupt,
                object: key,
                detail: e.to_string(),
                backups: needed_by,
                files: Vec::new(),
            });
        }
        progress.advance(size);
    }
    Ok(checked)
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
