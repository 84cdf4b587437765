//! `expire`: retention, WAL expiry and garbage collection, as plan → apply →
//! stats.
//!
//! Crash safety: every step leaves a repository in which every kept backup
//! restores, and whatever a crash leaves behind is found by the next expire.
//! 1. Manifest copies of expired backups are deleted, then their rows (one
//!    transaction).
//! 2. WAL older than the oldest kept backup's start is deleted.
//! 3. A pack that is mostly dead is rewritten: its live chunks are copied
//!    (and verified) into new packs, which are sealed before a transaction
//!    moves the index to them (one per 100,000 chunks moved); only then are
//!    the old packs deleted (`rewrite.rs`).
//! 4. A pack with no live chunk is dropped from the catalog (in the last of
//!    those transactions), then deleted.
//! 5. Orphans (packs the catalog does not know, manifest copies of unknown
//!    backups, old temporary files) are deleted.
//!
//! The repository lock is held throughout, so no backup runs meanwhile and a
//! `running` backup row is a leftover of a killed one.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

mod retention;
mod rewrite;

use retention::by_policy;
pub use retention::Retention;

use crate::catalog::{BackupRow, BackupStatus, Catalog, ExpireLog, PackUsage, COMPACT_FREE_SHARE};
use crate::error::{Error, Result};
use crate::format::keys::{self, ObjectKey};
use crate::format::PackId;
use crate::pg::{WalFileName, WalSegment};
use crate::repo::{check_cluster_name, Repository, WriteSession};
use crate::util::{human, now_us};

#[derive(Clone, Debug)]
pub struct ExpireOptions {
    pub retention: Retention,
    /// Rewrite packs whose live share (by bytes) is below this fraction.
    pub gc_threshold: f64,
    /// "Now", unix microseconds (tests move it).
    pub now_us: i64,
    /// Temporary files older than this are leftovers.
    pub tmp_age: Duration,
    pub lock_wait: Duration,
}

impl ExpireOptions {
    pub fn new(retention: Retention) -> Self {
        ExpireOptions {
            retention,
            gc_threshold: 0.5,
            now_us: now_us(),
            tmp_age: Duration::from_secs(3600),
            lock_wait: Duration::ZERO,
        }
    }
}

/// Everything an expire will do, decided before anything changes.
#[derive(Clone, Debug, Default)]
pub struct ExpirePlan {
    pub cluster: String,
    /// Backups to expire, with the reason.
    pub backups: Vec<(BackupRow, String)>,
    /// Rows of backups that never completed (killed).
    pub leftovers: Vec<String>,
    /// WAL objects to delete (keys) and their names.
    pub wal: Vec<(String, String)>,
    pub delete_packs: Vec<PackUsage>,
    pub rewrite_packs: Vec<PackUsage>,
    /// Object keys of leftovers: unknown packs, manifests, temporary files.
    pub orphans: Vec<String>,
    /// Unfinished uploads older than this are aborted (an object store's
    /// multipart uploads of a killed process).
    pub upload_age: Duration,
    /// Bytes the plan frees, at most.
    pub bytes: u64,
    /// Bytes of the WAL objects, of the expired backups' manifest copies
    /// and of the leftovers, from the listings (so that deleting them takes
    /// no request per object to learn its size).
    pub wal_bytes: u64,
    pub copy_bytes: u64,
    pub orphan_bytes: u64,
    /// The size of each pack the plan deletes, rewrites or finds orphaned.
    pack_bytes: HashMap<String, u64>,
}

