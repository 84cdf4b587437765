//! Storage: the backend seam objects are stored through, and pack files read
//! and written through it. Byte layouts live in [`crate::format`].

pub(crate) mod backend;
pub(crate) mod crypt;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod fault;
pub(crate) mod pack;
pub(crate) mod s3;

pub(crate) use backend::WriteObject;
pub use backend::{Backend, LocalBackend, Ownership, RequestCounts};
pub use crypt::SealedBackend;
pub(crate) use pack::{read_chunk_with, read_chunks, read_trailer, PackWriter, SealedPack};
