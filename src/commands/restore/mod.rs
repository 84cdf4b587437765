//! `restore`: reassemble a data directory from one backup's manifest.
//!
//! Plan first, then apply. The plan checks everything that can be checked
//! without writing: the backup exists and can reach the recovery target,
//! every path stays inside the target, every chunk is indexed, and the
//! target is empty or missing (or, for a delta restore, a stopped data directory
//! of the same cluster). Only then does apply write. Every chunk is verified
//! against its id when read, so corruption stops the restore with the file's
//! name rather than writing a bad cluster. Restoring never reads another
//! backup's manifest (invariant 1).
//!
//! A restore marks its target while it writes (`resume`): a restore that
//! was killed is finished by running it again, as a delta restore. Where
//! tablespaces go, and where they must never go, is `tablespace`'s.

mod apply;
mod archiving;
mod beneath;
mod layout;
mod links;
mod recovery;
mod resume;
mod tablespace;
mod target;
mod timeline;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use archiving::{summary as archiving_summary, Archiving};
pub use recovery::{ArchiveMode, Recovery, TargetAction};
pub use target::{parse_time as parse_target_time, RecoveryTarget, TimelineTarget};

use rayon::prelude::*;

use crate::catalog::{
    BackupRow, BackupStatus, Catalog, ChunkLoc, ClusterRow, FileKind, FileOrder, FileRow, Position,
};
use crate::error::{Error, Hint, IoContext, Result, Setting};
use crate::format::BlockMap;
use crate::pg::control;
use crate::pg::datadir::check_manifest_path;
use crate::progress::Progress;
use crate::repo::Invocation;
use crate::repo::{check_cluster_name, ReaderGuard, Repository};
use crate::util::default_workers;

#[derive(Clone, Debug)]
pub struct RestoreOptions {
    pub pgdata: PathBuf,
    /// A backup id, or `None` / `latest` to choose by the target.
    pub set: Option<String>,
    pub recovery: Recovery,
    /// Tablespace OID goes to DIR.
    pub tablespace_map: Vec<(u32, PathBuf)>,
    /// Every other tablespace goes to `DIR/<oid>`.
    pub tablespace_map_all: Option<PathBuf>,
    /// Rewrite only what differs in an existing data directory of the cluster.
    pub delta: bool,
    pub workers: usize,
    /// How `restore_command` calls pgstrata; a plan needs one.
    pub invocation: Option<Arc<dyn Invocation>>,
    /// Recreate the backup's symbolic links (see `links`).
    pub link_all: bool,
    /// Recreate link PATH, leading to DEST.
    pub link_map: Vec<(String, PathBuf)>,
}

/// Options for unit tests: a stand-in invocation.
#[cfg(test)]
pub(crate) fn test_options(pgdata: impl Into<PathBuf>) -> RestoreOptions {
    let mut o = RestoreOptions::new(pgdata);
    o.invocation = crate::repo::fake::fake();
    o
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
            workers: default_workers(),
            invocation: None,
            link_all: false,
            link_map: Vec::new(),
        }
    }
}

/// Everything a restore will do, decided before anything is written.
///
/// The files themselves are not held: there may be hundreds of thousands.
/// Apply reads them again from the catalog the plan checked, a batch at a
/// time, so memory does not grow with the number of files.
#[derive(Debug)]
pub struct RestorePlan {
    pub cluster: String,
    pub backup: BackupRow,
    pub target: PathBuf,
    /// The catalog file the plan was made from, and the backup's place in it.
    catalog: PathBuf,
    at: Position,
    /// Directories, links, and files stored with the link they were found
    /// through, in path order.
    pub layout: Vec<FileRow>,
    /// Regular files.
    pub files: u64,
    /// Tablespace oid → directory the link will point to.
    pub tablespaces: Vec<(String, PathBuf)>,
    pub bytes: u64,
    pub recovery_conf: String,
    pub signal_file: &'static str,
    /// Rewrite in place: the target holds a stopped copy of this cluster
    /// (or a restore of it that did not finish).
    pub delta: bool,
    /// The links recreated besides the tablespaces'.
    links: links::LinkPlan,
    /// The system identifier the backup was taken with (for the marker).
    system_id: u64,
    /// Registered as a reader from before the catalog was read until the
    /// plan is dropped, so that `apply` reads packs an expire left.
    _reading: ReaderGuard,
}

