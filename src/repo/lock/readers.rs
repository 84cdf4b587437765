//! Readers of packs: `restore` and `verify` register, so that an `expire`
//! beside them does not delete the packs it replaced under them.
//!
//! A reader takes a shared `flock` on `locks/readers.lock` before it reads
//! the catalog, and keeps it to the end. Expire deletes a pack only after
//! the catalog no longer names it (committed), and only while it holds an
//! exclusive `flock` on that file, taken without waiting. So a reader that
//! registered first keeps every pack it may have read about (expire leaves
//! them, as orphans, for a later run), and one that comes during a deletion
//! waits for it to end and then reads a catalog without those packs.
//!
//! Local repositories only: in object storage an expire publishes its
//! catalog when it ends, and a reader elsewhere reads the previous one until
//! then (operations.md, section 8). Registration is best effort: a reader
//! that cannot open the file (a repository it may only read) goes on.

use std::fs::File;

use rustix::fs::{flock, FlockOperation};

use super::lock_file;
use crate::error::{Error, Result};
use crate::repo::Repository;

const FILE: &str = "readers.lock";

/// A registered reader; unregistered when dropped (or when the process dies).
pub struct ReaderGuard(#[allow(dead_code)] Option<File>);

impl Repository {
    /// Register as a reader of packs until the guard is dropped. Waits while
    /// an expire deletes packs (seconds).
    pub fn register_reader(&self) -> ReaderGuard {
        if self.is_remote() {
            return ReaderGuard(None);
        }
        // A user who may only read the repository can still lock the file
        // (a lock needs no write access), once it exists.
        let path = self.root().join("locks").join(FILE);
        let file = match lock_file(self, FILE).or_else(|e| File::open(&path).map_err(|_| e)) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("not registered as a reader: {e}");
                return ReaderGuard(None);
            }
        };
        if flock(&file, FlockOperation::NonBlockingLockShared).is_err() {
            tracing::info!("waiting for an expire to finish deleting packs");
            if let Err(e) = flock(&file, FlockOperation::LockShared) {
                tracing::warn!("not registered as a reader: {e}");
                return ReaderGuard(None);
            }
        }
        ReaderGuard(Some(file))
    }

    /// Delete packs the catalog no longer names, unless a reader is
    /// registered: then nothing is deleted and `false` returned.
    pub(crate) fn delete_packs_unless_read(&self, keys: &[String]) -> Result<bool> {
        if keys.is_empty() {
            return Ok(true);
        }
        if self.is_remote() {
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
