//! Which relation blocks WAL records touch, for PostgreSQL 14–18: the block
//! references in each record's header, and the few records after which
//! block tracking cannot be trusted for a relation or a database (a fork
//! created or truncated, a database created or dropped, `wal_level`
//! changed, a record that could not be read).
//!
//! Invariants:
//! - only the header part of a record is read (the fixed header, the block
//!   headers and the main data's length, at most [`HEADER_MAX`] bytes); the
//!   payload is skipped by length. The main data is read only for the small
//!   records of [`needs_main`], up to [`SPECIAL_MAX`] bytes;
//! - a header is checked as `DecodeXLogRecord` does (block ids in order, data
//!   flags against lengths, lengths adding up to `xl_tot_len`); one that
//!   fails yields [`WalEvent::Undecodable`], never a guess;
//! - the block image flags are read by major: 14 has `BKPIMAGE_IS_COMPRESSED`
//!   (0x02) and `APPLY` at 0x04; 15 and later have `APPLY` at 0x02 and one
//!   bit per compression method (0x04 pglz, 0x08 lz4, 0x10 zstd).
//!
//! Per segment, [`scan_segment`] keeps what a segment read alone cannot
//! decode: the start of a record that runs into the next segment before its
//! header part ends ([`Tail`]), and the first bytes of the record that the
//! segment starts in the middle of ([`Head`]); [`decode_stitched`] joins a
//! tail with the next segment's head.

use crate::error::{Error, Result};
use crate::pg::walpage::{u16_at, u32_at, RecordVisitor, Stop, WalWalker, RECORD_HEADER};
use crate::pg::Lsn;

/// The most bytes a record's header part can take: the fixed header, 33
/// block headers of at most 27 bytes, origin, top-level xid, main length.
pub const HEADER_MAX: usize = 1024;
/// The largest special record whose main data is read.
pub const SPECIAL_MAX: usize = 4096;

const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
const BKPIMAGE_IS_COMPRESSED_14: u8 = 0x02;
const BKPIMAGE_COMPRESSED_15: u8 = 0x04 | 0x08 | 0x10;

const RM_XLOG_ID: u8 = 0;
const RM_SMGR_ID: u8 = 2;
const RM_DBASE_ID: u8 = 4;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_PARAMETER_CHANGE: u8 = 0x60;
const XLOG_END_OF_RECOVERY: u8 = 0x90;
const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;

/// One fork of one relation: `RelFileLocator` (`RelFileNode` before 16)
/// and the fork number (0 main, 1 fsm, 2 vm, 3 init).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelFork {
    pub spc: u32,
    pub db: u32,
    pub rel: u32,
    pub fork: u8,
}

/// A block of a relation fork that a record writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    pub rel: RelFork,
    pub block: u32,
}

/// A record after which block tracking cannot be trusted as it is, or that
/// bounds the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalEvent {
    /// `XLOG_SMGR_CREATE`: a fork created (its earlier blocks are gone).
    RelCreate { rel: RelFork },
    /// `XLOG_SMGR_TRUNCATE`: `rel` (main fork) cut to `blocks` blocks;
    /// `flags` says which forks (1 main, 2 vm, 4 fsm).
    RelTruncate {
        rel: RelFork,
        blocks: u32,
        flags: u32,
    },
    /// `XLOG_DBASE_CREATE*`: a database directory made; `copied_from` is
    /// the source `(spc, db)` of a file copy, whose files are not in WAL.
    DbCreate {
        spc: u32,
        db: u32,
        copied_from: Option<(u32, u32)>,
    },
    /// `XLOG_DBASE_DROP`: a database removed from these tablespaces.
    DbDrop { db: u32, spcs: Vec<u32> },
    /// `XLOG_PARAMETER_CHANGE`: the `wal_level` from here on (0 minimal).
    WalLevel(u32),
    /// `XLOG_SWITCH`: the rest of the segment is padding.
    Switch,
    /// `XLOG_END_OF_RECOVERY`: a new timeline starts.
    EndOfRecovery { timeline: u32, prev: u32 },
    /// A record whose header (or needed main data) could not be read.
    Undecodable,
}

/// Why a record's header part could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes given end before the part that is needed.
    Short,
    /// The header breaks a rule `DecodeXLogRecord` checks.
    Malformed(&'static str),
}

/// What differs between majors in record headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// 14: one compression bit; `XLOG_DBASE_CREATE` 0x00, `DROP` 0x10.
    Pg14,
    /// 15–18: a bit per compression method; `CREATE_FILE_COPY` 0x00,
    /// `CREATE_WAL_LOG` 0x10, `DROP` 0x20.
    Pg15,
}

