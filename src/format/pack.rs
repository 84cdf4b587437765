//! Pack files: many compressed chunks appended into one object, ending with
//! a trailer that lists them, so the chunk index can be rebuilt from packs
//! alone. This module is the byte layout only; `store::pack` reads and
//! writes packs through a backend.
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
//! A pack's name ([`PackId`]) is the BLAKE3 of its trailer. The last byte of
//! each magic is the format version: a higher one was written by a newer
//! pgstrata and is refused as such, before anything else is decoded.

use std::fmt;

use super::chunk::{hex, unhex32, ChunkId, Codec};
use super::{check_magic, le_u32, le_u64};
use crate::error::{Error, Result};

pub(crate) const HEADER_MAGIC: &[u8; 8] = b"PGSTRPK1";
pub(crate) const FOOTER_MAGIC: &[u8; 8] = b"PGSTRPKE";

/// A pack's name: the BLAKE3 hash of its trailer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(pub [u8; 32]);

impl PackId {
    pub fn of_trailer(trailer: &[u8]) -> Self {
        PackId(*blake3::hash(trailer).as_bytes())
    }
    pub fn to_hex(self) -> String {
        hex(&self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        Some(PackId(unhex32(s)?))
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({})", &self.to_hex()[..16])
    }
}

/// The header in front of every chunk's stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub codec: Codec,
    pub raw_len: u32,
    pub stored_len: u32,
    pub id: ChunkId,
}

impl RecordHeader {
    pub(crate) const LEN: usize = 44;
    const CODEC: usize = 0;
    const PAD: usize = 1;
    const RAW_LEN: usize = 4;
    const STORED_LEN: usize = 8;
    const ID: usize = 12;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut h = [0u8; Self::LEN];
        h[Self::CODEC] = self.codec as u8;
        h[Self::RAW_LEN..Self::RAW_LEN + 4].copy_from_slice(&self.raw_len.to_le_bytes());
        h[Self::STORED_LEN..Self::STORED_LEN + 4].copy_from_slice(&self.stored_len.to_le_bytes());
        h[Self::ID..Self::ID + 32].copy_from_slice(&self.id.0);
        h
    }

    /// Decode a header; `what` names the pack for the error.
    pub(crate) fn decode(b: &[u8], what: &str) -> Result<Self> {
        if b.len() < Self::LEN {
            return Err(Error::corrupt(what, "record shorter than its header"));
        }
        if b[Self::PAD..Self::RAW_LEN] != [0, 0, 0] {
            return Err(Error::corrupt(what, "record header padding is not zero"));
        }
        let id = ChunkId::from_slice(&b[Self::ID..Self::ID + 32])
            .ok_or_else(|| Error::corrupt(what, "record header"))?;
        Ok(RecordHeader {
            codec: Codec::from_u8(b[Self::CODEC])?,
            raw_len: le_u32(b, Self::RAW_LEN),
            stored_len: le_u32(b, Self::STORED_LEN),
            id,
        })
    }

    /// Bytes of the whole record (header and payload).
    pub(crate) fn record_len(&self) -> u64 {
        Self::LEN as u64 + u64::from(self.stored_len)
    }
}

/// One trailer entry: where a chunk's record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailerEntry {
    pub id: ChunkId,
    /// Offset of the record (its header) in the pack.
    pub offset: u64,
    pub raw_len: u32,
    pub stored_len: u32,
    pub codec: Codec,
}

impl TrailerEntry {
    pub const LEN: usize = 52;
    const ID: usize = 0;
    const OFFSET: usize = 32;
    const RAW_LEN: usize = 40;
    const STORED_LEN: usize = 44;
    const CODEC: usize = 48;

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut e = [0u8; Self::LEN];
        e[Self::ID..Self::ID + 32].copy_from_slice(&self.id.0);
        e[Self::OFFSET..Self::OFFSET + 8].copy_from_slice(&self.offset.to_le_bytes());
        e[Self::RAW_LEN..Self::RAW_LEN + 4].copy_from_slice(&self.raw_len.to_le_bytes());
        e[Self::STORED_LEN..Self::STORED_LEN + 4].copy_from_slice(&self.stored_len.to_le_bytes());
        e[Self::CODEC] = self.codec as u8;
        out.extend_from_slice(&e);
    }

    fn decode(e: &[u8], what: &str) -> Result<Self> {
        Ok(TrailerEntry {
            id: ChunkId::from_slice(&e[Self::ID..Self::ID + 32])
                .ok_or_else(|| Error::corrupt(what, "bad trailer entry"))?,
            offset: le_u64(e, Self::OFFSET),
            raw_len: le_u32(e, Self::RAW_LEN),
            stored_len: le_u32(e, Self::STORED_LEN),
            codec: Codec::from_u8(e[Self::CODEC])?,
        })
    }
}

pub(crate) fn encode_trailer(entries: &[TrailerEntry]) -> Vec<u8> {
    let mut t = Vec::with_capacity(entries.len() * TrailerEntry::LEN);
    for e in entries {
        e.encode_into(&mut t);
    }
    t
}

