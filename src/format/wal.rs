//! Archived WAL objects: one object per WAL file.
//!
//! ```text
//! "PGSTRWL1"                                  8 bytes
//! BLAKE3 of the original bytes [32]           32 bytes
//! original length u64 (LE)                    8 bytes
//! one zstd frame of the original bytes
//! ```
//!
//! The hash in the header lets a repeated push compare content without
//! decompressing, and every read verifies it.

use super::{check_magic, le_u64};
use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"PGSTRWL1";

/// The fixed header of a WAL object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    pub hash: [u8; 32],
    pub len: u64,
}

impl WalHeader {
    pub const LEN: usize = 48;
    const HASH: usize = 8;
    const ORIGINAL_LEN: usize = 40;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut h = [0u8; Self::LEN];
        h[..8].copy_from_slice(MAGIC);
        h[Self::HASH..Self::HASH + 32].copy_from_slice(&self.hash);
        h[Self::ORIGINAL_LEN..].copy_from_slice(&self.len.to_le_bytes());
        h
    }

    /// Decode (at least) the first [`WalHeader::LEN`] bytes of an object.
    pub fn decode(b: &[u8], what: &str) -> Result<Self> {
        if b.len() < Self::LEN {
            return Err(Error::corrupt(
                what,
                "not a pgstrata WAL object (too short)",
            ));
        }
        check_magic(&b[..8], MAGIC, what)?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[Self::HASH..Self::HASH + 32]);
        Ok(WalHeader {
            hash,
            len: le_u64(b, Self::ORIGINAL_LEN),
        })
    }
}

/// Compress a WAL file into its object (tests; the archive hashes first).
#[cfg(test)]
pub fn encode(data: &[u8], level: i32) -> Result<Vec<u8>> {
    encode_hashed(data, *super::tailhash::hash(data).as_bytes(), level)
}

/// [`encode`], for a caller that already has the data's BLAKE3 `hash`.
pub fn encode_hashed(data: &[u8], hash: [u8; 32], level: i32) -> Result<Vec<u8>> {
    let z = zstd::bulk::compress(data, level)
        .map_err(|e| Error::Internal(format!("zstd compression: {e}")))?;
    let h = WalHeader {
        hash,
        len: data.len() as u64,
    };
    let mut obj = Vec::with_capacity(WalHeader::LEN + z.len());
    obj.extend_from_slice(&h.encode());
    obj.extend_from_slice(&z);
    Ok(obj)
}

/// The original bytes of a WAL object, verified against the recorded hash.
pub fn decode(obj: &[u8], what: &str) -> Result<Vec<u8>> {
    let h = WalHeader::decode(obj, what)?;
    let len = usize::try_from(h.len)
        .ok()
        .filter(|l| *l <= 1 << 31)
        .ok_or_else(|| Error::corrupt(what, "implausible length"))?;
    let data = zstd::bulk::decompress(&obj[WalHeader::LEN..], len)
        .map_err(|e| Error::corrupt(what, format!("does not decompress: {e}")))?;
    if data.len() != len || super::tailhash::hash(&data).as_bytes() != &h.hash {
        return Err(Error::corrupt(
            what,
            "content does not match its recorded hash",
        ));
    }
    Ok(data)
}

/// Check a WAL object as [`decode`] does, without holding its bytes: they
/// are decompressed and hashed a piece at a time, and a piece of zeros (a
/// segment closed early ends in them) is not hashed byte by byte.
pub fn check(obj: &[u8], what: &str) -> Result<()> {
    use super::tailhash::{Pieces, PIECE};
    use std::io::Read;
    let h = WalHeader::decode(obj, what)?;
    let bad = |e: std::io::Error| Error::corrupt(what, format!("does not decompress: {e}"));
    let mut z = zstd::stream::read::Decoder::new(&obj[WalHeader::LEN..]).map_err(bad)?;
    let mut piece = vec![0u8; PIECE];
    let mut hash = Pieces::default();
    loop {
        let mut n = 0;
        while n < piece.len() {
            match z.read(&mut piece[n..]).map_err(bad)? {
                0 => break,
                k => n += k,
            }
        }
        hash.add(&piece[..n]);
        // The end, or more than the header says: no need to read on.
        if n < PIECE || hash.bytes() > h.len {
            break;
        }
    }
    if hash.bytes() != h.len || hash.finish().as_bytes() != &h.hash {
        return Err(Error::corrupt(
            what,
            "content does not match its recorded hash",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
        let obj = encode(&data, 3).unwrap();
        assert_eq!(decode(&obj, "w").unwrap(), data);
        check(&obj, "w").unwrap();
        let h = WalHeader::decode(&obj, "w").unwrap();
        assert_eq!(h.len, data.len() as u64);
        let mut bad = obj.clone();
        let n = bad.len() - 3;
        bad[n] ^= 1;
        assert!(decode(&bad, "w").is_err());
        assert!(check(&bad, "w").is_err());
        let mut newer = obj.clone();
        newer[7] = b'2';
        assert!(matches!(
            decode(&newer, "w"),
            Err(Error::NewerFormat { .. })
        ));
        assert!(decode(&obj[..20], "w").is_err());
    }

    /// A segment closed early: data, a run of zeros, data, a zero tail.
    #[test]
    fn check_counts_zero_runs() {
        let mut seg = vec![0u8; 16 << 20];
        seg[..300_000].iter_mut().for_each(|b| *b = 7);
        seg[(3 << 20) + 5] = 1;
        let obj = encode(&seg, 1).unwrap();
        check(&obj, "w").unwrap();
        // Another hash, or another length, in the header.
        let mut other = obj.clone();
        other[WalHeader::HASH] ^= 1;
        assert!(check(&other, "w").is_err());
        let mut longer = obj.clone();
        longer[WalHeader::ORIGINAL_LEN] ^= 1;
        assert!(check(&longer, "w").is_err());
        // The same bytes without the lone byte in the zeros.
        seg[(3 << 20) + 5] = 0;
        let hash = *blake3::hash(&seg).as_bytes();
        let mut swapped = encode_hashed(&seg, hash, 1).unwrap();
        swapped[..WalHeader::LEN].copy_from_slice(&obj[..WalHeader::LEN]);
        assert!(check(&swapped, "w").is_err());
    }
}
