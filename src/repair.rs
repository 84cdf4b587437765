//! `repair --rebuild-catalog`: rebuild `catalog.db` from the repository's
//! objects alone.
//!
//! Sources, in order: the pack trailers (the chunk index; each trailer is
//! verified against the pack's name), the manifest copies
//! (`manifests/<cluster>/<backup>.json.zst`: clusters, backups, files, page
//! errors), and the block maps in packs (decoded to derive
//! `blockmap_chunk`). Clusters that only archived WAL are bound from a
//! segment's long page header.
//!
//! Never deletes data: the old catalog (and its `-wal`/`-shm`) is renamed
//! aside first, and the new one is built under the repository lock. A pack
//! whose trailer does not verify, or a manifest that does not decode, is
//! skipped and reported, not removed. Only complete backups have manifest
//! copies, so `running` rows of interrupted backups are not carried over.

use std::path::PathBuf;
use std::time::Duration;

use crate::archive;
use crate::backup::Manifest;
use crate::catalog::Catalog;
use crate::error::{Error, IoContext, Result};
use crate::lock::RepoLock;
use crate::pg::wal::LongPageHeader;
use crate::pg::WalFileName;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::store::blockmap::BlockMap;
use crate::store::pack::{read_chunk, read_trailer, SealedPack};
use crate::store::ChunkId;

#[derive(Clone, Debug, Default)]
pub struct RepairReport {
    /// Where the previous catalog was moved, if there was one.
    pub old_catalog: Option<PathBuf>,
    pub packs: u64,
    pub chunks: u64,
    pub clusters: u64,
    pub backups: Vec<String>,
    /// What could not be used (bad packs, undecodable manifests, ...).
    pub skipped: Vec<String>,
}

/// Rebuild the catalog. `lock_wait` as for backups.
pub fn rebuild_catalog(
    repo: &Repository,
    lock_wait: Duration,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let _lock = RepoLock::acquire(repo, "repair", lock_wait)?;
    let mut report = RepairReport::default();
    let path = repo.catalog_path();
    if path.exists() {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut aside = path.with_file_name(format!("catalog.db.old-{stamp}"));
        let mut n = 1;
        while aside.exists() {
            n += 1;
            aside = path.with_file_name(format!("catalog.db.old-{stamp}-{n}"));
        }
        // The -wal file holds committed transactions: it moves with the
        // database, under the matching name, so the old catalog stays whole.
        for suffix in ["-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", path.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                std::fs::rename(&from, &to).at(&from)?;
            }
        }
        std::fs::rename(&path, &aside).at(&path)?;
        report.old_catalog = Some(aside);
    } else {
        for suffix in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            if p.exists() {
                let to = PathBuf::from(format!("{}.orphan{suffix}", path.display()));
                std::fs::rename(&p, &to).at(&p)?;
            }
        }
    }
    let mut cat = repo.catalog_create()?;

    // 1. The chunk index, from the trailers.
    let packs: Vec<(String, u64)> = repo.backend().list("packs/")?;
    progress.begin("repair", packs.len() as u64);
    for (key, size) in &packs {
        progress.advance(1);
        let Some(id) = key.rsplit('/').next().and_then(|n| n.strip_suffix(".pack")) else {
            continue;
        };
        match read_trailer(repo.backend(), id) {
            Ok(entries) => {
                report.chunks += entries.len() as u64;
                report.packs += 1;
                cat.add_pack(
                    &SealedPack {
                        id: id.to_string(),
                        size: *size,
                        entries,
                    },
                    None,
                )?;
            }
            Err(e @ (Error::Corrupt { .. } | Error::NotFound(_))) => {
                report.skipped.push(format!("{key}: {e}"))
            }
            Err(e) => return Err(e),
        }
    }
    progress.end();

    // 2. Clusters and backups, from the manifest copies.
    let mut manifests: Vec<String> = repo
        .backend()
        .list("manifests/")?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.ends_with(".json.zst"))
        .collect();
    // Backup ids sort by start time within a cluster.
    manifests.sort();
    for key in manifests {
        match load_manifest(repo, &key) {
            Ok(m) => match insert_backup(repo, &mut cat, &m) {
                Ok(()) => report.backups.push(m.backup.id.clone()),
                Err(e) => report.skipped.push(format!("{key}: {e}")),
            },
            Err(e) => report.skipped.push(format!("{key}: {e}")),
        }
    }

    // 3. Clusters known only from their archived WAL.
    for (key, _) in repo.backend().list("wal/")? {
        let mut parts = key.split('/');
        let (Some(_), Some(cluster)) = (parts.next(), parts.next()) else {
            continue;
        };
        if cat.cluster(cluster)?.is_some() {
            continue;
        }
        let Some(name) = key.rsplit('/').next().and_then(|n| n.strip_suffix(".zst")) else {
            continue;
        };
        if !WalFileName::parse(name).is_ok_and(|w| w.is_segment_data()) {
            continue;
        }
        match archive::fetch(repo, cluster, name) {
            Ok(Some(data)) => {
                let h = LongPageHeader::parse(&data, name)?;
                if let Some(v) = h.major_version() {
                    cat.bind_cluster(cluster, h.system_id, v)?;
                }
            }
            Ok(None) => {}
            Err(e) => report.skipped.push(format!("{key}: {e}")),
        }
    }
    report.clusters = cat.clusters()?.len() as u64;
    Ok(report)
}

fn load_manifest(repo: &Repository, key: &str) -> Result<Manifest> {
    let z = repo
        .backend()
        .get(key)?
        .ok_or_else(|| Error::NotFound(format!("{key} vanished")))?;
    let copy_bytes = z.len() as u64;
    let json = zstd::stream::decode_all(z.as_slice())
        .map_err(|e| Error::corrupt(key, format!("does not decompress: {e}")))?;
    let m: Manifest = serde_json::from_slice(&json)
        .map_err(|e| Error::corrupt(key, format!("is not a manifest: {e}")))?;
    let mut m = m;
    // The copy holds the bytes of the packs the backup wrote; what it added
    // to the repository also counts the copy itself (see backup::finish).
    m.backup.stored_bytes += copy_bytes;
    if m.format != 1 {
        return Err(Error::NewerFormat {
            path: PathBuf::from(key),
            found: m.format,
            supported: 1,
        });
    }
    Ok(m)
}

/// Insert one backup; its block maps are decoded from the (already
/// indexed) packs to derive the block-map relation.
fn insert_backup(repo: &Repository, cat: &mut Catalog, m: &Manifest) -> Result<()> {
    let cl = cat.bind_cluster(&m.cluster.name, m.cluster.system_id, m.cluster.pg_version)?;
    let mut seen = std::collections::HashSet::new();
    let mut relation: Vec<(ChunkId, Vec<ChunkId>)> = Vec::new();
    for f in &m.files {
        let Some(bm) = f.blockmap else {
            continue;
        };
        if !seen.insert(bm) {
            continue;
        }
        let what = format!("{} (backup {})", f.path, m.backup.id);
        let loc = cat.chunk(&bm)?.ok_or_else(|| {
            Error::NotFound(format!(
                "{what}: its block map {bm} is in no pack with a readable trailer"
            ))
        })?;
        let raw = read_chunk(
            repo.backend(),
            &loc.pack_id,
            loc.offset,
            loc.stored_len,
            &bm,
            &what,
        )?;
        let map = BlockMap::decode(&raw, &what)?;
        relation.push((bm, map.chunks));
    }
    cat.rebuild_backup(cl.id, &m.backup, &m.files, &relation, &m.page_errors)
}
