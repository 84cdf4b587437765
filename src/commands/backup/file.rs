//! Backing up one file: read it in chunk-sized runs, validate page checksums,
//! fingerprint every block, keep the blocks a previous block map already
//! holds, and pack the rest into new chunks. Large files are cut into
//! 16 MiB pieces that workers process in parallel, then merged in order.
//!
//! A relation file whose changes WAL accounts for ([`Tracked`], see
//! `changes.rs`) is read only at the blocks WAL names and past the prior
//! backup's copy; every other block is the prior block map's, unread.
//!
//! Memory: per piece in flight, one read buffer and one pending chunk (1 MiB
//! each at 8 KiB pages); per file, 52 bytes a block while its block map is
//! assembled, whatever the file's size.

use std::collections::HashMap;

use rayon::prelude::*;
use roaring::RoaringBitmap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use super::refs::Refs;
use super::writer::Msg;
use crate::catalog::{ChunkLoc, FileRow, PageErrorRow};
use crate::error::{Error, IoContext, Result};
use crate::format::chunk::{compress, CHUNK_BLOCKS};
use crate::format::{BlockMap, ChunkId, Fingerprint};
use crate::pg::datadir::path_of;
use crate::pg::page::{self, PageCheck};
use crate::progress::Progress;
use crate::repo::Stored;

/// What every file of one backup shares.
pub(super) struct Ctx<'a> {
    pub pgdata: &'a Path,
    pub block_size: u32,
    pub check_pages: bool,
    pub start_lsn: u64,
    /// Check WAL's account of changes against writes since this LSN.
    pub check_from: Option<u64>,
    pub level: i32,
    pub refs: &'a Refs,
    pub tx: &'a SyncSender<Msg>,
    /// The repository's objects (and how content ids are derived there).
    pub stored: &'a Stored,
    pub read_bytes: &'a AtomicU64,
    pub progress: &'a dyn Progress,
}

impl Ctx<'_> {
    pub(super) fn send(&self, msg: Msg) -> Result<()> {
        self.tx
            .send(msg)
            .map_err(|_| Error::internal("the backup writer stopped (see the error above)"))
    }

    /// Queue a chunk for packing unless the repository (or this backup) has it.
    fn store_chunk(&self, data: &[u8]) -> Result<ChunkId> {
        self.store(data, false)
    }

    /// Queue a chunk; `meta`: a block map, which goes to packs of block maps.
    fn store(&self, data: &[u8], meta: bool) -> Result<ChunkId> {
        let id = self.stored.chunk_id(data);
        if !self.refs.has_chunk(&id)? {
            let (codec, stored) = compress(data, self.level)?;
            self.send(Msg::Chunk {
                id,
                codec,
                raw_len: data.len() as u32,
                data: stored,
                meta,
            })?;
        }
        Ok(id)
    }

    fn load_blockmap(&self, id: &ChunkId, loc: &ChunkLoc, what: &str) -> Option<BlockMap> {
        let r = self
            .stored
            .read_chunk_with(loc, id, what, |b| BlockMap::decode(b, what));
        match r {
            Ok(m) if m.block_size == self.block_size => Some(m),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(
                    "cannot use the previous block map of {what}: {e}; reading it whole"
                );
                None
            }
        }
    }
}

/// Blocks per piece: the unit of parallel work inside one file (16 MiB at
/// 8 KiB pages; a multiple of a chunk, so chunking does not depend on it).
pub(super) const PIECE_BLOCKS: u64 = 16 * CHUNK_BLOCKS as u64;

/// One piece of a file, processed on its own: every block's fingerprint and
/// location, in block order.
struct Piece {
    bytes: u64,
    /// Did the piece read all the blocks it was meant to (or, last, to EOF)?
    full: bool,
    blocks: Vec<(Fingerprint, ChunkId, u32)>,
    errors: Vec<PageErrorRow>,
}

fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What the pieces of one file share.
struct FileJob<'a> {
    ctx: &'a Ctx<'a>,
    file: &'a File,
    path: &'a Path,
    rel: &'a str,
    prior: Option<&'a BlockMap>,
    segment: Option<u32>,
    /// Blocks below this are the prior map's unless WAL names them.
    unread_below: u64,
    tracked: Option<Tracked<'a>>,
}

/// WAL's account of a relation file: the blocks of its relation that
/// changed, and the number of this file's first block in the relation.
#[derive(Clone, Copy)]
pub(super) struct Tracked<'a> {
    pub changed: Option<&'a RoaringBitmap>,
    pub first: u32,
}

