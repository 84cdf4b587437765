//! Rebuild `catalog.db` from the repository's
//! objects alone.
//!
//! Sources, in order: the pack trailers (the chunk index; each trailer is
//! verified against the pack's name), the manifest copies
//! (`manifests/<cluster>/<backup>.json.zst`: clusters, backups, files, page
//! errors; a copy that lists changes since the backup before it is applied
//! to that backup's rebuilt rows), and the block maps in packs (decoded to derive
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

use crate::catalog::{BackupRow, Catalog, ManifestDelta, PageErrorRow};
use crate::error::{Error, IoContext, Result};
use crate::format::keys::{self, ObjectKey};
use crate::format::{BlockMap, ChunkId, Manifest};
use crate::pg::wal::LongPageHeader;
use crate::pg::WalFileName;
use crate::progress::Progress;
use crate::repo::{Repository, SealedPack};

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
    let session = repo.begin_write("repair", lock_wait)?;
    let mut report = RepairReport {
        old_catalog: move_aside(&repo.catalog_path()?)?,
        ..Default::default()
    };
    let mut cat = repo.catalog_create()?;
    index_packs(repo, &mut cat, progress, &mut report)?;
    insert_backups(repo, &mut cat, &mut report)?;
    bind_wal_clusters(repo, &cat, &mut report)?;
    report.clusters = cat.clusters().list()?.len() as u64;
    drop(cat);
    session.commit()?;
    Ok(report)
}

/// Move the catalog (with its `-wal`, which holds committed transactions,
/// under the matching name) aside; returns where, if there was one.
fn move_aside(path: &std::path::Path) -> Result<Option<PathBuf>> {
    if !path.exists() {
        for suffix in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            if p.exists() {
                let to = PathBuf::from(format!("{}.orphan{suffix}", path.display()));
                std::fs::rename(&p, &to).at(&p)?;
            }
        }
        return Ok(None);
    }
    let stamp = crate::util::now_us() / 1_000_000;
    let mut aside = path.with_file_name(format!("catalog.db.old-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = path.with_file_name(format!("catalog.db.old-{stamp}-{n}"));
    }
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to).at(&from)?;
        }
    }
    std::fs::rename(path, &aside).at(path)?;
    Ok(Some(aside))
}

/// Step 1: the chunk index, from the pack trailers.
fn index_packs(
    repo: &Repository,
    cat: &mut Catalog,
    progress: &dyn Progress,
    report: &mut RepairReport,
) -> Result<()> {
    let stored = repo.stored();
    let packs: Vec<(String, u64)> = stored.list(keys::PACKS)?;
    progress.begin("repair", packs.len() as u64);
    for (key, size) in &packs {
        progress.advance(1);
        let id = match ObjectKey::parse(key) {
            Ok(ObjectKey::Pack(id)) => id,
            _ => {
                report.skipped.push(format!("{key}: not a pack name"));
                continue;
            }
        };
        match stored.pack_trailer(&id) {
            Ok(entries) => {
                report.chunks += entries.len() as u64;
                report.packs += 1;
                let sealed = SealedPack {
                    id,
                    size: *size,
                    entries,
                };
                cat.packs().add(&sealed, None)?;
            }
            Err(
                e @ (Error::Corrupt { .. }
                | Error::MissingObject { .. }
                | Error::NewerFormat { .. }),
            ) => report.skipped.push(format!("{key}: {e}")),
            Err(e) => return Err(e),
        }
    }
    progress.end();
    Ok(())
}

/// Step 2: clusters and backups, from the manifest copies (backup ids sort
/// by start time within a cluster).
fn insert_backups(repo: &Repository, cat: &mut Catalog, report: &mut RepairReport) -> Result<()> {
    let mut manifests: Vec<String> = Vec::new();
    for (key, _) in repo.stored().list(keys::MANIFESTS)? {
        match ObjectKey::parse(&key) {
            Ok(ObjectKey::Manifest { .. }) => manifests.push(key),
            _ => report.skipped.push(format!("{key}: not a manifest name")),
        }
    }
    manifests.sort();
    for key in manifests {
        match load_manifest(repo, &key).and_then(|m| insert_backup(repo, cat, m)) {
            Ok(id) => report.backups.push(id),
            Err(e) => report.skipped.push(format!("{key}: {e}")),
        }
    }
    Ok(())
}

