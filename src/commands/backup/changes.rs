//! Which blocks changed since the prior backup, from WAL: every block that a
//! record between the prior backup's **start** LSN and this backup's start
//! LSN references. A relation file whose blocks WAL accounts for is then read
//! only at those blocks (and past the prior backup's end of the file); every
//! other block is the prior backup's.
//!
//! Two sources say it, tried in this order:
//! - the server's own WAL summaries (PostgreSQL 17 and later with
//!   `summarize_wal = on`, see [`crate::pg::walsummaries`]): after waiting a
//!   little for the summarizer to reach this backup's start, the summary
//!   files of the backup's timeline must cover the whole range without a
//!   gap. A limit block (a fork created, truncated or dropped) and a
//!   database's limit (relfilenode 0) mean what `XLOG_SMGR_CREATE`,
//!   `XLOG_SMGR_TRUNCATE` and the database records mean below;
//! - the archived WAL, each segment decoded here (the repository's copy,
//!   else `pg_wal`'s).
//!
//! Anything the first cannot vouch for (not 17, `summarize_wal` off, a
//! gap, a lagging summarizer, an error) falls back to the second, saying
//! why; only when both fail does the backup read files (or `wal` fail).
//!
//! Why this is exact:
//! - the prior backup copied each block at some moment after its start. A
//!   block written after that start is named by a record after it, so it is
//!   read again here; a block not named was not written since, so the prior
//!   copy is its content (up to hint bits, which are not WAL-logged and need
//!   not be restored). The prior's *stop* LSN would be wrong: a block written
//!   during the prior backup may have been copied before the write, or torn;
//! - blocks written after this backup's start are replayed from its own WAL
//!   at restore, as for any block;
//! - what WAL cannot vouch for is read as before (size and mtime, else whole):
//!   every fork but the main one (the free space map is not WAL-logged, and
//!   visibility-map bits are cleared by heap records without naming the map's
//!   block), every non-relation file, a relation created, truncated or
//!   recreated since the prior start, every relation of a database created or
//!   dropped meanwhile (`CREATE DATABASE ... STRATEGY FILE_COPY` copies files
//!   with no record per block), a file shorter than the prior backup's copy.
//!
//! WAL is trusted only whole: a segment missing or unreadable, a record that
//! cannot be decoded, `wal_level = minimal` at any point (the summarizer
//! leaves such WAL out, a gap), a timeline other than the prior backup's, or
//! a prior backup from before this history entry make the whole backup fall
//! back to reading files as before, saying why.
//!
//! Memory: one compressed bitmap per relation fork that changed (a few bytes
//! per changed block at worst, ~1.2 MiB per 10⁷ blocks when they are dense),
//! whatever the size of the cluster.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use roaring::RoaringBitmap;

use crate::catalog::{BackupRow, BackupType};
use crate::error::{Error, Result};
use crate::format::walsummary::{BlockUnion, WalSummary};
use crate::pg::conn::Server;
use crate::pg::control;
use crate::pg::datadir::main_fork_file;
use crate::pg::history::TimelinePath;
use crate::pg::walblocks::WalEvent;
use crate::pg::walsummaries::{covering, SummaryEntry};
use crate::pg::{Lsn, TimelineId, WalSegment};
use crate::repo::Repository;

/// `backup --change-tracking`: how an incremental or differential backup
/// finds the blocks that changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChangeTracking {
    /// From WAL when it is complete, else by reading files (saying why).
    #[default]
    Auto,
    /// From WAL, or fail.
    Wal,
    /// By reading files: size and mtime, then every block.
    Off,
    /// As `Wal`, and every block is read as well: the backup fails if a
    /// block that WAL did not name differs from the prior copy and carries
    /// a page LSN at or after the prior backup's start (a write WAL should
    /// have named; hint bits alone leave the page LSN as it was). Slow: it
    /// is there to prove the tracking, not for every night.
    Check,
}

/// How a backup found what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    /// A full backup: everything is read.
    Full,
    /// The server's own WAL summaries (PostgreSQL 17 and later).
    WalSummaries,
    /// The block references of the archived WAL.
    ArchivedWal,
    /// Files were read (size and mtime first), with the reason.
    FileScan(String),
}

