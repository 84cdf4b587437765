//! Carrying out a restore plan.
//!
//! Fresh restore: directories, links, then files in parallel, in the order
//! their block maps were packed (each chunk read and verified once,
//! scattered to its blocks with `pwrite`; blocks of zeros stay holes), then
//! one `syncfs` per file system, then the recovery files
//! (fsynced), owners and modes, deepest first, and a last `syncfs`. If it
//! fails, what it wrote is removed again: the targets were empty or missing.
//!
//! Delta restore: paths the backup does not have are removed; every file the
//! backup has is compared block by block with its block map (fingerprints),
//! and only differing blocks are read from the repository and rewritten.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use rayon::prelude::*;

use super::{recovery, RestorePlan, RestoreStats};
use crate::catalog::{Catalog, ChunkLoc, FileKind, FileOrder, FileRow, Readers};
use crate::error::{Error, IoContext, Result};
use crate::format::{BlockMap, ChunkId};
use crate::pg::datadir::{name_of, path_of, EXCLUDED_DIR_CONTENTS};
use crate::pg::version;
use crate::progress::Progress;
use crate::repo::Repository;

/// Files handed to the workers at a time, read from the catalog in path
/// order (memory is bounded by this, not by the number of files).
const BATCH: usize = 2048;

/// Files pgstrata writes itself after the manifest's files.
const RECOVERY_FILES: &[&str] = &[
    "backup_label",
    "tablespace_map",
    "recovery.signal",
    "standby.signal",
];

/// Carry out a plan.
pub fn apply(
    repo: &Repository,
    plan: &RestorePlan,
    workers: usize,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let mut targets = vec![plan.target.clone()];
    targets.extend(plan.tablespaces.iter().map(|(_, d)| d.clone()));
    let existed: Vec<bool> = targets.iter().map(|t| t.exists()).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .build()
        .map_err(|e| Error::internal(format!("cannot start workers: {e}")))?;
    let r = pool.install(|| apply_inner(repo, plan, progress));
    if r.is_err() && !plan.delta {
        // The targets were empty or missing: leave nothing that looks usable.
        progress.end();
        for (t, existed) in targets.iter().zip(existed) {
            if existed {
                if let Ok(rd) = fs::read_dir(t) {
                    for e in rd.flatten() {
                        let _ = remove_any(&e.path());
                    }
                }
            } else {
                let _ = fs::remove_dir_all(t);
            }
        }
    }
    if r.is_err() && plan.delta {
        // A delta restore cannot be undone; make sure nobody starts it as is.
        let _ = fs::remove_file(plan.target.join("backup_label"));
        let _ = fs::remove_file(plan.target.join(plan.signal_file));
    }
    r
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    let m = fs::symlink_metadata(p)?;
    if m.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}

fn apply_inner(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let started = Instant::now();
    let cat = Catalog::open_reader(&plan.catalog)?;
    let removed = if plan.delta {
        remove_strays(plan, &cat)?
    } else {
        0
    };
    make_layout(plan)?;
    let readers = Readers::open(&plan.catalog, rayon::current_num_threads())?;
    let w = Worker {
        repo,
        plan,
        readers: &readers,
        written: AtomicU64::new(0),
        progress,
    };
    progress.begin("restore", plan.bytes);
    let mut batch: Vec<(FileRow, Option<ChunkLoc>)> = Vec::with_capacity(BATCH);
    let run = |batch: &mut Vec<(FileRow, Option<ChunkLoc>)>| {
        // One file per job (and one chunk per job below): rayon otherwise
        // hands a worker runs of them to do in sequence, and the other
        // worker idles while the last run finishes.
        let r = batch
            .par_iter()
            .with_max_len(1)
            .try_for_each(|(f, loc)| w.restore_file(f, loc.as_ref()));
        batch.clear();
        r
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| flush_behind(plan, &w.written, &done));
        // In the order the files' block maps were stored, which is the
        // order their data was packed: an object store's reads then walk
        // each pack once, front to back. (In path order, the files of one
        // directory come from every pack of the backup at once; a 61,000-file
        // restore from S3 fetched each 8 MiB window about 1,000 times.)
        let r = cat
            .for_each_file(&plan.backup.id, FileOrder::BlockMap, |f, loc| {
                batch.push((f, loc));
                if batch.len() == BATCH {
                    run(&mut batch)?;
                }
                Ok(())
            })
            .and_then(|()| run(&mut batch));
        done.store(true, Ordering::Relaxed);
        r
    })?;
    progress.end();
    // Durability: one syncfs per file system once every file is written
    // (instead of an fsync per file, which serialises the workers on the
    // disk). Only then are the files written that make the directory
    // startable (backup_label, the signal file), each fsynced; a second
    // syncfs makes those, owners, modes and directory entries durable. A
    // crash before the end leaves a directory without them: it does not
    // start as if it were consistent, and the restore is simply redone.
    sync_filesystems(plan)?;
    write_recovery_files(plan)?;
    finish_owners_and_modes(plan)?;
    sync_filesystems(plan)?;
    Ok(RestoreStats {
        backup_id: plan.backup.id.clone(),
        pg_version: plan.backup.pg_version,
        files: plan.files,
        bytes: plan.bytes,
        written: w.written.load(Ordering::Relaxed),
        removed,
        elapsed: started.elapsed(),
    })
}

