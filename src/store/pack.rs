//! Writing and reading packs through a backend (the layout is
//! [`crate::format::pack`]).
//!
//! Durability: a pack is written under a temporary name and becomes visible
//! under its key only once sealed, fsynced and renamed (see
//! [`crate::store::backend`]); only then may the catalog point at its chunks.

use crate::error::{Error, Result};
use crate::format::check_magic;
use crate::format::chunk::{decode_verified_into, ChunkId, Codec, IdKey};
use crate::format::keys;
use crate::format::pack::{
    decode_trailer, encode_trailer, Footer, PackId, RecordHeader, TrailerEntry, HEADER_MAGIC,
};
use crate::store::backend::{Backend, ObjectWriter};

/// A sealed pack: its name and what it holds.
#[derive(Clone, Debug)]
pub struct SealedPack {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<TrailerEntry>,
}

/// Records at most in one pack.
pub(crate) const MAX_RECORDS: usize = 8 * 1024;

/// Appends chunk records to a new pack.
pub struct PackWriter {
    out: Box<dyn ObjectWriter>,
    entries: Vec<TrailerEntry>,
}

impl PackWriter {
    pub fn new(backend: &dyn Backend) -> Result<Self> {
        let mut out = backend.writer()?;
        out.write_all(HEADER_MAGIC)?;
        Ok(PackWriter {
            out,
            entries: Vec::new(),
        })
    }

