//! Pass 3: packs. Streaming one pack: every record is read in order, once, and its bytes are
//! checked against the chunk id in its header (and in the trailer, when the
//! trailer itself verifies). Memory stays at one record at a time.
//!
//! With a good trailer, records are read at the offsets it lists, so a
//! damaged record header cannot desynchronise the rest of the pack. Without
//! one (a truncated pack), records are parsed from the start until the first
//! one that cannot be parsed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

use super::{problem, ProblemKind, Users, VerifyReport};
use crate::catalog::{IndexedChunk, Readers};
use crate::error::{Error, Result};
use crate::format::keys;
use crate::format::pack::{PackId, RecordHeader, HEADER_MAGIC};
use crate::format::ChunkId;
use crate::progress::Progress;
use crate::repo::{Repository, Stored};

/// A record longer than this cannot be real (chunks are at most 128 blocks;
/// block maps of 1 GiB segments are about 2 MiB): stop rather than allocate.
const MAX_RECORD: u64 = 256 << 20;

/// What streaming a pack found.
#[derive(Debug, Default)]
pub(super) struct PackScan {
    /// Records whose bytes match their id: offset → (id, stored length).
    pub good: HashMap<u64, (ChunkId, u32)>,
    /// Records that failed: offset → what went wrong.
    pub bad: HashMap<u64, String>,
    /// A problem with the pack as a whole (truncated, trailer, header).
    pub damage: Option<String>,
}

/// Read `n` bytes, or `None` at a premature end of the object.
fn read_n(r: &mut dyn Read, n: usize, key: &str) -> Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; n];
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        // A sealed segment that does not authenticate.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(Error::corrupt(key, e.to_string()))
        }
        Err(e) => Err(Error::io(key, e)),
    }
}

fn skip(r: &mut dyn Read, n: u64, key: &str) -> Result<bool> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| Error::io(key, e))?;
    Ok(got == n)
}