/// Decide what to expire and collect; changes nothing.
pub(crate) fn plan(
    repo: &Repository,
    cat: &Catalog,
    cluster: &str,
    opts: &ExpireOptions,
) -> Result<ExpirePlan> {
    check_cluster_name(cluster)?;
    let mut plan = ExpirePlan {
        cluster: cluster.to_string(),
        upload_age: opts.tmp_age,
        ..Default::default()
    };
    plan.leftovers = cat.backups().running()?;
    let kept = plan_backups(cat, cluster, opts, &mut plan)?;
    plan_wal(repo, cat, cluster, &kept, &mut plan)?;
    let mut gone_ids: Vec<String> = plan.backups.iter().map(|(b, _)| b.id.clone()).collect();
    gone_ids.extend(plan.leftovers.iter().cloned());
    let t = std::time::Instant::now();
    plan_packs(cat, &gone_ids, opts, &mut plan)?;
    tracing::debug!("expire: pack usage worked out in {:?}", t.elapsed());
    plan_orphans(repo, cat, &gone_ids, opts, &mut plan)?;
    Ok(plan)
}

/// Backups the retention expires; returns the complete backups kept.
fn plan_backups(
    cat: &Catalog,
    cluster: &str,
    opts: &ExpireOptions,
    plan: &mut ExpirePlan,
) -> Result<Vec<BackupRow>> {
    let Some(cl) = cat.clusters().get(cluster)? else {
        if opts.retention.set.is_some() {
            return Err(Error::NotFound(format!(
                "cluster {cluster:?} is not in this repository"
            )));
        }
        return Ok(Vec::new());
    };
    let complete: Vec<BackupRow> = cat
        .backups()
        .of_cluster(cl.id)?
        .into_iter()
        .filter(|b| b.status == BackupStatus::Complete)
        .collect();
    let gone = by_policy(&complete, &opts.retention, opts.now_us)?;
    let gone_idx: HashSet<usize> = gone.iter().map(|(i, _)| *i).collect();
    for (i, why) in gone {
        plan.backups.push((complete[i].clone(), why));
    }
    Ok(complete
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !gone_idx.contains(i))
        .map(|(_, b)| b)
        .collect())
}

/// WAL that serves no kept backup, per entry of the cluster's history: in
/// an entry with kept backups, what precedes the oldest one's start; in a
/// past entry (before a `pgstrata upgrade`) with no kept backup, all of it.
fn plan_wal(
    repo: &Repository,
    cat: &Catalog,
    cluster: &str,
    kept: &[BackupRow],
    plan: &mut ExpirePlan,
) -> Result<()> {
    let Some(cl) = cat.clusters().get(cluster)? else {
        return Ok(());
    };
    for h in cat.clusters().histories(cl.id)? {
        let oldest = kept
            .iter()
            .filter(|b| b.history == h.seq)
            .min_by_key(|b| b.start_lsn);
        let first = match oldest {
            Some(b) => match b.wal_start.as_deref() {
                Some(start) => Some((
                    WalSegment::from_name(start, b.wal_seg_size)?,
                    b.wal_seg_size,
                )),
                None => continue,
            },
            None if h.seq < cl.history => None,
            None => continue,
        };
        for w in repo.wal_objects(&keys::wal_id(cluster, h.seq))? {
            let gone = match (&first, WalFileName::parse(&w.name)) {
                (None, _) => true,
                (Some(_), Ok(WalFileName::History { .. }) | Err(_)) => false,
                (Some((f, seg)), Ok(_)) => {
                    WalSegment::from_name(&w.name[..24], *seg).is_ok_and(|s| s.segno < f.segno)
                }
            };
            if gone {
                plan.bytes += w.size;
                plan.wal_bytes += w.size;
                plan.wal.push((w.key, w.name));
            }
        }
    }
    Ok(())
}

/// Garbage: packs whose chunks no kept backup (of any cluster) uses, or
/// mostly so.
fn plan_packs(
    cat: &Catalog,
    gone_ids: &[String],
    opts: &ExpireOptions,
    plan: &mut ExpirePlan,
) -> Result<()> {
    for u in cat.packs().usage(gone_ids)? {
        plan.pack_bytes.insert(keys::pack(&u.id), u.size);
        if u.live_chunks == 0 {
            plan.bytes += u.size;
            plan.delete_packs.push(u);
        } else if (u.live_bytes as f64) < opts.gc_threshold * u.record_bytes as f64 {
            plan.bytes += u.size - u.live_bytes;
            plan.rewrite_packs.push(u);
        }
    }
    Ok(())
}

