//! The catalog of a repository in object storage: a local working copy of
//! the newest generation in the bucket.
//!
//! ```text
//! CACHE/state.json            {"generation": G, "file": "catalog-G0.db", "dirty": false, "chain": …}
//! CACHE/catalog-<G0>.db       the working copy (+ -wal, -shm)
//! CACHE/writer.lock           flock held by the process that holds the repository lock
//! BUCKET/catalog/<G>.db.zst   generation G (zstd; sealed in an encrypted repository):
//!                             a full snapshot, or a delta on G-1 (`format::catalog_delta`)
//! ```
//!
//! Rules:
//! - The bucket is the truth. Before reading, a command lists `catalog/` and
//!   brings its copy up to the newest generation unless the copy is of that
//!   generation and clean: by applying the deltas after its own generation
//!   to a copy of it, or else from the newest full snapshot and the deltas
//!   after it. A missing or damaged working copy is fetched again.
//! - Only the holder of the repository lock writes: it marks the copy dirty
//!   before its first change and publishes generation G+1 (a conditional
//!   write, so two writers can never both publish one generation) when it
//!   lets the lock go. A dirty copy whose writer is gone is never trusted: the
//!   bucket's generation replaces it.
//! - G+1 is a delta of the rows the copy changed (`catalog::capture`) when
//!   the copy captured every change since it equalled G, the chain since
//!   the last full stays under [`MAX_CHAIN_LENGTH`] deltas and its deltas
//!   under half the full's size; otherwise the whole file. A copy holding
//!   changes of its own that were never published (a cluster `archive-push`
//!   bound) is no base for later deltas: the next generation comes from the
//!   bucket alone.
//! - A new generation gets a new file, never changing one that another
//!   process may have open (SQLite's `-wal` and `-shm` go by the file's
//!   name). Old files are removed once two generations newer exist; old
//!   objects once no reader of the last three generations needs them.
//! - Published objects are referenced only by generations written after
//!   them: a generation names packs and manifests already durable in the
//!   bucket.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, SCHEMA_VERSION};
use crate::error::{Error, IoContext, Result};
use crate::format::catalog_delta::{self, Chain, Collapse, DeltaView};
use crate::format::keys;
use crate::store::backend::Source;
use crate::store::Backend;
use crate::util::Flock;
use fetch::{Fetched, Removed, Sniffed, Staged, FETCH_PREFIX, PUBLISH_PREFIX};

/// Snapshots kept in the bucket besides the newest (a reader that listed
/// one a moment ago can still fetch it).
const KEEP_SNAPSHOTS: u64 = 2;
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    generation: u64,
    file: String,
    dirty: bool,
    /// The chain the copy's generation ends, when the copy captures its
    /// changes since (absent: the next publish is a full snapshot).
    #[serde(default)]
    chain: Option<ChainState>,
}

/// A generation's place after the newest full snapshot.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct ChainState {
    full: u64,
    full_bytes: u64,
    /// Object bytes of the deltas since the full, up to this generation.
    chain_bytes: u64,
    length: u32,
    /// BLAKE3 of this generation's object: the next delta names it.
    hash: [u8; 32],
}