#[derive(Debug, Clone)]
pub struct RestoreStats {
    pub backup_id: String,
    /// The PostgreSQL major of the backup: the restored data directory needs
    /// that major's server binaries to start.
    pub pg_version: u32,
    pub files: u64,
    pub bytes: u64,
    /// Bytes actually written to files (a delta restore: only what differed).
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
                "{what} {} is not empty: restore into an empty or missing directory, or \
                 update a stopped copy of this cluster with a delta restore (nothing was \
                 written)",
                p.display()
            ))
            .hint(Hint::RestoreWith {
                setting: Setting::Delta,
                value: None,
            }));
        }
    }
    Ok(())
}

/// A delta target must be a stopped data directory of the same cluster, or
/// a restore of it that pgstrata did not finish (its marker; then
/// `PG_VERSION` and `pg_control` may not be written yet).
fn check_delta_target(p: &Path, system_id: u64, marker: Option<&resume::Marker>) -> Result<bool> {
    if !p.exists() || is_empty_dir(p)? {
        return Ok(false);
    }
    let other = |found: u64| {
        Error::refused(format!(
            "{} belongs to the cluster with system identifier {found}, not {system_id}: \
             a delta restore only updates a copy of the same cluster (nothing was written)",
            p.display()
        ))
    };
    match marker {
        Some(m) if m.system_id != system_id => return Err(other(m.system_id)),
        Some(_) if !p.join("global/pg_control").is_file() => {}
        Some(_) => {
            let found = control::system_identifier(p)?;
            if found != system_id {
                return Err(other(found));
            }
        }
        None => {
            control::require_data_directory(p)?;
            let found = control::system_identifier(p)?;
            if found != system_id {
                return Err(other(found));
            }
        }
    }
    if let Some(pid) = tablespace::live_postmaster(p) {
        return Err(Error::refused(format!(
            "a PostgreSQL server is running in {} (postmaster.pid, pid {pid}): stop it \
             before a delta restore (nothing was written)",
            p.display()
        )));
    }
    Ok(true)
}

/// Block maps read and decoded in parallel at once by [`check_data`].
const CHECK_WINDOW: usize = 1024;

/// Every file's data must be there before anything is written: a file with
/// bytes has a block map, each block map is indexed, readable, decodes and
/// describes its file, and every data chunk is indexed. Block maps are taken
/// in the order they are stored (neighbours share reads and, encrypted,
/// opened segments), a window at a time, read and decoded in parallel.
fn check_data(repo: &Repository, cat: &Catalog, backup: &BackupRow) -> Result<()> {
    let mut window: Vec<(FileRow, Option<ChunkLoc>)> = Vec::with_capacity(CHECK_WINDOW);
    let check = |window: &mut Vec<(FileRow, Option<ChunkLoc>)>| -> Result<()> {
        let results: Vec<Result<()>> = window
            .par_iter()
            .map(|(f, loc)| check_file(repo, backup, f, loc.as_ref()))
            .collect();
        window.clear();
        results.into_iter().collect()
    };
    cat.versions()
        .for_each_file(&backup.id, FileOrder::BlockMap, |f, loc| {
            window.push((f, loc));
            if window.len() == CHECK_WINDOW {
                check(&mut window)?;
            }
            Ok(())
        })?;
    check(&mut window)?;
    if let Some((path, id)) = cat
        .packs()
        .missing_chunks(&backup.id, 1)?
        .into_iter()
        .next()
    {
        return Err(Error::NotFound(format!(
            "{path} (backup {}): chunk {id} is not in the chunk index; the backup cannot be \
             restored",
            backup.id
        ))
        .hint(Hint::NothingWrittenVerify));
    }
    Ok(())
}

