//! A small WAL record reader that finds `XLOG_RESTORE_POINT` records
//! (`pg_create_restore_point`) in archived segments, for PostgreSQL 14–18
//! (the page and record header layouts are the same in all of them).
//!
//! Segments are fed in LSN order; a record that crosses a page or segment
//! boundary is carried over when the next page continues it. A page whose
//! address is not where it should be (a recycled or zeroed page) ends any
//! record in progress. Only small records are buffered: restore points are
//! about a hundred bytes, larger records are skipped by length.

use crate::error::{Error, Result};
use crate::pg::wal::LongPageHeader;
use crate::pg::Lsn;

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_HEADER: usize = 24;
const LONG_HEADER: usize = 40;
/// `SizeOfXLogRecord`.
const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// Records up to this size are kept in memory while they are assembled.
const BUFFER_LIMIT: usize = 4096;
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_S: i64 = 946_684_800;

/// One `pg_create_restore_point`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RestorePoint {
    pub name: String,
    /// Where the record starts.
    pub lsn: Lsn,
    /// `rp_time`, unix microseconds.
    pub time_us: i64,
}

struct Pending {
    start: u64,
    total: usize,
    got: usize,
    buf: Vec<u8>,
}

/// Feeds segments in order; collects the restore points found.
#[derive(Default)]
pub(crate) struct RestorePointScanner {
    pending: Option<Pending>,
    next: Option<u64>,
    pub found: Vec<RestorePoint>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    (u64::from(u32_at(b, o + 4)) << 32) | u64::from(u32_at(b, o))
}
fn align8(n: usize) -> usize {
    (n + 7) & !7
}

