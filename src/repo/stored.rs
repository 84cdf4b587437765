//! The one reader of stored data: every command reaches the repository's
//! objects (packs, chunks, block maps, manifest copies, leftovers) through a
//! [`Stored`] handle, never through the backend or the keys themselves.
//!
//! Invariants: every chunk this hands out was checked against its id as it
//! was read (BLAKE3, keyed in an encrypted repository), and every object
//! comes through the repository's backend, so an encrypted one is opened
//! (authenticated and decrypted) on the way. Commands hold no `Backend` and
//! no key material: content ids and fingerprints are computed here too.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::catalog::ChunkLoc;
use crate::error::{Error, Result};
use crate::format::chunk::{decode_verified, Codec, IdKey};
use crate::format::pack::TrailerEntry;
use crate::format::{ChunkId, Fingerprint, Manifest, PackId};
use crate::store::pack::decode_record;
use crate::store::Backend;
use crate::store::{read_chunk_with, read_chunks, read_trailer};
pub(crate) use crate::store::{PackWriter, SealedPack};

/// The repository's objects, as its keys open them. Cheap to clone (one
/// shared backend), so that worker threads each hold one.
#[derive(Clone)]
pub struct Stored {
    backend: Arc<dyn Backend>,
    ids: IdKey,
}

impl Stored {
    pub(super) fn new(backend: Arc<dyn Backend>, ids: IdKey) -> Self {
        Stored { backend, ids }
    }

    /// The id of a chunk of `data`, as this repository derives ids.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        self.ids.chunk_id(data)
    }

    /// The fingerprint of one block, as this repository's block maps hold it.
    pub fn fingerprint(&self, block: &[u8]) -> Fingerprint {
        self.ids.fingerprint(block)
    }

    /// Read the chunk `id` stored at `loc`, verified, and hand its bytes to
    /// `f` (decoded into buffers the thread reuses: see
    /// [`crate::store::read_chunk_with`]); `what` names the file being
    /// restored (or the object checked) for errors.
    pub fn read_chunk_with<R>(
        &self,
        loc: &ChunkLoc,
        id: &ChunkId,
        what: &str,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        read_chunk_with(
            self.backend.as_ref(),
            &self.ids,
            &loc.pack_id,
            loc.offset,
            loc.stored_len,
            id,
            what,
            f,
        )
    }

    /// Several chunks of one pack, `(offset, stored_len, id)` each, each
    /// verified, in the order asked (see [`crate::store::read_chunks`]).
    pub fn read_chunks(
        &self,
        pack: &PackId,
        chunks: &[(u64, u32, ChunkId)],
        what: &str,
    ) -> Vec<Result<Vec<u8>>> {
        read_chunks(self.backend.as_ref(), &self.ids, pack, chunks, what)
    }

    /// Check a chunk record read whole (header and payload, as streamed from
    /// pack `key`) against chunk `id`; its decoded bytes.
    pub fn check_record(&self, rec: &[u8], id: &ChunkId, what: &str, key: &str) -> Result<Vec<u8>> {
        decode_record(&self.ids, rec, id, what, key)
    }

    /// Check a chunk's stored payload (found by parsing a pack without a
    /// trustworthy trailer) against the id its header gives.
    pub fn check_payload(
        &self,
        id: &ChunkId,
        codec: Codec,
        payload: &[u8],
        raw_len: usize,
        what: &str,
    ) -> Result<Vec<u8>> {
        decode_verified(&self.ids, id, codec, payload, raw_len, what)
    }

    /// A pack's trailer, checked against its hash and the pack's name.
    pub fn pack_trailer(&self, pack: &PackId) -> Result<Vec<TrailerEntry>> {
        read_trailer(self.backend.as_ref(), pack)
    }

    /// Start a new pack (it gets its name when sealed).
    pub fn new_pack(&self) -> Result<PackWriter> {
        PackWriter::new(self.backend.as_ref())
    }

    /// The manifest copy under `key`, decoded (and so verified), with its
    /// stored size.
    pub fn manifest_copy(&self, key: &str) -> Result<(Manifest, u64)> {
        let z = self
            .backend
            .get(key)?
            .ok_or_else(|| Error::missing("manifest copy", key))?;
        Ok((Manifest::decode(&z, key)?, z.len() as u64))
    }

    /// An object streamed front to back, opened with the repository's keys;
    /// the reader checks nothing more, so the caller verifies what it reads
    /// ([`Stored::check_record`], a manifest's own decoding).
    pub fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.backend.open(key)
    }

    /// The objects under `prefix`, with their sizes.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.backend.list(prefix)
    }

    /// An object's size, `None` when there is none.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        self.backend.size(key)
    }

    /// When an object was written, where the store says.
    pub fn modified(&self, key: &str) -> Result<Option<SystemTime>> {
        self.backend.modified(key)
    }

    /// Delete objects (in batches where the store can).
    pub fn delete_many(&self, keys: &[String]) -> Result<()> {
        self.backend.delete_many(keys)
    }

    /// Abort uploads of interrupted commands older than `older_than`; how
    /// many.
    pub fn collect_abandoned(&self, older_than: Duration) -> Result<u64> {
        self.backend.collect_abandoned(older_than)
    }
}