/// The target, tablespaces and their links, directories, other symlinks and
/// the directories whose contents are never backed up.
fn make_layout(plan: &RestorePlan) -> Result<()> {
    let root = &plan.target;
    fs::create_dir_all(root).at(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700)).at(root)?;
    // Tablespace directories and links first, so files land through them.
    for (oid, dir) in &plan.tablespaces {
        fs::create_dir_all(dir).at(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).at(dir)?;
        let tbl = root.join("pg_tblspc");
        fs::create_dir_all(&tbl).at(&tbl)?;
        let link = tbl.join(oid);
        if fs::symlink_metadata(&link).is_ok() {
            remove_any(&link).at(&link)?;
        }
        std::os::unix::fs::symlink(dir, &link).at(&link)?;
    }
    for f in plan
        .layout
        .iter()
        .filter(|f| f.kind == FileKind::Dir && f.path != ".")
    {
        let p = root.join(path_of(&f.path));
        if let Ok(m) = fs::symlink_metadata(&p) {
            if !m.is_dir() {
                remove_any(&p).at(&p)?;
            }
        }
        fs::create_dir_all(&p).at(&p)?;
    }
    for f in plan
        .layout
        .iter()
        .filter(|f| f.kind == FileKind::Link && !f.path.starts_with("pg_tblspc/"))
    {
        let p = root.join(path_of(&f.path));
        if fs::symlink_metadata(&p).is_ok() {
            remove_any(&p).at(&p)?;
        }
        std::os::unix::fs::symlink(path_of(f.link.as_deref().unwrap_or("")), &p).at(&p)?;
    }
    for d in EXCLUDED_DIR_CONTENTS {
        let p = root.join(d);
        fs::create_dir_all(&p).at(&p)?;
    }
    for d in version::wal_subdirs(plan.backup.pg_version) {
        let p = root.join(d);
        fs::create_dir_all(&p).at(&p)?;
    }
    Ok(())
}

/// Owners (as root) and modes last, directories deepest first; then make
/// the directories durable.
fn finish_owners_and_modes(plan: &RestorePlan) -> Result<()> {
    let root = &plan.target;
    let as_root = rustix::process::geteuid().is_root();
    if as_root {
        let (uid, gid) = plan
            .layout
            .iter()
            .find(|f| f.path == ".")
            .map(|r| (r.uid, r.gid))
            .unwrap_or((0, 0));
        let extra = RECOVERY_FILES
            .iter()
            .chain(["postgresql.auto.conf", "pg_tblspc"].iter())
            .chain(version::wal_subdirs(plan.backup.pg_version).iter())
            .chain(EXCLUDED_DIR_CONTENTS.iter())
            .map(|p| root.join(p));
        for p in extra {
            if p.exists() {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).at(&p)?;
            }
        }
        for (_, dir) in &plan.tablespaces {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).at(dir)?;
        }
    }
    let mut dirs: Vec<&FileRow> = plan.layout.iter().collect();
    dirs.sort_by_key(|f| std::cmp::Reverse(f.path.len()));
    for f in dirs {
        let p = if f.path == "." {
            root.clone()
        } else {
            root.join(path_of(&f.path))
        };
        if as_root {
            std::os::unix::fs::lchown(&p, Some(f.uid), Some(f.gid)).at(&p)?;
        }
        if f.kind == FileKind::Dir {
            fs::set_permissions(&p, fs::Permissions::from_mode(f.mode)).at(&p)?;
        }
    }
    Ok(())
}

