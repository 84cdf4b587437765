//! The catalog of a repository in object storage: a local working copy of
//! the newest snapshot in the bucket.
//!
//! ```text
//! CACHE/state.json            {"generation": G, "file": "catalog-G0.db", "dirty": false}
//! CACHE/catalog-<G0>.db       the working copy (+ -wal, -shm)
//! CACHE/writer.lock           flock held by the process that holds the repository lock
//! BUCKET/catalog/<G>.db.zst   snapshot G (zstd; sealed in an encrypted repository)
//! ```
//!
//! Rules:
//! - The bucket is the truth. Before reading, a command lists `catalog/` and
//!   downloads the newest snapshot unless the working copy is of that
//!   generation and clean. A missing or damaged working copy is fetched again.
//! - Only the holder of the repository lock writes: it marks the copy dirty
//!   before its first change and publishes generation G+1 (a conditional
//!   write, so two writers can never both publish one generation) when it
//!   lets the lock go. A dirty copy whose writer is gone is never trusted: the
//!   bucket's snapshot replaces it.
//! - A downloaded snapshot gets a new file, never replacing one that another
//!   process may have open (SQLite's `-wal` and `-shm` go by the file's
//!   name). Old files are removed once two generations newer exist.
//! - Published objects are referenced only by snapshots written after them:
//!   a snapshot names packs and manifests already durable in the bucket.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::format::keys;
use crate::store::Backend;

/// Snapshots kept in the bucket besides the newest (a reader that listed
/// one a moment ago can still fetch it).
const KEEP_SNAPSHOTS: u64 = 2;
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    generation: u64,
    file: String,
    dirty: bool,
}

/// A catalog cache directory for one repository.
pub(crate) struct CatalogCache {
    dir: PathBuf,
    /// The repository's name, for messages.
    name: String,
    /// The writer lock, held while this process holds the repository lock.
    writer: Mutex<Option<File>>,
}

