//! `backup`: a base backup of a running cluster in backup mode.
//!
//! Order: bind the cluster identity; note the start time; start backup mode
//! in a session held open; walk the data directory; back files up in
//! parallel (one writer thread owns the catalog and the packs); read `global/pg_control` last; stop backup
//! mode and wait until every WAL segment from start to stop is archived,
//! while the writer seals its last packs; once they are durable and indexed,
//! write the manifest copy; then mark the backup `complete` in one
//! transaction.
//! Any failure before that leaves a `running` backup that is removed here
//! when possible, or by `expire` after a crash; nothing refers to it.

mod changes;
mod file;
mod refs;
mod standby;
mod writer;

pub use changes::{ChangeSource, ChangeTracking};
use changes::{Changes, FilePlan};
use refs::Refs;

use standby::Standby;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::catalog::{
    BackupRow, BackupStatus, BackupType, Catalog, ClusterRow, FileKind, FileRow, PageErrorRow,
};
use crate::error::{Error, Result, Setting};
use crate::pg::conn::{BackupStop, Server};
use crate::pg::datadir::{self, Entry, EntryKind};
use crate::pg::{Lsn, TimelineId, WalSegment};
use crate::progress::{Phase, Progress};
use crate::repo::{archive_command_setting, Invocation};
use crate::repo::{check_cluster_name, Repository};
use crate::util::{default_workers, host_name, now_us};

use writer::WriterStats;

#[derive(Clone, Debug)]
pub struct BackupOptions {
    pub pgdata: PathBuf,
    /// libpq connection string; unset fields come from PG* variables.
    pub dbname: Option<String>,
    /// `None`: incremental, or full when the cluster has no full yet.
    pub backup_type: Option<BackupType>,
    pub compress_level: i32,
    pub workers: usize,
    pub archive_timeout: Duration,
    pub start_fast: bool,
    /// Read and fingerprint every file whatever its timestamps.
    pub checksum: bool,
    pub pack_size: u64,
    pub lock_wait: Duration,
    /// A backup from a standby: the primary, asked to switch WAL after
    /// backup mode stops (else its archive_timeout bounds the wait).
    pub primary_dbname: Option<String>,
    /// A standby replaying further behind than this (bytes) is refused.
    pub standby_max_lag: u64,
    /// How an incremental or differential finds the changed blocks.
    pub change_tracking: ChangeTracking,
    /// How `archive_command` calls pgstrata, for messages that say what to
    /// set (without it they only say what is missing).
    pub invocation: Option<Arc<dyn Invocation>>,
}

