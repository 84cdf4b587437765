//! `verify`: prove the repository can restore what it claims.
//!
//! Four passes, each reporting problems with the backups and files they
//! affect (never stopping at the first):
//! 1. the catalog: `PRAGMA integrity_check`, foreign keys, schema version;
//! 2. manifests: every file row of every complete backup points at an
//!    indexed block map whose pack exists, every block map decodes, matches
//!    its file's size, and every chunk it uses is indexed (and recorded in
//!    `blockmap_chunk`, which garbage collection relies on); each backup has
//!    its manifest copy (what `repair --rebuild-catalog` needs);
//! 3. packs: every pack is streamed once and every record checked against
//!    its chunk id; each chunk row of the index must match a good record;
//! 4. WAL: each backup's start..stop segments, gaps across the archive, and
//!    each archived object's hash.
//!
//! Verify only reads. Running backups are noted (an interrupted one leaves a
//! `running` row and maybe an unindexed pack; `expire` collects them), never
//! counted as problems: nothing trusts them.

mod packs;
mod wal;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::backup::Manifest;
use crate::catalog::{BackupRow, BackupStatus, Catalog, ChunkLoc, ClusterRow, SCHEMA_VERSION};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::store::blockmap::BlockMap;
use crate::store::pack::{pack_key, read_chunk};
use crate::store::ChunkId;

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

/// Who uses what: for attributing damage to backups and files.
#[derive(Default)]
struct Users {
    /// (backup id, path) pairs, indexed by the maps below.
    entries: Vec<(String, String)>,
    /// Block map id → entries whose file row points at it.
    blockmaps: HashMap<ChunkId, Vec<usize>>,
    /// Data chunk → block maps that use it.
    chunks: HashMap<ChunkId, Vec<ChunkId>>,
}

impl Users {
    fn affected(&self, id: &ChunkId) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut backups = BTreeSet::new();
        let mut files = BTreeSet::new();
        let mut add = |bm: &ChunkId| {
            for &i in self.blockmaps.get(bm).into_iter().flatten() {
                let (b, p) = &self.entries[i];
                backups.insert(b.clone());
                files.insert(p.clone());
            }
        };
        add(id);
        for bm in self.chunks.get(id).into_iter().flatten() {
            add(bm);
        }
        (backups, files)
    }
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

