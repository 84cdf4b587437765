//! File rows as versions shared by consecutive backups.
//!
//! Each backup of a cluster gets the next number of the cluster's sequence
//! (`cluster.last_seq`). A `file_version` row holds one path's manifest
//! entry for every backup whose seq lies in `[first_seq, last_seq]`; a
//! backup's manifest is the set of versions covering its seq (the `file`
//! view). Writing a backup with seq `s` extends a path's newest version
//! when that version reaches `s - 1` and is equal, and inserts `[s, s]`
//! otherwise, so an unchanged file costs an update in place, not a row.
//!
//! Invariants:
//! - a path has at most one version covering any seq (versions of a path
//!   never overlap), so every backup reads exactly its own rows and never a
//!   chain of others;
//! - a version is extended only from the seq just before, so it never
//!   covers a seq whose backup lacked the path. Seqs of failed backups may
//!   be covered; no backup has them.
//! - a version is deleted once no backup's seq lies in its range (garbage
//!   collection after expire); other backups' rows are never touched.

use rusqlite::{params, OptionalExtension, Transaction};

use rusqlite::Connection;

use super::file_from_row;
use crate::catalog::{ChunkLoc, FileRow};
use crate::error::{Error, Result, SqlContext};
use crate::format::ChunkId;

pub(super) const VERSION_COLS: &str = "path, kind, size, mtime, mode, uid, gid, link, blockmap";

/// A backup's place: its cluster and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub(super) cluster: i64,
    pub(super) seq: i64,
}

/// The difference between a backup's manifest and its predecessor's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ManifestDelta {
    /// Rows that are new or differ, ordered by path.
    pub changed: Vec<FileRow>,
    /// Paths the predecessor had that the backup has not, ordered.
    pub removed: Vec<String>,
}

/// Where a backup sits in its cluster's sequence.
fn position(tx: &rusqlite::Connection, backup_id: &str) -> Result<(i64, i64)> {
    tx.query_row(
        "SELECT cluster_id, seq FROM backup WHERE id = ?1",
        [backup_id],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
    )
    .optional()
    .ctx_with(|| format!("the position of backup {backup_id}"))?
    .and_then(|(c, s)| s.map(|s| (c, s)))
    .ok_or_else(|| Error::NotFound(format!("backup {backup_id} (no sequence number)")))
}

/// The next seq of a cluster, taken.
pub(super) fn next_seq(tx: &rusqlite::Connection, cluster_id: i64) -> Result<i64> {
    tx.query_row(
        "UPDATE cluster SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
        [cluster_id],
        |r| r.get(0),
    )
    .ctx("allocate a backup sequence number")
}

/// Write manifest rows of `backup_id` as versions, and the block-map →
/// chunk relation, inside `tx`.
pub(crate) fn write_files(
    tx: &Transaction<'_>,
    backup_id: &str,
    files: &[FileRow],
    blockmap_chunks: &[(ChunkId, Vec<ChunkId>)],
) -> Result<()> {
    let (cluster, seq) = position(tx, backup_id)?;
    let mut newest = tx
        .prepare_cached(&format!(
            "SELECT first_seq, last_seq, {VERSION_COLS} FROM file_version \
             WHERE cluster_id = ?1 AND path = ?2 ORDER BY first_seq DESC LIMIT 1"
        ))
        .ctx("read file versions")?;
    let mut extend = tx
        .prepare_cached(
            "UPDATE file_version SET last_seq = ?4 \
             WHERE cluster_id = ?1 AND path = ?2 AND first_seq = ?3",
        )
        .ctx("extend file version")?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO file_version (cluster_id, path, first_seq, last_seq, kind, size, mtime, \
             mode, uid, gid, link, blockmap) VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .ctx("insert file version")?;
    for f in files {
        let ctx = |e| Error::Catalog {
            context: format!("backup {backup_id}: file {}", f.path),
            source: e,
        };
        let prior = newest
            .query_row(params![cluster, f.path], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    file_from_row_at(r, 2)?,
                ))
            })
            .optional()
            .map_err(ctx)?;
        match prior {
            Some((first, last, row)) if last == seq - 1 && row == *f => {
                extend
                    .execute(params![cluster, f.path, first, seq])
                    .map_err(ctx)?;
            }
            _ => {
                insert
                    .execute(params![
                        cluster,
                        f.path,
                        seq,
                        f.kind,
                        f.size as i64,
                        f.mtime_ns,
                        f.mode,
                        f.uid,
                        f.gid,
                        f.link,
                        f.blockmap
                    ])
                    .map_err(ctx)?;
            }
        }
    }
    let mut bc = tx
        .prepare_cached("INSERT OR IGNORE INTO blockmap_chunk (blockmap, chunk) VALUES (?1, ?2)")
        .ctx("insert blockmap chunks")?;
    for (bm, chunks) in blockmap_chunks {
        for c in chunks {
            bc.execute(params![bm, c]).ctx("insert blockmap chunk")?;
        }
    }
    Ok(())
}

