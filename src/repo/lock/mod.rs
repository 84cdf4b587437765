//! The repository lock that keeps backup and expire from running at once.
//!
//! Local repositories: an exclusive `flock` on `locks/repository.lock`: the
//! kernel drops it when the holder dies, so a killed process never blocks
//! the next run. The file records who holds it (pid, host, command, since
//! when) for the error message of whoever finds it taken.
//!
//! Remote repositories: the object `locks/repository.lock`, created with a
//! conditional write (only if absent) and naming its holder and a lease that
//! a thread of the holder renews. A lock whose lease ran out, or whose holder
//! is a dead process of this host, is taken over (with a warning). WAL
//! archiving never takes the lock.
//!
//! This is the lock alone: commands take it through a write session
//! (`repo::session`), which makes the holder the catalog's writer and
//! decides what is published. Letting the lock go never publishes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

mod readers;
mod remote;

pub(crate) use readers::ReaderGuard;

use super::Repository;
use crate::error::{Error, Hint, IoContext, Result, Setting};

/// A held lock; released when dropped.
pub(super) struct RepoLock {
    held: Held,
}

enum Held {
    Local { file: File },
    Remote(remote::ObjectLock),
}

impl RepoLock {
    /// Take the lock, waiting up to `wait` for the holder to finish.
    pub(super) fn acquire(repo: &Repository, command: &str, wait: Duration) -> Result<Self> {
        let held = if repo.is_remote() {
            Held::Remote(remote::ObjectLock::acquire(
                repo.raw(),
                repo.name(),
                command,
                wait,
            )?)
        } else {
            Held::Local {
                file: acquire_local(repo, command, wait)?,
            }
        };
        Ok(RepoLock { held })
    }

    /// Is the lock still ours? (A remote lock can be lost when its lease
    /// could not be renewed.)
    pub(super) fn check_held(&self) -> Result<()> {
        match &self.held {
            Held::Local { .. } => Ok(()),
            Held::Remote(l) => l.check(),
        }
    }
}

/// A refusal because the lock is taken: when the command did not wait,
/// advise waiting.
fn wait_hint(e: Error, wait: Duration) -> Error {
    if wait.is_zero() {
        e.hint(Hint::give(Setting::LockWait, "SECONDS"))
    } else {
        e
    }
}

/// `locks/NAME` of a local repository, opened (made with the repository's
/// owner and modes when missing).
fn lock_file(repo: &Repository, name: &str) -> Result<File> {
    let dir = repo.root().join("locks");
    let own = repo.ownership();
    if !dir.exists() {
        match std::fs::DirBuilder::new().mode(own.dir_mode).create(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(own.dir_mode))
                    .at(&dir)?;
                own.apply(&dir)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(own.file_mode)
        .open(&path)
        .at(&path)?;
    own.apply(&path)?;
    Ok(file)
}

fn acquire_local(repo: &Repository, command: &str, wait: Duration) -> Result<File> {
    {
        let path = repo.root().join("locks").join("repository.lock");
        let mut file = lock_file(repo, "repository.lock")?;
        let deadline = Instant::now() + wait;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {
                    if Instant::now() >= deadline {
                        let mut holder = String::new();
                        let _ = file.seek(SeekFrom::Start(0));
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        let e = Error::refused(format!(
                            "the repository is locked by another pgstrata ({})",
                            if holder.is_empty() {
                                "unknown holder"
                            } else {
                                holder
                            },
                        ));
                        return Err(wait_hint(e, wait));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::io(&path, e.into())),
            }
        }
        let since = jiff::Timestamp::now();
        let info = format!(
            "pid {}, host {}, command {command}, since {since}",
            std::process::id(),
            crate::util::host_name()
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(info.as_bytes()));
        if let Err(e) = written {
            // Unlocked, not just closed (see util::Flock).
            let _ = flock(&file, FlockOperation::Unlock);
            return Err(Error::io(&path, e));
        }
        Ok(file)
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        match &mut self.held {
            Held::Local { file } => {
                let _ = file.set_len(0);
                let _ = flock(&*file, FlockOperation::Unlock);
            }
            Held::Remote(l) => l.release(),
        }
    }
}
