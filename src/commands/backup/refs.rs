//! What a backup looks up while it copies: the reference backup's row of a
//! path (is the file unchanged?), the newest backup's block map of a path
//! (which blocks changed?), and whether the repository has a chunk already.
//!
//! Each is a query on a read-only catalog connection of the worker's own, not
//! a map loaded up front, so memory does not grow with the number of files,
//! chunks or backups. The writer thread keeps the one writing connection;
//! readers in WAL mode see what it committed and never block it. A chunk
//! that a reader does not find yet may be in a pack still filling: the writer
//! drops such duplicates (`writer.rs`), so a race costs a compression, not
//! space.

use std::path::Path;
use std::sync::MutexGuard;

use crate::catalog::{Catalog, ChunkLoc, FileRow, Position, Readers};
use crate::error::Result;
use crate::format::ChunkId;

pub(super) struct Refs {
    readers: Readers,
    /// The backup whose unchanged files are reused without reading.
    reference: Option<Position>,
    /// The newest backup, whose block maps blocks are compared with.
    prior: Option<Position>,
}

impl Refs {
    /// One reader per worker, and one for the calling thread.
    pub(super) fn open(
        catalog: &Path,
        reference: Option<String>,
        prior: Option<String>,
        workers: usize,
    ) -> Result<Self> {
        let readers = Readers::open(catalog, workers)?;
        let at = |id: Option<String>| -> Result<Option<Position>> {
            id.map(|id| readers.get()?.versions().position(&id))
                .transpose()
        };
        Ok(Refs {
            reference: at(reference)?,
            prior: at(prior)?,
            readers,
        })
    }

    fn reader(&self) -> Result<MutexGuard<'_, Catalog>> {
        self.readers.get()
    }

    /// The reference backup's row of `path`.
    pub(super) fn reference(&self, path: &str) -> Result<Option<FileRow>> {
        match &self.reference {
            Some(r) => self.reader()?.versions().file_row(*r, path),
            None => Ok(None),
        }
    }

    /// The newest backup's block map of `path`, with its location.
    pub(super) fn prior_map(&self, path: &str) -> Result<Option<(ChunkId, ChunkLoc)>> {
        match &self.prior {
            Some(p) => self.reader()?.versions().blockmap_at(*p, path),
            None => Ok(None),
        }
    }

    pub(super) fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        self.reader()?.packs().has_chunk(id)
    }
}
