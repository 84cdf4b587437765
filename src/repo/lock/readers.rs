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
//! it may only read) goes on, with a note in the debug log.

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

const FILE: &str = "readers.lock";
/// A lease older than this is a killed reader's, and is removed.
const ABANDONED: Duration = Duration::from_secs(3600);

/// A registered reader; unregistered when dropped (or when the process dies).
// Never read: what it holds is released when it is dropped.
#[allow(dead_code)]
pub struct ReaderGuard(Option<Held>);

#[allow(dead_code)]
enum Held {
    Local(File),
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
            false => self.shared_flock().map(Held::Local),
        };
        match held {
            Ok(h) => ReaderGuard(Some(h)),
            Err(e) => {
                tracing::debug!("not registered as a reader: {e}");
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
            if self.leases_held()? > 0 {
                return Ok(false);
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

    /// Readers whose lease is current; abandoned leases are removed.
    fn leases_held(&self) -> Result<usize> {
        let store = self.raw();
        let mut held = 0;
        for (key, _) in store.list(keys::READERS)? {
            let Some(at) = store.modified(&key)? else {
                continue;
            };
            let age = SystemTime::now().duration_since(at).unwrap_or_default();
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
    use crate::repo::Repository;

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
