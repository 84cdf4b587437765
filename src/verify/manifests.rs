//! Pass 2: manifests. Every file row of every complete backup in scope: a
//! file with bytes has a block map; each distinct block map is indexed,
//! readable, decodes, describes its file's size, and its chunks are indexed
//! and in the catalog's block-map relation (which garbage collection
//! relies on). Each backup has its manifest copy.

use std::collections::{BTreeSet, HashMap, HashSet};

use rayon::prelude::*;

use super::{one, problem, ProblemKind, Scope, Users, VerifyReport};
use crate::catalog::{BackupRow, Catalog, ChunkLoc, ClusterRow, FileKind};
use crate::error::{Error, Result};
use crate::format::keys;
use crate::format::{BlockMap, ChunkId, Manifest};
use crate::repo::Repository;

/// Block maps (and data chunks) looked up per catalog query, and read and
/// decoded in parallel, at once.
const WINDOW: usize = 1024;

/// Run the pass. Returns the location of every chunk in scope that is indexed.
pub(super) fn check(
    repo: &Repository,
    cat: &Catalog,
    scope: &Scope,
    users: &mut Users,
    report: &mut VerifyReport,
) -> Result<HashMap<ChunkId, ChunkLoc>> {
    collect_users(repo, cat, scope, users, report)?;
    let mut indexed: HashMap<ChunkId, ChunkLoc> = HashMap::new();
    let mut maps: Vec<ChunkId> = users.blockmaps.keys().copied().collect();
    maps.sort();
    for window in maps.chunks(WINDOW) {
        let (lo, hi) = (window[0], window[window.len() - 1]);
        let locs: HashMap<ChunkId, ChunkLoc> = cat.chunks_between(&lo, &hi)?.into_iter().collect();
        let mut relation: HashMap<ChunkId, HashSet<ChunkId>> = HashMap::new();
        for (bm, c) in cat.relation_between(&lo, &hi)? {
            relation.entry(bm).or_default().insert(c);
        }
        // Reading, verifying and decoding is the work: in parallel.
        let read: Vec<(ChunkId, Option<Result<Read>>)> = window
            .par_iter()
            .map(|bm| (*bm, locs.get(bm).map(|loc| read_blockmap(repo, bm, loc))))
            .collect();
        for (bm, r) in read {
            let Some(r) = r else {
                report.problems.push(problem(
                    ProblemKind::ChunkNotIndexed,
                    format!("block map {bm}"),
                    "the block map is not in the chunk index",
                    users.affected(&bm),
                ));
                continue;
            };
            if let Some(loc) = locs.get(&bm) {
                indexed.insert(bm, loc.clone());
            }
            let size = users.blockmaps.get(&bm).copied();
            let empty = HashSet::new();
            let rel = relation.get(&bm).unwrap_or(&empty);
            judge_blockmap(&bm, r?, size, rel, users, report);
        }
    }
    let mut data: Vec<ChunkId> = users
        .chunks
        .keys()
        .filter(|c| !indexed.contains_key(c))
        .copied()
        .collect();
    data.sort();
    for window in data.chunks(WINDOW) {
        let (lo, hi) = (window[0], window[window.len() - 1]);
        let locs: HashMap<ChunkId, ChunkLoc> = cat.chunks_between(&lo, &hi)?.into_iter().collect();
        for id in window {
            match locs.get(id) {
                Some(loc) => {
                    indexed.insert(*id, loc.clone());
                }
                None => report.problems.push(problem(
                    ProblemKind::ChunkNotIndexed,
                    format!("chunk {id}"),
                    "a block map uses this chunk but it is not in the chunk index",
                    users.affected(id),
                )),
            }
        }
    }
    report.chunks = indexed.len() as u64;
    Ok(indexed)
}

