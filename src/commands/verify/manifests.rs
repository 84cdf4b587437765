//! Pass 2: manifests. Every file row of every complete backup in scope: a
//! file with bytes has a block map; each distinct block map is indexed,
//! readable, decodes, describes its file's size, and its chunks are indexed
//! and in the catalog's block-map relation (which garbage collection
//! relies on). Each backup has its manifest copy, and each manifest the
//! shape of a data directory (`layout.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rayon::prelude::*;

use super::{one, problem, scope_ids, ProblemKind, Scope, Users, VerifyReport};
use crate::catalog::{BackupRow, Catalog, ChunkLoc, ClusterRow, ScopedMap};
use crate::error::{Error, Result};
use crate::format::keys;
use crate::format::{BlockMap, ChunkId, Manifest, ManifestSummary, PackId};
use crate::repo::Repository;

/// Block maps looked up per catalog query, and read and decoded in
/// parallel, at once: enough that a window holds several of each pack's,
/// read through one opened pack.
const WINDOW: usize = 8192;

/// A window is cut short where its block maps' decoded bytes pass this
/// (maps of 1 GiB files are 2 MiB each): what is held is a map's chunk ids.
const WINDOW_BYTES: u64 = 32 << 20;

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
    cat.scope().set(&scope_ids(scope))?;
    let users = &Users::new(cat, scope, true);
    tracing::debug!("verify: block maps in scope found in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let mut after: Option<ChunkId> = None;
    // Chunks block maps use (by the relation) that the index lacks, each
    // with the block maps that use it; at most MAX_REPORTED.
    let mut missing: BTreeMap<ChunkId, Vec<ChunkId>> = BTreeMap::new();
    let mut more_missing = false;
    loop {
        let mut window = cat.scope().maps_after(after.as_ref(), WINDOW)?;
        let Some(lo) = window.first().map(|m| m.id) else {
            break;
        };
        let hi = window.last().map_or(lo, |m| m.id);
        let locs: HashMap<ChunkId, ChunkLoc> =
            cat.packs().chunks_between(&lo, &hi)?.into_iter().collect();
        window.truncate(within_bytes(&window, &locs));
        let hi = window.last().map_or(lo, |m| m.id);
        after = Some(hi);
        let mut relation: HashMap<ChunkId, HashSet<ChunkId>> = HashMap::new();
        for (bm, c) in cat.packs().relation_between(&lo, &hi)? {
            relation.entry(bm).or_default().insert(c);
        }
        // The index lookups of the chunks the window's maps use run here,
        // on this connection, while the pool reads the maps.
        let mut used: Vec<(ChunkId, ChunkId)> = window
            .iter()
            .flat_map(|m| {
                let rel = relation.get(&m.id).into_iter().flatten();
                rel.map(move |c| (*c, m.id))
            })
            .collect();
        used.sort_unstable();
        let (read, unindexed) = std::thread::scope(|s| {
            let reader = s.spawn(|| read_window(repo, &window, &locs));
            let unindexed = unindexed_of(cat, &used);
            (reader.join(), unindexed)
        });
        let mut read =
            read.map_err(|e| Error::internal(format!("reading block maps panicked: {e:?}")))?;
        for (c, bm) in unindexed? {
            if let Some(maps) = missing.get_mut(&c) {
                maps.push(bm);
            } else if missing.len() < MAX_REPORTED {
                missing.insert(c, vec![bm]);
            } else {
                more_missing = true;
            }
        }
        for (m, r) in window.iter().zip(read.iter_mut()) {
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
            let Some(r) = r.take() else {
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
    for (id, maps) in &missing {
        report.problems.push(problem(
            ProblemKind::ChunkNotIndexed,
            format!("chunk {id}"),
            "a block map uses this chunk but it is not in the chunk index",
            users.of_maps(maps),
        ));
    }
    if more_missing {
        report.notes.push(format!(
            "more than {MAX_REPORTED} chunks are not in the chunk index; only the first \
             {MAX_REPORTED} are listed"
        ));
    }
    Ok(())
}

/// The `(chunk, block map)` pairs of `used` (sorted by chunk) whose chunk
/// the index lacks. Sorted, the lookups walk the index in order.
fn unindexed_of(cat: &Catalog, used: &[(ChunkId, ChunkId)]) -> Result<Vec<(ChunkId, ChunkId)>> {
    let mut out = Vec::new();
    let mut last: Option<(ChunkId, bool)> = None;
    for &(c, bm) in used {
        let indexed = match last {
            Some((l, indexed)) if l == c => indexed,
            _ => cat.packs().has_chunk(&c)?,
        };
        last = Some((c, indexed));
        if !indexed {
            out.push((c, bm));
        }
    }
    Ok(out)
}

/// Check each backup's manifest copy, report files with bytes but no
/// block map (each file version once, however many backups share it), and
/// rows no data directory has (`layout.rs`).
pub(super) fn check_rows(
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
        cat.versions()
            .for_each_unrestorable_in(c.id, &ids, |b, f| {
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
        super::layout::check(cat, c, backups, report)?;
    }
    Ok(())
}

/// What reading one block map gave.
enum Read {
    /// Unreadable: reported with its pack in pass 3.
    Unreadable,
    /// The bytes match their id, yet do not decode: written wrong.
    Invalid(String),
    /// It decodes: the file size it describes and its chunks.
    Map {
        file_size: u64,
        chunks: Vec<ChunkId>,
    },
}

/// How many of `window`'s block maps to take so that their decoded bytes
/// stay within [`WINDOW_BYTES`] (at least one).
fn within_bytes(window: &[ScopedMap], locs: &HashMap<ChunkId, ChunkLoc>) -> usize {
    let mut bytes = 0u64;
    for (i, m) in window.iter().enumerate() {
        bytes += locs.get(&m.id).map_or(0, |l| u64::from(l.raw_len));
        if bytes > WINDOW_BYTES && i > 0 {
            return i;
        }
    }
    window.len()
}

/// Read and decode a window's block maps: one task per pack, each opening
/// its pack once. `None` for a map the chunk index lacks.
fn read_window(
    repo: &Repository,
    window: &[ScopedMap],
    locs: &HashMap<ChunkId, ChunkLoc>,
) -> Vec<Option<Result<Read>>> {
    // Per pack: each map's place in the window, offset, stored length, id.
    type Wanted = Vec<(usize, u64, u32, ChunkId)>;
    let mut by_pack: HashMap<&PackId, Wanted> = HashMap::new();
    for (i, m) in window.iter().enumerate() {
        if let Some(loc) = locs.get(&m.id) {
            by_pack
                .entry(&loc.pack_id)
                .or_default()
                .push((i, loc.offset, loc.stored_len, m.id));
        }
    }
    let groups: Vec<(&PackId, Wanted)> = by_pack.into_iter().collect();
    let stored = repo.stored();
    let read: Vec<Vec<(usize, Result<Read>)>> = groups
        .into_par_iter()
        .map(|(pack, mut maps)| {
            maps.sort_unstable_by_key(|&(_, offset, _, _)| offset);
            let chunks: Vec<(u64, u32, ChunkId)> =
                maps.iter().map(|&(_, o, l, id)| (o, l, id)).collect();
            // Errors name the block map where they are reported
            // (`judge_blockmap`), not here: formatting every id is costly.
            stored
                .read_chunks(pack, &chunks, "a block map")
                .into_iter()
                .zip(&maps)
                .map(|(raw, &(i, ..))| (i, classify(raw)))
                .collect()
        })
        .collect();
    let mut out: Vec<Option<Result<Read>>> = window.iter().map(|_| None).collect();
    for (i, r) in read.into_iter().flatten() {
        out[i] = Some(r);
    }
    out
}

fn classify(raw: Result<Vec<u8>>) -> Result<Read> {
    match raw {
        Ok(raw) => Ok(match BlockMap::decode(&raw, "the block map") {
            Ok(m) => Read::Map {
                file_size: m.file_size,
                chunks: m.chunks,
            },
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
        Read::Map { file_size, chunks } => (file_size, chunks),
    };
    let (file_size, chunks) = map;
    if file_size != m.min_size && file_size != m.max_size {
        report.problems.push(problem(
            ProblemKind::BlockMapInvalid,
            what(),
            format!(
                "describes {} bytes, the manifest says {}",
                file_size, m.max_size
            ),
            users.of_maps(&[*bm]),
        ));
    }
    let unrelated: Vec<&ChunkId> = chunks.iter().filter(|id| !rel.contains(id)).collect();
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
            if !users.cat.packs().has_chunk(id)? {
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
    // Streamed from the store: a copy of a cluster of many files is never
    // in memory whole.
    let mut opened = false;
    let summary = Manifest::summary(
        || {
            let r = repo.stored().open(&key);
            opened |= r.is_ok();
            r
        },
        &key,
    );
    match summary {
        Err(Error::MissingObject { .. }) if !opened => Copy::Bad("missing".to_string()),
        Err(e) if !opened => Copy::Bad(e.to_string()),
        Err(e) => Copy::Bad(format!("does not decode: {e}")),
        Ok(m) if m.backup_id != b.id => Copy::Bad(format!("holds backup {} instead", m.backup_id)),
        Ok(ManifestSummary { prev: Some(p), .. }) => {
            let there = matches!(
                repo.stored().size(&keys::manifest(&c.name, &p)),
                Ok(Some(_))
            );
            Copy::Delta(p, there)
        }
        Ok(_) => Copy::Whole,
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
            let pred = cat.versions().predecessor(&b.id)?;
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