/// Bytes written between two write-behind `syncfs` calls.
const FLUSH_EVERY: u64 = 128 << 20;

/// Write-behind: while the workers write, a `syncfs` for each
/// [`FLUSH_EVERY`] bytes written puts the disk to work on what is already
/// written, off the workers' path, so that the final `syncfs` waits for the
/// tail only instead of every byte of the restore. Its errors are left to the
/// final `syncfs`, which reports them.
fn flush_behind(plan: &RestorePlan, written: &AtomicU64, done: &AtomicBool) {
    let mut flushed = 0;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = written.load(Ordering::Relaxed);
        if now.saturating_sub(flushed) >= FLUSH_EVERY {
            flushed = now;
            if let Err(e) = sync_filesystems(plan) {
                tracing::debug!("write-behind syncfs: {e}");
            }
        }
    }
}

/// `syncfs` the file system of the target and of each tablespace.
fn sync_filesystems(plan: &RestorePlan) -> Result<()> {
    let roots = std::iter::once(&plan.target).chain(plan.tablespaces.iter().map(|(_, d)| d));
    for dir in roots {
        let f = File::open(dir).at(dir)?;
        rustix::fs::syncfs(&f).map_err(|e| Error::io(dir, e.into()))?;
    }
    Ok(())
}

/// Delta: remove every path in the target (and its tablespaces) that the
/// backup does not have (asked of the catalog path by path, not a set of
/// every path). Returns how many were removed.
fn remove_strays(plan: &RestorePlan, cat: &Catalog) -> Result<u64> {
    let mut roots: Vec<(PathBuf, String)> = vec![(plan.target.clone(), String::new())];
    for (oid, dir) in &plan.tablespaces {
        roots.push((dir.clone(), format!("pg_tblspc/{oid}")));
    }
    let mut strays = Vec::new();
    for (dir, prefix) in &roots {
        if !dir.exists() {
            continue;
        }
        let mut it = walkdir::WalkDir::new(dir).min_depth(1).into_iter();
        while let Some(entry) = it.next() {
            let entry = entry.map_err(|e| {
                let p = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| dir.clone());
                Error::io(p, e.into())
            })?;
            let rel = entry
                .path()
                .strip_prefix(dir)
                .map(|r| name_of(r.as_os_str()))
                .unwrap_or_default();
            let rel = if prefix.is_empty() {
                rel
            } else {
                format!("{prefix}/{rel}")
            };
            // The unfinished-restore marker goes only once the restore is done.
            if prefix.is_empty() && rel == super::resume::MARKER {
                continue;
            }
            // Tablespace links are replaced when the links are made.
            if prefix.is_empty() && rel.starts_with("pg_tblspc/") && entry.depth() == 2 {
                it.skip_current_dir();
                continue;
            }
            if !cat.has_path(plan.at, &rel)? {
                strays.push(entry.path().to_path_buf());
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
            }
        }
    }
    for p in &strays {
        remove_any(p).at(p)?;
    }
    Ok(strays.len() as u64)
}

fn set_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    let t = if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH
    };
    let f = File::options().write(true).open(path).at(path)?;
    f.set_modified(t).at(path)
}

/// Open the file to write: new, or (delta) the existing one.
fn open_target(path: &Path, delta: bool) -> Result<(File, bool)> {
    if delta {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_file() => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .at(path)?;
                return Ok((f, true));
            }
            Ok(_) => remove_any(path).at(path)?,
            Err(_) => {}
        }
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .at(path)?;
    Ok((f, false))
}

/// The file being written.
struct Target<'a> {
    out: &'a File,
    path: &'a Path,
    what: &'a str,
    size: u64,
    /// Bytes already there (delta), compared block by block before writing.
    old_len: u64,
}

