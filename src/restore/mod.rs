//! `restore`: reassemble a data directory from one backup's manifest.
//!
//! Plan first, then apply. The plan checks everything that can be checked
//! without writing (the backup exists and is complete, every path stays
//! inside the target, every chunk is indexed, the target is empty or
//! missing); only then does apply write. Every chunk is verified against its
//! id when read, so corruption stops the restore with the file's name rather
//! than writing a bad cluster. Restoring never reads another backup's
//! manifest (invariant 1).

pub mod recovery;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use rayon::prelude::*;

use crate::catalog::{BackupRow, BackupStatus, ChunkLoc, FileKind, FileRow};
use crate::error::{Error, IoContext, Result};
use crate::pg::datadir::{check_manifest_path, EXCLUDED_DIR_CONTENTS};
use crate::progress::Progress;
use crate::repo::{check_cluster_name, Repository};
use crate::store::blockmap::BlockMap;
use crate::store::pack::read_chunk;
use crate::store::ChunkId;

pub use recovery::{RecoveryTarget, TargetAction};

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub pgdata: PathBuf,
    /// A backup id, or `None` / `latest` for the newest complete backup.
    pub set: Option<String>,
    pub target: RecoveryTarget,
    pub target_action: Option<TargetAction>,
    pub target_timeline: Option<String>,
    /// `--tablespace-map OID=DIR`.
    pub tablespace_map: Vec<(u32, PathBuf)>,
    pub workers: usize,
    /// The binary `restore_command` calls (default: this executable).
    pub exe: Option<PathBuf>,
}

impl RestoreOptions {
    pub fn new(pgdata: impl Into<PathBuf>) -> Self {
        RestoreOptions {
            pgdata: pgdata.into(),
            set: None,
            target: RecoveryTarget::EndOfWal,
            target_action: None,
            target_timeline: None,
            tablespace_map: Vec::new(),
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
}

#[derive(Debug, Clone)]
pub struct RestoreStats {
    pub backup_id: String,
    pub files: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    Ok(fs::read_dir(p).at(p)?.next().is_none())
}

fn check_target(p: &Path, what: &str) -> Result<()> {
    if p.exists() {
        if !p.is_dir() {
            return Err(Error::refused(format!(
                "{what} {} exists and is not a directory",
                p.display()
            )));
        }
        if !is_empty_dir(p)? {
            return Err(Error::refused(format!(
                "{what} {} is not empty: restore into an empty or missing directory \
                 (nothing was written)",
                p.display()
            )));
        }
    }
    Ok(())
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
    let backup = match opts.set.as_deref() {
        None | Some("latest") => complete.last().cloned().ok_or_else(|| {
            Error::NotFound(format!("cluster {cluster:?} has no complete backup"))
        })?,
        Some(id) => complete
            .iter()
            .find(|b| b.id == id)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "backup {id:?} is not a complete backup of cluster {cluster:?} (see `pgstrata info`)"
                ))
            })?,
    };
    let files = cat.files(&backup.id)?;
    for f in &files {
        check_manifest_path(&f.path)?;
    }
    let target = if opts.pgdata.is_absolute() {
        opts.pgdata.clone()
    } else {
        std::env::current_dir().at(".")?.join(&opts.pgdata)
    };
    check_target(&target, "target directory")?;

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
            None => PathBuf::from(f.link.clone().unwrap_or_default()),
        };
        if !dir.is_absolute() {
            return Err(Error::invalid(format!(
                "tablespace {oid} would be restored to {:?}, which is not an absolute path",
                dir
            )));
        }
        check_target(&dir, &format!("tablespace {oid} directory"))?;
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
                    "backup {}: the block map of {} (chunk {bm}) is not in the chunk index",
                    backup.id, f.path
                )));
            }
        }
    }
    let bytes = files.iter().map(|f| f.size).sum();
    let exe = match &opts.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().at("current executable")?,
    };
    let repo_root = repo.root().canonicalize().at(repo.root())?;
    let cmd = recovery::restore_command(&exe, &repo_root, cluster);
    let recovery_conf = recovery::settings(
        &cmd,
        &opts.target,
        opts.target_action,
        opts.target_timeline.as_deref(),
        &backup.id,
    );
    Ok(RestorePlan {
        cluster: cluster.to_string(),
        backup,
        target,
        files,
        tablespaces,
        chunks,
        bytes,
        recovery_conf,
    })
}

fn set_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    let t = if mtime_ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
    } else {
        UNIX_EPOCH
    };
    let f = File::options().write(true).open(path).at(path)?;
    f.set_modified(t).at(path)
}

