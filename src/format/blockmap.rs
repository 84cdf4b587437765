//! Block maps: for every block of a file, its fingerprint and where it lives.
//!
//! A block map is itself stored as a chunk (content-addressed, deduplicated,
//! verified like any other), so an unchanged file costs nothing but a reference
//! to its previous block map, and the catalog can be rebuilt from packs.
//!
//! Encoding (little-endian):
//!
//! ```text
//! "PGSTRBM1"                                                  8 bytes
//! block_size u32, 0u32, file_size u64                         16 bytes
//! chunks u32, extents u32                                      8 bytes
//! chunk ids [32] x chunks
//! extents (first_block u32, blocks u32, chunk u32, chunk_block u32) x extents
//! fingerprints [16] x ceil(file_size / block_size)
//! ```
//!
//! Extents cover blocks 0..n exactly once, in order; `chunk` indexes the chunk
//! table and `chunk_block` is the first block's position inside that chunk.

use super::chunk::{ChunkId, Fingerprint};
use super::{check_magic, le_u32};
use crate::error::{Error, Result};

pub(crate) const MAGIC: &[u8; 8] = b"PGSTRBM1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub first_block: u32,
    pub blocks: u32,
    pub chunk: u32,
    pub chunk_block: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BlockMap {
    pub block_size: u32,
    pub file_size: u64,
    pub chunks: Vec<ChunkId>,
    pub extents: Vec<Extent>,
    pub fingerprints: Vec<Fingerprint>,
}

impl BlockMap {
    pub fn new(block_size: u32) -> Self {
        BlockMap {
            block_size,
            ..Default::default()
        }
    }

    pub fn block_count(file_size: u64, block_size: u32) -> u64 {
        file_size.div_ceil(u64::from(block_size))
    }

    /// Append the next block of the file: its fingerprint, and that it is the
    /// `chunk_block`th block of chunk `chunk` (an index from [`Self::chunk_index`]).
    pub fn push(&mut self, fp: Fingerprint, chunk: u32, chunk_block: u32) {
        let block = self.fingerprints.len() as u32;
        self.fingerprints.push(fp);
        if let Some(last) = self.extents.last_mut() {
            if last.chunk == chunk && last.chunk_block + last.blocks == chunk_block {
                last.blocks += 1;
                return;
            }
        }
        self.extents.push(Extent {
            first_block: block,
            blocks: 1,
            chunk,
            chunk_block,
        });
    }

    #[cfg(any(test, feature = "testing"))]
    /// Index of `id` in the chunk table, adding it when new. Chunk tables are
    /// short (a file's chunks), and recent chunks are the likely match.
    pub fn chunk_index(&mut self, id: ChunkId) -> u32 {
        if let Some(i) = self.chunks.iter().rposition(|c| *c == id) {
            return i as u32;
        }
        self.chunks.push(id);
        (self.chunks.len() - 1) as u32
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            32 + self.chunks.len() * 32 + self.extents.len() * 16 + self.fingerprints.len() * 16,
        );
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&self.block_size.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&self.file_size.to_le_bytes());
        v.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        v.extend_from_slice(&(self.extents.len() as u32).to_le_bytes());
        for c in &self.chunks {
            v.extend_from_slice(&c.0);
        }
        for e in &self.extents {
            for x in [e.first_block, e.blocks, e.chunk, e.chunk_block] {
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        for f in &self.fingerprints {
            v.extend_from_slice(f);
        }
        v
    }

    /// Decode and check the structure: extents must tile the file exactly.
    pub fn decode(b: &[u8], what: &str) -> Result<Self> {
        let whom = format!("block map of {what}");
        let bad = |d: &str| Error::corrupt(&whom, d.to_string());
        if b.len() < 32 {
            return Err(bad("shorter than its header"));
        }
        check_magic(&b[..8], MAGIC, &whom)?;
        let u32_at = |o: usize| le_u32(b, o);
        let block_size = u32_at(8);
        let mut fs = [0u8; 8];
        fs.copy_from_slice(&b[16..24]);
        let file_size = u64::from_le_bytes(fs);
        let nchunks = u32_at(24) as usize;
        let nextents = u32_at(28) as usize;
        if block_size == 0 {
            return Err(bad("zero block size"));
        }
        let nblocks = BlockMap::block_count(file_size, block_size) as usize;
        let expect = 32usize
            .checked_add(nchunks.checked_mul(32).ok_or_else(|| bad("size"))?)
            .and_then(|x| x.checked_add(nextents.checked_mul(16)?))
            .and_then(|x| x.checked_add(nblocks.checked_mul(16)?))
            .ok_or_else(|| bad("size overflow"))?;
        if b.len() != expect {
            return Err(bad("length does not match its counts"));
        }
        let mut o = 32;
        let mut chunks = Vec::with_capacity(nchunks);
        for _ in 0..nchunks {
            chunks.push(ChunkId::from_slice(&b[o..o + 32]).ok_or_else(|| bad("chunk id"))?);
            o += 32;
        }
        let mut extents = Vec::with_capacity(nextents);
        let mut next = 0u64;
        for _ in 0..nextents {
            let e = Extent {
                first_block: u32_at(o),
                blocks: u32_at(o + 4),
                chunk: u32_at(o + 8),
                chunk_block: u32_at(o + 12),
            };
            o += 16;
            if u64::from(e.first_block) != next || e.blocks == 0 || e.chunk as usize >= nchunks {
                return Err(bad("extents do not tile the file"));
            }
            next += u64::from(e.blocks);
            extents.push(e);
        }
        if next != nblocks as u64 {
            return Err(bad("extents do not cover the file"));
        }
        let mut fingerprints = Vec::with_capacity(nblocks);
        for _ in 0..nblocks {
            let mut f = [0u8; 16];
            f.copy_from_slice(&b[o..o + 16]);
            fingerprints.push(f);
            o += 16;
        }
        Ok(BlockMap {
            block_size,
            file_size,
            chunks,
            extents,
            fingerprints,
        })
    }
}