/// Step 3: clusters known only from their archived WAL, bound from a
/// segment's long page header.
fn bind_wal_clusters(repo: &Repository, cat: &Catalog, report: &mut RepairReport) -> Result<()> {
    for (key, _) in repo.stored().list(keys::WAL)? {
        let (cluster, name) = match ObjectKey::parse(&key) {
            // WAL of a later history entry belongs to a cluster its
            // manifests bind.
            Ok(ObjectKey::Wal { cluster, .. }) if cluster.contains('~') => continue,
            Ok(ObjectKey::Wal { cluster, name }) => (cluster, name),
            _ => {
                report.skipped.push(format!("{key}: not a WAL object name"));
                continue;
            }
        };
        if cat.clusters().get(&cluster)?.is_some()
            || !WalFileName::parse(&name).is_ok_and(|w| w.is_segment_data())
        {
            continue;
        }
        match repo.wal_fetch(&cluster, &name) {
            Ok(Some(data)) => {
                let h = LongPageHeader::parse(&data, &name)?;
                if let Some(v) = h.major_version() {
                    cat.clusters().bind(&cluster, h.system_id, v)?;
                }
            }
            Ok(None) => {}
            Err(e) => report.skipped.push(format!("{key}: {e}")),
        }
    }
    Ok(())
}

fn load_manifest(repo: &Repository, key: &str) -> Result<Manifest> {
    let (mut m, size) = repo.stored().manifest_copy(key)?;
    // The copy holds the bytes of the packs the backup wrote; what it added
    // to the repository also counts the copy itself (see backup's finish).
    m.backup.stored_bytes += size;
    Ok(m)
}

