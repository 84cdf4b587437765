//! The single writer of a backup: appends chunks to packs, seals them, and
//! records packs, chunks and manifest rows in the catalog.
//!
//! Order of durability: a pack is sealed (fsynced, renamed; uploaded) before
//! its chunk rows are committed, so the chunk index never points at data that
//! could vanish in a crash. Sealing runs on threads of their own while the
//! next pack fills (two packs in flight, in order): an upload to object storage, or an fsync,
//! then overlaps the work of the backup instead of stopping it.
//!
//! Block maps go to packs of their own: the next backup reads every block map
//! of the files it re-reads, and from object storage a few packs of block
//! maps read in order cost a few requests, where block maps spread among the
//! data would cost one per file or the whole data set. Manifest rows of a `running` backup may precede their
//! chunks' packs; nobody trusts a backup until it is `complete`.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::catalog::{Catalog, FileRow, PageErrorRow};
use crate::error::Result;
use crate::format::{ChunkId, Codec};
use crate::repo::{PackWriter, SealedPack, Stored};

pub(super) enum Msg {
    Chunk {
        id: ChunkId,
        codec: Codec,
        raw_len: u32,
        data: Vec<u8>,
        /// A block map (packed apart from the data).
        meta: bool,
    },
    File {
        row: FileRow,
        /// A new block map and the data chunks it uses.
        blockmap: Option<(ChunkId, Vec<ChunkId>)>,
    },
    PageErrors(Vec<PageErrorRow>),
}

#[derive(Default, Debug, Clone, Copy)]
pub(super) struct WriterStats {
    pub packs: u64,
    pub pack_bytes: u64,
    pub chunks: u64,
}

/// Manifest rows per transaction (each commit is an fsync of the catalog).
const ROW_BATCH: usize = 16_384;
/// Packs sealing (uploading) at once while the next fills.
const IN_FLIGHT: usize = 2;

/// `failed` is set as soon as the writer gives up, so that the backup stops
/// waiting (for its WAL) and reports the writer's error.
pub(super) fn run(
    rx: Receiver<Msg>,
    mut cat: Catalog,
    stored: Stored,
    backup_id: String,
    pack_size: u64,
    failed: Arc<AtomicBool>,
) -> (Catalog, Result<WriterStats>) {
    let r = write_all(&rx, &mut cat, &stored, &backup_id, pack_size);
    if r.is_err() {
        failed.store(true, Ordering::Relaxed);
    }
    // Drain so that no worker blocks on a full channel after an error.
    while rx.recv().is_ok() {}
    (cat, r)
}

fn write_all(
    rx: &Receiver<Msg>,
    cat: &mut Catalog,
    stored: &Stored,
    backup_id: &str,
    pack_size: u64,
) -> Result<WriterStats> {
    let mut stats = WriterStats::default();
    let mut pack: Option<PackWriter> = None;
    let mut meta_pack: Option<PackWriter> = None;
    let mut rows: Vec<FileRow> = Vec::new();
    let mut maps: Vec<(ChunkId, Vec<ChunkId>)> = Vec::new();
    let mut errors: Vec<PageErrorRow> = Vec::new();
    let mut inflight: VecDeque<JoinHandle<Result<SealedPack>>> = VecDeque::new();
    // Chunks in packs not yet indexed: workers cannot see them in the
    // catalog, so two may send one chunk; the second copy is dropped here.
    let pending: RefCell<HashSet<ChunkId>> = RefCell::new(HashSet::new());
    // Record the oldest pack sealing in the background once it is durable.
    let settle = |inflight: &mut VecDeque<JoinHandle<Result<SealedPack>>>,
                  cat: &mut Catalog,
                  stats: &mut WriterStats| {
        if let Some(h) = inflight.pop_front() {
            let sealed = h
                .join()
                .map_err(|_| crate::error::Error::internal("pack sealing thread panicked"))??;
            stats.packs += 1;
            stats.pack_bytes += sealed.size;
            cat.packs().add(&sealed, Some(backup_id))?;
            let mut p = pending.borrow_mut();
            for e in &sealed.entries {
                p.remove(&e.id);
            }
        }
        Ok::<(), crate::error::Error>(())
    };
    // Seal `pack` in the background; with `all`, wait for every pack. Packs
    // whose sealing finished are recorded at once: a killed backup then leaves
    // few sealed packs unindexed, and the next one reuses the rest.
    let mut seal =
        |pack: Option<PackWriter>, cat: &mut Catalog, stats: &mut WriterStats, all: bool| {
            while inflight.front().is_some_and(|h| h.is_finished()) {
                settle(&mut inflight, cat, stats)?;
            }
            if let Some(p) = pack.filter(|p| !p.is_empty()) {
                while inflight.len() >= IN_FLIGHT {
                    settle(&mut inflight, cat, stats)?;
                }
                inflight.push_back(
                    std::thread::Builder::new()
                        .name("pack-seal".into())
                        .spawn(move || p.seal())
                        .map_err(|e| {
                            crate::error::Error::internal(format!("cannot start a thread: {e}"))
                        })?,
                );
            }
            while all && !inflight.is_empty() {
                settle(&mut inflight, cat, stats)?;
            }
            Ok::<(), crate::error::Error>(())
        };
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Chunk {
                id,
                codec,
                raw_len,
                data,
                meta,
            } => {
                // Sent twice by workers that raced (see `pending`).
                if !pending.borrow_mut().insert(id) || cat.packs().has_chunk(&id)? {
                    continue;
                }
                let target = if meta { &mut meta_pack } else { &mut pack };
                if target.is_none() {
                    *target = Some(stored.new_pack()?);
                }
                if let Some(p) = target.as_mut() {
                    p.add(id, codec, raw_len, &data)?;
                    stats.chunks += 1;
                    if p.full(pack_size) {
                        seal(target.take(), cat, &mut stats, false)?;
                        continue;
                    }
                }
                seal(None, cat, &mut stats, false)?;
            }
            Msg::File { row, blockmap } => {
                rows.push(row);
                if let Some(m) = blockmap {
                    maps.push(m);
                }
                if rows.len() >= ROW_BATCH {
                    cat.versions().insert_files(backup_id, &rows, &maps)?;
                    rows.clear();
                    maps.clear();
                }
            }
            Msg::PageErrors(mut e) => errors.append(&mut e),
        }
    }
    seal(pack, cat, &mut stats, false)?;
    seal(meta_pack, cat, &mut stats, true)?;
    cat.versions().insert_files(backup_id, &rows, &maps)?;
    cat.backups().add_page_errors(backup_id, &errors)?;
    Ok(stats)
}
