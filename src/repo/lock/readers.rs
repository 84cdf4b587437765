//! Readers of packs: `restore` and `verify` register, so that an `expire`
//! beside them does not delete the packs it replaced under them.
//!
//! A reader registers before it reads the catalog, and stays registered to
//! its end. Expire deletes a pack only once the catalog that no longer
//! names it is visible to readers, and only when no reader is registered;
//! otherwise the pack stays, an orphan that a later expire collects. So a
//! reader registered first keeps every pack it may have read about, and one
//! that registers later reads a catalog without those packs.
//!
//! - Local: a shared `flock` on `locks/readers.lock`. Expire commits, then
//!   takes an exclusive `flock` of that file without waiting and holds it
//!   while it deletes (a reader that comes then waits for the deletion).
//! - Object storage: a lease object `locks/readers/<id>` per reader, written
//!   again every third of [`LEASE`]. Expire publishes its catalog only when
//!   it ends, so it never deletes the packs it replaced in the same run: the
//!   next expire deletes them (as orphans) when no lease was written within
//!   [`LEASE`] + [`GRACE`]. Leases older than an hour (killed readers) go.
//!
//! Registration is best effort: a reader that cannot register (a repository
//! it may only read) goes on, with a warning.

use std::fs::File;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rustix::fs::{flock, FlockOperation};

use super::lock_file;
use super::remote::{GRACE, LEASE};
use crate::error::{Error, Result};
use crate::format::keys;
use crate::repo::Repository;
use crate::store::Backend;
use crate::util::Flock;

const FILE: &str = "readers.lock";
/// A lease older than this is a killed reader's, and is removed.
const ABANDONED: Duration = Duration::from_secs(3600);

/// A registered reader; unregistered when dropped (or when the process dies).
// Never read: what it holds is released when it is dropped.
#[allow(dead_code)]
pub struct ReaderGuard(Option<Held>);

impl std::fmt::Debug for ReaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.0 {
            None => "ReaderGuard(not registered)",
            Some(Held::Local(_)) => "ReaderGuard(flock)",
            Some(Held::Remote(_)) => "ReaderGuard(lease)",
        })
    }
}

#[allow(dead_code)]
enum Held {
    Local(Flock),
    Remote(Lease),
}

struct Lease {
    store: Arc<dyn Backend>,
    key: String,
    stop: Option<Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        if let Err(e) = self.store.delete(&self.key) {
            tracing::debug!("cannot remove the reader lease {}: {e}", self.key);
        }
    }
}

impl Repository {
    /// Register as a reader of packs until the guard is dropped. Waits while
    /// an expire deletes packs (seconds).
    pub fn register_reader(&self) -> ReaderGuard {
        let held = match self.is_remote() {
            true => self.lease().map(Held::Remote),
            false => self.shared_flock().map(|f| Held::Local(Flock::held(f))),
        };
        match held {
            Ok(h) => ReaderGuard(Some(h)),
            Err(e) => {
                tracing::warn!(
                    "not registered as a reader ({e}): an expire running meanwhile may delete \
                     packs this command reads"
                );
                ReaderGuard(None)
            }
        }
    }

    fn shared_flock(&self) -> Result<File> {
        // A user who may only read the repository can still lock the file
        // (a lock needs no write access), once it exists.
        let path = self.root().join("locks").join(FILE);
        let file = lock_file(self, FILE).or_else(|e| File::open(&path).map_err(|_| e))?;
        if flock(&file, FlockOperation::NonBlockingLockShared).is_err() {
            tracing::info!("waiting for an expire to finish deleting packs");
            flock(&file, FlockOperation::LockShared).map_err(|e| Error::io(&path, e.into()))?;
        }
        Ok(file)
    }

