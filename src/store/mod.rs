//! Storage: the backend seam objects are stored through, and pack files read
//! and written through it. Byte layouts live in [`crate::format`].

pub mod backend;
pub mod crypt;
#[cfg(any(test, feature = "testing"))]
pub mod fault;
pub mod pack;
pub mod s3;

pub use backend::{Backend, LocalBackend, Ownership, RequestCounts, WriteObject};
pub use crypt::SealedBackend;
pub use pack::{read_chunk_with, read_chunks, read_trailer, PackWriter, SealedPack};
