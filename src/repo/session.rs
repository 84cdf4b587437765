//! Write sessions: the one way a command changes a repository.
//!
//! [`Repository::begin_write`] takes the repository lock and makes this
//! process the catalog's writer; the command changes the catalog (and
//! stores objects) through the repository as usual, then ends the session:
//!
//! - [`WriteSession::commit`] publishes the catalog's changes (object
//!   storage: the working copy becomes the bucket's next generation, see
//!   `replica`) and lets the lock go;
//! - [`WriteSession::checkpoint`] publishes the changes so far and stays
//!   the writer, for a command that must not delete objects before the
//!   published catalog stops naming them;
//! - a session dropped without `commit` (an error, an early return, a
//!   panic) abandons: nothing more is published, never half a command's
//!   changes; the working copy stays dirty, so no command trusts it and the
//!   next one starts from the bucket; and the lock goes.
//!
//! Letting the lock go never publishes, and a lock found lost (its lease
//! not renewed, or taken over) publishes nothing. In a local repository the
//! catalog file is the truth the moment a transaction commits (see
//! `catalog`'s durability rules): there, committing and abandoning only
//! let the lock go.

use std::time::Duration;

use super::lock::RepoLock;
use super::Repository;
use crate::error::Result;

/// The repository lock, held with the catalog's writer role; dropping it
/// without [`WriteSession::commit`] abandons (see the module's rules).
pub struct WriteSession<'r> {
    repo: &'r Repository,
    lock: RepoLock,
    /// Neither committed nor abandoned yet.
    open: bool,
}

impl Repository {
    /// Take the repository lock for `command`, waiting up to `wait` for
    /// its holder, and become the catalog's writer (object storage: the
    /// working copy is brought up to the bucket's newest generation).
    pub fn begin_write(&self, command: &str, wait: Duration) -> Result<WriteSession<'_>> {
        // Dropped on error, which lets the lock go.
        let lock = RepoLock::acquire(self, command, wait)?;
        self.begin_catalog_write()?;
        Ok(WriteSession {
            repo: self,
            lock,
            open: true,
        })
    }

    /// Become the catalog's writer (with the repository lock held).
    fn begin_catalog_write(&self) -> Result<()> {
        match &self.cache {
            None => Ok(()),
            Some(c) => self.fetching(|| c.begin_write(self.backend())),
        }
    }
}

impl WriteSession<'_> {
    /// Publish the catalog's changes (object storage) and let the lock go.
    /// On error nothing is published: the session is abandoned.
    pub fn commit(mut self) -> Result<()> {
        self.open = false;
        let published = self.publish();
        if published.is_err() {
            self.abandon();
        }
        published
    }

    /// Publish the catalog's changes so far (object storage) and stay its
    /// writer. An error ends the command: the copy must not take more
    /// changes while not being the writer.
    pub fn checkpoint(&self) -> Result<()> {
        if !self.repo.is_remote() {
            return Ok(());
        }
        self.publish()?;
        self.repo.begin_catalog_write()
    }

    /// Publish the working copy, if the lock is still ours.
    fn publish(&self) -> Result<()> {
        self.lock.check_held()?;
        match &self.repo.cache {
            None => Ok(()),
            Some(c) => c.publish(self.repo.backend()),
        }
    }

    /// Give up the writer role without publishing.
    fn abandon(&self) {
        if let Some(c) = &self.repo.cache {
            c.abandon();
        }
    }
}

impl Drop for WriteSession<'_> {
    fn drop(&mut self) {
        if self.open {
            if self.repo.is_remote() {
                tracing::debug!(
                    "the catalog changes of {} are not published: the command did not finish",
                    self.repo.name()
                );
            }
            self.abandon();
        }
        // The lock goes after this, with `self.lock`.
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::format::keys;
    use crate::repo::{Location, Repository};
    use crate::store::{LocalBackend, Ownership};

    /// Host `cache` of a repository in the bucket `dir/bucket`.
    fn host(dir: &Path, cache: &str) -> Repository {
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

    fn generations(r: &Repository) -> Vec<u64> {
        let mut g: Vec<u64> = r
            .backend()
            .list(keys::CATALOG)
            .unwrap()
            .iter()
            .filter_map(|(k, _)| keys::parse_catalog_snapshot(k))
            .collect();
        g.sort();
        g
    }

    fn clusters(r: &Repository) -> Vec<String> {
        let mut names: Vec<String> = r
            .catalog()
            .unwrap()
            .clusters()
            .list()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_committed_session_publishes_its_changes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (host(d.path(), "a"), host(d.path(), "b"));
        let before = generations(&a);
        let session = a.begin_write("backup", Duration::ZERO).unwrap();
        a.catalog()
            .unwrap()
            .clusters()
            .bind("main", 42, 150000)
            .unwrap();
        // Not before the commit...
        assert_eq!(generations(&a), before);
        assert!(clusters(&b).is_empty());
        session.commit().unwrap();
        // ...and after it, as one new generation, with the lock gone.
        let after = generations(&a);
        assert_eq!(after.last(), Some(&(before.last().unwrap() + 1)));
        assert_eq!(clusters(&b), ["main"]);
        b.begin_write("expire", Duration::ZERO)
            .unwrap()
            .commit()
            .unwrap();
    }

    #[test]
    fn a_session_dropped_without_commit_publishes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (host(d.path(), "a"), host(d.path(), "b"));
        let before = generations(&a);
        {
            let session = a.begin_write("backup", Duration::ZERO).unwrap();
            a.catalog()
                .unwrap()
                .clusters()
                .bind("half-done", 42, 150000)
                .unwrap();
            // A checkpoint publishes what there is so far.
            session.checkpoint().unwrap();
            a.catalog()
                .unwrap()
                .clusters()
                .bind("never-published", 43, 150000)
                .unwrap();
            // An error in the command: the session goes uncommitted.
        }
        assert_eq!(generations(&a).last(), Some(&(before.last().unwrap() + 1)));
        // The lock went with it; no host sees the change after the
        // checkpoint, this one included (its dirty copy is not trusted).
        assert_eq!(clusters(&b), ["half-done"]);
        assert_eq!(clusters(&a), ["half-done"]);
        // The next writer of this host starts from the bucket, and what it
        // publishes fits every other host's copy.
        let session = a.begin_write("backup", Duration::ZERO).unwrap();
        assert_eq!(clusters(&a), ["half-done"]);
        a.catalog()
            .unwrap()
            .clusters()
            .bind("next", 44, 150000)
            .unwrap();
        session.commit().unwrap();
        assert_eq!(clusters(&b), ["half-done", "next"]);
        let c = host(d.path(), "c");
        assert_eq!(clusters(&c), ["half-done", "next"]);
    }

    #[test]
    fn in_a_local_repository_a_session_is_the_lock() {
        let d = tempfile::tempdir().unwrap();
        Repository::init(d.path(), false, None).unwrap();
        let r = Repository::open(d.path()).unwrap();
        let session = r.begin_write("backup", Duration::ZERO).unwrap();
        let e = r
            .begin_write("expire", Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("locked by another pgstrata"), "{e}");
        // The catalog file is the truth as soon as a transaction commits.
        r.catalog()
            .unwrap()
            .clusters()
            .bind("main", 42, 150000)
            .unwrap();
        drop(session);
        assert_eq!(clusters(&r), ["main"]);
        r.begin_write("expire", Duration::ZERO)
            .unwrap()
            .commit()
            .unwrap();
    }
}
