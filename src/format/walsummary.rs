//! WAL block summaries: per archived segment, which blocks of which
//! relation forks its records write, and the records after which that
//! cannot be trusted as it is ([`WalEvent`]), so an incremental backup can
//! read only the blocks WAL says changed since its reference.
//!
//! ```text
//! "PGSTRWS1"                                         8 bytes
//! one zstd frame of the body:
//!   start u64, end u64 (LE)    records accounted for: [start, end)
//!   seg_size u32, timeline u32 (LE), major u8
//!   head: varint rem (0: none), varint len, bytes
//!   tail: varint total (0: none), varint start - segment start,
//!         varint len, bytes
//!   varint forks; per fork, in (spc, db, rel, fork) order:
//!     varint spc, db, rel; u8 fork; varint runs;
//!     per run: varint gap from the previous run's end, varint length - 1
//!   varint events; per event: varint lsn - segment start, u8 kind, fields
//! ```
//!
//! Backups make summaries when they need them and keep them in memory only
//! (design.md, Change tracking), so the encoding above is built only for the
//! tests and benches (`testing`), which measure what a stored summary costs.
//!
//! Invariants: decoding never panics and never allocates more than the
//! input can describe; garbage is [`Error::Corrupt`]. Blocks are kept as
//! one `RoaringBitmap` per relation fork, so a union of many summaries
//! ([`BlockUnion`]) costs about 2 bytes per changed block when changes are
//! scattered and 1 bit per block when they are dense: 10^7 changed blocks
//! need 1.25–20 MiB, not the 80+ MiB of a sorted list of pairs.

use std::collections::BTreeMap;

use roaring::RoaringBitmap;

#[cfg(any(test, feature = "testing"))]
use super::check_magic;
use crate::error::{Error, Result};
use crate::pg::walblocks::{
    decode_stitched, scan_segment, Flavor, Head, RelFork, SegmentScan, Tail, WalEvent,
};
use crate::pg::Lsn;

#[cfg(any(test, feature = "testing"))]
pub(crate) const MAGIC: &[u8; 8] = b"PGSTRWS1";
/// The most a summary's body may decompress to.
#[cfg(any(test, feature = "testing"))]
const BODY_MAX: usize = 256 << 20;

/// The block summary of one WAL segment.
#[derive(Clone, Debug, PartialEq)]
pub struct WalSummary {
    pub start: Lsn,
    /// Records are accounted for up to here (see [`SegmentScan::end`]).
    pub end: Lsn,
    pub seg_size: u32,
    pub timeline: u32,
    pub major: u32,
    pub blocks: BTreeMap<RelFork, RoaringBitmap>,
    pub events: Vec<(Lsn, WalEvent)>,
    pub head: Option<Head>,
    pub tail: Option<Tail>,
}

impl WalSummary {
    /// Summarise one whole segment that starts at `start`.
    pub fn of_segment(start: Lsn, data: &[u8], what: &str) -> Result<Self> {
        let scan = scan_segment(start, data, what)?;
        WalSummary::from_scan(scan, what)
    }

    pub fn from_scan(mut scan: SegmentScan, what: &str) -> Result<Self> {
        scan.blocks.sort_unstable();
        scan.blocks.dedup();
        let mut blocks: BTreeMap<RelFork, RoaringBitmap> = BTreeMap::new();
        for run in scan.blocks.chunk_by(|a, b| a.rel == b.rel) {
            let bm = RoaringBitmap::from_sorted_iter(run.iter().map(|b| b.block))
                .map_err(|e| Error::Internal(format!("{what}: block summary: {e}")))?;
            blocks.insert(run[0].rel, bm);
        }
        let seg_size = u32::try_from(scan.seg_size)
            .map_err(|_| Error::corrupt(what, "WAL segment larger than 4 GiB"))?;
        Ok(WalSummary {
            start: scan.start,
            end: scan.end,
            seg_size,
            timeline: scan.timeline,
            major: scan.major,
            blocks,
            events: scan.events,
            head: scan.head,
            tail: scan.tail,
        })
    }