    pub fn len(&self) -> u64 {
        self.out.written()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the pack should be sealed: `size` bytes reached, or so many
    /// records that its trailer (held in memory until sealing) and the
    /// bookkeeping of its chunks would grow with the data set: chunks of
    /// nearly empty pages compress to a few bytes each.
    pub fn full(&self, size: u64) -> bool {
        self.len() >= size || self.entries.len() >= MAX_RECORDS
    }

    pub fn add(&mut self, id: ChunkId, codec: Codec, raw_len: u32, stored: &[u8]) -> Result<()> {
        let offset = self.out.written();
        let stored_len =
            u32::try_from(stored.len()).map_err(|_| Error::internal("chunk larger than 4 GiB"))?;
        let h = RecordHeader {
            codec,
            raw_len,
            stored_len,
            id,
        };
        self.out.write_all(&h.encode())?;
        self.out.write_all(stored)?;
        self.entries.push(TrailerEntry {
            id,
            offset,
            raw_len,
            stored_len,
            codec,
        });
        Ok(())
    }

    /// Write the trailer, make the pack durable and give it its name.
    pub fn seal(mut self) -> Result<SealedPack> {
        let trailer_offset = self.out.written();
        let trailer = encode_trailer(&self.entries);
        let id = PackId::of_trailer(&trailer);
        let footer = Footer {
            entries: self.entries.len() as u64,
            trailer_offset,
            trailer_hash: id.0,
        };
        self.out.write_all(&trailer)?;
        self.out.write_all(&footer.encode())?;
        let size = self.out.written();
        self.out.finish(&keys::pack(&id))?;
        Ok(SealedPack {
            id,
            size,
            entries: self.entries,
        })
    }
}

/// Read and check a pack's trailer: the header's version first, then the
/// footer, then the trailer against its hash and the pack's name.
pub(crate) fn read_trailer(backend: &dyn Backend, pack: &PackId) -> Result<Vec<TrailerEntry>> {
    let key = keys::pack(pack);
    let what = format!("pack {key}");
    let size = backend
        .size(&key)?
        .ok_or_else(|| Error::missing("pack", &key))?;
    if size < (HEADER_MAGIC.len() + Footer::LEN) as u64 {
        return Err(Error::corrupt(
            what,
            "truncated (shorter than header and footer)",
        ));
    }
    let header = backend.get_range(&key, 0, HEADER_MAGIC.len())?;
    check_magic(&header, HEADER_MAGIC, &what)?;
    let fb = backend.get_range(&key, size - Footer::LEN as u64, Footer::LEN)?;
    let footer = Footer::decode(&fb, size, &what)?;
    let tlen = usize::try_from(footer.trailer_len())
        .map_err(|_| Error::corrupt(&what, "trailer too large"))?;
    let trailer = backend.get_range(&key, footer.trailer_offset, tlen)?;
    let hash = PackId::of_trailer(&trailer);
    if hash.0 != footer.trailer_hash || hash != *pack {
        return Err(Error::corrupt(what, "trailer does not match its hash"));
    }
    decode_trailer(&trailer, &what)
}

/// Buffers kept between reads by [`read_chunk_with`]: larger ones go back
/// to the allocator.
const SCRATCH_MAX: usize = 4 << 20;

thread_local! {
    // A record and its decoded bytes, reused by the chunk reads of one
    // thread, so that a chunk costs no allocation. Chunks run to 1 MiB:
    // with glibc's mmap threshold kept at 128 KiB (restore keeps it there,
    // to bound its memory), a fresh buffer for each would be an mmap, 256
    // page faults and a munmap.
    static SCRATCH: std::cell::Cell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// Read one chunk record and hand the chunk's verified, decoded bytes to
/// `f`, decoding into buffers this thread reuses. `what` names the file
/// being restored, for the error.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_chunk_with<R>(
    backend: &dyn Backend,
    ids: &IdKey,
    pack: &PackId,
    offset: u64,
    stored_len: u32,
    id: &ChunkId,
    what: &str,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    // Taken, not borrowed: a read started inside `f` gets fresh buffers.
    let (mut rec, mut raw) = SCRATCH.take();
    let key = keys::pack(pack);
    let r = backend
        .get_range_into(
            &key,
            offset,
            RecordHeader::LEN + stored_len as usize,
            &mut rec,
        )
        .map_err(|e| read_error(e, &key, id, what))
        .and_then(|()| decode_record_into(ids, &rec, id, what, &key, &mut raw))
        .and_then(|()| f(&raw));
    let keep = |v: Vec<u8>| {
        if v.capacity() <= SCRATCH_MAX {
            v
        } else {
            Vec::new()
        }
    };
    SCRATCH.set((keep(rec), keep(raw)));
    r
}

/// [`read_chunk_with`] for several chunks of one pack, `(offset, stored_len,
/// id)` each, read through one opened pack where the backend can; each
/// result as `read_chunk_with` hands it over, in the order asked.
pub(crate) fn read_chunks(
    backend: &dyn Backend,
    ids: &IdKey,
    pack: &PackId,
    chunks: &[(u64, u32, ChunkId)],
    what: &str,
) -> Vec<Result<Vec<u8>>> {
    let key = keys::pack(pack);
    let ranges: Vec<(u64, usize)> = chunks
        .iter()
        .map(|&(offset, stored_len, _)| (offset, RecordHeader::LEN + stored_len as usize))
        .collect();
    backend
        .get_ranges(&key, &ranges)
        .into_iter()
        .zip(chunks)
        .map(|(rec, (_, _, id))| {
            let rec = rec.map_err(|e| read_error(e, &key, id, what))?;
            decode_record(ids, &rec, id, what, &key)
        })
        .collect()
}

/// A failed record read, naming the chunk and what needed it.
fn read_error(e: Error, key: &str, id: &ChunkId, what: &str) -> Error {
    match e {
        Error::MissingObject { key, .. } => {
            Error::missing(format!("{what}: the pack holding chunk {id}"), key)
        }
        Error::Corrupt { detail, .. } => {
            Error::corrupt(what, format!("chunk {id} in pack {key}: {detail}"))
        }
        other => other,
    }
}

/// Decode a record read whole (header + payload) and verify it is chunk `id`.
pub(crate) fn decode_record(
    ids: &IdKey,
    rec: &[u8],
    id: &ChunkId,
    what: &str,
    key: &str,
) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    decode_record_into(ids, rec, id, what, key, &mut raw)?;
    Ok(raw)
}

