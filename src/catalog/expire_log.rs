//! The `expire_log` table: one row per applied expire (not a dry run),
//! written once at its end and never updated; `info` shows the newest.

use rusqlite::{params, Connection, OptionalExtension};

use super::Compacted;
use crate::error::{Result, SqlContext};

/// What one expire did (also kept in `expire_log`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExpireLog {
    /// Unix microseconds.
    pub time: i64,
    pub backups: u64,
    pub wal_files: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub orphans: u64,
    pub bytes_freed: u64,
    /// Bytes the catalog file gave back when it was compacted (not kept in
    /// `expire_log`: a later `info` reports the file's size as it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_compacted: Option<Compacted>,
}

/// What each expire did.
pub struct ExpireLogs<'a> {
    pub(super) conn: &'a Connection,
}

impl ExpireLogs<'_> {
    pub fn record(&self, log: &ExpireLog) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO expire_log (time, backups, wal_files, packs_deleted, packs_rewritten, \
                 orphans, bytes_freed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    log.time,
                    log.backups as i64,
                    log.wal_files as i64,
                    log.packs_deleted as i64,
                    log.packs_rewritten as i64,
                    log.orphans as i64,
                    log.bytes_freed as i64
                ],
            )
            .ctx("expire log")?;
        Ok(())
    }

    pub fn last(&self) -> Result<Option<ExpireLog>> {
        self.conn
            .query_row(
                "SELECT time, backups, wal_files, packs_deleted, packs_rewritten, orphans, bytes_freed \
                 FROM expire_log ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(ExpireLog {
                        time: r.get(0)?,
                        backups: r.get::<_, i64>(1)? as u64,
                        wal_files: r.get::<_, i64>(2)? as u64,
                        packs_deleted: r.get::<_, i64>(3)? as u64,
                        packs_rewritten: r.get::<_, i64>(4)? as u64,
                        orphans: r.get::<_, i64>(5)? as u64,
                        bytes_freed: r.get::<_, i64>(6)? as u64,
                        catalog_compacted: None,
                    })
                },
            )
            .optional()
            .ctx("expire log")
    }
}
