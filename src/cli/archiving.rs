//! Settings of `archive-push` and `archive-get`, synchronous or through the
//! background pusher and prefetcher.

use std::path::PathBuf;
use std::time::Duration;

use pgstrata::QueueFull;

use super::args::{ArchiveGetArgs, ArchivePushArgs, GetWorkerArgs, PushWorkerArgs, QueueFullArg};
use super::settings::{level, usage, Run, R};

const DEFAULT_SPOOL: &str = "/var/spool/pgstrata";

/// How `archive-push --async` waits and queues.
pub struct AsyncSettings {
    pub spool: PathBuf,
    pub timeout: Duration,
    pub queue_max: u64,
    pub queue_full: QueueFull,
    pub workers: usize,
}

fn spool_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL))
}

pub fn push(a: ArchivePushArgs) -> R<Run> {
    let level = level(a.compress_level)?.unwrap_or(3);
    if !a.async_push {
        return Ok(Run::ArchivePush {
            path: a.path,
            level,
            async_push: None,
        });
    }
    let queue_full = match a.archive_queue_full {
        Some(QueueFullArg::Drop) => QueueFull::Drop,
        Some(QueueFullArg::Retry) | None => QueueFull::Retry,
    };
    let workers = a.workers.unwrap_or_else(pgstrata_workers);
    if workers == 0 {
        return usage("--workers must be at least 1");
    }
    let mib = a.archive_queue_max_mib.unwrap_or(4096);
    Ok(Run::ArchivePush {
        path: a.path,
        level,
        async_push: Some(AsyncSettings {
            spool: spool_dir(a.spool_dir),
            timeout: Duration::from_secs(a.archive_timeout.unwrap_or(60)),
            queue_max: mib.saturating_mul(1 << 20),
            queue_full,
            workers,
        }),
    })
}

fn pgstrata_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(8))
        .unwrap_or(2)
}

pub fn get(a: ArchiveGetArgs) -> R<Run> {
    if a.history == 0 {
        return usage("--history starts at 1");
    }
    Ok(Run::ArchiveGet {
        name: a.name,
        dest: a.dest,
        history: a.history,
        prefetch: prefetch(a.prefetch, a.spool_dir),
    })
}

pub fn push_worker(a: PushWorkerArgs) -> Run {
    Run::ArchivePushWorker {
        pg_wal: a.pg_wal,
        spool: a.spool_dir,
        workers: a.workers,
        level: a.compress_level,
    }
}

pub fn get_worker(a: GetWorkerArgs) -> Run {
    Run::ArchiveGetWorker {
        history: a.history,
        spool: a.spool_dir,
        count: a.prefetch,
        workers: a.workers,
        seg_size: a.segment_size,
    }
}

/// `archive-get`'s prefetching: (spool, segments ahead), if asked for.
pub fn prefetch(count: Option<usize>, spool: Option<PathBuf>) -> Option<(PathBuf, usize)> {
    match count.unwrap_or(0) {
        0 => None,
        n => Some((spool_dir(spool), n)),
    }
}
