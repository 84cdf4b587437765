//! The backups: inserted as `running`, completed in one transaction,
//! removed by expire (with the derived rows only they used) or, when they
//! never completed, on their own; and rebuilt from a manifest copy by
//! `repair`, one backup per transaction, so a rebuilt catalog never holds
//! half a backup.

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    backup_from_row, versions, BackupRow, BackupStatus, ManifestDelta, PageErrorRow, BACKUP_COLS,
};
use crate::error::{Error, Result, SqlContext};
use crate::format::ChunkId;

/// The backups, their page errors, and their removal.
pub struct Backups<'a> {
    pub(super) conn: &'a Connection,
}

impl Backups<'_> {
    pub fn insert(&self, cluster_id: i64, b: &BackupRow) -> Result<()> {
        let tx = self.conn.unchecked_transaction().ctx("insert backup")?;
        let seq = versions::next_seq(&tx, cluster_id)?;
        tx
            .execute(
                "INSERT INTO backup (id, cluster_id, type, status, reference, start_time, \
                 start_lsn, timeline, pg_version, block_size, wal_seg_size, data_checksums, \
                 host, pid, history, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                 ?13, ?14, ?15, ?16)",
                params![
                    b.id,
                    cluster_id,
                    b.backup_type,
                    b.status,
                    b.reference,
                    b.start_time,
                    b.start_lsn,
                    b.timeline,
                    b.pg_version,
                    b.block_size,
                    b.wal_seg_size as i64,
                    b.data_checksums,
                    b.host,
                    b.pid,
                    b.history,
                    seq
                ],
            )
            .ctx("insert backup")?;
        tx.commit().ctx("insert backup")
    }

    /// Write a backup's final fields and mark it complete, in one transaction.
    pub fn complete(&self, b: &BackupRow) -> Result<()> {
        let tx = self.conn.unchecked_transaction().ctx("complete backup")?;
        let n = tx
            .execute(
                "UPDATE backup SET status = 'complete', stop_time = ?2, stop_lsn = ?3, \
                 timeline = ?4, wal_start = ?5, wal_stop = ?6, backup_label = ?7, \
                 tablespace_map = ?8, db_bytes = ?9, read_bytes = ?10, stored_bytes = ?11, \
                 files = ?12, page_errors = ?13, changes = ?14 WHERE id = ?1 AND \
                 status = 'running'",
                params![
                    b.id,
                    b.stop_time,
                    b.stop_lsn,
                    b.timeline,
                    b.wal_start,
                    b.wal_stop,
                    b.backup_label,
                    b.tablespace_map,
                    b.db_bytes as i64,
                    b.read_bytes as i64,
                    b.stored_bytes as i64,
                    b.files as i64,
                    b.page_errors as i64,
                    b.changes
                ],
            )
            .ctx("complete backup")?;
        if n != 1 {
            return Err(Error::corrupt(
                format!("backup {}", b.id),
                "was not running when it was to be completed",
            ));
        }
        tx.commit().ctx("complete backup")
    }

    /// Remove a backup that never completed (its rows only; chunks are
    /// collected by garbage collection).
    pub fn delete(&self, id: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM backup WHERE id = ?1", [id])
            .ctx("delete backup")?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<BackupRow>> {
        self.conn
            .query_row(
                &format!("SELECT {BACKUP_COLS} FROM backup WHERE id = ?1"),
                [id],
                backup_from_row,
            )
            .optional()
            .ctx("read backup")
    }

    /// Backups of a cluster, oldest first.
    pub fn of_cluster(&self, cluster_id: i64) -> Result<Vec<BackupRow>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {BACKUP_COLS} FROM backup WHERE cluster_id = ?1 ORDER BY start_time, id"
            ))
            .ctx("list backups")?;
        let rows = st
            .query_map([cluster_id], backup_from_row)
            .ctx("list backups")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("a backup row")?;
        Ok(rows)
    }

    pub fn add_page_errors(&self, backup_id: &str, errs: &[PageErrorRow]) -> Result<()> {
        let mut st = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO page_error (backup_id, path, block, detail) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .ctx("page errors")?;
        for e in errs {
            st.execute(params![backup_id, e.path, e.block as i64, e.detail])
                .ctx("page errors")?;
        }
        Ok(())
    }

    pub fn page_errors(&self, backup_id: &str) -> Result<Vec<PageErrorRow>> {
        let mut st = self
            .conn
            .prepare("SELECT path, block, detail FROM page_error WHERE backup_id = ?1 ORDER BY path, block")
            .ctx("page errors")?;
        let rows = st
            .query_map([backup_id], |r| {
                Ok(PageErrorRow {
                    path: r.get(0)?,
                    block: r.get::<_, i64>(1)? as u64,
                    detail: r.get(2)?,
                })
            })
            .ctx("page errors")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("page errors")?;
        Ok(rows)
    }

    /// Backups stuck in `running`: with the repository lock held, nothing is
    /// running, so these are leftovers of killed backups.
    pub fn running(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT id FROM backup WHERE status = 'running'")
            .ctx("running backups")?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .ctx("running backups")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("running backups")?;
        Ok(rows)
    }

    /// Delete backups and the derived rows only they used, in one transaction.
    pub fn expire(&self, ids: &[String]) -> Result<()> {
        let tx = self.conn.unchecked_transaction().ctx("expire backups")?;
        let all: i64 = tx
            .query_row("SELECT count(*) FROM backup", [], |r| r.get(0))
            .ctx("expire backups")?;
        for id in ids {
            tx.execute("DELETE FROM backup WHERE id = ?1", [id])
                .ctx("expire backup")?;
        }
        // A quarter of the backups or more: most of their file versions go.
        super::versions::collect(&tx, ids.len() as i64 * 4 >= all)?;
        tx.commit().ctx("expire backups")
    }

    /// Insert a complete backup from its manifest copy, in one transaction:
    /// the backup row, its files, the block-map relation and page errors.
    /// A copy that is a delta against `prev` needs `prev` rebuilt just
    /// before it (the cluster's newest backup): the rows of `prev` that the
    /// delta does not name carry over.
    pub fn rebuild(
        &self,
        cluster_id: i64,
        b: &BackupRow,
        prev: Option<&str>,
        delta: &ManifestDelta,
        blockmap_chunks: &[(ChunkId, Vec<ChunkId>)],
        page_errors: &[PageErrorRow],
    ) -> Result<()> {
        let what = format!("rebuild backup {}", b.id);
        let tx = self.conn.unchecked_transaction().ctx(&what)?;
        let seq = super::versions::next_seq(&tx, cluster_id)?;
        tx.execute(
            "INSERT INTO backup (id, cluster_id, type, status, reference, start_time, stop_time, \
             start_lsn, stop_lsn, timeline, wal_start, wal_stop, pg_version, block_size, \
             wal_seg_size, data_checksums, backup_label, tablespace_map, db_bytes, read_bytes, \
             stored_bytes, files, page_errors, host, pid, history, seq, copy_prev, changes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
             ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)",
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
                prev,
                b.changes
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
