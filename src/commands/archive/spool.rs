//! Asynchronous `archive-push`: PostgreSQL's `archive_command` calls a quick
//! foreground per file, while one background pusher per cluster reads ahead
//! through `pg_wal/archive_status/*.ready` and pushes several files at once.
//!
//! ```text
//! SPOOL/<cluster>/pusher.lock      flock held by the running pusher
//! SPOOL/<cluster>/out/<name>.ok    <name> is durable in the repository; holds the
//!                                  BLAKE3 (hex) of the bytes pushed, then the
//!                                  file's identity when it was read (below)
//! SPOOL/<cluster>/out/<name>.error the pusher's last failure for <name>, one line
//! ```
//!
//! Invariants:
//! - The foreground acknowledges a file (exits 0) only when a `.ok` says it
//!   is durable in the repository *and* its hash is the hash of the file
//!   PostgreSQL asks about now; a stale `.ok` is removed and the file pushed
//!   again (which the repository refuses if the archived content differs).
//!   The hash is compared without reading the file when the `.ok` names the
//!   file's identity (device, inode, size, modification and change times in
//!   nanoseconds), the same before and after the pusher read it, and the file
//!   still has it: the file is then the one that was read, because PostgreSQL
//!   never rewrites a segment it marked ready, and a new life of the name
//!   (a recycled or restored file) is a new inode or a new change time. Any
//!   difference, or an `.ok` without identity, falls back to hashing the file.
//! - The pusher writes `.ok` only after `push` returned, and `push` is atomic
//!   and duplicate-safe. Killing either process at any point therefore loses
//!   nothing: PostgreSQL keeps the file until acknowledged, the next call
//!   starts a new pusher, and a repeated push finds the same content archived.
//! - The foreground never opens the repository (no catalog, no passphrase):
//!   only the pusher does.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{file_name, push_data, PushOutcome};
use crate::error::{Error, IoContext, Result};
use crate::format::chunk::hex;
use crate::pg::WalFileName;
use crate::repo::{check_cluster_name, Repository};
use crate::util::{human, try_flock, write_replace};

/// What a full queue does: PostgreSQL keeps the WAL and retries (the default),
/// or the file is acknowledged without being archived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFull {
    Retry,
    Drop,
}

/// The foreground's settings.
#[derive(Clone, Debug)]
pub struct AsyncPush {
    pub spool: PathBuf,
    pub cluster: String,
    /// How long to wait for the pusher to report on this file.
    pub timeout: Duration,
    /// Bytes of WAL waiting in `pg_wal` (`.ready` files) beyond which the
    /// queue is full; 0 for no limit.
    pub queue_max: u64,
    pub queue_full: QueueFull,
    /// The pusher's command line (program first), started when none runs.
    pub worker: Vec<OsString>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AsyncOutcome {
    /// Durable in the repository.
    Pushed,
    /// Acknowledged without archiving: the queue was full (`QueueFull::Drop`).
    Dropped { queued: u64 },
}

const POLL: Duration = Duration::from_millis(20);
/// A pusher with nothing to do for this long exits.
const IDLE: Duration = Duration::from_secs(3);

/// Create `spool/<cluster>/<sub>` (0700) and return it.
pub(super) fn spool_dir(spool: &Path, cluster: &str, sub: &Path) -> Result<PathBuf> {
    check_cluster_name(cluster)?;
    let dir = spool.join(cluster).join(sub);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            Error::invalid(format!(
                "cannot use spool directory {}: {e} (set spool-dir)",
                spool.display()
            ))
        })?;
    Ok(dir)
}

fn cluster_dir(spool: &Path, cluster: &str) -> Result<PathBuf> {
    spool_dir(spool, cluster, Path::new("out"))?;
    Ok(spool.join(cluster))
}