impl ChangeSource {
    /// As `info` shows it and the catalog keeps it: `wal-summaries`,
    /// `archived-wal`, `full`, or `file-scan: WHY`.
    pub fn describe(&self) -> String {
        match self {
            ChangeSource::Full => "full".into(),
            ChangeSource::WalSummaries => "wal-summaries".into(),
            ChangeSource::ArchivedWal => "archived-wal".into(),
            ChangeSource::FileScan(why) => format!("file-scan: {why}"),
        }
    }
}

/// The blocks WAL says changed, and what it cannot vouch for.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Main forks only.
    blocks: BTreeMap<(u32, u32, u32), RoaringBitmap>,
    /// `(spc, db, rel)` created, truncated or recreated since the start.
    untrusted_rels: HashSet<(u32, u32, u32)>,
    /// `(spc, db)` created or dropped since the start.
    untrusted_dbs: HashSet<(u32, u32)>,
    /// Blocks named, for the log.
    pub(super) count: u64,
}

/// What to read of one relation file.
pub(super) enum FilePlan<'a> {
    /// WAL does not vouch for it: read as before.
    AsBefore,
    /// Only these blocks (numbered within this file), and any past the
    /// prior backup's copy.
    Only(Option<&'a RoaringBitmap>, u32),
}

impl Changes {
    /// From the union of the summaries of `[from, to)`; `Err(why)` when WAL
    /// cannot be trusted for it.
    fn from_union(
        u: BlockUnion,
        to: Lsn,
        path: &TimelinePath,
    ) -> std::result::Result<Changes, String> {
        if u.end < to {
            return Err(format!(
                "WAL is accounted for only up to {}, before this backup's start {to}",
                u.end
            ));
        }
        let mut c = Changes::default();
        for (at, e) in u.events {
            if at >= to {
                break;
            }
            c.note(at, e, path)?;
        }
        for (rel, bm) in u.blocks {
            if rel.fork == 0 {
                c.count += bm.len();
                c.blocks.insert((rel.spc, rel.db, rel.rel), bm);
            }
        }
        Ok(c)
    }

    /// From the rows of the server's WAL summaries of the range: a limit
    /// block makes its relation read as before (a fork created, truncated
    /// or dropped), and with relfilenode 0 its database (created or
    /// dropped), as the matching records of archived WAL do.
    fn from_summaries(entries: impl Iterator<Item = Result<SummaryEntry>>) -> Result<Changes> {
        let mut c = Changes::default();
        for e in entries {
            let e = e?;
            let (spc, db, rel) = (e.rel.spc, e.rel.db, e.rel.rel);
            if e.limit && rel == 0 {
                c.untrusted_dbs.insert((spc, db));
            } else if e.limit {
                c.untrusted_rels.insert((spc, db, rel));
            } else if e.rel.fork == 0 && c.blocks.entry((spc, db, rel)).or_default().insert(e.block)
            {
                c.count += 1;
            }
        }
        Ok(c)
    }

    fn note(
        &mut self,
        at: Lsn,
        e: WalEvent,
        path: &TimelinePath,
    ) -> std::result::Result<(), String> {
        match e {
            WalEvent::RelCreate { rel } | WalEvent::RelTruncate { rel, .. } => {
                self.untrusted_rels.insert((rel.spc, rel.db, rel.rel));
            }
            WalEvent::DbCreate { spc, db, .. } => {
                self.untrusted_dbs.insert((spc, db));
            }
            WalEvent::DbDrop { db, spcs } => {
                self.untrusted_dbs.extend(spcs.into_iter().map(|s| (s, db)));
            }
            WalEvent::WalLevel(0) => return Err(format!("wal_level was minimal at {at}")),
            // The switch the history file names is the path being followed.
            WalEvent::EndOfRecovery { timeline, prev }
                if path.entry(timeline).is_some() && path.entry(prev).is_some() => {}
            WalEvent::EndOfRecovery { timeline, .. } => {
                return Err(format!(
                    "timeline {timeline} begins at {at}, off the path to timeline {}",
                    path.target
                ))
            }
            WalEvent::Undecodable => {
                return Err(format!("the WAL record at {at} could not be decoded"))
            }
            WalEvent::WalLevel(_) | WalEvent::Switch => {}
        }
        Ok(())
    }

    /// Relations with changed blocks.
    pub(super) fn relations(&self) -> usize {
        self.blocks.len()
    }