impl Flavor {
    /// The flavor of a major, if it is one this decoder reads.
    pub fn of_major(major: u32) -> Option<Flavor> {
        match major {
            14 => Some(Flavor::Pg14),
            15..=18 => Some(Flavor::Pg15),
            _ => None,
        }
    }

    fn compressed(self, bimg_info: u8) -> bool {
        match self {
            Flavor::Pg14 => bimg_info & BKPIMAGE_IS_COMPRESSED_14 != 0,
            Flavor::Pg15 => bimg_info & BKPIMAGE_COMPRESSED_15 != 0,
        }
    }
}

/// Whether a record (by its fixed header) is one whose main data is read.
pub fn needs_main(header: &[u8]) -> bool {
    let (info, rmid) = (header[16] & 0xF0, header[17]);
    match rmid {
        RM_XLOG_ID => matches!(info, XLOG_PARAMETER_CHANGE | XLOG_END_OF_RECOVERY),
        RM_SMGR_ID | RM_DBASE_ID => true,
        _ => false,
    }
}

/// Bounds-checked little-endian reads over a record prefix.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let s = self.b.get(self.at..self.at + n).ok_or(DecodeError::Short)?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16_at(self.take(2)?, 0))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32_at(self.take(4)?, 0))
    }
}

/// Decode the header part of one record from `rec` (its first bytes; the
/// whole record of `total` bytes when its main data is needed). Block
/// references go to `out` (nothing is added on error); a special record's
/// event is returned.
pub fn decode_record(
    rec: &[u8],
    total: usize,
    flavor: Flavor,
    out: &mut Vec<BlockRef>,
) -> Result<Option<WalEvent>, DecodeError> {
    let mark = out.len();
    let r = decode_inner(rec, total, flavor, out);
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

fn decode_inner(
    rec: &[u8],
    total: usize,
    flavor: Flavor,
    out: &mut Vec<BlockRef>,
) -> Result<Option<WalEvent>, DecodeError> {
    if rec.len() < RECORD_HEADER {
        return Err(DecodeError::Short);
    }
    if u32_at(rec, 0) as usize != total {
        return Err(DecodeError::Malformed("xl_tot_len differs"));
    }
    let mut c = Cursor {
        b: rec,
        at: RECORD_HEADER,
    };
    let mut data_total = 0usize;
    let mut next_id = 0u8;
    let mut rel: Option<RelFork> = None;
    let mut main_len = 0usize;
    // As in DecodeXLogRecord: headers go on while more bytes remain than
    // the data announced so far; the main data's length comes last.
    while total.saturating_sub(c.at) > data_total {
        match c.u8()? {
            XLR_BLOCK_ID_DATA_SHORT => main_len = usize::from(c.u8()?),
            XLR_BLOCK_ID_DATA_LONG => main_len = c.u32()? as usize,
            XLR_BLOCK_ID_ORIGIN => {
                c.take(2)?;
                continue;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => {
                c.take(4)?;
                continue;
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                if id < next_id {
                    return Err(DecodeError::Malformed("block ids out of order"));
                }
                next_id = id + 1;
                let b = block_header(&mut c, flavor, &mut rel, &mut data_total)?;
                out.push(b);
                continue;
            }
            _ => return Err(DecodeError::Malformed("invalid block id")),
        }
        break;
    }
    if c.at + data_total + main_len != total {
        return Err(DecodeError::Malformed(
            "lengths do not add up to xl_tot_len",
        ));
    }
    let switch = rec[17] == RM_XLOG_ID && rec[16] & 0xF0 == XLOG_SWITCH;
    if !(switch || needs_main(rec)) {
        return Ok(None);
    }
    let main = rec.get(total - main_len..total).ok_or(DecodeError::Short)?;
    special(rec[17], rec[16] & 0xF0, main, flavor).map(Some)
}

fn block_header(
    c: &mut Cursor<'_>,
    flavor: Flavor,
    rel: &mut Option<RelFork>,
    data_total: &mut usize,
) -> Result<BlockRef, DecodeError> {
    let fork_flags = c.u8()?;
    let data_len = usize::from(c.u16()?);
    if (fork_flags & BKPBLOCK_HAS_DATA != 0) != (data_len != 0) {
        return Err(DecodeError::Malformed(
            "block data flag and length disagree",
        ));
    }
    *data_total += data_len;
    if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
        let bimg_len = usize::from(c.u16()?);
        let _hole_offset = c.u16()?;
        let bimg_info = c.u8()?;
        if flavor.compressed(bimg_info) && bimg_info & BKPIMAGE_HAS_HOLE != 0 {
            let _hole_length = c.u16()?;
        }
        *data_total += bimg_len;
    }
    let fork = fork_flags & BKPBLOCK_FORK_MASK;
    let r = if fork_flags & BKPBLOCK_SAME_REL == 0 {
        let (spc, db, relno) = (c.u32()?, c.u32()?, c.u32()?);
        RelFork {
            spc,
            db,
            rel: relno,
            fork,
        }
    } else {
        let prev = rel.ok_or(DecodeError::Malformed(
            "BKPBLOCK_SAME_REL without a relation",
        ))?;
        RelFork { fork, ..prev }
    };
    *rel = Some(r);
    Ok(BlockRef {
        rel: r,
        block: c.u32()?,
    })
}

fn oids(main: &[u8], n: usize) -> Result<Vec<u32>, DecodeError> {
    if main.len() < n * 4 {
        return Err(DecodeError::Malformed("main data too short"));
    }
    Ok((0..n).map(|i| u32_at(main, i * 4)).collect())
}

fn special(rmid: u8, info: u8, main: &[u8], flavor: Flavor) -> Result<WalEvent, DecodeError> {
    let rel_at = |o: &[u32], fork: u32| RelFork {
        spc: o[0],
        db: o[1],
        rel: o[2],
        fork: fork as u8,
    };
    Ok(match (rmid, info) {
        (RM_XLOG_ID, XLOG_SWITCH) => WalEvent::Switch,
        (RM_XLOG_ID, XLOG_PARAMETER_CHANGE) => WalEvent::WalLevel(oids(main, 6)?[5]),
        (RM_XLOG_ID, XLOG_END_OF_RECOVERY) => {
            let o = oids(main, 4)?;
            WalEvent::EndOfRecovery {
                timeline: o[2],
                prev: o[3],
            }
        }
        (RM_SMGR_ID, XLOG_SMGR_CREATE) => {
            let o = oids(main, 4)?;
            WalEvent::RelCreate {
                rel: rel_at(&o, o[3]),
            }
        }
        (RM_SMGR_ID, XLOG_SMGR_TRUNCATE) => {
            let o = oids(main, 5)?;
            WalEvent::RelTruncate {
                rel: rel_at(&o[1..4], 0),
                blocks: o[0],
                flags: o[4],
            }
        }
        (RM_DBASE_ID, _) => dbase(info, main, flavor)?,
        _ => return Err(DecodeError::Malformed("unknown storage or database record")),
    })
}

fn dbase(info: u8, main: &[u8], flavor: Flavor) -> Result<WalEvent, DecodeError> {
    let (copy, wal_log, drop) = match flavor {
        Flavor::Pg14 => (0x00, None, 0x10),
        Flavor::Pg15 => (0x00, Some(0x10), 0x20),
    };
    if info == copy {
        let o = oids(main, 4)?;
        Ok(WalEvent::DbCreate {
            db: o[0],
            spc: o[1],
            copied_from: Some((o[3], o[2])),
        })
    } else if Some(info) == wal_log {
        let o = oids(main, 2)?;
        Ok(WalEvent::DbCreate {
            db: o[0],
            spc: o[1],
            copied_from: None,
        })
    } else if info == drop {
        let o = oids(main, 2)?;
        let n = usize::try_from(o[1]).map_err(|_| DecodeError::Malformed("ntablespaces"))?;
        let spcs = oids(main.get(8..).unwrap_or_default(), n)?;
        Ok(WalEvent::DbDrop { db: o[0], spcs })
    } else {
        Err(DecodeError::Malformed("unknown database record"))
    }
}

/// The first bytes of a record the segment starts in the middle of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// `xlp_rem_len` of the first page: the record's bytes from here on.
    pub rem: u32,
    /// The first `min(rem, HEADER_MAX)` of them.
    pub bytes: Vec<u8>,
}

