//! Streaming one pack: every record is read in order, once, and its bytes are
//! checked against the chunk id in its header (and in the trailer, when the
//! trailer itself verifies). Memory stays at one record at a time.
//!
//! With a good trailer, records are read at the offsets it lists, so a
//! damaged record header cannot desynchronise the rest of the pack. Without
//! one (a truncated pack), records are parsed from the start until the first
//! one that cannot be parsed.

use std::collections::HashMap;
use std::io::Read;

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::store::chunk::{decode_verified, ChunkId, Codec};
use crate::store::pack::{decode_record, pack_key, read_trailer, HEADER_MAGIC, RECORD_HEADER};
use crate::store::Backend;

/// A record longer than this cannot be real (chunks are at most 128 blocks;
/// block maps of 1 GiB segments are about 2 MiB): stop rather than allocate.
const MAX_RECORD: u64 = 256 << 20;

/// What streaming a pack found.
#[derive(Debug, Default)]
pub struct PackScan {
    /// Records whose bytes match their id: offset → (id, stored length).
    pub good: HashMap<u64, (ChunkId, u32)>,
    /// Records that failed: offset → what went wrong.
    pub bad: HashMap<u64, String>,
    /// A problem with the pack as a whole (truncated, trailer, header).
    pub damage: Option<String>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Read `n` bytes, or `None` at a premature end of the object.
fn read_n(r: &mut dyn Read, n: usize, key: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; n];
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::io(key, e)),
    }
}

fn skip(r: &mut dyn Read, n: u64, key: &str) -> Result<bool> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| Error::io(key, e))?;
    Ok(got == n)
}

/// Stream pack `pack_id` (`size` bytes on disk) and check every record.
pub fn scan(
    backend: &dyn Backend,
    pack_id: &str,
    size: u64,
    progress: &dyn Progress,
) -> Result<PackScan> {
    let key = pack_key(pack_id);
    let mut out = PackScan::default();
    let trailer = match read_trailer(backend, pack_id) {
        Ok(t) => Some(t),
        Err(Error::Corrupt { detail, .. }) => {
            out.damage = Some(detail);
            None
        }
        Err(Error::NotFound(d)) => {
            out.damage = Some(d);
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let mut r = backend.open(&key)?;
    match read_n(r.as_mut(), HEADER_MAGIC.len(), &key)? {
        Some(h) if h == HEADER_MAGIC => {}
        _ => {
            out.damage.get_or_insert_with(|| "no pack header".into());
            progress.advance(size);
            return Ok(out);
        }
    }
    let mut pos = HEADER_MAGIC.len() as u64;
    match trailer {
        Some(entries) => {
            for e in entries {
                if e.offset < pos || !skip(r.as_mut(), e.offset - pos, &key)? {
                    out.bad
                        .insert(e.offset, "the trailer lists a record out of order".into());
                    break;
                }
                pos = e.offset;
                let len = RECORD_HEADER + e.stored_len as usize;
                let Some(rec) = read_n(r.as_mut(), len, &key)? else {
                    out.bad.insert(e.offset, "truncated".into());
                    break;
                };
                pos += len as u64;
                progress.advance(len as u64);
                match decode_record(&rec, &e.id, &key, &key) {
                    Ok(_) => {
                        out.good.insert(e.offset, (e.id, e.stored_len));
                    }
                    Err(err) => {
                        out.bad.insert(e.offset, detail_of(err));
                    }
                }
            }
            progress.advance(size.saturating_sub(pos));
        }
        None => {
            // No trustworthy trailer: parse records until one does not parse.
            while pos + RECORD_HEADER as u64 <= size {
                let offset = pos;
                let Some(h) = read_n(r.as_mut(), RECORD_HEADER, &key)? else {
                    break;
                };
                let raw_len = u64::from(u32_at(&h, 4));
                let stored_len = u32_at(&h, 8);
                let codec = Codec::from_u8(h[0]);
                let id = ChunkId::from_slice(&h[12..44]);
                let (Ok(codec), Some(id)) = (codec, id) else {
                    break;
                };
                if h[1..4] != [0, 0, 0]
                    || raw_len > MAX_RECORD
                    || u64::from(stored_len) > size - offset - RECORD_HEADER as u64
                {
                    // The trailer (or garbage) starts here.
                    break;
                }
                let Some(payload) = read_n(r.as_mut(), stored_len as usize, &key)? else {
                    break;
                };
                pos += (RECORD_HEADER + stored_len as usize) as u64;
                progress.advance(pos - offset);
                match decode_verified(&id, codec, &payload, raw_len as usize, &key) {
                    Ok(_) => {
                        out.good.insert(offset, (id, stored_len));
                    }
                    Err(err) => {
                        out.bad.insert(offset, detail_of(err));
                    }
                }
            }
            progress.advance(size.saturating_sub(pos));
        }
    }
    Ok(out)
}

fn detail_of(e: Error) -> String {
    match e {
        Error::Corrupt { detail, .. } => detail,
        other => other.to_string(),
    }
}
