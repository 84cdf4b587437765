//! Pass 2: manifests. Every file row of every complete backup in scope: a
//! file with bytes has a block map; each distinct block map is indexed,
//! readable, decodes, describes its file's size, and its chunks are indexed
//! and in the catalog's block-map relation (which garbage collection
//! relies on). Each backup has its manifest copy.

use std::collections::{BTreeSet, HashMap, HashSet};

use rayon::prelude::*;

use super::{one, problem, scope_ids, ProblemKind, Scope, Users, VerifyReport};
use crate::catalog::{BackupRow, Catalog, ChunkLoc, ClusterRow, ScopedMap};
use crate::error::{Error, Result};
use crate::format::keys;
use crate::format::{BlockMap, ChunkId, Manifest, ManifestSummary};
use crate::repo::Repository;

/// Block maps (and data chunks) looked up per catalog query, and read and
/// decoded in parallel, at once.
const WINDOW: usize = 1024;

/// Damaged chunks reported one by one, at most (more are summed up).
const MAX_REPORTED: usize = 10_000;

/// Run the pass. The block maps in scope are walked in id order a window
/// at a time from a temporary table (`catalog::scope`), never held all at
/// once.
pub(super) fn check(
    repo: &Repository,
    cat: &Catalog,
    scope: &Scope,
    report: &mut VerifyReport,
) -> Result<()> {
    let t = std::time::Instant::now();
    check_rows(repo, cat, scope, report)?;
    tracing::debug!(
        "verify: manifest rows and copies checked in {:?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    cat.set_scope(&scope_ids(scope))?;
    let users = &Users::new(cat, scope, true);
    tracing::debug!("verify: block maps in scope found in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let mut after: Option<ChunkId> = None;
    loop {
        let window = cat.scoped_maps_after(after.as_ref(), WINDOW)?;
        let (Some(first), Some(last)) = (window.first(), window.last()) else {
            break;
        };
        let (lo, hi) = (first.id, last.id);
        after = Some(hi);
        let locs: HashMap<ChunkId, ChunkLoc> = cat.chunks_between(&lo, &hi)?.into_iter().collect();
        let mut relation: HashMap<ChunkId, HashSet<ChunkId>> = HashMap::new();
        for (bm, c) in cat.relation_between(&lo, &hi)? {
            relation.entry(bm).or_default().insert(c);
        }
        // Reading, verifying and decoding is the work: in parallel.
        let read: Vec<Option<Result<Read>>> = window
            .par_iter()
            .map(|m| locs.get(&m.id).map(|loc| read_blockmap(repo, &m.id, loc)))
            .collect();
        for (m, r) in window.iter().zip(read) {
            let bm = m.id;
            if m.min_size != m.max_size {
                report.problems.push(problem(
                    ProblemKind::BlockMapInvalid,
                    format!("block map {bm}"),
                    format!(
                        "used for files of {} and of {} bytes",
                        m.min_size, m.max_size
                    ),
                    users.of_maps(&[bm]),
                ));
            }
            let Some(r) = r else {
                report.problems.push(problem(
                    ProblemKind::ChunkNotIndexed,
                    format!("block map {bm}"),
                    "the block map is not in the chunk index",
                    users.of_maps(&[bm]),
                ));
                continue;
            };
            let empty = HashSet::new();
            let rel = relation.get(&bm).unwrap_or(&empty);
            judge_blockmap(m, r?, rel, users, report)?;
        }
    }
    tracing::debug!("verify: block maps read and checked in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let missing = cat.scoped_unindexed(MAX_REPORTED + 1)?;
    tracing::debug!(
        "verify: chunks in scope checked in the index in {:?}",
        t.elapsed()
    );
    // The relation names the block maps that use each: no pass over it
    // per chunk to find them.
    for (id, maps) in missing.iter().take(MAX_REPORTED) {
        report.problems.push(problem(
            ProblemKind::ChunkNotIndexed,
            format!("chunk {id}"),
            "a block map uses this chunk but it is not in the chunk index",
            users.of_maps(maps),
        ));
    }
    if missing.len() > MAX_REPORTED {
        report.notes.push(format!(
            "more than {MAX_REPORTED} chunks are not in the chunk index; only the first \
             {MAX_REPORTED} are listed"
        ));
    }
    Ok(())
}

/// Check each backup's manifest copy, and report files with bytes but no
/// block map (each file version once, however many backups share it).
fn check_rows(
    repo: &Repository,
    cat: &Catalog,
    scope: &Scope,
    report: &mut VerifyReport,
) -> Result<()> {
    for (c, backups) in scope {
        let copies: Vec<Copy> = backups.par_iter().map(|b| read_copy(repo, c, b)).collect();
        for (b, copy) in backups.iter().zip(copies) {
            judge_copy(cat, c, b, copy, report)?;
        }
        let ids: Vec<String> = backups.iter().map(|b| b.id.clone()).collect();
        cat.for_each_unrestorable_in(c.id, &ids, |b, f| {
            report.problems.push(problem(
                ProblemKind::BlockMapInvalid,
                format!("file {}", f.path),
                format!(
                    "the manifest gives {} bytes but no block map: the file cannot be \
                     restored",
                    f.size
                ),
                (one(b), one(&f.path)),
            ));
            Ok(())
        })?;
    }
    Ok(())
}

/// What reading one block map gave.
enum Read {
    /// Unreadable: reported with its pack in pass 3.
    Unreadable,
    /// The bytes match their id, yet do not decode: written wrong.
    Invalid(String),
    Map(BlockMap),
}

fn read_blockmap(repo: &Repository, bm: &ChunkId, loc: &ChunkLoc) -> Result<Read> {
    // Errors name the block map where they are reported (`judge_blockmap`);
    // formatting its id for every read is a measurable share of verify.
    match loc.read(repo.backend(), repo.ids(), bm, "a block map") {
        Ok(raw) => Ok(match BlockMap::decode(&raw, "the block map") {
            Ok(m) => Read::Map(m),
            Err(e) => Read::Invalid(e.to_string()),
        }),
        Err(Error::Corrupt { .. } | Error::MissingObject { .. } | Error::NewerFormat { .. }) => {
            Ok(Read::Unreadable)
        }
        Err(e) => Err(e),
    }
}

/// One block map read: describes its file, its chunks in the block-map
/// relation `rel` (a chunk missing from it is also looked up in the index,
/// which the relation-wide check cannot see).
fn judge_blockmap(
    m: &ScopedMap,
    r: Read,
    rel: &HashSet<ChunkId>,
    users: &Users,
    report: &mut VerifyReport,
) -> Result<()> {
    let bm = &m.id;
    let what = || format!("block map {bm}");
    let map = match r {
        Read::Unreadable => return Ok(()),
        Read::Invalid(e) => {
            report.problems.push(problem(
                ProblemKind::BlockMapInvalid,
                what(),
                e,
                users.of_maps(&[*bm]),
            ));
            return Ok(());
        }
        Read::Map(m) => m,
    };
    if map.file_size != m.min_size && map.file_size != m.max_size {
        report.problems.push(problem(
            ProblemKind::BlockMapInvalid,
            what(),
            format!(
                "describes {} bytes, the manifest says {}",
                map.file_size, m.max_size
            ),
            users.of_maps(&[*bm]),
        ));
    }
    let unrelated: Vec<&ChunkId> = map.chunks.iter().filter(|id| !rel.contains(id)).collect();
    if !unrelated.is_empty() {
        report.problems.push(problem(
            ProblemKind::BlockMapRelation,
            what(),
            format!(
                "{} of its chunks are missing from the catalog's blockmap_chunk table \
                 (garbage collection would not see them as used)",
                unrelated.len()
            ),
            users.of_maps(&[*bm]),
        ));
        for id in unrelated {
            if !users.cat.has_chunk(id)? {
                report.problems.push(problem(
                    ProblemKind::ChunkNotIndexed,
                    format!("chunk {id}"),
                    "a block map uses this chunk but it is not in the chunk index",
                    users.of_maps(&[*bm]),
                ));
            }
        }
    }
    Ok(())
}

/// The backup's manifest copy is there, decodes and is this backup's:
/// what reading it found (catalog lookups come after, in [`judge_copy`]).
enum Copy {
    Bad(String),
    Whole,
    /// A delta against this backup, whose own copy is (or is not) there.
    Delta(String, bool),
}

/// Read and decode one copy (in parallel with the others).
fn read_copy(repo: &Repository, c: &ClusterRow, b: &BackupRow) -> Copy {
    let key = keys::manifest(&c.name, &b.id);
    match repo.backend().get(&key) {
        Ok(None) => Copy::Bad("missing".to_string()),
        Err(e) => Copy::Bad(e.to_string()),
        Ok(Some(z)) => match Manifest::summary(&z, &key) {
            Ok(m) if m.backup_id != b.id => {
                Copy::Bad(format!("holds backup {} instead", m.backup_id))
            }
            Ok(ManifestSummary { prev: Some(p), .. }) => {
                let there = matches!(
                    repo.backend().size(&keys::manifest(&c.name, &p)),
                    Ok(Some(_))
                );
                Copy::Delta(p, there)
            }
            Ok(_) => Copy::Whole,
            Err(e) => Copy::Bad(format!("does not decode: {e}")),
        },
    }
}

fn judge_copy(
    cat: &Catalog,
    c: &ClusterRow,
    b: &BackupRow,
    copy: Copy,
    report: &mut VerifyReport,
) -> Result<()> {
    let key = keys::manifest(&c.name, &b.id);
    let detail = match copy {
        Copy::Bad(d) => Some(d),
        Copy::Whole => None,
        // A delta must be against the backup just before (repo::copies).
        // One against an expired backup whose copy is still there is an
        // expire that stopped half-way: it still chains, and the next
        // expire rewrites it.
        Copy::Delta(p, base_there) => {
            let pred = cat.predecessor(&b.id)?;
            if pred.as_deref() == Some(&*p) {
                None
            } else if base_there {
                report.notes.push(format!(
                    "{key} lists changes since expired backup {p}: the next expire \
                     rewrites it"
                ));
                None
            } else {
                Some(format!(
                    "lists changes since backup {p}, whose copy is gone, but the backup \
                     before it is {} (run expire to rewrite it)",
                    pred.as_deref().unwrap_or("none")
                ))
            }
        }
    };
    if let Some(d) = detail {
        report.problems.push(problem(
            ProblemKind::ManifestCopy,
            key,
            format!("{d} (the backup still restores, but a rebuilt catalog would lose it)"),
            (one(&b.id), BTreeSet::new()),
        ));
    }
    Ok(())
}
