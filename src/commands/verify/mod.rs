//! `verify`: prove the repository can restore what it claims.
//!
//! Four passes, each reporting problems with the backups and files they
//! affect (never stopping at the first):
//! 1. the catalog: `PRAGMA integrity_check`, foreign keys, schema version;
//! 2. manifests: every file row of every complete backup points at an
//!    indexed block map whose pack exists, every block map decodes, matches
//!    its file's size, and every chunk it uses is indexed (and recorded in
//!    `blockmap_chunk`, which garbage collection relies on); each backup has
//!    its manifest copy (what rebuilding the catalog needs); each
//!    manifest has the shape of a data directory that restores inside its
//!    target (`layout.rs`);
//! 3. packs: every pack is streamed once and every record checked against
//!    its chunk id; each chunk row of the index must match a good record;
//! 4. WAL: each backup's start..stop segments, gaps across the archive, and
//!    each archived object's hash.
//!
//! Verify only reads. Running backups are noted (an interrupted one leaves a
//! `running` row and maybe an unindexed pack; `expire` collects them), never
//! counted as problems: nothing trusts them. It takes no lock: when an
//! `expire` beside it removes what it was reading, it checks again
//! (`concurrent.rs`).

mod concurrent;
mod layout;
mod manifests;
mod packs;
mod wal;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::catalog::{BackupRow, BackupStatus, Catalog, ClusterRow, SCHEMA_VERSION};
use crate::error::{Error, Hint, Result};
use crate::format::keys::{self, ObjectKey};
use crate::format::{ChunkId, PackId};
use crate::progress::Progress;
use crate::repo::Repository;

/// What kind of damage a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// SQLite reports damage, a broken foreign key, or a schema mismatch.
    Catalog,
    /// A pack the index points into is not there.
    PackMissing,
    /// A pack is truncated, or a record in it does not match its chunk id.
    PackCorrupt,
    /// A chunk a manifest needs is not in the chunk index.
    ChunkNotIndexed,
    /// A block map does not decode, or does not describe its file.
    BlockMapInvalid,
    /// The catalog's block-map relation lacks chunks a block map uses.
    BlockMapRelation,
    /// A backup has no readable manifest copy.
    ManifestCopy,
    /// A manifest has rows no data directory has: a path that escapes, a
    /// repeated path, a row beneath a file or a symlink.
    ManifestInvalid,
    /// WAL between a backup's start and stop is not archived.
    WalMissing,
    /// A gap in the archive after some backups' stop.
    WalGap,
    /// An archived WAL object does not match its hash.
    WalCorrupt,
}

impl ProblemKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProblemKind::Catalog => "catalog",
            ProblemKind::PackMissing => "pack missing",
            ProblemKind::PackCorrupt => "pack corrupt",
            ProblemKind::ChunkNotIndexed => "chunk not indexed",
            ProblemKind::BlockMapInvalid => "block map invalid",
            ProblemKind::BlockMapRelation => "block map relation",
            ProblemKind::ManifestCopy => "manifest copy",
            ProblemKind::ManifestInvalid => "manifest invalid",
            ProblemKind::WalMissing => "WAL missing",
            ProblemKind::WalGap => "WAL gap",
            ProblemKind::WalCorrupt => "WAL corrupt",
        }
    }
}

/// One thing wrong, and what it breaks.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The object concerned: a pack key, a WAL key, `catalog.db`, ...
    pub object: String,
    pub detail: String,
    /// Backups that cannot be restored (or recovered past a point) because of it.
    pub backups: Vec<String>,
    /// Files (paths in the data directory) of those backups that are affected.
    pub files: Vec<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.kind.as_str(),
            self.object,
            self.detail
        )?;
        if !self.backups.is_empty() {
            write!(f, "; affects backup {}", self.backups.join(", "))?;
        }
        if !self.files.is_empty() {
            const SHOW: usize = 8;
            let shown: Vec<&str> = self.files.iter().take(SHOW).map(String::as_str).collect();
            write!(f, "; files {}", shown.join(", "))?;
            if self.files.len() > SHOW {
                write!(f, " and {} more", self.files.len() - SHOW)?;
            }
        }
        Ok(())
    }
}

