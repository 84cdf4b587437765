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
//!
//! Every file is opened beneath its root (`beneath`): created new, or with
//! a delta restore opened in place only if it is a regular file (anything else
//! there is removed, a link never followed); its times, mode and owner are
//! set on the open descriptor.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::beneath::{remove_entry, Root, Roots};
use super::layout::{self, root_dirs};
use super::{RestorePlan, RestoreStats};
use crate::catalog::{Catalog, ChunkLoc, FileOrder, FileRow, Readers};
use crate::error::{Error, IoContext, Result};
use crate::format::{BlockMap, ChunkId};
use crate::progress::Progress;
use crate::repo::{Repository, Stored};

/// Files handed to the workers at a time, read from the catalog in path
/// order (memory is bounded by this, not by the number of files).
const BATCH: usize = 2048;

/// Carry out a plan.
pub(super) fn apply(
    repo: &Repository,
    plan: &RestorePlan,
    workers: usize,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let existed: Vec<bool> = root_dirs(plan).0.iter().map(|t| t.exists()).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .build()
        .map_err(|e| Error::internal(format!("cannot start workers: {e}")))?;
    let r = pool.install(|| apply_inner(repo, plan, progress));
    if r.is_err() && !plan.delta {
        // The targets were empty or missing: leave nothing that looks usable.
        progress.end();
        layout::clean_up(plan, &existed);
    }
    if r.is_err() && plan.delta {
        // A delta restore cannot be undone; make sure nobody starts it as is.
        if let Ok(t) = Root::open(&plan.target) {
            let _ = t.remove(Path::new("backup_label"));
            let _ = t.remove(Path::new(plan.signal_file));
        }
    }
    r
}

fn apply_inner(
    repo: &Repository,
    plan: &RestorePlan,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let started = Instant::now();
    let cat = Catalog::open_reader(&plan.catalog)?;
    let roots = layout::open_roots(plan)?;
    let removed = if plan.delta {
        layout::remove_strays(plan, &roots, &cat)?
    } else {
        0
    };
    layout::make_layout(plan, &roots)?;
    let readers = Readers::open(&plan.catalog, rayon::current_num_threads())?;
    let w = Worker {
        stored: repo.stored(),
        plan,
        roots: &roots,
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
        s.spawn(|| flush_behind(&roots, &w.written, &done));
        // In the order the files' block maps were stored, which is the
        // order their data was packed: an object store's reads then walk
        // each pack once, front to back. (In path order, the files of one
        // directory come from every pack of the backup at once; a 61,000-file
        // restore from S3 fetched each 8 MiB window about 1,000 times.)
        let r = cat
            .versions()
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
    layout::sync_filesystems(&roots)?;
    layout::write_recovery_files(plan, &roots)?;
    layout::finish_owners_and_modes(plan, &roots)?;
    layout::sync_filesystems(&roots)?;
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

/// Bytes written between two write-behind `syncfs` calls.
const FLUSH_EVERY: u64 = 128 << 20;

/// Write-behind: while the workers write, a `syncfs` for each
/// [`FLUSH_EVERY`] bytes written puts the disk to work on what is already
/// written, off the workers' path, so that the final `syncfs` waits for the
/// tail only instead of every byte of the restore. Its errors are left to the
/// final `syncfs`, which reports them.
fn flush_behind(roots: &Roots, written: &AtomicU64, done: &AtomicBool) {
    let mut flushed = 0;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = written.load(Ordering::Relaxed);
        if now.saturating_sub(flushed) >= FLUSH_EVERY {
            flushed = now;
            if let Err(e) = layout::sync_filesystems(roots) {
                tracing::debug!("write-behind syncfs: {e}");
            }
        }
    }
}

/// Open the file to write beneath `root`: new, or (delta) the existing
/// regular file; anything else there (a link above all) is removed, never
/// followed.
fn open_target(root: &Root, rest: &Path, delta: bool) -> Result<(File, bool)> {
    if !delta {
        return Ok((root.create_new(rest, 0o600)?, false));
    }
    let shown = || root.shown(rest);
    let (dir, name) = root.parent(rest)?;
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
            let f = rustix::fs::openat(
                &dir,
                name,
                OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io(shown(), e.into()))?;
            return Ok((File::from(f), true));
        }
        Ok(_) => remove_entry(dir.as_fd(), name).map_err(|e| Error::io(shown(), e.into()))?,
        Err(Errno::NOENT) => {}
        Err(e) => return Err(Error::io(shown(), e.into())),
    }
    let f = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| Error::io(shown(), e.into()))?;
    Ok((File::from(f), false))
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
    stored: Stored,
    plan: &'a RestorePlan,
    roots: &'a Roots,
    readers: &'a Readers,
    written: AtomicU64,
    progress: &'a dyn Progress,
}

impl Worker<'_> {
    /// Where data chunk `id` is, looked up on this worker's catalog connection.
    fn locate(&self, id: &ChunkId, what: &str) -> Result<ChunkLoc> {
        self.readers
            .get()?
            .packs()
            .chunk(id)?
            .ok_or_else(|| Error::NotFound(format!("{what}: chunk {id} is not in the chunk index")))
    }

    fn restore_file(&self, f: &FileRow, bm_loc: Option<&ChunkLoc>) -> Result<()> {
        let (plan, written, progress) = (self.plan, &self.written, self.progress);
        let (root, rest) = self.roots.locate(&f.path);
        let path = root.shown(&rest);
        let what = format!("{} (backup {})", f.path, plan.backup.id);
        let (out, existed) = open_target(root, &rest, plan.delta)?;
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
                let map = self
                    .stored
                    .read_chunk_with(bm_loc, bm_id, &what, |b| BlockMap::decode(b, &what))?;
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
        // On the open file: nothing is looked up by name again.
        let t = if f.mtime_ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(f.mtime_ns as u64)
        } else {
            UNIX_EPOCH
        };
        out.set_modified(t).at(&path)?;
        out.set_permissions(std::fs::Permissions::from_mode(f.mode))
            .at(&path)?;
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::fchown(&out, Some(f.uid), Some(f.gid)).at(&path)?;
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
                    if self.stored.fingerprint(&buf[..n]) == map.fingerprints[b as usize] {
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
        self.stored.read_chunk_with(&loc, id, t.what, |data| {
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