/// Stream pack `pack_id` (`size` bytes on disk) and check every record.
pub(super) fn scan(
    stored: &Stored,
    pack_id: &PackId,
    size: u64,
    progress: &dyn Progress,
) -> Result<PackScan> {
    let key = keys::pack(pack_id);
    let mut out = PackScan::default();
    let trailer = match stored.pack_trailer(pack_id) {
        Ok(t) => Some(t),
        Err(Error::Corrupt { detail, .. }) => {
            out.damage = Some(detail);
            None
        }
        Err(e @ (Error::MissingObject { .. } | Error::NewerFormat { .. })) => {
            out.damage = Some(e.to_string());
            progress.advance(size);
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let mut r = match stored.open(&key) {
        Ok(r) => r,
        Err(e @ Error::MissingObject { .. }) => {
            out.damage = Some(e.to_string());
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let pos = match stream(r.as_mut(), stored, &key, size, trailer, progress, &mut out) {
        Ok(pos) => pos,
        // An encrypted pack's damaged segment ends the stream; the records
        // not reached are reported as unreadable.
        Err(Error::Corrupt { detail, .. }) => {
            out.damage.get_or_insert(detail);
            0
        }
        Err(e) => return Err(e),
    };
    progress.advance(size.saturating_sub(pos));
    Ok(out)
}

/// Check the header, then every record. Returns where reading stopped.
fn stream(
    r: &mut dyn Read,
    stored: &Stored,
    key: &str,
    size: u64,
    trailer: Option<Vec<crate::format::pack::TrailerEntry>>,
    progress: &dyn Progress,
    out: &mut PackScan,
) -> Result<u64> {
    match read_n(r, HEADER_MAGIC.len(), key)? {
        Some(h) if h == HEADER_MAGIC => {}
        _ => {
            out.damage.get_or_insert_with(|| "no pack header".into());
            return Ok(0);
        }
    }
    let pos = HEADER_MAGIC.len() as u64;
    match trailer {
        Some(entries) => by_trailer(r, stored, key, entries, pos, progress, out),
        None => by_parsing(r, stored, key, size, pos, progress, out),
    }
}

/// Read the records at the offsets a verified trailer lists. Returns where
/// reading stopped.
fn by_trailer(
    r: &mut dyn Read,
    stored: &Stored,
    key: &str,
    entries: Vec<crate::format::pack::TrailerEntry>,
    mut pos: u64,
    progress: &dyn Progress,
    out: &mut PackScan,
) -> Result<u64> {
    for e in entries {
        if e.offset < pos || !skip(r, e.offset - pos, key)? {
            out.bad
                .insert(e.offset, "the trailer lists a record out of order".into());
            break;
        }
        pos = e.offset;
        let len = RecordHeader::LEN + e.stored_len as usize;
        let Some(rec) = read_n(r, len, key)? else {
            out.bad.insert(e.offset, "truncated".into());
            break;
        };
        pos += len as u64;
        progress.advance(len as u64);
        match stored.check_record(&rec, &e.id, key, key) {
            Ok(_) => {
                out.good.insert(e.offset, (e.id, e.stored_len));
            }
            Err(err) => {
                out.bad.insert(e.offset, detail_of(err));
            }
        }
    }
    Ok(pos)
}

/// No trustworthy trailer: parse records from the start until one does not
/// parse (the trailer, or garbage, starts there). Returns where it stopped.
fn by_parsing(
    r: &mut dyn Read,
    stored: &Stored,
    key: &str,
    size: u64,
    mut pos: u64,
    progress: &dyn Progress,
    out: &mut PackScan,
) -> Result<u64> {
    while pos + RecordHeader::LEN as u64 <= size {
        let offset = pos;
        let Some(h) = read_n(r, RecordHeader::LEN, key)? else {
            break;
        };
        let Ok(h) = RecordHeader::decode(&h, key) else {
            break;
        };
        if u64::from(h.raw_len) > MAX_RECORD
            || u64::from(h.stored_len) > size - offset - RecordHeader::LEN as u64
        {
            break;
        }
        let Some(payload) = read_n(r, h.stored_len as usize, key)? else {
            break;
        };
        pos += h.record_len();
        progress.advance(pos - offset);
        match stored.check_payload(&h.id, h.codec, &payload, h.raw_len as usize, key) {
            Ok(_) => {
                out.good.insert(offset, (h.id, h.stored_len));
            }
            Err(err) => {
                out.bad.insert(offset, detail_of(err));
            }
        }
    }
    Ok(pos)
}

fn detail_of(e: Error) -> String {
    match e {
        Error::Corrupt { detail, .. } => detail,
        other => other.to_string(),
    }
}

/// Packs judged between two attributions of damage: what a window's
/// verdicts hold (the ids of damaged chunks) stays bounded however much of
/// the repository is damaged.
const WINDOW: usize = 16;

/// What one pack's scan came to, judged against its chunk index rows: small
/// unless the pack is damaged (then the ids of what it breaks).
enum Verdict {
    Fine,
    Missing {
        ids: Vec<ChunkId>,
    },
    Corrupt {
        detail: String,
        damaged: Vec<ChunkId>,
    },
}

/// Check every pack of `packs` (`on_disk`: the size of each present). Each
/// worker streams a pack and judges it against the chunk index on a
/// read-only connection of its own (`catalog`) before it takes the next, so
/// at most one scan per worker is held (a record's offset, id and length
/// each: about 50 bytes a record, a few hundred KiB for a pack of small
/// files). Who uses damaged chunks is worked out after each window of
/// packs, on the caller's connection.
pub(super) fn check_all(
    repo: &Repository,
    catalog: &Path,
    packs: &[PackId],
    on_disk: &HashMap<PackId, u64>,
    users: &Users,
    progress: &dyn Progress,
    report: &mut VerifyReport,
) -> Result<()> {
    let stored = repo.stored();
    let readers = Readers::open(catalog, rayon::current_num_threads())?;
    // Each reads one pack's rows of the pack index, in order: a page at a time.
    readers.set_cache_mib(1)?;
    for window in packs.chunks(WINDOW) {
        let verdicts: Vec<Result<(u64, Verdict)>> = window
            .par_iter()
            .map(|p| {
                let size = on_disk.get(p).copied();
                let sc = size
                    .map(|size| scan(&stored, p, size, progress))
                    .transpose()?;
                let rows = readers.get()?.packs().chunks(p)?;
                Ok((rows.len() as u64, judge(&rows, size, sc)))
            })
            .collect();
        for (p, v) in window.iter().zip(verdicts) {
            let (chunks, verdict) = v?;
            report.packs += 1;
            report.chunks += chunks;
            let key = keys::pack(p);
            match verdict {
                Verdict::Fine => {}
                Verdict::Missing { ids } => report.problems.push(problem(
                    ProblemKind::PackMissing,
                    key,
                    format!("the pack holding {} indexed chunks is missing", ids.len()),
                    users.of_chunks(&ids),
                )),
                Verdict::Corrupt { detail, damaged } => report.problems.push(problem(
                    ProblemKind::PackCorrupt,
                    key,
                    detail,
                    users.of_chunks(&damaged),
                )),
            }
        }
    }
    Ok(())
}

/// Judge one pack's scan (`None`: the pack is absent) against the chunk
/// index rows that point into it.
fn judge(rows: &[IndexedChunk], size: Option<u64>, scan: Option<PackScan>) -> Verdict {
    let (Some(size), Some(scan)) = (size, scan) else {
        return Verdict::Missing {
            ids: rows.iter().map(|r| r.id).collect(),
        };
    };
    let mut damaged: Vec<ChunkId> = Vec::new();
    let mut first: Option<String> = None;
    for r in rows {
        if scan.good.get(&r.offset) == Some(&(r.id, r.stored_len)) {
            continue;
        }
        let why = scan.bad.get(&r.offset).cloned().unwrap_or_else(|| {
            if r.offset + u64::from(r.stored_len) > size {
                format!("beyond the end of the pack ({size} bytes): truncated")
            } else {
                "no readable record at its offset".into()
            }
        });
        first.get_or_insert_with(|| format!("chunk {} at offset {}: {why}", r.id, r.offset));
        damaged.push(r.id);
    }
    if damaged.is_empty() && scan.damage.is_none() {
        return Verdict::Fine;
    }
    let mut detail = scan.damage.unwrap_or_default();
    if !damaged.is_empty() {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str(&format!(
            "{} of {} indexed chunks unreadable (first: {})",
            damaged.len(),
            rows.len(),
            first.unwrap_or_default()
        ));
    }
    Verdict::Corrupt { detail, damaged }
}