/// The verdict on one backup.
#[derive(Clone, Debug, Serialize)]
pub struct BackupVerdict {
    pub cluster: String,
    pub id: String,
    pub ok: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub problems: Vec<Problem>,
    /// Complete backups checked, each with whether any problem touches it.
    pub backups: Vec<BackupVerdict>,
    /// Things worth knowing that are not damage (interrupted backups, packs
    /// no index row points to).
    pub notes: Vec<String>,
    pub packs: u64,
    /// Chunk index rows checked against the packs streamed.
    pub chunks: u64,
    pub wal_files: u64,
    pub bytes: u64,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Check one backup only (its chunks, packs and WAL).
    pub set: Option<String>,
    /// Limit to one cluster (default: all clusters in the repository).
    pub cluster: Option<String>,
}

/// Who uses what: for attributing damage to backups and files. Worked out
/// in the catalog when damage is found, so memory does not grow with files,
/// chunks or backups.
struct Users<'a> {
    cat: &'a Catalog,
    /// The backups in scope.
    backups: HashSet<String>,
    /// Whether `cat` has the scope table (`Scope::set`) yet: made
    /// on this connection when first needed.
    scoped: std::cell::Cell<bool>,
}

impl<'a> Users<'a> {
    /// `scoped`: `set_scope` has been run on `cat` for this scope.
    fn new(cat: &'a Catalog, scope: &Scope, scoped: bool) -> Self {
        Users {
            cat,
            backups: scope_ids(scope).into_iter().collect(),
            scoped: std::cell::Cell::new(scoped),
        }
    }

    fn ensure_scope(&self) -> Result<()> {
        if !self.scoped.get() {
            let ids: Vec<String> = self.backups.iter().cloned().collect();
            self.cat.scope().set(&ids)?;
            self.scoped.set(true);
        }
        Ok(())
    }

    /// The backups in scope, and their files, that use the block maps `maps`.
    fn of_maps(&self, maps: &[ChunkId]) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut backups = BTreeSet::new();
        let mut files = BTreeSet::new();
        for bm in maps {
            match self.cat.versions().files_with_blockmap(bm) {
                Ok(rows) => {
                    for (b, p) in rows.into_iter().filter(|(b, _)| self.backups.contains(b)) {
                        backups.insert(b);
                        files.insert(p);
                    }
                }
                Err(e) => tracing::warn!("cannot tell which files use block map {bm}: {e}"),
            }
        }
        (backups, files)
    }

    /// The same for chunks of any kind: block maps themselves, and data
    /// chunks through the block maps that use them.
    fn of_chunks(&self, ids: &[ChunkId]) -> (BTreeSet<String>, BTreeSet<String>) {
        if ids.is_empty() {
            return (BTreeSet::new(), BTreeSet::new());
        }
        let mut maps = ids.to_vec();
        match self
            .ensure_scope()
            .and_then(|()| self.cat.scope().blockmaps_using(ids))
        {
            Ok(m) => maps.extend(m),
            Err(e) => tracing::warn!("cannot tell which block maps use damaged chunks: {e}"),
        }
        maps.sort_unstable();
        maps.dedup();
        self.of_maps(&maps)
    }
}

fn one(s: &str) -> BTreeSet<String> {
    [s.to_string()].into_iter().collect()
}

fn problem(
    kind: ProblemKind,
    object: impl Into<String>,
    detail: impl Into<String>,
    affected: (BTreeSet<String>, BTreeSet<String>),
) -> Problem {
    Problem {
        kind,
        object: object.into(),
        detail: detail.into(),
        backups: affected.0.into_iter().collect(),
        files: affected.1.into_iter().collect(),
    }
}

/// The complete backups in scope, per cluster.
type Scope = Vec<(ClusterRow, Vec<BackupRow>)>;

/// Verify the repository (or one backup). Damage is reported in the
/// returned report; an `Err` means verification itself could not run (no
/// repository, no catalog).
pub fn run(
    repo: &Repository,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    concurrent::run(repo, || run_once(repo, opts, progress))
}