fn check_file(
    repo: &Repository,
    backup: &BackupRow,
    f: &FileRow,
    loc: Option<&ChunkLoc>,
) -> Result<()> {
    let what = || format!("{} (backup {})", f.path, backup.id);
    let bm = match (&f.blockmap, f.size) {
        (Some(bm), _) => bm,
        (None, 0) => return Ok(()),
        (None, size) => {
            return Err(Error::corrupt(
                what(),
                format!("the manifest gives {size} bytes but no block map"),
            )
            .hint(Hint::NothingWrittenVerify))
        }
    };
    let loc = loc.ok_or_else(|| {
        Error::NotFound(format!(
            "{}: its block map (chunk {bm}) is not in the chunk index",
            what()
        ))
        .hint(Hint::NothingWrittenVerify)
    })?;
    let map = repo.stored().read_chunk_with(loc, bm, &what(), |raw| {
        BlockMap::decode(raw, &what())
            .map_err(|e| Error::corrupt(what(), e.to_string()).hint(Hint::NothingWrittenVerify))
    })?;
    if map.file_size != f.size {
        return Err(Error::corrupt(
            what(),
            format!(
                "its block map describes {} bytes, the manifest {}",
                map.file_size, f.size
            ),
        )
        .hint(Hint::NothingWrittenVerify));
    }
    Ok(())
}

/// The system identifier the cluster had when `backup` was taken.
fn history_system_id(cat: &Catalog, cl: &ClusterRow, backup: &BackupRow) -> Result<u64> {
    cat.clusters()
        .histories(cl.id)?
        .into_iter()
        .find(|h| h.seq == backup.history)
        .map(|h| h.system_id)
        .ok_or_else(|| {
            Error::corrupt(
                format!("backup {}", backup.id),
                format!("cluster history entry {} is missing", backup.history),
            )
        })
}

fn cluster_row(cat: &Catalog, cluster: &str) -> Result<ClusterRow> {
    check_cluster_name(cluster)?;
    cat.clusters().get(cluster)?.ok_or_else(|| {
        Error::NotFound(format!(
            "cluster {cluster:?} has no backups in this repository"
        ))
    })
}

/// The backup a restore with `opts` would start from, and its cluster's
/// catalog row; writes nothing and reads no manifest. Its errors are about
/// what was asked (an unknown backup id, an unreachable target), not about
/// the backup's data, which [`plan`] checks.
pub(crate) fn chosen_backup(
    repo: &Repository,
    cluster: &str,
    opts: &RestoreOptions,
) -> Result<(ClusterRow, BackupRow)> {
    let cat = repo.catalog()?;
    let cl = cluster_row(&cat, cluster)?;
    let b = choose_backup(repo, &cat, &cl, opts)?;
    Ok((cl, b))
}

/// Decide what to restore; writes nothing.
impl RestorePlan {
    /// Links restored as the regular files and directories they led to
    /// (`link_all` restores them as links).
    pub fn links_as_files(&self) -> &[String] {
        &self.links.as_files
    }

    /// Links to what the backup does not hold, left out (path, where it
    /// led).
    pub fn links_not_restored(&self) -> &[(String, PathBuf)] {
        &self.links.not_restored
    }
}

