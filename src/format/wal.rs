//! Archived WAL objects: one object per WAL file.
//!
//! ```text
//! "PGSTRWL2"                                  8 bytes
//! BLAKE3 of the original bytes [32]           32 bytes
//! original length u64 (LE)                    8 bytes
//! stored length u64 (LE)                      8 bytes
//! one zstd frame of the first `stored length` original bytes; the rest of
//! the original are zeros
//! ```
//!
//! The hash in the header lets a repeated push compare content without
//! decompressing, and every read verifies it. A segment closed early
//! (`pg_switch_wal`, `archive_timeout`, every backup's stop) is mostly a
//! zero tail: it is not compressed, so reading or checking the object does
//! not make the decompressor write it out again. Version 1 (`PGSTRWL1`,
//! written before 2026-12) has no stored length (the frame holds every
//! byte) and is still read.

use super::tailhash::PIECE;
use super::{check_magic, le_u64};
use crate::error::{Error, Result};

pub(crate) const MAGIC: &[u8; 8] = b"PGSTRWL2";
const MAGIC_V1: &[u8; 8] = b"PGSTRWL1";

/// The fixed header of a WAL object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalHeader {
    pub hash: [u8; 32],
    /// The original length.
    pub len: u64,
    /// How many of the original bytes the frame holds (the rest are zeros).
    pub stored: u64,
    /// Where the frame starts.
    pub body: usize,
}

impl WalHeader {
    /// Bytes of a header of the current version (a version 1 header is
    /// shorter; an object of either is always longer than this).
    pub(crate) const LEN: usize = 56;
    const V1_LEN: usize = 48;
    const HASH: usize = 8;
    const ORIGINAL_LEN: usize = 40;
    const STORED_LEN: usize = 48;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut h = [0u8; Self::LEN];
        h[..8].copy_from_slice(MAGIC);
        h[Self::HASH..Self::HASH + 32].copy_from_slice(&self.hash);
        h[Self::ORIGINAL_LEN..Self::STORED_LEN].copy_from_slice(&self.len.to_le_bytes());
        h[Self::STORED_LEN..].copy_from_slice(&self.stored.to_le_bytes());
        h
    }

    /// Decode the header at the start of `b` (at least [`WalHeader::LEN`]
    /// bytes of an object, or the whole of a shorter one).
    pub(crate) fn decode(b: &[u8], what: &str) -> Result<Self> {
        let short = || Error::corrupt(what, "not a pgstrata WAL object (too short)");
        if b.len() < Self::V1_LEN {
            return Err(short());
        }
        let v1 = &b[..8] == MAGIC_V1;
        if !v1 {
            check_magic(&b[..8], MAGIC, what)?;
            if b.len() < Self::LEN {
                return Err(short());
            }
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[Self::HASH..Self::HASH + 32]);
        let len = le_u64(b, Self::ORIGINAL_LEN);
        let (stored, body) = if v1 {
            (len, Self::V1_LEN)
        } else {
            (le_u64(b, Self::STORED_LEN), Self::LEN)
        };
        if stored > len {
            return Err(Error::corrupt(
                what,
                format!("stored length {stored} is beyond the length {len}"),
            ));
        }
        Ok(WalHeader {
            hash,
            len,
            stored,
            body,
        })
    }
}