    /// Blocks named, over all forks.
    #[cfg(any(test, feature = "testing"))]
    pub fn block_count(&self) -> u64 {
        self.blocks.values().map(RoaringBitmap::len).sum()
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.start.0.to_le_bytes());
        b.extend_from_slice(&self.end.0.to_le_bytes());
        b.extend_from_slice(&self.seg_size.to_le_bytes());
        b.extend_from_slice(&self.timeline.to_le_bytes());
        b.push(self.major as u8);
        match &self.head {
            Some(h) => {
                put(&mut b, u64::from(h.rem));
                put_bytes(&mut b, &h.bytes);
            }
            None => put(&mut b, 0),
        }
        match &self.tail {
            Some(t) => {
                put(&mut b, u64::from(t.total));
                put(&mut b, t.start.0.wrapping_sub(self.start.0));
                put_bytes(&mut b, &t.bytes);
            }
            None => put(&mut b, 0),
        }
        put(&mut b, self.blocks.len() as u64);
        for (rel, bm) in &self.blocks {
            put_rel(&mut b, rel);
            put_runs(&mut b, bm);
        }
        put(&mut b, self.events.len() as u64);
        for (lsn, e) in &self.events {
            put(&mut b, lsn.0.wrapping_sub(self.start.0));
            put_event(&mut b, e);
        }
        let z = zstd::bulk::compress(&b, 3)
            .map_err(|e| Error::Internal(format!("zstd compression: {e}")))?;
        let mut out = Vec::with_capacity(MAGIC.len() + z.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&z);
        Ok(out)
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn decode(obj: &[u8], what: &str) -> Result<Self> {
        check_magic(obj.get(..8).unwrap_or(obj), MAGIC, what)?;
        let body = zstd::bulk::decompress(&obj[8..], BODY_MAX)
            .map_err(|e| Error::corrupt(what, format!("WAL summary body: {e}")))?;
        let mut r = Reader {
            b: &body,
            at: 0,
            what,
        };
        let start = Lsn(r.u64()?);
        let end = Lsn(r.u64()?);
        let seg_size = r.u32()?;
        let timeline = r.u32()?;
        let major = u32::from(r.u8()?);
        let head = match r.var()? {
            0 => None,
            rem => Some(Head {
                rem: r.fit(rem)?,
                bytes: r.bytes()?,
            }),
        };
        let tail = match r.var()? {
            0 => None,
            total => Some(Tail {
                total: r.fit(total)?,
                start: Lsn(start.0.wrapping_add(r.var()?)),
                bytes: r.bytes()?,
            }),
        };
        let mut blocks = BTreeMap::new();
        for _ in 0..r.count()? {
            let rel = r.rel()?;
            blocks.insert(rel, r.runs()?);
        }
        let mut events = Vec::new();
        for _ in 0..r.count()? {
            let lsn = Lsn(start.0.wrapping_add(r.var()?));
            events.push((lsn, r.event()?));
        }
        if r.at != body.len() {
            return Err(Error::corrupt(what, "trailing bytes after a WAL summary"));
        }
        Ok(WalSummary {
            start,
            end,
            seg_size,
            timeline,
            major,
            blocks,
            events,
            head,
            tail,
        })
    }
}

