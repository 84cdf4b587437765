//! PostgreSQL knowledge: connections and backup mode, the control file, data
//! directory rules, LSNs and WAL names, data pages, and a private server
//! over a restored copy (for drills).

pub mod conn;
pub mod control;
pub mod datadir;
pub mod history;
pub mod libpq;
pub mod lsn;
pub mod page;
pub mod server;
pub mod tls;
pub mod version;
pub mod wal;
pub mod walrecord;

pub use lsn::{Lsn, TimelineId, WalFileName, WalSegment};
