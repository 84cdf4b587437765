//! `restore`: reassemble a data directory from one backup's manifest.
//!
//! Plan first, then apply. The plan checks everything that can be checked
//! without writing: the backup exists and can reach the recovery target,
//! every path stays inside the target, every chunk is indexed, and the
//! target is empty or missing (or, with `--delta`, a stopped data directory
//! of the same cluster). Only then does apply write. Every chunk is verified
//! against its id when read, so corruption stops the restore with the file's
//! name rather than writing a bad cluster. Restoring never reads another
//! backup's manifest (invariant 1).

mod apply;
pub mod archiving;
pub mod recovery;
pub mod target;
pub mod timeline;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use apply::apply;
pub use recovery::{ArchiveMode, Recovery, TargetAction};
pub use target::{RecoveryTarget, TimelineTarget};

use crate::archive;
use crate::catalog::{BackupRow, BackupStatus, ChunkLoc, FileKind, FileRow};
use crate::error::{Error, IoContext, Result};
use crate::pg::control;
use crate::pg::datadir::check_manifest_path;
use crate::repo::{check_cluster_name, Repository};
use crate::store::ChunkId;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub pgdata: PathBuf,
    /// A backup id, or `None` / `latest` to choose by the target.
    pub set: Option<String>,
    pub recovery: Recovery,
    /// `--tablespace-map OID=DIR`.
    pub tablespace_map: Vec<(u32, PathBuf)>,
    /// `--tablespace-map-all DIR`: every other tablespace goes to `DIR/<oid>`.
    pub tablespace_map_all: Option<PathBuf>,
    /// Rewrite only what differs in an existing data directory of the cluster.
    pub delta: bool,
    pub workers: usize,
    /// The binary `restore_command` calls (default: this executable).
    pub exe: Option<PathBuf>,
}

impl RestoreOptions {
    pub fn new(pgdata: impl Into<PathBuf>) -> Self {
        RestoreOptions {
            pgdata: pgdata.into(),
            set: None,
            recovery: Recovery::default(),
            tablespace_map: Vec::new(),
            tablespace_map_all: None,
            delta: false,
            workers: crate::backup::default_workers(),
            exe: None,
        }
    }
}

/// Everything a restore will do, decided before anything is written.
#[derive(Debug)]
pub struct RestorePlan {
    pub cluster: String,
    pub backup: BackupRow,
    pub target: PathBuf,
    pub files: Vec<FileRow>,
    /// Tablespace oid → directory the link will point to.
    pub tablespaces: Vec<(String, PathBuf)>,
    pub chunks: HashMap<ChunkId, ChunkLoc>,
    pub bytes: u64,
    pub recovery_conf: String,
    pub signal_file: &'static str,
    /// Rewrite in place: the target holds a stopped copy of this cluster.
    pub delta: bool,
}

#[derive(Debug, Clone)]
pub struct RestoreStats {
    pub backup_id: String,
    pub files: u64,
    pub bytes: u64,
    /// Bytes actually written to files (with `--delta`, only what differed).
    pub written: u64,
    /// Paths removed from the target because the backup does not have them.
    pub removed: u64,
    pub elapsed: Duration,
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    Ok(fs::read_dir(p).at(p)?.next().is_none())
}

