//! Catalog objects fetched from the bucket into files of the cache
//! directory, as stored (zstd), so that a reader never holds a chain of
//! deltas or a full snapshot in memory. A file goes when its [`Fetched`]
//! is dropped; those of a killed process are removed an hour later
//! (`CatalogCache::remove_old`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::catalog_delta::{self, Chain, HEADER_LEN, MAGIC, SQLITE_MAGIC};
use crate::store::Backend;

/// How the files of objects being fetched start.
pub(super) const FETCH_PREFIX: &str = "fetch-";

/// What a catalog object holds, by its first bytes.
pub(super) enum Sniffed {
    Full,
    /// A delta, and where it sits in its chain.
    Delta(Chain),
}

/// A catalog object fetched into a file of the cache directory, as stored
/// (zstd); the file goes when this is dropped.
pub(super) struct Fetched {
    path: PathBuf,
    what: String,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

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
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .at(&path)?;
        let object = Fetched { path, what };
        let mut from = backend.open(key)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut bytes = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(key, e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).at(&object.path)?;
            bytes += n as u64;
        }
        Ok((object, bytes, *hasher.finalize().as_bytes()))
    }

    pub(super) fn what(&self) -> &str {
        &self.what
    }

    pub(super) fn decoder(&self) -> Result<zstd::Decoder<'static, std::io::BufReader<File>>> {
        let f = File::open(&self.path).at(&self.path)?;
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

    pub(super) fn sniff(&self, what: &str) -> Result<Sniffed> {
        let mut head = Vec::with_capacity(HEADER_LEN);
        self.decoder()?
            .take(HEADER_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::corrupt(what, format!("not zstd: {e}")))?;
        if head.starts_with(SQLITE_MAGIC) {
            return Ok(Sniffed::Full);
        }
        if head.len() >= 8 && head[..7] == MAGIC[..7] {
            return catalog_delta::header(&head, what).map(|(c, _)| Sniffed::Delta(c));
        }
        Err(Error::corrupt(
            what,
            "neither an SQLite database nor a catalog delta",
        ))
    }
}
