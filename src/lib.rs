//! pgstrata: an incremental, block-granular, deduplicating physical backup
//! repository for PostgreSQL.
//!
//! The library holds all logic; the `pgstrata` binary only parses arguments,
//! sets up logging, calls the functions re-exported here (the whole public
//! API) and renders their results. Modules are private and layered one way
//! (see `docs/design.md`, and `ls src`):
//!
//! - `pg`: PostgreSQL itself: the connection, WAL and page formats, the data
//!   directory's rules, private servers;
//! - `format`: every on-disk format and object key of the repository;
//! - `store`: the storage backends (local disk, S3) and their decorators
//!   (encryption, fault injection);
//! - `catalog`: the SQLite catalog of backups, packs, chunks and WAL;
//! - `repo`: an open repository: its lock, write sessions, catalog
//!   replication, and the one reader of stored data;
//! - `commands`: one module per operation (backup, restore, archive, expire,
//!   verify, check, info, repair, upgrade, drill);
//!
//! with `error`, `util` and `progress` usable by all.
#![forbid(unsafe_code)]

mod catalog;
mod commands;
mod error;
mod format;
mod pg;
mod progress;
mod repo;
mod store;
mod util;

pub use catalog::{Compacted, ExpireLog, HistoryRow};
pub use commands::archive::{
    get as archive_get, get_prefetched as archive_get_prefetched, push as archive_push,
    push_async as archive_push_async, run_prefetcher as archive_prefetcher,
    run_pusher as archive_pusher, AsyncOutcome, AsyncPush, Prefetch, PushOutcome, PusherStats,
    QueueFull,
};
pub use commands::backup::{
    run as backup, BackupOptions, BackupReport, ChangeSource, ChangeTracking,
};
pub use commands::check::{run as check, CheckOptions, CheckReport};
pub use commands::drill::{
    describe_target as describe_drill_target, run as drill, CheckResult as DrillCheckResult,
    DrillCheck, DrillOptions, DrillReport, Expectation as DrillExpectation,
    LinkNotRestored as DrillLinkNotRestored, StepResult as DrillStepResult,
};
pub use commands::expire::{run as expire, ExpireOptions, ExpirePlan, Retention};
pub use commands::info::{gather as info, ClusterInfo, Info, LastDrill};
pub use commands::repair::{rebuild_catalog, RepairReport};
pub use commands::restore::{
    apply as apply_restore, archiving_summary as restore_archiving_summary, parse_target_time,
    plan as plan_restore, ArchiveMode, Archiving, Recovery, RecoveryTarget, RestoreOptions,
    RestorePlan, RestoreStats, TargetAction, TimelineTarget,
};
pub use commands::upgrade::{run as upgrade, UpgradeReport};
pub use commands::verify::{
    run as verify, BackupVerdict, Problem, ProblemKind, VerifyOptions, VerifyReport,
};
pub use error::{Error, Hint, Result, Setting};
pub use format::{BackupType, ChunkId};
pub use pg::Lsn;
pub use progress::{Phase, Progress, Silent};
pub use repo::Invocation;
pub use repo::{InitOutcome, Location, Passphrase, PassphraseSource, Repository, PASSPHRASE_ENV};
pub use store::s3::{S3Backend, S3Config, S3Credentials};
pub use store::{Backend, RequestCounts};
pub use util::{human, rfc3339, shell_word};

/// Internals for the crate's own benchmarks, crash tests and the storage
/// contract tests (every backend and decorator); not an API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub use crate::format::chunk::{compress, fingerprint, ChunkId, CHUNK_BLOCKS};
    pub use crate::format::crypt::{KeyFile, MasterKey};
    pub use crate::format::walsummary::{BlockUnion, WalSummary};
    pub use crate::format::BlockMap;
    pub use crate::pg::page::checksum as page_checksum;
    pub use crate::pg::wal::LongPageHeader;
    pub use crate::pg::walblocks::{RelFork, WalEvent};
    pub use crate::store::backend::{FileSource, ObjectWriter, Source};
    pub use crate::store::fault::{FaultBackend, HookBackend};
    pub use crate::store::s3::BUFFER_MAX as S3_BUFFER_MAX;
    pub use crate::store::{Backend, LocalBackend, Ownership, SealedBackend};
}
