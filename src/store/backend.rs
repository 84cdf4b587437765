//! The storage seam: named objects in a repository.
//!
//! Durability rule: when `put` or `ObjectWriter::finish` returns, the object is
//! complete, fsynced and visible under its name, and its directory entry is
//! fsynced too. Until then, readers never see a partial object: writers fill
//! a temporary file and rename it into place.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};

/// A named-object store. Keys are relative `/`-separated paths.
pub trait Backend: Send + Sync {
    /// Store `data` under `key`, atomically and durably, replacing any object.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Store `data` under `key` only if no object has that name; `false` if one does.
    fn put_new(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.put_new_from(key, &data)
    }
    /// [`Self::put_new`] of a body read as it is sent (a file, say), so
    /// that a large object is never whole in memory.
    fn put_new_from(&self, key: &str, body: &dyn Source) -> Result<bool>;
    /// Stream a new object; it gets its name (and becomes visible) at `finish`.
    fn writer(&self) -> Result<Box<dyn ObjectWriter>>;
    /// The whole object, or `None` when there is none of that name.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// `len` bytes at `offset`; a short object is an error naming the key, a
    /// missing one [`Error::MissingObject`].
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// [`Self::get_range`] into `out`, its old contents replaced, so that a
    /// reader of many records reuses one buffer.
    fn get_range_into(&self, key: &str, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let data = self.get_range(key, offset, len)?;
        out.clear();
        out.extend_from_slice(&data);
        Ok(())
    }
    /// Several ranges of one object, each as [`Self::get_range`] returns it,
    /// in the order asked. A backend may serve them from one opened object
    /// (a local file is opened once, not once per range).
    fn get_ranges(&self, key: &str, ranges: &[(u64, usize)]) -> Vec<Result<Vec<u8>>> {
        ranges
            .iter()
            .map(|&(offset, len)| self.get_range(key, offset, len))
            .collect()
    }
    /// A sequential reader over the whole object ([`Error::MissingObject`]
    /// when there is none).
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>>;
    /// The object's size, or `None` when there is none of that name.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    /// When the object was stored, or `None` when there is none of that name.
    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>>;
    /// All keys below `prefix` (a directory-like prefix ending in `/`, or empty),
    /// with their sizes, in lexical order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    /// Remove an object; removing a missing one is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Remove many objects (missing ones are not an error). A backend may
    /// make the removals durable together rather than one by one: callers
    /// use it only where a removal lost in a crash is found and redone
    /// later (garbage, expired objects).
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        keys.iter().try_for_each(|k| self.delete(k))
    }
    /// Abort uploads started more than `older_than` ago and never finished
    /// (an object store's multipart uploads of a killed process); how many.
    fn collect_abandoned(&self, _older_than: std::time::Duration) -> Result<u64> {
        Ok(0)
    }
    /// Requests sent so far, for a store that bills them.
    fn request_counts(&self) -> Option<RequestCounts> {
        None
    }
}

/// Requests sent to an object store, by kind (retries included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
}

/// A body to store whose length is known and that can be read again from
/// its start, once for each attempt to send it.
pub trait Source: Sync {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn reader(&self) -> Result<Box<dyn Read + Send + '_>>;
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn reader(&self) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(*self))
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        Vec::len(self) as u64
    }
    fn reader(&self) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(self.as_slice()))
    }
}

/// A file as a [`Source`], read through its handle at positions, so
/// readers of it never share an offset.
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    /// The file (at `path`) as it is now: its length is fixed here.
    pub fn new(file: File, path: &Path) -> Result<Self> {
        let len = file.metadata().at(path)?.len();
        Ok(FileSource { file, len })
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn reader(&self) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(ReadAt {
            file: &self.file,
            pos: 0,
            end: self.len,
        }))
    }
}

struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A [`Source`]'s reader held to its length: ending early or going on
/// past it is an error, and the first error is kept, so that an upload
/// that fails can tell a local failure (not worth retrying) from the
/// network's.
pub(crate) struct Exact<'a> {
    inner: Box<dyn Read + Send + 'a>,
    left: u64,
    pub failed: Option<String>,
}

impl<'a> Exact<'a> {
    pub(crate) fn new(body: &'a dyn Source) -> Result<Self> {
        Ok(Exact {
            inner: body.reader()?,
            left: body.len(),
            failed: None,
        })
    }

