//! What a set of backups uses, worked out in SQL for `verify`.
//!
//! The block maps of the backups in scope go into a temporary table (on
//! this connection only, in a temporary file: `temp_store = FILE`), and the
//! queries below walk it in id order or join it with the chunk index and
//! the block-map relation, so verify's memory does not grow with the number
//! of files, chunks or backups. Nothing here writes the catalog itself.

use rusqlite::params;

use crate::error::{Result, SqlContext};
use crate::format::{ChunkId, PackId};
use rusqlite::Connection;

/// A block map in scope, with the least and greatest size of the files
/// that use it (they differ only when the catalog is damaged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedMap {
    pub id: ChunkId,
    pub min_size: u64,
    pub max_size: u64,
}

/// What the backups in scope use (a temporary table of this connection).
pub struct Scope<'a> {
    pub(super) conn: &'a Connection,
}

impl Scope<'_> {
    /// Put the block maps used by the backups `ids` into the scope table.
    pub fn set(&self, ids: &[String]) -> Result<()> {
        let what = "the backups to verify";
        // The bundled SQLite keeps temporary tables in memory by default.
        self.conn
            .execute_batch(
                "PRAGMA temp_store = FILE;
                 DROP TABLE IF EXISTS temp.scope_seq; DROP TABLE IF EXISTS temp.scope_map;
                 CREATE TEMP TABLE scope_seq (cluster_id INTEGER NOT NULL, seq INTEGER NOT NULL,
                     PRIMARY KEY (cluster_id, seq)) WITHOUT ROWID;
                 CREATE TEMP TABLE scope_map (id BLOB PRIMARY KEY, min_size INTEGER NOT NULL,
                     max_size INTEGER NOT NULL) WITHOUT ROWID;",
            )
            .ctx(what)?;
        for id in ids {
            let at = super::Versions { conn: self.conn }.position(id)?;
            self.conn
                .execute(
                    "INSERT OR IGNORE INTO temp.scope_seq VALUES (?1, ?2)",
                    params![at.cluster, at.seq],
                )
                .ctx(what)?;
        }
        // EXISTS, not a join: a version shared by hundreds of backups is
        // counted once.
        self.conn
            .execute(
                "INSERT INTO temp.scope_map
                 SELECT v.blockmap, MIN(v.size), MAX(v.size) FROM file_version v
                  WHERE v.blockmap IS NOT NULL AND EXISTS (SELECT 1 FROM temp.scope_seq s
                        WHERE s.cluster_id = v.cluster_id AND s.seq BETWEEN v.first_seq AND v.last_seq)
                  GROUP BY v.blockmap",
                [],
            )
            .ctx(what)?;
        Ok(())
    }

    /// Up to `limit` block maps in scope with ids above `after`, in order.
    pub fn maps_after(&self, after: Option<&ChunkId>, limit: usize) -> Result<Vec<ScopedMap>> {
        let zero = ChunkId([0; 32]);
        let (from, op) = match after {
            Some(a) => (a, ">"),
            None => (&zero, ">="),
        };
        let what = "the block maps to verify";
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, min_size, max_size FROM temp.scope_map WHERE id {op} ?1 \
                 ORDER BY id LIMIT ?2"
            ))
            .ctx(what)?;
        let rows = st
            .query_map(params![from, limit as i64], |r| {
                Ok(ScopedMap {
                    id: r.get(0)?,
                    min_size: super::sql::u64_of(r.get(1)?),
                    max_size: super::sql::u64_of(r.get(2)?),
                })
            })
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what)?;
        Ok(rows)
    }

    /// The packs holding what the backups in scope use.
    pub fn packs(&self) -> Result<Vec<PackId>> {
        self.collect(
            "SELECT DISTINCT c.pack_id FROM chunk c WHERE c.id IN (
               SELECT id FROM temp.scope_map
               UNION SELECT bc.chunk FROM temp.scope_map m
                 JOIN blockmap_chunk bc ON bc.blockmap = m.id)
             ORDER BY c.pack_id",
            [],
            |r| r.get(0),
            "the packs the verified backups use",
        )
    }

    /// The block maps in scope that use any of `chunks` (by the relation):
    /// one pass over it, for naming what damage affects.
    pub fn blockmaps_using(&self, chunks: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let what = "the block maps using damaged chunks";
        self.conn
            .execute_batch(
                "DROP TABLE IF EXISTS temp.asked;
                 CREATE TEMP TABLE asked (id BLOB PRIMARY KEY) WITHOUT ROWID;",
            )
            .ctx(what)?;
        {
            let mut ins = self
                .conn
                .prepare_cached("INSERT OR IGNORE INTO temp.asked VALUES (?1)")
                .ctx(what)?;
            for c in chunks {
                ins.execute([c]).ctx(what)?;
            }
        }
        self.collect(
            "SELECT DISTINCT bc.blockmap FROM blockmap_chunk bc \
             WHERE bc.chunk IN (SELECT id FROM temp.asked) \
               AND bc.blockmap IN (SELECT id FROM temp.scope_map)",
            [],
            |r| r.get(0),
            what,
        )
    }

    /// Every row of a query, mapped.
    fn collect<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
        what: &str,
    ) -> Result<Vec<T>> {
        let mut st = self.conn.prepare(sql).ctx(what)?;
        let rows = st
            .query_map(params, map)
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what);
        rows
    }
}
