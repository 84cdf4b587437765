//! Small helpers every layer may use: the clock, human sizes, RFC 3339
//! times and the default worker count. Nothing here knows PostgreSQL or the
//! repository.

/// Now, as unix microseconds (0 if the clock is before 1970).
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Parallel workers by default: the CPUs, at most 8.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

/// Is process `pid` alive on this machine? (A process we may not signal is.)
pub(crate) fn process_alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid).is_some_and(|pid| {
        !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
    })
}

/// This machine's host name.
pub(crate) fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Is the process that recorded itself as `host`/`pid` known to be gone?
/// Only a process on this host can be checked; another host's is presumed
/// alive.
pub(crate) fn holder_gone(host: Option<&str>, pid: Option<u32>) -> bool {
    match (host, pid.and_then(|p| i32::try_from(p).ok())) {
        (Some(h), Some(pid)) if h == host_name() => !process_alive(pid),
        _ => false,
    }
}

/// The UTC civil time `secs` seconds after the epoch; None outside the
/// years -9999..=9999.
pub(crate) fn utc_datetime(secs: i64) -> Option<jiff::civil::DateTime> {
    // Civil arithmetic rather than `jiff::Timestamp`, whose range stops a
    // day short of the year 9999's end.
    let epoch = jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0);
    epoch
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .ok()
}

/// RFC 3339 UTC, to the second (rounded down), from unix microseconds.
/// A time outside the years -9999..=9999 reads as the epoch; one before
/// year 0, which RFC 3339 cannot write, as "".
pub fn rfc3339(us: i64) -> String {
    let t = utc_datetime(us.div_euclid(1_000_000))
        .unwrap_or(jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0));
    if t.year() < 0 {
        return String::new();
    }
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Quote a value for postgresql.conf.
pub(crate) fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quote a word for the shell that runs `restore_command`.
pub fn shell_word(v: &str) -> String {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// Bytes in binary units: `512 B`, `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A file this process holds an `flock` on, released when dropped or when
/// the process dies.
#[derive(Debug)]
pub(crate) struct Flock(std::fs::File);

impl Flock {
    /// Take over `file`, on which this process has just taken an `flock`.
    pub(crate) fn held(file: std::fs::File) -> Self {
        Self(file)
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // Unlock explicitly rather than by closing: a child forked meanwhile
        // by another thread holds a copy of the descriptor until it execs,
        // and the lock would stay taken until then.
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// Take an exclusive `flock` on `path` (created 0600 if missing) without
/// waiting: `None` when another process holds it.
pub(crate) fn try_flock(path: &std::path::Path) -> crate::error::Result<Option<Flock>> {
    use crate::error::IoContext;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .at(path)?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(Flock(f))),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => Ok(None),
        Err(e) => Err(crate::error::Error::io(path, e.into())),
    }
}

/// Whether [`write_whole_with`] waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename: it survives a crash of the system.
    Fsync,
    /// Leave writing to the kernel: for files whose reader asks again after a
    /// crash of the system (what `restore_command` hands PostgreSQL).
    PageCache,
}

/// Create the file `path` whole or not at all: `fill` writes a temporary
/// file beside it (named by the process and a counter, so that concurrent
/// writers of one name do not share it), which is fsynced if `durability`
/// asks for it and renamed over `path`. On any error the temporary file is
/// removed and `path` is untouched.
pub(crate) fn write_whole_with(
    path: &std::path::Path,
    durability: Durability,
    fill: impl FnOnce(&mut std::fs::File, &std::path::Path) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    use crate::error::IoContext;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.pgstrata-{}-{n}.tmp", std::process::id()));
    let r = (|| {
        // The file is made beside `path`: a missing or read-only directory
        // is reported as what the caller asked for.
        let mut f = std::fs::File::create(&tmp).at(path)?;
        fill(&mut f, &tmp)?;
        if durability == Durability::Fsync {
            f.sync_all().at(&tmp)?;
        }
        std::fs::rename(&tmp, path).at(path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Write `data` to `path` through a temporary file and a rename, so that a
/// reader sees all of it or nothing. Not fsynced: for files whose loss only
/// costs a retry.
pub(crate) fn write_replace(path: &std::path::Path, data: &[u8]) -> crate::error::Result<()> {
    use crate::error::IoContext;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123_456), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(-62_135_596_800_000_000), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799_000_000), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800_000_000), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-62_167_219_201_000_000), "");
        assert_eq!(rfc3339(i64::MIN), "1970-01-01T00:00:00Z");
        assert!(default_workers() >= 1);
        let me = host_name();
        assert!(!holder_gone(Some(&me), Some(std::process::id())));
        assert!(holder_gone(Some(&me), Some(i32::MAX as u32)));
        assert!(!holder_gone(
            Some("elsewhere.invalid"),
            Some(i32::MAX as u32)
        ));
        assert!(!holder_gone(None, None));
        assert_eq!(shell_word("/a/b-c.d"), "/a/b-c.d");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(quote(r"a'b\c"), r"'a''b\\c'");
    }

    #[test]
    fn whole_files_and_their_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        for durability in [Durability::Fsync, Durability::PageCache] {
            write_whole_with(&p, durability, |f, tmp| {
                std::io::Write::write_all(f, b"whole").map_err(|e| crate::error::Error::io(tmp, e))
            })
            .unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        }
        // A failed fill leaves the old file and no temporary one.
        let e = write_whole_with(&p, Durability::Fsync, |_, _| {
            Err(crate::error::Error::internal("no"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"whole");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        // A missing directory is named as the destination the caller gave.
        let missing = d.path().join("nodir").join("x");
        let e = write_whole_with(&missing, Durability::PageCache, |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&missing.display().to_string()) && !e.contains(".x.pgstrata"),
            "{e}"
        );
    }
}