pub(super) fn file_from_row_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        path: r.get(first)?,
        kind: r.get(first + 1)?,
        size: super::sql::u64_of(r.get(first + 2)?),
        mtime_ns: r.get(first + 3)?,
        mode: r.get(first + 4)?,
        uid: r.get(first + 5)?,
        gid: r.get(first + 6)?,
        link: r.get(first + 7)?,
        blockmap: r.get(first + 8)?,
    })
}

/// Rebuilding a backup (seq `seq`) from a delta against `prev`: extend the
/// versions of `prev` the delta does not name. `prev` must be the cluster's
/// backup just before (`seq - 1`), or its rows are unknown.
pub(super) fn carry_over(
    tx: &rusqlite::Connection,
    cluster_id: i64,
    prev: &str,
    seq: i64,
    delta: &ManifestDelta,
) -> Result<()> {
    match position(tx, prev) {
        Ok((c, s)) if c == cluster_id && s == seq - 1 => {}
        _ => {
            return Err(Error::NotFound(format!(
                "its manifest copy lists changes since backup {prev}, which was not rebuilt \
                 just before it"
            )))
        }
    }
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS delta_path (path TEXT PRIMARY KEY) WITHOUT ROWID;
         DELETE FROM delta_path;",
    )
    .ctx("rebuild a manifest")?;
    let mut st = tx
        .prepare_cached("INSERT OR IGNORE INTO delta_path (path) VALUES (?1)")
        .ctx("rebuild a manifest")?;
    let paths = delta.changed.iter().map(|f| &f.path).chain(&delta.removed);
    for p in paths {
        st.execute([p]).ctx("rebuild a manifest")?;
    }
    tx.execute(
        "UPDATE file_version SET last_seq = ?2 WHERE cluster_id = ?1 AND last_seq = ?2 - 1 \
         AND path NOT IN (SELECT path FROM delta_path)",
        params![cluster_id, seq],
    )
    .ctx("rebuild a manifest")?;
    Ok(())
}

/// Delete versions no backup's seq lies in, and block-map relations no
/// version uses. Inside the caller's transaction.
pub(super) fn collect(tx: &rusqlite::Connection, many: bool) -> Result<()> {
    let versions = "DELETE FROM file_version WHERE NOT EXISTS (SELECT 1 FROM backup b \
           WHERE b.cluster_id = file_version.cluster_id \
             AND b.seq BETWEEN file_version.first_seq AND file_version.last_seq)";
    if many {
        // Many versions go: their entries in the block-map index are at
        // random, so deleting from the table alone and rebuilding the index
        // (one sort, with a small cache: the sort may hold as much) is
        // cheaper.
        let cache: i64 = tx
            .pragma_query_value(None, "cache_size", |r| r.get(0))
            .ctx("collect file versions")?;
        tx.execute_batch(&format!(
            "DROP INDEX file_version_blockmap;
             {versions};
             PRAGMA cache_size = {};
             {};
             PRAGMA cache_size = {cache};",
            super::SORT_CACHE,
            super::schema::FILE_VERSION_BLOCKMAP_INDEX
        ))
        .ctx("collect file versions")?;
    } else {
        tx.execute(versions, []).ctx("collect file versions")?;
    }
    // In key order, each probing the block-map index in the same order.
    tx.execute(
        "DELETE FROM blockmap_chunk WHERE NOT EXISTS \
           (SELECT 1 FROM file_version v WHERE v.blockmap = blockmap_chunk.blockmap)",
        [],
    )
    .ctx("collect block maps")?;
    Ok(())
}

