//! `info`: what the repository holds. `--output json` is a stable interface:
//! field names and meanings only ever grow.

use serde::Serialize;

use crate::archive;
use crate::catalog::BackupRow;
use crate::error::Result;
use crate::repo::Repository;

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
    pub system_id: u64,
    pub pg_version: u32,
    pub backups: Vec<BackupInfo>,
    pub wal: WalInfo,
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
    /// The PostgreSQL major the backup was taken from (and needs to start).
    pub pg_version: u32,
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
    pub db_bytes: u64,
    pub read_bytes: u64,
    pub stored_bytes: u64,
    /// db_bytes / stored_bytes: how many times smaller this backup made the data.
    pub dedupe_ratio: Option<f64>,
    pub files: u64,
    pub page_errors: u64,
}

/// RFC 3339 UTC from unix microseconds.
pub fn rfc3339(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn backup_info(b: &BackupRow) -> BackupInfo {
    BackupInfo {
        id: b.id.clone(),
        backup_type: b.backup_type.as_str().into(),
        status: b.status.as_str().into(),
        reference: b.reference.clone(),
        start_time: rfc3339(b.start_time),
        stop_time: b.stop_time.map(rfc3339),
        start_lsn: b.start_lsn.to_string(),
        stop_lsn: b.stop_lsn.map(|l| l.to_string()),
        timeline: b.timeline,
        pg_version: b.pg_version,
        wal_start: b.wal_start.clone(),
        wal_stop: b.wal_stop.clone(),
        db_bytes: b.db_bytes,
        read_bytes: b.read_bytes,
        stored_bytes: b.stored_bytes,
        dedupe_ratio: (b.stored_bytes > 0)
            .then(|| (b.db_bytes as f64 / b.stored_bytes as f64 * 100.0).round() / 100.0),
        files: b.files,
        page_errors: b.page_errors,
    }
}

pub fn gather(repo: &Repository, only: Option<&str>) -> Result<Info> {
    let cat = repo.catalog()?;
    let mut clusters = Vec::new();
    for c in cat.clusters()? {
        if only.is_some_and(|o| o != c.name) {
            continue;
        }
        let backups = cat.backups(c.id)?.iter().map(backup_info).collect();
        let names = archive::list(repo, &c.name)?;
        let range = archive::segment_range(&names);
        clusters.push(ClusterInfo {
            name: c.name.clone(),
            system_id: c.system_id,
            pg_version: c.pg_version,
            backups,
            wal: WalInfo {
                min: range.as_ref().map(|r| r.0.clone()),
                max: range.map(|r| r.1),
                timelines: archive::timelines(&names)
                    .into_iter()
                    .map(|t| t.0)
                    .collect(),
                files: names.len(),
            },
        });
    }
    let bytes = repo.backend().list("")?.iter().map(|(_, n)| n).sum();
    Ok(Info {
        clusters,
        repo: RepoInfo {
            path: repo.root().display().to_string(),
            bytes,
            pack_bytes: cat.pack_bytes()?,
            last_expire: cat.last_expire()?.map(|l| LastExpire {
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

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn render_text(info: &Info) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "repository {}: {} ({} in packs)",
        info.repo.path,
        human(info.repo.bytes),
        human(info.repo.pack_bytes)
    );
    if let Some(l) = &info.repo.last_expire {
        let _ = writeln!(
            s,
            "last expire {}: {} backups, {} WAL files, {} packs deleted, {} rewritten, {} leftovers, {} freed",
            l.time, l.backups, l.wal_files, l.packs_deleted, l.packs_rewritten, l.orphans, human(l.bytes_freed)
        );
    }
    if info.clusters.is_empty() {
        let _ = writeln!(s, "no clusters yet");
    }
    for c in &info.clusters {
        let _ = writeln!(
            s,
            "\ncluster {} (PostgreSQL {}, system id {})",
            c.name, c.pg_version, c.system_id
        );
        match (&c.wal.min, &c.wal.max) {
            (Some(a), Some(b)) => {
                let _ = writeln!(
                    s,
                    "  wal archive: {a} .. {b} ({} files, timelines {:?})",
                    c.wal.files, c.wal.timelines
                );
            }
            _ => {
                let _ = writeln!(s, "  wal archive: empty");
            }
        }
        if c.backups.is_empty() {
            let _ = writeln!(s, "  no backups");
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<20} {:<5} {:<3} {:<9} {:<20} {:<20} {:>10} {:>10} {:>10} {:>7}  wal",
            "backup",
            "type",
            "pg",
            "status",
            "start (UTC)",
            "reference",
            "size",
            "read",
            "stored",
            "ratio"
        );
        for b in &c.backups {
            let _ = writeln!(
                s,
                "  {:<20} {:<5} {:<3} {:<9} {:<20} {:<20} {:>10} {:>10} {:>10} {:>7}  {}..{}{}",
                b.id,
                b.backup_type,
                b.pg_version,
                b.status,
                b.start_time.trim_end_matches('Z').replace('T', " "),
                b.reference.as_deref().unwrap_or("-"),
                human(b.db_bytes),
                human(b.read_bytes),
                human(b.stored_bytes),
                b.dedupe_ratio
                    .map(|r| format!("{r}x"))
                    .unwrap_or_else(|| "-".into()),
                b.wal_start.as_deref().unwrap_or("?"),
                b.wal_stop.as_deref().unwrap_or("?"),
                if b.page_errors > 0 {
                    format!("  ({} page checksum errors)", b.page_errors)
                } else {
                    String::new()
                }
            );
        }
    }
    s
}
