//! Reading one backup's manifest as a stream, the shape of manifests as
//! stored (for `verify`), and read-only connections for worker threads.
//!
//! Commands that go through a whole manifest (restore) read it a row at a
//! time from a cursor, so their memory does not grow with the number of
//! files. Workers look chunks up on read-only connections of their own
//! (WAL mode: readers see committed rows and never block the writer).
//!
//! The shape queries hand out paths as stored, even when they are not
//! valid text: a crafted catalog is reported, not a reason to stop.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::params;
use rusqlite::types::ValueRef;

use super::versions::{file_from_row_at, VERSION_COLS};
use super::{loc_from_row, Catalog, ChunkLoc, FileKind, FileRow, Position, Versions};
use crate::error::{Error, Result, SqlContext};

/// The order of [`Versions::for_each_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOrder {
    Path,
    /// By where each file's block map is stored (pack, offset): reading
    /// them in this order shares reads. Files without one come first.
    BlockMap,
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

impl Versions<'_> {
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
}

/// A read-only catalog connection per worker thread (and one shared by
/// other threads), each behind a lock only its own thread normally takes.
pub(crate) struct Readers {
    readers: Vec<Mutex<Catalog>>,
}

impl Readers {
    pub(crate) fn open(catalog: &Path, workers: usize) -> Result<Self> {
        let readers = (0..=workers)
            .map(|_| Catalog::open_reader(catalog).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Readers { readers })
    }

    /// Cap each connection's page cache (SQLite's default is 2 MiB), for
    /// readers that only walk index ranges in order.
    pub(crate) fn set_cache_mib(&self, mib: u32) -> Result<()> {
        self.readers
            .iter()
            .try_for_each(|r| lock(r)?.set_cache_mib(mib))
    }

    /// This thread's connection: rayon workers 0..workers have their own;
    /// other threads share the last.
    pub(crate) fn get(&self) -> Result<MutexGuard<'_, Catalog>> {
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
