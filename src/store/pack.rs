//! Pack files: many compressed chunks appended into one object, ending with a
//! trailer that lists them, so the chunk index can be rebuilt from packs alone.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header  "PGSTRPK1"                                             8 bytes
//! record  codec u8, 0u8 x3, raw_len u32, stored_len u32,
//!         chunk id [32], payload [stored_len]                   44 + stored_len
//! ...
//! trailer one entry per record: chunk id [32], record offset u64,
//!         raw_len u32, stored_len u32, codec u8, 0u8 x3           52 bytes each
//! footer  entries u64, trailer offset u64, BLAKE3(trailer) [32],
//!         "PGSTRPKE"                                             56 bytes
//! ```
//!
//! A pack's name is the hex BLAKE3 of its trailer: `packs/<2 hex>/<64 hex>.pack`.
//! A pack is written under a temporary name, fsynced, then renamed (see
//! [`crate::store::backend`]); only then may the catalog point at its chunks.

use crate::error::{Error, Result};
use crate::store::backend::{Backend, ObjectWriter};
use crate::store::chunk::{hex, ChunkId, Codec};

pub const HEADER_MAGIC: &[u8; 8] = b"PGSTRPK1";
pub const FOOTER_MAGIC: &[u8; 8] = b"PGSTRPKE";
pub const RECORD_HEADER: usize = 44;
pub const ENTRY_LEN: usize = 52;
pub const FOOTER_LEN: usize = 56;

/// Where one chunk lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: ChunkId,
    pub offset: u64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub codec: Codec,
}

/// A sealed pack: its name and what it holds.
#[derive(Clone, Debug)]
pub struct SealedPack {
    pub id: String,
    pub size: u64,
    pub entries: Vec<Entry>,
}

pub fn pack_key(pack_id: &str) -> String {
    format!(
        "packs/{}/{}.pack",
        &pack_id[..2.min(pack_id.len())],
        pack_id
    )
}

fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    (u64::from(u32_at(b, o + 4)) << 32) | u64::from(u32_at(b, o))
}

/// Appends chunk records to a new pack.
pub struct PackWriter {
    out: Box<dyn ObjectWriter>,
    entries: Vec<Entry>,
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