fn run_once(
    repo: &Repository,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let (cat, path) = repo.catalog_with_path()?;
    let mut report = VerifyReport::default();
    let scope = scope(&cat, opts, &mut report)?;
    // Three passes at once, each on a connection of its own: SQLite's
    // integrity check and the manifest pass are mostly one core each, the
    // pack and WAL passes use the rest.
    std::thread::scope(|s| {
        let integrity = s.spawn(|| -> Result<(Vec<String>, Vec<String>)> {
            let t = std::time::Instant::now();
            let reader = Catalog::open_reader(&path)?;
            let found = (reader.integrity_check()?, reader.foreign_key_check()?);
            tracing::debug!("verify: catalog checked in {:?}", t.elapsed());
            Ok(found)
        });
        let copies = s.spawn(|| -> Result<VerifyReport> {
            let t = std::time::Instant::now();
            let cat = Catalog::open_reader(&path)?;
            let mut out = VerifyReport::default();
            manifests::check_rows(repo, &cat, &scope, &mut out)?;
            tracing::debug!(
                "verify: manifest rows and copies checked in {:?}",
                t.elapsed()
            );
            Ok(out)
        });
        let manifests = s.spawn(|| -> Result<VerifyReport> {
            let t = std::time::Instant::now();
            let cat = Catalog::open(&path, false)?;
            let mut out = VerifyReport::default();
            manifests::check(repo, &cat, &scope, &mut out)?;
            tracing::debug!("verify: block maps checked in {:?}", t.elapsed());
            Ok(out)
        });
        let mut data = VerifyReport::default();
        let r = data_passes(repo, &cat, &path, opts, &scope, progress, &mut data);
        let joined = |e| Error::internal(format!("a verify pass panicked: {e:?}"));
        let (damage, keys) = integrity.join().map_err(joined)??;
        let mut rows = copies.join().map_err(joined)??;
        let mut listed = manifests.join().map_err(joined)??;
        r?;
        report.problems = catalog_problems(&cat, damage, keys)?;
        for part in [&mut rows, &mut listed, &mut data] {
            report.problems.append(&mut part.problems);
            report.notes.append(&mut part.notes);
        }
        report.packs = data.packs;
        report.chunks = data.chunks;
        report.wal_files = data.wal_files;
        report.bytes = data.bytes;
        report.backups = verdicts(&scope, &report);
        Ok(report)
    })
}

fn scope_ids(scope: &Scope) -> Vec<String> {
    scope
        .iter()
        .flat_map(|(_, bs)| bs.iter().map(|b| b.id.clone()))
        .collect()
}

/// The pack and WAL passes.
fn data_passes(
    repo: &Repository,
    cat: &Catalog,
    catalog: &Path,
    opts: &VerifyOptions,
    scope: &Scope,
    progress: &dyn Progress,
    report: &mut VerifyReport,
) -> Result<()> {
    // One backup's packs are found through the scope table.
    let scoped = opts.set.is_some();
    if scoped {
        cat.scope().set(&scope_ids(scope))?;
    }
    let users = Users::new(cat, scope, scoped);
    let (packs, on_disk) = packs_to_scan(repo, cat, opts, report)?;
    let pack_bytes: u64 = packs.iter().filter_map(|p| on_disk.get(p)).sum();
    let wal_scope = wal_scope(cat, scope)?;
    let wal_bytes = wal_bytes(repo, &wal_scope, opts.set.is_none())?;
    progress.begin("verify", pack_bytes + wal_bytes);
    report.bytes = pack_bytes + wal_bytes;
    let r = (|| -> Result<()> {
        let t = std::time::Instant::now();
        packs::check_all(repo, catalog, &packs, &on_disk, &users, progress, report)?;
        tracing::debug!("verify: {} packs checked in {:?}", packs.len(), t.elapsed());
        let t = std::time::Instant::now();
        for (wal_id, backups) in &wal_scope {
            if opts.set.is_some() && backups.is_empty() {
                continue;
            }
            report.wal_files += wal::check(
                repo,
                wal_id,
                backups,
                opts.set.is_none(),
                progress,
                &mut report.problems,
            )?;
        }
        tracing::debug!("verify: WAL checked in {:?}", t.elapsed());
        Ok(())
    })();
    progress.end();
    r
}