    /// What to read of the file at `path` (relative to the data directory).
    pub(super) fn plan(&self, path: &str, blocks_per_seg: u32) -> FilePlan<'_> {
        let Some((spc, db, rel, seg)) = main_fork_file(path) else {
            return FilePlan::AsBefore;
        };
        if self.untrusted_dbs.contains(&(spc, db)) || self.untrusted_rels.contains(&(spc, db, rel))
        {
            return FilePlan::AsBefore;
        }
        FilePlan::Only(
            self.blocks.get(&(spc, db, rel)),
            seg.saturating_mul(blocks_per_seg),
        )
    }
}

/// Where the WAL of `[from, to)` is read.
pub(super) struct WalRange<'a> {
    pub repo: &'a Repository,
    pub wal_id: &'a str,
    pub pgdata: &'a Path,
    /// The timelines from the prior backup's to this one's.
    pub path: TimelinePath,
    pub seg_size: u64,
    pub from: Lsn,
    pub to: Lsn,
}

/// The changes in `r`, or why WAL cannot say. Segments come from the
/// repository (verified), else from `pg_wal` (the one this backup starts
/// in is not archived yet).
pub(super) fn from_wal(r: &WalRange<'_>) -> Result<std::result::Result<Changes, String>> {
    if r.to <= r.from {
        return Ok(Ok(Changes::default()));
    }
    let (first, last) = (r.from.0 / r.seg_size, (r.to.0 - 1) / r.seg_size);
    // Each segment from the timeline recovery would read it from: the one
    // holding a switch point is the new timeline's.
    let segs: Vec<WalSegment> = (first..=last)
        .map(|segno| WalSegment {
            timeline: TimelineId(r.path.timeline_of_segment(segno, r.seg_size)),
            segno,
        })
        .collect();
    let mut union = BlockUnion::new();
    // A few segments at a time, one per thread: memory holds that many
    // segments and their summaries, besides the union, however long the range.
    for batch in segs.chunks(rayon::current_num_threads().max(1)) {
        let summaries: Vec<std::result::Result<WalSummary, String>> = batch
            .par_iter()
            .map(|s| summarize(r, *s))
            .collect::<Result<_>>()?;
        for s in summaries {
            let s = match s {
                Ok(s) => s,
                Err(why) => return Ok(Err(why)),
            };
            if !on_path(&r.path, s.timeline, s.start, r.seg_size) {
                return Ok(Err(format!(
                    "WAL at {} is of timeline {}, off the path to timeline {}",
                    s.start, s.timeline, r.path.target
                )));
            }
            if let Err(e) = union.add(s, "WAL block summaries") {
                return Ok(Err(e.to_string()));
            }
        }
    }
    Ok(Changes::from_union(union, r.to, &r.path))
}

/// Whether WAL of `timeline` belongs in the segment at `start`: its
/// timeline is on the path there (the segment holding a switch point begins
/// with the older timeline's WAL, page headers included).
fn on_path(path: &TimelinePath, timeline: u32, start: Lsn, seg_size: u64) -> bool {
    path.entry(timeline)
        .is_some_and(|e| e.begin.0 < start.0 + seg_size && e.end.is_none_or(|end| end.0 > start.0))
}

/// The longest wait for the summarizer to reach a backup's start (it is
/// woken by the checkpoint that starts the backup, and usually takes well
/// under a second).
pub(super) const SUMMARIZER_WAIT: Duration = Duration::from_secs(10);

/// Where the server's summaries of `[from, to)` are read.
pub(super) struct SummaryRange {
    pub timeline: TimelineId,
    pub from: Lsn,
    pub to: Lsn,
    /// How long the summarizer may take to reach `to`.
    pub wait: Duration,
}

/// The changes in `r` from the server's WAL summaries, or why they cannot
/// say (an error included: the archived WAL is the next source).
pub(super) fn from_server(
    server: &mut Server,
    r: &SummaryRange,
) -> std::result::Result<Changes, String> {
    summaries(server, r).unwrap_or_else(|e| Err(e.to_string()))
}