/// Orphans: packs the catalog never indexed (a backup killed between
/// sealing and indexing), manifests of unknown backups, old temporary
/// files, and anything under those prefixes that is not a pgstrata key.
fn plan_orphans(
    repo: &Repository,
    cat: &Catalog,
    gone_ids: &[String],
    opts: &ExpireOptions,
    plan: &mut ExpirePlan,
) -> Result<()> {
    let known = cat.packs().ids()?;
    let mut kept: HashSet<(String, String)> = HashSet::new();
    for c in cat.clusters().list()? {
        for b in cat.backups().of_cluster(c.id)? {
            if b.status == BackupStatus::Complete && !gone_ids.contains(&b.id) {
                kept.insert((c.name.clone(), b.id));
            }
        }
    }
    let expiring: HashSet<String> = plan.backups.iter().map(|(b, _)| b.id.clone()).collect();
    let stored = repo.stored();
    let objects = stored
        .list(keys::PACKS)?
        .into_iter()
        .chain(stored.list(keys::MANIFESTS)?);
    for (key, size) in objects {
        let orphan = match ObjectKey::parse(&key) {
            Ok(ObjectKey::Pack(id)) => !known.contains(&id),
            // An expired backup's copy goes in step 1, not as a leftover.
            Ok(ObjectKey::Manifest { cluster, backup }) => {
                if expiring.contains(&backup) {
                    plan.bytes += size;
                    plan.copy_bytes += size;
                }
                !kept.contains(&(cluster, backup.clone())) && !expiring.contains(&backup)
            }
            _ => true,
        };
        if orphan {
            plan.bytes += size;
            plan.orphan_bytes += size;
            plan.pack_bytes.insert(key.clone(), size);
            plan.orphans.push(key);
        }
    }
    for (key, size) in stored.list(keys::TMP)? {
        let old = stored
            .modified(&key)?
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= opts.tmp_age);
        if old {
            plan.bytes += size;
            plan.orphan_bytes += size;
            plan.orphans.push(key);
        }
    }
    Ok(())
}

impl ExpirePlan {
    pub fn is_empty(&self) -> bool {
        self.backups.is_empty()
            && self.leftovers.is_empty()
            && self.wal.is_empty()
            && self.delete_packs.is_empty()
            && self.rewrite_packs.is_empty()
            && self.orphans.is_empty()
    }
}