/// Insert one backup; its block maps are decoded from the (already
/// indexed) packs to derive the block-map relation.
fn insert_backup(repo: &Repository, cat: &mut Catalog, m: Manifest) -> Result<String> {
    let id = &m.cluster;
    let cl = cat.clusters().restore_history(
        &id.name,
        id.history,
        id.system_id,
        id.pg_version,
        m.backup.start_time,
    )?;
    let stored = repo.stored();
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
        let loc = cat.packs().chunk(&bm)?.ok_or_else(|| {
            Error::NotFound(format!(
                "{what}: its block map {bm} is in no pack with a readable trailer"
            ))
        })?;
        let map = stored.read_chunk_with(&loc, &bm, &what, |raw| BlockMap::decode(raw, &what))?;
        relation.push((bm, map.chunks));
    }
    let backup = BackupRow::from_meta(m.backup, m.cluster.history);
    let delta = ManifestDelta {
        changed: m.files.into_iter().map(Into::into).collect(),
        removed: m.removed,
    };
    let errors: Vec<PageErrorRow> = m.page_errors.into_iter().map(Into::into).collect();
    cat.backups().rebuild(
        cl.id,
        &backup,
        m.prev.as_deref(),
        &delta,
        &relation,
        &errors,
    )?;
    Ok(backup.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::FileRow;
    use crate::progress::Silent;
    use crate::repo::testkit::{content, Fixture};

    fn snapshot(f: &Fixture) -> Vec<(String, Vec<FileRow>)> {
        let cat = f.repo.catalog().unwrap();
        let cl = cat.clusters().get("main").unwrap().unwrap();
        cat.backups()
            .of_cluster(cl.id)
            .unwrap()
            .into_iter()
            .map(|b| {
                let files = cat.versions().files(&b.id).unwrap();
                (b.id, files)
            })
            .collect()
    }

    #[test]
    fn rebuilds_what_the_catalog_held() {
        rebuilds(Fixture::new());
    }

    #[test]
    fn rebuilds_an_encrypted_repository() {
        rebuilds(Fixture::encrypted());
    }

    fn rebuilds(f: Fixture) {
        f.backup(1, &[("a", content(1, 130, 0)), ("b", content(2, 1, 7))]);
        f.backup(2, &[("a", content(1, 130, 0))]);
        let before = snapshot(&f);
        std::fs::remove_file(f.repo.catalog_path().unwrap()).unwrap();
        let r = rebuild_catalog(&f.repo, Duration::ZERO, &Silent).unwrap();
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!((r.clusters, r.backups.len(), r.packs), (1, 2, 2));
        assert_eq!(snapshot(&f), before);
        // The rebuilt block-map relation is what GC needs: nothing is dead.
        let usage = f.repo.catalog().unwrap().packs().usage(&[]).unwrap();
        assert!(usage.iter().all(|u| u.live_chunks == u.chunks));
    }

    /// Followed symlinks are file and directory rows with a target: the
    /// copy carries it, and a rebuilt catalog has it.
    #[test]
    fn rebuilds_the_targets_of_followed_links() {
        let f = Fixture::new();
        let a = f.backup(1, &[("a", content(1, 2, 0))]);
        f.sql(
            "UPDATE file_version SET link = '/etc/pg/a.conf' WHERE path = 'a';
             INSERT INTO file_version SELECT cluster_id, 'conf.d', first_seq, last_seq, 'd', 0,
                    mtime, mode, uid, gid, '../conf.d', NULL FROM file_version WHERE path = '.';",
        );
        {
            let cat = f.repo.catalog().unwrap();
            let cl = cat.clusters().get("main").unwrap().unwrap();
            let b = cat.backups().get(&a.id).unwrap().unwrap();
            f.repo.put_manifest_copy(&cat, cl.identity(), &b).unwrap();
        }
        f.backup(2, &[("a", content(1, 2, 0))]);
        let before = snapshot(&f);
        let links: Vec<Option<String>> = before[0].1.iter().map(|r| r.link.clone()).collect();
        assert_eq!(
            links,
            [
                None,
                Some("/etc/pg/a.conf".into()),
                Some("../conf.d".into())
            ]
        );
        std::fs::remove_file(f.repo.catalog_path().unwrap()).unwrap();
        let r = rebuild_catalog(&f.repo, Duration::ZERO, &Silent).unwrap();
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(snapshot(&f), before);
    }

    #[test]
    fn delta_copies_rebuild_each_backup_after_a_middle_one_expired() {
        let f = Fixture::new();
        let a = f.backup(1, &[("a", content(1, 3, 0)), ("b", content(2, 1, 7))]);
        let b = f.backup(2, &[("a", content(1, 3, 0)), ("c", content(3, 1, 0))]);
        let c = f.backup(3, &[("a", content(4, 3, 0)), ("c", content(3, 1, 0))]);
        let d = f.backup(4, &[("a", content(4, 3, 0))]);
        let copy = |id: &str| {
            let key = keys::manifest("main", id);
            Manifest::decode(&f.repo.backend().get(&key).unwrap().unwrap(), &key).unwrap()
        };
        // Only the first copy is whole; the others list what changed.
        assert_eq!(copy(&a.id).prev, None);
        let cd = copy(&d.id);
        assert_eq!(cd.prev.as_deref(), Some(&*c.id));
        assert_eq!(cd.removed, ["c"]);
        assert!(cd.files.iter().all(|e| e.path != "a"), "{:?}", cd.files);
        // Expire b as `expire` does: rows, rewrite, then b's copy.
        {
            let cat = f.repo.catalog().unwrap();
            cat.backups().expire(std::slice::from_ref(&b.id)).unwrap();
            assert_eq!(f.repo.rewrite_stale_copies(&cat).unwrap(), 1);
            assert_eq!(f.repo.rewrite_stale_copies(&cat).unwrap(), 0);
        }
        f.repo
            .backend()
            .delete(&keys::manifest("main", &b.id))
            .unwrap();
        assert_eq!(copy(&c.id).prev.as_deref(), Some(&*a.id));
        let before = snapshot(&f);
        std::fs::remove_file(f.repo.catalog_path().unwrap()).unwrap();
        let r = rebuild_catalog(&f.repo, Duration::ZERO, &Silent).unwrap();
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(r.backups, [a.id.clone(), c.id.clone(), d.id.clone()]);
        assert_eq!(snapshot(&f), before);

        // A damaged copy: the deltas after it cannot be rebuilt, and say so.
        f.repo
            .backend()
            .put(&keys::manifest("main", &c.id), b"garbage")
            .unwrap();
        std::fs::remove_file(f.repo.catalog_path().unwrap()).unwrap();
        let r = rebuild_catalog(&f.repo, Duration::ZERO, &Silent).unwrap();
        assert_eq!(r.backups, std::slice::from_ref(&a.id));
        let skipped = r.skipped.join("\n");
        assert!(
            skipped.contains(&format!("lists changes since backup {}", c.id)),
            "{skipped}"
        );
    }

    #[test]
    fn skips_and_reports_damage_and_keeps_the_old_catalog() {
        let f = Fixture::new();
        let one = f.backup(1, &[("a", content(1, 2, 0))]);
        let two = f.backup(2, &[("b", content(2, 2, 0))]);
        // A truncated pack, a manifest copy that does not decode, a stray key.
        let key = keys::pack(&one.pack);
        let b = f.repo.backend().get(&key).unwrap().unwrap();
        f.repo.backend().put(&key, &b[..b.len() - 5]).unwrap();
        f.repo
            .backend()
            .put(&keys::manifest("main", &two.id), b"garbage")
            .unwrap();
        f.repo.backend().put("packs/zz/not-a-pack", b"x").unwrap();
        let r = rebuild_catalog(&f.repo, Duration::ZERO, &Silent).unwrap();
        assert!(r.old_catalog.as_ref().is_some_and(|p| p.exists()));
        let skipped = r.skipped.join("\n");
        assert!(skipped.contains(&key), "{skipped}");
        assert!(
            skipped.contains(&keys::manifest("main", &two.id)),
            "{skipped}"
        );
        assert!(skipped.contains("not-a-pack"), "{skipped}");
        // Backup one's manifest is fine but its block map's pack is gone.
        assert!(r.backups.is_empty(), "{:?}", r.backups);
    }
}