/// Carry out a plan. On failure, what was written is removed again (the
/// targets were empty or missing), so a broken restore never looks usable.
pub fn apply(
    repo: &Repository,
    plan: &RestorePlan,
    workers: usize,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let mut targets = vec![plan.target.clone()];
    targets.extend(plan.tablespaces.iter().map(|(_, d)| d.clone()));
    let existed: Vec<bool> = targets.iter().map(|t| t.exists()).collect();
    let r = apply_inner(repo, plan, workers, progress);
    if r.is_err() {
        progress.end();
        for (t, existed) in targets.iter().zip(existed) {
            if existed {
                if let Ok(rd) = fs::read_dir(t) {
                    for e in rd.flatten() {
                        let p = e.path();
                        let _ = if p.is_dir() && !p.is_symlink() {
                            fs::remove_dir_all(&p)
                        } else {
                            fs::remove_file(&p)
                        };
                    }
                }
            } else {
                let _ = fs::remove_dir_all(t);
            }
        }
    }
    r
}

fn apply_inner(
    repo: &Repository,
    plan: &RestorePlan,
    workers: usize,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let started = Instant::now();
    let root = &plan.target;
    let as_root = rustix::process::geteuid().is_root();
    fs::create_dir_all(root).at(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700)).at(root)?;

    // Tablespace directories and links first, so files land through them.
    for (oid, dir) in &plan.tablespaces {
        fs::create_dir_all(dir).at(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).at(dir)?;
        let tbl = root.join("pg_tblspc");
        fs::create_dir_all(&tbl).at(&tbl)?;
        let link = tbl.join(oid);
        std::os::unix::fs::symlink(dir, &link).at(&link)?;
    }
    for f in plan
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Dir && f.path != ".")
    {
        let p = root.join(&f.path);
        fs::create_dir_all(&p).at(&p)?;
    }
    for f in plan
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Link && !f.path.starts_with("pg_tblspc/"))
    {
        let p = root.join(&f.path);
        std::os::unix::fs::symlink(f.link.as_deref().unwrap_or(""), &p).at(&p)?;
    }
    for d in EXCLUDED_DIR_CONTENTS {
        let p = root.join(d);
        fs::create_dir_all(&p).at(&p)?;
    }
    let status = root.join("pg_wal/archive_status");
    fs::create_dir_all(&status).at(&status)?;

    let files: Vec<&FileRow> = plan
        .files
        .iter()
        .filter(|f| f.kind == FileKind::File)
        .collect();
    progress.begin("restore", plan.bytes);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers.max(1))
        .build()
        .map_err(|e| Error::invalid(format!("cannot start workers: {e}")))?;
    pool.install(|| {
        files
            .par_iter()
            .try_for_each(|f| restore_file(repo, plan, f, progress))
    })?;
    progress.end();

    write_recovery_files(plan)?;

    // Owners and modes last, directories deepest first; then make it durable.
    let root_row = plan.files.iter().find(|f| f.path == ".");
    let (uid, gid) = root_row.map(|r| (r.uid, r.gid)).unwrap_or((0, 0));
    if as_root {
        for extra in [
            "backup_label",
            "tablespace_map",
            "recovery.signal",
            "postgresql.auto.conf",
            "pg_wal/archive_status",
        ]
        .iter()
        .map(|p| root.join(p))
        .chain(EXCLUDED_DIR_CONTENTS.iter().map(|d| root.join(d)))
        .chain(std::iter::once(root.join("pg_tblspc")))
        {
            if extra.exists() {
                std::os::unix::fs::chown(&extra, Some(uid), Some(gid)).at(&extra)?;
            }
        }
        for (_, dir) in &plan.tablespaces {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).at(dir)?;
        }
    }
    let mut dirs: Vec<&FileRow> = plan
        .files
        .iter()
        .filter(|f| f.kind != FileKind::File)
        .collect();
    dirs.sort_by_key(|f| std::cmp::Reverse(f.path.len()));
    for f in dirs {
        let p = if f.path == "." {
            root.clone()
        } else {
            root.join(&f.path)
        };
        if as_root {
            std::os::unix::fs::lchown(&p, Some(f.uid), Some(f.gid)).at(&p)?;
        }
        if f.kind == FileKind::Dir {
            fs::set_permissions(&p, fs::Permissions::from_mode(f.mode)).at(&p)?;
            File::open(&p).and_then(|d| d.sync_all()).at(&p)?;
        }
    }
    for (_, dir) in &plan.tablespaces {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    Ok(RestoreStats {
        backup_id: plan.backup.id.clone(),
        files: files.len() as u64,
        bytes: plan.bytes,
        elapsed: started.elapsed(),
    })
}

