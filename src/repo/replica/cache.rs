//! The cache directory of one repository: its state, and the working copy
//! a reader opens, brought up to the bucket's newest generation first (see
//! the rules in `replica`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use super::fetch::{FETCH_PREFIX, PUBLISH_PREFIX};
use crate::error::{Error, Hint, IoContext, Result};
use crate::format::catalog_delta::Chain;
use crate::format::keys;
use crate::store::Backend;
use crate::util::Flock;

/// `state.json`: the working copy's generation and file, and whether a
/// writer changed it since (`dirty`: trusted only while that writer lives).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct State {
    pub(super) generation: u64,
    pub(super) file: String,
    pub(super) dirty: bool,
    /// The chain the copy's generation ends, when the copy captures its
    /// changes since (absent: the next publish is a full snapshot).
    #[serde(default)]
    pub(super) chain: Option<ChainState>,
}

/// A generation's place after the newest full snapshot.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct ChainState {
    pub(super) full: u64,
    pub(super) full_bytes: u64,
    /// Object bytes of the deltas since the full, up to this generation.
    pub(super) chain_bytes: u64,
    pub(super) length: u32,
    /// BLAKE3 of this generation's object: the next delta names it.
    pub(super) hash: [u8; 32],
}

impl ChainState {
    pub(super) fn of_full_object(generation: u64, bytes: u64, hash: [u8; 32]) -> Self {
        ChainState {
            full: generation,
            full_bytes: bytes,
            chain_bytes: 0,
            length: 0,
            hash,
        }
    }

    /// Where the delta `d`, stored as `object`, leaves the chain. (Header
    /// values are added saturating: a damaged one must not overflow.)
    pub(super) fn after(d: &Chain, object: &[u8]) -> Self {
        Self::after_object(d, object.len() as u64, *blake3::hash(object).as_bytes())
    }

    pub(super) fn after_object(d: &Chain, bytes: u64, hash: [u8; 32]) -> Self {
        ChainState {
            full: d.full,
            full_bytes: d.full_bytes,
            chain_bytes: d.chain_bytes.saturating_add(bytes),
            length: d.length,
            hash,
        }
    }

    /// The chain a delta published on top of this generation extends.
    pub(super) fn next(&self, base: u64) -> Chain {
        Chain {
            base,
            base_hash: self.hash,
            full: self.full,
            full_bytes: self.full_bytes,
            chain_bytes: self.chain_bytes,
            length: self.length.saturating_add(1),
        }
    }
}

/// A catalog cache directory for one repository.
pub(crate) struct CatalogCache {
    pub(super) dir: PathBuf,
    /// The repository's name, for messages.
    pub(super) name: String,
    /// The writer lock, held while this process holds the repository lock.
    pub(super) writer: Mutex<Option<Flock>>,
}

impl CatalogCache {
    pub(crate) fn new(dir: &Path, name: &str) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .at(dir)?;
        Ok(CatalogCache {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            writer: Mutex::new(None),
        })
    }

    pub(super) fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub(super) fn read_state(&self) -> Result<Option<State>> {
        let p = self.state_path();
        match fs::read(&p) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    pub(super) fn write_state(&self, s: &State) -> Result<()> {
        let p = self.state_path();
        let tmp = self
            .dir
            .join(format!("state.json.{}.tmp", std::process::id()));
        let body = serde_json::to_vec(s).map_err(|e| Error::internal(e.to_string()))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(&body).and_then(|_| f.sync_all()).at(&tmp)?;
        fs::rename(&tmp, &p).at(&p)?;
        crate::store::backend::sync_dir(&self.dir)
    }

    pub(super) fn holds_writer(&self) -> bool {
        self.writer.lock().map(|w| w.is_some()).unwrap_or(false)
    }

    /// Is a writer alive on this host (this process or another)?
    pub(super) fn writer_alive(&self) -> Result<bool> {
        if self.holds_writer() {
            return Ok(true);
        }
        let f = self.open_writer_lock()?;
        match flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                drop(Flock::held(f));
                Ok(false)
            }
            Err(_) => Ok(true),
        }
    }

    pub(super) fn open_writer_lock(&self) -> Result<File> {
        let p = self.dir.join("writer.lock");
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .at(&p)
    }

    /// The newest snapshot's generation in the bucket.
    pub(super) fn newest(&self, backend: &dyn Backend) -> Result<Option<u64>> {
        Ok(backend
            .list(keys::CATALOG)?
            .iter()
            .filter_map(|(k, _)| keys::parse_catalog_snapshot(k))
            .max())
    }

    /// The working copy to open, brought up to the bucket's newest snapshot
    /// first (see the module's rules).
    pub(crate) fn current(&self, backend: &dyn Backend) -> Result<PathBuf> {
        let state = self.read_state()?;
        if let Some(s) = &state {
            // The lock holder's copy is the newest there is: nobody else
            // publishes while it holds the lock.
            if s.dirty && self.writer_alive()? {
                return Ok(self.dir.join(&s.file));
            }
        }
        let newest = self.newest(backend)?.ok_or_else(|| {
            Error::NotFound(format!(
                "repository {} has no catalog snapshot under {}",
                self.name,
                keys::CATALOG
            ))
            .hint(Hint::RebuildCatalog)
        })?;
        let mut base = None;
        if let Some(s) = &state {
            let path = self.dir.join(&s.file);
            if !s.dirty && s.generation == newest && path.is_file() {
                return Ok(path);
            }
            if s.generation > newest && !s.dirty {
                tracing::warn!(
                    "the catalog cache of {} is of generation {} but the bucket's newest is {newest}: \
                     the bucket wins",
                    self.name,
                    s.generation
                );
            }
            if !s.dirty && s.generation < newest && s.chain.is_some() && path.is_file() {
                base = Some(s.clone());
            }
        }
        self.download(backend, newest, base)
    }

    /// Bring generation `generation` into a file of its own and make it
    /// current: from the clean copy `base` (of an older generation) and
    /// the deltas after it, or else from the newest full snapshot and the
    /// deltas after that.
    fn download(
        &self,
        backend: &dyn Backend,
        generation: u64,
        base: Option<State>,
    ) -> Result<PathBuf> {
        if let Some(b) = base {
            match self.bring_up(backend, generation, Some(&b)) {
                Ok(p) => return Ok(p),
                // A cluster `archive-push` bound in the copy: expected.
                Err(e @ Error::Refused(_)) => tracing::info!("{e}: fetching a full snapshot"),
                Err(e) => tracing::warn!(
                    "the catalog copy {} of generation {} could not be brought up to generation \
                     {generation} ({e}): fetching a full snapshot",
                    b.file,
                    b.generation
                ),
            }
        }
        self.bring_up(backend, generation, None)
    }

    /// Remove working copies two or more generations old.
    pub(super) fn remove_old(&self, generation: u64) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Objects a killed process fetched or staged (a running one's
            // are younger).
            if name.starts_with(FETCH_PREFIX) || name.starts_with(PUBLISH_PREFIX) {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(3600));
                if old {
                    let _ = fs::remove_file(e.path());
                }
                continue;
            }
            let Some(g) = name
                .strip_prefix("catalog-")
                .and_then(|r| r.get(..20))
                .and_then(|d| d.parse::<u64>().ok())
            else {
                continue;
            };
            if g + 2 <= generation {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Where `init` makes the first catalog.
    pub(crate) fn first_file(&self) -> PathBuf {
        self.dir.join(format!("catalog-{:020}.db", 0))
    }
}
