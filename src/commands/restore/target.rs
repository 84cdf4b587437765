//! Recovery targets: parsing them, choosing the backup to start from, and
//! refusing targets no backup and no archived WAL can reach — before
//! anything is written.

use crate::catalog::BackupRow;
use crate::error::{Error, Hint, Result, Setting};
use crate::pg::history::TimelinePath;
use crate::pg::{Lsn, WalFileName, WalSegment};
use crate::util::rfc3339;

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

/// The recovery target timeline.
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
                    Error::setting(
                        Setting::TargetTimeline,
                        format!("{s:?} is invalid: current, latest or a timeline number"),
                    )
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

/// Time zone abbreviations PostgreSQL's default `timezone_abbreviations` set
/// knows and that mean one thing (fixed offsets, seconds east of UTC).
const ABBREVIATIONS: &[(&str, i32)] = &[
    ("UTC", 0),
    ("UT", 0),
    ("GMT", 0),
    ("Z", 0),
    ("ZULU", 0),
    ("WET", 0),
    ("WEST", 3600),
    ("BST", 3600),
    ("CET", 3600),
    ("CEST", 7200),
    ("MET", 3600),
    ("MEST", 7200),
    ("EET", 7200),
    ("EEST", 10800),
    ("MSK", 10800),
    ("JST", 32400),
    ("KST", 32400),
    ("HKT", 28800),
    ("AWST", 28800),
    ("ACST", 34200),
    ("AEST", 36000),
    ("AEDT", 39600),
    ("NZST", 43200),
    ("NZDT", 46800),
    ("AST", -14400),
    ("ADT", -10800),
    ("EST", -18000),
    ("EDT", -14400),
    ("CST", -21600),
    ("CDT", -18000),
    ("MST", -25200),
    ("MDT", -21600),
    ("PST", -28800),
    ("PDT", -25200),
    ("AKST", -32400),
    ("AKDT", -28800),
    ("HST", -36000),
];

/// A zone as PostgreSQL accepts it after a timestamp: `Z`, a numeric offset
/// (`+HH`, `+HH:MM`, `+HHMM`, `-…`), an abbreviation (`UTC`, `GMT`, `CET`…)
/// or a time zone name from the IANA database (`Europe/Paris`).
fn zone(z: &str) -> Option<jiff::tz::TimeZone> {
    use jiff::tz::{Offset, TimeZone};
    if let Some(rest) = z.strip_prefix(['+', '-']) {
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) || rest.matches(':').count() > 1 {
            return None;
        }
        let (h, m): (i32, i32) = match digits.len() {
            1 | 2 => (digits.parse().ok()?, 0),
            4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
            _ => return None,
        };
        if h > 15 || m > 59 {
            return None;
        }
        let off = Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()?;
        return Some(TimeZone::fixed(off));
    }
    if let Some((_, secs)) = ABBREVIATIONS
        .iter()
        .find(|(a, _)| a.eq_ignore_ascii_case(z))
    {
        return Some(TimeZone::fixed(Offset::from_seconds(*secs).ok()?));
    }
    jiff::tz::db().get(z).ok()
}

/// Parse a target time as PostgreSQL reads `recovery_target_time`:
/// `YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]]` and a zone (see [`zone`]), e.g.
/// `2026-11-21 08:30:00+00`, `2026-11-21 09:30 Europe/Paris`,
/// `2026-11-21T08:30:00Z`. The zone is required: without one the restored
/// server would read the time in its own `timezone` setting, which pgstrata
/// cannot know, and could choose the wrong backup; pgstrata refuses rather
/// than guess. Returns unix microseconds and PostgreSQL's spelling in UTC.
pub fn parse_time(s: &str) -> Result<(i64, String)> {
    let t = s.trim();
    let bad = |why: &str| {
        Error::setting(
            Setting::TargetTime,
            format!(
                "{s:?} is invalid: {why} (expected e.g. 2026-11-21 08:30:00+00 or \
                 '2026-11-21 09:30:00 Europe/Paris')"
            ),
        )
    };
    let (date, rest) = t
        .split_once([' ', 'T'])
        .ok_or_else(|| bad("no time of day"))?;
    let rest = rest.trim_start();
    let clock_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (clock, zone_text) = rest.split_at(clock_len);
    let zone_text = zone_text.trim();
    if clock.is_empty() {
        return Err(bad("no time of day"));
    }
    if zone_text.is_empty() {
        return Err(bad(
            "add a time zone, e.g. +00, UTC or Europe/Paris (without one PostgreSQL would use \
             the server's timezone setting, which pgstrata cannot know)",
        ));
    }
    let dt: jiff::civil::DateTime = format!("{date}T{clock}")
        .parse()
        .map_err(|_| bad("bad date or time of day"))?;
    let tz = zone(zone_text).ok_or_else(|| bad(&format!("unknown time zone {zone_text:?}")))?;
    let at = dt
        .to_zoned(tz)
        .map_err(|_| bad("out of range"))?
        .timestamp();
    let at_us = at.as_microsecond();
    let utc = at.to_zoned(jiff::tz::TimeZone::UTC);
    let text = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        utc.year(),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.subsec_nanosecond() / 1000
    );
    Ok((at_us, text))
}