#[cfg(any(test, feature = "testing"))]
fn put(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

#[cfg(any(test, feature = "testing"))]
fn put_bytes(b: &mut Vec<u8>, bytes: &[u8]) {
    put(b, bytes.len() as u64);
    b.extend_from_slice(bytes);
}

#[cfg(any(test, feature = "testing"))]
fn put_rel(b: &mut Vec<u8>, r: &RelFork) {
    put(b, u64::from(r.spc));
    put(b, u64::from(r.db));
    put(b, u64::from(r.rel));
    b.push(r.fork);
}

/// Runs of consecutive blocks: bulk loads and new relations write long
/// ones, so a run costs two varints however long it is.
#[cfg(any(test, feature = "testing"))]
fn put_runs(b: &mut Vec<u8>, bm: &RoaringBitmap) {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for blk in bm.iter().map(u64::from) {
        match runs.last_mut() {
            Some((s, n)) if *s + *n == blk => *n += 1,
            _ => runs.push((blk, 1)),
        }
    }
    put(b, runs.len() as u64);
    let mut prev_end = 0u64;
    for (s, n) in runs {
        put(b, s - prev_end);
        put(b, n - 1);
        prev_end = s + n;
    }
}

#[cfg(any(test, feature = "testing"))]
fn put_event(b: &mut Vec<u8>, e: &WalEvent) {
    match e {
        WalEvent::RelCreate { rel } => {
            b.push(1);
            put_rel(b, rel);
        }
        WalEvent::RelTruncate { rel, blocks, flags } => {
            b.push(2);
            put_rel(b, rel);
            put(b, u64::from(*blocks));
            put(b, u64::from(*flags));
        }
        WalEvent::DbCreate {
            spc,
            db,
            copied_from,
        } => {
            b.push(3);
            put(b, u64::from(*spc));
            put(b, u64::from(*db));
            match copied_from {
                Some((s, d)) => {
                    b.push(1);
                    put(b, u64::from(*s));
                    put(b, u64::from(*d));
                }
                None => b.push(0),
            }
        }
        WalEvent::DbDrop { db, spcs } => {
            b.push(4);
            put(b, u64::from(*db));
            put(b, spcs.len() as u64);
            spcs.iter().for_each(|s| put(b, u64::from(*s)));
        }
        WalEvent::WalLevel(l) => {
            b.push(5);
            put(b, u64::from(*l));
        }
        WalEvent::Switch => b.push(6),
        WalEvent::EndOfRecovery { timeline, prev } => {
            b.push(7);
            put(b, u64::from(*timeline));
            put(b, u64::from(*prev));
        }
        WalEvent::Undecodable => b.push(8),
    }
}

/// Bounds-checked reads of a summary body; every failure names `what`.
#[cfg(any(test, feature = "testing"))]
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'a str,
}

#[cfg(any(test, feature = "testing"))]
impl Reader<'_> {
    fn bad(&self, detail: &str) -> Error {
        Error::corrupt(
            self.what,
            format!("WAL summary: {detail} at byte {}", self.at),
        )
    }
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| self.bad("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(super::le_u32(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(super::le_u64(self.take(8)?, 0))
    }
    fn var(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint too long"))
    }
    fn fit(&self, v: u64) -> Result<u32> {
        u32::try_from(v).map_err(|_| self.bad("value out of range"))
    }
    fn u32v(&mut self) -> Result<u32> {
        let v = self.var()?;
        self.fit(v)
    }
    /// A count of items of at least one byte each: never more than remain.
    fn count(&mut self) -> Result<usize> {
        let n = self.var()?;
        if n > (self.b.len() - self.at) as u64 {
            return Err(self.bad("count larger than the data"));
        }
        Ok(n as usize)
    }
    fn bytes(&mut self) -> Result<Vec<u8>> {
        let n = self.count()?;
        Ok(self.take(n)?.to_vec())
    }
    fn rel(&mut self) -> Result<RelFork> {
        Ok(RelFork {
            spc: self.u32v()?,
            db: self.u32v()?,
            rel: self.u32v()?,
            fork: self.u8()?,
        })
    }
    fn runs(&mut self) -> Result<RoaringBitmap> {
        let mut bm = RoaringBitmap::new();
        let mut prev_end = 0u64;
        for _ in 0..self.count()? {
            let s = prev_end + self.var()?;
            let n = self.var()?.saturating_add(1);
            let end = s.checked_add(n).filter(|e| *e <= 1 << 32);
            let end = end.ok_or_else(|| self.bad("block run past 2^32"))?;
            bm.insert_range(s as u32..=(end - 1) as u32);
            prev_end = end;
        }
        Ok(bm)
    }
    fn event(&mut self) -> Result<WalEvent> {
        Ok(match self.u8()? {
            1 => WalEvent::RelCreate { rel: self.rel()? },
            2 => WalEvent::RelTruncate {
                rel: self.rel()?,
                blocks: self.u32v()?,
                flags: self.u32v()?,
            },
            3 => WalEvent::DbCreate {
                spc: self.u32v()?,
                db: self.u32v()?,
                copied_from: match self.u8()? {
                    0 => None,
                    _ => Some((self.u32v()?, self.u32v()?)),
                },
            },
            4 => {
                let db = self.u32v()?;
                let spcs = (0..self.count()?)
                    .map(|_| self.u32v())
                    .collect::<Result<_>>()?;
                WalEvent::DbDrop { db, spcs }
            }
            5 => WalEvent::WalLevel(self.u32v()?),
            6 => WalEvent::Switch,
            7 => WalEvent::EndOfRecovery {
                timeline: self.u32v()?,
                prev: self.u32v()?,
            },
            8 => WalEvent::Undecodable,
            _ => return Err(self.bad("unknown event kind")),
        })
    }
}