fn summaries(
    server: &mut Server,
    r: &SummaryRange,
) -> Result<std::result::Result<Changes, String>> {
    let t = Instant::now();
    let tli = r.timeline.0;
    if let Err(why) = server.wal_summaries_enabled()? {
        return Ok(Err(why));
    }
    if r.to <= r.from {
        return Ok(Ok(Changes::default()));
    }
    if let Err(why) = server.await_wal_summaries(tli, r.to, r.wait)? {
        return Ok(Err(why));
    }
    let files = match covering(&server.wal_summaries()?, tli, r.from, r.to) {
        Ok(f) => f,
        Err(why) => return Ok(Err(why)),
    };
    let c = Changes::from_summaries(server.wal_summary_contents(&files)?)?;
    tracing::info!(
        "{} WAL summaries from {} to {} read in {:?}",
        files.len(),
        r.from,
        r.to,
        t.elapsed()
    );
    Ok(Ok(c))
}

/// One segment's summary; `Err(why)` when it is not to be had.
fn summarize(r: &WalRange<'_>, s: WalSegment) -> Result<std::result::Result<WalSummary, String>> {
    let name = s.name(r.seg_size);
    let archived = match r.repo.wal_fetch(r.wal_id, &name) {
        Ok(b) => b,
        Err(e) => return Ok(Err(format!("archived WAL segment {name}: {e}"))),
    };
    let bytes = match archived {
        Some(b) => b,
        None => match read_local(r, s, &name) {
            Ok(b) => b,
            Err(_) => {
                return Ok(Err(format!(
                    "WAL segment {name} is neither archived nor in pg_wal"
                )))
            }
        },
    };
    let start = Lsn(s.segno * r.seg_size);
    Ok(WalSummary::of_segment(start, &bytes, &name).map_err(|e| e.to_string()))
}

