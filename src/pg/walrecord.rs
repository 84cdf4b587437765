//! Finds `XLOG_RESTORE_POINT` records (`pg_create_restore_point`) in
//! archived segments, for PostgreSQL 14–18, over the page walk of
//! [`crate::pg::walpage`]. Only small records are buffered: restore points
//! are about a hundred bytes, larger records are skipped by length.

use crate::error::Result;
use crate::pg::walpage::{u32_at, RecordVisitor, WalWalker, RECORD_HEADER};
use crate::pg::Lsn;

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

/// Feeds segments in order; collects the restore points found.
#[derive(Default)]
pub(crate) struct RestorePointScanner {
    walker: WalWalker,
    pub found: Vec<RestorePoint>,
}

/// The restore points of one walk.
#[derive(Default)]
struct Found(Vec<RestorePoint>);

impl RestorePointScanner {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Read one whole segment that starts at `start`.
    pub(crate) fn feed_segment(&mut self, start: Lsn, data: &[u8], what: &str) -> Result<()> {
        let mut found = Found(std::mem::take(&mut self.found));
        let r = self.walker.feed_segment(start, data, what, &mut found);
        self.found = found.0;
        r.map(|_| ())
    }
}

impl RecordVisitor for Found {
    fn keep(&self, header: &[u8], total: usize) -> usize {
        if is_restore_point(header) && total <= BUFFER_LIMIT {
            total
        } else {
            0
        }
    }

    fn record(&mut self, start: u64, total: usize, rec: &[u8]) {
        if rec.len() == total {
            self.restore_point(start, rec);
        }
    }
}

fn is_restore_point(rec: &[u8]) -> bool {
    rec.len() >= RECORD_HEADER && rec[17] == RM_XLOG_ID && rec[16] & 0xF0 == XLOG_RESTORE_POINT
}

impl Found {
    fn restore_point(&mut self, start: u64, rec: &[u8]) {
        if rec.len() < RECORD_HEADER + 2 || !is_restore_point(rec) {
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
        self.0.push(RestorePoint {
            name: String::from_utf8_lossy(&name_bytes[..end]).into_owned(),
            lsn: Lsn(start),
            time_us: pg_us.saturating_add(PG_EPOCH_UNIX_S * 1_000_000),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::walpage::testwal::{Writer, BLCKSZ, SEG};
    use crate::pg::walpage::{align8, LONG_HEADER, SHORT_HEADER};

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
