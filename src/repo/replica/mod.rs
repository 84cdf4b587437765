//! Catalog replication for a repository in object storage: the bucket
//! holds published generations of the catalog, each host works on a local
//! copy of the newest one, and the writer publishes its changes as the
//! next generation, a delta of the rows it changed when it can.
//!
//! ```text
//! CACHE/state.json            {"generation": G, "file": "catalog-G0.db", "dirty": false, "chain": …}
//! CACHE/catalog-<G0>.db       the working copy (+ -wal, -shm)
//! CACHE/writer.lock           flock held by the process that holds the repository lock
//! BUCKET/catalog/<G>.db.zst   generation G (zstd; sealed in an encrypted repository):
//!                             a full snapshot, or a delta on G-1 (`format::catalog_delta`)
//! ```
//!
//! | file | what |
//! |---|---|
//! | `cache` | the cache directory: its state, the working copy a reader opens |
//! | `bring_up` | a generation made from the bucket's objects, or from a copy and deltas |
//! | `publish` | the writer: becoming it, publishing, abandoning |
//! | `capture` | triggers that record which rows a copy changed |
//! | `delta` | a delta taken from the capture, and applied to a copy |
//! | `collapse` | which narrowed rows of a chain of deltas count |
//! | `fetch` | objects fetched into and staged in files of the cache |
//!
//! Invariants:
//! - **The bucket is the truth.** Before reading, a command lists
//!   `catalog/` and brings its copy up to the newest generation unless the
//!   copy is of that generation and clean: by applying the deltas after its
//!   own generation to a copy of it, or else from the newest full snapshot
//!   and the deltas after it. A missing or damaged working copy is fetched
//!   again. A reader may assume the copy it opens equals a published
//!   generation, or is the live writer's copy of this host.
//! - **One writer.** Only the holder of the repository lock writes, through
//!   a write session (`repo::session`): it marks the copy dirty before its
//!   first change. Generation G+1 is published only when the session
//!   commits (or checkpoints), with a conditional write, so two writers can
//!   never both publish one generation. A session that ends otherwise
//!   publishes nothing: half a command's changes never reach the bucket.
//! - **Crashes.** A dirty copy whose writer is gone (no `flock` on
//!   `writer.lock`) is never trusted: the bucket's generation replaces it,
//!   and the next writer of the host starts from the bucket, so the delta
//!   it publishes fits every other host's copy. Objects a killed process
//!   fetched or staged are removed an hour later.
//! - **Deltas.** G+1 is a delta of the rows the copy changed (`capture`)
//!   when the copy captured every change since it equalled G, the chain
//!   since the last full stays under [`MAX_CHAIN_LENGTH`] deltas and its
//!   deltas under half the full's size; otherwise the whole file. A copy
//!   holding changes of its own that were never published (a cluster
//!   `archive-push` bound) is no base for later deltas: the next generation
//!   comes from the bucket alone.
//! - A new generation gets a new file, never changing one that another
//!   process may have open (SQLite's `-wal` and `-shm` go by the file's
//!   name). Old files are removed once two generations newer exist; old
//!   objects once no reader of the last three generations needs them.
//! - Published objects are referenced only by generations written after
//!   them: a generation names packs and manifests already durable in the
//!   bucket.

mod bring_up;
mod cache;
mod capture;
mod collapse;
mod delta;
mod fetch;
mod publish;
#[cfg(test)]
mod tests;

pub(crate) use cache::CatalogCache;

/// How a generation is published: a delta while the chain since the last
/// full stays short and small, else the whole file.
const MAX_CHAIN_LENGTH: u32 = 48;