/// Decode a trailer whose hash has been checked.
pub(crate) fn decode_trailer(t: &[u8], what: &str) -> Result<Vec<TrailerEntry>> {
    if t.len() % TrailerEntry::LEN != 0 {
        return Err(Error::corrupt(what, "trailer length is not whole entries"));
    }
    t.chunks_exact(TrailerEntry::LEN)
        .map(|e| TrailerEntry::decode(e, what))
        .collect()
}

/// The fixed-size end of a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    pub entries: u64,
    pub trailer_offset: u64,
    pub trailer_hash: [u8; 32],
}

impl Footer {
    pub(crate) const LEN: usize = 56;
    const ENTRIES: usize = 0;
    const TRAILER_OFFSET: usize = 8;
    const HASH: usize = 16;
    const MAGIC: usize = 48;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut f = [0u8; Self::LEN];
        f[Self::ENTRIES..Self::ENTRIES + 8].copy_from_slice(&self.entries.to_le_bytes());
        f[Self::TRAILER_OFFSET..Self::TRAILER_OFFSET + 8]
            .copy_from_slice(&self.trailer_offset.to_le_bytes());
        f[Self::HASH..Self::HASH + 32].copy_from_slice(&self.trailer_hash);
        f[Self::MAGIC..].copy_from_slice(FOOTER_MAGIC);
        f
    }

    /// Decode the last [`Footer::LEN`] bytes of a pack of `pack_size` bytes,
    /// checking that the trailer it describes fits exactly before it.
    pub(crate) fn decode(b: &[u8], pack_size: u64, what: &str) -> Result<Self> {
        if b.len() != Self::LEN {
            return Err(Error::corrupt(what, "footer of the wrong length"));
        }
        check_magic(&b[Self::MAGIC..], FOOTER_MAGIC, what).map_err(|e| match e {
            Error::Corrupt { .. } => Error::corrupt(what, "no footer (truncated or not a pack)"),
            other => other,
        })?;
        let mut trailer_hash = [0u8; 32];
        trailer_hash.copy_from_slice(&b[Self::HASH..Self::HASH + 32]);
        let f = Footer {
            entries: le_u64(b, Self::ENTRIES),
            trailer_offset: le_u64(b, Self::TRAILER_OFFSET),
            trailer_hash,
        };
        let fits = f
            .entries
            .checked_mul(TrailerEntry::LEN as u64)
            .and_then(|t| f.trailer_offset.checked_add(t))
            == pack_size.checked_sub(Self::LEN as u64);
        if !fits || f.trailer_offset < HEADER_MAGIC.len() as u64 {
            return Err(Error::corrupt(what, "footer does not match the pack size"));
        }
        Ok(f)
    }

    pub(crate) fn trailer_len(&self) -> u64 {
        self.entries * TrailerEntry::LEN as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_round_trip() {
        let h = RecordHeader {
            codec: Codec::Zstd,
            raw_len: 1 << 20,
            stored_len: 12345,
            id: ChunkId::of(b"x"),
        };
        let b = h.encode();
        assert_eq!(RecordHeader::decode(&b, "p").unwrap(), h);
        assert_eq!(h.record_len(), 44 + 12345);
        let mut bad = b;
        bad[2] = 1;
        assert!(RecordHeader::decode(&bad, "p").is_err());
        assert!(RecordHeader::decode(&b[..43], "p").is_err());
        let mut codec = b;
        codec[0] = 9;
        assert!(matches!(
            RecordHeader::decode(&codec, "p"),
            Err(Error::NewerFormat { .. })
        ));
    }

    #[test]
    fn trailer_and_footer_round_trip() {
        let entries: Vec<TrailerEntry> = (0..3u8)
            .map(|i| TrailerEntry {
                id: ChunkId::of(&[i]),
                offset: 8 + u64::from(i) * 100,
                raw_len: 8192,
                stored_len: 56,
                codec: Codec::Raw,
            })
            .collect();
        let t = encode_trailer(&entries);
        assert_eq!(t.len(), 3 * TrailerEntry::LEN);
        assert_eq!(decode_trailer(&t, "p").unwrap(), entries);
        assert!(decode_trailer(&t[..51], "p").is_err());
        let f = Footer {
            entries: 3,
            trailer_offset: 308,
            trailer_hash: *blake3::hash(&t).as_bytes(),
        };
        let size = 308 + t.len() as u64 + Footer::LEN as u64;
        assert_eq!(Footer::decode(&f.encode(), size, "p").unwrap(), f);
        assert!(Footer::decode(&f.encode(), size + 1, "p").is_err());
        let mut newer = f.encode();
        newer[55] = b'F';
        assert!(Footer::decode(&newer, size, "p").is_err());
        let id = PackId::of_trailer(&t);
        assert_eq!(PackId::from_hex(&id.to_hex()), Some(id));
    }
}
