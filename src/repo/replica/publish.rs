//! The writer's side: becoming the catalog's writer, publishing its copy
//! as the next generation (a delta or the whole file), and giving the role
//! up without publishing.
//!
//! Rules: only the holder of the repository lock calls these (through a
//! write session, `repo::session`); a generation is published with a
//! conditional write, so a second writer of the same generation is refused
//! and publishes nothing; a writer that gives up leaves its copy dirty, and
//! a dirty copy without a live writer is discarded by the next one.

use std::fs;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use super::cache::{CatalogCache, ChainState, State};
use super::fetch::{Removed, Staged, PUBLISH_PREFIX};
use super::{capture, delta, MAX_CHAIN_LENGTH};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::format::catalog_delta;
use crate::format::keys;
use crate::store::backend::Source;
use crate::store::Backend;
use crate::util::Flock;

/// A command that changed more than one row in this many of the catalog's
/// (an expire that removes much) publishes it whole, without a delta made.
const CAPTURED_ONE_IN: i64 = 4;
/// The deltas of a chain stay under this share of its full's size, so a
/// host without a copy fetches at most 1.5 times a full snapshot.
const MAX_CHAIN_SHARE: u64 = 2;
/// Snapshots kept in the bucket besides the newest (a reader that listed
/// one a moment ago can still fetch it).
const KEEP_SNAPSHOTS: u64 = 2;
const ZSTD_LEVEL: i32 = 3;

impl CatalogCache {
    /// Become the writer: bring the copy up to date, hold the writer lock,
    /// and mark the copy dirty. Called with the repository lock held.
    pub(crate) fn begin_write(&self, backend: &dyn Backend) -> Result<()> {
        let f = self.open_writer_lock()?;
        // Another process of this host may still be finishing with the copy
        // (it let the repository lock go a moment ago).
        flock(&f, FlockOperation::LockExclusive)
            .map_err(|e| Error::io(self.dir.join("writer.lock"), e.into()))?;
        // Released by an unlock on every path out, errors included.
        let f = Flock::held(f);
        self.discard_dead_writer()?;
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
            if !capture::has_backups(&mut cat)? {
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

    /// A dirty copy, found by a process that holds the writer lock, is a
    /// dead writer's: the bucket's is the truth.
    fn discard_dead_writer(&self) -> Result<()> {
        let Some(s) = self.read_state()?.filter(|s| s.dirty) else {
            return Ok(());
        };
        tracing::warn!(
            "discarding the unpublished catalog changes of an interrupted command in {}",
            self.dir.join(&s.file).display()
        );
        let _ = fs::remove_file(self.state_path());
        // The file goes too: a fresh copy of the same generation takes its
        // name, and would otherwise keep the dead writer's rows (which no
        // published delta holds) under it. A reader of this host that has
        // it open keeps reading what it opened.
        for suffix in ["", "-wal", "-shm"] {
            let _ = fs::remove_file(self.dir.join(format!("{}{suffix}", s.file)));
        }
        Ok(())
    }

    /// Publish the working copy as the next generation and stop being the
    /// writer. Without the writer role, nothing happens.
    pub(crate) fn publish(&self, backend: &dyn Backend) -> Result<()> {
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
        remove_older(backend, s.chain.as_ref(), next)
    }

    /// The copy's changes as a delta object, when the copy captured them
    /// all and the chain stays short and small with it. The capture is
    /// emptied either way: a full snapshot holds everything.
    fn delta(&self, path: &Path, s: &State) -> Result<Option<(Vec<u8>, ChainState)>> {
        let Some(c) = s.chain.filter(|c| c.length < MAX_CHAIN_LENGTH) else {
            return Ok(None);
        };
        let mut cat = Catalog::open(path, false)?;
        let taken = delta::take(&mut cat, Some(CAPTURED_ONE_IN))?;
        drop(cat);
        let Some(mut d) = taken else {
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
        capture::start(&mut Catalog::open(path, false)?)?;
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
    pub(crate) fn publish_first(&self, backend: &dyn Backend, made: &Path) -> Result<()> {
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

    /// Stop being the writer without publishing (the command did not
    /// finish): the copy stays dirty, so no later command of any process
    /// trusts it, and the next one fetches the bucket's.
    pub(crate) fn abandon(&self) {
        if let Ok(mut w) = self.writer.lock() {
            *w = None;
        }
    }
}

/// Remove the objects of generations before `next` that no reader of the
/// last ones needs: the chain `published` (the generation just published
/// on) belongs to is kept.
fn remove_older(backend: &dyn Backend, published: Option<&ChainState>, next: u64) -> Result<()> {
    let keep_from = published
        .map_or(u64::MAX, |c| c.full)
        .min(next.saturating_sub(KEEP_SNAPSHOTS));
    for (k, _) in backend.list(keys::CATALOG)? {
        if keys::parse_catalog_snapshot(&k).is_some_and(|g| g < keep_from) {
            backend.delete(&k)?;
        }
    }
    Ok(())
}
