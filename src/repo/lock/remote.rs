//! The repository lock as an object with a lease.
//!
//! Taking it is one conditional write of `locks/repository.lock` (only if
//! absent). The holder renews the lease every third of it; a lock not renewed
//! for a lease and a grace period, or held by a dead process of this host, is
//! stale and taken over. Clocks of hosts sharing a repository are assumed to
//! agree within the grace period. A renewal that finds another holder's
//! record marks the lock lost, and a lost lock publishes nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::keys;
use crate::store::Backend;
use crate::util;

/// How long a lock stays valid unrenewed.
pub(super) const LEASE: Duration = Duration::from_secs(60);
/// Allowance for clocks that disagree and renewals that are late.
pub(super) const GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Holder {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    /// Unix seconds.
    pub since: i64,
    pub renewed: i64,
    pub lease_seconds: u64,
}

impl Holder {
    fn describe(&self) -> String {
        format!(
            "pid {}, host {}, command {}, since {}, lease renewed {}",
            self.pid,
            self.host,
            self.command,
            util::rfc3339(self.since * 1_000_000),
            util::rfc3339(self.renewed * 1_000_000)
        )
    }

    pub(super) fn stale(&self, now: i64) -> bool {
        let limit = self.lease_seconds.min(3600) as i64 + GRACE.as_secs() as i64;
        now > self.renewed + limit || util::holder_gone(Some(&self.host), Some(self.pid))
    }
}

pub(super) fn now() -> i64 {
    util::now_us() / 1_000_000
}

fn encode(h: &Holder) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(h).map_err(|e| Error::internal(e.to_string()))
}

fn read(store: &dyn Backend) -> Result<Option<std::result::Result<Holder, String>>> {
    Ok(store
        .get(keys::LOCK)?
        .map(|b| serde_json::from_slice::<Holder>(&b).map_err(|e| e.to_string())))
}

/// Who holds the lock, if anyone (an unreadable record counts as nobody).
pub(super) fn holder(store: &dyn Backend) -> Result<Option<Holder>> {
    Ok(read(store)?.and_then(|h| h.ok()))
}

