//! Catalog queries for expire and garbage collection.
//!
//! Liveness is global: a chunk is live when any kept backup of any cluster
//! uses it (directly as a block map, or through a block map), because chunks
//! are deduplicated across backups and clusters.

use std::collections::HashSet;

use rusqlite::params;

use super::Catalog;
use crate::error::{Result, SqlContext};
use crate::format::pack::RecordHeader;
use crate::format::{ChunkId, PackId};
use crate::store::SealedPack;
use crate::util::now_us;

/// One pack's share of live data.
#[derive(Clone, Debug)]
pub struct PackUsage {
    pub id: PackId,
    pub size: u64,
    pub chunks: u64,
    pub live_chunks: u64,
    /// Record bytes (header + payload) of live chunks.
    pub live_bytes: u64,
    /// Record bytes of all its chunks.
    pub record_bytes: u64,
}

/// A chunk row, with whether it is live.
#[derive(Clone, Debug)]
pub struct PackChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub live: bool,
}

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

/// The catalog's size before and after [`Catalog::compact`], in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    pub before: u64,
    pub after: u64,
}

/// `expire` compacts the catalog when at least this share of its pages is
/// free: SQLite reuses free pages but never returns them, so without it the
/// file keeps the size of the largest repository it ever described.
pub const COMPACT_FREE_SHARE: f64 = 0.25;

/// ... and at least this many bytes are free (not worth a rewrite below).
const COMPACT_MIN_FREE: u64 = 4 << 20;

