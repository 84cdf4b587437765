//! Retention: which complete backups of a cluster (oldest first) a policy
//! expires. The newest complete backup never goes, and every backup restores
//! on its own, so any set may go without breaking a kept one.

use std::collections::HashSet;

use crate::catalog::{BackupRow, BackupType};
use crate::error::{Error, Result, Setting};

/// What to keep.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// Keep this many full backups; older fulls and the diffs and incrs taken
    /// after them (before the next kept full) go.
    pub full: Option<u32>,
    /// Keep this many differential backups; older diffs and the incrs taken
    /// after them go.
    pub diff: Option<u32>,
    /// Keep what restores to any point in the last this many days.
    pub days: Option<f64>,
    /// Expire exactly this backup.
    pub set: Option<String>,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        self.full.is_none() && self.diff.is_none() && self.days.is_none() && self.set.is_none()
    }
}

fn stop_us(b: &BackupRow) -> i64 {
    b.stop_time.unwrap_or(b.start_time)
}

/// Which complete backups (oldest first) the policy expires, with reasons.
pub(super) fn by_policy(
    b: &[BackupRow],
    r: &Retention,
    now_us: i64,
) -> Result<Vec<(usize, String)>> {
    let newest = b.len().saturating_sub(1);
    if let Some(id) = &r.set {
        let i = b.iter().position(|x| &x.id == id).ok_or_else(|| {
            Error::NotFound(format!(
                "backup {id:?} is not a complete backup of this cluster"
            ))
        })?;
        if i == newest {
            return Err(Error::refused(format!(
                "backup {id} is the newest complete backup; take another before expiring it"
            )));
        }
        return Ok(vec![(i, "asked for by id".into())]);
    }
    for (what, n) in [(Setting::RetainFull, r.full), (Setting::RetainDiff, r.diff)] {
        if n == Some(0) {
            return Err(Error::setting(what, "must be at least 1"));
        }
    }
    if r.days.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        return Err(Error::setting(
            Setting::RetainDays,
            "must be a positive number of days",
        ));
    }
    // The counts each govern their own type, as in pgBackRest: a backup goes
    // when either expires it (the diff count has no say over fulls). The
    // window is a floor under them: with a number of days too, a backup goes
    // only if the window does not need it.
    let mut reason: Vec<String> = vec![String::new(); b.len()];
    let counts = match (r.full, r.diff) {
        (None, None) => None,
        (full, diff) => {
            let mut gone = HashSet::new();
            if let Some(n) = full {
                gone.extend(keep_fulls(b, n, &mut reason));
            }
            if let Some(n) = diff {
                gone.extend(keep_diffs(b, n, &mut reason));
            }
            Some(gone)
        }
    };
    let window = r.days.map(|days| keep_days(b, days, now_us, &mut reason));
    let gone = match (counts, window) {
        (Some(c), Some(w)) => c.intersection(&w).copied().collect(),
        (Some(g), None) | (None, Some(g)) => g,
        (None, None) => HashSet::new(),
    };
    Ok(reason
        .iter()
        .enumerate()
        .take(newest)
        .filter(|(i, _)| gone.contains(i))
        .map(|(i, why)| (i, why.trim_end_matches("; ").to_string()))
        .collect())
}

/// Everything older than the `n`th newest full.
fn keep_fulls(b: &[BackupRow], n: u32, reason: &mut [String]) -> HashSet<usize> {
    let fulls: Vec<usize> = (0..b.len())
        .filter(|&i| b[i].backup_type == BackupType::Full)
        .collect();
    let mut set = HashSet::new();
    if fulls.len() > n as usize {
        let oldest_kept = fulls[fulls.len() - n as usize];
        for (i, r) in reason.iter_mut().enumerate().take(oldest_kept) {
            set.insert(i);
            r.push_str(&format!("older than the {n} newest full backup(s); "));
        }
    }
    set
}

/// Diffs older than the `n` newest, with the incrs that follow them.
fn keep_diffs(b: &[BackupRow], n: u32, reason: &mut [String]) -> HashSet<usize> {
    let diffs: Vec<usize> = (0..b.len())
        .filter(|&i| b[i].backup_type == BackupType::Diff)
        .collect();
    let mut set = HashSet::new();
    if diffs.len() <= n as usize {
        return set;
    }
    let expired: HashSet<usize> = diffs[..diffs.len() - n as usize].iter().copied().collect();
    // An incr goes with the diff or full it follows.
    let mut parent_expired = false;
    for i in 0..b.len() {
        match b[i].backup_type {
            BackupType::Full => parent_expired = false,
            BackupType::Diff => parent_expired = expired.contains(&i),
            BackupType::Incr => {}
        }
        if parent_expired && b[i].backup_type != BackupType::Full {
            set.insert(i);
            reason[i].push_str(&format!(
                "older than the {n} newest differential backup(s); "
            ));
        }
    }
    set
}