/// Record each block map in use with its file's size; report files with
/// bytes but no block map, and block maps shared by files of different
/// sizes.
fn collect_users(
    repo: &Repository,
    cat: &Catalog,
    scope: &Scope,
    users: &mut Users,
    report: &mut VerifyReport,
) -> Result<()> {
    for (c, backups) in scope {
        for b in backups {
            check_copy(repo, cat, c, b, report)?;
        }
        // Each file version once, however many backups share it.
        let ids: Vec<String> = backups.iter().map(|b| b.id.clone()).collect();
        cat.for_each_version_in(c.id, &ids, |b, f| {
            let Some(bm) = f.blockmap else {
                if f.kind == FileKind::File && f.size > 0 {
                    report.problems.push(problem(
                        ProblemKind::BlockMapInvalid,
                        format!("file {}", f.path),
                        format!(
                            "the manifest gives {} bytes but no block map: the file \
                             cannot be restored",
                            f.size
                        ),
                        (one(b), one(&f.path)),
                    ));
                }
                return Ok(());
            };
            if let Some(prev) = users.blockmaps.insert(bm, f.size) {
                if prev != f.size {
                    report.problems.push(problem(
                        ProblemKind::BlockMapInvalid,
                        format!("block map {bm}"),
                        format!("used for files of {prev} and of {} bytes", f.size),
                        (one(b), one(&f.path)),
                    ));
                }
            }
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
/// relation `rel`.
fn judge_blockmap(
    bm: &ChunkId,
    r: Read,
    size: Option<u64>,
    rel: &HashSet<ChunkId>,
    users: &mut Users,
    report: &mut VerifyReport,
) {
    let what = || format!("block map {bm}");
    let map = match r {
        Read::Unreadable => return,
        Read::Invalid(e) => {
            report.problems.push(problem(
                ProblemKind::BlockMapInvalid,
                what(),
                e,
                users.affected(bm),
            ));
            return;
        }
        Read::Map(m) => m,
    };
    if Some(map.file_size) != size {
        report.problems.push(problem(
            ProblemKind::BlockMapInvalid,
            what(),
            format!(
                "describes {} bytes, the manifest says {}",
                map.file_size,
                size.unwrap_or(0)
            ),
            users.affected(bm),
        ));
    }
    let mut unrelated = 0;
    for id in &map.chunks {
        users.chunks.entry(*id).or_default().push(*bm);
        if !rel.contains(id) {
            unrelated += 1;
        }
    }
    if unrelated > 0 {
        report.problems.push(problem(
            ProblemKind::BlockMapRelation,
            what(),
            format!(
                "{unrelated} of its chunks are missing from the catalog's blockmap_chunk \
                 table (garbage collection would not see them as used)"
            ),
            users.affected(bm),
        ));
    }
}

/// The backup's manifest copy is there, decodes and is this backup's.
fn check_copy(
    repo: &Repository,
    cat: &Catalog,
    c: &ClusterRow,
    b: &BackupRow,
    report: &mut VerifyReport,
) -> Result<()> {
    let key = keys::manifest(&c.name, &b.id);
    let detail = match repo.backend().get(&key) {
        Ok(None) => Some("missing".to_string()),
        Err(e) => Some(e.to_string()),
        Ok(Some(z)) => match Manifest::decode(&z, &key) {
            Ok(m) if m.backup.id != b.id => Some(format!("holds backup {} instead", m.backup.id)),
            // A delta must be against the backup just before (repo::copies).
            // One against an expired backup whose copy is still there is an
            // expire that stopped half-way: it still chains, and the next
            // expire rewrites it.
            Ok(Manifest { prev: Some(p), .. }) => {
                let pred = cat.predecessor(&b.id)?;
                let base_copy = repo.backend().size(&keys::manifest(&c.name, &p));
                match base_copy {
                    _ if pred.as_deref() == Some(&*p) => None,
                    Ok(Some(_)) => {
                        report.notes.push(format!(
                            "{key} lists changes since expired backup {p}: the next expire \
                             rewrites it"
                        ));
                        None
                    }
                    _ => Some(format!(
                        "lists changes since backup {p}, whose copy is gone, but the backup \
                         before it is {} (run expire to rewrite it)",
                        pred.as_deref().unwrap_or("none")
                    )),
                }
            }
            Ok(_) => None,
            Err(e) => Some(format!("does not decode: {e}")),
        },
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
