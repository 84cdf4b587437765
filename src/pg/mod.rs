//! PostgreSQL knowledge: connections and backup mode, the control file, data
//! directory rules, LSNs and WAL names, data pages, WAL block references and
//! the server's own WAL summaries, and a private server over a restored copy
//! (for drills).

pub(crate) mod conn;
pub(crate) mod control;
pub(crate) mod datadir;
pub(crate) mod history;
pub(crate) mod libpq;
pub(crate) mod lsn;
pub(crate) mod page;
pub(crate) mod server;
pub(crate) mod tls;
pub(crate) mod version;
pub(crate) mod wal;
pub(crate) mod walblocks;
pub(crate) mod walpage;
pub(crate) mod walrecord;
pub(crate) mod walsummaries;

pub use lsn::Lsn;
pub(crate) use lsn::{TimelineId, WalFileName, WalSegment};
