//! The operations, one module each: what a user asks pgstrata to do.
//!
//! A command reaches the repository only through `repo` (and the catalog
//! handles and stored-data reader it hands out), never a storage backend
//! directly, and never another command. The one exception is `drill`, which
//! composes `restore` with a private server; nothing uses `drill`.

pub(crate) mod archive;
pub(crate) mod backup;
pub(crate) mod check;
pub(crate) mod drill;
pub(crate) mod expire;
pub(crate) mod info;
pub(crate) mod repair;
pub(crate) mod restore;
pub(crate) mod upgrade;
pub(crate) mod verify;
