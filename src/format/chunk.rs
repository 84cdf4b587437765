//! Chunks: runs of up to 128 blocks, the unit of deduplication and compression.
//!
//! A chunk is addressed by the BLAKE3 hash of its uncompressed bytes, so any
//! reader can verify what it got. A block's fingerprint is the first 128 bits
//! of the BLAKE3 hash of the block alone. In an encrypted repository both are
//! keyed BLAKE3 hashes ([`IdKey`]), so they reveal nothing about content.

use std::fmt;

use crate::error::{Error, Result};

/// Blocks per chunk at most (1 MiB of 8 KiB pages).
pub const CHUNK_BLOCKS: usize = 128;

/// A chunk's 256-bit BLAKE3 content hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The plain (unkeyed) id: for tests; the code asks the repository's
    /// [`IdKey`].
    #[cfg(any(test, feature = "testing"))]
    pub fn of(data: &[u8]) -> Self {
        IdKey::Plain.chunk_id(data)
    }
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(ChunkId(b.try_into().ok()?))
    }
    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        Some(ChunkId(unhex32(s)?))
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// 64 hex digits as 32 bytes.
pub(crate) fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A block fingerprint: 128 bits of the block's BLAKE3 hash.
pub(crate) type Fingerprint = [u8; 16];

/// The plain (unkeyed) fingerprint, for tests and benchmarks.
#[cfg(any(test, feature = "testing"))]
pub fn fingerprint(block: &[u8]) -> Fingerprint {
    IdKey::Plain.fingerprint(block)
}

/// How a repository derives content ids: plain BLAKE3, or BLAKE3 keyed with
/// a key of the repository's (encrypted repositories).
#[derive(Clone, Copy)]
pub enum IdKey {
    Plain,
    Keyed([u8; 32]),
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.write_str(match self {
            IdKey::Plain => "IdKey::Plain",
            IdKey::Keyed(_) => "IdKey::Keyed(..)",
        })
    }
}

impl IdKey {
    pub fn hash(&self, data: &[u8]) -> [u8; 32] {
        match self {
            IdKey::Plain => *blake3::hash(data).as_bytes(),
            IdKey::Keyed(k) => *blake3::keyed_hash(k, data).as_bytes(),
        }
    }

    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(self.hash(data))
    }

    pub fn fingerprint(&self, block: &[u8]) -> Fingerprint {
        let h = self.hash(block);
        let mut f = [0u8; 16];
        f.copy_from_slice(&h[..16]);
        f
    }
}

/// How a chunk's bytes are stored in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    Raw = 0,
    Zstd = 1,
}

impl Codec {
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Zstd),
            _ => Err(Error::NewerFormat {
                what: format!("a chunk stored with codec {v}"),
                found: u32::from(v),
                supported: Codec::Zstd as u32,
            }),
        }
    }
}

thread_local! {
    // One zstd context per thread and level: building one per chunk costs
    // more than compressing a small chunk.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compress `data`; keep it raw when compression does not pay.
pub fn compress(data: &[u8], level: i32) -> Result<(Codec, Vec<u8>)> {
    let err = |e: std::io::Error| Error::internal(format!("zstd compression: {e}"));
    let z = COMPRESSOR.with(|cell| -> Result<Vec<u8>> {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).map_err(err)?));
        }
        match slot.as_mut() {
            Some((_, c)) => c.compress(data).map_err(err),
            None => Err(Error::internal("zstd compression: no context")),
        }
    })?;
    if z.len() < data.len() {
        Ok((Codec::Zstd, z))
    } else {
        Ok((Codec::Raw, data.to_vec()))
    }
}

thread_local! {
    // One zstd decompression context per thread: creating one per chunk
    // was 6% of a restore's CPU time.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompress `stored` into `out` (replacing what it held), which must come
/// to `raw_len` bytes at most.
fn decompress_into(stored: &[u8], raw_len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    out.reserve(raw_len);
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(stored, out).map(|_| ()),
            None => {
                *out = zstd::bulk::decompress(stored, raw_len)?;
                Ok(())
            }
        }
    })
}

/// Decode stored bytes and check them against `id`. `what` names the file or
/// object the caller is restoring, for the error.
pub(crate) fn decode_verified(
    ids: &IdKey,
    id: &ChunkId,
    codec: Codec,
    stored: &[u8],
    raw_len: usize,
    what: &str,
) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    decode_verified_into(ids, id, codec, stored, raw_len, what, &mut raw)?;
    Ok(raw)
}

/// [`decode_verified`] into `out` (its old contents replaced), so that a
/// reader of many chunks decodes them all into one buffer. A buffer larger
/// than `raw_len` changes nothing: a frame that decodes to more is caught
/// by the length check.
pub(crate) fn decode_verified_into(
    ids: &IdKey,
    id: &ChunkId,
    codec: Codec,
    stored: &[u8],
    raw_len: usize,
    what: &str,
    out: &mut Vec<u8>,
) -> Result<()> {
    match codec {
        Codec::Raw => {
            out.clear();
            out.extend_from_slice(stored);
        }
        Codec::Zstd => decompress_into(stored, raw_len, out)
            .map_err(|e| Error::corrupt(what, format!("chunk {id} does not decompress: {e}")))?,
    }
    if out.len() != raw_len || ids.chunk_id(out) != *id {
        return Err(Error::corrupt(
            what,
            format!("chunk {id} does not match its hash"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"abc");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
        assert_eq!(ChunkId::from_hex(&"g".repeat(64)), None);
        assert_eq!(ChunkId::from_slice(&[0u8; 31]), None);
    }

    #[test]
    fn decode_into_a_reused_buffer() {
        let (big, small) = (vec![7u8; 200_000], vec![9u8; 1000]);
        let mut buf = Vec::new();
        for d in [&big, &small, &big] {
            let (c, s) = compress(d, 3).unwrap();
            decode_verified_into(
                &IdKey::Plain,
                &ChunkId::of(d),
                c,
                &s,
                d.len(),
                "t",
                &mut buf,
            )
            .unwrap();
            assert_eq!(&buf, d);
        }
        // A frame of more bytes than the index gives fails, even in a buffer
        // large enough to hold it.
        let (c, s) = compress(&big, 3).unwrap();
        let id = ChunkId::of(&big);
        assert!(decode_verified_into(&IdKey::Plain, &id, c, &s, 1000, "t", &mut buf).is_err());
    }

    #[test]
    fn round_trip_and_verify() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let id = ChunkId::of(&data);
        let (codec, stored) = compress(&data, 3).unwrap();
        assert_eq!(codec, Codec::Zstd);
        assert!(stored.len() < data.len());
        assert_eq!(
            decode_verified(&IdKey::Plain, &id, codec, &stored, data.len(), "t").unwrap(),
            data
        );
        let other = ChunkId::of(b"x");
        assert!(decode_verified(&IdKey::Plain, &other, codec, &stored, data.len(), "t").is_err());
        let mut bad = stored.clone();
        let n = bad.len() / 2;
        bad[n] ^= 0xff;
        assert!(decode_verified(&IdKey::Plain, &id, codec, &bad, data.len(), "t").is_err());
    }

    #[test]
    fn incompressible_stays_raw() {
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let (codec, stored) = compress(&data, 3).unwrap();
        if codec == Codec::Raw {
            assert_eq!(stored, data);
        }
    }
}
