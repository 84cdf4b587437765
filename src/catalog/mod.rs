//! `catalog.db`: clusters, backups and their manifests, the chunk index and
//! packs, in SQLite (WAL mode, `synchronous=FULL`).
//!
//! Durability rules: a `chunk` row is inserted only after its pack is sealed
//! (fsynced and renamed), in the same transaction as its `pack` row. A backup
//! is inserted as `running` and becomes `complete` in one final transaction.
//! Readers only ever trust `complete` backups.
//!
//! [`Catalog`] itself opens the file, migrates the schema and keeps it
//! (checkpoints, compaction, SQLite's own checks). Rows are reached through
//! narrow handles by subject, each borrowing the connection:
//! [`Catalog::clusters`], [`Catalog::backups`], [`Catalog::versions`] (the
//! manifests), [`Catalog::packs`] (with the chunk index), [`Catalog::scope`]
//! (what the backups `verify` checks use), [`Catalog::drills`] and
//! [`Catalog::expire_log`]. A handle method that writes several rows does so
//! in one transaction of its own, committed before it returns, so handles
//! never nest transactions.

mod backups;
mod clusters;
mod drills;
mod expire_log;
mod model;
mod packs;
mod scan;
mod schema;
mod scope;
mod sql;
mod versions;

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Row};

pub(crate) use backups::Backups;
pub(crate) use clusters::Clusters;
pub(crate) use drills::{DrillRow, Drills};
pub use expire_log::ExpireLog;
pub(crate) use expire_log::ExpireLogs;
pub use model::HistoryRow;
pub(crate) use model::{
    BackupRow, BackupStatus, BackupType, ChunkLoc, ClusterRow, FileKind, FileRow, PageErrorRow,
};
pub(crate) use packs::{IndexedChunk, PackChunk, PackUsage, Packs};
pub(crate) use scan::{FileOrder, Readers, VersionShape};
pub(crate) use scope::{Scope, ScopedMap};
pub(crate) use versions::write_files;
pub(crate) use versions::{ManifestDelta, Position, Versions};

use crate::error::{Error, Hint, Result, SqlContext};
use sql::u64_of;

/// Schema version this binary writes (number of migrations).
pub(crate) const SCHEMA_VERSION: u32 = schema::MIGRATIONS.len() as u32;

/// How the names of change capture's tables and triggers start
/// (`repo::replica`): they are not the catalog's own.
pub(crate) const CAPTURE_PREFIX: &str = "capture_";

pub struct Catalog {
    conn: Connection,
}

const BACKUP_COLS: &str = "id, type, status, reference, start_time, stop_time, start_lsn, \
    stop_lsn, timeline, wal_start, wal_stop, pg_version, block_size, wal_seg_size, \
    data_checksums, backup_label, tablespace_map, db_bytes, read_bytes, stored_bytes, files, \
    page_errors, host, pid, history, changes";

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
        changes: r.get(25)?,
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

/// The catalog's size before and after [`Catalog::compact`], in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    pub before: u64,
    pub after: u64,
}

/// `expire` compacts the catalog when at least this share of its pages is
/// free: SQLite reuses free pages but never returns them, so without it the
/// file keeps the size of the largest repository it ever described.
pub(crate) const COMPACT_FREE_SHARE: f64 = 0.25;

/// ... and at least this many bytes are free (not worth a rewrite below).
const COMPACT_MIN_FREE: u64 = 4 << 20;

impl Catalog {
    /// The clusters and their identities.
    pub fn clusters(&self) -> Clusters<'_> {
        Clusters { conn: &self.conn }
    }

    /// The backups and their page errors.
    pub fn backups(&self) -> Backups<'_> {
        Backups { conn: &self.conn }
    }

    /// The backups' manifests (file versions).
    pub fn versions(&self) -> Versions<'_> {
        Versions { conn: &self.conn }
    }

    /// The packs and the chunk index.
    pub fn packs(&self) -> Packs<'_> {
        Packs { conn: &self.conn }
    }

    /// What the backups in scope use (for `verify`).
    pub fn scope(&self) -> Scope<'_> {
        Scope { conn: &self.conn }
    }

    /// The restore drills.
    pub fn drills(&self) -> Drills<'_> {
        Drills { conn: &self.conn }
    }

    /// What each expire did.
    pub fn expire_log(&self) -> ExpireLogs<'_> {
        ExpireLogs { conn: &self.conn }
    }

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

    /// Rewrite the catalog file without its free pages (`VACUUM`), when at
    /// least `share` of them (and [`COMPACT_MIN_FREE`] bytes) are free.
    /// Returns the sizes before and after, or `None` when nothing was done.
    ///
    /// Durability: `VACUUM` is one transaction, like any other write: a
    /// crash leaves the old file or the new one. It changes no row, so in
    /// object storage it captures nothing and the next generation stays a
    /// delta.
    pub fn compact(&self, share: f64) -> Result<Option<Compacted>> {
        let what = "catalog compaction";
        let pragma = |name: &str| -> Result<u64> {
            let v: i64 = self
                .conn
                .pragma_query_value(None, name, |r| r.get(0))
                .ctx(what)?;
            Ok(v.max(0) as u64)
        };
        let page = pragma("page_size")?;
        let (pages, free) = (pragma("page_count")?, pragma("freelist_count")?);
        if pages == 0 || (free as f64) < share * pages as f64 || free * page < COMPACT_MIN_FREE {
            return Ok(None);
        }
        self.conn.execute_batch("VACUUM").ctx(what)?;
        Ok(Some(Compacted {
            before: pages * page,
            after: pragma("page_count")? * pragma("page_size")?,
        }))
    }
}