    /// A consumer that stops at the length (an HTTP body of known length)
    /// never reads on to see a body that is longer: look for it here.
    fn past_the_end(&mut self) -> std::io::Result<()> {
        let mut more = [0u8; 1];
        loop {
            return match self.inner.read(&mut more) {
                Ok(0) => Ok(()),
                Ok(_) => Err(self.fail(std::io::Error::other("it is longer than its length"))),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.fail(e)),
            };
        }
    }

    fn fail(&mut self, e: std::io::Error) -> std::io::Error {
        let msg = format!("reading the body to store: {e}");
        self.failed.get_or_insert(msg.clone());
        std::io::Error::new(e.kind(), msg)
    }
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte more than is left, to see a body that grew.
        let want = buf
            .len()
            .min(usize::try_from(self.left + 1).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) if self.left > 0 => Err(self.fail(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("it ended {} bytes short of its length", self.left),
            ))),
            Ok(n) if n as u64 > self.left => {
                Err(self.fail(std::io::Error::other("it is longer than its length")))
            }
            Ok(n) => {
                self.left -= n as u64;
                if self.left == 0 && n > 0 {
                    self.past_the_end()?;
                }
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// Whether two streams hold the same bytes.
pub(crate) fn same_bytes(a: &mut dyn Read, b: &mut dyn Read) -> std::io::Result<bool> {
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(a, &mut x)?;
        if read_full(b, &mut y[..n.max(1)])? != n || x[..n] != y[..n] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Read until `buf` is full or the stream ends; how many bytes.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A streaming object upload.
pub trait ObjectWriter: Send {
    fn write_all(&mut self, buf: &[u8]) -> Result<()>;
    fn written(&self) -> u64;
    /// Make the object durable and visible under `key`.
    fn finish(self: Box<Self>, key: &str) -> Result<()>;
}

/// An [`ObjectWriter`] as an [`std::io::Write`], for encoders that stream
/// into an object; [`crate::error::Error::from_io`] gets a failure's
/// error back.
pub(crate) struct WriteObject(pub Box<dyn ObjectWriter>);

impl std::io::Write for WriteObject {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Permission and ownership policy for what the repository creates.
#[derive(Clone, Copy, Debug)]
pub struct Ownership {
    pub file_mode: u32,
    pub dir_mode: u32,
    /// When running as root, new files take the repository directory's owner so
    /// that `archive-push` (run by the PostgreSQL server's user) can still write.
    pub chown_to: Option<(u32, u32)>,
}

impl Ownership {
    /// Owner-only modes, no change of owner (a cache directory).
    pub fn private() -> Self {
        Ownership {
            file_mode: 0o600,
            dir_mode: 0o700,
            chown_to: None,
        }
    }

    pub fn for_root(root: &Path, group_readable: bool) -> Result<Self> {
        let meta = fs::metadata(root).at(root)?;
        let euid = rustix::process::geteuid().as_raw();
        let chown_to =
            (euid == 0 && (meta.uid() != 0 || meta.gid() != 0)).then(|| (meta.uid(), meta.gid()));
        Ok(Ownership {
            file_mode: if group_readable { 0o640 } else { 0o600 },
            dir_mode: if group_readable { 0o750 } else { 0o700 },
            chown_to,
        })
    }

    pub fn apply(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.chown_to {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).at(path)?;
        }
        Ok(())
    }
}

/// Objects as files below a local directory.
pub struct LocalBackend {
    root: PathBuf,
    own: Ownership,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn check_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::invalid(format!("invalid object name {key:?}")));
    }
    Ok(())
}

/// Open an object's file; a missing one is the backend's typed not-found.
fn open_existing(path: &Path, key: &str) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::missing("object", key),
        _ => Error::io(path, e),
    })
}

/// `len` bytes of `f` (at `path`) at `offset`; a short file is damage.
fn read_at(f: &File, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    fill_at(f, path, offset, &mut buf)?;
    Ok(buf)
}

/// [`read_at`] into `out`, its old contents replaced.
fn read_at_into(f: &File, path: &Path, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    out.resize(len, 0);
    fill_at(f, path, offset, out)
}

fn fill_at(f: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt(
                path.display().to_string(),
                format!(
                    "truncated: cannot read {} bytes at offset {offset}",
                    buf.len()
                ),
            )
        } else {
            Error::io(path, e)
        }
    })
}