/// What the archive holds on the target timeline's path, for refusing
/// targets beyond it and choosing a backup that can reach them.
#[derive(Clone, Debug)]
pub(super) struct ArchiveEnd {
    /// The timelines recovery follows to the target timeline.
    pub path: TimelinePath,
    /// The newest archived segment on that path and where it ends.
    pub newest_segment: Option<(String, Lsn)>,
    /// When the newest segment on the path reached the repository (unix µs).
    pub newest_archived_at: Option<i64>,
    /// For a target restore point: where it is in the WAL on the path.
    pub restore_point: Option<Lsn>,
    /// An earlier restore point of the same name: a backup must start after
    /// it, or recovery would stop there instead.
    pub restore_point_floor: Option<Lsn>,
}

impl ArchiveEnd {
    /// The segments of `names` that recovery along `path` reads, oldest first.
    pub(super) fn segments_on_path(
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

    pub(super) fn on_path(
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
pub(super) fn choose<'a>(
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
    refuse_beyond_archive(target, archive)?;
    let chosen: &BackupRow = match set {
        Some(id) if id != "latest" => complete.iter().find(|b| b.id == id).ok_or_else(|| {
            Error::NotFound(format!(
                "backup {id:?} is not a complete backup of cluster {cluster:?}"
            ))
            .hint(Hint::SeeInfo)
        })?,
        _ => {
            // Only a backup on the target timeline's path, taken before the
            // path leaves its timeline, can reach a point on the target
            // timeline.
            let candidates: Vec<&BackupRow> = complete
                .iter()
                .filter(|b| archive.path.reaches_from(b.timeline, stop_lsn(b)))
                .collect();
            match by_target(&candidates, target, archive) {
                Some(b) => b,
                None => return Err(unreachable(target, archive, timeline, oldest, cluster)),
            }
        }
    };
    set_reaches(chosen, target, archive)?;
    Ok(chosen)
}

fn stop_us(b: &BackupRow) -> i64 {
    b.stop_time.unwrap_or(b.start_time)
}

fn stop_lsn(b: &BackupRow) -> Lsn {
    b.stop_lsn.unwrap_or(b.start_lsn)
}

/// Targets beyond the archive are impossible whichever backup is chosen.
fn refuse_beyond_archive(target: &RecoveryTarget, archive: &ArchiveEnd) -> Result<()> {
    let tli = archive.path.target;
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
    Ok(())
}

/// The newest candidate (oldest first) that can reach the target.
fn by_target<'a>(
    candidates: &[&'a BackupRow],
    target: &RecoveryTarget,
    archive: &ArchiveEnd,
) -> Option<&'a BackupRow> {
    let newest_before =
        |ok: &dyn Fn(&BackupRow) -> bool| candidates.iter().rev().find(|b| ok(b)).copied();
    match target {
        RecoveryTarget::Time { at_us, .. } => newest_before(&|b| stop_us(b) <= *at_us),
        RecoveryTarget::Lsn(l) => newest_before(&|b| stop_lsn(b) <= *l),
        RecoveryTarget::Name(_) => match archive.restore_point {
            Some(rp) => newest_before(&|b| {
                stop_lsn(b) <= rp && archive.restore_point_floor.is_none_or(|f| b.start_lsn > f)
            }),
            None => candidates.last().copied(),
        },
        _ => candidates.last().copied(),
    }
}

/// Why no backup can reach the target.
fn unreachable(
    target: &RecoveryTarget,
    archive: &ArchiveEnd,
    timeline: Option<&TimelineTarget>,
    oldest: &BackupRow,
    cluster: &str,
) -> Error {
    let tli = archive.path.target;
    match target {
        RecoveryTarget::Time { text, .. } => Error::invalid(format!(
            "target time {text} is before the end of the oldest backup ({} finished at {}): \
             no backup can reach it",
            oldest.id,
            rfc3339(stop_us(oldest))
        )),
        RecoveryTarget::Lsn(l) => Error::invalid(format!(
            "target LSN {l} is before the end of the oldest backup ({} ends at {}): \
             no backup can reach it",
            oldest.id,
            stop_lsn(oldest)
        )),
        RecoveryTarget::Name(n) if archive.restore_point.is_some() => Error::invalid(format!(
            "restore point {n:?} (at {}) is before the end of every backup on the \
             path of timeline {tli}: no backup can reach it",
            archive.restore_point.unwrap_or_default()
        )),
        _ => Error::NotFound(format!(
            "no complete backup of cluster {cluster:?} on the path of timeline {tli}{}",
            timeline
                .map(|t| format!(" (target timeline {})", t.setting()))
                .unwrap_or_default()
        )),
    }
}

/// A backup chosen by the user must still be able to reach the target.
fn set_reaches(chosen: &BackupRow, target: &RecoveryTarget, archive: &ArchiveEnd) -> Result<()> {
    let tli = archive.path.target;
    match target {
        RecoveryTarget::Time { text, at_us } if stop_us(chosen) > *at_us => {
            Err(Error::invalid(format!(
                "target time {text} is before backup {} finished ({}): choose an older backup",
                chosen.id,
                rfc3339(stop_us(chosen))
            ))
            .hint(Hint::LeaveOut(Setting::Set)))
        }
        RecoveryTarget::Lsn(l) if stop_lsn(chosen) > *l => Err(Error::invalid(format!(
            "target LSN {l} is before backup {} ends ({}): choose an older backup",
            chosen.id,
            stop_lsn(chosen)
        ))
        .hint(Hint::LeaveOut(Setting::Set))),
        RecoveryTarget::Name(n)
            if archive
                .restore_point
                .is_some_and(|rp| stop_lsn(chosen) > rp) =>
        {
            Err(Error::invalid(format!(
                "restore point {n:?} (at {}) is before backup {} ends ({}): choose an older \
                 backup",
                archive.restore_point.unwrap_or_default(),
                chosen.id,
                stop_lsn(chosen)
            ))
            .hint(Hint::LeaveOut(Setting::Set)))
        }
        _ if !archive.path.reaches_from(chosen.timeline, stop_lsn(chosen)) => {
            Err(Error::invalid(format!(
                "backup {} (timeline {}) is not on the path of timeline {tli}: choose another \
                 backup or target timeline",
                chosen.id, chosen.timeline
            )))
        }
        _ => Ok(()),
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
        // Named zones and abbreviations, as PostgreSQL accepts them.
        assert_eq!(parse_time("2026-11-21 08:30:00 UTC").unwrap().0, us);
        assert_eq!(parse_time("2026-11-21 08:30:00 gmt").unwrap().0, us);
        assert_eq!(
            parse_time("2026-11-21 09:30:00 Europe/Paris").unwrap().0,
            us
        );
        assert_eq!(
            parse_time("2026-11-21 03:30 America/New_York").unwrap().0,
            us
        );
        assert_eq!(parse_time("2026-11-21 09:30:00 CET").unwrap().0, us);
        assert_eq!(parse_time("2026-11-21 00:30:00 PST").unwrap().0, us);
        assert_eq!(parse_time("2026-11-21 08:30:00+00:00").unwrap().0, us);
        // Summer time in Paris is +02.
        assert_eq!(
            parse_time("2026-07-01 12:00:00 Europe/Paris").unwrap().1,
            "2026-07-01 10:00:00.000000+00"
        );
        assert_eq!(
            parse_time("2026-07-01 06:00:00 America/New_York")
                .unwrap()
                .1,
            "2026-07-01 10:00:00.000000+00"
        );
        for bad in [
            "2026-11-21 08:30:00",
            "2026-11-21T08:30:00",
            "yesterday",
            "2026-13-01 00:00:00Z",
            "2026-11-21 25:00:00Z",
            "2026-11-21 08:30:00+99",
            "2026-11-21 08:30:00 Mars/Olympus",
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
