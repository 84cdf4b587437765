//! A generation brought into a file of its own: from a clean copy of an
//! older generation and the deltas after it, or else from the newest full
//! snapshot and the deltas after that.
//!
//! Rules: every object is fetched into a file, never held whole (a chain
//! may hold tens of megabytes of deltas, and a full, the catalog); each
//! delta must name the object before it by its hash, so a copy of another
//! history is never taken for a base; the new file is built under a unique
//! temporary name (no `-wal` of a crashed attempt is ever replayed) and
//! made durable before it gets its name.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::cache::{CatalogCache, ChainState, State};
use super::collapse::{Collapse, Keep};
use super::fetch::{Fetched, Sniffed};
use super::{capture, delta};
use crate::catalog::{Catalog, SCHEMA_VERSION};
use crate::error::{Error, IoContext, Result};
use crate::format::catalog_delta::{Chain, DeltaView};
use crate::format::keys;
use crate::store::Backend;

/// Where a generation's file starts.
enum Start {
    Full(Fetched),
    Copy(PathBuf),
}

/// What makes a generation: where it starts, where that start sits in its
/// chain, and the deltas after it, newest first, each with its header and
/// the place it leaves the chain at.
struct Walk {
    start: Start,
    start_chain: ChainState,
    deltas: Vec<(Fetched, Chain, ChainState)>,
}

impl CatalogCache {
    /// Bring generation `generation` into a file of its own and make it
    /// current, from `base` when given (see the module's rules).
    pub(super) fn bring_up(
        &self,
        backend: &dyn Backend,
        generation: u64,
        base: Option<&State>,
    ) -> Result<PathBuf> {
        let walk = self.walk(backend, generation, base)?;
        check_links(&walk)?;
        let chain = walk.deltas.first().map_or(walk.start_chain, |(_, _, c)| *c);
        // Oldest first.
        let deltas: Vec<Fetched> = walk.deltas.into_iter().rev().map(|(o, _, _)| o).collect();
        let file = self.file_for(generation)?;
        let path = self.dir.join(&file);
        // Unique, so that no -wal of a crashed attempt is ever replayed.
        let tmp = self.dir.join(format!(
            "{file}.{}-{}.tmp",
            std::process::id(),
            crate::util::now_us()
        ));
        let made = self.make_copy(&tmp, walk.start, &deltas);
        install(made, &tmp, &path, &self.dir, &file)?;
        self.write_state(&State {
            generation,
            file,
            dirty: false,
            chain: Some(chain),
        })?;
        self.remove_old(generation);
        Ok(path)
    }

    /// Fetch the objects from `generation` down to the base or a full.
    fn walk(&self, backend: &dyn Backend, generation: u64, base: Option<&State>) -> Result<Walk> {
        let mut deltas = Vec::new();
        let mut g = generation;
        loop {
            if let Some(b) = base.filter(|b| b.generation == g) {
                let c = b
                    .chain
                    .ok_or_else(|| Error::internal("a base copy without its chain"))?;
                let start = Start::Copy(self.dir.join(&b.file));
                return Ok(Walk {
                    start,
                    start_chain: c,
                    deltas,
                });
            }
            let key = keys::catalog_snapshot(g);
            let (object, bytes, hash) = Fetched::fetch(&self.dir, backend, &key)?;
            match object.sniff()? {
                Sniffed::Full => {
                    let start_chain = ChainState::of_full_object(g, bytes, hash);
                    return Ok(Walk {
                        start: Start::Full(object),
                        start_chain,
                        deltas,
                    });
                }
                Sniffed::Delta(d) => {
                    if d.base.checked_add(1) != Some(g) || d.full > d.base {
                        return Err(Error::corrupt(
                            format!("object {key}"),
                            format!("a catalog delta on generation {} in generation {g}", d.base),
                        ));
                    }
                    g = d.base;
                    let place = ChainState::after_object(&d, bytes, hash);
                    deltas.push((object, d, place));
                }
            }
        }
    }

    /// The name of generation `generation`'s new file.
    fn file_for(&self, generation: u64) -> Result<String> {
        let file = format!("catalog-{generation:020}.db");
        // A dead writer's copy of this generation holds changes that were
        // never published: the fresh copy takes another name.
        if self
            .read_state()?
            .is_some_and(|s| s.dirty || s.generation != generation)
            && self.dir.join(&file).exists()
        {
            return Ok(format!(
                "catalog-{generation:020}-{}-{}.db",
                std::process::id(),
                crate::util::now_us()
            ));
        }
        Ok(file)
    }

    /// Make `tmp` from `start` and the deltas (oldest first), capturing
    /// from the generation they reach on, and make it durable.
    fn make_copy(&self, tmp: &Path, start: Start, deltas: &[Fetched]) -> Result<()> {
        let from_copy = matches!(start, Start::Copy(_));
        write_start(tmp, start)?;
        let keep = narrowed_to_keep(deltas)?;
        {
            let mut cat = Catalog::open_unmigrated(tmp)?;
            // Synced once, whole, below: a commit per delta need not wait.
            cat.unsynced()?;
            // Checked on the copy: a change made in the base meanwhile is
            // either in it, and seen, or not in it.
            if from_copy && capture::pending(&mut cat)? {
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
                delta::apply(&mut cat, &DeltaView::parse(&raw, what)?, Some(keep), what)?;
            }
            cat.migrate_to(SCHEMA_VERSION, tmp)?;
            capture::start(&mut cat)?;
            cat.checkpoint()?;
        }
        File::open(tmp).and_then(|f| f.sync_all()).at(tmp)
    }
}

/// Each delta names the object it applies to.
fn check_links(walk: &Walk) -> Result<()> {
    let mut prev = walk.start_chain.hash;
    for (object, d, place) in walk.deltas.iter().rev() {
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
    Ok(())
}

/// The new file `tmp`, whose making ended in `made`, under its name `path`
/// (`file` in `dir`); the temporary name goes either way.
fn install(made: Result<()>, tmp: &Path, path: &Path, dir: &Path, file: &str) -> Result<()> {
    if made.is_ok() {
        // A file another process already made (and may have open) is kept.
        for suffix in ["-wal", "-shm"] {
            let side = dir.join(format!("{file}{suffix}"));
            if !path.exists() && side.exists() {
                let _ = fs::remove_file(&side);
            }
        }
    }
    let linked = made.and_then(|()| match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    });
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = fs::remove_file(format!("{}{suffix}", tmp.display()));
    }
    linked
}

/// The new file `tmp` as `start` has it: a full decoded into it, or a
/// copy of the base (which may be open elsewhere: it is copied, never
/// changed).
fn write_start(tmp: &Path, start: Start) -> Result<()> {
    let object = match start {
        Start::Copy(from) => return Catalog::copy_file(&from, tmp),
        Start::Full(object) => object,
    };
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
            return Ok(());
        }
        f.write_all(&buf[..n]).at(tmp)?;
    }
}

/// Which narrowed rows of each delta (oldest first) count: worked out
/// newest first, one delta in memory at a time.
fn narrowed_to_keep(deltas: &[Fetched]) -> Result<Vec<Keep>> {
    let mut collapse = Collapse::default();
    let mut keep = Vec::with_capacity(deltas.len());
    for object in deltas.iter().rev() {
        let raw = object.decoded()?;
        keep.push(collapse.newer_first(&DeltaView::parse(&raw, object.what())?)?);
    }
    keep.reverse();
    Ok(keep)
}