/// fsync a directory so that renames and creations in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>, own: Ownership) -> Self {
        LocalBackend {
            root: root.into(),
            own,
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Create `dir` and any missing parents below the root, durably.
    pub fn ensure_dir(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            if parent != self.root && parent.starts_with(&self.root) {
                self.ensure_dir(parent)?;
            }
        }
        match fs::DirBuilder::new().mode(self.own.dir_mode).create(dir) {
            Ok(()) => {
                // The mode is set explicitly: the creator's umask (the
                // server's is 0077 under archive_command) must not decide it.
                fs::set_permissions(dir, fs::Permissions::from_mode(self.own.dir_mode)).at(dir)?;
                self.own.apply(dir)?;
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(dir, e)),
        }
    }

    fn tmp_file(&self) -> Result<(PathBuf, File)> {
        let dir = self.root.join("tmp");
        self.ensure_dir(&dir)?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("{}-{n}-{nanos}.tmp", std::process::id()));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.own.file_mode)
            .open(&path)
            .at(&path)?;
        f.set_permissions(fs::Permissions::from_mode(self.own.file_mode))
            .at(&path)?;
        self.own.apply(&path)?;
        Ok((path, f))
    }

    /// Rename a finished temporary file into place (or link it, when it must
    /// not replace an existing object) and make that durable.
    fn publish(&self, tmp: &Path, key: &str, replace: bool) -> Result<bool> {
        let dest = self.path(key)?;
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&parent)?;
        let created = if replace {
            fs::rename(tmp, &dest).at(&dest)?;
            true
        } else {
            let r = fs::hard_link(tmp, &dest);
            let _ = fs::remove_file(tmp);
            match r {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(Error::io(&dest, e)),
            }
        };
        sync_dir(&parent)?;
        Ok(created)
    }

    fn write_tmp(&self, data: &mut dyn Read) -> Result<PathBuf> {
        let (path, f) = self.tmp_file()?;
        // Buffered: a streamed body comes in small reads (a slice is still
        // written whole, past the buffer).
        let r = (|| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &f);
            std::io::copy(data, &mut w)?;
            w.flush()?;
            drop(w);
            f.sync_all()
        })();
        if let Err(e) = r {
            let _ = fs::remove_file(&path);
            return Err(Error::io(&path, e));
        }
        Ok(path)
    }
}

