//! Catalog queries for `verify` and `repair`: whole-repository views of packs,
//! chunks and block-map relations, and SQLite's own consistency checks.
//!
//! These only read, except [`Catalog::rebuild_backup`], which `repair` uses
//! to insert one backup from its manifest copy in a single transaction, so a
//! rebuilt catalog never holds half a backup.

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension};

use super::{BackupRow, BackupStatus, Catalog, ChunkLoc, ManifestDelta, PageErrorRow};
use crate::error::{Error, Result, SqlContext};
use crate::format::{ChunkId, PackId};

/// One row of the chunk index, as `verify` checks it against a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub stored_len: u32,
}

impl Catalog {
    /// Every sealed pack the catalog knows: id and recorded size.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, size FROM pack ORDER BY id")
            .ctx("list packs")?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, PackId>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .ctx("list packs")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("a pack row")?;
        Ok(rows)
    }

    /// The chunk rows that point into one pack, in record order.
    pub fn pack_chunks(&self, pack_id: &PackId) -> Result<Vec<IndexedChunk>> {
        let mut st = self
            .conn
            .prepare("SELECT id, offset, stored_len FROM chunk WHERE pack_id = ?1 ORDER BY offset")
            .ctx("pack chunks")?;
        let mut rows = st.query([pack_id]).ctx("pack chunks")?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().ctx("pack chunks")? {
            let row = (|| -> rusqlite::Result<IndexedChunk> {
                Ok(IndexedChunk {
                    id: r.get(0)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    stored_len: r.get(2)?,
                })
            })();
            out.push(row.ctx_with(|| format!("a chunk index row of pack {pack_id}"))?);
        }
        Ok(out)
    }

    /// The pack that holds a chunk, if the chunk is indexed.
    pub fn chunk_pack(&self, id: &ChunkId) -> Result<Option<PackId>> {
        self.conn
            .query_row("SELECT pack_id FROM chunk WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .ctx("chunk pack")
    }

    /// The data chunks the catalog says a block map uses.
    /// Chunk index rows with ids in `[lo, hi]`, in id order: a window of a
    /// sorted walk over the index, one query instead of one per chunk.
    pub fn chunks_between(&self, lo: &ChunkId, hi: &ChunkId) -> Result<Vec<(ChunkId, ChunkLoc)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, pack_id, offset, stored_len, raw_len FROM chunk \
                 WHERE id BETWEEN ?1 AND ?2 ORDER BY id",
            )
            .ctx("chunk index")?;
        let rows = st
            .query_map([lo, hi], |r| Ok((r.get(0)?, super::loc_from_row(r, 1)?)))
            .ctx("chunk index")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("a row of the chunk index")?;
        Ok(rows)
    }

    /// Block-map relation rows of block maps with ids in `[lo, hi]`.
    pub fn relation_between(&self, lo: &ChunkId, hi: &ChunkId) -> Result<Vec<(ChunkId, ChunkId)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT blockmap, chunk FROM blockmap_chunk WHERE blockmap BETWEEN ?1 AND ?2",
            )
            .ctx("blockmap chunks")?;
        let rows = st
            .query_map([lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx("blockmap chunks")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("a block-map relation row")?;
        Ok(rows)
    }

    pub fn blockmap_chunk_set(&self, blockmap: &ChunkId) -> Result<HashSet<ChunkId>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT chunk FROM blockmap_chunk WHERE blockmap = ?1")
            .ctx("blockmap chunks")?;
        let mut rows = st.query([blockmap]).ctx("blockmap chunks")?;
        let mut out = HashSet::new();
        while let Some(r) = rows.next().ctx("blockmap chunks")? {
            out.insert(
                r.get(0)
                    .ctx_with(|| format!("a block-map relation row of block map {blockmap}"))?,
            );
        }
        Ok(out)
    }

    /// Rows that break a foreign key (e.g. a chunk whose pack row is gone).
    pub fn foreign_key_check(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("PRAGMA foreign_key_check")
            .ctx("foreign_key_check")?;
        let rows = st
            .query_map([], |r| {
                Ok(format!(
                    "a row of table {} (rowid {:?}) refers to a missing row of {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, String>(2)?
                ))
            })
            .ctx("foreign_key_check")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("foreign_key_check")?;
        Ok(rows)
    }

    /// Insert a complete backup from its manifest copy, in one transaction:
    /// the backup row, its files, the block-map relation and page errors.
    /// A copy that is a delta against `prev` needs `prev` rebuilt just
    /// before it (the cluster's newest backup): the rows of `prev` that the
    /// delta does not name carry over.
    pub fn rebuild_backup(
        &mut self,
        cluster_id: i64,
        b: &BackupRow,
        prev: Option<&str>,
        delta: &ManifestDelta,
        blockmap_chunks: &[(ChunkId, Vec<ChunkId>)],
        page_errors: &[PageErrorRow],
    ) -> Result<()> {
        let what = format!("rebuild backup {}", b.id);
        let tx = self.conn.transaction().ctx(&what)?;
        let seq = super::versions::next_seq(&tx, cluster_id)?;
        tx.execute(
            "INSERT INTO backup (id, cluster_id, type, status, reference, start_time, stop_time, \
             start_lsn, stop_lsn, timeline, wal_start, wal_stop, pg_version, block_size, \
             wal_seg_size, data_checksums, backup_label, tablespace_map, db_bytes, read_bytes, \
             stored_bytes, files, page_errors, host, pid, history, seq, copy_prev) VALUES (?1, \
             ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
             ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)",
            params![
                b.id,
                cluster_id,
                b.backup_type,
                BackupStatus::Complete,
                b.reference,
                b.start_time,
                b.stop_time,
                b.start_lsn,
                b.stop_lsn,
                b.timeline,
                b.wal_start,
                b.wal_stop,
                b.pg_version,
                b.block_size,
                b.wal_seg_size as i64,
                b.data_checksums,
                b.backup_label,
                b.tablespace_map,
                b.db_bytes as i64,
                b.read_bytes as i64,
                b.stored_bytes as i64,
                b.files as i64,
                b.page_errors as i64,
                b.host,
                b.pid,
                b.history,
                seq,
                prev
            ],
        )
        .ctx(&what)?;
        if let Some(prev) = prev {
            super::versions::carry_over(&tx, cluster_id, prev, seq, delta)
                .map_err(|e| Error::NotFound(format!("backup {}: {e}", b.id)))?;
        }
        super::write_files(&tx, &b.id, &delta.changed, blockmap_chunks)?;
        {
            let mut pe = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO page_error (backup_id, path, block, detail) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .ctx(&what)?;
            for e in page_errors {
                pe.execute(params![b.id, e.path, e.block as i64, e.detail])
                    .ctx(&what)?;
            }
        }
        tx.commit().ctx(&what)
    }
}
