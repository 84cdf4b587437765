//! Reading one backup's manifest as a stream, and read-only connections
//! for worker threads.
//!
//! Commands that go through a whole manifest (restore) read it a row at a
//! time from a cursor, so their memory does not grow with the number of
//! files. Workers look chunks up on read-only connections of their own
//! (WAL mode: readers see committed rows and never block the writer).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::params;

use super::versions::{file_from_row_at, VERSION_COLS};
use super::{loc_from_row, Catalog, ChunkLoc, FileRow, Position};
use crate::error::{Error, Result, SqlContext};

/// The order of [`Catalog::for_each_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOrder {
    Path,
    /// By where each file's block map is stored (pack, offset): reading
    /// them in this order shares reads. Files without one come first.
    BlockMap,
}

impl Catalog {
    /// Every row of a backup's manifest, in path order.
    pub fn for_each_row(
        &self,
        backup_id: &str,
        mut each: impl FnMut(FileRow) -> Result<()>,
    ) -> Result<()> {
        let at = self.position(backup_id)?;
        let what = &format!("a file row of backup {backup_id}");
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {VERSION_COLS} FROM file_version WHERE cluster_id = ?1 \
                 AND first_seq <= ?2 AND last_seq >= ?2 ORDER BY path"
            ))
            .ctx(what)?;
        let mut rows = st.query(params![at.cluster, at.seq]).ctx(what)?;
        while let Some(r) = rows.next().ctx(what)? {
            each(file_from_row_at(r, 0).ctx(what)?)?;
        }
        Ok(())
    }

    /// The regular files of a backup, each with where its block map is
    /// stored (`None`: no block map, or one the chunk index lacks).
    pub fn for_each_file(
        &self,
        backup_id: &str,
        order: FileOrder,
        mut each: impl FnMut(FileRow, Option<ChunkLoc>) -> Result<()>,
    ) -> Result<()> {
        let at = self.position(backup_id)?;
        let what = &format!("a file row of backup {backup_id}");
        let order_by = match order {
            FileOrder::Path => "v.path",
            FileOrder::BlockMap => "c.pack_id, c.offset",
        };
        let cols = VERSION_COLS
            .split(", ")
            .map(|c| format!("v.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {cols}, c.pack_id, c.offset, c.stored_len, c.raw_len \
                 FROM file_version v LEFT JOIN chunk c ON c.id = v.blockmap \
                 WHERE v.cluster_id = ?1 AND v.first_seq <= ?2 AND v.last_seq >= ?2 \
                   AND v.kind = 'f' ORDER BY {order_by}"
            ))
            .ctx(what)?;
        let mut rows = st.query(params![at.cluster, at.seq]).ctx(what)?;
        while let Some(r) = rows.next().ctx(what)? {
            let f = file_from_row_at(r, 0).ctx(what)?;
            let loc =
                match r.get_ref(9).ctx(what)? {
                    rusqlite::types::ValueRef::Null => None,
                    _ => Some(loc_from_row(r, 9).ctx_with(|| {
                        format!("the chunk index row of the block map of {}", f.path)
                    })?),
                };
            each(f, loc)?;
        }
        Ok(())
    }

    /// Whether the backup at `at` has `path`.
    pub fn has_path(&self, at: Position, path: &str) -> Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT 1 FROM file_version WHERE cluster_id = ?1 AND path = ?2 \
                 AND first_seq <= ?3 AND last_seq >= ?3",
            )
            .and_then(|mut st| st.exists(params![at.cluster, path, at.seq]))
            .ctx_with(|| format!("the manifest row of {path}"))
    }
}

/// A read-only catalog connection per worker thread (and one shared by
/// other threads), each behind a lock only its own thread normally takes.
pub struct Readers {
    readers: Vec<Mutex<Catalog>>,
}

impl Readers {
    pub fn open(catalog: &Path, workers: usize) -> Result<Self> {
        let readers = (0..=workers)
            .map(|_| Catalog::open_reader(catalog).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Readers { readers })
    }

    /// Cap each connection's page cache (SQLite's default is 2 MiB), for
    /// readers that only walk index ranges in order.
    pub fn set_cache_mib(&self, mib: u32) -> Result<()> {
        self.readers
            .iter()
            .try_for_each(|r| lock(r)?.set_cache_mib(mib))
    }

    /// This thread's connection: rayon workers 0..workers have their own;
    /// other threads share the last.
    pub fn get(&self) -> Result<MutexGuard<'_, Catalog>> {
        let last = self.readers.len() - 1;
        let i = rayon::current_thread_index().unwrap_or(last).min(last);
        lock(&self.readers[i])
    }
}

fn lock(reader: &Mutex<Catalog>) -> Result<MutexGuard<'_, Catalog>> {
    reader
        .lock()
        .map_err(|_| Error::internal("a catalog reader's lock is poisoned"))
}