impl Backend for LocalBackend {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.path(key)?;
        let tmp = self.write_tmp(&mut { data })?;
        self.publish(&tmp, key, true).map(|_| ())
    }

    fn put_new_from(&self, key: &str, body: &dyn Source) -> Result<bool> {
        self.path(key)?;
        let mut r = Exact::new(body)?;
        // Reads to the end: a body longer than its length is refused.
        let tmp = self.write_tmp(&mut r)?;
        self.publish(&tmp, key, false)
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        let (path, file) = self.tmp_file()?;
        Ok(Box::new(LocalWriter {
            backend: LocalBackend::new(self.root.clone(), self.own),
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
            path,
            written: 0,
            published: false,
        }))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        match fs::read(&path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        read_at(&open_existing(&path, key)?, &path, offset, len)
    }

    fn get_range_into(&self, key: &str, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let path = self.path(key)?;
        read_at_into(&open_existing(&path, key)?, &path, offset, len, out)
    }

    fn get_ranges(&self, key: &str, ranges: &[(u64, usize)]) -> Vec<Result<Vec<u8>>> {
        let opened = self
            .path(key)
            .and_then(|path| open_existing(&path, key).map(|f| (f, path)));
        match opened {
            Ok((f, path)) => ranges
                .iter()
                .map(|&(offset, len)| read_at(&f, &path, offset, len))
                .collect(),
            // Each range gets the error, as `get_range` would have given it.
            Err(_) => ranges
                .iter()
                .map(|&(offset, len)| self.get_range(key, offset, len))
                .collect(),
        }
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let path = self.path(key)?;
        let f = open_existing(&path, key)?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.modified().at(&path)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let base = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix.trim_end_matches('/'))?
        };
        let mut out = Vec::new();
        // An object named like the prefix is not below it.
        if !base.is_dir() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&base).sort_by_file_name() {
            let entry = entry.map_err(|e| {
                let p = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| base.clone());
                Error::io(p, e.into())
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.root)
                .map_err(|_| Error::invalid("object outside the repository"))?;
            let key = rel.to_string_lossy().replace('\\', "/");
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((key, len));
        }
        // The walk orders each directory's names, not whole keys ("a/x"
        // would come before "a-b/y").
        out.sort_unstable();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.delete_many(std::slice::from_ref(&key.to_string()))
    }

    /// Each directory is synced once, after all its removals.
    fn delete_many(&self, keys: &[String]) -> Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for key in keys {
            let path = self.path(key)?;
            match fs::remove_file(&path) {
                Ok(()) => {
                    if let Some(p) = path.parent() {
                        dirs.insert(p.to_path_buf());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        dirs.iter().try_for_each(|d| sync_dir(d))
    }
}

struct LocalWriter {
    backend: LocalBackend,
    file: Option<std::io::BufWriter<File>>,
    path: PathBuf,
    written: u64,
    published: bool,
}

impl ObjectWriter for LocalWriter {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| Error::internal("write after finish"))?;
        f.write_all(buf).at(&self.path)?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn finish(mut self: Box<Self>, key: &str) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::internal("finish called twice"))?;
        let file = file
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().at(&self.path)?;
        drop(file);
        self.backend.publish(&self.path, key, true)?;
        self.published = true;
        Ok(())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // An abandoned upload leaves nothing behind.
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn backend() -> (tempfile::TempDir, LocalBackend) {
        let d = tempfile::tempdir().unwrap();
        let own = Ownership::for_root(d.path(), false).unwrap();
        let b = LocalBackend::new(d.path(), own);
        (d, b)
    }

    #[test]
    fn put_get_list_delete() {
        let (_d, b) = backend();
        b.put("a/b/c.obj", b"hello").unwrap();
        assert_eq!(b.get("a/b/c.obj").unwrap().unwrap(), b"hello");
        assert_eq!(b.get_range("a/b/c.obj", 1, 3).unwrap(), b"ell");
        assert!(b.get_range("a/b/c.obj", 3, 10).is_err());
        assert!(matches!(
            b.get_range("nope", 0, 1),
            Err(Error::MissingObject { .. })
        ));
        assert!(matches!(b.open("nope"), Err(Error::MissingObject { .. })));
        assert!(!b.put_new("a/b/c.obj", b"other").unwrap());
        assert_eq!(b.get("a/b/c.obj").unwrap().unwrap(), b"hello");
        let mut w = b.writer().unwrap();
        w.write_all(b"streamed").unwrap();
        w.finish("x/y.obj").unwrap();
        let keys: Vec<_> = b.list("").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["a/b/c.obj", "x/y.obj"]);
        b.delete("a/b/c.obj").unwrap();
        b.delete("a/b/c.obj").unwrap();
        assert!(b.get("a/b/c.obj").unwrap().is_none());
        assert!(b.put("../evil", b"x").is_err());
        assert!(b.put("/abs", b"x").is_err());
    }

    #[test]
    fn abandoned_writer_leaves_nothing() {
        let (_d, b) = backend();
        let mut w = b.writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert!(b.list("").unwrap().is_empty());
    }

    #[test]
    fn file_sources_stream_and_compare() {
        let (d, b) = backend();
        let path = d.path().join("body");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        let src = FileSource::new(File::open(&path).unwrap(), &path).unwrap();
        assert_eq!(src.len(), data.len() as u64);
        // Each reader starts at the beginning, whatever another one read.
        let mut first = src.reader().unwrap();
        let mut some = [0u8; 1000];
        first.read_exact(&mut some).unwrap();
        assert!(same_bytes(&mut src.reader().unwrap(), &mut data.as_slice()).unwrap());
        assert!(b.put_new_from("o/big", &src).unwrap());
        assert!(!b.put_new_from("o/big", &src).unwrap());
        assert_eq!(b.get("o/big").unwrap().unwrap(), data);
        let mut shorter = &data[..data.len() - 1];
        assert!(!same_bytes(&mut src.reader().unwrap(), &mut shorter).unwrap());
        let mut changed = data.clone();
        changed[150_000] ^= 1;
        assert!(!same_bytes(&mut src.reader().unwrap(), &mut changed.as_slice()).unwrap());
        assert!(!same_bytes(&mut src.reader().unwrap(), &mut &b""[..]).unwrap());
        assert!(same_bytes(&mut &b""[..], &mut &b""[..]).unwrap());
    }

    /// A body whose length is not what it says.
    pub(crate) struct Lying(pub u64, pub Vec<u8>);
    impl Source for Lying {
        fn len(&self) -> u64 {
            self.0
        }
        fn reader(&self) -> Result<Box<dyn Read + Send + '_>> {
            Ok(Box::new(self.1.as_slice()))
        }
    }

    #[test]
    fn a_body_of_another_length_than_promised_stores_nothing() {
        let (_d, b) = backend();
        for (len, data) in [(10, vec![1u8; 5]), (3, vec![1u8; 5])] {
            let e = b.put_new_from("o/x", &Lying(len, data)).unwrap_err();
            assert!(e.to_string().contains("reading the body to store"), "{e}");
            assert!(b.list("o/").unwrap().is_empty());
        }
        assert!(b.put_new_from("o/x", &Lying(5, vec![1u8; 5])).unwrap());
    }
}