/// What the workers share.
struct Worker<'a> {
    repo: &'a Repository,
    plan: &'a RestorePlan,
    readers: &'a Readers,
    written: AtomicU64,
    progress: &'a dyn Progress,
}

impl Worker<'_> {
    /// Where data chunk `id` is, looked up on this worker's catalog connection.
    fn locate(&self, id: &ChunkId, what: &str) -> Result<ChunkLoc> {
        self.readers
            .get()?
            .chunk(id)?
            .ok_or_else(|| Error::NotFound(format!("{what}: chunk {id} is not in the chunk index")))
    }

    fn restore_file(&self, f: &FileRow, bm_loc: Option<&ChunkLoc>) -> Result<()> {
        let (plan, written, progress) = (self.plan, &self.written, self.progress);
        let path = plan.target.join(path_of(&f.path));
        let what = format!("{} (backup {})", f.path, plan.backup.id);
        let (out, existed) = open_target(&path, plan.delta)?;
        let old_len = if existed {
            out.metadata().at(&path)?.len()
        } else {
            0
        };
        if old_len != f.size {
            out.set_len(f.size).at(&path)?;
        }
        match &f.blockmap {
            Some(bm_id) => {
                let bm_loc = bm_loc.ok_or_else(|| {
                    Error::NotFound(format!(
                        "{what}: its block map (chunk {bm_id}) is not in the chunk index"
                    ))
                })?;
                let map =
                    bm_loc.read_with(self.repo.backend(), self.repo.ids(), bm_id, &what, |b| {
                        BlockMap::decode(b, &what)
                    })?;
                if map.file_size != f.size {
                    return Err(Error::corrupt(
                        what,
                        format!(
                            "block map says {} bytes, manifest {}",
                            map.file_size, f.size
                        ),
                    ));
                }
                let t = Target {
                    out: &out,
                    path: &path,
                    what: &what,
                    size: f.size,
                    old_len: if existed { old_len } else { 0 },
                };
                // Each chunk is read and verified once, then scattered to its
                // blocks; the chunks of one file go in parallel too, so one big
                // relation does not leave the other workers idle.
                let mut by_chunk: Vec<Vec<usize>> = vec![Vec::new(); map.chunks.len()];
                for (i, e) in map.extents.iter().enumerate() {
                    by_chunk[e.chunk as usize].push(i);
                }
                by_chunk
                    .par_iter()
                    .with_max_len(1)
                    .enumerate()
                    .try_for_each(|(ci, exts)| {
                        let n = self.restore_chunk(&map, &t, ci, exts)?;
                        written.fetch_add(n, Ordering::Relaxed);
                        let bs = u64::from(map.block_size);
                        progress.advance(
                            exts.iter()
                                .map(|&i| u64::from(map.extents[i].blocks) * bs)
                                .sum(),
                        );
                        Ok::<(), Error>(())
                    })?;
            }
            // Planning refuses this; never write zeros for a file with bytes.
            None if f.size > 0 => {
                return Err(Error::corrupt(
                    what,
                    format!("the manifest gives {} bytes but no block map", f.size),
                ))
            }
            None => {}
        }
        drop(out);
        set_mtime(&path, f.mtime_ns)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(f.mode)).at(&path)?;
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(f.uid), Some(f.gid)).at(&path)?;
        }
        Ok(())
    }

    /// Write the blocks of chunk `ci` (the extents `exts` of `map`) that differ
    /// from what the target holds. Returns the bytes written.
    fn restore_chunk(
        &self,
        map: &BlockMap,
        t: &Target<'_>,
        ci: usize,
        exts: &[usize],
    ) -> Result<u64> {
        let bs = u64::from(map.block_size);
        let block_len = |b: u64| bs.min(t.size - b * bs) as usize;
        // (file block, chunk block) of every block to write.
        let mut todo: Vec<(u64, u64)> = Vec::new();
        let mut buf = vec![0u8; bs as usize];
        for &ei in exts {
            let e = map.extents[ei];
            for k in 0..u64::from(e.blocks) {
                let b = u64::from(e.first_block) + k;
                let cb = u64::from(e.chunk_block) + k;
                if b * bs < t.old_len.min(t.size) {
                    let n = block_len(b);
                    t.out.read_exact_at(&mut buf[..n], b * bs).at(t.path)?;
                    if self.repo.ids().fingerprint(&buf[..n]) == map.fingerprints[b as usize] {
                        continue;
                    }
                }
                todo.push((b, cb));
            }
        }
        if todo.is_empty() {
            return Ok(0);
        }
        let id = &map.chunks[ci];
        let loc = self.locate(id, t.what)?;
        loc.read_with(self.repo.backend(), self.repo.ids(), id, t.what, |data| {
            write_blocks(map, t, ci, todo, data)
        })
    }
}

