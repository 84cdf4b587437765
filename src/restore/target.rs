//! Recovery targets: parsing them, choosing the backup to start from, and
//! refusing targets no backup and no archived WAL can reach — before
//! anything is written.

use crate::catalog::BackupRow;
use crate::error::{Error, Result};
use crate::info::rfc3339;
use crate::pg::history::TimelinePath;
use crate::pg::{Lsn, WalFileName, WalSegment};

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RecoveryTarget {
    /// Replay all archived WAL.
    #[default]
    EndOfWal,
    /// Stop as soon as the backup is consistent.
    Immediate,
    /// `recovery_target_time`; `at_us` is the parsed instant (unix µs).
    Time {
        text: String,
        at_us: i64,
    },
    Lsn(Lsn),
    Xid(String),
    Name(String),
}

/// `--target-timeline`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimelineTarget {
    Current,
    Latest,
    Id(u32),
}

impl TimelineTarget {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "current" => Ok(TimelineTarget::Current),
            "latest" => Ok(TimelineTarget::Latest),
            n => n
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(TimelineTarget::Id)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "invalid --target-timeline {s:?}: current, latest or a timeline number"
                    ))
                }),
        }
    }

    pub fn setting(&self) -> String {
        match self {
            TimelineTarget::Current => "current".into(),
            TimelineTarget::Latest => "latest".into(),
            TimelineTarget::Id(n) => n.to_string(),
        }
    }
}

fn num<T: std::str::FromStr>(s: &str, what: &str, all: &str) -> Result<T> {
    s.parse().map_err(|_| {
        Error::invalid(format!(
            "invalid --target-time {all:?}: bad {what} (expected e.g. 2026-11-21 08:30:00+00)"
        ))
    })
}

/// Parse `YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]]` followed by a zone (`Z`, `+HH`,
/// `+HH:MM`, `+HHMM`). The zone is required: the restored server would
/// otherwise read the time in its own zone, and pgstrata could choose the
/// wrong backup. Returns unix microseconds and PostgreSQL's spelling.
pub fn parse_time(s: &str) -> Result<(i64, String)> {
    let t = s.trim();
    let bad = |why: &str| {
        Error::invalid(format!(
            "invalid --target-time {s:?}: {why} (expected e.g. 2026-11-21 08:30:00+00)"
        ))
    };
    let (date, rest) = t
        .split_once([' ', 'T'])
        .ok_or_else(|| bad("no time of day"))?;
    let mut d = date.splitn(3, '-');
    let year: i32 = num(d.next().unwrap_or(""), "year", s)?;
    let month: u8 = num(d.next().unwrap_or(""), "month", s)?;
    let day: u8 = num(d.next().unwrap_or(""), "day", s)?;
    // Split the clock from the zone.
    let zpos = rest
        .find(['Z', 'z', '+', '-'])
        .ok_or_else(|| bad("add a time zone, e.g. +00 or Z"))?;
    let (clock, zone) = rest.split_at(zpos);
    let clock = clock.trim();
    let (hms, frac) = match clock.split_once('.') {
        Some((a, f)) => (a, f),
        None => (clock, ""),
    };
    let mut c = hms.split(':');
    let hour: u8 = num(c.next().unwrap_or(""), "hour", s)?;
    let minute: u8 = num(c.next().unwrap_or(""), "minute", s)?;
    let second: u8 = match c.next() {
        Some(x) => num(x, "second", s)?,
        None => 0,
    };
    if c.next().is_some() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("bad time of day"));
    }
    let micros: u32 = if frac.is_empty() {
        0
    } else {
        num::<u32>(&format!("{frac:0<6}"), "fraction", s)?
    };
    let offset_s: i32 = match zone {
        "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
            let (h, m) = match digits.len() {
                2 => (num::<i32>(&digits, "zone", s)?, 0),
                4 => (
                    num::<i32>(&digits[..2], "zone", s)?,
                    num::<i32>(&digits[2..], "zone", s)?,
                ),
                _ => return Err(bad("bad time zone")),
            };
            if h > 15 || m > 59 {
                return Err(bad("bad time zone"));
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let month = time::Month::try_from(month).map_err(|_| bad("bad month"))?;
    let date = time::Date::from_calendar_date(year, month, day).map_err(|_| bad("bad date"))?;
    let tod = time::Time::from_hms_micro(hour, minute, second, micros)
        .map_err(|_| bad("bad time of day"))?;
    let offset = time::UtcOffset::from_whole_seconds(offset_s).map_err(|_| bad("bad time zone"))?;
    let at = time::PrimitiveDateTime::new(date, tod).assume_offset(offset);
    let at_us = (at.unix_timestamp_nanos() / 1000) as i64;
    let utc = at.to_offset(time::UtcOffset::UTC);
    let text = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        utc.year(),
        utc.month() as u8,
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.microsecond()
    );
    Ok((at_us, text))
}