/// Everything older than the newest backup that ended before the window
/// start (that one is needed to reach the window).
fn keep_days(b: &[BackupRow], days: f64, now_us: i64, reason: &mut [String]) -> HashSet<usize> {
    let cutoff = now_us - (days * 86_400e6) as i64;
    let mut set = HashSet::new();
    if let Some(anchor) = (0..b.len()).rev().find(|&i| stop_us(&b[i]) <= cutoff) {
        for (i, r) in reason.iter_mut().enumerate().take(anchor) {
            set.insert(i);
            r.push_str(&format!(
                "not needed to restore within the last {days} day(s); "
            ));
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BackupStatus;

    fn b(id: &str, t: BackupType, start_s: i64) -> BackupRow {
        BackupRow {
            backup_type: t,
            status: BackupStatus::Complete,
            start_time: start_s * 1_000_000,
            stop_time: Some((start_s + 10) * 1_000_000),
            ..crate::repo::testkit::backup_row(id, start_s as u64, "000000010000000000000001")
        }
    }

    fn ids(v: &[BackupRow], gone: Vec<(usize, String)>) -> Vec<String> {
        gone.into_iter().map(|(i, _)| v[i].id.clone()).collect()
    }

    #[test]
    fn policies() {
        use BackupType::*;
        let day = 86_400;
        let v = vec![
            b("F1", Full, 0),
            b("I1", Incr, 100),
            b("D1", Diff, 200),
            b("I2", Incr, 300),
            b("F2", Full, day),
            b("D2", Diff, day + 100),
            b("I3", Incr, day + 200),
            b("F3", Full, 2 * day),
            b("I4", Incr, 2 * day + 100),
        ];
        let r = |full, diff, days| Retention {
            full,
            diff,
            days,
            set: None,
        };
        assert_eq!(
            ids(&v, by_policy(&v, &r(Some(2), None, None), 0).unwrap()),
            ["F1", "I1", "D1", "I2"]
        );
        assert_eq!(
            ids(&v, by_policy(&v, &r(Some(5), None, None), 0).unwrap()),
            Vec::<String>::new()
        );
        // Keep 1 diff: D1 and the incr after it go, fulls stay.
        assert_eq!(
            ids(&v, by_policy(&v, &r(None, Some(1), None), 0).unwrap()),
            ["D1", "I2"]
        );
        // Keep 1 day at 2 days + 150 s: the newest backup ending before the
        // window start (D2 at day+110) anchors it.
        let now = (2 * day + 150) * 1_000_000;
        assert_eq!(
            ids(&v, by_policy(&v, &r(None, None, Some(1.0)), now).unwrap()),
            ["F1", "I1", "D1", "I2", "F2"]
        );
        // A count and the window: a backup goes only if both agree.
        assert_eq!(
            ids(
                &v,
                by_policy(&v, &r(Some(2), None, Some(1.0)), now).unwrap()
            ),
            ["F1", "I1", "D1", "I2"]
        );
        assert_eq!(
            ids(
                &v,
                by_policy(&v, &r(Some(1), None, Some(1.0)), now).unwrap()
            ),
            ["F1", "I1", "D1", "I2", "F2"]
        );
        // Both counts: each governs its own type, so fulls still expire.
        assert_eq!(
            ids(&v, by_policy(&v, &r(Some(1), Some(1), None), 0).unwrap()),
            ["F1", "I1", "D1", "I2", "F2", "D2", "I3"]
        );
        assert_eq!(
            ids(&v, by_policy(&v, &r(Some(3), Some(1), None), 0).unwrap()),
            ["D1", "I2"]
        );
        // Both counts under the window: what the window needs stays.
        assert_eq!(
            ids(
                &v,
                by_policy(&v, &r(Some(1), Some(1), Some(1.0)), now).unwrap()
            ),
            ["F1", "I1", "D1", "I2", "F2"]
        );
        // by id, and never the newest.
        let s = Retention {
            set: Some("D2".into()),
            ..Default::default()
        };
        assert_eq!(ids(&v, by_policy(&v, &s, 0).unwrap()), ["D2"]);
        let s = Retention {
            set: Some("I4".into()),
            ..Default::default()
        };
        assert!(by_policy(&v, &s, 0).is_err());
        // Nonsense is refused.
        assert!(by_policy(&v, &r(Some(0), None, None), 0).is_err());
        assert!(by_policy(&v, &r(None, None, Some(-1.0)), 0).is_err());
    }
}