/// Verify the repository (or one backup). Damage is reported in the
/// returned report; an `Err` means verification itself could not run (no
/// repository, no catalog).
pub fn run(
    repo: &Repository,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let cat = repo.catalog()?;
    let mut report = VerifyReport::default();
    check_catalog(&cat, &mut report)?;

    // Scope: complete backups of the chosen clusters (or the one set).
    let mut scope: Vec<(ClusterRow, Vec<BackupRow>)> = Vec::new();
    let mut found_set = false;
    for c in cat.clusters()? {
        if opts.cluster.as_deref().is_some_and(|n| n != c.name) {
            continue;
        }
        let mut complete = Vec::new();
        for b in cat.backups(c.id)? {
            if b.status != BackupStatus::Complete {
                report.notes.push(format!(
                    "backup {} of cluster {} is {} (started by pid {} on {}); if that \
                     process is gone it was interrupted: nothing uses it, and its data is \
                     garbage for `expire`",
                    b.id,
                    c.name,
                    b.status.as_str(),
                    b.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                    b.host.as_deref().unwrap_or("?")
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
                "backup {id:?} is not a complete backup in this repository (see `pgstrata info`)"
            )));
        }
        scope.retain(|(_, b)| !b.is_empty());
    }

    let mut users = Users::default();
    let indexed = check_manifests(repo, &cat, &scope, &mut users, &mut report)?;

    // Packs: all of them, or those holding what the one backup uses.
    let on_disk: HashMap<String, u64> = repo
        .backend()
        .list("packs/")?
        .into_iter()
        .filter_map(|(k, n)| {
            let name = k.rsplit('/').next()?.strip_suffix(".pack")?.to_string();
            Some((name, n))
        })
        .collect();
    let known: Vec<String> = cat.packs()?.into_iter().map(|(id, _)| id).collect();
    let known_set: HashSet<&String> = known.iter().collect();
    let packs: Vec<String> = if opts.set.is_some() {
        let mut v: Vec<String> = indexed
            .values()
            .map(|l| l.pack_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        v.sort();
        v
    } else {
        for id in on_disk.keys() {
            if !known_set.contains(id) {
                report.notes.push(format!(
                    "{} is not in the catalog (left by an interrupted backup; `expire` \
                     collects it)",
                    pack_key(id)
                ));
            }
        }
        // Chunk rows may point at a pack whose row is gone (reported by the
        // foreign key check): stream those packs too, to name what they break.
        let mut all: BTreeSet<String> = known.iter().cloned().collect();
        all.extend(indexed.values().map(|l| l.pack_id.clone()));
        all.into_iter().collect()
    };
    let pack_bytes: u64 = packs.iter().filter_map(|p| on_disk.get(p)).sum();
    let wal_bytes = wal_bytes(repo, &scope, opts.set.is_none())?;
    progress.begin("verify", pack_bytes + wal_bytes);
    report.bytes = pack_bytes + wal_bytes;
    let r = (|| -> Result<()> {
        for p in &packs {
            check_pack(
                repo,
                &cat,
                p,
                on_disk.get(p).copied(),
                &users,
                progress,
                &mut report,
            )?;
        }
        for (c, backups) in &scope {
            report.wal_files += wal::check(
                repo,
                &c.name,
                backups,
                opts.set.is_none(),
                progress,
                &mut report.problems,
            )?;
        }
        Ok(())
    })();
    progress.end();
    r?;

    let broken: HashSet<&String> = report.problems.iter().flat_map(|p| &p.backups).collect();
    let mut verdicts = Vec::new();
    for (c, backups) in &scope {
        for b in backups {
            verdicts.push(BackupVerdict {
                cluster: c.name.clone(),
                id: b.id.clone(),
                ok: !broken.contains(&b.id)
                    && !report
                        .problems
                        .iter()
                        .any(|p| p.kind == ProblemKind::Catalog),
            });
        }
    }
    report.backups = verdicts;
    Ok(report)
}

fn check_catalog(cat: &Catalog, report: &mut VerifyReport) -> Result<()> {
    for msg in cat.integrity_check()? {
        report.problems.push(problem(
            ProblemKind::Catalog,
            "catalog.db",
            format!("integrity_check: {msg}"),
            Default::default(),
        ));
    }
    for msg in cat.foreign_key_check()? {
        report.problems.push(problem(
            ProblemKind::Catalog,
            "catalog.db",
            msg,
            Default::default(),
        ));
    }
    let v = cat.schema_version()?;
    if v != SCHEMA_VERSION {
        report.problems.push(problem(
            ProblemKind::Catalog,
            "catalog.db",
            format!("schema version {v}, expected {SCHEMA_VERSION}"),
            Default::default(),
        ));
    }
    Ok(())
}

/// Pass 2. Returns the location of every chunk in scope that is indexed.
fn check_manifests(
    repo: &Repository,
    cat: &Catalog,
    scope: &[(ClusterRow, Vec<BackupRow>)],
    users: &mut Users,
    report: &mut VerifyReport,
) -> Result<HashMap<ChunkId, ChunkLoc>> {
    let mut indexed: HashMap<ChunkId, ChunkLoc> = HashMap::new();
    let mut sizes: HashMap<ChunkId, u64> = HashMap::new();
    for (c, backups) in scope {
        for b in backups {
            check_manifest_copy(repo, c, b, report);
            for f in cat.files(&b.id)? {
                let Some(bm) = f.blockmap else {
                    continue;
                };
                let i = users.entries.len();
                users.entries.push((b.id.clone(), f.path.clone()));
                users.blockmaps.entry(bm).or_default().push(i);
                if let Some(prev) = sizes.insert(bm, f.size) {
                    if prev != f.size {
                        report.problems.push(problem(
                            ProblemKind::BlockMapInvalid,
                            format!("block map {bm}"),
                            format!("used for files of {prev} and of {} bytes", f.size),
                            (
                                [b.id.clone()].into_iter().collect(),
                                [f.path.clone()].into_iter().collect(),
                            ),
                        ));
                    }
                }
            }
        }
    }
    // Each distinct block map once: indexed, readable, decodes, its chunks
    // indexed and in the block-map relation.
    let mut maps: Vec<ChunkId> = users.blockmaps.keys().copied().collect();
    maps.sort();
    for bm in maps {
        let Some(loc) = cat.chunk(&bm)? else {
            report.problems.push(problem(
                ProblemKind::ChunkNotIndexed,
                format!("block map {bm}"),
                "the block map is not in the chunk index",
                users.affected(&bm),
            ));
            continue;
        };
        indexed.insert(bm, loc.clone());
        let what = format!("block map {bm}");
        let raw = match read_chunk(
            repo.backend(),
            &loc.pack_id,
            loc.offset,
            loc.stored_len,
            &bm,
            &what,
        ) {
            Ok(raw) => raw,
            // Unreadable chunks are reported with their pack in pass 3.
            Err(Error::Corrupt { .. }) | Err(Error::NotFound(_)) => continue,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue
            }
            Err(e) => return Err(e),
        };
        // The bytes match their id, yet do not decode: written wrong.
        let map = match BlockMap::decode(&raw, &what) {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(problem(
                    ProblemKind::BlockMapInvalid,
                    format!("block map {bm}"),
                    e.to_string(),
                    users.affected(&bm),
                ));
                continue;
            }
        };
        if Some(&map.file_size) != sizes.get(&bm) {
            report.problems.push(problem(
                ProblemKind::BlockMapInvalid,
                format!("block map {bm}"),
                format!(
                    "describes {} bytes, the manifest says {}",
                    map.file_size,
                    sizes.get(&bm).copied().unwrap_or(0)
                ),
                users.affected(&bm),
            ));
        }
        let relation = cat.blockmap_chunk_set(&bm)?;
        let mut unrelated = 0;
        for id in &map.chunks {
            users.chunks.entry(*id).or_default().push(bm);
            if !relation.contains(id) {
                unrelated += 1;
            }
        }
        if unrelated > 0 {
            report.problems.push(problem(
                ProblemKind::BlockMapRelation,
                format!("block map {bm}"),
                format!(
                    "{unrelated} of its chunks are missing from the catalog's blockmap_chunk \
                     table (garbage collection would not see them as used)"
                ),
                users.affected(&bm),
            ));
        }
    }
    let mut data: Vec<ChunkId> = users
        .chunks
        .keys()
        .filter(|c| !indexed.contains_key(c))
        .copied()
        .collect();
    data.sort();
    for id in data {
        match cat.chunk(&id)? {
            Some(loc) => {
                indexed.insert(id, loc);
            }
            None => report.problems.push(problem(
                ProblemKind::ChunkNotIndexed,
                format!("chunk {id}"),
                "a block map uses this chunk but it is not in the chunk index",
                users.affected(&id),
            )),
        }
    }
    report.chunks = indexed.len() as u64;
    Ok(indexed)
}