impl FileJob<'_> {
    /// Is block `b` left unread (the prior map's copy stands)?
    fn unread(&self, b: u64) -> bool {
        match &self.tracked {
            Some(t) if b < self.unread_below => !t
                .changed
                .is_some_and(|c| c.contains(t.first.wrapping_add(b as u32))),
            _ => false,
        }
    }

    /// How many of the `max` blocks from `b` on are alike: unread, or read.
    fn run(&self, b: u64, max: usize, unread: bool) -> usize {
        (0..max as u64)
            .take_while(|i| self.unread(b + i) == unread)
            .count()
    }

    /// Tell the kernel which of blocks `first..end` will be read, so that
    /// it reads them ahead, many at once: scattered changed blocks read one
    /// at a time wait on the disk one at a time (a hint; errors are moot).
    fn read_ahead(&self, first: u64, end: u64) {
        if self.tracked.is_none() {
            return;
        }
        let bs = u64::from(self.ctx.block_size);
        let end = end.min(self.unread_below);
        let mut b = first;
        while b < end {
            if self.unread(b) {
                b += 1;
                continue;
            }
            let n = self.run(b, (end - b) as usize, false) as u64;
            let _ = rustix::fs::fadvise(
                self.file,
                b * bs,
                std::num::NonZeroU64::new(n * bs),
                rustix::fs::Advice::WillNeed,
            );
            b += n;
        }
    }
}

impl FileJob<'_> {
    /// Back up blocks `first..first + limit` (to EOF when `limit` is None).
    fn piece(&self, first: u64, limit: Option<u64>) -> Result<Piece> {
        let ctx = self.ctx;
        let bs = ctx.block_size as usize;
        let blocks_per_seg = ((1u64 << 30) / u64::from(ctx.block_size)) as u32;
        let mut cursor = self.prior.map(|p| p.cursor_at(first as u32));
        let mut out = Piece {
            bytes: 0,
            full: true,
            blocks: Vec::new(),
            errors: Vec::new(),
        };
        let mut buf = vec![0u8; CHUNK_BLOCKS * bs];
        self.read_ahead(first, limit.map_or(u64::MAX, |l| first + l));
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK_BLOCKS * bs);
        let mut pending_at: Vec<usize> = Vec::with_capacity(CHUNK_BLOCKS);
        let mut block = first;
        loop {
            let want_blocks = match limit {
                Some(l) => (first + l - block).min(CHUNK_BLOCKS as u64) as usize,
                None => CHUNK_BLOCKS,
            };
            if want_blocks == 0 {
                break;
            }
            let kept = self.run(block, want_blocks, true);
            if kept > 0 {
                if let Some(from) = ctx.check_from {
                    self.check_unread(block, kept, from, &mut buf)?;
                }
                for _ in 0..kept {
                    let c = cursor.as_mut().and_then(|c| c.at(block as u32));
                    let (fp, id, cb) = c.ok_or_else(|| {
                        Error::internal(format!("{}: no prior copy of block {block}", self.rel))
                    })?;
                    out.blocks.push((*fp, id, cb));
                    block += 1;
                }
                out.bytes += (kept * bs) as u64;
                ctx.progress.advance((kept * bs) as u64);
                continue;
            }
            let want_blocks = self.run(block, want_blocks, false);
            let want = want_blocks * bs;
            let n = read_full_at(self.file, &mut buf[..want], block * bs as u64).at(self.path)?;
            // A whole chunk of new blocks is stored straight from the read
            // buffer (a full reads nothing else); blocks are copied aside
            // only once a kept block breaks the run.
            let mut direct = pending_at.is_empty() && n == CHUNK_BLOCKS * bs;
            for i in 0..n.div_ceil(bs) {
                let range = i * bs..((i + 1) * bs).min(n);
                let blkno = block as u32;
                let blk = &mut buf[range.clone()];
                if let Some(seg) = self.segment {
                    if blk.len() == bs {
                        let abs = seg.wrapping_mul(blocks_per_seg).wrapping_add(blkno);
                        check_page(
                            ctx,
                            self.file,
                            self.path,
                            self.rel,
                            blk,
                            blkno,
                            abs,
                            &mut out.errors,
                        );
                    }
                }
                let fp = ctx.stored.fingerprint(blk);
                let kept = match cursor.as_mut().and_then(|c| c.at(blkno)) {
                    Some((pfp, id, cb)) if *pfp == fp => Some((id, cb)),
                    _ => None,
                };
                match kept {
                    Some((id, cb)) => {
                        if direct {
                            pending.extend_from_slice(&buf[..range.start]);
                            direct = false;
                        }
                        out.blocks.push((fp, id, cb));
                    }
                    None => {
                        pending_at.push(out.blocks.len());
                        out.blocks
                            .push((fp, ChunkId([0; 32]), (pending_at.len() - 1) as u32));
                        if !direct {
                            pending.extend_from_slice(&buf[range]);
                            if pending_at.len() == CHUNK_BLOCKS {
                                flush(ctx, &mut out, &mut pending, &mut pending_at)?;
                            }
                        }
                    }
                }
                block += 1;
            }
            if direct {
                store_pending(ctx, &mut out, &buf[..n], &mut pending_at)?;
            }
            out.bytes += n as u64;
            ctx.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
            ctx.progress.advance(n as u64);
            if n < want {
                out.full = limit.is_none();
                break;
            }
        }
        flush(ctx, &mut out, &mut pending, &mut pending_at)?;
        Ok(out)
    }
}