pub fn plan(repo: &Repository, cluster: &str, opts: &RestoreOptions) -> Result<RestorePlan> {
    // Before the catalog is read: an expire beside this restore then leaves
    // every pack this catalog names until the plan (and its apply) is done.
    let reading = repo.register_reader();
    let (cat, catalog) = repo.catalog_with_path()?;
    let cl = cluster_row(&cat, cluster)?;
    let backup = choose_backup(repo, &cat, &cl, opts)?;
    let at = cat.versions().position(&backup.id)?;
    let (layout, files, bytes) = scan_manifest(&cat, &backup.id)?;
    tablespace::check_map(&layout, opts, &backup)?;
    let target = if opts.pgdata.is_absolute() {
        opts.pgdata.clone()
    } else {
        std::env::current_dir().at(".")?.join(&opts.pgdata)
    };
    let system_id = history_system_id(&cat, &cl, &backup)?;
    let marker = resume::read(&target)?;
    if let Some(m) = &marker {
        tracing::info!(
            "{} holds an unfinished restore of backup {}: finishing it as a delta restore",
            target.display(),
            m.backup
        );
    }
    let delta = if opts.delta || marker.is_some() {
        check_delta_target(&target, system_id, marker.as_ref())?
    } else {
        check_empty_target(&target, "target directory")?;
        false
    };
    let tablespaces = tablespace::plan(&layout, opts, &target, delta)?;
    let links = links::plan(&layout, opts, &target, delta, &backup.id)?;
    check_data(repo, &cat, &backup)?;
    let invocation = opts.invocation.as_ref().ok_or_else(|| {
        Error::internal("a restore needs to know how restore_command calls pgstrata")
    })?;
    let pass = repo.passphrase_source();
    if let Some(crate::repo::PassphraseSource::Env(var)) = pass {
        tracing::warn!(
            "restore_command cannot carry the passphrase from {var}: the restored server's \
             environment must set {var}, or use passphrase-file or passphrase-command"
        );
    }
    let cmd = invocation.restore_command(cluster, backup.history, pass);
    let recovery_conf = opts.recovery.settings(&cmd, &backup.id);
    Ok(RestorePlan {
        cluster: cluster.to_string(),
        backup,
        target,
        catalog,
        at,
        layout,
        files,
        tablespaces,
        bytes,
        recovery_conf,
        signal_file: opts.recovery.signal_file(),
        delta,
        links,
        system_id,
        _reading: reading,
    })
}

/// Carry out a plan: the target is marked as being written (see
/// [`resume`]) before apply writes anything, and unmarked after its final
/// sync, so that a restore that dies part-way is finished by running it
/// again.
pub fn apply(
    repo: &Repository,
    plan: &RestorePlan,
    workers: usize,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    let created = resume::begin(plan)?;
    match apply::apply(repo, plan, workers, progress) {
        Ok(stats) => {
            resume::finish(plan)?;
            Ok(stats)
        }
        Err(e) => {
            if plan.delta {
                tracing::warn!(
                    "the restore into {} did not finish: run it again to finish it",
                    plan.target.display()
                );
            } else {
                // Apply emptied the target; leave it as it was found.
                resume::undo(plan, created);
            }
            Err(e)
        }
    }
}

/// The backup to restore for the target. Each entry of the cluster's
/// history has its own backups and WAL archive; the newest entry that can
/// reach the target wins (a backup the user chose names its own). When none can,
/// the newest entry's reason is the error.
fn choose_backup(
    repo: &Repository,
    cat: &Catalog,
    cl: &ClusterRow,
    opts: &RestoreOptions,
) -> Result<BackupRow> {
    let complete: Vec<BackupRow> = cat
        .backups()
        .of_cluster(cl.id)?
        .into_iter()
        .filter(|b| b.status == BackupStatus::Complete)
        .collect();
    let set = opts.set.as_deref().filter(|s| *s != "latest");
    let mut histories: Vec<u32> = match set.and_then(|id| complete.iter().find(|b| b.id == id)) {
        Some(b) => vec![b.history],
        None => complete.iter().map(|b| b.history).collect(),
    };
    histories.sort_unstable_by(|a, b| b.cmp(a));
    histories.dedup();
    if histories.is_empty() {
        histories.push(cl.history);
    }
    let mut first_error = None;
    for h in histories {
        let of_h: Vec<BackupRow> = complete
            .iter()
            .filter(|b| b.history == h)
            .cloned()
            .collect();
        match choose_in_history(repo, &cl.name, h, &of_h, opts) {
            Ok(b) => return Ok(b),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        Error::NotFound(format!("cluster {:?} has no complete backup", cl.name))
    }))
}

