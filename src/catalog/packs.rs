//! The packs and the chunk index: where every chunk is stored, the
//! block-map relation (which data chunks each block map uses), and which
//! chunks the kept backups still use.
//!
//! Liveness is global: a chunk is live when any kept backup of any cluster
//! uses it (directly as a block map, or through a block map), because chunks
//! are deduplicated across backups and clusters.
//!
//! Durability: a pack's row and its chunks' rows are inserted in one
//! transaction, after the pack is sealed; a pack's rows go (or move to the
//! pack its live chunks were copied to) in one transaction too.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::{loc_from_row, ChunkLoc};
use crate::error::{Result, SqlContext};
use crate::format::pack::RecordHeader;
use crate::format::{ChunkId, PackId};
use crate::store::SealedPack;
use crate::util::now_us;

/// One row of the chunk index, as `verify` checks it against a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedChunk {
    pub id: ChunkId,
    pub offset: u64,
    pub stored_len: u32,
}

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

/// The packs and the chunk index (with the block-map relation).
pub struct Packs<'a> {
    pub(super) conn: &'a Connection,
}

impl Packs<'_> {
    /// Whether the chunk index has `id`.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM chunk WHERE id = ?1")
            .and_then(|mut st| st.exists([id]))
            .ctx_with(|| format!("the chunk index row of chunk {id}"))
    }

    /// Where a chunk is stored (restore looks up every data chunk here:
    /// the statement is cached, and the id formatted only for an error).
    pub fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkLoc>> {
        self.conn
            .prepare_cached("SELECT pack_id, offset, stored_len, raw_len FROM chunk WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |r| loc_from_row(r, 0)).optional())
            .ctx_with(|| format!("the chunk index row of chunk {id}"))
    }

    /// Every chunk id in the index (for deduplication while backing up).
    #[cfg(test)]
    pub fn chunk_ids(&self) -> Result<HashSet<ChunkId>> {
        let mut st = self.conn.prepare("SELECT id FROM chunk").ctx("chunk ids")?;
        let mut out = HashSet::new();
        let mut rows = st.query([]).ctx("chunk ids")?;
        while let Some(r) = rows.next().ctx("chunk ids")? {
            out.insert(r.get(0).ctx("a row of the chunk index")?);
        }
        Ok(out)
    }

    /// Record a sealed pack and index its chunks, in one transaction.
    pub fn add(&self, pack: &SealedPack, backup_id: Option<&str>) -> Result<()> {
        let tx = self.conn.unchecked_transaction().ctx("add pack")?;
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
    #[cfg(test)]
    pub fn chunk_locations(
        &self,
        backup_id: &str,
    ) -> Result<std::collections::HashMap<ChunkId, ChunkLoc>> {
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
    #[cfg(test)]
    pub fn blockmap_locations(
        &self,
        backup_id: &str,
    ) -> Result<std::collections::HashMap<ChunkId, ChunkLoc>> {
        self.locations(
            "SELECT c.id, c.pack_id, c.offset, c.stored_len, c.raw_len FROM chunk c \
             WHERE c.id IN (SELECT blockmap FROM file WHERE backup_id = ?1 AND blockmap IS NOT NULL)",
            backup_id,
        )
    }

    #[cfg(test)]
    fn locations(
        &self,
        sql: &str,
        arg: &str,
    ) -> Result<std::collections::HashMap<ChunkId, ChunkLoc>> {
        let mut out = std::collections::HashMap::new();
        let mut st = self.conn.prepare(sql).ctx("chunk locations")?;
        let mut rows = st.query([arg]).ctx("chunk locations")?;
        while let Some(r) = rows.next().ctx("chunk locations")? {
            let what = || format!("a chunk index row used by backup {arg}");
            let id: ChunkId = r.get(0).ctx(&what())?;
            out.insert(id, loc_from_row(r, 1).ctx(&what())?);
        }
        Ok(out)
    }

    pub fn bytes(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT COALESCE(SUM(size), 0) FROM pack", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .ctx("pack bytes")
    }

    /// Every sealed pack the catalog knows: id and recorded size.
    pub fn list(&self) -> Result<Vec<(PackId, u64)>> {
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
    pub fn chunks(&self, pack_id: &PackId) -> Result<Vec<IndexedChunk>> {
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
    pub fn usage(&self, expired: &[String]) -> Result<Vec<PackUsage>> {
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
    pub fn liveness(&self, pack_id: &PackId) -> Result<Vec<PackChunk>> {
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
    pub fn ids(&self) -> Result<HashSet<PackId>> {
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
    pub fn has(&self, id: &PackId) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pack WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )
            .ctx_with(|| format!("pack {id}"))
    }

    /// For each `(old, new)`: point the live chunks of the `old` packs at
    /// their copies in `new` and forget the old packs; and forget the packs
    /// `dead` with all their chunks (none live). One transaction: the rows
    /// moved and deleted are spread over the whole chunk index, and each
    /// transaction writes every page it touched once more. Each `new` is
    /// already sealed and durable, and holds every live chunk of its `old`.
    pub fn replace(&self, moves: &[(Vec<PackId>, SealedPack)], dead: &[PackId]) -> Result<()> {
        let what = "rewrite packs";
        let tx = self.conn.unchecked_transaction().ctx(what)?;
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
        let cat = f.repo.catalog().unwrap();
        let usage = |cat: &crate::catalog::Catalog, gone: &[String]| {
            let mut u: Vec<(crate::format::PackId, u64, u64)> = cat
                .packs()
                .usage(gone)
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
        let live = cat.packs().liveness(&a.pack).unwrap();
        assert_eq!(live.iter().filter(|c| c.live).count(), 2);
        // Expiring a removes its rows and its block maps' relation rows.
        cat.backups().expire(std::slice::from_ref(&a.id)).unwrap();
        assert!(cat.backups().get(&a.id).unwrap().is_none());
        let after = usage(&cat, &[]);
        assert_eq!(after, without_a);
        // Dropping a dead-free pack forgets its chunks.
        cat.packs()
            .replace(&[], std::slice::from_ref(&b.pack))
            .unwrap();
        assert!(!cat.packs().ids().unwrap().contains(&b.pack));
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
                .list()
                .unwrap()
                .iter()
                .map(|(p, _)| cat.packs().chunks(p).unwrap().len())
                .sum()
        };
        let before = rows(&cat);
        for (gone, expect_rebuild) in [(&made[..1], false), (&made[1..5], true)] {
            let ids: Vec<_> = gone.iter().map(|m| m.pack).collect();
            let n: usize = ids
                .iter()
                .map(|p| cat.packs().chunks(p).unwrap().len())
                .sum();
            assert!(n > 0);
            let left = rows(&cat) - n;
            {
                let tx = cat.conn.transaction().unwrap();
                assert_eq!(
                    super::mark_forgotten(&tx, ids.iter()).unwrap(),
                    expect_rebuild
                );
            }
            cat.packs().replace(&[], &ids).unwrap();
            assert!(cat.integrity_check().unwrap().is_empty());
            assert_eq!(rows(&cat), left);
            for p in &ids {
                assert!(cat.packs().chunks(p).unwrap().is_empty());
                assert!(!cat.packs().ids().unwrap().contains(p));
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
}