/// Archive `path` through the background pusher (PostgreSQL's %p, relative
/// to the data directory, so its directory is `pg_wal`).
pub fn push_async(opts: &AsyncPush, path: &Path) -> Result<AsyncOutcome> {
    let name = file_name(path)?;
    WalFileName::parse(&name)?;
    let dir = cluster_dir(&opts.spool, &opts.cluster)?;
    let out = dir.join("out");
    let mut file = ThisFile {
        path,
        identity: Identity::of(path)?,
        hash: None,
    };
    let pg_wal = path.parent().filter(|p| !p.as_os_str().is_empty());
    let pg_wal = pg_wal.unwrap_or(Path::new("."));
    let deadline = Instant::now() + opts.timeout;
    let mut last_spawn: Option<Instant> = None;
    // A full queue is judged only once the pusher has failed this file or
    // not pushed it in time: a repository that answers again drains the
    // queue, and nothing it could take is dropped.
    let full = || -> Result<Option<u64>> {
        if opts.queue_max == 0 {
            return Ok(None);
        }
        let queued = queued_bytes(pg_wal)?;
        Ok((queued > opts.queue_max).then_some(queued))
    };
    loop {
        match take_result(&out, &name, &mut file)? {
            Some(Ok(())) => return Ok(AsyncOutcome::Pushed),
            Some(Err(e)) => {
                return match full()? {
                    Some(queued) => queue_full(opts, &name, queued, &e.to_string()),
                    None => Err(e),
                }
            }
            None => {}
        }
        if last_spawn.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            ensure_pusher(&dir, &opts.worker)?;
            last_spawn = Some(Instant::now());
        }
        if Instant::now() >= deadline {
            if let Some(queued) = full()? {
                return queue_full(opts, &name, queued, "the pusher did not push it in time");
            }
            return Err(Error::Timeout(format!(
                "asynchronous archive-push of {name} did not finish within {} s (the pusher's \
                 errors are in the server log); PostgreSQL will retry",
                opts.timeout.as_secs()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// A file's identity: (device, inode, size, mtime ns, ctime ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity([i128; 5]);

impl Identity {
    fn of(path: &Path) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).at(path)?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Ok(Identity([
            i128::from(m.dev()),
            i128::from(m.ino()),
            i128::from(m.size()),
            ns(m.mtime(), m.mtime_nsec()),
            ns(m.ctime(), m.ctime_nsec()),
        ]))
    }

    fn encode(&self) -> String {
        let f = self.0.map(|v| v.to_string());
        f.join(" ")
    }

    fn decode(s: &str) -> Option<Self> {
        let v: Vec<i128> = s
            .split(' ')
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(Identity(v.try_into().ok()?))
    }
}

/// The `.ok` a pusher writes: the hash, and the identity when it held
/// still while the file was read.
fn ok_record(hash: &[u8; 32], identity: Option<Identity>) -> String {
    match identity {
        Some(i) => format!("{}\n{}\n", hex(hash), i.encode()),
        None => format!("{}\n", hex(hash)),
    }
}

/// The file PostgreSQL asks about now; hashed only when needed.
struct ThisFile<'a> {
    path: &'a Path,
    identity: Identity,
    hash: Option<String>,
}

impl ThisFile<'_> {
    /// Is the file the one an `.ok` record describes?
    fn matches(&mut self, record: &str) -> Result<bool> {
        let mut lines = record.lines();
        let hash = lines.next().unwrap_or("").trim();
        if lines.next().and_then(Identity::decode) == Some(self.identity) {
            return Ok(true);
        }
        if self.hash.is_none() {
            let data = std::fs::read(self.path).at(self.path)?;
            self.hash = Some(hex(crate::format::tailhash::hash(&data).as_bytes()));
        }
        Ok(self.hash.as_deref() == Some(hash))
    }
}

/// The pusher's verdict on `name`, if it has one.
fn take_result(out: &Path, name: &str, file: &mut ThisFile) -> Result<Option<Result<()>>> {
    let ok = out.join(format!("{name}.ok"));
    match std::fs::read_to_string(&ok) {
        Ok(record) if file.matches(&record)? => {
            std::fs::remove_file(&ok).at(&ok)?;
            return Ok(Some(Ok(())));
        }
        // From another life of this file name: push it again.
        Ok(_) => std::fs::remove_file(&ok).at(&ok)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(ok, e)),
    }
    let err = out.join(format!("{name}.error"));
    match std::fs::read_to_string(&err) {
        Ok(msg) => {
            let _ = std::fs::remove_file(&err);
            Ok(Some(Err(Error::refused(format!(
                "asynchronous archive-push of {name} failed: {}",
                msg.trim()
            )))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(err, e)),
    }
}

fn queue_full(opts: &AsyncPush, name: &str, queued: u64, why: &str) -> Result<AsyncOutcome> {
    let what = format!(
        "the archive queue is full: {} of WAL waits in pg_wal (archive-queue-max {}) and {why}",
        human(queued),
        human(opts.queue_max)
    );
    match opts.queue_full {
        QueueFull::Retry => Err(Error::refused(format!(
            "{what}: {name} stays in pg_wal and PostgreSQL retries (pg_wal grows until the \
             repository answers)"
        ))),
        QueueFull::Drop => {
            tracing::error!(
                "{what}: DROPPING {name} (archive-queue-full = drop): it is NOT archived; \
                 point-in-time recovery across it is impossible until the next backup"
            );
            Ok(AsyncOutcome::Dropped { queued })
        }
    }
}

/// Bytes of the files `pg_wal/archive_status` marks as waiting.
fn queued_bytes(pg_wal: &Path) -> Result<u64> {
    Ok(ready_names(pg_wal)?
        .iter()
        .filter_map(|n| std::fs::metadata(pg_wal.join(n)).ok())
        .map(|m| m.len())
        .sum())
}

/// The files PostgreSQL has marked ready for archiving, oldest first
/// (history files first: a timeline's history precedes its segments).
fn ready_names(pg_wal: &Path) -> Result<Vec<String>> {
    let status = pg_wal.join("archive_status");
    let mut names: Vec<String> = match std::fs::read_dir(&status) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".ready")
                    .map(str::to_string)
            })
            .filter(|n| WalFileName::parse(n).is_ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io(status, e)),
    };
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    Ok(names)
}

