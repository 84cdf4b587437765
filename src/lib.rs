//! pgstrata: an incremental, block-granular, deduplicating physical backup
//! repository for PostgreSQL.
//!
//! The library holds all logic; the `pgstrata` binary only parses arguments,
//! sets up logging and calls the functions re-exported here, which are the
//! whole public API. Modules are private and layered one way (see
//! `docs/design.md`): `pg` → `format` → `store` → `catalog` → `repo` →
//! commands (`archive`, `backup`, `restore`, `expire`, `verify`, `check`,
//! `info`, `repair`) → `drill` (which composes restore and a private
//! server), with `error`, `util` and `progress` usable by all.
#![forbid(unsafe_code)]

mod archive;
mod backup;
mod catalog;
mod check;
mod drill;
mod error;
mod expire;
mod format;
mod info;
mod pg;
mod progress;
mod repair;
mod repo;
mod restore;
mod store;
mod upgrade;
mod util;
mod verify;

pub use archive::{
    get as archive_get, get_prefetched as archive_get_prefetched, push as archive_push,
    push_async as archive_push_async, run_prefetcher as archive_prefetcher,
    run_pusher as archive_pusher, AsyncOutcome, AsyncPush, Prefetch, PushOutcome, PusherStats,
    QueueFull,
};
pub use backup::{run as backup, BackupOptions, BackupReport};
pub use catalog::{Compacted, ExpireLog, HistoryRow};
pub use check::{run as check, CheckOptions, CheckReport};
pub use drill::{
    describe_target as describe_drill_target, run as drill, CheckResult as DrillCheckResult,
    DrillCheck, DrillOptions, DrillReport, Expectation as DrillExpectation,
    StepResult as DrillStepResult,
};
pub use error::{Error, Result};
pub use expire::{run as expire, ExpireOptions, ExpirePlan, Retention};
pub use format::{BackupType, ChunkId};
pub use info::{gather as info, render_text as render_info, Info};
pub use pg::Lsn;
pub use progress::{Bar, Lines, Progress, Silent};
pub use repair::{rebuild_catalog, RepairReport};
pub use repo::{InitOutcome, Location, Passphrase, PassphraseSource, Repository, PASSPHRASE_ENV};
pub use restore::{
    apply as apply_restore, archiving_summary as restore_archiving_summary, parse_target_time,
    plan as plan_restore, ArchiveMode, Recovery, RecoveryTarget, RestoreOptions, RestorePlan,
    RestoreStats, TargetAction, TimelineTarget,
};
pub use store::s3::{S3Backend, S3Config, S3Credentials};
pub use store::{Backend, RequestCounts};
pub use upgrade::{run as upgrade, UpgradeReport};
pub use util::human;
pub use verify::{run as verify, BackupVerdict, Problem, ProblemKind, VerifyOptions, VerifyReport};

/// Internals for the crate's own benchmarks and crash tests; not an API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    pub use crate::format::chunk::{compress, fingerprint, ChunkId, CHUNK_BLOCKS};
    pub use crate::format::crypt::{KeyFile, MasterKey};
    pub use crate::format::BlockMap;
    pub use crate::pg::page::checksum as page_checksum;
    pub use crate::pg::wal::LongPageHeader;
    pub use crate::store::fault::{FaultBackend, HookBackend};
    pub use crate::store::Backend;
}
