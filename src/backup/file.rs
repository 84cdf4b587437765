//! Backing up one file: read it in chunk-sized runs, validate page checksums,
//! fingerprint every block, keep the blocks a previous block map already
//! holds, and pack the rest into new chunks.
//!
//! Memory: one read buffer and one pending chunk (1 MiB each at 8 KiB pages)
//! plus the file's block map, whatever the file's size.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;

use crate::backup::writer::Msg;
use crate::catalog::{ChunkLoc, FileRow, PageErrorRow};
use crate::error::{Error, IoContext, Result};
use crate::pg::page::{self, PageCheck};
use crate::progress::Progress;
use crate::store::blockmap::BlockMap;
use crate::store::chunk::{compress, fingerprint, CHUNK_BLOCKS};
use crate::store::pack::read_chunk;
use crate::store::{Backend, ChunkId};

/// What every file of one backup shares.
pub struct Ctx<'a> {
    pub pgdata: &'a Path,
    pub block_size: u32,
    pub check_pages: bool,
    pub start_lsn: u64,
    pub level: i32,
    pub claimed: &'a Mutex<HashSet<ChunkId>>,
    pub tx: &'a SyncSender<Msg>,
    pub backend: &'a dyn Backend,
    /// Locations of the block maps of the previous backup's files.
    pub prior_maps: &'a HashMap<ChunkId, ChunkLoc>,
    pub read_bytes: &'a AtomicU64,
    pub progress: &'a dyn Progress,
}

impl Ctx<'_> {
    fn send(&self, msg: Msg) -> Result<()> {
        self.tx
            .send(msg)
            .map_err(|_| Error::invalid("the backup writer stopped (see the error above)"))
    }

    /// Queue a chunk for packing unless the repository (or this backup) has it.
    fn store_chunk(&self, data: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(data);
        let new = self
            .claimed
            .lock()
            .map_err(|_| Error::invalid("dedupe set poisoned"))?
            .insert(id);
        if new {
            let (codec, stored) = compress(data, self.level)?;
            self.send(Msg::Chunk {
                id,
                codec,
                raw_len: data.len() as u32,
                data: stored,
            })?;
        }
        Ok(id)
    }

    fn load_blockmap(&self, id: &ChunkId, what: &str) -> Option<BlockMap> {
        let loc = self.prior_maps.get(id)?;
        let r = read_chunk(
            self.backend,
            &loc.pack_id,
            loc.offset,
            loc.stored_len,
            id,
            what,
        )
        .and_then(|b| BlockMap::decode(&b, what));
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

/// Builds a block map while chunks are still being filled: a pending chunk
/// gets a slot in the chunk table first and its id once it is complete.
struct Builder {
    map: BlockMap,
    index: HashMap<ChunkId, u32>,
}

impl Builder {
    fn new(block_size: u32) -> Self {
        Builder {
            map: BlockMap::new(block_size),
            index: HashMap::new(),
        }
    }
    fn reserve(&mut self) -> u32 {
        self.map.chunks.push(ChunkId([0; 32]));
        (self.map.chunks.len() - 1) as u32
    }
    fn fill(&mut self, slot: u32, id: ChunkId) {
        self.map.chunks[slot as usize] = id;
        self.index.entry(id).or_insert(slot);
    }
    fn index_of(&mut self, id: ChunkId) -> u32 {
        if let Some(i) = self.index.get(&id) {
            return *i;
        }
        self.map.chunks.push(id);
        let i = (self.map.chunks.len() - 1) as u32;
        self.index.insert(id, i);
        i
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Back up one regular file. `reuse`: the reference backup's entry, when the
/// file is known unchanged (its block map is reused without reading).
/// `prior`: a previous block map of this path to compare blocks against.
pub fn backup_file(
    ctx: &Ctx<'_>,
    mut row: FileRow,
    reuse: Option<&FileRow>,
    prior: Option<ChunkId>,
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
    let path = ctx.pgdata.join(&row.path);
    let mut f = match File::open(&path) {
        Ok(f) => f,
        // Dropped while we back up: WAL replay removes it anyway.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut prior = prior
        .and_then(|id| ctx.load_blockmap(&id, &row.path))
        .map(BlockMap::into_cursor);
    let bs = ctx.block_size as usize;
    let name = row.path.rsplit('/').next().unwrap_or("");
    let segment = if ctx.check_pages {
        page::relation_segment(name)
    } else {
        None
    };
    let blocks_per_seg = ((1u64 << 30) / u64::from(ctx.block_size)) as u32;

    let mut b = Builder::new(ctx.block_size);
    let mut buf = vec![0u8; CHUNK_BLOCKS * bs];
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK_BLOCKS * bs);
    let mut pending_slot: Option<u32> = None;
    let mut pending_blocks = 0u32;
    let mut errors = Vec::new();
    let mut block_no: u32 = 0;
    let mut total: u64 = 0;

    let flush = |b: &mut Builder,
                 pending: &mut Vec<u8>,
                 slot: &mut Option<u32>,
                 nblocks: &mut u32|
     -> Result<()> {
        if let Some(s) = slot.take() {
            let id = ctx.store_chunk(pending)?;
            b.fill(s, id);
        }
        pending.clear();
        *nblocks = 0;
        Ok(())
    };

    loop {
        let n = read_full(&mut f, &mut buf).at(&path)?;
        if n == 0 {
            break;
        }
        for blk in buf[..n].chunks_mut(bs) {
            if let Some(seg) = segment {
                if blk.len() == bs {
                    check_page(
                        ctx,
                        &f,
                        &path,
                        &row.path,
                        blk,
                        block_no,
                        seg,
                        blocks_per_seg,
                        &mut errors,
                    )?;
                }
            }
            let fp = fingerprint(blk);
            let kept = match prior.as_mut().and_then(|p| p.at(block_no)) {
                Some((pfp, id, cb)) if *pfp == fp => Some((id, cb)),
                _ => None,
            };
            if let Some((id, cb)) = kept {
                let ci = b.index_of(id);
                b.map.push(fp, ci, cb);
            } else {
                let slot = match pending_slot {
                    Some(s) => s,
                    None => {
                        let s = b.reserve();
                        pending_slot = Some(s);
                        s
                    }
                };
                pending.extend_from_slice(blk);
                b.map.push(fp, slot, pending_blocks);
                pending_blocks += 1;
                if pending_blocks as usize == CHUNK_BLOCKS {
                    flush(&mut b, &mut pending, &mut pending_slot, &mut pending_blocks)?;
                }
            }
            block_no = block_no.wrapping_add(1);
        }
        total += n as u64;
        ctx.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
        ctx.progress.advance(n as u64);
        if n < buf.len() {
            break;
        }
    }
    flush(&mut b, &mut pending, &mut pending_slot, &mut pending_blocks)?;
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
    let mut map = b.map;
    map.file_size = total;
    let mut used: Vec<ChunkId> = map.chunks.clone();
    used.sort();
    used.dedup();
    let bm_id = ctx.store_chunk(&map.encode())?;
    row.blockmap = Some(bm_id);
    ctx.send(Msg::File {
        row,
        blockmap: Some((bm_id, used)),
    })
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
    seg: u32,
    blocks_per_seg: u32,
    errors: &mut Vec<PageErrorRow>,
) -> Result<()> {
    let blkno = seg.wrapping_mul(blocks_per_seg).wrapping_add(block_no);
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
    Ok(())
}