/// Carry out a plan, in the write session `session`.
pub(crate) fn apply(
    repo: &Repository,
    session: &WriteSession<'_>,
    cat: &mut Catalog,
    plan: &ExpirePlan,
) -> Result<ExpireLog> {
    let stored = repo.stored();
    let mut log = ExpireLog {
        time: now_us(),
        ..Default::default()
    };
    // 1. Expired backups: rows; then the copies that listed changes since
    // an expired backup are rewritten against their new predecessor, and
    // only then are the expired backups' copies deleted (repo::copies).
    let mut ids: Vec<String> = plan.backups.iter().map(|(b, _)| b.id.clone()).collect();
    ids.extend(plan.leftovers.iter().cloned());
    let t = std::time::Instant::now();
    cat.backups().expire(&ids)?;
    tracing::debug!("expire: backup rows removed in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    repo.rewrite_stale_copies(cat)?;
    tracing::debug!("expire: manifest copies rewritten in {:?}", t.elapsed());
    // In object storage the catalog that names these backups is the
    // bucket's: it is published without them before their copies and WAL
    // go, so that no published catalog claims a backup storage no longer
    // holds (a kill in between leaves copies the next expire collects).
    session.checkpoint()?;
    let copies: Vec<String> = plan
        .backups
        .iter()
        .map(|(b, _)| keys::manifest(&plan.cluster, &b.id))
        .collect();
    // Objects go in batches (one request per thousand in object storage):
    // a removal lost in a crash leaves garbage the next expire finds.
    stored.delete_many(&copies)?;
    log.bytes_freed += plan.copy_bytes;
    log.backups = plan.backups.len() as u64;

    // 2. WAL nobody needs.
    let wal: Vec<String> = plan.wal.iter().map(|(key, _)| key.clone()).collect();
    stored.delete_many(&wal)?;
    log.bytes_freed += plan.wal_bytes;
    log.wal_files += wal.len() as u64;

    // 3. Mostly dead packs: copy live chunks, verified, into new packs.
    let t = std::time::Instant::now();
    cat.packs().mark_live_now()?;
    tracing::debug!("expire: liveness worked out again in {:?}", t.elapsed());
    let known = cat.packs().ids()?;
    let todo: Vec<&PackUsage> = plan
        .rewrite_packs
        .iter()
        .filter(|p| known.contains(&p.id))
        .collect();
    // 4. Dead packs: their rows go with the last rewrite's, then the files.
    let dead: Vec<PackId> = plan.delete_packs.iter().map(|p| p.id).collect();
    let deleter = PackDeleter {
        repo,
        left: Default::default(),
        read: Default::default(),
    };
    let (old_bytes, new_bytes) = rewrite::rewrite_packs(&deleter, &stored, cat, &todo, &dead)?;
    log.bytes_freed += old_bytes.saturating_sub(new_bytes);
    log.packs_rewritten += todo.len() as u64;
    log.bytes_freed += plan.delete_packs.iter().map(|p| p.size).sum::<u64>();
    log.packs_deleted += dead.len() as u64;
    tracing::debug!(
        "expire: {} packs rewritten and {} dropped in {:?}",
        todo.len(),
        dead.len(),
        t.elapsed()
    );

    // 5. Leftovers of interrupted work.
    let (packs, others): (Vec<String>, Vec<String>) = plan
        .orphans
        .iter()
        .cloned()
        .partition(|k| k.starts_with(keys::PACKS));
    stored.delete_many(&unnamed_copies(cat, &others)?)?;
    deleter.delete(cat, &packs)?;
    log.bytes_freed += plan.orphan_bytes;
    let left = deleter.left.into_inner();
    if !left.is_empty() {
        let bytes: u64 = left.iter().filter_map(|k| plan.pack_bytes.get(k)).sum();
        log.bytes_freed = log.bytes_freed.saturating_sub(bytes);
        let line = format!(
            "{} packs no longer used ({}) are left for the next expire",
            left.len(),
            human(bytes)
        );
        if deleter.read.get() {
            tracing::warn!("{line}: a restore or verify was reading the repository");
        } else {
            tracing::info!(
                "{line}: in object storage, this expire's catalog is published when it ends"
            );
        }
    }
    log.orphans += plan.orphans.len() as u64;
    let aborted = stored.collect_abandoned(plan.upload_age)?;
    if aborted > 0 {
        tracing::info!("aborted {aborted} unfinished upload(s) of interrupted commands");
        log.orphans += aborted;
    }
    cat.expire_log().record(&log)?;
    let t = std::time::Instant::now();
    // Optional: the expire is done, and a compaction that fails (no room
    // for the temporary copy, a reader holding the file too long) is only
    // space not given back yet.
    log.catalog_compacted = match cat.compact(COMPACT_FREE_SHARE) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("the catalog was not compacted: {e}");
            None
        }
    };
    if let Some(c) = log.catalog_compacted {
        tracing::debug!(
            "expire: catalog compacted from {} to {} in {:?}",
            human(c.before),
            human(c.after),
            t.elapsed()
        );
    }
    if let Err(e) = cat.checkpoint() {
        tracing::debug!("catalog checkpoint: {e}");
    }
    Ok(log)
}