/// The few writes change capture's tests make, on the catalog itself.
#[cfg(test)]
impl Catalog {
    pub(crate) fn add_page_errors(&self, backup_id: &str, errs: &[PageErrorRow]) -> Result<()> {
        self.backups().add_page_errors(backup_id, errs)
    }

    pub(crate) fn page_errors(&self, backup_id: &str) -> Result<Vec<PageErrorRow>> {
        self.backups().page_errors(backup_id)
    }

    pub(crate) fn delete_backup(&self, id: &str) -> Result<()> {
        self.backups().delete(id)
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
        let c = cat.clusters().bind("main", SYSTEM_ID, 15).unwrap();
        assert_eq!(cat.clusters().bind("main", SYSTEM_ID, 15).unwrap(), c);
        let e = cat.clusters().bind("main", SYSTEM_ID + 1, 15).unwrap_err();
        assert!(
            matches!(e.without_hint(), Error::Refused(_))
                && e.to_string().contains("another PostgreSQL cluster")
        );
        assert!(cat.clusters().bind("main", SYSTEM_ID, 16).is_err());
        assert_eq!(cat.clusters().list().unwrap().len(), 1);
    }

    #[test]
    fn backups_files_and_locations() {
        let f = Fixture::new();
        let a = f.backup(1, &[("x", content(1, 200, 0)), ("y", content(2, 1, 0))]);
        let b = f.backup(2, &[("x", content(1, 200, 0))]);
        let cat = f.repo.catalog().unwrap();
        let cl = cat.clusters().get("main").unwrap().unwrap();
        let ids: Vec<String> = cat
            .backups()
            .of_cluster(cl.id)
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, vec![a.id.clone(), b.id.clone()]);
        let files = cat.versions().files(&a.id).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec![".", "x", "y"]);
        // x: 2 data chunks and a block map; y: 1 and a block map; both
        // backups' x is the same content, so the same chunks.
        assert_eq!(cat.packs().chunk_locations(&a.id).unwrap().len(), 5);
        assert_eq!(cat.packs().chunk_locations(&b.id).unwrap().len(), 3);
        assert_eq!(cat.packs().blockmap_locations(&a.id).unwrap().len(), 2);
        assert!(cat.packs().missing_chunks(&a.id, 10).unwrap().is_empty());
        assert_eq!(cat.packs().chunk_ids().unwrap().len(), 5);
        assert_eq!(cat.backups().running().unwrap(), Vec::<String>::new());
        drop(cat);
        f.sql(
            "DELETE FROM chunk WHERE id IN (SELECT chunk FROM blockmap_chunk) AND raw_len < 100000",
        );
        let cat = f.repo.catalog().unwrap();
        let missing = cat.packs().missing_chunks(&a.id, 10).unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].0, "y");
    }

    #[test]
    fn malformed_values_are_errors_naming_the_row() {
        let f = Fixture::new();
        let a = f.backup(1, &[("x", content(1, 2, 0))]);
        f.sql("UPDATE file_version SET size = 'many' WHERE path = 'x'");
        let e = f
            .repo
            .catalog()
            .unwrap()
            .versions()
            .files(&a.id)
            .unwrap_err();
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
            .packs()
            .chunk_locations(&a.id)
            .unwrap_err();
        assert!(e.to_string().contains("chunk index row"), "{e}");
        f.sql("PRAGMA foreign_keys = OFF; INSERT INTO chunk VALUES (x'01', 'p', 0, 0, 0)");
        assert!(f.repo.catalog().unwrap().packs().chunk_ids().is_err());
        let some = ChunkId([9; 32]);
        assert!(f
            .repo
            .catalog()
            .unwrap()
            .packs()
            .chunk(&some)
            .unwrap()
            .is_none());
    }

    /// Compaction gives free pages back once enough are free, keeps every
    /// row, and does nothing when little is free.
    #[test]
    fn compaction_returns_free_pages_and_keeps_the_rows() {
        let f = Fixture::new();
        let a = f.backup(1, &[("x", content(1, 2, 0))]);
        let cat = f.repo.catalog().unwrap();
        assert_eq!(
            cat.compact(crate::catalog::COMPACT_FREE_SHARE).unwrap(),
            None
        );
        // Two tables of 8 MiB, one dropped: its pages stay in the file, free.
        cat.conn
            .execute_batch(
                "CREATE TABLE kept (b BLOB); CREATE TABLE scratch (b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2048)
                 INSERT INTO scratch SELECT randomblob(4096) FROM n;
                 INSERT INTO kept SELECT b FROM scratch;
                 DROP TABLE scratch;",
            )
            .unwrap();
        let size = || {
            std::fs::metadata(f.repo.root().join("catalog.db"))
                .unwrap()
                .len()
        };
        cat.checkpoint().unwrap();
        let file_before = size();
        assert!(file_before > 16 << 20, "{file_before}");
        // Not when less than the share asked for is free (about half is).
        assert_eq!(cat.compact(0.75).unwrap(), None);
        let c = cat
            .compact(crate::catalog::COMPACT_FREE_SHARE)
            .unwrap()
            .unwrap();
        assert!(c.before >= 16 << 20, "{c:?}");
        assert!((8 << 20..10 << 20).contains(&c.after), "{c:?}");
        let kept: i64 = cat
            .conn
            .query_row("SELECT count(*) FROM kept", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2048);
        cat.checkpoint().unwrap();
        assert_eq!(size(), c.after);
        assert!(cat.backups().get(&a.id).unwrap().is_some());
        assert!(cat.integrity_check().unwrap().is_empty());
        assert_eq!(
            cat.compact(crate::catalog::COMPACT_FREE_SHARE).unwrap(),
            None
        );
    }
}