/// Start a pusher unless one holds the lock.
fn ensure_pusher(dir: &Path, worker: &[OsString]) -> Result<()> {
    let lock = dir.join("pusher.lock");
    if try_flock(&lock)?.is_none() {
        return Ok(());
    }
    spawn_detached(worker, "the WAL pusher")
}

/// Start `cmd` in its own process group, detached from this one's stdin and
/// stdout (it outlives this process; its stderr still reaches the log).
pub(super) fn spawn_detached(cmd: &[OsString], what: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| Error::internal(format!("no command line for {what}")))?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::internal(format!("cannot start {what}: {e}")))?;
    Ok(())
}

/// What a pusher did before it went idle.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PusherStats {
    pub pushed: usize,
    pub already: usize,
    pub failed: usize,
}

/// The background pusher: push what `pg_wal` marks ready, `workers` files
/// at a time, until there has been nothing to do for a few seconds. Returns
/// `None` at once when another pusher holds the lock.
pub fn run_pusher(
    repo: &Repository,
    cluster: &str,
    pg_wal: &Path,
    spool: &Path,
    workers: usize,
    level: i32,
) -> Result<Option<PusherStats>> {
    let dir = cluster_dir(spool, cluster)?;
    let Some(_lock) = try_flock(&dir.join("pusher.lock"))? else {
        return Ok(None);
    };
    let out = dir.join("out");
    let stats = Mutex::new(PusherStats::default());
    // Failed names wait before their next try: (failures, last try).
    let backoff: Mutex<HashMap<String, (u32, Instant)>> = Mutex::new(HashMap::new());
    sweep(pg_wal, &out);
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < IDLE {
        let todo = pending(pg_wal, &out, &backoff)?;
        if todo.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..workers.max(1).min(todo.len()) {
                s.spawn(|| {
                    while let Some(name) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                        push_one(repo, cluster, pg_wal, &out, name, level, &stats, &backoff);
                    }
                });
            }
        });
        idle_since = Instant::now();
    }
    stats
        .into_inner()
        .map(Some)
        .map_err(|_| Error::internal("pusher statistics lock poisoned"))
}

