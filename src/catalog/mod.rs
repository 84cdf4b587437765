//! `catalog.db`: clusters, backups and their manifests, the chunk index and
//! packs, in SQLite (WAL mode, `synchronous=FULL`).
//!
//! Durability rules: a `chunk` row is inserted only after its pack is sealed
//! (fsynced and renamed), in the same transaction as its `pack` row. A backup
//! is inserted as `running` and becomes `complete` in one final transaction.
//! Readers only ever trust `complete` backups.

mod clusters;
mod drills;
mod gc;
mod integrity;
mod model;
mod scan;
mod schema;
mod scope;
mod sql;
mod versions;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

pub use drills::DrillRow;
pub use gc::{Compacted, ExpireLog, PackChunk, PackUsage, COMPACT_FREE_SHARE};
pub use integrity::{IndexedChunk, VersionShape};
pub use model::{
    BackupRow, BackupStatus, BackupType, ChunkLoc, ClusterRow, FileKind, FileRow, HistoryRow,
    PageErrorRow,
};
pub use scan::{FileOrder, Readers};
pub use scope::ScopedMap;
pub(crate) use versions::write_files;
pub use versions::{ManifestDelta, Position};

use crate::error::{Error, Hint, Result, SqlContext};
use crate::format::ChunkId;
use crate::store::SealedPack;
use crate::util::now_us;
use sql::u64_of;

/// Schema version this binary writes (number of migrations).
pub const SCHEMA_VERSION: u32 = schema::MIGRATIONS.len() as u32;

/// How the names of change capture's tables and triggers start
/// (`repo::replica`): they are not the catalog's own.
pub(crate) const CAPTURE_PREFIX: &str = "capture_";

pub struct Catalog {
    conn: Connection,
}

const BACKUP_COLS: &str = "id, type, status, reference, start_time, stop_time, start_lsn, \
    stop_lsn, timeline, wal_start, wal_stop, pg_version, block_size, wal_seg_size, \
    data_checksums, backup_label, tablespace_map, db_bytes, read_bytes, stored_bytes, files, \
    page_errors, host, pid, history";

fn backup_from_row(r: &Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        id: r.get(0)?,
        backup_type: r.get(1)?,
        status: r.get(2)?,
        reference: r.get(3)?,
        start_time: r.get(4)?,
        stop_time: r.get(5)?,
        start_lsn: r.get(6)?,
        stop_lsn: r.get(7)?,
        timeline: r.get(8)?,
        wal_start: r.get(9)?,
        wal_stop: r.get(10)?,
        pg_version: r.get(11)?,
        block_size: r.get(12)?,
        wal_seg_size: u64_of(r.get(13)?),
        data_checksums: r.get(14)?,
        backup_label: r.get(15)?,
        tablespace_map: r.get(16)?,
        db_bytes: u64_of(r.get(17)?),
        read_bytes: u64_of(r.get(18)?),
        stored_bytes: u64_of(r.get(19)?),
        files: u64_of(r.get(20)?),
        page_errors: u64_of(r.get(21)?),
        host: r.get(22)?,
        pid: r.get(23)?,
        history: r.get(24)?,
    })
}

fn file_from_row(r: &Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        path: r.get(0)?,
        kind: r.get(1)?,
        size: u64_of(r.get(2)?),
        mtime_ns: r.get(3)?,
        mode: r.get(4)?,
        uid: r.get(5)?,
        gid: r.get(6)?,
        link: r.get(7)?,
        blockmap: r.get(8)?,
    })
}

fn loc_from_row(r: &Row<'_>, first: usize) -> rusqlite::Result<ChunkLoc> {
    Ok(ChunkLoc {
        pack_id: r.get(first)?,
        offset: u64_of(r.get(first + 1)?),
        stored_len: r.get(first + 2)?,
        raw_len: r.get(first + 3)?,
    })
}

