//! Timeline history files (`TTTTTTTT.history`) and the path of WAL a
//! timeline's recovery follows through its ancestors.
//!
//! A history file lists, one line per ancestor, `parentTLI switchpoint
//! reason`: the parent timeline was left at `switchpoint`. Blank lines and
//! lines starting with `#` are ignored, as PostgreSQL does.

use crate::error::{Error, Result};
use crate::pg::Lsn;

/// One timeline on a path, and the WAL range it covers there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PathEntry {
    pub timeline: u32,
    /// Where this timeline begins on the path (0 for the first).
    pub begin: Lsn,
    /// Where the path leaves this timeline (`None`: the target timeline).
    pub end: Option<Lsn>,
}

/// The timelines recovery to `target` follows, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TimelinePath {
    pub target: u32,
    pub entries: Vec<PathEntry>,
}

impl TimelinePath {
    /// A timeline without ancestors (timeline 1, or one without a history file).
    pub(crate) fn root(target: u32) -> Self {
        TimelinePath {
            target,
            entries: vec![PathEntry {
                timeline: target,
                begin: Lsn(0),
                end: None,
            }],
        }
    }

    /// Parse the history file of timeline `target`.
    pub(crate) fn parse(target: u32, text: &str) -> Result<Self> {
        let what = format!("{target:08X}.history");
        let mut entries: Vec<PathEntry> = Vec::new();
        let mut begin = Lsn(0);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| Error::corrupt(&what, format!("line {}: {why}", i + 1));
            let mut words = line.split_whitespace();
            let tli: u32 = words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| bad("expected a parent timeline number"))?;
            let switch: Lsn = words
                .next()
                .ok_or_else(|| bad("expected a switch point after the timeline"))?
                .parse()
                .map_err(|_| bad("bad switch point"))?;
            if let Some(prev) = entries.last() {
                if tli <= prev.timeline {
                    return Err(bad("timeline ids must increase"));
                }
            }
            if tli >= target {
                return Err(bad(&format!(
                    "parent timeline {tli} is not older than timeline {target}"
                )));
            }
            if switch < begin {
                return Err(bad("switch points must not go backwards"));
            }
            entries.push(PathEntry {
                timeline: tli,
                begin,
                end: Some(switch),
            });
            begin = switch;
        }
        entries.push(PathEntry {
            timeline: target,
            begin,
            end: None,
        });
        Ok(TimelinePath { target, entries })
    }

    pub(crate) fn entry(&self, timeline: u32) -> Option<&PathEntry> {
        self.entries.iter().find(|e| e.timeline == timeline)
    }

    /// Can recovery along this path start from a backup of `timeline` that
    /// ended at `stop`? (It must lie on the path before the path leaves it.)
    pub(crate) fn reaches_from(&self, timeline: u32, stop: Lsn) -> bool {
        self.entry(timeline)
            .is_some_and(|e| e.end.is_none_or(|end| stop <= end))
    }

    /// The timeline recovery reads segment `segno` from: the newest timeline
    /// on the path that began at or before the segment (as PostgreSQL picks).
    pub(crate) fn timeline_of_segment(&self, segno: u64, seg_size: u64) -> u32 {
        self.entries
            .iter()
            .rev()
            .find(|e| e.begin.0 / seg_size.max(1) <= segno)
            .map(|e| e.timeline)
            .unwrap_or(self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_follow() {
        let text = "1\t0/5000000\tno recovery target specified\n\n# comment\n\
                    2\t0/9000A28\tbefore 2026-11-21 08:30:00+00\n";
        let p = TimelinePath::parse(3, text).unwrap();
        assert_eq!(p.entries.len(), 3);
        assert_eq!(p.entries[1].begin, Lsn(0x500_0000));
        assert_eq!(p.entries[1].end, Some(Lsn(0x900_0A28)));
        assert_eq!(p.entries[2].end, None);
        let seg = 16 << 20;
        assert_eq!(p.timeline_of_segment(4, seg), 1);
        assert_eq!(p.timeline_of_segment(5, seg), 2);
        assert_eq!(p.timeline_of_segment(8, seg), 2);
        assert_eq!(p.timeline_of_segment(9, seg), 3);
        assert!(p.reaches_from(1, Lsn(0x400_0000)));
        assert!(!p.reaches_from(1, Lsn(0x600_0000)));
        assert!(p.reaches_from(3, Lsn(0xFF_0000_0000)));
        assert!(!p.reaches_from(4, Lsn(0)));
        assert_eq!(TimelinePath::root(1).timeline_of_segment(99, seg), 1);
    }

    #[test]
    fn bad_history_files() {
        for bad in [
            "x\t0/1\tr",
            "1",
            "1\tnope\tr",
            "2\t0/1\tr\n1\t0/2\tr",
            "3\t0/1\tr",
            "1\t0/5\tr\n2\t0/4\tr",
        ] {
            assert!(TimelinePath::parse(3, bad).is_err(), "{bad}");
        }
    }
}