/// What the archive holds on the target timeline's path, for refusing
/// targets beyond it and choosing a backup that can reach them.
#[derive(Clone, Debug)]
pub struct ArchiveEnd {
    /// The timelines recovery follows to the target timeline.
    pub path: TimelinePath,
    /// The newest archived segment on that path and where it ends.
    pub newest_segment: Option<(String, Lsn)>,
    /// When the newest segment on the path reached the repository (unix µs).
    pub newest_archived_at: Option<i64>,
    /// For `--target-name`: where the restore point is in the WAL on the path.
    pub restore_point: Option<Lsn>,
    /// An earlier restore point of the same name: a backup must start after
    /// it, or recovery would stop there instead.
    pub restore_point_floor: Option<Lsn>,
}

impl ArchiveEnd {
    /// The segments of `names` that recovery along `path` reads, oldest first.
    pub fn segments_on_path(
        names: &[String],
        seg_size: u64,
        path: &TimelinePath,
    ) -> Vec<WalSegment> {
        let mut segs: Vec<WalSegment> = names
            .iter()
            .filter(|n| matches!(WalFileName::parse(n), Ok(WalFileName::Segment { .. })))
            .filter_map(|n| WalSegment::from_name(n, seg_size).ok())
            .filter(|s| path.timeline_of_segment(s.segno, seg_size) == s.timeline.0)
            .collect();
        segs.sort_by_key(|s| s.segno);
        segs
    }

    pub fn on_path(
        names: &[String],
        seg_size: u64,
        path: TimelinePath,
        newest_archived_at: impl FnOnce(&str) -> Result<Option<i64>>,
    ) -> Result<Self> {
        let newest = Self::segments_on_path(names, seg_size, &path)
            .last()
            .map(|s| (s.name(seg_size), Lsn((s.segno + 1) * seg_size)));
        let newest_archived_at = match &newest {
            Some((n, _)) => newest_archived_at(n)?,
            None => None,
        };
        Ok(ArchiveEnd {
            path,
            newest_segment: newest,
            newest_archived_at,
            restore_point: None,
            restore_point_floor: None,
        })
    }
}