    fn lease(&self) -> Result<Lease> {
        let mut r = [0u8; 12];
        crate::format::crypt::random(&mut r)?;
        let key = keys::reader(&crate::format::chunk::hex(&r));
        let body = format!(
            "pid {}, host {}\n",
            std::process::id(),
            crate::util::host_name()
        );
        let store = self.raw();
        store.put(&key, body.as_bytes())?;
        let (tx, rx) = channel::<()>();
        let (s, k, b) = (store.clone(), key.clone(), body);
        let renewer = std::thread::Builder::new()
            .name("reader-lease".into())
            .spawn(move || loop {
                match rx.recv_timeout(LEASE / 3) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                if let Err(e) = s.put(&k, b.as_bytes()) {
                    tracing::warn!("cannot renew the reader lease {k}: {e}");
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the lease renewer: {e}")))?;
        Ok(Lease {
            store,
            key,
            stop: Some(tx),
            renewer: Some(renewer),
        })
    }

    /// Delete packs the catalog no longer names, unless a reader is
    /// registered: then nothing is deleted and `false` returned.
    pub(crate) fn delete_packs_unless_read(&self, keys: &[String]) -> Result<bool> {
        if keys.is_empty() {
            return Ok(true);
        }
        if self.is_remote() {
            match self.leases_held() {
                Ok(0) => {}
                Ok(_) => return Ok(false),
                Err(e) => {
                    tracing::warn!("cannot tell whether a restore or verify is reading: {e}");
                    return Ok(false);
                }
            }
            self.backend().delete_many(keys)?;
            return Ok(true);
        }
        let file = lock_file(self, FILE)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Ok(false),
            Err(e) => {
                return Err(Error::io(self.root().join("locks").join(FILE), e.into()));
            }
        }
        let r = self.backend().delete_many(keys);
        let _ = flock(&file, FlockOperation::Unlock);
        r.map(|()| true)
    }

    /// In object storage, whether an `expire` or `repair` holds the lock
    /// (its catalog is published only when it ends, so a reader elsewhere
    /// cannot see what it removed yet); if so, wait up to `max` for it to
    /// end. Always `false` for a local repository, whose catalog shows
    /// every commit at once.
    pub(crate) fn waited_for_removal(&self, max: Duration) -> Result<bool> {
        if !self.is_remote() {
            return Ok(false);
        }
        let store = self.raw();
        let removing = |h: &super::remote::Holder| {
            matches!(h.command.as_str(), "expire" | "repair") && !h.stale(super::remote::now())
        };
        let Some(holder) = super::remote::holder(store.as_ref())?.filter(removing) else {
            return Ok(false);
        };
        tracing::info!(
            "verify: waiting for the {} running on {} to publish its catalog",
            holder.command,
            holder.host
        );
        let deadline = std::time::Instant::now() + max;
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            match super::remote::holder(store.as_ref())? {
                Some(h) if h.id == holder.id => {}
                _ => break,
            }
        }
        Ok(true)
    }

    /// Readers whose lease is current; abandoned leases are removed. Ages
    /// are taken on the store's clock: against the time the repository
    /// lock, which the caller holds and renews every 20 s, was last written
    /// (so a lease looks younger, never older, than it is).
    fn leases_held(&self) -> Result<usize> {
        let store = self.raw();
        let leases = store.list(keys::READERS)?;
        if leases.is_empty() {
            return Ok(0);
        }
        let now = store.modified(keys::LOCK)?.unwrap_or_else(SystemTime::now);
        let mut held = 0;
        for (key, _) in leases {
            let Some(at) = store.modified(&key)? else {
                continue;
            };
            let age = now.duration_since(at).unwrap_or_default();
            if age < LEASE + GRACE {
                held += 1;
            } else if age > ABANDONED {
                store.delete(&key)?;
            }
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::repo::{Location, Repository};
    use crate::store::{LocalBackend, Ownership};

    fn remote(dir: &std::path::Path, cache: &str) -> Repository {
        let bucket = dir.join("bucket");
        std::fs::create_dir_all(&bucket).unwrap();
        let loc = Location::Remote {
            store: Arc::new(LocalBackend::new(bucket, Ownership::private())),
            name: "s3://bucket/prefix".into(),
            cache_dir: dir.join(cache),
        };
        if Repository::open_at(&loc, None).is_err() {
            Repository::init_at(&loc, false, None).unwrap();
        }
        Repository::open_at(&loc, None).unwrap()
    }

    #[test]
    fn in_object_storage_a_lease_keeps_packs_and_an_expire_is_waited_for() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (remote(d.path(), "cache-a"), remote(d.path(), "cache-b"));
        let key = "packs/ab/ab.pack".to_string();
        a.backend().put(&key, b"x").unwrap();
        let one = std::slice::from_ref(&key);
        // A reader's lease keeps the pack; once it is gone, the pack goes.
        let reader = a.register_reader();
        let session = b.begin_write("expire", Duration::ZERO).unwrap();
        assert!(!b.delete_packs_unless_read(one).unwrap());
        drop(reader);
        assert!(b.delete_packs_unless_read(one).unwrap());
        assert!(a.backend().size(&key).unwrap().is_none());
        // An expire holding the lock is waited for, until it lets it go.
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_secs(3));
                session.commit().unwrap();
            });
            assert!(a.waited_for_removal(Duration::from_secs(30)).unwrap());
        });
        assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(!a.waited_for_removal(Duration::from_secs(30)).unwrap());
        // A backup holding it is not.
        let _backup = b.begin_write("backup", Duration::ZERO).unwrap();
        assert!(!a.waited_for_removal(Duration::from_secs(30)).unwrap());
    }

    #[test]
    fn a_registered_reader_keeps_packs_from_deletion() {
        let d = tempfile::tempdir().unwrap();
        Repository::init(d.path(), false, None).unwrap();
        let repo = Repository::open(d.path()).unwrap();
        let key = "packs/ab/ab.pack".to_string();
        repo.backend().put(&key, b"x").unwrap();
        let reader = repo.register_reader();
        // Another process's expire (flock is per open file, so this one's
        // own attempt is refused the same way).
        assert!(!repo
            .delete_packs_unless_read(std::slice::from_ref(&key))
            .unwrap());
        assert!(repo.backend().size(&key).unwrap().is_some());
        drop(reader);
        assert!(repo
            .delete_packs_unless_read(std::slice::from_ref(&key))
            .unwrap());
        assert!(repo.backend().size(&key).unwrap().is_none());
    }
}