/// Deletes packs the catalog no longer names, unless a restore or verify
/// reads the repository (`Repository::delete_packs_unless_read`, which
/// explains why): from the first refusal on, every pack of this run is
/// left, an orphan that a later expire collects.
pub(super) struct PackDeleter<'a> {
    repo: &'a Repository,
    left: std::cell::RefCell<Vec<String>>,
    /// A reader was registered.
    read: std::cell::Cell<bool>,
}

impl PackDeleter<'_> {
    /// Packs this run dropped from the catalog. In object storage, readers
    /// see that catalog only when this run publishes it, at its end: the
    /// packs stay for the next run.
    pub(super) fn dropped(&self, cat: &Catalog, keys: &[String]) -> Result<()> {
        match self.repo.is_remote() {
            true => {
                self.left.borrow_mut().extend_from_slice(keys);
                Ok(())
            }
            false => self.delete(cat, keys),
        }
    }

    /// Packs no catalog readers can see names (orphans). Each is looked up
    /// in `cat` once more first: a pack is deleted only if, at that moment,
    /// no row names it. (A rerun of a killed expire rewrites the same live
    /// chunks into a pack of the same content-addressed name as the killed
    /// run's unindexed one, which its plan listed as an orphan.)
    pub(super) fn delete(&self, cat: &Catalog, keys: &[String]) -> Result<()> {
        let mut unnamed = Vec::with_capacity(keys.len());
        for key in keys {
            match ObjectKey::parse(key) {
                Ok(ObjectKey::Pack(id)) if cat.packs().has(&id)? => {
                    tracing::debug!("expire: pack {key} is indexed again; kept");
                }
                _ => unnamed.push(key.clone()),
            }
        }
        let keys = &unnamed[..];
        if !self.read.get() && self.repo.delete_packs_unless_read(keys)? {
            return Ok(());
        }
        self.read.set(true);
        self.left.borrow_mut().extend_from_slice(keys);
        Ok(())
    }
}

/// The leftover keys (other than packs) that are still unnamed by `cat`:
/// a manifest copy is kept when its backup has a row again.
fn unnamed_copies(cat: &Catalog, keys: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        if let Ok(ObjectKey::Manifest { backup, .. }) = ObjectKey::parse(key) {
            if cat.backups().get(&backup)?.is_some() {
                tracing::debug!("expire: manifest copy {key} names a backup again; kept");
                continue;
            }
        }
        out.push(key.clone());
    }
    Ok(out)
}

/// Catalog pages `expire` keeps in memory. Liveness is worked out over the
/// whole catalog, then looked up pack by pack, yet a month's expire took as
/// long with 4 MiB as with 24 (which filled up with 200,000 files): the
/// cache is a cap on memory, not a speed-up.
const EXPIRE_CACHE_MIB: u32 = 4;

/// Take the lock, plan, and (unless `dry_run`) apply.
pub fn run(
    repo: &Repository,
    cluster: &str,
    opts: &ExpireOptions,
    dry_run: bool,
) -> Result<(ExpirePlan, Option<ExpireLog>)> {
    let session = repo.begin_write("expire", opts.lock_wait)?;
    let mut cat = repo.catalog()?;
    cat.set_cache_mib(EXPIRE_CACHE_MIB)?;
    cat.temp_on_disk()?;
    let plan = plan(repo, &cat, cluster, opts)?;
    if dry_run {
        // Committed, though nothing changed: the working copy stays a
        // clean copy of the newest generation (an abandoned one is
        // fetched again by the next command).
        drop(cat);
        session.commit()?;
        return Ok((plan, None));
    }
    let log = apply(repo, &session, &mut cat, &plan)?;
    drop(cat);
    session.commit()?;
    Ok((plan, Some(log)))
}
