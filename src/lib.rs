//! pgstrata: an incremental, block-granular, deduplicating physical backup
//! repository for PostgreSQL.
//!
//! The library holds all logic; the `pgstrata` binary only parses arguments,
//! sets up logging and calls in here. See `docs/design.md` for the on-disk
//! format and the invariants every module keeps.
#![forbid(unsafe_code)]

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod check;
pub mod error;
pub mod expire;
pub mod info;
pub mod lock;
pub mod pg;
pub mod progress;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod store;
pub mod verify;

pub use error::{Error, Result};
pub use repo::Repository;
