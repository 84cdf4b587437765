//! The repository lock that keeps backup and expire from running at once.
//!
//! An exclusive `flock` on `locks/<name>.lock`: the kernel drops it when the
//! holder dies, so a killed process never blocks the next run. The file
//! records who holds it (pid, host, command, since when) for the error
//! message of whoever finds it taken. WAL archiving never takes it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};

use super::Repository;
use crate::error::{Error, IoContext, Result};

/// A held lock; released when dropped.
pub struct RepoLock {
    file: File,
    path: PathBuf,
}

impl RepoLock {
    /// Take the lock, waiting up to `wait` for the holder to finish.
    pub fn acquire(repo: &Repository, command: &str, wait: Duration) -> Result<Self> {
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
        let path = dir.join("repository.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(own.file_mode)
            .open(&path)
            .at(&path)?;
        own.apply(&path)?;
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
                        return Err(Error::refused(format!(
                            "the repository is locked by another pgstrata ({}){}",
                            if holder.is_empty() {
                                "unknown holder"
                            } else {
                                holder
                            },
                            if wait.is_zero() {
                                "; use --lock-wait SECONDS to wait for it"
                            } else {
                                ""
                            }
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::io(&path, e.into())),
            }
        }
        let since = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let info = format!(
            "pid {}, host {}, command {command}, since {since}",
            std::process::id(),
            crate::util::host_name()
        );
        file.set_len(0).at(&path)?;
        file.seek(SeekFrom::Start(0)).at(&path)?;
        file.write_all(info.as_bytes()).at(&path)?;
        Ok(RepoLock { file, path })
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = flock(&self.file, FlockOperation::Unlock);
        let _ = &self.path;
    }
}