/// How old a verdict must be before [`sweep`] may remove it.
const SWEEP_AGE: Duration = Duration::from_secs(60);

/// Remove what no foreground will ask for: verdicts (and temporary files of
/// killed pushers) of files PostgreSQL no longer marks ready, because they
/// were acknowledged, dropped, or pushed again in the moment between the
/// foreground taking the `.ok` and PostgreSQL marking the file done. Only
/// old entries go: PostgreSQL asks about a file only while it is ready.
fn sweep(pg_wal: &Path, out: &Path) {
    let Ok(ready) = ready_names(pg_wal) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(file) = file.to_str() else { continue };
        let name = file
            .strip_suffix(".ok")
            .or_else(|| file.strip_suffix(".error"))
            .or_else(|| {
                file.rsplit_once('.')
                    .filter(|(_, ext)| ext.starts_with("tmp"))
                    .map(|(base, _)| base)
            });
        let Some(name) = name else { continue };
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > SWEEP_AGE);
        if old && !ready.iter().any(|r| r == name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Ready files without a verdict, past their backoff.
fn pending(
    pg_wal: &Path,
    out: &Path,
    backoff: &Mutex<HashMap<String, (u32, Instant)>>,
) -> Result<Vec<String>> {
    let b = backoff
        .lock()
        .map_err(|_| Error::internal("pusher backoff lock poisoned"))?;
    Ok(ready_names(pg_wal)?
        .into_iter()
        .filter(|n| !out.join(format!("{n}.ok")).exists())
        .filter(|n| match b.get(n) {
            Some((fails, at)) => at.elapsed() >= Duration::from_secs(u64::from(*fails).min(30)),
            None => true,
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn push_one(
    repo: &Repository,
    cluster: &str,
    pg_wal: &Path,
    out: &Path,
    name: &str,
    level: i32,
    stats: &Mutex<PusherStats>,
    backoff: &Mutex<HashMap<String, (u32, Instant)>>,
) {
    let path = pg_wal.join(name);
    let r = Identity::of(&path).and_then(|before| {
        let data = std::fs::read(&path).at(&path)?;
        let held = Identity::of(&path).ok().filter(|after| *after == before);
        let (outcome, hash) = push_data(repo, cluster, name, &data, level)?;
        write_replace(
            &out.join(format!("{name}.ok")),
            ok_record(&hash, held).as_bytes(),
        )?;
        Ok(outcome)
    });
    let (Ok(mut st), Ok(mut b)) = (stats.lock(), backoff.lock()) else {
        return;
    };
    match r {
        Ok(o) => {
            b.remove(name);
            let _ = std::fs::remove_file(out.join(format!("{name}.error")));
            match o {
                PushOutcome::Stored => st.pushed += 1,
                PushOutcome::AlreadyArchived => st.already += 1,
            }
        }
        // PostgreSQL removed it meanwhile (archived by an earlier pusher and
        // acknowledged): nothing to report. Any other failure, a missing
        // repository file included, is reported and retried.
        Err(_) if !path.exists() => {}
        Err(e) => {
            st.failed += 1;
            tracing::warn!("archive-push of {name} failed: {e}");
            let _ = write_replace(&out.join(format!("{name}.error")), e.to_string().as_bytes());
            let entry = b.entry(name.to_string()).or_insert((0, Instant::now()));
            *entry = (entry.0 + 1, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::testkit::{fake_segment, Fixture, SYSTEM_ID};

    fn opts(spool: &Path, worker: Vec<OsString>) -> AsyncPush {
        AsyncPush {
            spool: spool.to_path_buf(),
            cluster: "main".into(),
            timeout: Duration::from_secs(5),
            queue_max: 0,
            queue_full: QueueFull::Retry,
            worker,
        }
    }

    fn pusher(f: &Fixture, wal: &Path, spool: &Path) -> PusherStats {
        run_pusher(&f.repo, "main", wal, spool, 2, 1)
            .unwrap()
            .expect("no other pusher holds the lock")
    }

    /// A pg_wal with `n` ready segments.
    fn pg_wal(f: &Fixture, n: u32) -> (PathBuf, Vec<String>) {
        let dir = f.scratch("pg_wal");
        std::fs::create_dir_all(dir.join("archive_status")).unwrap();
        let names: Vec<String> = (1..=n)
            .map(|i| format!("0000000100000000000000{i:02X}"))
            .collect();
        for name in &names {
            fake_segment(&dir, name, 0xD110, SYSTEM_ID);
            std::fs::write(dir.join("archive_status").join(format!("{name}.ready")), "").unwrap();
        }
        (dir, names)
    }

    #[test]
    fn the_pusher_pushes_ahead_and_the_foreground_acknowledges() {
        let f = Fixture::new();
        let (wal, names) = pg_wal(&f, 5);
        let spool = f.scratch("spool");
        let st = pusher(&f, &wal, &spool);
        assert_eq!(st.pushed, 5);
        for n in &names {
            assert!(f.repo.wal_has("main", n).unwrap(), "{n}");
        }
        // The foreground finds the verdicts; no pusher needed ("false" would fail).
        let o = opts(&spool, vec!["false".into()]);
        for n in &names {
            assert_eq!(push_async(&o, &wal.join(n)).unwrap(), AsyncOutcome::Pushed);
            assert!(!spool.join("main/out").join(format!("{n}.ok")).exists());
        }
        // While another pusher holds the lock, a second one returns at once.
        let held = try_flock(&spool.join("main/pusher.lock")).unwrap().unwrap();
        assert_eq!(
            run_pusher(&f.repo, "main", &wal, &spool, 2, 1).unwrap(),
            None
        );
        drop(held);
        // Old verdicts of files no longer ready are swept by the next pusher;
        // those of ready files, and new ones, stay.
        let out = spool.join("main/out");
        let aged = |file: &str| {
            let p = out.join(file);
            std::fs::write(&p, "x").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(std::time::SystemTime::now() - 2 * SWEEP_AGE)
                .unwrap();
            p
        };
        let gone = [
            aged("0000000100000000000000AA.ok"),
            aged("0000000100000000000000AB.error"),
            aged("0000000100000000000000AC.tmp4242"),
        ];
        let kept = [
            aged(&format!("{}.error", names[0])),
            out.join("0000000100000000000000AD.ok"),
        ];
        std::fs::write(&kept[1], "x").unwrap();
        sweep(&wal, &out);
        assert!(gone.iter().all(|p| !p.exists()));
        assert!(kept.iter().all(|p| p.exists()));
        // A second pusher over the same files: duplicate-safe.
        let st = pusher(&f, &wal, &spool);
        assert_eq!((st.pushed, st.already, st.failed), (0, 5, 0));
    }

    #[test]
    fn an_ok_vouches_only_for_the_file_the_pusher_read() {
        let f = Fixture::new();
        let (wal, names) = pg_wal(&f, 2);
        let spool = f.scratch("spool");
        pusher(&f, &wal, &spool);
        let out = spool.join("main/out");
        let record = std::fs::read_to_string(out.join(format!("{}.ok", names[0]))).unwrap();
        let identity = record.lines().nth(1).and_then(Identity::decode);
        assert_eq!(identity, Some(Identity::of(&wal.join(&names[0])).unwrap()));
        // Another life of names[1]: the same name and size, other bytes.
        let p = wal.join(&names[1]);
        let mut data = std::fs::read(&p).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, &data).unwrap();
        let o = AsyncPush {
            timeout: Duration::from_millis(200),
            ..opts(&spool, vec!["false".into()])
        };
        assert_eq!(
            push_async(&o, &wal.join(&names[0])).unwrap(),
            AsyncOutcome::Pushed
        );
        // Its .ok is stale: dropped, and nothing acknowledges the new bytes.
        let e = push_async(&o, &p).unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
        assert!(!out.join(format!("{}.ok", names[1])).exists());
        // An .ok without identity (from an older pusher) is checked by hash.
        std::fs::write(
            out.join(format!("{}.ok", names[1])),
            ok_record(&[0; 32], None),
        )
        .unwrap();
        assert!(matches!(push_async(&o, &p).unwrap_err(), Error::Timeout(_)));
        let hash = *crate::format::tailhash::hash(&data).as_bytes();
        std::fs::write(out.join(format!("{}.ok", names[1])), ok_record(&hash, None)).unwrap();
        assert_eq!(push_async(&o, &p).unwrap(), AsyncOutcome::Pushed);
    }

    #[test]
    fn a_stale_ok_is_not_trusted_and_errors_are_reported() {
        let f = Fixture::new();
        let (wal, names) = pg_wal(&f, 1);
        let spool = f.scratch("spool");
        let out = cluster_dir(&spool, "main").unwrap().join("out");
        std::fs::write(out.join(format!("{}.ok", names[0])), "00ff").unwrap();
        std::fs::write(
            out.join(format!("{}.error", names[0])),
            "repository unreachable",
        )
        .unwrap();
        let o = opts(&spool, vec!["false".into()]);
        let e = push_async(&o, &wal.join(&names[0])).unwrap_err();
        assert!(e.to_string().contains("repository unreachable"), "{e}");
        assert!(!out.join(format!("{}.ok", names[0])).exists());
        // Nothing pushes it ("false" is no pusher): a timeout, saying so.
        let o = AsyncPush {
            timeout: Duration::from_millis(200),
            ..o
        };
        let e = push_async(&o, &wal.join(&names[0])).unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
    }

    #[test]
    fn a_full_queue_retries_or_drops_loudly() {
        let f = Fixture::new();
        let (wal, names) = pg_wal(&f, 3);
        let spool = f.scratch("spool");
        let mut o = opts(&spool, vec!["false".into()]);
        o.queue_max = 1;
        o.timeout = Duration::from_millis(300);
        // No pusher pushed it in time: the queue is full.
        let e = push_async(&o, &wal.join(&names[0])).unwrap_err();
        assert!(
            e.to_string().contains("archive queue is full")
                && e.to_string().contains("did not push it in time"),
            "{e}"
        );
        o.queue_full = QueueFull::Drop;
        assert!(matches!(
            push_async(&o, &wal.join(&names[0])).unwrap(),
            AsyncOutcome::Dropped { .. }
        ));
        assert!(!f.repo.wal_has("main", &names[0]).unwrap());
        // The pusher failed it: dropped at once, the failure named.
        let out = spool.join("main/out");
        std::fs::write(out.join(format!("{}.error", names[1])), "no route to host").unwrap();
        o.timeout = Duration::from_secs(30);
        let t = Instant::now();
        assert!(matches!(
            push_async(&o, &wal.join(&names[1])).unwrap(),
            AsyncOutcome::Dropped { .. }
        ));
        assert!(t.elapsed() < Duration::from_secs(10));
        // A full queue drops nothing the repository takes.
        assert_eq!(pusher(&f, &wal, &spool).failed, 0);
        assert_eq!(
            push_async(&o, &wal.join(&names[2])).unwrap(),
            AsyncOutcome::Pushed
        );
        assert!(f.repo.wal_has("main", &names[2]).unwrap());
    }
}
