//! Data pages: the header fields a backup needs and PostgreSQL's page checksum
//! (`pg_checksum_page`, an FNV-1a variant over 32 interleaved lanes).
//!
//! A checksum failure on a page whose LSN is at or after the backup's start LSN
//! is a torn page that WAL replay rewrites from a full-page image; only failures
//! on older pages are real corruption.

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

#[inline]
fn comp(sum: &mut u32, value: u32) {
    let tmp = *sum ^ value;
    *sum = tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17);
}

/// `pg_checksum_page` for a page of any supported block size (a multiple of 128).
pub fn checksum(page: &[u8], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    let mut row = [0u32; N_SUMS];
    for (i, bytes) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (w, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if i == 0 {
            // pd_checksum (bytes 8..10) counts as zero.
            row[2] &= 0xFFFF_0000;
        }
        for (sum, v) in sums.iter_mut().zip(row.iter()) {
            comp(sum, *v);
        }
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            comp(sum, 0);
        }
    }
    let result = sums.iter().fold(0u32, |a, s| a ^ s) ^ blkno;
    ((result % 65535) + 1) as u16
}

/// The LSN stored in a page header.
pub(crate) fn page_lsn(page: &[u8]) -> u64 {
    let hi = u32::from_le_bytes([page[0], page[1], page[2], page[3]]) as u64;
    let lo = u32::from_le_bytes([page[4], page[5], page[6], page[7]]) as u64;
    (hi << 32) | lo
}

pub(crate) fn stored_checksum(page: &[u8]) -> u16 {
    u16::from_le_bytes([page[8], page[9]])
}

/// A new (never initialised) page has `pd_upper == 0` and carries no checksum.
pub(crate) fn is_new(page: &[u8]) -> bool {
    u16::from_le_bytes([page[14], page[15]]) == 0
}

/// What checking one page found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageCheck {
    Ok,
    /// Fails, but its LSN is at or after the backup start: WAL replay repairs it.
    Torn,
    Bad {
        expected: u16,
        found: u16,
    },
}

/// Check one full page. `blkno` is the block number within the relation fork
/// (segment number × RELSEG_SIZE + block in the segment file).
pub(crate) fn check(page: &[u8], blkno: u32, backup_start_lsn: u64) -> PageCheck {
    if is_new(page) {
        return PageCheck::Ok;
    }
    let expected = checksum(page, blkno);
    let found = stored_checksum(page);
    if expected == found {
        PageCheck::Ok
    } else if page_lsn(page) >= backup_start_lsn {
        PageCheck::Torn
    } else {
        PageCheck::Bad { expected, found }
    }
}

/// Does this file name belong to a relation fork (`16384`, `16384_fsm`,
/// `16384.2`, `16384_vm.1`, `16384_init`)? Only those carry page checksums.
/// Returns the segment number when it does.
pub(crate) fn relation_segment(file_name: &str) -> Option<u32> {
    let (stem, seg) = match file_name.split_once('.') {
        Some((s, n)) => (s, n.parse::<u32>().ok()?),
        None => (file_name, 0),
    };
    let digits = match stem.split_once('_') {
        Some((d, "fsm" | "vm" | "init")) => d,
        Some(_) => return None,
        None => stem,
    };
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        Some(seg)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_names() {
        assert_eq!(relation_segment("16384"), Some(0));
        assert_eq!(relation_segment("16384.3"), Some(3));
        assert_eq!(relation_segment("16384_vm"), Some(0));
        assert_eq!(relation_segment("16384_fsm.1"), Some(1));
        assert_eq!(relation_segment("pg_filenode.map"), None);
        assert_eq!(relation_segment("PG_VERSION"), None);
        assert_eq!(relation_segment("16384_foo"), None);
        assert_eq!(relation_segment("t3_16384"), None);
    }

    #[test]
    fn checksum_ignores_stored_field_and_depends_on_blkno() {
        let mut page = vec![0u8; 8192];
        page[14] = 0x20; // pd_upper != 0
        for (i, b) in page.iter_mut().enumerate().skip(24) {
            *b = (i * 7) as u8;
        }
        let c = checksum(&page, 5);
        page[8] = 0xAB;
        page[9] = 0xCD;
        assert_eq!(checksum(&page, 5), c);
        assert_ne!(checksum(&page, 6), c);
        page[8..10].copy_from_slice(&c.to_le_bytes());
        assert_eq!(check(&page, 5, u64::MAX), PageCheck::Ok);
        page[100] ^= 1;
        assert!(matches!(check(&page, 5, u64::MAX), PageCheck::Bad { .. }));
        assert_eq!(check(&page, 5, 0), PageCheck::Torn);
    }
}