/// Complete backups of the chosen clusters (or the one set); interrupted
/// backups are noted.
fn scope(cat: &Catalog, opts: &VerifyOptions, report: &mut VerifyReport) -> Result<Scope> {
    let mut scope: Scope = Vec::new();
    let mut found_set = false;
    for c in cat.clusters().list()? {
        if opts.cluster.as_deref().is_some_and(|n| n != c.name) {
            continue;
        }
        let mut complete = Vec::new();
        for b in cat.backups().of_cluster(c.id)? {
            if b.status != BackupStatus::Complete {
                let gone = crate::util::holder_gone(b.host.as_deref(), b.pid);
                report.notes.push(format!(
                    "backup {} of cluster {} is {} (started by pid {} on {}); {}: nothing \
                     uses it, `expire` removes it, and the next backup reuses what it stored",
                    b.id,
                    c.name,
                    if gone { "aborted" } else { "running" },
                    b.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    b.host.as_deref().unwrap_or("?"),
                    if gone {
                        "that process is gone"
                    } else {
                        "if that process is gone it was interrupted"
                    }
                ));
                continue;
            }
            if opts.set.as_deref().is_some_and(|s| s != b.id) {
                continue;
            }
            found_set = true;
            complete.push(b);
        }
        scope.push((c, complete));
    }
    if let Some(id) = &opts.set {
        if !found_set {
            return Err(Error::NotFound(format!(
                "backup {id:?} is not a complete backup in this repository"
            ))
            .hint(Hint::SeeInfo));
        }
        scope.retain(|(_, b)| !b.is_empty());
    }
    Ok(scope)
}

/// Packs to stream: all of them (and any a chunk row names), or those
/// holding what the one backup uses. Also the size of each pack present.
fn packs_to_scan(
    repo: &Repository,
    cat: &Catalog,
    opts: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<(Vec<PackId>, HashMap<PackId, u64>)> {
    // The catalog first, the store after: a pack is sealed before its row
    // commits, so every pack read here is listed below even while a backup
    // runs; one sealed in between is only a pack the catalog does not name.
    let known: Vec<PackId> = cat.packs().list()?.into_iter().map(|(id, _)| id).collect();
    let mut on_disk: HashMap<PackId, u64> = HashMap::new();
    for (key, size) in repo.stored().list(keys::PACKS)? {
        match ObjectKey::parse(&key) {
            Ok(ObjectKey::Pack(id)) => {
                on_disk.insert(id, size);
            }
            _ => report.notes.push(format!(
                "{key} is not a pack name (left by something else; `expire` removes it)"
            )),
        }
    }
    let mut packs: BTreeSet<PackId> = BTreeSet::new();
    if opts.set.is_some() {
        packs.extend(cat.scope().packs()?);
    } else {
        let known_set: HashSet<&PackId> = known.iter().collect();
        let mut unknown: Vec<&PackId> = on_disk
            .keys()
            .filter(|id| !known_set.contains(id))
            .collect();
        unknown.sort();
        for id in unknown {
            report.notes.push(format!(
                "{} is not in the catalog (written by a backup running now, left by an \
                 interrupted one, or replaced by an expire that leaves it to the next; \
                 `expire` collects it)",
                keys::pack(id)
            ));
        }
        // Chunk rows may point at a pack whose row is gone (reported by the
        // foreign key check): those packs are streamed too, to name what
        // they break.
        packs.extend(known);
    }
    Ok((packs.into_iter().collect(), on_disk))
}

/// Whether any problem touches each backup in scope.
fn verdicts(scope: &Scope, report: &VerifyReport) -> Vec<BackupVerdict> {
    let broken: HashSet<&String> = report.problems.iter().flat_map(|p| &p.backups).collect();
    let catalog_damaged = report
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Catalog);
    let mut out = Vec::new();
    for (c, backups) in scope {
        for b in backups {
            out.push(BackupVerdict {
                cluster: c.name.clone(),
                id: b.id.clone(),
                ok: !broken.contains(&b.id) && !catalog_damaged,
            });
        }
    }
    out
}

/// What the catalog checks found (SQLite's integrity check, foreign keys),
/// and the schema version, as problems.
fn catalog_problems(cat: &Catalog, damage: Vec<String>, keys: Vec<String>) -> Result<Vec<Problem>> {
    let as_problem = |detail: String| {
        problem(
            ProblemKind::Catalog,
            "catalog.db",
            detail,
            Default::default(),
        )
    };
    let mut out: Vec<Problem> = damage
        .into_iter()
        .map(|m| as_problem(format!("integrity_check: {m}")))
        .chain(keys.into_iter().map(as_problem))
        .collect();
    let v = cat.schema_version()?;
    if v != SCHEMA_VERSION {
        out.push(as_problem(format!(
            "schema version {v}, expected {SCHEMA_VERSION}"
        )));
    }
    Ok(out)
}