/// [`decode_record`] into `out`, its old contents replaced.
fn decode_record_into(
    ids: &IdKey,
    rec: &[u8],
    id: &ChunkId,
    what: &str,
    key: &str,
    out: &mut Vec<u8>,
) -> Result<()> {
    // The context is formatted only on failure: this runs for every chunk read.
    let h = RecordHeader::decode(rec, key).map_err(|e| match e {
        Error::Corrupt { detail, .. } => {
            Error::corrupt(what, format!("chunk {id} in pack {key}: {detail}"))
        }
        other => other,
    })?;
    if h.id != *id || h.record_len() != rec.len() as u64 {
        return Err(Error::corrupt(
            what,
            format!("chunk {id}: record header in pack {key} does not match the index"),
        ));
    }
    decode_verified_into(
        ids,
        id,
        h.codec,
        &rec[RecordHeader::LEN..],
        h.raw_len as usize,
        what,
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::chunk::compress;
    use crate::store::backend::{LocalBackend, Ownership};

    #[test]
    fn write_seal_read() {
        let d = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(d.path(), Ownership::for_root(d.path(), false).unwrap());
        let mut w = PackWriter::new(&b).unwrap();
        let mut ids = vec![];
        for i in 0..5u8 {
            let data = vec![i; 10_000 + i as usize];
            let id = ChunkId::of(&data);
            let (c, s) = compress(&data, 3).unwrap();
            w.add(id, c, data.len() as u32, &s).unwrap();
            ids.push((id, data));
        }
        let sealed = w.seal().unwrap();
        let entries = read_trailer(&b, &sealed.id).unwrap();
        let read_with = |e: &TrailerEntry, id: &ChunkId, f: &dyn Fn(&[u8]) -> Result<Vec<u8>>| {
            read_chunk_with(
                &b,
                &IdKey::Plain,
                &sealed.id,
                e.offset,
                e.stored_len,
                id,
                "t",
                f,
            )
        };
        let read = |e: &TrailerEntry, id: &ChunkId| read_with(e, id, &|d| Ok(d.to_vec()));
        assert_eq!(entries, sealed.entries);
        for (e, (id, data)) in entries.iter().zip(&ids) {
            let got = read(e, id).unwrap();
            assert_eq!(&got, data);
        }
        // The wrong id at a good offset is refused.
        let e = &entries[0];
        assert!(read(e, &ids[1].0).is_err());
        // Truncation is detected.
        let key = keys::pack(&sealed.id);
        let full = b.get(&key).unwrap().unwrap();
        b.put(&key, &full[..full.len() - 10]).unwrap();
        assert!(matches!(
            read_trailer(&b, &sealed.id),
            Err(Error::Corrupt { .. })
        ));
        // A flipped payload byte is detected on read.
        let mut bad = full.clone();
        bad[entries[2].offset as usize + RecordHeader::LEN + 3] ^= 0x55;
        b.put(&key, &bad).unwrap();
        let e = &entries[2];
        assert!(read(e, &ids[2].0).is_err());
        // Reads into this thread's reused buffers: larger and smaller chunks
        // in turn, a damaged one between them, a read started inside `f`.
        for i in [4, 0, 2, 3, 1, 4] {
            match i {
                2 => assert!(read(&entries[i], &ids[i].0).is_err()),
                _ => assert_eq!(read(&entries[i], &ids[i].0).unwrap(), ids[i].1),
            }
        }
        let nested = read_with(&entries[3], &ids[3].0, &|outer| {
            let inner = read(&entries[0], &ids[0].0)?;
            Ok([outer, &inner[..]].concat())
        });
        assert_eq!(nested.unwrap(), [&ids[3].1[..], &ids[0].1[..]].concat());
        // A pack written by a newer pgstrata says so.
        let mut newer = full.clone();
        newer[7] = b'2';
        b.put(&key, &newer).unwrap();
        assert!(matches!(
            read_trailer(&b, &sealed.id),
            Err(Error::NewerFormat { .. })
        ));
        // A missing pack is the typed not-found.
        b.delete(&key).unwrap();
        assert!(matches!(
            read(e, &ids[2].0),
            Err(Error::MissingObject { .. })
        ));
        assert!(matches!(
            read_trailer(&b, &sealed.id),
            Err(Error::MissingObject { .. })
        ));
    }
}
