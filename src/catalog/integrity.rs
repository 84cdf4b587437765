//! Catalog queries for `verify` and `repair`: whole-repository views of packs,
//! chunks and block-map relations, and SQLite's own consistency checks.
//!
//! The manifest-shape queries hand out paths as stored, even when they are
//! not valid text: a crafted catalog is reported, not a reason to stop.
//!
//! These only read, except [`Catalog::rebuild_backup`], which `repair` uses
//! to insert one backup from its manifest copy in a single transaction, so a
//! rebuilt catalog never holds half a backup.

use std::collections::HashSet;

use rusqlite::types::ValueRef;
use rusqlite::{params, OptionalExtension};

use super::{BackupRow, BackupStatus, Catalog, ChunkLoc, ManifestDelta, PageErrorRow};
use crate::error::{Error, Result, SqlContext};
use crate::format::{ChunkId, FileKind, PackId};

/// One row of the chunk index, as `verify` checks it against a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub stored_len: u32,
}

/// One file version, as `verify` checks the shape of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionShape {
    pub first_seq: i64,
    pub last_seq: i64,
    /// The path, lossily decoded when it is not UTF-8 text.
    pub path: String,
    /// Stored as a blob, or as text that is not UTF-8: not what any writer
    /// of the catalog stores.
    pub path_not_text: bool,
    pub kind: FileKind,
    pub has_link: bool,
}

/// A text column as stored, lossily decoded; and whether it was not text.
fn lossy(v: ValueRef<'_>) -> (String, bool) {
    match v {
        ValueRef::Text(b) => match std::str::from_utf8(b) {
            Ok(s) => (s.to_string(), false),
            Err(_) => (String::from_utf8_lossy(b).into_owned(), true),
        },
        ValueRef::Blob(b) => (String::from_utf8_lossy(b).into_owned(), true),
        ValueRef::Null => (String::new(), true),
        ValueRef::Integer(i) => (i.to_string(), true),
        ValueRef::Real(f) => (f.to_string(), true),
    }
}

impl Catalog {
    /// The sequence numbers of the backups `ids` of one cluster, with
    /// their ids, in order (backups of other clusters are left out).
    pub fn seqs_in(&self, cluster_id: i64, ids: &[String]) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let at = self.position(id)?;
            if at.cluster == cluster_id {
                out.push((at.seq, id.clone()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every file version of a cluster, in path order (then by first seq),
    /// from a cursor: memory does not grow with the number of rows.
    pub fn for_each_version_shape(
        &self,
        cluster_id: i64,
        mut each: impl FnMut(VersionShape) -> Result<()>,
    ) -> Result<()> {
        let what = "the file versions of the backups checked";
        let mut st = self
            .conn
            .prepare(
                "SELECT first_seq, last_seq, path, kind, link IS NOT NULL FROM file_version \
                 WHERE cluster_id = ?1 ORDER BY path, first_seq",
            )
            .ctx(what)?;
        let mut rows = st.query([cluster_id]).ctx(what)?;
        while let Some(r) = rows.next().ctx(what)? {
            let (path, path_not_text) = lossy(r.get_ref(2).ctx(what)?);
            let shape = VersionShape {
                first_seq: r.get(0).ctx(what)?,
                last_seq: r.get(1).ctx(what)?,
                path,
                path_not_text,
                kind: r.get(3).ctx(what)?,
                has_link: r.get(4).ctx(what)?,
            };
            each(shape)?;
        }
        Ok(())
    }

    /// The versions of one path of a cluster: `(first_seq, last_seq, kind,
    /// has a link target)`, by first seq.
    pub fn path_versions(
        &self,
        cluster_id: i64,
        path: &str,
    ) -> Result<Vec<(i64, i64, FileKind, bool)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT first_seq, last_seq, kind, link IS NOT NULL FROM file_version \
                 WHERE cluster_id = ?1 AND path = ?2 ORDER BY first_seq",
            )
            .ctx("the versions of a path")?;
        let rows = st
            .query_map(params![cluster_id, path], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .ctx_with(|| format!("the versions of {path:?}"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx_with(|| format!("the versions of {path:?}"))?;
        Ok(rows)
    }

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