/// A record that starts in this segment and runs into the next one before
/// the part of it that is needed ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    pub start: Lsn,
    pub total: u32,
    /// All of its bytes in this segment.
    pub bytes: Vec<u8>,
}

/// What one segment, read alone, says about the blocks WAL writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    pub start: Lsn,
    pub seg_size: u64,
    pub timeline: u32,
    pub major: u32,
    /// Unsorted, with repeats.
    pub blocks: Vec<BlockRef>,
    /// In LSN order.
    pub events: Vec<(Lsn, WalEvent)>,
    /// Records are accounted for from `start` to here: the segment's end,
    /// or where they stop (zeros after a switch or the end of WAL, or an
    /// unreadable page).
    pub end: Lsn,
    pub head: Option<Head>,
    pub tail: Option<Tail>,
}

struct Collect {
    flavor: Flavor,
    blocks: Vec<BlockRef>,
    events: Vec<(Lsn, WalEvent)>,
    stopped: Option<u64>,
    head: Option<Head>,
}

impl Collect {
    /// The record that runs past the segment: decoded when what is here
    /// is enough, else kept as a [`Tail`] for the next segment's head.
    fn unfinished(&mut self, start: u64, total: usize, bytes: &[u8]) -> Option<Tail> {
        let more_helps = bytes.len() < RECORD_HEADER || self.keep(bytes, total) > bytes.len();
        match decode_record(bytes, total, self.flavor, &mut self.blocks) {
            Ok(e) => self.events.extend(e.map(|e| (Lsn(start), e))),
            Err(DecodeError::Short) if more_helps => {
                return Some(Tail {
                    start: Lsn(start),
                    total: total as u32,
                    bytes: bytes.to_vec(),
                })
            }
            Err(_) => self.events.push((Lsn(start), WalEvent::Undecodable)),
        }
        None
    }