impl Catalog {
    /// Fill the temporary `live` table with every chunk the backups other than
    /// `expired` use. The kept backups' positions go into a table of their
    /// own, so each file version is one index probe, however many expired
    /// backups it spans.
    fn mark_live(&self, expired: &[String]) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS gone (id TEXT PRIMARY KEY);
                 CREATE TEMP TABLE IF NOT EXISTS kept_seq (cluster_id INTEGER NOT NULL,
                     seq INTEGER NOT NULL, PRIMARY KEY (cluster_id, seq)) WITHOUT ROWID;
                 CREATE TEMP TABLE IF NOT EXISTS live (id BLOB PRIMARY KEY) WITHOUT ROWID;
                 DELETE FROM gone; DELETE FROM kept_seq; DELETE FROM live;",
            )
            .ctx("gc temp tables")?;
        {
            let mut st = self
                .conn
                .prepare("INSERT OR IGNORE INTO gone (id) VALUES (?1)")
                .ctx("gc")?;
            for id in expired {
                st.execute([id]).ctx("gc")?;
            }
        }
        self.conn
            .execute_batch(
                "INSERT INTO kept_seq SELECT cluster_id, seq FROM backup
                   WHERE seq IS NOT NULL AND id NOT IN (SELECT id FROM gone);
                 INSERT OR IGNORE INTO live (id)
                   SELECT v.blockmap FROM file_version v
                    WHERE v.blockmap IS NOT NULL AND EXISTS (SELECT 1 FROM kept_seq k
                      WHERE k.cluster_id = v.cluster_id AND k.seq BETWEEN v.first_seq AND v.last_seq);
                 INSERT OR IGNORE INTO live (id)
                   SELECT bc.chunk FROM blockmap_chunk bc JOIN live l ON l.id = bc.blockmap;",
            )
            .ctx("gc mark live")?;
        Ok(())
    }

    /// Work out again which chunks are live (for `pack_liveness`), after
    /// backups are gone.
    pub fn mark_live_now(&self) -> Result<()> {
        self.mark_live(&[])
    }

    /// Per pack: size and how much of it the kept backups still use.
    ///
    /// One pass over the chunk index in key order, each row looked up in
    /// `live` (also in key order), summed per pack here: grouping in SQL
    /// went pack by pack, a random lookup per chunk.
    pub fn pack_usage(&self, expired: &[String]) -> Result<Vec<PackUsage>> {
        self.mark_live(expired)?;
        const RECORD_HEADER: u64 = RecordHeader::LEN as u64;
        let mut usage: std::collections::HashMap<String, PackUsage> = Default::default();
        {
            let mut st = self
                .conn
                .prepare("SELECT id, size, chunks FROM pack")
                .ctx("pack usage")?;
            let mut rows = st.query([]).ctx("pack usage")?;
            while let Some(r) = rows.next().ctx("pack usage")? {
                let row = (|| -> rusqlite::Result<(String, PackUsage)> {
                    Ok((
                        r.get(0)?,
                        PackUsage {
                            id: r.get(0)?,
                            size: r.get::<_, i64>(1)? as u64,
                            chunks: r.get::<_, i64>(2)? as u64,
                            live_chunks: 0,
                            live_bytes: 0,
                            record_bytes: 0,
                        },
                    ))
                })();
                let (key, u) = row.ctx("a pack row")?;
                usage.insert(key, u);
            }
        }
        let mut st = self
            .conn
            .prepare(
                // In key order: otherwise SQLite walks `chunk_pack` and
                // looks every row up (9× slower at 550,000 chunks).
                "SELECT c.pack_id, c.stored_len, l.id IS NOT NULL
                   FROM chunk c LEFT JOIN live l ON l.id = c.id ORDER BY c.id",
            )
            .ctx("pack usage")?;
        let mut rows = st.query([]).ctx("pack usage")?;
        while let Some(r) = rows.next().ctx("pack usage")? {
            let row = (|| -> rusqlite::Result<()> {
                let (stored, live): (u64, bool) = (r.get::<_, i64>(1)? as u64, r.get(2)?);
                let pack = r.get_ref(0)?.as_str().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
                // A chunk row whose pack row is gone is verify's to report.
                if let Some(u) = usage.get_mut(pack) {
                    u.record_bytes += stored + RECORD_HEADER;
                    if live {
                        u.live_chunks += 1;
                        u.live_bytes += stored + RECORD_HEADER;
                    }
                }
                Ok(())
            })();
            row.ctx("a chunk row")?;
        }
        let mut out: Vec<PackUsage> = usage.into_values().collect();
        out.sort_by_key(|u| u.id);
        Ok(out)
    }

    /// The chunk rows of one pack, marked live or not (after `pack_usage`).
    pub fn pack_liveness(&self, pack_id: &PackId) -> Result<Vec<PackChunk>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT c.id, c.offset, c.stored_len, c.raw_len, l.id IS NOT NULL
                   FROM chunk c LEFT JOIN live l ON l.id = c.id
                  WHERE c.pack_id = ?1 ORDER BY c.offset",
            )
            .ctx("pack chunks")?;
        let mut out = Vec::new();
        let mut rows = st.query([pack_id]).ctx("pack chunks")?;
        while let Some(r) = rows.next().ctx("pack chunks")? {
            let row = (|| -> rusqlite::Result<PackChunk> {
                Ok(PackChunk {
                    id: r.get(0)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    stored_len: r.get(2)?,
                    raw_len: r.get(3)?,
                    live: r.get(4)?,
                })
            })();
            out.push(row.ctx_with(|| format!("a chunk index row of pack {pack_id}"))?);
        }
        Ok(out)
    }

    /// Ids of every pack the catalog knows.
    pub fn pack_ids(&self) -> Result<HashSet<PackId>> {
        let mut st = self.conn.prepare("SELECT id FROM pack").ctx("pack ids")?;
        let rows = st
            .query_map([], |r| r.get::<_, PackId>(0))
            .ctx("pack ids")?
            .collect::<rusqlite::Result<HashSet<_>>>()
            .ctx("a pack row")?;
        Ok(rows)
    }

    /// Whether a pack row names `id` now (checked right before its object is
    /// deleted: a rerun of a killed expire can index a pack under the very
    /// name an earlier listing found unknown).
    pub fn has_pack(&self, id: &PackId) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pack WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )
            .ctx_with(|| format!("pack {id}"))
    }

    /// Delete backups and the derived rows only they used, in one transaction.
    pub fn expire_backups(&mut self, ids: &[String]) -> Result<()> {
        let tx = self.conn.transaction().ctx("expire backups")?;
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

    /// For each `(old, new)`: point the live chunks of the `old` packs at
    /// their copies in `new` and forget the old packs; and forget the packs
    /// `dead` with all their chunks (none live). One transaction: the rows
    /// moved and deleted are spread over the whole chunk index, and each
    /// transaction writes every page it touched once more. Each `new` is
    /// already sealed and durable, and holds every live chunk of its `old`.
    pub fn replace_packs(
        &mut self,
        moves: &[(Vec<PackId>, SealedPack)],
        dead: &[PackId],
    ) -> Result<()> {
        let what = "rewrite packs";
        let tx = self.conn.transaction().ctx(what)?;
        let old = moves.iter().flat_map(|(old, _)| old);
        let rebuild = mark_forgotten(&tx, old.chain(dead))?;
        if rebuild {
            tx.execute_batch("DROP INDEX chunk_pack").ctx(what)?;
        }
        for (_, new) in moves {
            tx.execute(
                "INSERT INTO pack (id, size, chunks, backup_id, created_at) VALUES (?1, ?2, ?3, NULL, ?4)",
                params![new.id, new.size as i64, new.entries.len() as i64, now_us()],
            )
            .ctx(what)?;
            // In key order: neighbouring rows share pages.
            let mut entries: Vec<&crate::format::pack::TrailerEntry> = new.entries.iter().collect();
            entries.sort_unstable_by_key(|e| e.id);
            let mut st = tx
                .prepare_cached("UPDATE chunk SET pack_id = ?2, offset = ?3 WHERE id = ?1")
                .ctx(what)?;
            for e in entries {
                st.execute(params![e.id, new.id, e.offset as i64])
                    .ctx(what)?;
            }
        }
        // The chunk rows to delete are spread over the whole table. In key
        // order, each table page is visited once, but their entries in the
        // pack index are at random; when they are many, deleting them from
        // the table alone and rebuilding the index (one sort) is cheaper.
        let delete = if rebuild {
            // The sort that builds the index may hold as much as the page
            // cache: a small one for it keeps expire's memory where it was.
            let cache: i64 = tx
                .pragma_query_value(None, "cache_size", |r| r.get(0))
                .ctx(what)?;
            format!(
                "DELETE FROM chunk WHERE pack_id IN (SELECT id FROM temp.forget);
                 PRAGMA cache_size = {};
                 {};
                 PRAGMA cache_size = {cache};",
                super::SORT_CACHE,
                super::schema::CHUNK_PACK_INDEX
            )
        } else {
            "DELETE FROM chunk WHERE id IN (SELECT c.id FROM temp.forget f
                 JOIN chunk c ON c.pack_id = f.id ORDER BY c.id);"
                .to_string()
        };
        tx.execute_batch(&format!(
            "{delete}
             DELETE FROM pack WHERE id IN (SELECT id FROM temp.forget);
             DROP TABLE temp.forget;"
        ))
        .ctx(what)?;
        tx.commit().ctx(what)
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

    pub fn log_expire(&self, log: &ExpireLog) -> Result<()> {
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

    pub fn last_expire(&self) -> Result<Option<ExpireLog>> {
        use rusqlite::OptionalExtension;
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

    /// Backups stuck in `running`: with the repository lock held, nothing is
    /// running, so these are leftovers of killed backups.
    pub fn running_backups(&self) -> Result<Vec<String>> {
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
}

/// Put the packs `ids` in the temporary table `forget`; whether their
/// chunk rows are a large share of the index (a quarter or more, by the
/// packs' record counts).
fn mark_forgotten<'a>(
    tx: &rusqlite::Transaction<'_>,
    ids: impl Iterator<Item = &'a PackId>,
) -> Result<bool> {
    let what = "forget packs";
    tx.execute_batch(
        "DROP TABLE IF EXISTS temp.forget;
         CREATE TEMP TABLE forget (id TEXT PRIMARY KEY) WITHOUT ROWID;",
    )
    .ctx(what)?;
    {
        let mut st = tx
            .prepare_cached("INSERT OR IGNORE INTO temp.forget VALUES (?1)")
            .ctx(what)?;
        for id in ids {
            st.execute([id]).ctx(what)?;
        }
    }
    let (going, all): (i64, i64) = tx
        .query_row(
            "SELECT (SELECT COALESCE(SUM(chunks), 0) FROM pack
                      WHERE id IN (SELECT id FROM temp.forget)),
                    (SELECT COALESCE(SUM(chunks), 0) FROM pack)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ctx(what)?;
    Ok(going > 0 && going * 4 >= all)
}

#[cfg(test)]
mod tests {
    use crate::repo::testkit::{content, Fixture};

    /// Chunks shared by backups stay live until the last user goes.
    #[test]
    fn liveness_follows_the_kept_backups() {
        let f = Fixture::new();
        let a = f.backup(1, &[("x", content(1, 2, 0)), ("y", content(2, 2, 0))]);
        let b = f.backup(2, &[("x", content(1, 2, 0)), ("z", content(3, 2, 0))]);
        let mut cat = f.repo.catalog().unwrap();
        let usage = |cat: &crate::catalog::Catalog, gone: &[String]| {
            let mut u: Vec<(crate::format::PackId, u64, u64)> = cat
                .pack_usage(gone)
                .unwrap()
                .into_iter()
                .map(|u| (u.id, u.chunks, u.live_chunks))
                .collect();
            u.sort();
            u
        };
        let all = usage(&cat, &[]);
        assert!(all.iter().all(|(_, n, live)| n == live), "{all:?}");
        // Without a: its pack keeps x's chunk and block map (b uses them),
        // y's are dead.
        let without_a = usage(&cat, std::slice::from_ref(&a.id));
        let pa = without_a.iter().find(|u| u.0 == a.pack).unwrap();
        assert_eq!((pa.1, pa.2), (4, 2));
        let pb = without_a.iter().find(|u| u.0 == b.pack).unwrap();
        assert_eq!((pb.1, pb.2), (2, 2));
        // The liveness of each chunk, after pack_usage.
        let live = cat.pack_liveness(&a.pack).unwrap();
        assert_eq!(live.iter().filter(|c| c.live).count(), 2);
        // Expiring a removes its rows and its block maps' relation rows.
        cat.expire_backups(std::slice::from_ref(&a.id)).unwrap();
        assert!(cat.backup(&a.id).unwrap().is_none());
        let after = usage(&cat, &[]);
        assert_eq!(after, without_a);
        // Dropping a dead-free pack forgets its chunks.
        cat.replace_packs(&[], std::slice::from_ref(&b.pack))
            .unwrap();
        assert!(!cat.pack_ids().unwrap().contains(&b.pack));
    }

    /// Forgetting a few packs deletes their rows in key order; forgetting
    /// many rebuilds the pack index. Either way the index stays whole and
    /// names exactly the rows left.
    #[test]
    fn forgetting_few_or_many_packs_keeps_the_index_whole() {
        let f = Fixture::new();
        let made: Vec<_> = (0..8)
            .map(|i: u8| f.backup(u32::from(i) + 1, &[("x", content(i + 1, 3, 0))]))
            .collect();
        let mut cat = f.repo.catalog().unwrap();
        let rows = |cat: &crate::catalog::Catalog| -> usize {
            cat.packs()
                .unwrap()
                .iter()
                .map(|(p, _)| cat.pack_chunks(p).unwrap().len())
                .sum()
        };
        let before = rows(&cat);
        for (gone, expect_rebuild) in [(&made[..1], false), (&made[1..5], true)] {
            let ids: Vec<_> = gone.iter().map(|m| m.pack).collect();
            let n: usize = ids.iter().map(|p| cat.pack_chunks(p).unwrap().len()).sum();
            assert!(n > 0);
            let left = rows(&cat) - n;
            {
                let tx = cat.conn.transaction().unwrap();
                assert_eq!(
                    super::mark_forgotten(&tx, ids.iter()).unwrap(),
                    expect_rebuild
                );
            }
            cat.replace_packs(&[], &ids).unwrap();
            assert!(cat.integrity_check().unwrap().is_empty());
            assert_eq!(rows(&cat), left);
            for p in &ids {
                assert!(cat.pack_chunks(p).unwrap().is_empty());
                assert!(!cat.pack_ids().unwrap().contains(p));
            }
            let index: i64 = cat
                .conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'chunk_pack'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(index, 1);
        }
        assert!(rows(&cat) < before);
    }

    /// Compaction gives free pages back once enough are free, keeps every
    /// row, and does nothing when little is free.
    #[test]
    fn compaction_returns_free_pages_and_keeps_the_rows() {
        let f = Fixture::new();
        let a = f.backup(1, &[("x", content(1, 2, 0))]);
        let cat = f.repo.catalog().unwrap();
        assert_eq!(cat.compact(super::COMPACT_FREE_SHARE).unwrap(), None);
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
        let c = cat.compact(super::COMPACT_FREE_SHARE).unwrap().unwrap();
        assert!(c.before >= 16 << 20, "{c:?}");
        assert!((8 << 20..10 << 20).contains(&c.after), "{c:?}");
        let kept: i64 = cat
            .conn
            .query_row("SELECT count(*) FROM kept", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2048);
        cat.checkpoint().unwrap();
        assert_eq!(size(), c.after);
        assert!(cat.backup(&a.id).unwrap().is_some());
        assert!(cat.integrity_check().unwrap().is_empty());
        assert_eq!(cat.compact(super::COMPACT_FREE_SHARE).unwrap(), None);
    }
}
