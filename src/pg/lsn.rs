//! Log sequence numbers, timelines and WAL file names, as PostgreSQL spells them.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A WAL position (`XLogRecPtr`), written `HI/LO` in hex as PostgreSQL does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("invalid LSN {s:?}: expected the form 0/3000028"));
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(bad());
        }
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((hi << 32) | lo))
    }
}

/// A timeline id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One WAL segment: a timeline and a segment number (for a given segment size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WalSegment {
    pub timeline: TimelineId,
    pub segno: u64,
}

impl WalSegment {
    /// The segment that holds `lsn`.
    pub(crate) fn containing(timeline: TimelineId, lsn: Lsn, seg_size: u64) -> Self {
        WalSegment {
            timeline,
            segno: lsn.0 / seg_size,
        }
    }

    /// The 24-hex-digit file name, e.g. `000000010000000000000003`.
    pub(crate) fn name(&self, seg_size: u64) -> String {
        let per_id = segments_per_xlogid(seg_size);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline.0,
            self.segno / per_id,
            self.segno % per_id
        )
    }

    pub(crate) fn from_name(name: &str, seg_size: u64) -> Result<Self> {
        match WalFileName::parse(name)? {
            WalFileName::Segment { timeline, log, seg } => Ok(WalSegment {
                timeline,
                segno: u64::from(log) * segments_per_xlogid(seg_size) + u64::from(seg),
            }),
            _ => Err(Error::invalid(format!("{name} is not a WAL segment name"))),
        }
    }
}

fn segments_per_xlogid(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size.max(1)
}

/// The kinds of files that live in `pg_wal` and go through the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WalFileName {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`
    Segment {
        timeline: TimelineId,
        log: u32,
        seg: u32,
    },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.partial`
    Partial {
        timeline: TimelineId,
        log: u32,
        seg: u32,
    },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.XXXXXXXX.backup`
    Backup { timeline: TimelineId },
    /// `TTTTTTTT.history`
    History { timeline: TimelineId },
}

fn hex_u32(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl WalFileName {
    /// Parse a bare file name (no directory). Anything else is a clear error.
    pub(crate) fn parse(name: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "malformed WAL file name {name:?}: expected a segment (24 hex digits), \
                 .partial, .backup or .history file"
            ))
        };
        let seg3 = |s: &str| -> Option<(TimelineId, u32, u32)> {
            if s.len() != 24 {
                return None;
            }
            Some((
                TimelineId(hex_u32(&s[0..8])?),
                hex_u32(&s[8..16])?,
                hex_u32(&s[16..24])?,
            ))
        };
        if let Some(stem) = name.strip_suffix(".history") {
            let tli = hex_u32(stem).ok_or_else(bad)?;
            return Ok(WalFileName::History {
                timeline: TimelineId(tli),
            });
        }
        if let Some(stem) = name.strip_suffix(".partial") {
            let (timeline, log, seg) = seg3(stem).ok_or_else(bad)?;
            return Ok(WalFileName::Partial { timeline, log, seg });
        }
        if let Some(stem) = name.strip_suffix(".backup") {
            let (segpart, off) = stem.split_once('.').ok_or_else(bad)?;
            let (timeline, _, _) = seg3(segpart).ok_or_else(bad)?;
            hex_u32(off).ok_or_else(bad)?;
            return Ok(WalFileName::Backup { timeline });
        }
        let (timeline, log, seg) = seg3(name).ok_or_else(bad)?;
        Ok(WalFileName::Segment { timeline, log, seg })
    }

    pub(crate) fn timeline(&self) -> TimelineId {
        match self {
            WalFileName::Segment { timeline, .. }
            | WalFileName::Partial { timeline, .. }
            | WalFileName::Backup { timeline }
            | WalFileName::History { timeline } => *timeline,
        }
    }

    /// Segments and partial segments carry a long page header with the system id.
    pub(crate) fn is_segment_data(&self) -> bool {
        matches!(
            self,
            WalFileName::Segment { .. } | WalFileName::Partial { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn(0x3000028).to_string(), "0/3000028");
        assert!("3000028".parse::<Lsn>().is_err());
        assert!("0/xyz".parse::<Lsn>().is_err());
        assert!("/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn segment_names() {
        let seg = 16 * 1024 * 1024;
        let s = WalSegment::containing(TimelineId(1), Lsn(0x1_0300_0028), seg);
        assert_eq!(s.name(seg), "000000010000000100000003");
        assert_eq!(
            WalSegment::from_name("000000010000000100000003", seg).unwrap(),
            s
        );
        // 1 GiB segments: 4 per xlogid
        let big = 1024 * 1024 * 1024;
        let s = WalSegment::containing(TimelineId(2), Lsn(0x1_C000_0000), big);
        assert_eq!(s.name(big), "000000020000000100000003");
    }

    #[test]
    fn file_names() {
        assert!(matches!(
            WalFileName::parse("00000002.history").unwrap(),
            WalFileName::History {
                timeline: TimelineId(2)
            }
        ));
        assert!(matches!(
            WalFileName::parse("000000010000000000000003.00000028.backup").unwrap(),
            WalFileName::Backup { .. }
        ));
        assert!(matches!(
            WalFileName::parse("000000010000000000000003.partial").unwrap(),
            WalFileName::Partial { .. }
        ));
        for bad in [
            "",
            "00000001000000000000003",
            "00000001000000000000000G",
            "../000000010000000000000003",
            "000000010000000000000003.zst",
            "history",
            "0000000Z.history",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad}");
        }
    }
}