/// Manifests: the file rows of backups, stored as versions.
pub struct Versions<'a> {
    pub(super) conn: &'a Connection,
}

impl Versions<'_> {
    /// The complete backup of the same cluster just before `backup_id` in
    /// sequence, if any: what its manifest copy is a delta against.
    pub fn predecessor(&self, backup_id: &str) -> Result<Option<String>> {
        let (cluster, seq) = position(self.conn, backup_id)?;
        self.conn
            .query_row(
                "SELECT id FROM backup WHERE cluster_id = ?1 AND seq < ?2 AND status = 'complete' \
                 ORDER BY seq DESC LIMIT 1",
                params![cluster, seq],
                |r| r.get(0),
            )
            .optional()
            .ctx_with(|| format!("the predecessor of backup {backup_id}"))
    }

    /// What changed from `prev` (of the same cluster, earlier in sequence)
    /// to `backup_id`; with no `prev`, every row is changed.
    #[cfg(test)]
    pub fn delta(&self, backup_id: &str, prev: Option<&str>) -> Result<ManifestDelta> {
        let mut changed = Vec::new();
        self.for_each_changed(backup_id, prev, &mut |r| {
            changed.push(r);
            Ok(())
        })?;
        let removed = self.removed_since(backup_id, prev)?;
        Ok(ManifestDelta { changed, removed })
    }

    /// Sequence numbers of a backup, its cluster, and of `prev` (0: none).
    fn delta_span(&self, backup_id: &str, prev: Option<&str>) -> Result<(i64, i64, i64)> {
        let (cluster, seq) = position(self.conn, backup_id)?;
        let pseq = match prev {
            Some(p) => {
                let (pc, ps) = position(self.conn, p)?;
                if pc != cluster || ps >= seq {
                    return Err(Error::internal(format!(
                        "backup {p} does not precede backup {backup_id}"
                    )));
                }
                ps
            }
            None => 0,
        };
        Ok((cluster, pseq, seq))
    }

    /// The changed rows of `delta`, handed to `each` in path
    /// order one at a time.
    pub fn for_each_changed(
        &self,
        backup_id: &str,
        prev: Option<&str>,
        each: &mut dyn FnMut(FileRow) -> Result<()>,
    ) -> Result<()> {
        let (cluster, pseq, seq) = self.delta_span(backup_id, prev)?;
        let what = format!("the manifest delta of backup {backup_id}");
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {VERSION_COLS} FROM file_version WHERE cluster_id = ?1 \
                 AND first_seq > ?2 AND first_seq <= ?3 AND last_seq >= ?3 ORDER BY path"
            ))
            .ctx(&what)?;
        let mut rows = st.query(params![cluster, pseq, seq]).ctx(&what)?;
        while let Some(r) = rows.next().ctx(&what)? {
            each(file_from_row(r).ctx(&what)?)?;
        }
        Ok(())
    }

    /// The removed paths of `delta`.
    pub fn removed_since(&self, backup_id: &str, prev: Option<&str>) -> Result<Vec<String>> {
        let (cluster, pseq, seq) = self.delta_span(backup_id, prev)?;
        let what = format!("the manifest delta of backup {backup_id}");
        let mut st = self
            .conn
            .prepare(
                "SELECT v.path FROM file_version v WHERE v.cluster_id = ?1 \
                 AND v.first_seq <= ?2 AND v.last_seq >= ?2 AND v.last_seq < ?3 \
                 AND NOT EXISTS (SELECT 1 FROM file_version w WHERE w.cluster_id = v.cluster_id \
                   AND w.path = v.path AND w.first_seq <= ?3 AND w.last_seq >= ?3) \
                 ORDER BY v.path",
            )
            .ctx(&what)?;
        let removed = st
            .query_map(params![cluster, pseq, seq], |r| r.get(0))
            .ctx(&what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(&what)?;
        Ok(removed)
    }

    /// Complete backups whose manifest copy is a delta against a backup
    /// that is no longer their predecessor (it expired): (cluster name,
    /// backup, new predecessor to rewrite the copy against).
    pub fn stale_copies(&self) -> Result<Vec<(String, String, Option<String>)>> {
        let what = "manifest copies";
        let mut st = self
            .conn
            .prepare(
                "SELECT name, id, pred FROM (SELECT c.name, b.id, b.copy_prev, (SELECT p.id \
                   FROM backup p WHERE p.cluster_id = b.cluster_id AND p.seq < b.seq \
                     AND p.status = 'complete' ORDER BY p.seq DESC LIMIT 1) AS pred \
                   FROM backup b JOIN cluster c ON c.id = b.cluster_id \
                  WHERE b.status = 'complete' AND b.copy_prev IS NOT NULL) \
                 WHERE copy_prev IS NOT pred ORDER BY id",
            )
            .ctx(what)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ctx(what)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(what)?;
        Ok(rows)
    }

    /// Record what the manifest copy of `backup_id` is a delta against.
    pub fn set_copy_prev(&self, backup_id: &str, prev: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE backup SET copy_prev = ?2 WHERE id = ?1",
                params![backup_id, prev],
            )
            .ctx_with(|| format!("the manifest copy of backup {backup_id}"))?;
        Ok(())
    }

    /// Where a backup sits in its cluster's sequence, for the lookups below.
    pub fn position(&self, backup_id: &str) -> Result<Position> {
        let (cluster, seq) = position(self.conn, backup_id)?;
        Ok(Position { cluster, seq })
    }

    /// One path's row in the manifest of the backup at `at`. (Queried on
    /// the versions, not the `file` view: a join on a seq range is planned
    /// again at each execution, five times slower.)
    pub fn file_row(&self, at: Position, path: &str) -> Result<Option<FileRow>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM file_version WHERE cluster_id = ?1 AND path = ?2 \
                 AND first_seq <= ?3 AND last_seq >= ?3"
            ))
            .and_then(|mut st| {
                st.query_row(params![at.cluster, path, at.seq], file_from_row)
                    .optional()
            })
            .ctx_with(|| format!("the manifest row of {path}"))
    }

    /// The block map of one path in the backup at `at`, with where it is
    /// stored.
    pub fn blockmap_at(&self, at: Position, path: &str) -> Result<Option<(ChunkId, ChunkLoc)>> {
        self.conn
            .prepare_cached(
                "SELECT c.id, c.pack_id, c.offset, c.stored_len, c.raw_len \
                 FROM file_version v JOIN chunk c ON c.id = v.blockmap \
                 WHERE v.cluster_id = ?1 AND v.path = ?2 AND v.first_seq <= ?3 \
                   AND v.last_seq >= ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![at.cluster, path, at.seq], |r| {
                    Ok((r.get(0)?, super::loc_from_row(r, 1)?))
                })
                .optional()
            })
            .ctx_with(|| format!("the block map of {path}"))
    }

    /// Regular files in a backup's manifest.
    pub fn file_count(&self, backup_id: &str) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM file WHERE backup_id = ?1 AND kind = 'f'",
                [backup_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .ctx_with(|| format!("the files of backup {backup_id}"))
    }

    /// Every version of a file with bytes but no block map (a file that
    /// cannot be restored) used by a backup in `scope` (ids of one cluster's
    /// backups), once, with one backup that uses it; in path order. The
    /// filter is in SQL: a healthy catalog returns no row at all.
    pub fn for_each_unrestorable_in(
        &self,
        cluster_id: i64,
        scope: &[String],
        mut each: impl FnMut(&str, FileRow) -> Result<()>,
    ) -> Result<()> {
        let mut seqs: Vec<(i64, String)> = Vec::with_capacity(scope.len());
        for id in scope {
            let (c, s) = position(self.conn, id)?;
            if c == cluster_id {
                seqs.push((s, id.clone()));
            }
        }
        seqs.sort();
        let what = "the file versions of the backups checked";
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT first_seq, last_seq, {VERSION_COLS} FROM file_version \
                 WHERE cluster_id = ?1 AND blockmap IS NULL AND kind = 'f' AND size > 0 \
                 ORDER BY path, first_seq"
            ))
            .ctx(what)?;
        let mut rows = st.query([cluster_id]).ctx(what)?;
        while let Some(r) = rows.next().ctx(what)? {
            let (first, last): (i64, i64) = (r.get(0).ctx(what)?, r.get(1).ctx(what)?);
            let i = seqs.partition_point(|(s, _)| *s < first);
            if let Some((s, id)) = seqs.get(i) {
                if *s <= last {
                    each(id, file_from_row_at(r, 2).ctx(what)?)?;
                }
            }
        }
        Ok(())
    }

    /// Insert manifest entries and the block-map → chunk relation, in one
    /// transaction.
    pub fn insert_files(
        &self,
        backup_id: &str,
        files: &[FileRow],
        blockmap_chunks: &[(ChunkId, Vec<ChunkId>)],
    ) -> Result<()> {
        let tx = self.conn.unchecked_transaction().ctx("insert files")?;
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
}