impl RestorePointScanner {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Read one whole segment that starts at `start`.
    pub(crate) fn feed_segment(&mut self, start: Lsn, data: &[u8], what: &str) -> Result<()> {
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
            self.page(start.0 + (i * blcksz) as u64, page, h.magic);
        }
        self.next = Some(start.0 + data.len() as u64);
        Ok(())
    }

    fn page(&mut self, addr: u64, page: &[u8], magic: u16) {
        let info = u16_at(page, 2);
        if u16_at(page, 0) != magic || u64_at(page, 8) != addr {
            self.pending = None;
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
            match self.pending.take() {
                Some(mut p) if p.total - p.got == rem => {
                    let n = rem.min(len - hdr);
                    if p.total <= BUFFER_LIMIT {
                        p.buf.extend_from_slice(&page[hdr..hdr + n]);
                    }
                    p.got += n;
                    if p.got < p.total {
                        self.pending = Some(p);
                        return;
                    }
                    if p.total <= BUFFER_LIMIT {
                        self.record(p.start, &p.buf);
                    }
                }
                _ => {
                    // The start of this record is not here: skip its tail.
                    if hdr + rem >= len {
                        return;
                    }
                }
            }
            pos = hdr + align8(rem);
        } else {
            self.pending = None;
        }
        while pos + 4 <= len {
            let total = u32_at(page, pos) as usize;
            if total < RECORD_HEADER {
                // Zeros after the end of WAL (or after a WAL switch).
                return;
            }
            let start = addr + pos as u64;
            if pos + total <= len {
                self.record(start, &page[pos..pos + total]);
                pos += align8(total);
            } else {
                let buf = if total <= BUFFER_LIMIT {
                    page[pos..].to_vec()
                } else {
                    Vec::new()
                };
                self.pending = Some(Pending {
                    start,
                    total,
                    got: len - pos,
                    buf,
                });
                return;
            }
        }
    }

    fn record(&mut self, start: u64, rec: &[u8]) {
        if rec.len() < RECORD_HEADER + 2
            || rec[17] != RM_XLOG_ID
            || rec[16] & 0xF0 != XLOG_RESTORE_POINT
        {
            return;
        }
        // Record headers: optional origin / top-level xid, then the main data length.
        let mut i = RECORD_HEADER;
        let main_len = loop {
            let Some(&id) = rec.get(i) else { return };
            match id {
                XLR_BLOCK_ID_DATA_SHORT => match rec.get(i + 1) {
                    Some(&n) => break n as usize,
                    None => return,
                },
                XLR_BLOCK_ID_DATA_LONG => {
                    if i + 5 > rec.len() {
                        return;
                    }
                    break u32_at(rec, i + 1) as usize;
                }
                XLR_BLOCK_ID_ORIGIN => i += 3,
                XLR_BLOCK_ID_TOPLEVEL_XID => i += 5,
                _ => return,
            }
        };
        // xl_restore_point: TimestampTz rp_time; char rp_name[64].
        if main_len < 9 || main_len > rec.len() {
            return;
        }
        let main = &rec[rec.len() - main_len..];
        let pg_us = i64::from_le_bytes([
            main[0], main[1], main[2], main[3], main[4], main[5], main[6], main[7],
        ]);
        let name_bytes = &main[8..];
        let end = name_bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_bytes.len());
        self.found.push(RestorePoint {
            name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
            lsn: Lsn(start),
            time_us: pg_us.saturating_add(PG_EPOCH_UNIX_S * 1_000_000),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLCKSZ: usize = 8192;
    const SEG: usize = 4 * BLCKSZ;

    /// A synthetic segment writer: lays records out as PostgreSQL does.
    struct Writer {
        data: Vec<u8>,
    }

    impl Writer {
        fn new(seg_start: u64, first_rem: u32) -> Self {
            let mut w = Writer { data: vec![0; SEG] };
            for p in 0..SEG / BLCKSZ {
                let o = p * BLCKSZ;
                w.data[o..o + 2].copy_from_slice(&0xD116u16.to_le_bytes());
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
        fn put(&mut self, mut at: usize, rec: &[u8]) -> Vec<u8> {
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
    }

    fn record(rmid: u8, info: u8, main: &[u8], origin: bool) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_HEADER];
        r[16] = info;
        r[17] = rmid;
        if origin {
            r.extend_from_slice(&[XLR_BLOCK_ID_ORIGIN, 1, 0]);
        }
        if main.len() < 256 {
            r.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]);
        } else {
            r.push(XLR_BLOCK_ID_DATA_LONG);
            r.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        r.extend_from_slice(main);
        let total = r.len() as u32;
        r[0..4].copy_from_slice(&total.to_le_bytes());
        r
    }

    fn restore_point(name: &str, pg_us: i64, origin: bool) -> Vec<u8> {
        let mut main = pg_us.to_le_bytes().to_vec();
        let mut n = [0u8; 64];
        n[..name.len()].copy_from_slice(name.as_bytes());
        main.extend_from_slice(&n);
        record(RM_XLOG_ID, XLOG_RESTORE_POINT, &main, origin)
    }

    /// A record of another resource manager that fills `at..to` (same page).
    fn filler(w: &mut Writer, at: usize, to: usize) {
        let mut n = to - at - RECORD_HEADER - 2;
        if n >= 256 {
            n -= 3;
        }
        let r = record(10, 0, &vec![1u8; n], false);
        assert_eq!(r.len(), to - at);
        w.put(at, &r);
    }

    #[test]
    fn finds_restore_points_across_pages_and_segments() {
        let big = record(10, 0, &vec![7u8; 3 * BLCKSZ / 2], false);
        let mut w = Writer::new(0, 0);
        // A big record crossing a page, then a restore point right after.
        w.put(LONG_HEADER, &big);
        let a_at = align8(LONG_HEADER + big.len() + SHORT_HEADER);
        let a = restore_point("first", 5, false);
        w.put(a_at, &a);
        // A restore point whose header crosses the page boundary.
        let b_at = 2 * BLCKSZ - 16;
        filler(&mut w, align8(a_at + a.len()), b_at);
        let b = restore_point("second", 6, true);
        w.put(b_at, &b);
        // One crossing into the next segment, after a page of other records.
        let c_at = SEG - 40;
        let mut at = align8(2 * BLCKSZ + SHORT_HEADER + (b.len() - 16));
        while at < c_at {
            let page_end = (at / BLCKSZ + 1) * BLCKSZ;
            let limit = page_end.min(c_at);
            let mut to = (at + 200).min(limit);
            if limit - to < 32 {
                to = limit;
            }
            filler(&mut w, at, to);
            at = if to == page_end {
                to + SHORT_HEADER
            } else {
                to
            };
        }
        let c = restore_point("third", 7, false);
        let rest = w.put(c_at, &c);
        assert!(!rest.is_empty());
        let mut w2 = Writer::new(SEG as u64, rest.len() as u32);
        w2.put(LONG_HEADER, &rest);
        // A record of another kind with the same info bits is not a restore point.
        let other = record(3, XLOG_RESTORE_POINT, &[0u8; 72], false);
        w2.put(LONG_HEADER + align8(rest.len()), &other);

        let mut s = RestorePointScanner::new();
        s.feed_segment(Lsn(0), &w.data, "seg1").unwrap();
        s.feed_segment(Lsn(SEG as u64), &w2.data, "seg2").unwrap();
        let got: Vec<(&str, u64)> = s.found.iter().map(|r| (r.name.as_str(), r.lsn.0)).collect();
        assert_eq!(
            got,
            vec![
                ("first", a_at as u64),
                ("second", b_at as u64),
                ("third", c_at as u64)
            ]
        );
        assert_eq!(s.found[0].time_us, 5 + PG_EPOCH_UNIX_S * 1_000_000);

        // A gap (the first segment missing) loses only the record that crossed it.
        let mut s = RestorePointScanner::new();
        s.feed_segment(Lsn(SEG as u64), &w2.data, "seg2").unwrap();
        assert!(s.found.is_empty());
        // Short or malformed input is an error, not a panic.
        assert!(s.feed_segment(Lsn(0), &[0u8; 10], "short").is_err());
    }

    #[test]
    fn stale_pages_end_a_record() {
        let mut w = Writer::new(0, 0);
        let c = restore_point("lost", 1, false);
        w.put(BLCKSZ - 16, &c);
        // The next page is from an older use of the file.
        w.data[BLCKSZ + 8..BLCKSZ + 16].copy_from_slice(&999u64.to_le_bytes());
        let mut s = RestorePointScanner::new();
        s.feed_segment(Lsn(0), &w.data, "seg").unwrap();
        assert!(s.found.is_empty());
    }
}