/// Where each cluster's WAL is archived, per entry of its history, with the
/// backups in scope taken under that entry.
fn wal_scope(cat: &Catalog, scope: &Scope) -> Result<Vec<(String, Vec<BackupRow>)>> {
    let mut out = Vec::new();
    for (c, backups) in scope {
        for h in cat.clusters().histories(c.id)? {
            let of_h: Vec<BackupRow> = backups
                .iter()
                .filter(|b| b.history == h.seq)
                .cloned()
                .collect();
            out.push((keys::wal_id(&c.name, h.seq), of_h));
        }
    }
    Ok(out)
}

fn wal_bytes(repo: &Repository, scope: &[(String, Vec<BackupRow>)], all: bool) -> Result<u64> {
    let mut n = 0;
    for (wal_id, backups) in scope {
        if all || !backups.is_empty() {
            n += repo
                .wal_objects(wal_id)?
                .iter()
                .map(|w| w.size)
                .sum::<u64>();
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::repo::testkit::{content, Fixture};

    pub(super) fn verify(f: &Fixture) -> VerifyReport {
        run(&f.repo, &VerifyOptions::default(), &Silent).unwrap()
    }

    pub(super) fn kinds(r: &VerifyReport) -> Vec<ProblemKind> {
        let mut k: Vec<ProblemKind> = r.problems.iter().map(|p| p.kind).collect();
        k.dedup();
        k
    }

    pub(super) fn two() -> (Fixture, String, String) {
        let f = Fixture::new();
        let a = f.backup(1, &[("a", content(1, 200, 0)), ("b", content(2, 2, 10))]);
        let b = f.backup(2, &[("c", content(3, 3, 0))]);
        (f, a.id, b.id)
    }

    #[test]
    fn an_encrypted_repository_verifies_and_names_every_flipped_object() {
        let f = Fixture::encrypted();
        let a = f.backup(1, &[("a", content(1, 200, 0)), ("b", content(2, 2, 10))]);
        f.backup(2, &[("c", content(3, 3, 0))]);
        let r = verify(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        let key = keys::pack(&a.pack);
        let size = std::fs::metadata(f.repo.root().join(&key)).unwrap().len();
        // The header, a segment in the middle, the last tag.
        for at in [9, size as usize / 2, size as usize - 1] {
            f.flip(&key, at);
            let r = verify(&f);
            assert_eq!(kinds(&r), vec![ProblemKind::PackCorrupt], "at {at}");
            assert_eq!(r.problems[0].backups, vec![a.id.clone()]);
            f.flip(&key, at);
        }
        f.flip(&keys::manifest("main", &a.id), 30);
        assert_eq!(kinds(&verify(&f)), vec![ProblemKind::ManifestCopy]);
        f.flip(&keys::manifest("main", &a.id), 30);
        let wal = f.repo.backend().list(keys::WAL).unwrap();
        f.flip(&wal[0].0, 40);
        assert_eq!(kinds(&verify(&f)), vec![ProblemKind::WalCorrupt]);
    }

    #[test]
    fn a_pack_the_catalog_does_not_name_is_a_note_not_a_problem() {
        // As a backup running beside `verify` leaves one: sealed, its rows
        // not yet committed.
        let (f, _, _) = two();
        let packs = f.repo.backend().list(keys::PACKS).unwrap();
        let data = f.repo.backend().get(&packs[0].0).unwrap().unwrap();
        let stray = keys::pack(&PackId([0xab; 32]));
        f.repo.backend().put(&stray, &data).unwrap();
        let r = verify(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains(&stray) && n.contains("not in the catalog")),
            "{:?}",
            r.notes
        );
    }

    #[test]
    fn a_good_repository_verifies() {
        let (f, a, b) = two();
        let r = verify(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
        assert_eq!(r.backups.len(), 2);
        assert!(r.backups.iter().all(|v| v.ok));
        assert_eq!(r.packs, 2);
        assert_eq!(r.wal_files, 2);
        let _ = (a, b);
    }

    #[test]
    fn a_flipped_pack_byte_names_backup_and_file() {
        let (f, a, _) = two();
        let pack = f.repo.catalog().unwrap().packs().list().unwrap();
        let a_pack = pack
            .iter()
            .map(|(p, _)| *p)
            .find(|p| f.repo.catalog().unwrap().packs().chunks(p).unwrap().len() > 2)
            .unwrap();
        f.flip(&keys::pack(&a_pack), 100);
        let r = verify(&f);
        assert_eq!(kinds(&r), vec![ProblemKind::PackCorrupt]);
        let p = &r.problems[0];
        assert_eq!(p.backups, vec![a.clone()]);
        assert_eq!(p.files, vec!["a".to_string()]);
        assert!(!r.backups.iter().find(|v| v.id == a).unwrap().ok);
    }

    #[test]
    fn a_missing_pack_and_manifest_copy() {
        let (f, a, b) = two();
        let made = f.repo.catalog().unwrap().packs().list().unwrap();
        for (p, _) in &made {
            if f.repo.catalog().unwrap().packs().chunks(p).unwrap().len() == 2 {
                f.repo.backend().delete(&keys::pack(p)).unwrap();
            }
        }
        f.repo
            .backend()
            .delete(&keys::manifest("main", &a))
            .unwrap();
        let r = verify(&f);
        let k = kinds(&r);
        assert!(k.contains(&ProblemKind::PackMissing), "{k:?}");
        assert!(k.contains(&ProblemKind::ManifestCopy), "{k:?}");
        let missing = r
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::PackMissing)
            .unwrap();
        assert_eq!(missing.backups, vec![b]);
    }

    /// A delta copy against an expired backup: a note while the expired
    /// backup's copy is there (an expire stopped half-way), a problem once
    /// it is gone; rewriting the copy clears both.
    #[test]
    fn a_delta_copy_whose_base_expired() {
        let (f, a, b) = two();
        let c = f.backup(3, &[("c", content(3, 3, 0)), ("d", content(4, 1, 0))]);
        f.repo
            .catalog()
            .unwrap()
            .backups()
            .expire(std::slice::from_ref(&b))
            .unwrap();
        let r = verify(&f);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(
            r.notes.iter().any(|n| n.contains(&c.id) && n.contains(&b)),
            "{:?}",
            r.notes
        );
        f.repo
            .backend()
            .delete(&keys::manifest("main", &b))
            .unwrap();
        let r = verify(&f);
        let p = r
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::ManifestCopy)
            .unwrap_or_else(|| panic!("{:?}", r.problems));
        assert!(
            p.detail.contains(&format!("the backup before it is {a}")),
            "{}",
            p.detail
        );
        assert_eq!(p.backups, vec![c.id.clone()]);
        let cat = f.repo.catalog().unwrap();
        assert_eq!(f.repo.rewrite_stale_copies(&cat).unwrap(), 1);
        drop(cat);
        assert!(verify(&f).problems.is_empty());
    }

    /// The zero-fill bug: a file with bytes and no block map is named.
    #[test]
    fn a_file_without_its_block_map_is_named() {
        let (f, a, _) = two();
        f.sql("UPDATE file_version SET blockmap = NULL WHERE path = 'b'");
        let r = verify(&f);
        let p = r
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::BlockMapInvalid)
            .unwrap_or_else(|| panic!("{:?}", r.problems));
        assert_eq!(p.files, vec!["b".to_string()]);
        assert_eq!(p.backups, vec![a]);
    }

    #[test]
    fn unindexed_chunks_relation_and_wal() {
        let (f, a, b) = two();
        f.sql("DELETE FROM blockmap_chunk");
        let r = verify(&f);
        assert!(kinds(&r).contains(&ProblemKind::BlockMapRelation));

        let (f, _, _) = two();
        f.sql("DELETE FROM chunk WHERE id IN (SELECT chunk FROM blockmap_chunk)");
        let r = verify(&f);
        assert!(
            kinds(&r).contains(&ProblemKind::ChunkNotIndexed),
            "{:?}",
            r.problems
        );

        let (f, _, _) = two();
        let names = f.repo.wal_names("main").unwrap();
        f.repo
            .backend()
            .delete(&keys::wal("main", &names[0]).unwrap())
            .unwrap();
        f.flip(&keys::wal("main", &names[1]).unwrap(), 50);
        let r = verify(&f);
        let k = kinds(&r);
        assert!(k.contains(&ProblemKind::WalMissing), "{k:?}");
        assert!(k.contains(&ProblemKind::WalCorrupt), "{k:?}");
        let _ = (a, b);
    }
}