impl ChainState {
    fn of_full_object(generation: u64, bytes: u64, hash: [u8; 32]) -> Self {
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
    fn after(d: &Chain, object: &[u8]) -> Self {
        Self::after_object(d, object.len() as u64, *blake3::hash(object).as_bytes())
    }

    fn after_object(d: &Chain, bytes: u64, hash: [u8; 32]) -> Self {
        ChainState {
            full: d.full,
            full_bytes: d.full_bytes,
            chain_bytes: d.chain_bytes.saturating_add(bytes),
            length: d.length,
            hash,
        }
    }

    /// The chain a delta published on top of this generation extends.
    fn next(&self, base: u64) -> Chain {
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

/// How a generation is published: a delta while the chain since the last
/// full stays short and small, else the whole file.
const MAX_CHAIN_LENGTH: u32 = 48;
/// A command that changed more than one row in this many of the catalog's
/// (an expire that removes much) publishes it whole, without a delta made.
const CAPTURED_ONE_IN: i64 = 4;
/// The deltas of a chain stay under this share of its full's size, so a
/// host without a copy fetches at most 1.5 times a full snapshot.
const MAX_CHAIN_SHARE: u64 = 2;

/// A catalog cache directory for one repository.
pub(crate) struct CatalogCache {
    dir: PathBuf,
    /// The repository's name, for messages.
    name: String,
    /// The writer lock, held while this process holds the repository lock.
    writer: Mutex<Option<Flock>>,
}

impl CatalogCache {
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
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

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn read_state(&self) -> Result<Option<State>> {
        let p = self.state_path();
        match fs::read(&p) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn write_state(&self, s: &State) -> Result<()> {
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

    fn holds_writer(&self) -> bool {
        self.writer.lock().map(|w| w.is_some()).unwrap_or(false)
    }

    /// Is a writer alive on this host (this process or another)?
    fn writer_alive(&self) -> Result<bool> {
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

    fn open_writer_lock(&self) -> Result<File> {
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
    fn newest(&self, backend: &dyn Backend) -> Result<Option<u64>> {
        Ok(backend
            .list(keys::CATALOG)?
            .iter()
            .filter_map(|(k, _)| keys::parse_catalog_snapshot(k))
            .max())
    }

    /// The working copy to open, brought up to the bucket's newest snapshot
    /// first (see the module's rules).
    pub fn current(&self, backend: &dyn Backend) -> Result<PathBuf> {
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
                "repository {} has no catalog snapshot under {}: run `pgstrata repair --rebuild-catalog`",
                self.name,
                keys::CATALOG
            ))
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

    fn bring_up(
        &self,
        backend: &dyn Backend,
        generation: u64,
        base: Option<&State>,
    ) -> Result<PathBuf> {
        // Newest first, down to the base or a full: (fetched object, its
        // header, its place). Objects go to files, not memory: a chain
        // may hold tens of megabytes of deltas, and a full, the catalog.
        let mut deltas: Vec<(Fetched, Chain, ChainState)> = Vec::new();
        let mut g = generation;
        let (start, start_chain) = loop {
            if let Some(b) = base.filter(|b| b.generation == g) {
                let c = b
                    .chain
                    .ok_or_else(|| Error::internal("a base copy without its chain"))?;
                break (Start::Copy(self.dir.join(&b.file)), c);
            }
            let key = keys::catalog_snapshot(g);
            let what = format!("object {key}");
            let (object, bytes, hash) = Fetched::fetch(&self.dir, backend, &key)?;
            match object.sniff()? {
                Sniffed::Full => {
                    break (
                        Start::Full(object),
                        ChainState::of_full_object(g, bytes, hash),
                    );
                }
                Sniffed::Delta(d) => {
                    if d.base.checked_add(1) != Some(g) || d.full > d.base {
                        return Err(Error::corrupt(
                            &what,
                            format!("a catalog delta on generation {} in generation {g}", d.base),
                        ));
                    }
                    g = d.base;
                    let place = ChainState::after_object(&d, bytes, hash);
                    deltas.push((object, d, place));
                }
            }
        };
        // Each delta names the object it applies to.
        let mut prev = start_chain.hash;
        for (object, d, place) in deltas.iter().rev() {
            if d.base_hash != prev {
                return Err(Error::corrupt(
                    object.what(),
                    format!(
                        "its base is not generation {} as this host has it (another history?)",
                        d.base
                    ),
                ));
            }
            prev = place.hash;
        }
        let chain = deltas.first().map_or(start_chain, |(_, _, c)| *c);
        // Oldest first.
        let deltas: Vec<Fetched> = deltas.into_iter().rev().map(|(o, _, _)| o).collect();
        let mut file = format!("catalog-{generation:020}.db");
        // A dead writer's copy of this generation holds changes that were
        // never published: the fresh copy takes another name.
        if self
            .read_state()?
            .is_some_and(|s| s.dirty || s.generation != generation)
            && self.dir.join(&file).exists()
        {
            file = format!(
                "catalog-{generation:020}-{}-{}.db",
                std::process::id(),
                crate::util::now_us()
            );
        }
        let path = self.dir.join(&file);
        // Unique, so that no -wal of a crashed attempt is ever replayed.
        let tmp = self.dir.join(format!(
            "{file}.{}-{}.tmp",
            std::process::id(),
            crate::util::now_us()
        ));
        let made = self.make_copy(&tmp, start, &deltas);
        if made.is_ok() {
            // A file another process already made (and may have open) is kept.
            for suffix in ["-wal", "-shm"] {
                let side = self.dir.join(format!("{file}{suffix}"));
                if !path.exists() && side.exists() {
                    let _ = fs::remove_file(&side);
                }
            }
        }
        let linked = made.and_then(|()| match fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        });
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
        linked?;
        self.write_state(&State {
            generation,
            file,
            dirty: false,
            chain: Some(chain),
        })?;
        self.remove_old(generation);
        Ok(path)
    }

    /// Make `tmp` from `start` and the deltas (oldest first), capturing from the generation they reach on, and
    /// make it durable.
    fn make_copy(&self, tmp: &Path, start: Start, deltas: &[Fetched]) -> Result<()> {
        let from_copy = matches!(start, Start::Copy(_));
        match start {
            Start::Full(object) => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(tmp)
                    .at(tmp)?;
                let mut z = object.decoder()?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = z
                        .read(&mut buf)
                        .map_err(|e| Error::corrupt(object.what(), format!("not zstd: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    f.write_all(&buf[..n]).at(tmp)?;
                }
            }
            // The base may be open elsewhere: it is copied, never changed.
            Start::Copy(from) => Catalog::copy_file(&from, tmp)?,
        }
        // Which narrowed rows count, newest first, one delta in memory.
        let mut collapse = Collapse::default();
        let mut keep = Vec::with_capacity(deltas.len());
        for object in deltas.iter().rev() {
            let raw = object.decoded()?;
            keep.push(collapse.newer_first(&DeltaView::parse(&raw, object.what())?)?);
        }
        drop(collapse);
        keep.reverse();
        {
            let mut cat = Catalog::open_unmigrated(tmp)?;
            // Synced once, whole, below: a commit per delta need not wait.
            cat.unsynced()?;
            // Checked on the copy: a change made in the base meanwhile is
            // either in it, and seen, or not in it.
            if from_copy && cat.has_captured_changes()? {
                return Err(Error::refused(format!(
                    "the catalog copy of {} holds changes never published",
                    self.name
                )));
            }
            // Applied without triggers (a delta's narrowed updates are most
            // of its rows), each at its own schema; then migrated, and
            // captured from this generation on.
            cat.stop_capture()?;
            for (object, keep) in deltas.iter().zip(&keep) {
                let raw = object.decoded()?;
                let what = object.what();
                cat.apply_delta(&DeltaView::parse(&raw, what)?, Some(keep), what)?;
            }
            cat.migrate_to(SCHEMA_VERSION, tmp)?;
            cat.start_capture()?;
            cat.checkpoint()?;
        }
        File::open(tmp).and_then(|f| f.sync_all()).at(tmp)
    }

    /// Remove working copies two or more generations old.
    fn remove_old(&self, generation: u64) {
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

    /// Become the writer: bring the copy up to date, hold the writer lock,
    /// and mark the copy dirty. Called with the repository lock held.
    pub fn begin_write(&self, backend: &dyn Backend) -> Result<()> {
        let f = self.open_writer_lock()?;
        // Another process of this host may still be finishing with the copy
        // (it let the repository lock go a moment ago).
        flock(&f, FlockOperation::LockExclusive)
            .map_err(|e| Error::io(self.dir.join("writer.lock"), e.into()))?;
        // Released by an unlock on every path out, errors included.
        let f = Flock::held(f);
        let state = self.read_state()?;
        // A dirty copy here is a dead writer's: the bucket's is the truth.
        if let Some(s) = state.as_ref().filter(|s| s.dirty) {
            tracing::warn!(
                "discarding the unpublished catalog changes of an interrupted command in {}",
                self.dir.join(&s.file).display()
            );
            let _ = fs::remove_file(self.state_path());
            // The file goes too: a fresh copy of the same generation takes
            // its name, and would otherwise keep the dead writer's rows
            // (which no published delta holds) under it. A reader of this
            // host that has it open keeps reading what it opened.
            for suffix in ["", "-wal", "-shm"] {
                let _ = fs::remove_file(self.dir.join(format!("{}{suffix}", s.file)));
            }
        }
        let mut s = match self.newest(backend)? {
            Some(_) => {
                self.current(backend)?;
                self.read_state()?
                    .ok_or_else(|| Error::internal("catalog cache without a state"))?
            }
            // No snapshot at all: only `repair --rebuild-catalog` can
            // make one, in a new file.
            None => State {
                generation: 0,
                file: format!("catalog-{:020}-{}.db", 0, std::process::id()),
                dirty: true,
                chain: None,
            },
        };
        // A repository's first backup goes whole: capturing every row it
        // adds (a trigger run each) would cost more than publishing them.
        if s.chain.is_some() {
            let mut cat = Catalog::open(&self.dir.join(&s.file), false)?;
            if !cat.has_backups()? {
                cat.stop_capture()?;
                s.chain = None;
            }
        }
        s.dirty = true;
        self.write_state(&s)?;
        if let Ok(mut w) = self.writer.lock() {
            *w = Some(f);
        }
        Ok(())
    }

    /// Publish the working copy as the next generation and stop being the
    /// writer. Without the writer role, nothing happens.
    pub fn publish(&self, backend: &dyn Backend) -> Result<()> {
        if !self.holds_writer() {
            return Ok(());
        }
        let s = self
            .read_state()?
            .ok_or_else(|| Error::internal("catalog cache without a state"))?;
        let path = self.dir.join(&s.file);
        let next = s.generation + 1;
        let (packed, chain): (Box<dyn Source>, _) = match self.delta(&path, &s)? {
            Some((d, c)) => (Box::new(d), c),
            None => {
                let (f, c) = self.full(&path, next)?;
                (Box::new(f), c)
            }
        };
        let key = keys::catalog_snapshot(next);
        let created = backend.put_new_from(&key, packed.as_ref())?;
        drop(packed);
        if !created {
            return Err(Error::refused(format!(
                "catalog generation {next} of {} was published by another process while this one \
                 held the repository lock (was the lock taken over?): this command's catalog \
                 changes are not published",
                self.name
            )));
        }
        self.write_state(&State {
            generation: next,
            file: s.file,
            dirty: false,
            chain: Some(chain),
        })?;
        if let Ok(mut w) = self.writer.lock() {
            *w = None;
        }
        // Keep the chain a reader of one of the last generations needs.
        let keep_from = s
            .chain
            .map_or(u64::MAX, |c| c.full)
            .min(next.saturating_sub(KEEP_SNAPSHOTS));
        for (k, _) in backend.list(keys::CATALOG)? {
            if keys::parse_catalog_snapshot(&k).is_some_and(|g| g < keep_from) {
                backend.delete(&k)?;
            }
        }
        Ok(())
    }

    /// The copy's changes as a delta object, when the copy captured them
    /// all and the chain stays short and small with it. The capture is
    /// emptied either way: a full snapshot holds everything.
    fn delta(&self, path: &Path, s: &State) -> Result<Option<(Vec<u8>, ChainState)>> {
        let Some(c) = s.chain.filter(|c| c.length < MAX_CHAIN_LENGTH) else {
            return Ok(None);
        };
        let Some(mut d) = Catalog::open(path, false)?.take_delta(Some(CAPTURED_ONE_IN))? else {
            return Ok(None);
        };
        let chain = c.next(s.generation);
        catalog_delta::set_chain(&mut d.bytes, &chain);
        let packed = zstd::bulk::compress(&d.bytes, ZSTD_LEVEL)
            .map_err(|e| Error::internal(format!("zstd: {e}")))?;
        drop(d.bytes);
        let bytes = packed.len() as u64;
        if c.chain_bytes
            .saturating_add(bytes)
            .saturating_mul(MAX_CHAIN_SHARE)
            > c.full_bytes
        {
            return Ok(None);
        }
        tracing::debug!(rows = d.rows, bytes, "catalog delta");
        let place = ChainState::after(&chain, &packed);
        Ok(Some((packed, place)))
    }

    /// The whole copy as a full snapshot object, capturing afresh. It is
    /// staged in a file: a catalog of many files is too big to hold.
    fn full(&self, path: &Path, generation: u64) -> Result<(Staged, ChainState)> {
        let pid = std::process::id();
        let snap = Removed(self.dir.join(format!("{PUBLISH_PREFIX}{pid}.db")));
        let _ = fs::remove_file(&snap.0);
        // Cleared first: a change made after the clear is captured again,
        // whether or not the snapshot holds it.
        Catalog::open(path, false)?.start_capture()?;
        Catalog::copy_file(path, &snap.0)?;
        let (packed, hash) = Staged::compress(
            &snap.0,
            self.dir.join(format!("{PUBLISH_PREFIX}{pid}.zst")),
            ZSTD_LEVEL,
        )?;
        let place = ChainState::of_full_object(generation, packed.len(), hash);
        Ok((packed, place))
    }

    /// Create generation 1 from a new, empty catalog at `init`.
    pub fn publish_first(&self, backend: &dyn Backend, made: &Path) -> Result<()> {
        let file = made
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::internal("catalog file without a name"))?;
        self.write_state(&State {
            generation: 0,
            file,
            dirty: true,
            chain: None,
        })?;
        let f = self.open_writer_lock()?;
        if let Ok(mut w) = self.writer.lock() {
            *w = Some(Flock::held(f));
        }
        self.publish(backend)
    }

    /// Where `init` makes the first catalog.
    pub fn first_file(&self) -> PathBuf {
        self.dir.join(format!("catalog-{:020}.db", 0))
    }

    /// Stop being the writer without publishing (the command failed): the
    /// copy stays dirty and the next command fetches the bucket's.
    pub fn abandon(&self) {
        if let Ok(mut w) = self.writer.lock() {
            *w = None;
        }
    }
}

/// Where a generation's file starts.
enum Start {
    Full(Fetched),
    Copy(PathBuf),
}

mod fetch;
#[cfg(test)]
mod tests;