fn check_manifest_copy(
    repo: &Repository,
    c: &ClusterRow,
    b: &BackupRow,
    report: &mut VerifyReport,
) {
    let key = Repository::manifest_key(&c.name, &b.id);
    let detail = match repo.backend().get(&key) {
        Ok(None) => Some("missing".to_string()),
        Err(e) => Some(e.to_string()),
        Ok(Some(z)) => match zstd::stream::decode_all(z.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|j| serde_json::from_slice::<Manifest>(&j).map_err(|e| e.to_string()))
        {
            Ok(m) if m.backup.id == b.id => None,
            Ok(m) => Some(format!("holds backup {} instead", m.backup.id)),
            Err(e) => Some(format!("does not decode: {e}")),
        },
    };
    if let Some(d) = detail {
        report.problems.push(problem(
            ProblemKind::ManifestCopy,
            key,
            format!("{d} (the backup still restores, but a rebuilt catalog would lose it)"),
            ([b.id.clone()].into_iter().collect(), BTreeSet::new()),
        ));
    }
}

/// Pass 3 for one pack.
fn check_pack(
    repo: &Repository,
    cat: &Catalog,
    pack_id: &str,
    size: Option<u64>,
    users: &Users,
    progress: &dyn Progress,
    report: &mut VerifyReport,
) -> Result<()> {
    let key = pack_key(pack_id);
    let rows = cat.pack_chunks(pack_id)?;
    report.packs += 1;
    let Some(size) = size else {
        let mut backups = BTreeSet::new();
        let mut files = BTreeSet::new();
        for r in &rows {
            let (b, f) = users.affected(&r.id);
            backups.extend(b);
            files.extend(f);
        }
        report.problems.push(problem(
            ProblemKind::PackMissing,
            key,
            format!("the pack holding {} indexed chunks is missing", rows.len()),
            (backups, files),
        ));
        return Ok(());
    };
    let scan = packs::scan(repo.backend(), pack_id, size, progress)?;
    let mut backups = BTreeSet::new();
    let mut files = BTreeSet::new();
    let mut bad = 0usize;
    let mut first: Option<String> = None;
    for r in &rows {
        if scan.good.get(&r.offset) == Some(&(r.id, r.stored_len)) {
            continue;
        }
        bad += 1;
        let why = scan.bad.get(&r.offset).cloned().unwrap_or_else(|| {
            if r.offset + u64::from(r.stored_len) > size {
                format!("beyond the end of the pack ({size} bytes): truncated")
            } else {
                "no readable record at its offset".into()
            }
        });
        first.get_or_insert_with(|| format!("chunk {} at offset {}: {why}", r.id, r.offset));
        let (b, f) = users.affected(&r.id);
        backups.extend(b);
        files.extend(f);
    }
    if bad > 0 || scan.damage.is_some() {
        let mut detail = scan.damage.clone().unwrap_or_default();
        if bad > 0 {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(&format!(
                "{bad} of {} indexed chunks unreadable (first: {})",
                rows.len(),
                first.unwrap_or_default()
            ));
        }
        report.problems.push(problem(
            ProblemKind::PackCorrupt,
            key,
            detail,
            (backups, files),
        ));
    }
    Ok(())
}

fn wal_bytes(repo: &Repository, scope: &[(ClusterRow, Vec<BackupRow>)], all: bool) -> Result<u64> {
    let mut n = 0;
    for (c, backups) in scope {
        if all || !backups.is_empty() {
            n += repo
                .backend()
                .list(&format!("wal/{}/", c.name))?
                .iter()
                .map(|(_, s)| s)
                .sum::<u64>();
        }
    }
    Ok(n)
}
