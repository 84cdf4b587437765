//! The single writer of a backup: appends chunks to packs, seals them, and
//! records packs, chunks and manifest rows in the catalog.
//!
//! Order of durability: a pack is sealed (fsynced, renamed) before its chunk
//! rows are committed, so the chunk index never points at data that could
//! vanish in a crash. Manifest rows of a `running` backup may precede their
//! chunks' packs; nobody trusts a backup until it is `complete`.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::catalog::{Catalog, FileRow, PageErrorRow};
use crate::error::Result;
use crate::format::{ChunkId, Codec};
use crate::store::{Backend, PackWriter};

pub enum Msg {
    Chunk {
        id: ChunkId,
        codec: Codec,
        raw_len: u32,
        data: Vec<u8>,
    },
    File {
        row: FileRow,
        /// A new block map and the data chunks it uses.
        blockmap: Option<(ChunkId, Vec<ChunkId>)>,
    },
    PageErrors(Vec<PageErrorRow>),
}

#[derive(Default, Debug, Clone, Copy)]
pub struct WriterStats {
    pub packs: u64,
    pub pack_bytes: u64,
    pub chunks: u64,
}

const ROW_BATCH: usize = 2000;

pub fn run(
    rx: Receiver<Msg>,
    mut cat: Catalog,
    backend: Arc<dyn Backend>,
    backup_id: String,
    pack_size: u64,
) -> (Catalog, Result<WriterStats>) {
    let r = write_all(&rx, &mut cat, backend.as_ref(), &backup_id, pack_size);
    // Drain so that no worker blocks on a full channel after an error.
    while rx.recv().is_ok() {}
    (cat, r)
}

fn write_all(
    rx: &Receiver<Msg>,
    cat: &mut Catalog,
    backend: &dyn Backend,
    backup_id: &str,
    pack_size: u64,
) -> Result<WriterStats> {
    let mut stats = WriterStats::default();
    let mut pack: Option<PackWriter> = None;
    let mut rows: Vec<FileRow> = Vec::new();
    let mut maps: Vec<(ChunkId, Vec<ChunkId>)> = Vec::new();
    let mut errors: Vec<PageErrorRow> = Vec::new();
    let seal = |pack: &mut Option<PackWriter>, cat: &mut Catalog, stats: &mut WriterStats| {
        if let Some(p) = pack.take() {
            if !p.is_empty() {
                let sealed = p.seal()?;
                stats.packs += 1;
                stats.pack_bytes += sealed.size;
                cat.add_pack(&sealed, Some(backup_id))?;
            }
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
            } => {
                if pack.is_none() {
                    pack = Some(PackWriter::new(backend)?);
                }
                if let Some(p) = pack.as_mut() {
                    p.add(id, codec, raw_len, &data)?;
                    stats.chunks += 1;
                    if p.len() >= pack_size {
                        seal(&mut pack, cat, &mut stats)?;
                    }
                }
            }
            Msg::File { row, blockmap } => {
                rows.push(row);
                if let Some(m) = blockmap {
                    maps.push(m);
                }
                if rows.len() >= ROW_BATCH {
                    cat.insert_files(backup_id, &rows, &maps)?;
                    rows.clear();
                    maps.clear();
                }
            }
            Msg::PageErrors(mut e) => errors.append(&mut e),
        }
    }
    seal(&mut pack, cat, &mut stats)?;
    cat.insert_files(backup_id, &rows, &maps)?;
    cat.add_page_errors(backup_id, &errors)?;
    Ok(stats)
}