    pub fn add(&mut self, id: ChunkId, codec: Codec, raw_len: u32, stored: &[u8]) -> Result<()> {
        let offset = self.out.written();
        let stored_len =
            u32::try_from(stored.len()).map_err(|_| Error::invalid("chunk larger than 4 GiB"))?;
        let mut h = Vec::with_capacity(RECORD_HEADER);
        h.push(codec as u8);
        h.extend_from_slice(&[0, 0, 0]);
        put_u32(&mut h, raw_len);
        put_u32(&mut h, stored_len);
        h.extend_from_slice(&id.0);
        self.out.write_all(&h)?;
        self.out.write_all(stored)?;
        self.entries.push(Entry {
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
        let hash = blake3::hash(&trailer);
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        put_u64(&mut footer, self.entries.len() as u64);
        put_u64(&mut footer, trailer_offset);
        footer.extend_from_slice(hash.as_bytes());
        footer.extend_from_slice(FOOTER_MAGIC);
        self.out.write_all(&trailer)?;
        self.out.write_all(&footer)?;
        let size = self.out.written();
        let id = hex(hash.as_bytes());
        self.out.finish(&pack_key(&id))?;
        Ok(SealedPack {
            id,
            size,
            entries: self.entries,
        })
    }
}

fn encode_trailer(entries: &[Entry]) -> Vec<u8> {
    let mut t = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        t.extend_from_slice(&e.id.0);
        put_u64(&mut t, e.offset);
        put_u32(&mut t, e.raw_len);
        put_u32(&mut t, e.stored_len);
        t.push(e.codec as u8);
        t.extend_from_slice(&[0, 0, 0]);
    }
    t
}

/// Read and check a pack's trailer.
pub fn read_trailer(backend: &dyn Backend, pack_id: &str) -> Result<Vec<Entry>> {
    let key = pack_key(pack_id);
    let what = format!("pack {key}");
    let size = backend
        .size(&key)?
        .ok_or_else(|| Error::NotFound(format!("{what} is missing")))?;
    if size < (HEADER_MAGIC.len() + FOOTER_LEN) as u64 {
        return Err(Error::corrupt(
            what,
            "truncated (shorter than header and footer)",
        ));
    }
    let footer = backend.get_range(&key, size - FOOTER_LEN as u64, FOOTER_LEN)?;
    if &footer[48..56] != FOOTER_MAGIC {
        return Err(Error::corrupt(what, "no footer (truncated or not a pack)"));
    }
    let n = u64_at(&footer, 0);
    let trailer_offset = u64_at(&footer, 8);
    let tlen = n
        .checked_mul(ENTRY_LEN as u64)
        .filter(|t| trailer_offset.checked_add(*t) == Some(size - FOOTER_LEN as u64))
        .ok_or_else(|| Error::corrupt(&what, "footer does not match the pack size"))?;
    let trailer = backend.get_range(&key, trailer_offset, tlen as usize)?;
    let hash = blake3::hash(&trailer);
    if hash.as_bytes() != &footer[16..48] || hex(hash.as_bytes()) != pack_id {
        return Err(Error::corrupt(what, "trailer does not match its hash"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for e in trailer.chunks_exact(ENTRY_LEN) {
        out.push(Entry {
            id: ChunkId::from_slice(&e[..32]).ok_or_else(|| Error::corrupt(&what, "bad entry"))?,
            offset: u64_at(e, 32),
            raw_len: u32_at(e, 40),
            stored_len: u32_at(e, 44),
            codec: Codec::from_u8(e[48])?,
        });
    }
    Ok(out)
}

/// Read one chunk record and return the chunk's verified, decoded bytes.
/// `what` names the file being restored, for the error.
pub fn read_chunk(
    backend: &dyn Backend,
    pack_id: &str,
    offset: u64,
    stored_len: u32,
    id: &ChunkId,
    what: &str,
) -> Result<Vec<u8>> {
    let key = pack_key(pack_id);
    let rec = backend
        .get_range(&key, offset, RECORD_HEADER + stored_len as usize)
        .map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("{what}: pack {key} holding chunk {id} is missing"))
            }
            Error::Corrupt { detail, .. } => {
                Error::corrupt(what, format!("chunk {id} in pack {key}: {detail}"))
            }
            other => other,
        })?;
    decode_record(&rec, id, what, &key)
}

/// Decode a record read whole (header + payload).
pub fn decode_record(rec: &[u8], id: &ChunkId, what: &str, key: &str) -> Result<Vec<u8>> {
    if rec.len() < RECORD_HEADER {
        return Err(Error::corrupt(
            what,
            format!("chunk {id}: record in pack {key} is shorter than its header"),
        ));
    }
    let codec = Codec::from_u8(rec[0])?;
    let raw_len = u32_at(rec, 4) as usize;
    let stored_len = u32_at(rec, 8) as usize;
    if &rec[12..44] != id.0.as_slice() || stored_len + RECORD_HEADER != rec.len() {
        return Err(Error::corrupt(
            what,
            format!("chunk {id}: record header in pack {key} does not match the index"),
        ));
    }
    crate::store::chunk::decode_verified(id, codec, &rec[RECORD_HEADER..], raw_len, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::{LocalBackend, Ownership};
    use crate::store::chunk::compress;

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
        assert_eq!(entries, sealed.entries);
        for (e, (id, data)) in entries.iter().zip(&ids) {
            let got = read_chunk(&b, &sealed.id, e.offset, e.stored_len, id, "t").unwrap();
            assert_eq!(&got, data);
        }
        // Truncation is detected.
        let key = pack_key(&sealed.id);
        let full = b.get(&key).unwrap().unwrap();
        b.put(&key, &full[..full.len() - 10]).unwrap();
        assert!(read_trailer(&b, &sealed.id).is_err());
        // A flipped payload byte is detected on read.
        let mut bad = full.clone();
        bad[entries[2].offset as usize + RECORD_HEADER + 3] ^= 0x55;
        b.put(&key, &bad).unwrap();
        let e = &entries[2];
        assert!(read_chunk(&b, &sealed.id, e.offset, e.stored_len, &ids[2].0, "t").is_err());
    }
}
