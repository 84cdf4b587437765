//! The WAL archive: `archive-push` and `archive-get`.
//!
//! Each WAL file is one object, `wal/<cluster>/<timeline+log>/<name>.zst`
//! (history files directly under `wal/<cluster>/`), laid out as
//! `"PGSTRWL1"`, BLAKE3 of the original bytes [32], original length u64 (LE),
//! then the zstd frame. A repeated push of identical content succeeds; a
//! different one is refused. A segment's system identifier (from its long
//! page header) must match the cluster's. Neither command needs a database
//! connection nor the backup lock; push publishes with a no-replace link, so
//! two pushes of the same name cannot overwrite each other.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::pg::wal::LongPageHeader;
use crate::pg::{TimelineId, WalFileName};
use crate::repo::Repository;
use crate::store::chunk::hex;

const MAGIC: &[u8; 8] = b"PGSTRWL1";
const HEADER: usize = 48;

#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Stored,
    AlreadyArchived,
}

/// The object key of an archived WAL file.
pub fn wal_key(cluster: &str, name: &str) -> Result<String> {
    let parsed = WalFileName::parse(name)?;
    Ok(match parsed {
        WalFileName::History { .. } => format!("wal/{cluster}/{name}.zst"),
        _ => format!("wal/{cluster}/{}/{name}.zst", &name[..16]),
    })
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::invalid(format!("{} has no file name", path.display())))
}

/// Archive one WAL file.
pub fn push(repo: &Repository, cluster: &str, path: &Path, level: i32) -> Result<PushOutcome> {
    let name = file_name(path)?;
    let parsed = WalFileName::parse(&name)?;
    let data = fs::read(path).at(path)?;
    if parsed.is_segment_data() {
        let h = LongPageHeader::parse(&data, &name)?;
        if h.timeline != parsed.timeline().0 {
            return Err(Error::invalid(format!(
                "{name}: its header says timeline {}, its name timeline {}",
                h.timeline,
                parsed.timeline()
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
        match (cat.cluster(cluster)?, h.major_version()) {
            (Some(c), _) if c.system_id != h.system_id => {
                return Err(Error::refused(format!(
                    "{name} belongs to the cluster with system identifier {}, but cluster {:?} \
                     in this repository is {}: refusing to archive it",
                    h.system_id, c.name, c.system_id
                )));
            }
            (Some(_), _) => {}
            (None, Some(v)) => {
                cat.bind_cluster(cluster, h.system_id, v)?;
            }
            (None, None) => {
                return Err(Error::refused(format!(
                    "{name}: unknown WAL page magic {:#06x} (unsupported PostgreSQL version)",
                    h.magic
                )));
            }
        }
    } else if repo.catalog()?.cluster(cluster)?.is_none() {
        return Err(Error::refused(format!(
            "cluster {cluster:?} is not in this repository yet: archive a WAL segment \
             or take a backup first"
        )));
    }
    let key = wal_key(cluster, &name)?;
    let hash = blake3::hash(&data);
    if let Some(existing) = stored_hash(repo, &key)? {
        return same_or_refuse(&name, &existing, hash.as_bytes());
    }
    let z = zstd::bulk::compress(&data, level)
        .map_err(|e| Error::corrupt("zstd compression", e.to_string()))?;
    let mut obj = Vec::with_capacity(HEADER + z.len());
    obj.extend_from_slice(MAGIC);
    obj.extend_from_slice(hash.as_bytes());
    obj.extend_from_slice(&(data.len() as u64).to_le_bytes());
    obj.extend_from_slice(&z);
    if repo.backend().put_new(&key, &obj)? {
        return Ok(PushOutcome::Stored);
    }
    // Lost a race with a concurrent push of the same name.
    let existing =
        stored_hash(repo, &key)?.ok_or_else(|| Error::corrupt(&key, "vanished while archiving"))?;
    same_or_refuse(&name, &existing, hash.as_bytes())
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

fn stored_hash(repo: &Repository, key: &str) -> Result<Option<[u8; 32]>> {
    if repo.backend().size(key)?.is_none() {
        return Ok(None);
    }
    let h = repo.backend().get_range(key, 0, HEADER)?;
    if &h[..8] != MAGIC {
        return Err(Error::corrupt(key, "not a pgstrata WAL object"));
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h[8..40]);
    Ok(Some(out))
}

/// Read and verify an archived WAL file; `None` when it is not archived.
pub fn fetch(repo: &Repository, cluster: &str, name: &str) -> Result<Option<Vec<u8>>> {
    let key = wal_key(cluster, name)?;
    let Some(obj) = repo.backend().get(&key)? else {
        return Ok(None);
    };
    if obj.len() < HEADER || &obj[..8] != MAGIC {
        return Err(Error::corrupt(&key, "not a pgstrata WAL object"));
    }
    let mut lenb = [0u8; 8];
    lenb.copy_from_slice(&obj[40..48]);
    let len = u64::from_le_bytes(lenb) as usize;
    let data = zstd::bulk::decompress(&obj[HEADER..], len)
        .map_err(|e| Error::corrupt(&key, format!("does not decompress: {e}")))?;
    if data.len() != len || blake3::hash(&data).as_bytes() != &obj[8..40] {
        return Err(Error::corrupt(
            &key,
            "content does not match its recorded hash",
        ));
    }
    Ok(Some(data))
}

/// Restore an archived WAL file to `dest`, atomically. `false` when the
/// repository does not have it (PostgreSQL asks for files that do not exist).
pub fn get(repo: &Repository, cluster: &str, name: &str, dest: &Path) -> Result<bool> {
    let Some(data) = fetch(repo, cluster, name)? else {
        return Ok(false);
    };
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.pgstrata-{}.tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(dest, e));
    }
    Ok(true)
}

/// Names of the archived WAL files of a cluster, sorted.
pub fn list(repo: &Repository, cluster: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = repo
        .backend()
        .list(&format!("wal/{cluster}/"))?
        .into_iter()
        .filter_map(|(k, _)| {
            k.rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".zst"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// When an archived WAL file reached the repository (unix µs).
pub fn archived_at(repo: &Repository, cluster: &str, name: &str) -> Result<Option<i64>> {
    Ok(repo
        .backend()
        .modified(&wal_key(cluster, name)?)?
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as i64))
}

/// Is this segment archived?
pub fn has(repo: &Repository, cluster: &str, name: &str) -> Result<bool> {
    Ok(repo.backend().size(&wal_key(cluster, name)?)?.is_some())
}

/// The newest and oldest segment names (segments only) per timeline.
pub fn segment_range(names: &[String]) -> Option<(String, String)> {
    let segs: Vec<&String> = names
        .iter()
        .filter(|n| matches!(WalFileName::parse(n), Ok(WalFileName::Segment { .. })))
        .collect();
    Some(((*segs.first()?).clone(), (*segs.last()?).clone()))
}

/// Timelines that have any archived segment.
pub fn timelines(names: &[String]) -> Vec<TimelineId> {
    let mut t: Vec<TimelineId> = names
        .iter()
        .filter_map(|n| WalFileName::parse(n).ok())
        .filter(|w| w.is_segment_data())
        .map(|w| w.timeline())
        .collect();
    t.sort();
    t.dedup();
    t
}