impl FileJob<'_> {
    /// Read the `n` unread blocks from `first` and fail on one that differs
    /// from the prior copy with a page LSN at or after `from`: a write that
    /// WAL did not name.
    fn check_unread(&self, first: u64, n: usize, from: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.ctx.block_size as usize;
        let got = read_full_at(self.file, &mut buf[..n * bs], first * bs as u64).at(self.path)?;
        let mut cursor = self.prior.map(|p| p.cursor_at(first as u32));
        for i in 0..got / bs {
            let b = first + i as u64;
            let blk = &buf[i * bs..(i + 1) * bs];
            let same = cursor
                .as_mut()
                .and_then(|c| c.at(b as u32))
                .is_some_and(|(fp, _, _)| *fp == self.ctx.stored.fingerprint(blk));
            let lsn = page::page_lsn(blk);
            if !same && lsn >= from {
                return Err(Error::corrupt(
                    self.rel.to_string(),
                    format!(
                        "change tracking missed block {b}: it differs from the prior copy and its page LSN {} is after the prior backup's start {}",
                        crate::pg::Lsn(lsn),
                        crate::pg::Lsn(from)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Store the pending chunk and point its blocks at it.
fn flush(ctx: &Ctx<'_>, out: &mut Piece, pending: &mut Vec<u8>, at: &mut Vec<usize>) -> Result<()> {
    store_pending(ctx, out, pending, at)?;
    pending.clear();
    Ok(())
}

/// Store `data`, the blocks `at` of `out` in order, as one chunk.
fn store_pending(ctx: &Ctx<'_>, out: &mut Piece, data: &[u8], at: &mut Vec<usize>) -> Result<()> {
    if !at.is_empty() {
        let id = ctx.store_chunk(data)?;
        for &i in at.iter() {
            out.blocks[i].1 = id;
        }
    }
    at.clear();
    Ok(())
}

/// Back up one regular file. `reuse`: the reference backup's entry, when the
/// file is known unchanged (its block map is reused without reading).
/// `prior`: a previous block map of this path to compare blocks against.
/// Files larger than a piece are read in pieces in parallel.
pub(super) fn backup_file(
    ctx: &Ctx<'_>,
    mut row: FileRow,
    reuse: Option<&FileRow>,
    prior: Option<(ChunkId, ChunkLoc)>,
    tracked: Option<Tracked<'_>>,
) -> Result<()> {
    if let Some(r) = reuse {
        row.blockmap = r.blockmap;
        row.size = r.size;
        ctx.progress.advance(row.size);
        return ctx.send(Msg::File {
            row,
            blockmap: None,
        });
    }
    let path = ctx.pgdata.join(path_of(&row.path));
    let file = match File::open(&path) {
        Ok(f) => f,
        // Dropped while we back up: WAL replay removes it anyway.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let size = file.metadata().at(&path)?.len();
    let prior_id = prior.as_ref().map(|p| p.0);
    let prior = prior.and_then(|(id, loc)| ctx.load_blockmap(&id, &loc, &row.path));
    let (tracked, unread_below) = trusted(tracked, prior.as_ref(), size, ctx.block_size);
    if let (Some(t), Some(id)) = (tracked, prior_id) {
        if size == unread_below * u64::from(ctx.block_size) && !any_in(t, unread_below) {
            // WAL names no block of it: the prior copy is this one.
            row.blockmap = Some(id);
            row.size = size;
            ctx.progress.advance(size);
            return ctx.send(Msg::File {
                row,
                blockmap: None,
            });
        }
    }
    let name = row.path.rsplit('/').next().unwrap_or("");
    let job = FileJob {
        ctx,
        file: &file,
        path: &path,
        rel: &row.path,
        prior: prior.as_ref(),
        segment: if ctx.check_pages {
            page::relation_segment(name)
        } else {
            None
        },
        unread_below,
        tracked,
    };
    let nblocks = BlockMap::block_count(size, ctx.block_size);
    let npieces = nblocks.div_ceil(PIECE_BLOCKS).max(1);
    let pieces: Vec<Piece> = if npieces == 1 {
        vec![job.piece(0, None)?]
    } else {
        // One piece per job: rayon otherwise hands a worker a run of
        // pieces to do in sequence, and the other worker idles while the
        // last run finishes (0.35 s of a 2.6 s full on two cores).
        (0..npieces)
            .collect::<Vec<u64>>()
            .into_par_iter()
            .with_max_len(1)
            .map(|i| {
                let last = i + 1 == npieces;
                job.piece(i * PIECE_BLOCKS, (!last).then_some(PIECE_BLOCKS))
            })
            .collect::<Result<Vec<_>>>()?
    };

    let (mut map, errors, total) = assemble(pieces, ctx.block_size);
    if !errors.is_empty() {
        ctx.send(Msg::PageErrors(errors))?;
    }
    row.size = total;
    if total == 0 {
        row.blockmap = None;
        return ctx.send(Msg::File {
            row,
            blockmap: None,
        });
    }
    map.file_size = total;
    let mut used: Vec<ChunkId> = map.chunks.clone();
    used.sort();
    used.dedup();
    let bm_id = ctx.store(&map.encode(), true)?;
    row.blockmap = Some(bm_id);
    ctx.send(Msg::File {
        row,
        blockmap: Some((bm_id, used)),
    })
}

/// WAL's account of a file is used only with a prior copy of whole blocks
/// that the file has not shrunk below (a file that shrank without a
/// truncation in WAL is read whole). Returns it, and the prior's block count.
fn trusted<'a>(
    t: Option<Tracked<'a>>,
    prior: Option<&BlockMap>,
    size: u64,
    block_size: u32,
) -> (Option<Tracked<'a>>, u64) {
    let bs = u64::from(block_size);
    match (t, prior) {
        (Some(t), Some(p)) if p.file_size % bs == 0 && size % bs == 0 && size >= p.file_size => {
            (Some(t), p.file_size / bs)
        }
        _ => (None, 0),
    }
}

/// Does WAL name any of the file's first `blocks` blocks?
fn any_in(t: Tracked<'_>, blocks: u64) -> bool {
    let Some(c) = t.changed else {
        return false;
    };
    let lo = t.first;
    let hi = u64::from(lo) + blocks;
    let hi = u32::try_from(hi).unwrap_or(u32::MAX);
    c.range(lo..hi).next().is_some()
}

/// Merge the pieces of a file, in order, into its block map; also returns
/// the page errors and the bytes read.
fn assemble(pieces: Vec<Piece>, block_size: u32) -> (BlockMap, Vec<PageErrorRow>, u64) {
    let mut map = BlockMap::new(block_size);
    let mut index: HashMap<ChunkId, u32> = HashMap::new();
    let mut errors = Vec::new();
    let mut total = 0u64;
    for piece in pieces {
        for (fp, id, cb) in piece.blocks {
            let ci = *index.entry(id).or_insert_with(|| {
                map.chunks.push(id);
                (map.chunks.len() - 1) as u32
            });
            map.push(fp, ci, cb);
        }
        total += piece.bytes;
        errors.extend(piece.errors);
        // A file that shrank while we read it ends at its first short piece.
        if !piece.full {
            break;
        }
    }
    (map, errors, total)
}

/// Validate one page's checksum with the torn-page rule; re-read once
/// before reporting a failure (the server may have been writing it).
#[allow(clippy::too_many_arguments)]
fn check_page(
    ctx: &Ctx<'_>,
    f: &File,
    path: &Path,
    rel: &str,
    blk: &mut [u8],
    block_no: u32,
    blkno: u32,
    errors: &mut Vec<PageErrorRow>,
) {
    if let PageCheck::Bad { .. } = page::check(blk, blkno, ctx.start_lsn) {
        let off = u64::from(block_no) * u64::from(ctx.block_size);
        let mut again = vec![0u8; blk.len()];
        if f.read_exact_at(&mut again, off).is_ok() {
            blk.copy_from_slice(&again);
        }
        if let PageCheck::Bad { expected, found } = page::check(blk, blkno, ctx.start_lsn) {
            tracing::warn!(
                "{}: page {block_no} fails its checksum (expected {expected:#06x}, found {found:#06x})",
                path.display()
            );
            errors.push(PageErrorRow {
                path: rel.to_string(),
                block: u64::from(block_no),
                detail: format!("checksum expected {expected:#06x}, found {found:#06x}"),
            });
        }
    }
}
