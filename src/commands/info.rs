//! `info`: what the repository holds. Its JSON form is a stable interface:
//! field names and meanings only ever grow; the binary renders the text.

use serde::Serialize;

use crate::catalog::{BackupRow, BackupStatus, DrillRow};
use crate::error::Result;
use crate::repo::{segment_range, timelines, Repository};
use crate::util::{holder_gone, rfc3339};

#[derive(Debug, Serialize)]
pub struct Info {
    pub clusters: Vec<ClusterInfo>,
    pub repo: RepoInfo,
}

#[derive(Debug, Serialize)]
pub struct RepoInfo {
    pub path: String,
    pub bytes: u64,
    pub pack_bytes: u64,
    /// Whether everything stored is encrypted (made so by `init`).
    pub encrypted: bool,
    /// What the last `expire` did (time as RFC 3339 UTC).
    pub last_expire: Option<LastExpire>,
}

#[derive(Debug, Serialize)]
pub struct LastExpire {
    pub time: String,
    pub backups: u64,
    pub wal_files: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub orphans: u64,
    pub bytes_freed: u64,
}

#[derive(Debug, Serialize)]
pub struct ClusterInfo {
    pub name: String,
    /// A string: a 64-bit number loses digits in common JSON tools.
    pub system_id: String,
    pub pg_version: u32,
    /// The identities the cluster has had, oldest first (a new one after
    /// each `pgstrata upgrade`); `wal` is the current one's archive.
    pub history: Vec<HistoryInfo>,
    pub backups: Vec<BackupInfo>,
    pub wal: WalInfo,
    /// The newest `pgstrata drill` of this cluster.
    pub last_drill: Option<LastDrill>,
}

/// What the last drill found (its full report is in the catalog's `drill`
/// table).
#[derive(Debug, Serialize)]
pub struct LastDrill {
    /// When it started, RFC 3339 UTC.
    pub time: String,
    pub ok: bool,
    pub backup: Option<String>,
    pub target: String,
    pub restore_seconds: Option<f64>,
    pub consistent_seconds: Option<f64>,
    pub promoted_seconds: Option<f64>,
    pub checks_passed: u32,
    pub checks_total: u32,
    /// The first failure, when it failed.
    pub failure: Option<String>,
}

fn last_drill(d: DrillRow) -> LastDrill {
    let secs = |us: Option<i64>| us.map(|u| (u as f64 / 1e5).round() / 10.0);
    let failure = serde_json::from_str::<serde_json::Value>(&d.report)
        .ok()
        .and_then(|v| v["failure"].as_str().map(str::to_string));
    LastDrill {
        time: rfc3339(d.time),
        ok: d.ok,
        backup: d.backup_id,
        target: d.target,
        restore_seconds: secs(d.restore_us),
        consistent_seconds: secs(d.consistent_us),
        promoted_seconds: secs(d.promoted_us),
        checks_passed: d.checks_passed,
        checks_total: d.checks_total,
        failure,
    }
}

#[derive(Debug, Serialize)]
pub struct HistoryInfo {
    pub seq: u32,
    pub system_id: String,
    pub pg_version: u32,
    pub since: String,
}

#[derive(Debug, Serialize)]
pub struct WalInfo {
    pub min: Option<String>,
    pub max: Option<String>,
    pub timelines: Vec<u32>,
    pub files: usize,
}

#[derive(Debug, Serialize)]
pub struct BackupInfo {
    pub id: String,
    #[serde(rename = "type")]
    pub backup_type: String,
    pub status: String,
    pub reference: Option<String>,
    pub start_time: String,
    pub stop_time: Option<String>,
    pub start_lsn: String,
    pub stop_lsn: Option<String>,
    pub timeline: u32,
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
    pub db_bytes: u64,
    pub read_bytes: u64,
    pub stored_bytes: u64,
    /// db_bytes / stored_bytes: how many times smaller this backup made the data.
    pub dedupe_ratio: Option<f64>,
    pub files: u64,
    pub page_errors: u64,
    /// The PostgreSQL major whose binaries start a restore of this backup.
    pub pg_version: u32,
    /// The entry of the cluster's history it was taken under.
    pub history: u32,
    /// Taken from a standby (its backup_label says `BACKUP FROM: standby`).
    pub from_standby: bool,
    /// How an incr or diff found what changed: `archived-wal`,
    /// `wal-summaries` or `file-scan: WHY` (null for a full, and for
    /// backups whose catalog did not record it).
    pub changes: Option<String>,
}