/// Where `data`'s zero tail starts (`data.len()` when it has none).
fn zero_tail(data: &[u8]) -> usize {
    const STEP: usize = 4096;
    static ZEROS: [u8; STEP] = [0; STEP];
    let mut end = data.len();
    while end >= STEP && data[end - STEP..end] == ZEROS {
        end -= STEP;
    }
    while end > 0 && data[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// Compress a WAL file into its object (tests; the archive hashes first).
#[cfg(test)]
pub fn encode(data: &[u8], level: i32) -> Result<Vec<u8>> {
    encode_hashed(data, *super::tailhash::hash(data).as_bytes(), level)
}

/// [`encode`], for a caller that already has the data's BLAKE3 `hash`.
pub(crate) fn encode_hashed(data: &[u8], hash: [u8; 32], level: i32) -> Result<Vec<u8>> {
    let stored = zero_tail(data);
    let z = zstd::bulk::compress(&data[..stored], level)
        .map_err(|e| Error::Internal(format!("zstd compression: {e}")))?;
    let h = WalHeader {
        hash,
        len: data.len() as u64,
        stored: stored as u64,
        body: WalHeader::LEN,
    };
    let mut obj = Vec::with_capacity(WalHeader::LEN + z.len());
    obj.extend_from_slice(&h.encode());
    obj.extend_from_slice(&z);
    Ok(obj)
}

/// The original bytes of a WAL object, verified against the recorded hash.
pub(crate) fn decode(obj: &[u8], what: &str) -> Result<Vec<u8>> {
    let h = WalHeader::decode(obj, what)?;
    let mut data = Vec::with_capacity(plausible(&h, what)?);
    decode_to(obj, what, &mut |piece| {
        data.extend_from_slice(piece);
        Ok(())
    })?;
    Ok(data)
}

/// The original length, if no larger than a WAL segment can be (1 GiB).
fn plausible(h: &WalHeader, what: &str) -> Result<usize> {
    usize::try_from(h.len)
        .ok()
        .filter(|l| *l <= 1 << 30)
        .ok_or_else(|| Error::corrupt(what, "implausible length"))
}

/// Check a WAL object as [`decode`] does, without holding its bytes.
pub(crate) fn check(obj: &[u8], what: &str) -> Result<()> {
    decode_to(obj, what, &mut |_| Ok(()))
}

/// Decompress a WAL object a piece of [`PIECE`] bytes at a time, handing
/// each piece of the original, the zero tail too, to `out` in order, then
/// verify the recorded hash. `out` sees every byte before the verdict: a
/// caller that writes them must keep them from use until this returns `Ok`.
///
/// A piece is written while it is in the CPU's cache and one buffer serves
/// the whole object: a 16 MiB segment decoded into one buffer first cost
/// twice the time in page faults and copies (`archive-get`). A
/// piece of zeros (a segment closed early ends in them) is not hashed byte
/// by byte, and the zero tail left out of the frame is not decompressed.
pub(crate) fn decode_to(
    obj: &[u8],
    what: &str,
    out: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    use super::tailhash::Pieces;
    use std::io::Read;
    static ZEROS: [u8; PIECE] = [0; PIECE];
    let h = WalHeader::decode(obj, what)?;
    plausible(&h, what)?;
    let bad = |e: std::io::Error| Error::corrupt(what, format!("does not decompress: {e}"));
    let mut z = zstd::stream::read::Decoder::with_buffer(&obj[h.body..]).map_err(bad)?;
    let mut piece = vec![0u8; PIECE];
    let mut hash = Pieces::default();
    let mut from_frame = 0u64;
    while hash.bytes() < h.len {
        let want = (h.len - hash.bytes()).min(PIECE as u64) as usize;
        if from_frame >= h.stored {
            hash.add_zeros(want);
            out(&ZEROS[..want])?;
            continue;
        }
        let mut n = 0;
        while n < want {
            match z.read(&mut piece[n..want]).map_err(bad)? {
                0 => break,
                k => n += k,
            }
        }
        from_frame += n as u64;
        if from_frame > h.stored {
            break;
        }
        // The frame ends inside this piece: the zero tail starts here.
        piece[n..want].fill(0);
        hash.add(&piece[..want]);
        out(&piece[..want])?;
    }
    let ends_there = from_frame == h.stored && z.read(&mut [0u8; 1]).map_err(bad)? == 0;
    if !ends_there || hash.bytes() != h.len || hash.finish().as_bytes() != &h.hash {
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
        newer[7] = b'3';
        assert!(matches!(
            decode(&newer, "w"),
            Err(Error::NewerFormat { .. })
        ));
        assert!(decode(&obj[..20], "w").is_err());
    }

    /// A version 1 object (the frame holds every byte).
    fn encode_v1(data: &[u8]) -> Vec<u8> {
        let mut obj = MAGIC_V1.to_vec();
        obj.extend_from_slice(blake3::hash(data).as_bytes());
        obj.extend_from_slice(&(data.len() as u64).to_le_bytes());
        obj.extend_from_slice(&zstd::bulk::compress(data, 1).unwrap());
        obj
    }

    #[test]
    fn version_1_objects_are_read() {
        let mut seg = vec![0u8; 1 << 20];
        seg[..1000].iter_mut().for_each(|b| *b = 3);
        let v1 = encode_v1(&seg);
        assert_eq!(decode(&v1, "w").unwrap(), seg);
        check(&v1, "w").unwrap();
        let h = WalHeader::decode(&v1[..WalHeader::LEN], "w").unwrap();
        assert_eq!((h.len, h.stored), (seg.len() as u64, seg.len() as u64));
        assert_eq!(h.hash, *blake3::hash(&seg).as_bytes());
        let mut bad = v1.clone();
        let n = bad.len() - 2;
        bad[n] ^= 1;
        assert!(check(&bad, "w").is_err());
    }

    /// The zero tail is left out of the frame; the stored length must match
    /// the frame exactly.
    #[test]
    fn zero_tail_is_not_stored() {
        let mut seg = vec![0u8; 16 << 20];
        seg[..5000].iter_mut().for_each(|b| *b = 9);
        seg[4096 * 3 + 17] = 0;
        let obj = encode(&seg, 1).unwrap();
        let h = WalHeader::decode(&obj, "w").unwrap();
        assert_eq!((h.len, h.stored), (16 << 20, 5000));
        assert_eq!(decode(&obj, "w").unwrap(), seg);
        check(&obj, "w").unwrap();
        for stored in [4999u64, 5001, 17 << 20] {
            let mut other = obj.clone();
            other[WalHeader::STORED_LEN..WalHeader::LEN].copy_from_slice(&stored.to_le_bytes());
            assert!(check(&other, "w").is_err(), "{stored}");
            assert!(decode(&other, "w").is_err(), "{stored}");
        }
        // All zeros, and no zeros at all.
        for seg in [vec![0u8; 3 << 20], vec![1u8; 300_000], Vec::new()] {
            let obj = encode(&seg, 1).unwrap();
            assert_eq!(decode(&obj, "w").unwrap(), seg);
            check(&obj, "w").unwrap();
        }
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
