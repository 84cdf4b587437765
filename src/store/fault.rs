//! Backends for tests. [`FaultBackend`] injects faults for crash tests:
//! after a set number of successful mutating operations (put, put_new,
//! finish, delete), every further one fails as if the process had died at
//! that moment; or ([`FaultBackend::dying_after`]) the next one takes effect
//! and then fails, as if the process had died right after it, before it
//! could act on its success. Reads keep working, except the bodies it is told to break
//! off ([`FaultBackend::break_bodies`]), as a network may. [`HookBackend`] runs something of the
//! test's the first time a prefix is listed (or an object under it read),
//! to put another command's work at a chosen point of this one (an `expire`
//! in the middle of a `verify` or a `restore`).

use std::io::Read;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::store::backend::{Backend, ObjectWriter, Source};

pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    budget: Arc<AtomicI64>,
    /// The operation that exhausts the budget takes effect before failing.
    after: bool,
    /// Bodies still to break off.
    broken: AtomicU32,
}

/// Bytes a broken body gives before the reset.
const BROKEN_AFTER: usize = 100;

/// A body that breaks off after [`BROKEN_AFTER`] bytes.
struct BrokenBody {
    inner: Box<dyn Read + Send>,
    read: usize,
}

impl Read for BrokenBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= BROKEN_AFTER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset (injected)",
            ));
        }
        let room = buf.len().min(BROKEN_AFTER - self.read);
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n;
        Ok(n)
    }
}

impl FaultBackend {
    /// Allow `ops` mutating operations to succeed, then fail every one after.
    pub fn new(inner: Arc<dyn Backend>, ops: i64) -> Self {
        FaultBackend {
            inner,
            budget: Arc::new(AtomicI64::new(ops)),
            after: false,
            broken: AtomicU32::new(0),
        }
    }

    /// Allow `ops` mutating operations to succeed; the next one takes
    /// effect and then fails, and every one after fails.
    pub fn dying_after(inner: Arc<dyn Backend>, ops: i64) -> Self {
        FaultBackend {
            after: true,
            ..FaultBackend::new(inner, ops)
        }
    }

    /// Break off the next `n` object bodies read through `open` after a
    /// few bytes, as a connection reset does.
    pub fn break_bodies(&self, n: u32) {
        self.broken.store(n, Ordering::SeqCst);
    }

    /// Mutating operations still allowed (negative once faults have begun).
    pub fn remaining(&self) -> i64 {
        self.budget.load(Ordering::SeqCst)
    }

    fn fault(what: &str) -> Error {
        Error::io(
            format!("<injected fault: {what}>"),
            std::io::Error::other("injected fault"),
        )
    }

    /// Run mutating operation `op` on `key` within `budget`.
    fn gated<T>(
        budget: &AtomicI64,
        after: bool,
        key: &str,
        op: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match budget.fetch_sub(1, Ordering::SeqCst) {
            left if left > 0 => op(),
            0 if after => op().and_then(|_| Err(Self::fault(key))),
            _ => Err(Self::fault(key)),
        }
    }
}

impl Backend for FaultBackend {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        Self::gated(&self.budget, self.after, key, || self.inner.put(key, data))
    }
    fn put_new_from(&self, key: &str, body: &dyn Source) -> Result<bool> {
        Self::gated(&self.budget, self.after, key, || {
            self.inner.put_new_from(key, body)
        })
    }
    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(FaultWriter {
            inner: self.inner.writer()?,
            budget: self.budget.clone(),
            after: self.after,
        }))
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.get_range(key, offset, len)
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let inner = self.inner.open(key)?;
        let broken = self
            .broken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Ok(match broken {
            true => Box::new(BrokenBody { inner, read: 0 }),
            false => inner,
        })
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.modified(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        Self::gated(&self.budget, self.after, key, || self.inner.delete(key))
    }
}

struct FaultWriter {
    inner: Box<dyn ObjectWriter>,
    budget: Arc<AtomicI64>,
    after: bool,
}

impl ObjectWriter for FaultWriter {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.inner.write_all(buf)
    }
    fn written(&self) -> u64 {
        self.inner.written()
    }
    fn finish(self: Box<Self>, key: &str) -> Result<()> {
        let FaultWriter {
            inner,
            budget,
            after,
        } = *self;
        FaultBackend::gated(&budget, after, key, || inner.finish(key))
    }
}

/// The action a [`HookBackend`] runs once.
type Hook = Box<dyn FnOnce() + Send>;

pub struct HookBackend {
    inner: Arc<dyn Backend>,
    prefix: String,
    on_read: bool,
    hook: Mutex<Option<Hook>>,
}

impl HookBackend {
    /// Run `hook` the first time `prefix` is listed, before listing it.
    pub fn new(
        inner: Arc<dyn Backend>,
        prefix: &str,
        hook: impl FnOnce() + Send + 'static,
    ) -> Self {
        HookBackend {
            inner,
            prefix: prefix.to_string(),
            on_read: false,
            hook: Mutex::new(Some(Box::new(hook))),
        }
    }

    /// Run `hook` the first time an object under `prefix` is read, before
    /// reading it.
    pub fn on_read(
        inner: Arc<dyn Backend>,
        prefix: &str,
        hook: impl FnOnce() + Send + 'static,
    ) -> Self {
        HookBackend {
            on_read: true,
            ..HookBackend::new(inner, prefix, hook)
        }
    }

    fn fire(&self, key: &str, read: bool) {
        let due = match read {
            true => self.on_read && key.starts_with(&self.prefix),
            false => !self.on_read && key == self.prefix,
        };
        if due {
            let hook = self.hook.lock().ok().and_then(|mut h| h.take());
            if let Some(hook) = hook {
                hook();
            }
        }
    }

    /// Whether the hook has run.
    pub fn fired(&self) -> bool {
        self.hook.lock().map(|h| h.is_none()).unwrap_or(true)
    }
}

impl Backend for HookBackend {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.put(key, data)
    }
    fn put_new_from(&self, key: &str, body: &dyn Source) -> Result<bool> {
        self.inner.put_new_from(key, body)
    }
    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        self.inner.writer()
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.fire(key, true);
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.fire(key, true);
        self.inner.get_range(key, offset, len)
    }
    fn get_ranges(&self, key: &str, ranges: &[(u64, usize)]) -> Vec<Result<Vec<u8>>> {
        self.fire(key, true);
        self.inner.get_ranges(key, ranges)
    }
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        self.fire(key, true);
        self.inner.open(key)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.modified(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.fire(prefix, false);
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
}
