//! Catalog objects fetched from the bucket into files of the cache
//! directory, as stored (zstd), so that a reader never holds a chain of
//! deltas or a full snapshot in memory; and full snapshots staged there to
//! be uploaded from the file. A file goes when its [`Fetched`] or
//! [`Staged`] is dropped; those of a killed process are removed an hour
//! later (`CatalogCache::remove_old`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::catalog_delta::{self, Chain, HEADER_LEN, MAGIC, SQLITE_MAGIC};
use crate::store::backend::{FileSource, Source};
use crate::store::Backend;

/// How the files of objects being fetched start.
pub(super) const FETCH_PREFIX: &str = "fetch-";
/// How the files of full snapshots being published start.
pub(super) const PUBLISH_PREFIX: &str = "publish-";

/// What a catalog object holds, by its first bytes.
pub(super) enum Sniffed {
    Full,
    /// A delta, and where it sits in its chain.
    Delta(Chain),
}

/// A catalog object fetched into a file of the cache directory, as stored
/// (zstd); the file goes when this is dropped. It is read through the
/// handle it was written with, so a cleaner that removes the name
/// meanwhile takes nothing from under it.
pub(super) struct Fetched {
    file: File,
    path: Removed,
    what: String,
}

/// Attempts at a download whose body breaks off (each starts the object
/// again); the request itself is retried by the backend.
pub(super) const ATTEMPTS: u32 = 3;

impl Fetched {
    /// Fetch the object `key` into a file of the cache directory, as
    /// stored; returns it with its size and BLAKE3.
    pub(super) fn fetch(
        dir: &Path,
        backend: &dyn Backend,
        key: &str,
    ) -> Result<(Fetched, u64, [u8; 32])> {
        let what = format!("object {key}");
        let path = dir.join(format!(
            "{FETCH_PREFIX}{}-{}-{}.tmp",
            key.replace('/', "_"),
            std::process::id(),
            crate::util::now_us()
        ));
        let (file, path) = create(path)?;
        let object = Fetched { file, path, what };
        let mut attempt = 1;
        loop {
            match object.download(backend, key) {
                // The object's body, not the local file.
                Err(Error::Io { source, path }) if attempt < ATTEMPTS && path == Path::new(key) => {
                    tracing::warn!("{key}: the download broke off ({source}): again");
                    attempt += 1;
                }
                r => return r.map(|(bytes, hash)| (object, bytes, hash)),
            }
        }
    }

    /// One download into the file, from its start.
    fn download(&self, backend: &dyn Backend, key: &str) -> Result<(u64, [u8; 32])> {
        let mut out = &self.file;
        out.set_len(0).at(&self.path.0)?;
        out.seek(SeekFrom::Start(0)).at(&self.path.0)?;
        let mut from = backend.open(key)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut bytes = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A sealed object that does not open (crypt) is damage.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(Error::corrupt(&self.what, e.to_string()))
                }
                Err(e) => return Err(Error::io(key, e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).at(&self.path.0)?;
            bytes += n as u64;
        }
        Ok((bytes, *hasher.finalize().as_bytes()))
    }

    pub(super) fn what(&self) -> &str {
        &self.what
    }

    pub(super) fn decoder(&self) -> Result<zstd::Decoder<'static, std::io::BufReader<File>>> {
        let mut f = self.file.try_clone().at(&self.path.0)?;
        f.seek(SeekFrom::Start(0)).at(&self.path.0)?;
        zstd::Decoder::new(f).map_err(|e| Error::corrupt(&self.what, format!("not zstd: {e}")))
    }

    /// The object decoded whole (a delta: its rows stay encoded).
    pub(super) fn decoded(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.decoder()?
            .read_to_end(&mut out)
            .map_err(|e| Error::corrupt(&self.what, format!("not zstd: {e}")))?;
        Ok(out)
    }

    pub(super) fn sniff(&self) -> Result<Sniffed> {
        let mut head = Vec::with_capacity(HEADER_LEN);
        self.decoder()?
            .take(HEADER_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::corrupt(&self.what, format!("not zstd: {e}")))?;
        if head.starts_with(SQLITE_MAGIC) {
            return Ok(Sniffed::Full);
        }
        if head.len() >= 8 && head[..7] == MAGIC[..7] {
            return catalog_delta::header(&head, &self.what).map(|(c, _)| Sniffed::Delta(c));
        }
        Err(Error::corrupt(
            &self.what,
            "neither an SQLite database nor a catalog delta",
        ))
    }
}

/// A file of the cache directory, removed when this goes.
pub(super) struct Removed(pub(super) PathBuf);

/// A new file of the cache directory, owner-only, removed when the
/// returned guard goes.
fn create(path: PathBuf) -> Result<(File, Removed)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .at(&path)?;
    Ok((file, Removed(path)))
}

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A full snapshot compressed into a file of the cache directory, to be
/// uploaded from there: only a buffer of it is ever in memory.
pub(super) struct Staged {
    source: FileSource,
    _file: Removed,
}

/// Hashes what it passes on, and remembers whether passing it on failed
/// (to name the file that failed).
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    failed: bool,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf).inspect_err(|_| self.failed = true)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

impl Staged {
    /// Compress the file `from` (zstd at `level`) into a new file `path`;
    /// returns it with its BLAKE3.
    pub(super) fn compress(from: &Path, path: PathBuf, level: i32) -> Result<(Staged, [u8; 32])> {
        let _ = fs::remove_file(&path);
        let (file, removed) = create(path)?;
        let mut out = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, &file),
            hasher: blake3::Hasher::new(),
            failed: false,
        };
        let r = File::open(from)
            .and_then(|f| zstd::stream::copy_encode(f, &mut out, level))
            .and_then(|()| out.flush());
        match out.failed {
            true => r.at(&removed.0)?,
            false => r.at(from)?,
        }
        let hash = *out.hasher.finalize().as_bytes();
        drop(out);
        let source = FileSource::new(file, &removed.0)?;
        Ok((
            Staged {
                source,
                _file: removed,
            },
            hash,
        ))
    }
}

impl Source for Staged {
    fn len(&self) -> u64 {
        self.source.len()
    }
    fn reader(&self) -> Result<Box<dyn Read + Send + '_>> {
        self.source.reader()
    }
}
