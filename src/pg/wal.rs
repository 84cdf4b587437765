//! The long page header at the start of every WAL segment, which names the
//! cluster (system identifier) the segment belongs to.

use crate::error::{Error, Result};

/// `XLogLongPageHeaderData` fields pgstrata checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongPageHeader {
    pub magic: u16,
    pub timeline: u32,
    /// `xlp_pageaddr`: the LSN where the page starts, so for a segment's
    /// first page the start of the segment its file name names.
    pub page_addr: u64,
    pub system_id: u64,
    pub seg_size: u32,
    pub block_size: u32,
}

/// `XLP_LONG_HEADER` flag in `xlp_info`.
const XLP_LONG_HEADER: u16 = 0x0002;

impl LongPageHeader {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        if bytes.len() < 40 {
            return Err(Error::invalid(format!(
                "{what} is too short to be a WAL segment ({} bytes)",
                bytes.len()
            )));
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| (u64::from(u32_at(o + 4)) << 32) | u64::from(u32_at(o));
        let info = u16_at(2);
        if info & XLP_LONG_HEADER == 0 {
            return Err(Error::invalid(format!(
                "{what} does not start with a WAL long page header"
            )));
        }
        Ok(LongPageHeader {
            magic: u16_at(0),
            timeline: u32_at(4),
            page_addr: u64_at(8),
            system_id: u64_at(24),
            seg_size: u32_at(32),
            block_size: u32_at(36),
        })
    }

    /// The PostgreSQL major version that writes this `XLOG_PAGE_MAGIC`, when known.
    pub fn major_version(&self) -> Option<u32> {
        crate::pg::version::major_of_wal_magic(self.magic)
    }
}