impl CatalogCache {
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .at(dir)?;
        Ok(CatalogCache {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            writer: Mutex::new(None),
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn read_state(&self) -> Result<Option<State>> {
        let p = self.state_path();
        match fs::read(&p) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn write_state(&self, s: &State) -> Result<()> {
        let p = self.state_path();
        let tmp = self
            .dir
            .join(format!("state.json.{}.tmp", std::process::id()));
        let body = serde_json::to_vec(s).map_err(|e| Error::internal(e.to_string()))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(&body).and_then(|_| f.sync_all()).at(&tmp)?;
        fs::rename(&tmp, &p).at(&p)?;
        crate::store::backend::sync_dir(&self.dir)
    }

    fn holds_writer(&self) -> bool {
        self.writer.lock().map(|w| w.is_some()).unwrap_or(false)
    }

    /// Is a writer alive on this host (this process or another)?
    fn writer_alive(&self) -> Result<bool> {
        if self.holds_writer() {
            return Ok(true);
        }
        let f = self.open_writer_lock()?;
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(false),
            Err(_) => Ok(true),
        }
    }

    fn open_writer_lock(&self) -> Result<File> {
        let p = self.dir.join("writer.lock");
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .at(&p)
    }

    /// The newest snapshot's generation in the bucket.
    fn newest(&self, backend: &dyn Backend) -> Result<Option<u64>> {
        Ok(backend
            .list(keys::CATALOG)?
            .iter()
            .filter_map(|(k, _)| keys::parse_catalog_snapshot(k))
            .max())
    }

    /// The working copy to open, brought up to the bucket's newest snapshot
    /// first (see the module's rules).
    pub fn current(&self, backend: &dyn Backend) -> Result<PathBuf> {
        let state = self.read_state()?;
        if let Some(s) = &state {
            // The lock holder's copy is the newest there is: nobody else
            // publishes while it holds the lock.
            if s.dirty && self.writer_alive()? {
                return Ok(self.dir.join(&s.file));
            }
        }
        let newest = self.newest(backend)?.ok_or_else(|| {
            Error::NotFound(format!(
                "repository {} has no catalog snapshot under {}: run `pgstrata repair --rebuild-catalog`",
                self.name,
                keys::CATALOG
            ))
        })?;
        if let Some(s) = &state {
            let path = self.dir.join(&s.file);
            if !s.dirty && s.generation == newest && path.is_file() {
                return Ok(path);
            }
            if s.generation > newest && !s.dirty {
                tracing::warn!(
                    "the catalog cache of {} is of generation {} but the bucket's newest is {newest}: \
                     the bucket wins",
                    self.name,
                    s.generation
                );
            }
        }
        self.download(backend, newest)
    }

    /// Fetch snapshot `generation` into a file of its own and make it current.
    fn download(&self, backend: &dyn Backend, generation: u64) -> Result<PathBuf> {
        let key = keys::catalog_snapshot(generation);
        let packed = backend.get(&key)?.ok_or_else(|| {
            // Removed by a newer publish since the listing: the caller retries.
            Error::missing("catalog snapshot", key.clone())
        })?;
        let db = zstd::decode_all(packed.as_slice())
            .map_err(|e| Error::corrupt(format!("object {key}"), format!("not zstd: {e}")))?;
        if !db.starts_with(b"SQLite format 3\0") {
            return Err(Error::corrupt(
                format!("object {key}"),
                "not an SQLite database",
            ));
        }
        let mut file = format!("catalog-{generation:020}.db");
        // A dead writer's copy of this generation holds changes that were
        // never published: the fresh copy takes another name.
        if self
            .read_state()?
            .is_some_and(|s| s.dirty || s.generation != generation)
            && self.dir.join(&file).exists()
        {
            file = format!(
                "catalog-{generation:020}-{}-{}.db",
                std::process::id(),
                crate::util::now_us()
            );
        }
        let path = self.dir.join(&file);
        let tmp = self.dir.join(format!("{file}.{}.tmp", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(&db).and_then(|_| f.sync_all()).at(&tmp)?;
        // A file another process already made (and may have open) is kept.
        for suffix in ["-wal", "-shm"] {
            let side = self.dir.join(format!("{file}{suffix}"));
            if !path.exists() && side.exists() {
                let _ = fs::remove_file(&side);
            }
        }
        match fs::hard_link(&tmp, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        let _ = fs::remove_file(&tmp);
        self.write_state(&State {
            generation,
            file,
            dirty: false,
        })?;
        self.remove_old(generation);
        Ok(path)
    }

    /// Remove working copies two or more generations old.
    fn remove_old(&self, generation: u64) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(g) = name
                .strip_prefix("catalog-")
                .and_then(|r| r.get(..20))
                .and_then(|d| d.parse::<u64>().ok())
            else {
                continue;
            };
            if g + 2 <= generation {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Become the writer: bring the copy up to date, hold the writer lock,
    /// and mark the copy dirty. Called with the repository lock held.
    pub fn begin_write(&self, backend: &dyn Backend) -> Result<()> {
        let f = self.open_writer_lock()?;
        // Another process of this host may still be finishing with the copy
        // (it let the repository lock go a moment ago).
        flock(&f, FlockOperation::LockExclusive)
            .map_err(|e| Error::io(self.dir.join("writer.lock"), e.into()))?;
        let state = self.read_state()?;
        // A dirty copy here is a dead writer's: the bucket's is the truth.
        if let Some(s) = state.as_ref().filter(|s| s.dirty) {
            tracing::warn!(
                "discarding the unpublished catalog changes of an interrupted command in {}",
                self.dir.join(&s.file).display()
            );
            let _ = fs::remove_file(self.state_path());
        }
        let mut s = match self.newest(backend)? {
            Some(_) => {
                self.current(backend)?;
                self.read_state()?
                    .ok_or_else(|| Error::internal("catalog cache without a state"))?
            }
            // No snapshot at all: only `repair --rebuild-catalog` can
            // make one, in a new file.
            None => State {
                generation: 0,
                file: format!("catalog-{:020}-{}.db", 0, std::process::id()),
                dirty: true,
            },
        };
        s.dirty = true;
        self.write_state(&s)?;
        if let Ok(mut w) = self.writer.lock() {
            *w = Some(f);
        }
        Ok(())
    }

    /// Publish the working copy as the next generation and stop being the
    /// writer. Without the writer role, nothing happens.
    pub fn publish(&self, backend: &dyn Backend) -> Result<()> {
        if !self.holds_writer() {
            return Ok(());
        }
        let s = self
            .read_state()?
            .ok_or_else(|| Error::internal("catalog cache without a state"))?;
        let path = self.dir.join(&s.file);
        let snap = self.dir.join(format!("publish-{}.db", std::process::id()));
        let _ = fs::remove_file(&snap);
        {
            let conn = rusqlite::Connection::open(&path).map_err(|e| {
                Error::corrupt(format!("catalog {}", path.display()), e.to_string())
            })?;
            conn.execute("VACUUM INTO ?1", [snap.to_string_lossy().as_ref()])
                .map_err(|e| {
                    Error::corrupt(
                        format!("catalog {}", path.display()),
                        format!("cannot snapshot it: {e}"),
                    )
                })?;
        }
        let db = fs::read(&snap).at(&snap)?;
        let _ = fs::remove_file(&snap);
        let packed = zstd::bulk::compress(&db, ZSTD_LEVEL)
            .map_err(|e| Error::internal(format!("zstd: {e}")))?;
        let next = s.generation + 1;
        let key = keys::catalog_snapshot(next);
        if !backend.put_new(&key, &packed)? {
            return Err(Error::refused(format!(
                "catalog generation {next} of {} was published by another process while this one \
                 held the repository lock (was the lock taken over?): this command's catalog \
                 changes are not published",
                self.name
            )));
        }
        self.write_state(&State {
            generation: next,
            file: s.file,
            dirty: false,
        })?;
        if let Ok(mut w) = self.writer.lock() {
            *w = None;
        }
        for (k, _) in backend.list(keys::CATALOG)? {
            if keys::parse_catalog_snapshot(&k).is_some_and(|g| g + KEEP_SNAPSHOTS < next) {
                backend.delete(&k)?;
            }
        }
        Ok(())
    }

    /// Create generation 1 from a new, empty catalog at `init`.
    pub fn publish_first(&self, backend: &dyn Backend, made: &Path) -> Result<()> {
        let file = made
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::internal("catalog file without a name"))?;
        self.write_state(&State {
            generation: 0,
            file,
            dirty: true,
        })?;
        let f = self.open_writer_lock()?;
        if let Ok(mut w) = self.writer.lock() {
            *w = Some(f);
        }
        self.publish(backend)
    }

    /// Where `init` makes the first catalog.
    pub fn first_file(&self) -> PathBuf {
        self.dir.join(format!("catalog-{:020}.db", 0))
    }

    /// Stop being the writer without publishing (the command failed): the
    /// copy stays dirty and the next command fetches the bucket's.
    pub fn abandon(&self) {
        if let Ok(mut w) = self.writer.lock() {
            *w = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::store::{LocalBackend, Ownership};

    fn setup() -> (tempfile::TempDir, LocalBackend) {
        let d = tempfile::tempdir().unwrap();
        let bucket = d.path().join("bucket");
        fs::create_dir(&bucket).unwrap();
        let own = Ownership {
            file_mode: 0o600,
            dir_mode: 0o700,
            chown_to: None,
        };
        (d, LocalBackend::new(bucket, own))
    }

    fn clusters(path: &Path) -> usize {
        Catalog::open(path, false)
            .unwrap()
            .clusters()
            .unwrap()
            .len()
    }

    #[test]
    fn two_hosts_see_each_others_work_and_dead_writers_are_not_trusted() {
        let (d, bucket) = setup();
        let a = CatalogCache::new(&d.path().join("a"), "s3://b/p").unwrap();
        let e = a.current(&bucket).unwrap_err();
        assert!(e.to_string().contains("repair --rebuild-catalog"), "{e}");
        drop(Catalog::open(&a.first_file(), true).unwrap());
        a.publish_first(&bucket, &a.first_file()).unwrap();
        assert!(bucket.get(&keys::catalog_snapshot(1)).unwrap().is_some());

        // Host B reads what A made, and writes.
        let b = CatalogCache::new(&d.path().join("b"), "s3://b/p").unwrap();
        assert_eq!(clusters(&b.current(&bucket).unwrap()), 0);
        b.begin_write(&bucket).unwrap();
        let p = b.current(&bucket).unwrap();
        Catalog::open(&p, false)
            .unwrap()
            .bind_cluster("main", 42, 150000)
            .unwrap();
        b.publish(&bucket).unwrap();

        // A sees it; its old copy is not trusted.
        assert_eq!(clusters(&a.current(&bucket).unwrap()), 1);

        // A writer that dies before publishing: its change is not seen,
        // even by the next command on its own host.
        a.begin_write(&bucket).unwrap();
        let p = a.current(&bucket).unwrap();
        Catalog::open(&p, false)
            .unwrap()
            .bind_cluster("other", 43, 150000)
            .unwrap();
        a.abandon();
        let a2 = CatalogCache::new(&d.path().join("a"), "s3://b/p").unwrap();
        assert_eq!(clusters(&a2.current(&bucket).unwrap()), 1);

        // Old snapshots are removed, the newest kept.
        for _ in 0..4 {
            b.begin_write(&bucket).unwrap();
            b.publish(&bucket).unwrap();
        }
        let gens: Vec<u64> = bucket
            .list(keys::CATALOG)
            .unwrap()
            .iter()
            .filter_map(|(k, _)| keys::parse_catalog_snapshot(k))
            .collect();
        assert_eq!(gens, vec![4, 5, 6]);
        assert_eq!(clusters(&a2.current(&bucket).unwrap()), 1);
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_naming_it() {
        let (d, bucket) = setup();
        bucket.put(&keys::catalog_snapshot(3), b"garbage").unwrap();
        let a = CatalogCache::new(&d.path().join("a"), "r").unwrap();
        let e = a.current(&bucket).unwrap_err().to_string();
        assert!(e.contains("catalog/00000000000000000003.db.zst"), "{e}");
    }
}