/// A file that is not an SQLite database (overwritten, garbage) is a
/// damaged catalog: say what repairs it.
fn damaged(path: &Path, context: &str, source: rusqlite::Error) -> Error {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => Error::corrupt(
            format!("catalog {}", path.display()),
            "it is not an SQLite database; rebuild it from the repository",
        )
        .hint(Hint::RebuildCatalog),
        _ => Error::Catalog {
            context: context.to_string(),
            source,
        },
    }
}

/// Page cache (as `PRAGMA cache_size`: negative is KiB) while an index is
/// rebuilt: the sort may hold as much as the cache, on top of it.
const SORT_CACHE: i64 = -4096;

impl Catalog {
    /// Open (and migrate) the catalog. `create` allows making a new file.
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        if !create && !path.exists() {
            return Err(
                Error::NotFound(format!("catalog {} is missing", path.display()))
                    .hint(Hint::RebuildCatalog),
            );
        }
        let mut cat = Catalog::open_unmigrated(path)?;
        cat.migrate_to(SCHEMA_VERSION, path)?;
        Ok(cat)
    }

    /// Open an existing catalog at the schema it has (a copy being brought
    /// up to a published generation migrates delta by delta).
    pub fn open_unmigrated(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).ctx("open")?;
        conn.busy_timeout(Duration::from_secs(60))
            .ctx("busy_timeout")?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| damaged(path, "journal_mode", e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .ctx("synchronous")?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .ctx("foreign_keys")?;
        Ok(Catalog { conn })
    }

    /// A read-only connection to an existing catalog, for lookups beside
    /// the writer (WAL mode: readers see committed rows and never block it).
    pub fn open_reader(path: &Path) -> Result<Self> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ctx("open a reader")?;
        conn.busy_timeout(Duration::from_secs(60))
            .ctx("busy_timeout")?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| damaged(path, "open a reader", e))?;
        let cat = Catalog { conn };
        let v = cat.schema_version()?;
        if v != SCHEMA_VERSION {
            return Err(Error::internal(format!(
                "catalog {} is of schema {v}, not {SCHEMA_VERSION}",
                path.display()
            )));
        }
        Ok(cat)
    }

    /// The connection, for tests that write what no command does.
    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// The connection, for change capture (`repo::replica`): it treats
    /// every table alike, by the schema SQLite reports.
    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Stop change capture (`repo::replica`): drop its triggers, the
    /// objects whose names start [`CAPTURE_PREFIX`]; the capture tables
    /// stay.
    pub(crate) fn stop_capture(&mut self) -> Result<()> {
        let names: Vec<String> = self
            .conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'trigger' \
                 AND name LIKE 'capture\\_%' ESCAPE '\\'",
            )
            .and_then(|mut st| {
                st.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .ctx("list the capture triggers")?;
        let tx = self.conn.transaction().ctx("stop change capture")?;
        for n in names {
            tx.execute_batch(&format!("DROP TRIGGER \"{n}\""))
                .ctx("stop change capture")?;
        }
        tx.commit().ctx("stop change capture")
    }

    /// A consistent copy of the catalog at `from` (its `-wal` included) in
    /// the new file `to`. Read-only: a file removed meanwhile is an error,
    /// not a new database, and another process may have it open.
    pub fn copy_file(from: &Path, to: &Path) -> Result<()> {
        let what = || format!("copy catalog {} to {}", from.display(), to.display());
        let conn = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ctx_with(what)?;
        conn.busy_timeout(Duration::from_secs(60)).ctx_with(what)?;
        conn.execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])
            .ctx_with(what)?;
        Ok(())
    }

    /// Whether the chunk index has `id`.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM chunk WHERE id = ?1")
            .and_then(|mut st| st.exists([id]))
            .ctx_with(|| format!("the chunk index row of chunk {id}"))
    }

    pub fn schema_version(&self) -> Result<u32> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ctx("user_version")
    }

    /// Apply the migrations up to schema `target`. Change capture stops
    /// first: a migration's changes are not captured, and a trigger made
    /// for the old columns would capture the new ones wrongly.
    pub(crate) fn migrate_to(&mut self, target: u32, path: &Path) -> Result<()> {
        let v = self.schema_version()?;
        if v > SCHEMA_VERSION {
            return Err(Error::NewerFormat {
                what: format!("catalog {}", path.display()),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        if v >= target {
            return Ok(());
        }
        self.stop_capture()?;
        for (i, sql) in schema::MIGRATIONS
            .iter()
            .enumerate()
            .take(target as usize)
            .skip(v as usize)
        {
            let tx = self.conn.transaction().ctx("migration")?;
            tx.execute_batch(sql).ctx("migration")?;
            tx.pragma_update(None, "user_version", (i + 1) as u32)
                .ctx("migration")?;
            tx.commit().ctx("migration")?;
        }
        Ok(())
    }

    /// Commit without waiting for the disk: for a private copy that is
    /// made durable whole (one `fsync`) before anyone may open it.
    pub fn unsynced(&self) -> Result<()> {
        self.conn
            .pragma_update(None, "synchronous", "OFF")
            .ctx("synchronous")
    }

    /// Fold the write-ahead log into the database file and truncate it, so
    /// the catalog's footprint is its real size between commands.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .ctx("checkpoint")
    }

    /// Let this connection keep up to `mib` MiB of catalog pages (SQLite's
    /// default is 2 MiB), for a command that walks most of the catalog
    /// more than once: its memory grows by at most that much.
    pub fn set_cache_mib(&self, mib: u32) -> Result<()> {
        self.conn
            .pragma_update(None, "cache_size", -(i64::from(mib) * 1024))
            .ctx("cache_size")
    }

    /// Keep this connection's temporary tables and sorts in a temporary
    /// file (spilled past the page cache), not in memory, which is where
    /// the bundled SQLite keeps them by default.
    pub fn temp_on_disk(&self) -> Result<()> {
        self.conn
            .pragma_update(None, "temp_store", "FILE")
            .ctx("temp_store")
    }

    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("PRAGMA integrity_check")
            .ctx("integrity")?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .ctx("integrity")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("integrity")?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    // ---- chunks and packs

    /// Every chunk id in the index (for deduplication while backing up).
    pub fn chunk_ids(&self) -> Result<HashSet<ChunkId>> {
        let mut st = self.conn.prepare("SELECT id FROM chunk").ctx("chunk ids")?;
        let mut out = HashSet::new();
        let mut rows = st.query([]).ctx("chunk ids")?;
        while let Some(r) = rows.next().ctx("chunk ids")? {
            out.insert(r.get(0).ctx("a row of the chunk index")?);
        }
        Ok(out)
    }

    /// Where a chunk is stored (restore looks up every data chunk here:
    /// the statement is cached, and the id formatted only for an error).
    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        self.conn
            .prepare_cached("SELECT pack_id, offset, stored_len, raw_len FROM chunk WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |r| loc_from_row(r, 0)).optional())
            .ctx_with(|| format!("the chunk index row of chunk {id}"))
    }

    /// Record a sealed pack and index its chunks, in one transaction.
    pub fn add_pack(&mut self, pack: &SealedPack, backup_id: Option<&str>) -> Result<()> {
        let tx = self.conn.transaction().ctx("add pack")?;
        tx.execute(
            "INSERT OR IGNORE INTO pack (id, size, chunks, backup_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                pack.id,
                pack.size as i64,
                pack.entries.len() as i64,
                backup_id,
                now_us()
            ],
        )
        .ctx("add pack")?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chunk (id, pack_id, offset, stored_len, raw_len) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .ctx("add chunk")?;
            for e in &pack.entries {
                st.execute(params![
                    e.id,
                    pack.id,
                    e.offset as i64,
                    e.stored_len,
                    e.raw_len
                ])
                .ctx("add chunk")?;
            }
        }
        tx.commit().ctx("add pack")
    }

    /// Locations of every chunk a backup uses: its block maps and their chunks.
    pub fn chunk_locations(&self, backup_id: &str) -> Result<HashMap<ChunkId, ChunkLoc>> {
        self.locations(
            "SELECT c.id, c.pack_id, c.offset, c.stored_len, c.raw_len FROM chunk c \
             WHERE c.id IN (SELECT blockmap FROM file WHERE backup_id = ?1 AND blockmap IS NOT NULL \
                 UNION SELECT bc.chunk FROM blockmap_chunk bc JOIN file f ON f.blockmap = bc.blockmap \
                 WHERE f.backup_id = ?1)",
            backup_id,
        )
    }

    /// Data chunks a backup's block maps use that the chunk index lacks,
    /// with a file that needs each (at most `limit`).
    pub fn missing_chunks(&self, backup_id: &str, limit: u32) -> Result<Vec<(String, ChunkId)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT f.path, bc.chunk FROM file f JOIN blockmap_chunk bc ON bc.blockmap = f.blockmap \
                 WHERE f.backup_id = ?1 AND bc.chunk NOT IN (SELECT id FROM chunk) LIMIT ?2",
            )
            .ctx("missing chunks")?;
        let rows = st
            .query_map(params![backup_id, limit], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx("missing chunks")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx_with(|| format!("the block-map relation of backup {backup_id}"))?;
        Ok(rows)
    }

    /// Locations of the block maps of a backup's files.
    pub fn blockmap_locations(&self, backup_id: &str) -> Result<HashMap<ChunkId, ChunkLoc>> {
        self.locations(
            "SELECT c.id, c.pack_id, c.offset, c.stored_len, c.raw_len FROM chunk c \
             WHERE c.id IN (SELECT blockmap FROM file WHERE backup_id = ?1 AND blockmap IS NOT NULL)",
            backup_id,
        )
    }

    fn locations(&self, sql: &str, arg: &str) -> Result<HashMap<ChunkId, ChunkLoc>> {
        let mut out = HashMap::new();
        let mut st = self.conn.prepare(sql).ctx("chunk locations")?;
        let mut rows = st.query([arg]).ctx("chunk locations")?;
        while let Some(r) = rows.next().ctx("chunk locations")? {
            let what = || format!("a chunk index row used by backup {arg}");
            let id: ChunkId = r.get(0).ctx(&what())?;
            out.insert(id, loc_from_row(r, 1).ctx(&what())?);
        }
        Ok(out)
    }

    pub fn pack_bytes(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT COALESCE(SUM(size), 0) FROM pack", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .ctx("pack bytes")
    }

    // ---- backups

    pub fn insert_backup(&self, cluster_id: i64, b: &BackupRow) -> Result<()> {
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
    pub fn complete_backup(&mut self, b: &BackupRow) -> Result<()> {
        let tx = self.conn.transaction().ctx("complete backup")?;
        let n = tx
            .execute(
                "UPDATE backup SET status = 'complete', stop_time = ?2, stop_lsn = ?3, \
                 timeline = ?4, wal_start = ?5, wal_stop = ?6, backup_label = ?7, \
                 tablespace_map = ?8, db_bytes = ?9, read_bytes = ?10, stored_bytes = ?11, \
                 files = ?12, page_errors = ?13 WHERE id = ?1 AND status = 'running'",
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
                    b.page_errors as i64
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
    pub fn delete_backup(&self, id: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM backup WHERE id = ?1", [id])
            .ctx("delete backup")?;
        Ok(())
    }

    pub fn backup(&self, id: &str) -> Result<Option<BackupRow>> {
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
    pub fn backups(&self, cluster_id: i64) -> Result<Vec<BackupRow>> {
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

    /// Insert manifest entries and the block-map → chunk relation, in one
    /// transaction.
    pub fn insert_files(
        &mut self,
        backup_id: &str,
        files: &[FileRow],
        blockmap_chunks: &[(ChunkId, Vec<ChunkId>)],
    ) -> Result<()> {
        let tx = self.conn.transaction().ctx("insert files")?;
        write_files(&tx, backup_id, files, blockmap_chunks)?;
        tx.commit().ctx("insert files")
    }

    /// A backup's manifest, ordered by path.
    pub fn files(&self, backup_id: &str) -> Result<Vec<FileRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT path, kind, size, mtime, mode, uid, gid, link, blockmap FROM file \
                 WHERE backup_id = ?1 ORDER BY path",
            )
            .ctx("read manifest")?;
        let rows = st
            .query_map([backup_id], file_from_row)
            .ctx("read manifest")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx_with(|| format!("a file row of backup {backup_id}"))?;
        Ok(rows)
    }

    /// The (backup id, path) of every file row whose block map is `bm`.
    pub fn files_with_blockmap(&self, bm: &ChunkId) -> Result<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT backup_id, path FROM file WHERE blockmap = ?1")
            .ctx("find the files of a block map")?;
        let rows = st
            .query_map([bm], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx("find the files of a block map")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx_with(|| format!("a file row using block map {bm}"))?;
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
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::format::ChunkId;
    use crate::repo::testkit::{content, Fixture, SYSTEM_ID};

    #[test]
    fn clusters_keep_their_identity() {
        let f = Fixture::new();
        let cat = f.repo.catalog().unwrap();
        let c = cat.bind_cluster("main", SYSTEM_ID, 15).unwrap();
        assert_eq!(cat.bind_cluster("main", SYSTEM_ID, 15).unwrap(), c);
        let e = cat.bind_cluster("main", SYSTEM_ID + 1, 15).unwrap_err();
        assert!(
            matches!(e.without_hint(), Error::Refused(_))
                && e.to_string().contains("another PostgreSQL cluster")
        );
        assert!(cat.bind_cluster("main", SYSTEM_ID, 16).is_err());
        assert_eq!(cat.clusters().unwrap().len(), 1);
    }

    #[test]
    fn backups_files_and_locations() {
        let f = Fixture::new();
        let a = f.backup(1, &[("x", content(1, 200, 0)), ("y", content(2, 1, 0))]);
        let b = f.backup(2, &[("x", content(1, 200, 0))]);
        let cat = f.repo.catalog().unwrap();
        let cl = cat.cluster("main").unwrap().unwrap();
        let ids: Vec<String> = cat
            .backups(cl.id)
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, vec![a.id.clone(), b.id.clone()]);
        let files = cat.files(&a.id).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec![".", "x", "y"]);
        // x: 2 data chunks and a block map; y: 1 and a block map; both
        // backups' x is the same content, so the same chunks.
        assert_eq!(cat.chunk_locations(&a.id).unwrap().len(), 5);
        assert_eq!(cat.chunk_locations(&b.id).unwrap().len(), 3);
        assert_eq!(cat.blockmap_locations(&a.id).unwrap().len(), 2);
        assert!(cat.missing_chunks(&a.id, 10).unwrap().is_empty());
        assert_eq!(cat.chunk_ids().unwrap().len(), 5);
        assert_eq!(cat.running_backups().unwrap(), Vec::<String>::new());
        drop(cat);
        f.sql(
            "DELETE FROM chunk WHERE id IN (SELECT chunk FROM blockmap_chunk) AND raw_len < 100000",
        );
        let cat = f.repo.catalog().unwrap();
        let missing = cat.missing_chunks(&a.id, 10).unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].0, "y");
    }

    #[test]
    fn malformed_values_are_errors_naming_the_row() {
        let f = Fixture::new();
        let a = f.backup(1, &[("x", content(1, 2, 0))]);
        f.sql("UPDATE file_version SET size = 'many' WHERE path = 'x'");
        let e = f.repo.catalog().unwrap().files(&a.id).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("file row of backup {}", a.id)),
            "{e}"
        );
        f.sql("UPDATE file_version SET size = 16384 WHERE path = 'x'; PRAGMA foreign_keys = OFF; UPDATE chunk SET pack_id = 'zz'");
        let e = f
            .repo
            .catalog()
            .unwrap()
            .chunk_locations(&a.id)
            .unwrap_err();
        assert!(e.to_string().contains("chunk index row"), "{e}");
        f.sql("PRAGMA foreign_keys = OFF; INSERT INTO chunk VALUES (x'01', 'p', 0, 0, 0)");
        assert!(f.repo.catalog().unwrap().chunk_ids().is_err());
        let some = ChunkId([9; 32]);
        assert!(f.repo.catalog().unwrap().chunk(&some).unwrap().is_none());
    }
}