fn check_empty_target(p: &Path, what: &str) -> Result<()> {
    if p.exists() {
        if !p.is_dir() {
            return Err(Error::refused(format!(
                "{what} {} exists and is not a directory",
                p.display()
            )));
        }
        if !is_empty_dir(p)? {
            return Err(Error::refused(format!(
                "{what} {} is not empty: restore into an empty or missing directory, or use \
                 --delta to update a stopped copy of this cluster (nothing was written)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// A delta target must be a stopped data directory of the same cluster.
fn check_delta_target(p: &Path, system_id: u64) -> Result<bool> {
    if !p.exists() || is_empty_dir(p)? {
        return Ok(false);
    }
    control::require_data_directory(p)?;
    let found = control::system_identifier(p)?;
    if found != system_id {
        return Err(Error::refused(format!(
            "{} belongs to the cluster with system identifier {found}, not {system_id}: \
             --delta only updates a copy of the same cluster (nothing was written)",
            p.display()
        )));
    }
    let pidfile = p.join("postmaster.pid");
    if let Ok(text) = fs::read_to_string(&pidfile) {
        if let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        {
            let alive = rustix::process::Pid::from_raw(pid).is_some_and(|pid| {
                !matches!(
                    rustix::process::test_kill_process(pid),
                    Err(rustix::io::Errno::SRCH)
                )
            });
            if alive {
                return Err(Error::refused(format!(
                    "a PostgreSQL server is running in {} (postmaster.pid, pid {pid}): stop it \
                     before a delta restore (nothing was written)",
                    p.display()
                )));
            }
        }
    }
    Ok(true)
}

/// Decide what to restore; writes nothing.
pub fn plan(repo: &Repository, cluster: &str, opts: &RestoreOptions) -> Result<RestorePlan> {
    check_cluster_name(cluster)?;
    let cat = repo.catalog()?;
    let cl = cat.cluster(cluster)?.ok_or_else(|| {
        Error::NotFound(format!(
            "cluster {cluster:?} has no backups in this repository"
        ))
    })?;
    let complete: Vec<BackupRow> = cat
        .backups(cl.id)?
        .into_iter()
        .filter(|b| b.status == BackupStatus::Complete)
        .collect();
    let seg_size = complete.last().map(|b| b.wal_seg_size).unwrap_or(16 << 20);
    let names = archive::list(repo, cluster)?;
    let end = timeline::archive_end(
        repo,
        cluster,
        &names,
        seg_size,
        &complete,
        opts.set.as_deref(),
        &opts.recovery,
    )?;
    let backup = target::choose(
        &complete,
        opts.set.as_deref(),
        &opts.recovery.target,
        opts.recovery.timeline.as_ref(),
        &end,
        cluster,
    )?
    .clone();

    let files = cat.files(&backup.id)?;
    let mut seen = HashSet::new();
    for f in &files {
        check_manifest_path(&f.path)?;
        if !seen.insert(f.path.as_str()) {
            return Err(Error::corrupt(
                "manifest",
                format!("path {:?} appears twice", f.path),
            ));
        }
    }
    let target = if opts.pgdata.is_absolute() {
        opts.pgdata.clone()
    } else {
        std::env::current_dir().at(".")?.join(&opts.pgdata)
    };
    let delta = if opts.delta {
        check_delta_target(&target, cl.system_id)?
    } else {
        check_empty_target(&target, "target directory")?;
        false
    };

    let mut tablespaces = Vec::new();
    for f in files.iter().filter(|f| f.kind == FileKind::Link) {
        let Some(oid) = f.path.strip_prefix("pg_tblspc/") else {
            continue;
        };
        let oid_n: u32 = oid.parse().map_err(|_| {
            Error::corrupt(
                "manifest",
                format!("tablespace link {:?} is not an oid", f.path),
            )
        })?;
        let dir = match opts.tablespace_map.iter().find(|(o, _)| *o == oid_n) {
            Some((_, d)) => d.clone(),
            None => match &opts.tablespace_map_all {
                Some(all) => all.join(oid),
                None => PathBuf::from(f.link.clone().unwrap_or_default()),
            },
        };
        if !dir.is_absolute() {
            return Err(Error::invalid(format!(
                "tablespace {oid} would be restored to {:?}, which is not an absolute path",
                dir
            )));
        }
        if !delta {
            check_empty_target(&dir, &format!("tablespace {oid} directory"))?;
        }
        tablespaces.push((oid.to_string(), dir));
    }
    for (oid, _) in &opts.tablespace_map {
        if !tablespaces.iter().any(|(o, _)| o == &oid.to_string()) {
            return Err(Error::invalid(format!(
                "--tablespace-map names tablespace {oid}, which backup {} does not have",
                backup.id
            )));
        }
    }

    let chunks = cat.chunk_locations(&backup.id)?;
    for f in &files {
        if let Some(bm) = &f.blockmap {
            if !chunks.contains_key(bm) {
                return Err(Error::NotFound(format!(
                    "{} (backup {}): its block map (chunk {bm}) is not in the chunk index",
                    f.path, backup.id
                )));
            }
        }
    }
    // Every data chunk must be indexed too: refuse before writing anything.
    if let Some((path, id)) = cat.missing_chunks(&backup.id, 1)?.into_iter().next() {
        return Err(Error::NotFound(format!(
            "{path} (backup {}): chunk {id} is not in the chunk index; the backup cannot be \
             restored (nothing was written; `pgstrata verify` shows what else is affected)",
            backup.id
        )));
    }
    let bytes = files.iter().map(|f| f.size).sum();
    let exe = match &opts.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().at("current executable")?,
    };
    let repo_root = repo.root().canonicalize().at(repo.root())?;
    let cmd = recovery::restore_command(&exe, &repo_root, cluster);
    let recovery_conf = opts.recovery.settings(&cmd, &backup.id);
    Ok(RestorePlan {
        cluster: cluster.to_string(),
        backup,
        target,
        files,
        tablespaces,
        chunks,
        bytes,
        recovery_conf,
        signal_file: opts.recovery.signal_file(),
        delta,
    })
}