pub(super) struct ObjectLock {
    store: Arc<dyn Backend>,
    id: String,
    lost: Arc<AtomicBool>,
    stop: Option<Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl ObjectLock {
    pub(super) fn acquire(
        store: Arc<dyn Backend>,
        name: &str,
        command: &str,
        wait: Duration,
    ) -> Result<Self> {
        Self::acquire_with_lease(store, name, command, wait, LEASE)
    }

    pub(super) fn acquire_with_lease(
        store: Arc<dyn Backend>,
        name: &str,
        command: &str,
        wait: Duration,
        lease: Duration,
    ) -> Result<Self> {
        let mut r = [0u8; 12];
        crate::format::crypt::random(&mut r)?;
        let t = now();
        let mut me = Holder {
            id: crate::format::chunk::hex(&r),
            host: util::host_name(),
            pid: std::process::id(),
            command: command.to_string(),
            since: t,
            renewed: t,
            lease_seconds: lease.as_secs().max(1),
        };
        let deadline = Instant::now() + wait;
        loop {
            me.renewed = now();
            if store.put_new(keys::LOCK, &encode(&me)?)? {
                break;
            }
            match read(store.as_ref())? {
                // Let go between our write and our read: try again.
                None => continue,
                Some(Ok(h)) if h.stale(now()) => {
                    tracing::warn!(
                        "taking over the stale lock of {name} ({}): its holder stopped renewing it",
                        h.describe()
                    );
                    store.delete(keys::LOCK)?;
                    continue;
                }
                Some(Err(why)) => {
                    let old = store
                        .modified(keys::LOCK)?
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > LEASE + GRACE);
                    if old {
                        tracing::warn!("taking over the unreadable, old lock of {name} ({why})");
                        store.delete(keys::LOCK)?;
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::refused(format!(
                            "the repository {name} is locked ({} is unreadable: {why})",
                            keys::LOCK
                        )));
                    }
                }
                Some(Ok(h)) => {
                    if Instant::now() >= deadline {
                        return Err(super::wait_hint(
                            Error::refused(format!(
                                "the repository {name} is locked by another pgstrata ({})",
                                h.describe(),
                            )),
                            wait,
                        ));
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(500)));
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel::<()>();
        let (s, l, holder) = (store.clone(), lost.clone(), me.clone());
        let every = lease / 3;
        let renewer = std::thread::Builder::new()
            .name("lock-lease".into())
            .spawn(move || {
                let mut h = holder;
                let mut last_ok = Instant::now();
                loop {
                    match rx.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    match renew(s.as_ref(), &mut h) {
                        Ok(true) => last_ok = Instant::now(),
                        Ok(false) => {
                            tracing::error!("the repository lock was taken by another process");
                            l.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("cannot renew the repository lock: {e}");
                            if last_ok.elapsed() > lease {
                                l.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                }
            })
            .map_err(|e| Error::internal(format!("cannot start the lock renewer: {e}")))?;
        Ok(ObjectLock {
            store,
            id: me.id,
            lost,
            stop: Some(tx),
            renewer: Some(renewer),
        })
    }

    /// An error when the lease was lost (taken over, or not renewed in time).
    pub(super) fn check(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::refused(
                "the repository lock was lost while this command ran (its lease could not be \
                 renewed, or another process took it over): nothing more is published",
            ));
        }
        Ok(())
    }

    /// Stop renewing, and remove the lock object if it is still ours.
    pub(super) fn release(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        if let Ok(Some(Ok(h))) = read(self.store.as_ref()) {
            if h.id == self.id {
                if let Err(e) = self.store.delete(keys::LOCK) {
                    tracing::warn!("cannot remove the repository lock: {e}");
                }
            }
        }
    }
}

/// Extend the lease if the lock is still ours; `false` when it is not.
fn renew(store: &dyn Backend, me: &mut Holder) -> Result<bool> {
    match read(store)? {
        Some(Ok(h)) if h.id == me.id => {
            me.renewed = now();
            store.put(keys::LOCK, &encode(me)?)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalBackend, Ownership};

    fn store() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let d = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(d.path(), Ownership::private());
        (d, Arc::new(b))
    }

    #[test]
    fn exclusive_renewed_released_and_stale_taken_over() {
        let (_d, s) = store();
        let short = Duration::from_millis(300);
        let mut a = ObjectLock::acquire_with_lease(s.clone(), "r", "backup", Duration::ZERO, short)
            .unwrap();
        let e = ObjectLock::acquire(s.clone(), "r", "expire", Duration::ZERO)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("command backup")
                && matches!(
                    &e,
                    Error::Hinted {
                        hint: crate::error::Hint::Give {
                            setting: crate::error::Setting::LockWait,
                            ..
                        },
                        ..
                    }
                ),
            "{e}"
        );
        // Renewed while held.
        let first = read(s.as_ref()).unwrap().unwrap().unwrap().renewed;
        let until = Instant::now() + Duration::from_secs(30);
        while read(s.as_ref()).unwrap().unwrap().unwrap().renewed == first {
            assert!(Instant::now() < until, "never renewed");
            std::thread::sleep(Duration::from_millis(100));
        }
        a.check().unwrap();
        a.release();
        assert!(s.get(keys::LOCK).unwrap().is_none());

        // A dead host's lock, not renewed for long: taken over.
        let dead = Holder {
            id: "x".into(),
            host: "gone-host".into(),
            pid: 1,
            command: "backup".into(),
            since: now() - 7200,
            renewed: now() - 3600,
            lease_seconds: 60,
        };
        s.put(keys::LOCK, &encode(&dead).unwrap()).unwrap();
        let b = ObjectLock::acquire(s.clone(), "r", "expire", Duration::ZERO).unwrap();
        let h = read(s.as_ref()).unwrap().unwrap().unwrap();
        assert_eq!(h.command, "expire");
        // Another process's record in its place: the lock is lost.
        let mut other = h.clone();
        other.id = "other".into();
        s.put(keys::LOCK, &encode(&other).unwrap()).unwrap();
        let mut me = h;
        assert!(!renew(s.as_ref(), &mut me).unwrap());
        drop(b);
        // Not ours: left alone.
        assert!(s.get(keys::LOCK).unwrap().is_some());
    }
}