/// Write blocks of chunk `ci` from its bytes `data`: `todo` holds (file
/// block, chunk block) pairs in order. Returns the bytes written.
fn write_blocks(
    map: &BlockMap,
    t: &Target<'_>,
    ci: usize,
    mut todo: Vec<(u64, u64)>,
    data: &[u8],
) -> Result<u64> {
    let bs = u64::from(map.block_size);
    let block_len = |b: u64| bs.min(t.size - b * bs) as usize;
    // Blocks of zeros past the old end of the file are already zeros (the
    // file was extended to its size): leaving them unwritten keeps them holes.
    if t.old_len < t.size {
        todo.retain(|&(b, cb)| {
            let from = (cb * bs) as usize;
            let n = block_len(b);
            b * bs < t.old_len
                || data
                    .get(from..from + n)
                    .is_none_or(|blk| blk.iter().any(|&x| x != 0))
        });
    }
    let mut n_written = 0u64;
    // Write runs of consecutive blocks with one pwrite each.
    let mut i = 0;
    while i < todo.len() {
        let (b0, c0) = todo[i];
        let mut j = i + 1;
        while j < todo.len() && todo[j].0 == b0 + (j - i) as u64 && todo[j].1 == c0 + (j - i) as u64
        {
            j += 1;
        }
        let len = ((j - i) as u64 * bs).min(t.size - b0 * bs);
        let from = c0 * bs;
        let src = data
            .get(from as usize..(from + len) as usize)
            .ok_or_else(|| {
                Error::corrupt(
                    t.what,
                    format!("chunk {} is shorter than its extents", map.chunks[ci]),
                )
            })?;
        t.out.write_all_at(src, b0 * bs).at(t.path)?;
        n_written += len;
        i = j;
    }
    Ok(n_written)
}

fn write_durably(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .at(path)?;
    std::io::Write::write_all(&mut f, data).at(path)?;
    f.sync_all().at(path)
}

fn write_recovery_files(plan: &RestorePlan) -> Result<()> {
    let root = &plan.target;
    for stale in RECOVERY_FILES {
        let p = root.join(stale);
        if p.exists() {
            fs::remove_file(&p).at(&p)?;
        }
    }
    if let Some(label) = &plan.backup.backup_label {
        write_durably(&root.join("backup_label"), label, 0o600)?;
    }
    if let Some(map) = &plan.backup.tablespace_map {
        // Point each tablespace at where this restore put it.
        let text = String::from_utf8_lossy(map);
        let mut out = String::new();
        for line in text.lines() {
            match line.split_once(' ') {
                Some((oid, _)) => match plan.tablespaces.iter().find(|(o, _)| o == oid) {
                    Some((_, dir)) => out.push_str(&format!("{oid} {}\n", dir.display())),
                    None => out.push_str(&format!("{line}\n")),
                },
                None if !line.is_empty() => out.push_str(&format!("{line}\n")),
                None => {}
            }
        }
        write_durably(&root.join("tablespace_map"), out.as_bytes(), 0o600)?;
    }
    let conf_path = root.join("postgresql.auto.conf");
    let existing = match fs::read_to_string(&conf_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(conf_path, e)),
    };
    let mut conf = recovery::strip_previous(&existing);
    conf.push_str(&plan.recovery_conf);
    let mode = fs::metadata(&conf_path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    write_durably(&conf_path, conf.as_bytes(), mode)?;
    write_durably(&root.join(plan.signal_file), b"", 0o600)?;
    Ok(())
}