/// Pick the backup to restore for this target, or say why none can reach it.
/// `complete` is oldest first.
pub fn choose<'a>(
    complete: &'a [BackupRow],
    set: Option<&str>,
    target: &RecoveryTarget,
    timeline: Option<&TimelineTarget>,
    archive: &ArchiveEnd,
    cluster: &str,
) -> Result<&'a BackupRow> {
    let oldest = complete
        .first()
        .ok_or_else(|| Error::NotFound(format!("cluster {cluster:?} has no complete backup")))?;
    let stop_us = |b: &BackupRow| b.stop_time.unwrap_or(b.start_time);
    let stop_lsn = |b: &BackupRow| b.stop_lsn.unwrap_or(b.start_lsn);
    // Only a backup on the target timeline's path, taken before the path
    // leaves its timeline, can reach a point on the target timeline.
    let tli = archive.path.target;
    let candidates: Vec<&BackupRow> = complete
        .iter()
        .filter(|b| archive.path.reaches_from(b.timeline, stop_lsn(b)))
        .collect();

    // Targets beyond the archive are impossible whichever backup we choose.
    match target {
        RecoveryTarget::Lsn(l) => {
            if let Some((seg, end)) = &archive.newest_segment {
                if l > end {
                    return Err(Error::invalid(format!(
                        "target LSN {l} is beyond the newest archived WAL on timeline {tli} \
                         (segment {seg} ends at {end}); archive more WAL (SELECT pg_switch_wal()) \
                         or choose an earlier target"
                    )));
                }
            }
        }
        RecoveryTarget::Time { text, at_us } => {
            if let Some(last) = archive.newest_archived_at {
                if *at_us > last {
                    return Err(Error::invalid(format!(
                        "target time {text} is after the newest archived WAL on timeline {tli} \
                         (archived at {}); archive more WAL (SELECT pg_switch_wal()) or choose an \
                         earlier target",
                        rfc3339(last)
                    )));
                }
            }
        }
        _ => {}
    }

    let chosen: &BackupRow = match set {
        Some(id) if id != "latest" => complete.iter().find(|b| b.id == id).ok_or_else(|| {
            Error::NotFound(format!(
                "backup {id:?} is not a complete backup of cluster {cluster:?} (see `pgstrata info`)"
            ))
        })?,
        _ => {
            let newest_before = |ok: &dyn Fn(&BackupRow) -> bool| {
                candidates.iter().rev().find(|b| ok(b)).copied()
            };
            let found = match target {
                RecoveryTarget::Time { at_us, .. } => newest_before(&|b| stop_us(b) <= *at_us),
                RecoveryTarget::Lsn(l) => newest_before(&|b| stop_lsn(b) <= *l),
                RecoveryTarget::Name(_) => match archive.restore_point {
                    Some(rp) => newest_before(&|b| {
                        stop_lsn(b) <= rp
                            && archive.restore_point_floor.is_none_or(|f| b.start_lsn > f)
                    }),
                    None => candidates.last().copied(),
                },
                _ => candidates.last().copied(),
            };
            match (found, target) {
                (Some(b), _) => b,
                (None, RecoveryTarget::Time { text, .. }) => {
                    return Err(Error::invalid(format!(
                        "target time {text} is before the end of the oldest backup ({} finished at {}): \
                         no backup can reach it",
                        oldest.id,
                        rfc3339(stop_us(oldest))
                    )))
                }
                (None, RecoveryTarget::Lsn(l)) => {
                    return Err(Error::invalid(format!(
                        "target LSN {l} is before the end of the oldest backup ({} ends at {}): \
                         no backup can reach it",
                        oldest.id,
                        stop_lsn(oldest)
                    )))
                }
                (None, RecoveryTarget::Name(n)) if archive.restore_point.is_some() => {
                    return Err(Error::invalid(format!(
                        "restore point {n:?} (at {}) is before the end of every backup on the \
                         path of timeline {tli}: no backup can reach it",
                        archive.restore_point.unwrap_or_default()
                    )))
                }
                (None, _) => {
                    return Err(Error::NotFound(format!(
                        "no complete backup of cluster {cluster:?} on the path of timeline {tli}{}",
                        timeline
                            .map(|t| format!(" (--target-timeline {})", t.setting()))
                            .unwrap_or_default()
                    )))
                }
            }
        }
    };
    // An explicit --set must still be able to reach the target.
    match target {
        RecoveryTarget::Time { text, at_us } if stop_us(chosen) > *at_us => {
            Err(Error::invalid(format!(
                "target time {text} is before backup {} finished ({}): choose an older backup \
                 or leave out --set",
                chosen.id,
                rfc3339(stop_us(chosen))
            )))
        }
        RecoveryTarget::Lsn(l) if stop_lsn(chosen) > *l => Err(Error::invalid(format!(
            "target LSN {l} is before backup {} ends ({}): choose an older backup or leave out --set",
            chosen.id,
            stop_lsn(chosen)
        ))),
        RecoveryTarget::Name(n)
            if archive
                .restore_point
                .is_some_and(|rp| stop_lsn(chosen) > rp) =>
        {
            Err(Error::invalid(format!(
                "restore point {n:?} (at {}) is before backup {} ends ({}): choose an older \
                 backup or leave out --set",
                archive.restore_point.unwrap_or_default(),
                chosen.id,
                stop_lsn(chosen)
            )))
        }
        _ if !archive.path.reaches_from(chosen.timeline, stop_lsn(chosen)) => {
            Err(Error::invalid(format!(
                "backup {} (timeline {}) is not on the path of timeline {tli}: choose another \
                 backup or --target-timeline",
                chosen.id, chosen.timeline
            )))
        }
        _ => Ok(chosen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let (us, text) = parse_time("2026-11-21 08:30:00+00").unwrap();
        assert_eq!(text, "2026-11-21 08:30:00.000000+00");
        let (us2, _) = parse_time("2026-11-21T09:30:00.5+01:00").unwrap();
        assert_eq!(us2, us + 500_000);
        let (us3, text3) = parse_time("2026-11-21 08:30:00.123456Z").unwrap();
        assert_eq!(us3, us + 123_456);
        assert_eq!(text3, "2026-11-21 08:30:00.123456+00");
        assert_eq!(parse_time("2026-11-21 03:30:00-0500").unwrap().0, us);
        for bad in [
            "2026-11-21 08:30:00",
            "yesterday",
            "2026-13-01 00:00:00Z",
            "2026-11-21 25:00:00Z",
            "2026-11-21 08:30:00+99",
            "2026-11-21",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timelines() {
        assert_eq!(
            TimelineTarget::parse("latest").unwrap(),
            TimelineTarget::Latest
        );
        assert_eq!(TimelineTarget::parse("2").unwrap(), TimelineTarget::Id(2));
        assert!(TimelineTarget::parse("0").is_err());
        assert!(TimelineTarget::parse("two").is_err());
    }
}