/// A segment from `pg_wal`. Of the one holding `r.to` (where this backup
/// starts, not archived yet) only the pages up to it are read, the rest left
/// zero: a summary ends where records do, and none runs past `r.to`.
fn read_local(r: &WalRange<'_>, s: WalSegment, name: &str) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    const WAL_PAGE: u64 = 8192;
    let path = r.pgdata.join("pg_wal").join(name);
    let seg_start = s.segno * r.seg_size;
    if !(seg_start..seg_start + r.seg_size).contains(&r.to.0) {
        return std::fs::read(path);
    }
    let f = std::fs::File::open(path)?;
    let want = ((r.to.0 - seg_start).div_ceil(WAL_PAGE) * WAL_PAGE).max(WAL_PAGE);
    let mut buf = vec![0u8; r.seg_size as usize];
    let want = want.min(r.seg_size) as usize;
    let mut got = 0;
    while got < want {
        match f.read_at(&mut buf[got..want], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(buf)
}

/// How a backup finds its changes: the sources in order, and the fallback.
impl super::Job<'_> {
    /// The blocks WAL says changed since the prior backup's start, when WAL
    /// can say (see `changes.rs`); else `None` and why files are read.
    pub(super) fn changes(&mut self, row: &BackupRow) -> Result<(Option<Changes>, ChangeSource)> {
        let prior = match (&self.plan.prior, self.plan.backup_type) {
            (_, BackupType::Full) => return Ok((None, ChangeSource::Full)),
            (Some(p), _) => p,
            (None, _) => return Ok((None, ChangeSource::Full)),
        };
        let found = match self.opts.change_tracking {
            _ if self.opts.checksum => Err("every block is read, as asked".to_string()),
            ChangeTracking::Off => Err("change tracking is off".to_string()),
            ChangeTracking::Auto | ChangeTracking::Wal | ChangeTracking::Check => {
                self.wal_changes(prior, row)?
            }
        };
        match found {
            Ok((c, source)) => {
                tracing::info!(
                    "WAL since {} names {} blocks of {} relations ({})",
                    prior.start_lsn,
                    c.count,
                    c.relations(),
                    source.describe()
                );
                Ok((Some(c), source))
            }
            Err(why)
                if matches!(
                    self.opts.change_tracking,
                    ChangeTracking::Wal | ChangeTracking::Check
                ) =>
            {
                Err(Error::invalid(format!(
                    "the changed blocks cannot be found from WAL: {why}"
                )))
            }
            Err(why) => {
                if self.opts.change_tracking == ChangeTracking::Auto {
                    tracing::warn!("reading files to find what changed: {why}");
                }
                Ok((None, ChangeSource::FileScan(why)))
            }
        }
    }

    /// The timelines from the prior backup's to `timeline`, from the
    /// archived history file; `Err(why)` when the prior is not on it.
    fn timeline_path(
        &self,
        wal_id: &str,
        timeline: u32,
        prior: &BackupRow,
    ) -> Result<std::result::Result<TimelinePath, String>> {
        if timeline == prior.timeline {
            return Ok(Ok(TimelinePath::root(timeline)));
        }
        let name = format!("{timeline:08X}.history");
        let Some(text) = self.repo.wal_fetch(wal_id, &name)? else {
            return Ok(Err(format!(
                "the timeline changed since the prior backup ({} to {timeline}) and {name} is not archived",
                prior.timeline
            )));
        };
        let path = TimelinePath::parse(timeline, &String::from_utf8_lossy(&text))?;
        if !path.reaches_from(prior.timeline, prior.start_lsn) {
            return Ok(Err(format!(
                "the prior backup (timeline {} at {}) is not on timeline {timeline}'s history",
                prior.timeline, prior.start_lsn
            )));
        }
        Ok(Ok(path))
    }

    /// From the server's WAL summaries, else from the archived WAL.
    fn wal_changes(
        &mut self,
        prior: &BackupRow,
        row: &BackupRow,
    ) -> Result<std::result::Result<(Changes, ChangeSource), String>> {
        // pg_checksums rewrites every page of a stopped cluster, with no WAL.
        if row.data_checksums != prior.data_checksums {
            return Ok(Err(
                "data checksums were turned on or off since the prior backup".into(),
            ));
        }
        let timeline = control::checkpoint_timeline(self.pgdata)?;
        if timeline == prior.timeline {
            let summarized = from_server(
                self.server,
                &SummaryRange {
                    timeline: TimelineId(timeline),
                    from: prior.start_lsn,
                    to: row.start_lsn,
                    wait: self.opts.archive_timeout.min(SUMMARIZER_WAIT),
                },
            );
            match summarized {
                Ok(c) => return Ok(Ok((c, ChangeSource::WalSummaries))),
                Err(why) => tracing::info!("reading the archived WAL, not WAL summaries: {why}"),
            }
        }
        let wal_id = self.cluster.wal_id();
        let path = match self.timeline_path(&wal_id, timeline, prior)? {
            Ok(p) => p,
            Err(why) => return Ok(Err(why)),
        };
        let t = Instant::now();
        let found = from_wal(&WalRange {
            repo: self.repo,
            wal_id: &wal_id,
            pgdata: self.pgdata,
            path,
            seg_size: row.wal_seg_size,
            from: prior.start_lsn,
            to: row.start_lsn,
        })?;
        tracing::info!(
            "WAL from {} to {} read in {:?}",
            prior.start_lsn,
            row.start_lsn,
            t.elapsed()
        );
        Ok(found.map(|c| (c, ChangeSource::ArchivedWal)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::walblocks::RelFork;

    fn rel(r: u32) -> RelFork {
        RelFork {
            spc: 1663,
            db: 5,
            rel: r,
            fork: 0,
        }
    }

    #[test]
    fn created_truncated_and_copied_relations_are_read_as_before() {
        let mut u = BlockUnion::new();
        u.end = Lsn(1000);
        let mut bm = RoaringBitmap::new();
        bm.insert(3);
        u.blocks.insert(rel(1), bm.clone());
        u.blocks.insert(rel(2), bm);
        u.events = vec![
            (Lsn(10), WalEvent::RelCreate { rel: rel(2) }),
            (
                Lsn(20),
                WalEvent::DbCreate {
                    spc: 1663,
                    db: 7,
                    copied_from: Some((1663, 1)),
                },
            ),
        ];
        let c = Changes::from_union(u, Lsn(500), &TimelinePath::root(1)).unwrap();
        assert!(matches!(c.plan("base/5/1", 131072), FilePlan::Only(Some(b), 0) if b.contains(3)));
        assert!(matches!(
            c.plan("base/5/1.1", 131072),
            FilePlan::Only(Some(_), 131072)
        ));
        assert!(matches!(
            c.plan("base/5/9", 131072),
            FilePlan::Only(None, 0)
        ));
        assert!(matches!(c.plan("base/5/2", 131072), FilePlan::AsBefore));
        assert!(matches!(c.plan("base/7/1", 131072), FilePlan::AsBefore));
        assert!(matches!(c.plan("base/5/1_vm", 131072), FilePlan::AsBefore));
    }

    /// The memory bound: 10⁷ changed blocks scattered over a 2 TB relation
    /// and over many small ones stay far below 64 MiB.
    #[test]
    fn ten_million_changed_blocks_fit_in_the_memory_bound() {
        let mut u = BlockUnion::new();
        u.end = Lsn(1000);
        let mut big = RoaringBitmap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..9_200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            big.insert((x % (1 << 28)) as u32);
        }
        u.blocks.insert(rel(1), big);
        for r in 0..10_000u32 {
            u.blocks
                .insert(rel(100 + r), (0..100u32).map(|b| b * 7).collect());
        }
        let c = Changes::from_union(u, Lsn(500), &TimelinePath::root(1)).unwrap();
        assert!(c.count >= 10_000_000, "{}", c.count);
        let bytes: usize = c.blocks.values().map(|b| b.serialized_size() + 64).sum();
        assert!(bytes < 32 << 20, "{bytes} bytes for {} blocks", c.count);
    }

    fn entry(spc: u32, db: u32, rel: u32, fork: u8, block: u32, limit: bool) -> SummaryEntry {
        SummaryEntry {
            rel: RelFork { spc, db, rel, fork },
            block,
            limit,
        }
    }

    #[test]
    fn limit_blocks_of_wal_summaries_are_read_as_before() {
        let rows = vec![
            // Blocks written; the same one twice (in two summary files).
            entry(1663, 5, 1, 0, 3, false),
            entry(1663, 5, 1, 0, 3, false),
            entry(1663, 5, 1, 0, 9, false),
            // A visibility-map block: that fork is read as before anyway.
            entry(1663, 5, 1, 2, 0, false),
            // Truncated to 4 blocks.
            entry(1663, 5, 2, 0, 7, false),
            entry(1663, 5, 2, 0, 4, true),
            // A fork created (limit 0) with nothing else named.
            entry(1663, 5, 3, 2, 0, true),
            // A database created or dropped: relfilenode 0, limit 0.
            entry(16400, 7, 0, 0, 0, true),
        ];
        let c = Changes::from_summaries(rows.into_iter().map(Ok)).unwrap();
        assert_eq!(c.count, 3);
        assert_eq!(c.relations(), 2);
        assert!(matches!(
            c.plan("base/5/1", 131072),
            FilePlan::Only(Some(b), 0) if b.iter().collect::<Vec<_>>() == [3, 9]
        ));
        assert!(matches!(c.plan("base/5/2", 131072), FilePlan::AsBefore));
        assert!(matches!(c.plan("base/5/3", 131072), FilePlan::AsBefore));
        assert!(matches!(
            c.plan("pg_tblspc/16400/PG_17_202406281/7/1", 131072),
            FilePlan::AsBefore
        ));
        // The same database in another tablespace, and untouched relations.
        assert!(matches!(
            c.plan("base/7/1", 131072),
            FilePlan::Only(None, 0)
        ));
        assert!(matches!(
            c.plan("base/5/4", 131072),
            FilePlan::Only(None, 0)
        ));
        // A row that cannot be read fails the whole.
        let bad = vec![
            Ok(entry(1663, 5, 1, 0, 3, false)),
            Err(crate::error::Error::invalid("WAL summary: fork number -1")),
        ];
        assert!(Changes::from_summaries(bad.into_iter()).is_err());
    }

    #[test]
    fn wal_that_cannot_be_trusted_is_refused_with_the_reason() {
        let cases = [
            (WalEvent::WalLevel(0), "minimal"),
            (WalEvent::Undecodable, "could not be decoded"),
            (
                WalEvent::EndOfRecovery {
                    timeline: 2,
                    prev: 1,
                },
                "timeline",
            ),
        ];
        for (e, why) in cases {
            let mut u = BlockUnion::new();
            u.end = Lsn(1000);
            u.events = vec![(Lsn(10), e)];
            let got = Changes::from_union(u, Lsn(500), &TimelinePath::root(1)).unwrap_err();
            assert!(got.contains(why), "{got}");
        }
        let mut u = BlockUnion::new();
        u.end = Lsn(100);
        assert!(Changes::from_union(u, Lsn(500), &TimelinePath::root(1))
            .unwrap_err()
            .contains("only up to"));
    }
}
