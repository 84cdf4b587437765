//! The walk over WAL pages that hands out records, for PostgreSQL 14–18 (the
//! page and record header layouts are the same in all of them). Readers of
//! records ([`RecordVisitor`]) say how much of a record they need; the walk
//! never buffers more than that.
//!
//! Segments are fed in LSN order; a record that crosses a page or segment
//! boundary is carried over when the next page continues it. A record whose
//! start was not fed (the first one of a segment read alone) is an *orphan*:
//! its bytes go to [`RecordVisitor::orphan`]. A page whose address is not
//! where it should be (a recycled or zeroed page) ends any record in
//! progress. A record within one page is handed whole, without copying; one
//! that crosses pages is assembled up to the length its reader keeps.

use crate::error::{Error, Result};
use crate::pg::wal::LongPageHeader;
use crate::pg::Lsn;

pub(crate) const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
pub(crate) const XLP_LONG_HEADER: u16 = 0x0002;
pub(crate) const SHORT_HEADER: usize = 24;
pub(crate) const LONG_HEADER: usize = 40;
/// `SizeOfXLogRecord`.
pub(crate) const RECORD_HEADER: usize = 24;
/// `XLogRecordMaxSize` (1020 MiB): a longer length is not a record.
const RECORD_MAX: usize = 1020 * 1024 * 1024;

pub(crate) fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    (u64::from(u32_at(b, o + 4)) << 32) | u64::from(u32_at(b, o))
}
pub(crate) fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Why the records stop before the end of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Zeros where a record would start: the end of WAL, or the padding
    /// after a WAL switch.
    Zeros,
    /// The page is not the one expected at its address (recycled, zeroed,
    /// or a continuation that does not continue the record in progress).
    BadPage,
    /// A record length no record can have.
    BadLength,
}

/// What a reader of records wants from the walk.
pub(crate) trait RecordVisitor {
    /// How many leading bytes to keep of a record of `total` bytes that
    /// crosses a page, given its fixed header (the first 24 bytes).
    fn keep(&self, header: &[u8], total: usize) -> usize;
    /// A record that starts at `start` and is `total` bytes long. `bytes` is
    /// the whole record when it lies within one page, else its first
    /// `min(keep, total)` bytes (never fewer than the fixed header).
    fn record(&mut self, start: u64, total: usize, bytes: &[u8]);
    /// Bytes of an orphan (a record whose start was not fed): the piece
    /// `offset..offset + bytes.len()` of its `rem` remaining bytes.
    fn orphan(&mut self, _offset: usize, _rem: usize, _bytes: &[u8]) {}
    /// The records stop at `at`, for the rest of its page (at the start of
    /// a record lost to a bad page, when one was in progress).
    fn stop(&mut self, _at: u64, _why: Stop) {}
}

/// A record being assembled over pages.
pub(crate) struct Pending {
    pub start: u64,
    pub total: usize,
    pub got: usize,
    keep: Option<usize>,
    pub buf: Vec<u8>,
    orphan: bool,
}

impl Pending {
    fn new(start: u64, total: usize, orphan: bool) -> Self {
        Pending {
            start,
            total,
            got: 0,
            keep: None,
            buf: Vec::new(),
            orphan,
        }
    }

    fn absorb<V: RecordVisitor + ?Sized>(&mut self, chunk: &[u8], v: &mut V) {
        if self.orphan {
            v.orphan(self.got, self.total, chunk);
            self.got += chunk.len();
            return;
        }
        let mut rest = chunk;
        if self.keep.is_none() {
            let n = (RECORD_HEADER - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == RECORD_HEADER {
                self.keep = Some(v.keep(&self.buf, self.total).min(self.total));
            }
        }
        if let Some(k) = self.keep {
            let n = k.saturating_sub(self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
        }
        self.got += chunk.len();
    }
}

/// The walk's state between pages and segments.
#[derive(Default)]
pub(crate) struct WalWalker {
    pending: Option<Pending>,
    next: Option<u64>,
}

impl WalWalker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The record in progress at the end of what was fed (not an orphan).
    pub(crate) fn unfinished(&self) -> Option<&Pending> {
        self.pending.as_ref().filter(|p| !p.orphan)
    }

    /// Walk one whole segment that starts at `start`; returns its long
    /// page header.
    pub(crate) fn feed_segment<V: RecordVisitor + ?Sized>(
        &mut self,
        start: Lsn,
        data: &[u8],
        what: &str,
        v: &mut V,
    ) -> Result<LongPageHeader> {
        if self.next != Some(start.0) {
            self.pending = None;
        }
        let h = LongPageHeader::parse(data, what)?;
        let blcksz = h.block_size as usize;
        if !(1024..=65536).contains(&blcksz)
            || !blcksz.is_power_of_two()
            || data.len() % blcksz != 0
        {
            return Err(Error::corrupt(
                what,
                format!(
                    "WAL block size {blcksz} does not fit a {} byte segment",
                    data.len()
                ),
            ));
        }
        for (i, page) in data.chunks(blcksz).enumerate() {
            self.page(start.0 + (i * blcksz) as u64, page, h.magic, v);
        }
        self.next = Some(start.0 + data.len() as u64);
        Ok(h)
    }

    /// Drop the record in progress; where the records stop: its start, or
    /// `addr` when none was.
    fn lost(&mut self, addr: u64) -> u64 {
        match self.pending.take() {
            Some(p) if !p.orphan => p.start,
            _ => addr,
        }
    }

    fn page<V: RecordVisitor + ?Sized>(&mut self, addr: u64, page: &[u8], magic: u16, v: &mut V) {
        let info = u16_at(page, 2);
        if u16_at(page, 0) != magic || u64_at(page, 8) != addr {
            let at = self.lost(addr);
            v.stop(at, Stop::BadPage);
            return;
        }
        let len = page.len();
        let hdr = if info & XLP_LONG_HEADER != 0 {
            LONG_HEADER
        } else {
            SHORT_HEADER
        };
        let mut pos = hdr;
        if info & XLP_FIRST_IS_CONTRECORD != 0 {
            let rem = u32_at(page, 16) as usize;
            let mut p = match self.pending.take() {
                Some(p) if p.total - p.got == rem => p,
                Some(p) if !p.orphan => {
                    v.stop(p.start, Stop::BadPage);
                    return;
                }
                _ => Pending::new(addr, rem, true),
            };
            p.absorb(&page[hdr..hdr + rem.min(len - hdr)], v);
            if p.got < p.total {
                self.pending = Some(p);
                return;
            }
            if !p.orphan {
                v.record(p.start, p.total, &p.buf);
            }
            pos = hdr + align8(rem);
        } else if self.pending.is_some() {
            let at = self.lost(addr);
            v.stop(at, Stop::BadPage);
        }
        while pos + 4 <= len {
            let total = u32_at(page, pos) as usize;
            let start = addr + pos as u64;
            if total < RECORD_HEADER {
                v.stop(start, Stop::Zeros);
                return;
            }
            if total > RECORD_MAX {
                v.stop(start, Stop::BadLength);
                return;
            }
            if pos + total <= len {
                v.record(start, total, &page[pos..pos + total]);
                pos += align8(total);
            } else {
                let mut p = Pending::new(start, total, false);
                p.absorb(&page[pos..], v);
                self.pending = Some(p);
                return;
            }
        }
    }
}

/// A synthetic segment writer for tests: lays records out as PostgreSQL does.
#[cfg(test)]
pub(crate) mod testwal {
    use super::*;