/// The union of the summaries of consecutive segments, fed in LSN order:
/// one bitmap per relation fork and the events, in memory bounded by the
/// changed blocks (see the module's note), whatever the number of segments.
#[derive(Debug, Default)]
pub struct BlockUnion {
    pub blocks: BTreeMap<RelFork, RoaringBitmap>,
    pub events: Vec<(Lsn, WalEvent)>,
    /// Records starting in `[first, end)` are all accounted for.
    pub first: Option<Lsn>,
    pub end: Lsn,
    next: Option<(Lsn, Option<Tail>, u32)>,
}

impl BlockUnion {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the summary of the segment that follows the last one added. A
    /// segment that does not follow (a missing one, or WAL that ended
    /// before its segment did) is refused: the union would miss records.
    pub fn add(&mut self, s: WalSummary, what: &str) -> Result<()> {
        if let Some((next, tail, major)) = self.next.take() {
            let switched = self.events.last().is_some_and(|e| e.1 == WalEvent::Switch);
            if s.start != next || (self.end != next && !switched) {
                return Err(Error::invalid(format!(
                    "{what}: WAL block summaries do not follow on: records are accounted for \
                     up to {}, and the next summary starts at {}",
                    self.end, s.start
                )));
            }
            if let Some(t) = tail {
                self.stitch(&t, s.head.as_ref(), major);
            }
        }
        self.first.get_or_insert(s.start);
        self.end = s.end;
        self.next = Some((Lsn(s.start.0 + u64::from(s.seg_size)), s.tail, s.major));
        for (rel, bm) in s.blocks {
            *self.blocks.entry(rel).or_default() |= bm;
        }
        self.events.extend(s.events);
        Ok(())
    }

    /// Decode a record split between two segments; one that cannot be is
    /// [`WalEvent::Undecodable`].
    fn stitch(&mut self, tail: &Tail, head: Option<&Head>, major: u32) {
        let mut refs = Vec::new();
        let r = match (head, Flavor::of_major(major)) {
            (Some(h), Some(f)) => decode_stitched(tail, h, f, &mut refs),
            _ => None,
        };
        match r {
            Some(Ok(e)) => self.events.extend(e.map(|e| (tail.start, e))),
            _ => self.events.push((tail.start, WalEvent::Undecodable)),
        }
        for b in refs {
            self.blocks.entry(b.rel).or_default().insert(b.block);
        }
    }

    /// Blocks named, over all forks.
    #[cfg(any(test, feature = "testing"))]
    pub fn block_count(&self) -> u64 {
        self.blocks.values().map(RoaringBitmap::len).sum()
    }
}

#[cfg(test)]
#[path = "walsummary_tests.rs"]
mod tests;