#[cfg(test)]
mod tests {
    use super::super::{schema::MIGRATIONS, Catalog};
    use crate::repo::testkit::{content, Fixture};

    /// A catalog of schema 4 (a row per file per backup) becomes versions,
    /// every backup reading the rows it had.
    #[test]
    fn schema_4_rows_migrate_to_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..4] {
                db.execute_batch(m).unwrap();
            }
            db.pragma_update(None, "user_version", 4).unwrap();
            db.execute_batch(
                "INSERT INTO cluster (id, name, system_id, pg_version, created_at) VALUES \
                   (1, 'main', '7', 15, 0), (2, 'other', '8', 15, 0);
                 INSERT INTO backup (id, cluster_id, type, status, start_time, start_lsn, \
                   timeline, pg_version, block_size, wal_seg_size, data_checksums) VALUES \
                   ('B1', 1, 'full', 'complete', 1, 0, 1, 15, 8192, 16777216, 1), \
                   ('B2', 1, 'incr', 'complete', 2, 0, 1, 15, 8192, 16777216, 1), \
                   ('O1', 2, 'full', 'complete', 1, 0, 1, 15, 8192, 16777216, 1);
                 INSERT INTO file (backup_id, path, kind, size, mtime, mode, uid, gid) VALUES \
                   ('B1', 'x', 'f', 1, 1, 384, 0, 0), ('B1', 'y', 'f', 2, 1, 384, 0, 0), \
                   ('B2', 'x', 'f', 1, 1, 384, 0, 0), ('O1', 'x', 'f', 9, 1, 384, 0, 0);",
            )
            .unwrap();
        }
        let cat = Catalog::open(&path, false).unwrap();
        let rows = |id: &str| -> Vec<(String, u64)> {
            cat.versions()
                .files(id)
                .unwrap()
                .into_iter()
                .map(|f| (f.path, f.size))
                .collect()
        };
        assert_eq!(rows("B1"), [("x".into(), 1), ("y".into(), 2)]);
        assert_eq!(rows("B2"), [("x".into(), 1)]);
        assert_eq!(rows("O1"), [("x".into(), 9)]);
        assert_eq!(
            cat.versions().predecessor("B2").unwrap().as_deref(),
            Some("B1")
        );
        // The sequence continues after the migrated backups.
        let seq: i64 = cat
            .conn
            .query_row("SELECT last_seq FROM cluster WHERE id = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(seq, 2);
    }

    fn versions(f: &Fixture) -> i64 {
        let cat = f.repo.catalog().unwrap();
        cat.conn
            .query_row("SELECT COUNT(*) FROM file_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn unchanged_files_share_one_version_and_each_backup_reads_its_own() {
        let f = Fixture::new();
        let a = f.backup(1, &[("x", content(1, 3, 0)), ("y", content(2, 1, 0))]);
        let n1 = versions(&f);
        // x unchanged, y changed, z new.
        let b = f.backup(
            2,
            &[
                ("x", content(1, 3, 0)),
                ("y", content(3, 1, 0)),
                ("z", content(4, 1, 0)),
            ],
        );
        let n2 = versions(&f);
        // y removed.
        let c = f.backup(3, &[("x", content(1, 3, 0)), ("z", content(4, 1, 0))]);
        let n3 = versions(&f);
        let cat = f.repo.catalog().unwrap();
        let paths = |id: &str| -> Vec<String> {
            cat.versions()
                .files(id)
                .unwrap()
                .into_iter()
                .map(|r| r.path)
                .collect()
        };
        assert_eq!(paths(&a.id), [".", "x", "y"]);
        assert_eq!(paths(&b.id), [".", "x", "y", "z"]);
        assert_eq!(paths(&c.id), [".", "x", "z"]);
        // b added versions only for y and z (and "." whose mtime moves).
        assert!(n2 - n1 <= 3, "{n1} -> {n2}");
        assert!(n3 - n2 <= 1, "{n2} -> {n3}");
        // The deltas name exactly what changed.
        let d = cat.versions().delta(&b.id, Some(&a.id)).unwrap();
        let changed: Vec<&str> = d.changed.iter().map(|r| r.path.as_str()).collect();
        assert!(changed.contains(&"y") && changed.contains(&"z") && !changed.contains(&"x"));
        assert!(d.removed.is_empty());
        let d = cat.versions().delta(&c.id, Some(&b.id)).unwrap();
        assert_eq!(d.removed, ["y"]);
        assert!(!d.changed.iter().any(|r| r.path == "x" || r.path == "z"));
        let whole = cat.versions().delta(&c.id, None).unwrap();
        assert_eq!(whole.changed.len(), 3);
        assert_eq!(
            cat.versions().predecessor(&c.id).unwrap().as_deref(),
            Some(&*b.id)
        );
        assert_eq!(cat.versions().predecessor(&a.id).unwrap(), None);
        drop(cat);

        // Expiring the middle backup keeps the others' rows exactly.
        let (fa, fc) = {
            let cat = f.repo.catalog().unwrap();
            (
                cat.versions().files(&a.id).unwrap(),
                cat.versions().files(&c.id).unwrap(),
            )
        };
        let cat = f.repo.catalog().unwrap();
        cat.backups().expire(std::slice::from_ref(&b.id)).unwrap();
        assert_eq!(cat.versions().files(&a.id).unwrap(), fa);
        assert_eq!(cat.versions().files(&c.id).unwrap(), fc);
        assert_eq!(
            cat.versions().predecessor(&c.id).unwrap().as_deref(),
            Some(&*a.id)
        );
        drop(cat);
        // b's own y and the z version b opened survive only as c uses them.
        assert!(versions(&f) < n3, "nothing collected");
    }
}