impl BackupOptions {
    pub fn new(pgdata: impl Into<PathBuf>) -> Self {
        BackupOptions {
            pgdata: pgdata.into(),
            dbname: None,
            backup_type: None,
            compress_level: 3,
            workers: default_workers(),
            archive_timeout: Duration::from_secs(60),
            start_fast: false,
            checksum: false,
            pack_size: 32 << 20,
            lock_wait: Duration::ZERO,
            primary_dbname: None,
            standby_max_lag: 1 << 30,
            change_tracking: ChangeTracking::Auto,
            invocation: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BackupReport {
    pub id: String,
    pub backup_type: BackupType,
    pub reference: Option<String>,
    /// The default type asked for an incremental but there was no full yet.
    pub became_full: bool,
    pub files: u64,
    pub db_bytes: u64,
    pub read_bytes: u64,
    pub stored_bytes: u64,
    /// How the changed blocks were found.
    pub changes: ChangeSource,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub page_errors: Vec<PageErrorRow>,
    pub elapsed: Duration,
}

/// What a backup is compared with.
struct Plan {
    backup_type: BackupType,
    became_full: bool,
    /// Timestamps of files are compared with this backup's (diff: the last
    /// full; incr: the last backup; full: none).
    reference: Option<BackupRow>,
    /// Block maps of the newest backup, to keep unchanged blocks of changed
    /// files (every type, full included: a full of unchanged data is free).
    prior: Option<BackupRow>,
}

fn plan(asked: Option<BackupType>, complete: &[BackupRow]) -> Plan {
    let last_full = complete
        .iter()
        .rev()
        .find(|b| b.backup_type == BackupType::Full);
    let last = complete.last();
    let (backup_type, reference, became_full) = match asked {
        Some(BackupType::Full) => (BackupType::Full, None, false),
        Some(BackupType::Diff) => match last_full {
            Some(f) => (BackupType::Diff, Some(f.clone()), false),
            None => (BackupType::Full, None, true),
        },
        Some(BackupType::Incr) | None => match (last_full, last) {
            (Some(_), Some(l)) => (BackupType::Incr, Some(l.clone()), false),
            _ => (BackupType::Full, None, true),
        },
    };
    Plan {
        backup_type,
        became_full,
        reference,
        prior: last.cloned(),
    }
}

/// A backup id from its start time: `YYYYMMDD-HHMMSS` and F, D or I.
fn backup_id(cat: &Catalog, start_us: i64, t: BackupType) -> Result<String> {
    let base = id_stamp(start_us)?;
    let mut id = format!("{base}{}", t.letter());
    let mut n = 1;
    while cat.backups().get(&id)?.is_some() {
        n += 1;
        id = format!("{base}{}-{n}", t.letter());
    }
    Ok(id)
}

/// A file may be skipped when size and mtime match the reference and it was
/// last modified before the whole second that precedes the reference's
/// start by at least a second.
///
/// The reference read every file after its start time, so a write it missed
/// came later, and its mtime is at or after that bound: with one-second
/// timestamps it is the write's second, not earlier than the start's; with a
/// kernel clock that stamps files up to a tick behind (a second is ample
/// margin) it is later than a second before the start. No backup needs to
/// wait for the clock to leave its start second (as pgBackRest does);
/// files written in the two seconds before a start are read again next time.
///
/// The reference's row must be a regular file reached the same way: a
/// symlink pointed at another file of the same size and mtime (or a link row
/// that has become a file) is read again.
fn unchanged(cur: &FileRow, old: &FileRow, reference_start_us: i64) -> bool {
    let bound_ns = (reference_start_us - 1_000_000).div_euclid(1_000_000) * 1_000_000_000;
    old.kind == FileKind::File
        && cur.link == old.link
        && cur.size == old.size
        && cur.mtime_ns == old.mtime_ns
        && cur.mtime_ns < bound_ns
        && (old.blockmap.is_some() || old.size == 0)
}

/// Take a backup of the running cluster at `opts.pgdata`.
pub fn run(
    repo: &Repository,
    cluster: &str,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    check_cluster_name(cluster)?;
    // Dropped on any error: nothing of this backup is published.
    let session = repo.begin_write("backup", opts.lock_wait)?;
    let (mut server, pgdata) = connect(repo, cluster, opts)?;
    let standby = match server.info.in_recovery {
        true => Some(Standby::check(
            &mut server,
            opts.primary_dbname.as_deref(),
            opts.standby_max_lag,
        )?),
        false if opts.primary_dbname.is_some() => {
            return Err(Error::setting(
                Setting::PrimaryDbname,
                "is for backups from a standby, and this server is a primary",
            ))
        }
        false => None,
    };
    let cat = repo.catalog()?;
    let cl = cat
        .clusters()
        .bind(cluster, server.info.system_id, server.info.major)?;
    // Only backups of the cluster's current identity are references: after
    // `pgstrata upgrade` the first backup is a full.
    let complete: Vec<BackupRow> = cat
        .backups()
        .of_cluster(cl.id)?
        .into_iter()
        .filter(|b| b.status == BackupStatus::Complete && b.history == cl.history)
        .collect();
    let plan = plan(opts.backup_type, &complete);
    if plan.became_full {
        tracing::info!("cluster {cluster:?} has no complete full backup: taking a full backup");
    }
    let started = Instant::now();
    let start_us = now_us();
    if !opts.start_fast {
        progress.phase(Phase::SpreadCheckpoint);
    }
    let row = begin(&cat, &cl, &mut server, &plan, start_us, opts.start_fast)?;
    tracing::info!(
        "backup mode started at {} after {:?}",
        row.start_lsn,
        started.elapsed()
    );
    let id = row.id.clone();
    let mut job = Job {
        repo,
        cluster: &cl,
        opts,
        pgdata: &pgdata,
        server: &mut server,
        standby,
        plan: &plan,
        progress,
    };
    match job.copy(cat, row) {
        Ok(report) => {
            // In object storage the backup exists once the catalog naming
            // it is published.
            session.commit()?;
            Ok(BackupReport {
                elapsed: started.elapsed(),
                ..report
            })
        }
        Err(e) => {
            // Best effort: the running row goes; its packs are garbage for
            // expire. (In object storage the session is abandoned: none of
            // this is published, and the packs are garbage there too.)
            if let Ok(cat) = repo.catalog() {
                let _ = cat.backups().delete(&id);
            }
            Err(e)
        }
    }
}

/// Connect to the server running `opts.pgdata` and refuse one that does not
/// archive (the backup would be unusable).
fn connect(repo: &Repository, cluster: &str, opts: &BackupOptions) -> Result<(Server, PathBuf)> {
    let (server, pgdata) = Server::connect_for(opts.dbname.as_deref(), &opts.pgdata, true)?;
    // A standby's WAL is archived by its primary.
    if !server.info.in_recovery && server.info.archive_mode == "off" {
        return Err(Error::refused(format!(
            "archive_mode is off, so the WAL this backup needs would never reach the \
             repository: set archive_mode = on and {}, then restart PostgreSQL",
            archive_command_setting(
                opts.invocation.as_deref(),
                cluster,
                repo.passphrase_source()
            )
        )));
    }
    Ok((server, pgdata))
}

/// Enter backup mode and record the backup as `running`.
fn begin(
    cat: &Catalog,
    cl: &ClusterRow,
    server: &mut Server,
    plan: &Plan,
    start_us: i64,
    fast: bool,
) -> Result<BackupRow> {
    let info = server.info.clone();
    let id = backup_id(cat, start_us, plan.backup_type)?;
    let start_lsn = server.backup_start(&format!("pgstrata {id}"), fast)?;
    let row = BackupRow {
        id,
        backup_type: plan.backup_type,
        status: BackupStatus::Running,
        reference: plan.reference.as_ref().map(|r| r.id.clone()),
        start_time: start_us,
        stop_time: None,
        start_lsn,
        stop_lsn: None,
        timeline: 0,
        wal_start: None,
        wal_stop: None,
        pg_version: info.major,
        block_size: info.block_size,
        wal_seg_size: info.wal_seg_size,
        data_checksums: info.data_checksums,
        backup_label: None,
        tablespace_map: None,
        db_bytes: 0,
        read_bytes: 0,
        stored_bytes: 0,
        files: 0,
        page_errors: 0,
        host: Some(host_name()),
        pid: Some(std::process::id()),
        history: cl.history,
        changes: None,
    };
    cat.backups().insert(cl.id, &row)?;
    Ok(row)
}

struct Job<'a> {
    repo: &'a Repository,
    cluster: &'a ClusterRow,
    opts: &'a BackupOptions,
    pgdata: &'a Path,
    server: &'a mut Server,
    standby: Option<Standby>,
    plan: &'a Plan,
    progress: &'a dyn Progress,
}

/// Files handed to the workers at once, biggest first (so the parallel tail
/// of a batch is short). The walk streams: memory holds one batch and one
/// directory's names, whatever the number of files.
const BATCH: usize = 4096;

/// A first pass over the data directory, for the progress total: bytes of
/// its regular files. Checks that `global/pg_control` is there.
fn measure(pgdata: &Path) -> Result<u64> {
    let t = Instant::now();
    let (mut files, mut bytes, mut control) = (0u64, 0u64, false);
    // The copy's walk warns about links it does not follow; not this one.
    datadir::walk_each_quietly(pgdata, &mut |e| {
        if e.kind == EntryKind::File {
            files += 1;
            bytes += e.size;
            control |= e.path == CONTROL;
        }
        Ok(())
    })?;
    if !control {
        return Err(Error::invalid(
            "the data directory has no global/pg_control",
        ));
    }
    tracing::info!(
        "walked the data directory: {files} files, {bytes} bytes in {:?}",
        t.elapsed()
    );
    Ok(bytes)
}

const CONTROL: &str = "global/pg_control";

fn file_row(e: Entry) -> FileRow {
    FileRow {
        path: e.path,
        kind: match e.kind {
            EntryKind::File => FileKind::File,
            EntryKind::Dir => FileKind::Dir,
            EntryKind::Link => FileKind::Link,
        },
        size: e.size,
        mtime_ns: e.mtime_ns,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        link: e.link,
        blockmap: None,
    }
}

impl Job<'_> {
    fn copy(&mut self, cat: Catalog, mut row: BackupRow) -> Result<BackupReport> {
        let refs = Refs::open(
            &self.repo.catalog_path()?,
            self.plan.reference.as_ref().map(|r| r.id.clone()),
            self.plan.prior.as_ref().map(|p| p.id.clone()),
            self.opts.workers.max(1),
        )?;
        let total = measure(self.pgdata)?;
        let (changes, source) = self.changes(&row)?;
        // Checking: blocks left unread are read anyway, and a write since
        // this LSN that WAL did not name fails the backup.
        let check_from = match (&changes, &self.plan.prior) {
            (Some(_), Some(p)) if self.opts.change_tracking == ChangeTracking::Check => {
                Some(p.start_lsn.0)
            }
            _ => None,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let stored = self.repo.stored();
        let for_writer = stored.clone();
        let pack_size = self.opts.pack_size;
        let bid = row.id.clone();
        let failed = Arc::new(AtomicBool::new(false));
        let writer_failed = failed.clone();
        let writer = std::thread::Builder::new()
            .name("pgstrata-writer".into())
            .spawn(move || writer::run(rx, cat, for_writer, bid, pack_size, writer_failed))
            .map_err(|e| Error::io("writer thread", e))?;
        let read_bytes = AtomicU64::new(0);
        let ctx = file::Ctx {
            pgdata: self.pgdata,
            block_size: row.block_size,
            check_pages: row.data_checksums,
            start_lsn: row.start_lsn.0,
            check_from,
            level: self.opts.compress_level,
            refs: &refs,
            tx: &tx,
            stored: &stored,
            read_bytes: &read_bytes,
            progress: self.progress,
        };
        self.progress.begin("backup", total);
        let t = Instant::now();
        let copied = self.copy_files(&ctx, &refs, changes.as_ref());
        self.progress.end();
        drop(tx);
        drop(refs);
        // Every file is read: backup mode stops, and its WAL is awaited,
        // while the writer seals and uploads the last packs.
        let stopped = match copied {
            Ok(_) => Some(self.stop(&mut row, &failed)),
            Err(_) => None,
        };
        let (cat, wres) = writer
            .join()
            .map_err(|_| Error::internal("the backup writer thread panicked"))?;
        let (files, db_bytes) = copied?;
        let stats = wres?;
        let stop = stopped.ok_or_else(|| Error::internal("backup mode was not stopped"))??;
        let read_bytes = read_bytes.load(Ordering::Relaxed);
        tracing::info!(
            "copied {files} files ({read_bytes} bytes read, {} packs) in {:?}",
            stats.packs,
            t.elapsed()
        );
        row.db_bytes = db_bytes;
        row.read_bytes = read_bytes;
        self.finish(cat, &mut row, stop, stats, source)
    }

    /// Stop backup mode and wait for its WAL (unless the writer failed
    /// meanwhile: its error is the one to report).
    fn stop(&mut self, row: &mut BackupRow, writer_failed: &AtomicBool) -> Result<BackupStop> {
        let t = Instant::now();
        let stop = self.server.backup_stop()?;
        tracing::info!("backup mode stopped at {} in {:?}", stop.lsn, t.elapsed());
        if let Some(s) = self.standby.as_mut() {
            s.complete_segment()?;
        }
        self.await_wal(row, &stop, writer_failed)?;
        Ok(stop)
    }

    /// Every file, in parallel batches as the walk finds them, then
    /// pg_control. Returns the number of regular files and their bytes.
    fn copy_files(
        &self,
        ctx: &file::Ctx<'_>,
        refs: &Refs,
        changes: Option<&Changes>,
    ) -> Result<(u64, u64)> {
        let blocks_per_seg = ((1u64 << 30) / u64::from(ctx.block_size)) as u32;
        let ref_start = self.plan.reference.as_ref().map(|r| r.start_time);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.opts.workers.max(1))
            .thread_name(|i| format!("pgstrata-worker-{i}"))
            .build()
            .map_err(|e| Error::internal(format!("cannot start workers: {e}")))?;
        let one = |f: &FileRow| -> Result<()> {
            let reuse = match (refs.reference(&f.path)?, ref_start) {
                (Some(old), Some(start)) if !self.opts.checksum && unchanged(f, &old, start) => {
                    Some(old)
                }
                _ => None,
            };
            let prior = match reuse {
                Some(_) => None,
                None => refs.prior_map(&f.path)?,
            };
            let tracked = match changes.map(|c| c.plan(&f.path, blocks_per_seg)) {
                Some(FilePlan::Only(changed, first)) => Some(file::Tracked { changed, first }),
                _ => None,
            };
            file::backup_file(ctx, f.clone(), reuse.as_ref(), prior, tracked)
        };
        let run = |batch: &mut Vec<FileRow>| -> Result<()> {
            batch.sort_by_key(|f| std::cmp::Reverse(f.size));
            // One file per job, so that no worker is left with a run of
            // files to do alone at the end (see `file::backup_file`).
            pool.install(|| batch.par_iter().with_max_len(1).try_for_each(one))?;
            batch.clear();
            Ok(())
        };
        let mut batch: Vec<FileRow> = Vec::with_capacity(BATCH);
        let (mut files, mut bytes, mut control) = (0u64, 0u64, None);
        datadir::walk_each(self.pgdata, &mut |e| {
            let row = file_row(e);
            if row.kind != FileKind::File {
                return ctx.send(writer::Msg::File {
                    row,
                    blockmap: None,
                });
            }
            files += 1;
            bytes += row.size;
            if row.path == CONTROL {
                control = Some(row);
            } else {
                batch.push(row);
                if batch.len() >= BATCH {
                    run(&mut batch)?;
                }
            }
            Ok(())
        })?;
        run(&mut batch)?;
        let control =
            control.ok_or_else(|| Error::invalid("the data directory has no global/pg_control"))?;
        // pg_control last: it must not be older than any data file.
        let prior = refs.prior_map(&control.path)?;
        file::backup_file(ctx, control, None, prior, None)?;
        Ok((files, bytes))
    }

    fn finish(
        &mut self,
        cat: Catalog,
        row: &mut BackupRow,
        stop: BackupStop,
        stats: WriterStats,
        changes: ChangeSource,
    ) -> Result<BackupReport> {
        row.stop_time = Some(now_us());
        row.changes = (changes != ChangeSource::Full).then(|| changes.describe());
        row.stop_lsn = Some(stop.lsn);
        row.backup_label = Some(stop.backup_label.clone());
        row.tablespace_map = stop.tablespace_map.clone();
        let errors = cat.backups().page_errors(&row.id)?;
        row.files = cat.versions().file_count(&row.id)?;
        row.page_errors = errors.len() as u64;
        row.status = BackupStatus::Complete;
        // The copy records the packs' bytes; `repair` adds the copy's own
        // size, which is only known once it is compressed.
        row.stored_bytes = stats.pack_bytes;
        let copy = self
            .repo
            .put_manifest_copy(&cat, self.cluster.identity(), row)?;
        row.stored_bytes = stats.pack_bytes + copy;
        cat.backups().complete(row)?;
        // Best effort: a busy reader only delays the truncation.
        if let Err(e) = cat.checkpoint() {
            tracing::debug!("catalog checkpoint: {e}");
        }
        Ok(BackupReport {
            id: row.id.clone(),
            backup_type: row.backup_type,
            reference: row.reference.clone(),
            became_full: self.plan.became_full,
            files: row.files,
            db_bytes: row.db_bytes,
            read_bytes: row.read_bytes,
            stored_bytes: row.stored_bytes,
            start_lsn: row.start_lsn,
            stop_lsn: stop.lsn,
            page_errors: errors,
            changes,
            elapsed: Duration::ZERO,
        })
    }

    /// Wait until every segment from start to stop is archived (the backup
    /// is useless without them), and record the range.
    fn await_wal(
        &self,
        row: &mut BackupRow,
        stop: &BackupStop,
        writer_failed: &AtomicBool,
    ) -> Result<()> {
        let label = String::from_utf8_lossy(&stop.backup_label).into_owned();
        let timeline = label_timeline(&label)
            .ok_or_else(|| Error::corrupt("backup_label", "no START WAL LOCATION line"))?;
        let seg = row.wal_seg_size;
        let first = WalSegment::containing(timeline, row.start_lsn, seg);
        let last = WalSegment::containing(timeline, Lsn(stop.lsn.0.saturating_sub(1)), seg);
        let t = Instant::now();
        wait_for_wal(
            self.repo,
            &self.cluster.wal_id(),
            (first, last),
            seg,
            self.opts.archive_timeout,
            writer_failed,
        )
        .map_err(|e| match (e, &self.standby) {
            // A standby's own archive_command is beside the point: its
            // primary archives.
            (Error::Timeout(m), Some(s)) => Error::Timeout(format!(
                "{m}. The primary archives a standby's WAL: check the primary's \
                 archive_command and log.{}",
                s.wal_hint()
            )),
            (Error::Timeout(m), None) => Error::Timeout(format!(
                "{m}. Set archive_mode = on and {} (now: {:?})",
                archive_command_setting(
                    self.opts.invocation.as_deref(),
                    &self.cluster.name,
                    self.repo.passphrase_source()
                ),
                self.server.info.archive_command
            )),
            (e, _) => e,
        })?;
        tracing::info!(
            "WAL {} to {} archived after {:?}",
            first.name(seg),
            last.name(seg),
            t.elapsed()
        );
        row.timeline = timeline.0;
        row.wal_start = Some(first.name(seg));
        row.wal_stop = Some(last.name(seg));
        Ok(())
    }
}

/// The timeline of `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)`.
fn label_timeline(label: &str) -> Option<TimelineId> {
    let line = label
        .lines()
        .find(|l| l.starts_with("START WAL LOCATION:"))?;
    let file = line.split("(file ").nth(1)?.trim_end_matches(')');
    let tli = u32::from_str_radix(file.get(0..8)?, 16).ok()?;
    Some(TimelineId(tli))
}

/// `wal_id`: where the cluster's current WAL is archived (`<name>` or
/// `<name>~<history>`).
fn wait_for_wal(
    repo: &Repository,
    wal_id: &str,
    (first, last): (WalSegment, WalSegment),
    seg_size: u64,
    timeout: Duration,
    give_up: &AtomicBool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut segno = first.segno;
    while segno <= last.segno {
        if give_up.load(Ordering::Relaxed) {
            return Err(Error::internal("stopped waiting for WAL"));
        }
        let name = WalSegment {
            timeline: first.timeline,
            segno,
        }
        .name(seg_size);
        if repo.wal_has(wal_id, &name)? {
            segno += 1;
            continue;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "WAL segment {name} was not archived to this repository within {} s; the \
                 backup is not usable without it",
                timeout.as_secs(),
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `YYYYMMDD-HHMMSS` in UTC for unix microseconds (whole seconds toward
/// zero): the part of a backup id that orders backups by start time.
fn id_stamp(start_us: i64) -> Result<String> {
    let t = crate::util::utc_datetime(start_us / 1_000_000).ok_or_else(|| {
        Error::invalid(format!(
            "clock: {start_us} µs after the epoch is outside the years -9999..=9999"
        ))
    })?;
    Ok(t.strftime("%Y%m%d-%H%M%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ChunkId;

    #[test]
    fn id_stamps() {
        assert_eq!(id_stamp(0).unwrap(), "19700101-000000");
        assert_eq!(id_stamp(1_700_000_000_999_999).unwrap(), "20231114-221320");
        assert_eq!(id_stamp(1_709_210_096_000_000).unwrap(), "20240229-123456");
        assert_eq!(
            id_stamp(253_402_300_799_000_000).unwrap(),
            "99991231-235959"
        );
        assert!(id_stamp(253_402_300_800_000_000).is_err());
        assert!(id_stamp(i64::MAX).is_err());
    }

    #[test]
    fn timeline_from_label() {
        let l = "START WAL LOCATION: 0/2000028 (file 000000020000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n";
        assert_eq!(label_timeline(l), Some(TimelineId(2)));
        assert_eq!(label_timeline("nothing"), None);
    }

    #[test]
    fn skip_rule() {
        let f = FileRow {
            path: "x".into(),
            kind: FileKind::File,
            size: 10,
            mtime_ns: 5_000_000_000,
            mode: 0o600,
            uid: 0,
            gid: 0,
            link: None,
            blockmap: Some(ChunkId([1; 32])),
        };
        // Reference started at 7.0 s or later: an mtime of 5 s is safely older.
        assert!(unchanged(&f, &f, 7_000_000));
        assert!(unchanged(&f, &f, 7_500_000));
        // Less than a whole second between them: re-read (a coarse clock may
        // stamp a later write a tick early).
        assert!(!unchanged(&f, &f, 6_999_999));
        assert!(!unchanged(&f, &f, 6_000_000));
        assert!(!unchanged(&f, &f, 5_900_000));
        let mut g = f.clone();
        g.size = 11;
        assert!(!unchanged(&g, &f, 7_500_000));
        // A symlink now pointing elsewhere, or a link row become a file.
        let linked = FileRow {
            link: Some("/etc/a.conf".into()),
            ..f.clone()
        };
        assert!(unchanged(&linked, &linked, 7_500_000));
        let moved = FileRow {
            link: Some("/etc/b.conf".into()),
            ..f.clone()
        };
        assert!(!unchanged(&moved, &linked, 7_500_000));
        assert!(!unchanged(&linked, &f, 7_500_000));
        let was_link = FileRow {
            kind: FileKind::Link,
            size: 0,
            blockmap: None,
            ..linked.clone()
        };
        let empty = FileRow {
            size: 0,
            blockmap: None,
            ..linked
        };
        assert!(!unchanged(&empty, &was_link, 7_500_000));
    }
}