    pub(crate) const BLCKSZ: usize = 8192;
    pub(crate) const SEG: usize = 4 * BLCKSZ;

    pub(crate) struct Writer {
        pub data: Vec<u8>,
    }

    impl Writer {
        pub(crate) fn new(seg_start: u64, first_rem: u32) -> Self {
            Self::with_magic(seg_start, first_rem, 0xD116)
        }

        pub(crate) fn with_magic(seg_start: u64, first_rem: u32, magic: u16) -> Self {
            let mut w = Writer { data: vec![0; SEG] };
            for p in 0..SEG / BLCKSZ {
                let o = p * BLCKSZ;
                w.data[o..o + 2].copy_from_slice(&magic.to_le_bytes());
                let mut info: u16 = if p == 0 { XLP_LONG_HEADER } else { 0 };
                if p == 0 && first_rem > 0 {
                    info |= XLP_FIRST_IS_CONTRECORD;
                    w.data[o + 16..o + 20].copy_from_slice(&first_rem.to_le_bytes());
                }
                w.data[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
                w.data[o + 4..o + 8].copy_from_slice(&1u32.to_le_bytes());
                w.data[o + 8..o + 16].copy_from_slice(&(seg_start + o as u64).to_le_bytes());
            }
            w.data[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
            w.data[36..40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
            w
        }

        /// Write `rec` at segment offset `at`, splitting it over pages;
        /// returns the bytes that did not fit in this segment.
        pub(crate) fn put(&mut self, mut at: usize, rec: &[u8]) -> Vec<u8> {
            let mut rest = rec;
            loop {
                let page_end = (at / BLCKSZ + 1) * BLCKSZ;
                let n = rest.len().min(page_end - at);
                self.data[at..at + n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                if rest.is_empty() {
                    return Vec::new();
                }
                if page_end >= SEG {
                    return rest.to_vec();
                }
                let o = page_end;
                let info = u16_at(&self.data, o + 2) | XLP_FIRST_IS_CONTRECORD;
                self.data[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
                self.data[o + 16..o + 20].copy_from_slice(&(rest.len() as u32).to_le_bytes());
                at = o + SHORT_HEADER;
            }
        }

        /// Write records one after another from segment offset `at`, the
        /// way PostgreSQL places them (8-byte aligned, skipping page
        /// headers); returns where the next record goes, or the bytes that
        /// spilled into the next segment.
        pub(crate) fn append(&mut self, mut at: usize, recs: &[Vec<u8>]) -> (usize, Vec<u8>) {
            for r in recs {
                if at % BLCKSZ == 0 {
                    at += SHORT_HEADER;
                }
                let rest = self.put(at, r);
                if !rest.is_empty() {
                    return (SEG, rest);
                }
                at = end_of(at, r.len());
            }
            (at, Vec::new())
        }
    }

    /// Where the next record starts after one of `len` bytes written at `at`.
    pub(crate) fn end_of(at: usize, len: usize) -> usize {
        let mut pos = at;
        let mut left = len;
        loop {
            let page_end = (pos / BLCKSZ + 1) * BLCKSZ;
            let n = left.min(page_end - pos);
            left -= n;
            pos += n;
            if left == 0 {
                return align8(pos);
            }
            pos += SHORT_HEADER;
        }
    }
}