/// Looks blocks up in a block map in ascending order, in O(1) amortised per
/// block: what a backup does to compare a file with its previous version.
pub struct Cursor<'a> {
    map: &'a BlockMap,
    ext: usize,
}

impl BlockMap {
    /// A cursor positioned at `block` (binary search over the extents).
    pub fn cursor_at(&self, block: u32) -> Cursor<'_> {
        let ext = self
            .extents
            .partition_point(|e| e.first_block + e.blocks <= block);
        Cursor { map: self, ext }
    }
}

impl<'a> Cursor<'a> {
    /// Block `block`'s fingerprint, chunk and position in that chunk. Calls
    /// must come with non-decreasing block numbers.
    pub fn at(&mut self, block: u32) -> Option<(&'a Fingerprint, ChunkId, u32)> {
        let map = self.map;
        while let Some(e) = map.extents.get(self.ext) {
            if block < e.first_block {
                return None;
            }
            if block < e.first_block + e.blocks {
                let fp = map.fingerprints.get(block as usize)?;
                let id = *map.chunks.get(e.chunk as usize)?;
                return Some((fp, id, e.chunk_block + (block - e.first_block)));
            }
            self.ext += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_encode_decode() {
        let mut m = BlockMap::new(8192);
        let a = m.chunk_index(ChunkId::of(b"a"));
        let b = m.chunk_index(ChunkId::of(b"b"));
        for i in 0..3 {
            m.push([i as u8; 16], a, i);
        }
        m.push([9; 16], b, 0);
        m.push([10; 16], a, 3);
        m.file_size = 5 * 8192 - 100;
        assert_eq!(m.extents.len(), 3);
        let enc = m.encode();
        let back = BlockMap::decode(&enc, "f").unwrap();
        assert_eq!(back, m);
        let mut newer = enc.clone();
        newer[7] = b'2';
        assert!(matches!(
            BlockMap::decode(&newer, "f"),
            Err(Error::NewerFormat { .. })
        ));
        let mut bad = enc.clone();
        bad.truncate(enc.len() - 1);
        assert!(BlockMap::decode(&bad, "f").is_err());
        let mut m2 = m.clone();
        m2.extents[1].first_block = 7;
        assert!(BlockMap::decode(&m2.encode(), "f").is_err());

        let ids = m.chunks.clone();
        let mut c = m.cursor_at(0);
        assert_eq!(c.at(1), Some((&[1u8; 16], ids[0], 1)));
        assert_eq!(c.at(3), Some((&[9u8; 16], ids[1], 0)));
        assert_eq!(c.at(4), Some((&[10u8; 16], ids[0], 3)));
        assert_eq!(c.at(5), None);
        let mut c = m.cursor_at(3);
        assert_eq!(c.at(3), Some((&[9u8; 16], ids[1], 0)));
        assert_eq!(m.cursor_at(4).at(4), Some((&[10u8; 16], ids[0], 3)));
    }
}