fn restore_file(
    repo: &Repository,
    plan: &RestorePlan,
    f: &FileRow,
    progress: &dyn Progress,
) -> Result<()> {
    let path = plan.target.join(&f.path);
    let what = format!("{} (backup {})", f.path, plan.backup.id);
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .at(&path)?;
    if let Some(bm_id) = &f.blockmap {
        let map = load_chunk(repo, plan, bm_id, &what).and_then(|b| BlockMap::decode(&b, &what))?;
        if map.file_size != f.size {
            return Err(Error::corrupt(
                what,
                format!(
                    "block map says {} bytes, manifest {}",
                    map.file_size, f.size
                ),
            ));
        }
        out.set_len(f.size).at(&path)?;
        let bs = u64::from(map.block_size);
        // Each chunk is read and verified once, then scattered to its blocks.
        let mut by_chunk: Vec<Vec<usize>> = vec![Vec::new(); map.chunks.len()];
        for (i, e) in map.extents.iter().enumerate() {
            by_chunk[e.chunk as usize].push(i);
        }
        // Chunks of one file go in parallel too, so one big relation does
        // not leave the other workers idle.
        by_chunk
            .par_iter()
            .enumerate()
            .try_for_each(|(ci, exts)| -> Result<()> {
                if exts.is_empty() {
                    return Ok(());
                }
                let data = load_chunk(repo, plan, &map.chunks[ci], &what)?;
                let mut written = 0u64;
                for &ei in exts {
                    let e = map.extents[ei];
                    let from = u64::from(e.chunk_block) * bs;
                    let file_off = u64::from(e.first_block) * bs;
                    let len = (u64::from(e.blocks) * bs).min(f.size - file_off);
                    let src = data
                        .get(from as usize..(from + len) as usize)
                        .ok_or_else(|| {
                            Error::corrupt(
                                &what,
                                format!("chunk {} is shorter than its extents", map.chunks[ci]),
                            )
                        })?;
                    out.write_all_at(src, file_off).at(&path)?;
                    written += len;
                }
                progress.advance(written);
                Ok(())
            })?;
    }
    out.sync_all().at(&path)?;
    drop(out);
    set_mtime(&path, f.mtime_ns)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(f.mode)).at(&path)?;
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&path, Some(f.uid), Some(f.gid)).at(&path)?;
    }
    Ok(())
}

fn load_chunk(repo: &Repository, plan: &RestorePlan, id: &ChunkId, what: &str) -> Result<Vec<u8>> {
    let loc = plan
        .chunks
        .get(id)
        .ok_or_else(|| Error::NotFound(format!("{what}: chunk {id} is not in the chunk index")))?;
    read_chunk(
        repo.backend(),
        &loc.pack_id,
        loc.offset,
        loc.stored_len,
        id,
        what,
    )
}

fn write_durably(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .at(path)?;
    std::io::Write::write_all(&mut f, data).at(path)?;
    f.sync_all().at(path)
}

fn write_recovery_files(plan: &RestorePlan) -> Result<()> {
    let root = &plan.target;
    if let Some(label) = &plan.backup.backup_label {
        write_durably(&root.join("backup_label"), label, 0o600)?;
    }
    if let Some(map) = &plan.backup.tablespace_map {
        // Point each tablespace at where this restore put it.
        let text = String::from_utf8_lossy(map);
        let mut out = String::new();
        for line in text.lines() {
            match line.split_once(' ') {
                Some((oid, _)) => match plan.tablespaces.iter().find(|(o, _)| o == oid) {
                    Some((_, dir)) => out.push_str(&format!("{oid} {}\n", dir.display())),
                    None => out.push_str(&format!("{line}\n")),
                },
                None if !line.is_empty() => out.push_str(&format!("{line}\n")),
                None => {}
            }
        }
        write_durably(&root.join("tablespace_map"), out.as_bytes(), 0o600)?;
    }
    let conf_path = root.join("postgresql.auto.conf");
    let existing = match fs::read_to_string(&conf_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(conf_path, e)),
    };
    let mut conf = recovery::strip_previous(&existing);
    conf.push_str(&plan.recovery_conf);
    let mode = fs::metadata(&conf_path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    write_durably(&conf_path, conf.as_bytes(), mode)?;
    write_durably(&root.join("recovery.signal"), b"", 0o600)?;
    Ok(())
}