/// `aborted` for a backup still marked running whose process is gone (it
/// was killed; `expire` removes it, and its stored chunks serve the next
/// backup).
pub(crate) fn status(b: &BackupRow) -> &'static str {
    match b.status {
        BackupStatus::Running if holder_gone(b.host.as_deref(), b.pid) => "aborted",
        s => s.as_str(),
    }
}

fn backup_info(b: &BackupRow) -> BackupInfo {
    BackupInfo {
        id: b.id.clone(),
        backup_type: b.backup_type.as_str().into(),
        status: status(b).into(),
        reference: b.reference.clone(),
        start_time: rfc3339(b.start_time),
        stop_time: b.stop_time.map(rfc3339),
        start_lsn: b.start_lsn.to_string(),
        stop_lsn: b.stop_lsn.map(|l| l.to_string()),
        timeline: b.timeline,
        wal_start: b.wal_start.clone(),
        wal_stop: b.wal_stop.clone(),
        db_bytes: b.db_bytes,
        read_bytes: b.read_bytes,
        stored_bytes: b.stored_bytes,
        dedupe_ratio: (b.stored_bytes > 0)
            .then(|| (b.db_bytes as f64 / b.stored_bytes as f64 * 100.0).round() / 100.0),
        files: b.files,
        page_errors: b.page_errors,
        pg_version: b.pg_version,
        history: b.history,
        from_standby: b
            .backup_label
            .as_deref()
            .is_some_and(|l| String::from_utf8_lossy(l).contains("BACKUP FROM: standby")),
        changes: b.changes.clone(),
    }
}

pub fn gather(repo: &Repository, only: Option<&str>) -> Result<Info> {
    let cat = repo.catalog()?;
    let mut clusters = Vec::new();
    for c in cat.clusters().list()? {
        if only.is_some_and(|o| o != c.name) {
            continue;
        }
        let backups = cat
            .backups()
            .of_cluster(c.id)?
            .iter()
            .map(backup_info)
            .collect();
        let names = repo.wal_names(&c.wal_id())?;
        let history = cat
            .clusters()
            .histories(c.id)?
            .into_iter()
            .map(|h| HistoryInfo {
                seq: h.seq,
                system_id: h.system_id.to_string(),
                pg_version: h.pg_version,
                since: rfc3339(h.since),
            })
            .collect();
        let range = segment_range(&names);
        clusters.push(ClusterInfo {
            name: c.name.clone(),
            system_id: c.system_id.to_string(),
            pg_version: c.pg_version,
            history,
            backups,
            wal: WalInfo {
                min: range.as_ref().map(|r| r.0.clone()),
                max: range.map(|r| r.1),
                timelines: timelines(&names).into_iter().map(|t| t.0).collect(),
                files: names.len(),
            },
            last_drill: cat.drills().last(c.id)?.map(last_drill),
        });
    }
    let bytes = repo.stored().list("")?.iter().map(|(_, n)| n).sum();
    Ok(Info {
        clusters,
        repo: RepoInfo {
            path: repo.name().to_string(),
            bytes,
            pack_bytes: cat.packs().bytes()?,
            encrypted: repo.is_encrypted(),
            last_expire: cat.expire_log().last()?.map(|l| LastExpire {
                time: rfc3339(l.time),
                backups: l.backups,
                wal_files: l.wal_files,
                packs_deleted: l.packs_deleted,
                packs_rewritten: l.packs_rewritten,
                orphans: l.orphans,
                bytes_freed: l.bytes_freed,
            }),
        },
    })
}