    fn decode(&mut self, start: u64, total: usize, bytes: &[u8]) {
        match decode_record(bytes, total, self.flavor, &mut self.blocks) {
            Ok(Some(e)) => self.events.push((Lsn(start), e)),
            Ok(None) => {}
            Err(_) => self.events.push((Lsn(start), WalEvent::Undecodable)),
        }
    }
}

/// How many leading bytes of a record are needed to decode it.
fn wanted(header: &[u8], total: usize) -> usize {
    if needs_main(header) {
        total
    } else {
        total.min(HEADER_MAX)
    }
}

impl RecordVisitor for Collect {
    fn keep(&self, header: &[u8], total: usize) -> usize {
        let w = wanted(header, total);
        if w > SPECIAL_MAX {
            RECORD_HEADER
        } else {
            w
        }
    }

    fn record(&mut self, start: u64, total: usize, bytes: &[u8]) {
        if self.stopped.is_none() {
            self.decode(start, total, bytes);
        }
    }

    fn orphan(&mut self, offset: usize, rem: usize, bytes: &[u8]) {
        if offset >= HEADER_MAX || self.stopped.is_some() {
            return;
        }
        let h = self.head.get_or_insert_with(|| Head {
            rem: rem as u32,
            bytes: Vec::new(),
        });
        let n = (HEADER_MAX - offset).min(bytes.len());
        h.bytes.extend_from_slice(&bytes[..n]);
    }

    fn stop(&mut self, at: u64, _why: Stop) {
        self.stopped.get_or_insert(at);
    }
}

/// Read one whole segment that starts at `start` on its own.
pub fn scan_segment(start: Lsn, data: &[u8], what: &str) -> Result<SegmentScan> {
    let mut walker = WalWalker::new();
    let h = crate::pg::wal::LongPageHeader::parse(data, what)?;
    let major = h.major_version().unwrap_or(0);
    let flavor = Flavor::of_major(major).ok_or_else(|| {
        Error::invalid(format!(
            "{what}: WAL page magic {:#06X} is not of PostgreSQL 14-18",
            h.magic
        ))
    })?;
    let mut c = Collect {
        flavor,
        blocks: Vec::new(),
        events: Vec::new(),
        stopped: None,
        head: None,
    };
    walker.feed_segment(start, data, what, &mut c)?;
    let seg_end = start.0 + data.len() as u64;
    let tail = match (walker.unfinished(), c.stopped) {
        (Some(p), None) => c.unfinished(p.start, p.total, &p.buf),
        _ => None,
    };
    Ok(SegmentScan {
        start,
        seg_size: data.len() as u64,
        timeline: h.timeline,
        major,
        blocks: c.blocks,
        events: c.events,
        end: Lsn(c.stopped.unwrap_or(seg_end)),
        head: c.head,
        tail,
    })
}

/// Decode a record split between `tail` (in one segment) and `head` (the
/// start of the next); `None` when the head does not continue the tail.
pub fn decode_stitched(
    tail: &Tail,
    head: &Head,
    flavor: Flavor,
    out: &mut Vec<BlockRef>,
) -> Option<Result<Option<WalEvent>, DecodeError>> {
    let total = tail.total as usize;
    if tail.bytes.len() + head.rem as usize != total {
        return None;
    }
    let mut rec = tail.bytes.clone();
    rec.extend_from_slice(&head.bytes);
    Some(decode_record(&rec, total, flavor, out))
}

#[cfg(test)]
#[path = "walblocks_tests.rs"]
pub(crate) mod tests;
