//! Content storage: blocks and chunks, block maps, pack files, and the
//! backend seam they are stored through.

pub mod backend;
pub mod blockmap;
pub mod chunk;
pub mod fault;
pub mod pack;

pub use backend::{Backend, LocalBackend, ObjectWriter, Ownership};
pub use blockmap::{BlockMap, Extent};
pub use chunk::{ChunkId, Codec, Fingerprint};
