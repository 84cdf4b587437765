//! `archive-push` and `archive-get`: deciding what goes into the WAL archive
//! (objects are stored and read by [`crate::repo`], laid out by
//! [`crate::format::wal`]).
//!
//! Asynchronous archiving (a background pusher reading ahead through
//! `pg_wal/archive_status`) is [`spool`]; prefetching for recovery is
//! [`prefetch`].
//!
//! A repeated push of identical content succeeds; a different one is refused.
//! A segment's system identifier (from its long page header) must match the
//! cluster's. Neither command needs a database connection nor the backup
//! lock; push publishes with a no-replace write, so two pushes of the same
//! name cannot overwrite each other.
//!
//! What `archive-get` writes for PostgreSQL is whole (a temporary file
//! renamed into place) but not fsynced: PostgreSQL keeps every file it
//! restores under its own name in `pg_wal` with `durable_rename`, which
//! fsyncs it, and after a crash of the system before that, recovery asks for
//! the file again. An fsync here would only be a second one.

use std::fs;
use std::path::Path;

use crate::error::{Error, Hint, IoContext, Result};
use crate::format::chunk::hex;
use crate::format::keys::wal_id;
use crate::format::wal as walfmt;
use crate::pg::wal::LongPageHeader;
use crate::pg::WalFileName;
use crate::repo::{check_cluster_name, Repository};
use crate::util::Durability;

mod prefetch;
mod spool;

pub use prefetch::{get_prefetched, run_prefetcher, Prefetch};
pub use spool::{push_async, run_pusher, AsyncOutcome, AsyncPush, PusherStats, QueueFull};

#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Stored,
    AlreadyArchived,
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::invalid(format!("{} has no file name", path.display())))
}

/// Archive one WAL file.
pub fn push(repo: &Repository, cluster: &str, path: &Path, level: i32) -> Result<PushOutcome> {
    check_cluster_name(cluster)?;
    let name = file_name(path)?;
    let data = fs::read(path).at(path)?;
    push_data(repo, cluster, &name, &data, level).map(|(o, _)| o)
}

/// Archive the bytes of WAL file `name`; also returns their BLAKE3 hash.
fn push_data(
    repo: &Repository,
    cluster: &str,
    name: &str,
    data: &[u8],
    level: i32,
) -> Result<(PushOutcome, [u8; 32])> {
    let name = name.to_string();
    let parsed = WalFileName::parse(&name)?;
    let wal_id = if parsed.is_segment_data() {
        segment_home(repo, cluster, &name, &parsed, data)?
    } else {
        // History and .backup files carry no identity: they belong to the
        // cluster's current one.
        match repo.catalog()?.clusters().get(cluster)? {
            Some(c) => c.wal_id(),
            None => {
                return Err(Error::refused(format!(
                    "cluster {cluster:?} is not in this repository yet: archive a WAL segment \
                     or take a backup first"
                )))
            }
        }
    };
    let hash = *crate::format::tailhash::hash(data).as_bytes();
    if let Some(existing) = repo.wal_hash(&wal_id, &name)? {
        return same_or_refuse(&name, &existing, &hash).map(|o| (o, hash));
    }
    let obj = walfmt::encode_hashed(data, hash, level)?;
    if repo.wal_put_new(&wal_id, &name, &obj)? {
        return Ok((PushOutcome::Stored, hash));
    }
    // Lost a race with a concurrent push of the same name.
    let existing = repo
        .wal_hash(&wal_id, &name)?
        .ok_or_else(|| Error::corrupt(&name, "vanished while archiving"))?;
    same_or_refuse(&name, &existing, &hash).map(|o| (o, hash))
}

/// Where a segment goes, from the system identifier in its long page
/// header: the history entry of `cluster` with that identity (binding a new
/// cluster on its first segment). A segment of another cluster is refused,
/// naming the cluster it belongs to when the repository has it.
fn segment_home(
    repo: &Repository,
    cluster: &str,
    name: &str,
    parsed: &WalFileName,
    data: &[u8],
) -> Result<String> {
    let h = LongPageHeader::parse(data, name)?;
    if h.timeline != parsed.timeline().0 {
        return Err(Error::invalid(format!(
            "{name}: its header says timeline {}, its name timeline {}",
            h.timeline,
            parsed.timeline()
        )));
    }
    // A segment stored under another segment's name would poison recovery
    // to any point after it.
    let seg_size = u64::from(h.seg_size);
    let named = crate::pg::WalSegment::from_name(&name[..24.min(name.len())], seg_size)?;
    if seg_size == 0 || h.page_addr != named.segno.saturating_mul(seg_size) {
        return Err(Error::invalid(format!(
            "{name}: its first page is at {} but its name is of the segment starting at {}: \
             the file is misnamed; nothing was archived",
            crate::pg::Lsn(h.page_addr),
            crate::pg::Lsn(named.segno.saturating_mul(seg_size))
        )));
    }
    // Refuse WAL of an unsupported major before touching the repository.
    match h.major_version() {
        Some(v) => crate::pg::version::require_supported(v, &format!("WAL file {name}"))?,
        None => {
            return Err(Error::refused(format!(
                "{name}: unknown WAL page magic {:#06x}: not WAL of a supported PostgreSQL \
                 version ({} to {}); nothing was archived",
                h.magic,
                crate::pg::version::MIN_MAJOR,
                crate::pg::version::MAX_MAJOR
            )));
        }
    }
    let cat = repo.catalog()?;
    if let Some(other) = cat.clusters().of_system(h.system_id)? {
        if other != cluster {
            return Err(Error::refused(format!(
                "{name} already belongs to cluster {other:?} in this repository (system identifier \
                 {}), not {cluster:?}: check the cluster name in archive_command",
                h.system_id
            )));
        }
    }
    match (cat.clusters().get(cluster)?, h.major_version()) {
        (Some(c), _) => {
            let seq = cat
                .clusters()
                .histories(c.id)?
                .into_iter()
                .find(|x| x.system_id == h.system_id)
                .map(|x| x.seq)
                .ok_or_else(|| {
                    Error::refused(format!(
                        "{name} belongs to the cluster with system identifier {}, but cluster \
                         {:?} in this repository is {}: refusing to archive it",
                        h.system_id, c.name, c.system_id
                    ))
                    .hint(Hint::Upgrade)
                })?;
            Ok(wal_id(cluster, seq))
        }
        (None, Some(v)) => Ok(cat.clusters().bind(cluster, h.system_id, v)?.wal_id()),
        (None, None) => Err(Error::refused(format!(
            "{name}: unknown WAL page magic {:#06x} (unsupported PostgreSQL version)",
            h.magic
        ))),
    }
}

fn same_or_refuse(name: &str, existing: &[u8; 32], new: &[u8; 32]) -> Result<PushOutcome> {
    if existing == new {
        Ok(PushOutcome::AlreadyArchived)
    } else {
        Err(Error::refused(format!(
            "{name} is already archived with different content (archived BLAKE3 {}, \
             this file {}): refusing to overwrite it",
            &hex(existing)[..16],
            &hex(new)[..16]
        )))
    }
}

/// Restore an archived WAL file of entry `history` of the cluster's history
/// to `dest`, atomically, not fsynced (see the module's docs). `false` when
/// the repository does not have it (PostgreSQL asks for files that do not
/// exist).
pub fn get(
    repo: &Repository,
    cluster: &str,
    history: u32,
    name: &str,
    dest: &Path,
) -> Result<bool> {
    check_cluster_name(cluster)?;
    repo.wal_fetch_to(&wal_id(cluster, history), name, dest, Durability::PageCache)
}