fn choose_in_history(
    repo: &Repository,
    cluster: &str,
    history: u32,
    complete: &[BackupRow],
    opts: &RestoreOptions,
) -> Result<BackupRow> {
    let wal_id = crate::format::keys::wal_id(cluster, history);
    let seg_size = complete.last().map(|b| b.wal_seg_size).unwrap_or(16 << 20);
    let names = repo.wal_names(&wal_id)?;
    let end = timeline::archive_end(
        repo,
        &wal_id,
        &names,
        seg_size,
        complete,
        opts.set.as_deref(),
        &opts.recovery,
    )?;
    target::choose(
        complete,
        opts.set.as_deref(),
        &opts.recovery.target,
        opts.recovery.timeline.as_ref(),
        &end,
        cluster,
    )
    .cloned()
}

/// Every path stays inside the target, and appears once (rows come in
/// path order: a repeat is the previous path). Returns the directories,
/// links and linked files, the number of regular files and the bytes of the backup.
fn scan_manifest(cat: &Catalog, backup_id: &str) -> Result<(Vec<FileRow>, u64, u64)> {
    let (mut layout, mut files, mut bytes) = (Vec::new(), 0u64, 0u64);
    let mut prev = String::new();
    cat.versions().for_each_row(backup_id, |f| {
        check_manifest_path(&f.path)?;
        if f.path == prev {
            return Err(Error::corrupt(
                "manifest",
                format!("path {:?} appears twice", f.path),
            ));
        }
        prev.clone_from(&f.path);
        bytes += f.size;
        if f.kind == FileKind::File {
            files += 1;
            if f.link.is_some() {
                layout.push(f);
            }
        } else {
            layout.push(f);
        }
        Ok(())
    })?;
    Ok((layout, files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::repo::testkit::{content, Fixture};

    fn restore_to(f: &Fixture, dir: &Path) -> Result<RestoreStats> {
        let plan = plan(&f.repo, "main", &test_options(dir))?;
        apply(&f.repo, &plan, 2, &Silent)
    }

    #[test]
    fn restores_what_was_stored() {
        let f = Fixture::new();
        let m = f.backup(1, &[("a", content(1, 300, 0)), ("c", content(2, 3, 100))]);
        let dir = f.scratch("out");
        let s = restore_to(&f, &dir).unwrap();
        assert_eq!(s.backup_id, m.id);
        for (p, data) in &m.files {
            assert_eq!(&std::fs::read(dir.join(p)).unwrap(), data, "{p}");
        }
        assert!(dir.join("recovery.signal").exists());
    }

    /// A target holding the marker of an unfinished restore is finished as
    /// a delta, without `PG_VERSION`; the marker goes at the end.
    #[test]
    fn a_marked_target_is_finished_as_a_delta() {
        let f = Fixture::new();
        let m = f.backup(1, &[("a", content(1, 300, 0)), ("c", content(2, 3, 100))]);
        let dir = f.scratch("out");
        let first = plan(&f.repo, "main", &test_options(&dir)).unwrap();
        assert!(!first.delta);
        // Half-written: the marker, one file, a stray.
        resume::begin(&first).unwrap();
        std::fs::write(dir.join("a"), b"half").unwrap();
        std::fs::write(dir.join("stray"), b"x").unwrap();
        drop(first);
        // Without asking for a delta, the non-empty target is taken as unfinished.
        let again = plan(&f.repo, "main", &test_options(&dir)).unwrap();
        assert!(again.delta);
        apply(&f.repo, &again, 2, &Silent).unwrap();
        for (p, data) in &m.files {
            assert_eq!(&std::fs::read(dir.join(p)).unwrap(), data, "{p}");
        }
        assert!(!dir.join("stray").exists());
        assert!(!dir.join(resume::MARKER).exists());
        // Finished, it is an ordinary non-empty directory again.
        let e = plan(&f.repo, "main", &test_options(&dir)).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
    }

    #[test]
    fn restores_an_encrypted_repository_and_refuses_a_flipped_byte() {
        let f = Fixture::encrypted();
        let m = f.backup(1, &[("a", content(1, 300, 0)), ("c", content(2, 3, 100))]);
        let dir = f.scratch("out");
        restore_to(&f, &dir).unwrap();
        for (p, data) in &m.files {
            assert_eq!(&std::fs::read(dir.join(p)).unwrap(), data, "{p}");
        }
        // The restore_command hands the passphrase file on.
        let conf = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
        assert!(conf.contains("unlocked=true"), "{conf}");
        // A byte flipped on disk in the middle of the pack.
        let key = crate::format::keys::pack(&m.pack);
        let size = std::fs::metadata(f.repo.root().join(&key)).unwrap().len();
        f.flip(&key, (size / 2) as usize);
        let again = f.scratch("again");
        let e = restore_to(&f, &again).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    /// Pages of zeros are restored as holes, and the file still reads back
    /// exactly.
    #[test]
    fn zero_pages_become_holes() {
        use std::os::unix::fs::MetadataExt;
        let f = Fixture::new();
        let mut z = vec![0u8; 64 * 8192];
        z.extend_from_slice(&content(3, 1, 0));
        let m = f.backup(1, &[("z", z.clone())]);
        let dir = f.scratch("out");
        restore_to(&f, &dir).unwrap();
        let got = dir.join("z");
        assert_eq!(std::fs::read(&got).unwrap(), z);
        let meta = std::fs::metadata(&got).unwrap();
        assert!(
            meta.blocks() * 512 < meta.len() / 2,
            "{} bytes allocated for {}",
            meta.blocks() * 512,
            meta.len()
        );
        let _ = m;
    }

    /// A file with bytes but no block map must never become a file of zeros.
    #[test]
    fn a_file_without_its_block_map_is_refused_before_writing() {
        let f = Fixture::new();
        f.backup(1, &[("a", content(1, 2, 0))]);
        f.sql("UPDATE file_version SET blockmap = NULL WHERE path = 'a'");
        let dir = f.scratch("out");
        let e = restore_to(&f, &dir).unwrap_err();
        assert!(matches!(e.without_hint(), Error::Corrupt { .. }), "{e}");
        assert!(
            matches!(
                e,
                Error::Hinted {
                    hint: Hint::NothingWrittenVerify,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("no block map"), "{e}");
        assert!(e.to_string().contains("a (backup"), "{e}");
        assert!(!dir.exists(), "nothing may be written");
    }

    /// A block map whose bytes verify but do not decode is refused too.
    #[test]
    fn a_block_map_that_does_not_decode_is_refused_before_writing() {
        let f = Fixture::new();
        let m = f.backup(1, &[("a", content(1, 2, 0)), ("b", content(2, 1, 0))]);
        // Point a's row at b's data chunk: it is indexed and verifies, but
        // is not a block map.
        let cat = f.repo.catalog().unwrap();
        let b_map = cat
            .versions()
            .files(&m.id)
            .unwrap()
            .into_iter()
            .find(|r| r.path == "b")
            .and_then(|r| r.blockmap)
            .unwrap();
        let data_chunk = *cat
            .packs()
            .blockmap_chunk_set(&b_map)
            .unwrap()
            .iter()
            .next()
            .unwrap();
        f.sql(&format!(
            "UPDATE file_version SET blockmap = x'{}' WHERE path = 'a'",
            data_chunk.to_hex()
        ));
        let dir = f.scratch("out");
        let e = restore_to(&f, &dir).unwrap_err();
        assert!(matches!(e.without_hint(), Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("block map"), "{e}");
        assert!(!dir.exists(), "nothing may be written");
    }

    #[test]
    fn a_malformed_chunk_id_in_the_catalog_is_an_error_naming_the_row() {
        let f = Fixture::new();
        let m = f.backup(1, &[("a", content(1, 2, 0))]);
        f.sql("UPDATE file_version SET blockmap = x'0102' WHERE path = 'a'");
        let e = plan(&f.repo, "main", &test_options(f.scratch("out"))).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("file row of backup {}", m.id)),
            "{e}"
        );
    }
}
