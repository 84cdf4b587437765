//! A private PostgreSQL server over a restored data directory (for drills):
//! finding the right major's binaries, starting, waiting for recovery,
//! `pg_amcheck`, a user's read-only query, and stopping.
//!
//! Invariants:
//! - The server is reachable only through a Unix socket in a private
//!   directory (mode 0700, owned by the server's user): `listen_addresses`
//!   is empty, and a drill-only `pg_hba.conf` in that directory trusts that
//!   socket and nothing else. The restored `pg_hba.conf` is not used, so
//!   the production authentication setup never decides whether a drill can
//!   look at its own copy.
//! - It never touches anything of the production server: no archiving, no
//!   synchronous standby to wait for, no external pid file, no TCP, no
//!   logging collector (its log is the file the caller gives), and on 14 its
//!   own `stats_temp_directory`.
//! - It runs as the data directory's owner. When we are root the child drops
//!   to that uid and gid (std's `Command::uid`/`gid`, which also clears the
//!   supplementary groups, as `setpriv --clear-groups` does); a data
//!   directory owned by root is refused, since PostgreSQL refuses root.
//! - A `Server` dropped without [`Server::stop`] is stopped immediately
//!   (SIGQUIT), so no error path leaves a server behind.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls, SimpleQueryMessage};

use crate::error::{Error, Hint, IoContext, Result, Setting};
use crate::pg::{libpq, version};

/// Environment variables of libpq that must not steer a client tool away
/// from the private server.
const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGPASSWORD",
    "PGPASSFILE",
];

/// The major of the server binaries in `bindir` (`postgres --version`).
pub(crate) fn server_major(bindir: &Path) -> Result<u32> {
    let exe = bindir.join("postgres");
    let out = Command::new(&exe)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .at(&exe)?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 17.10" or "... 15.18 (Debian 15.18-0+deb12u1)"
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split(['.', 'b', 'r']).next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "{}: cannot read the PostgreSQL version from {:?}",
                exe.display(),
                text.trim()
            ))
        })
}

/// Where a major's server binaries usually are: `pg_config --bindir`, then
/// the Debian, RPM and source-install layouts.
fn candidates(major: u32) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        if o.status.success() {
            v.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        }
    }
    v.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    v.push(PathBuf::from(format!("/usr/pgsql-{major}/bin")));
    v.push(PathBuf::from("/usr/local/pgsql/bin"));
    v
}

/// The server binaries for `major`: `given` (which must be that major), or
/// the first candidate that is. `what` names who needs them (a backup).
pub(crate) fn bindir_for(major: u32, given: Option<&Path>, what: &str) -> Result<PathBuf> {
    if let Some(dir) = given {
        if !dir.join("postgres").is_file() {
            return Err(Error::setting(
                Setting::PgBindir,
                format!("{}: there is no postgres executable there", dir.display()),
            ));
        }
        let found = server_major(dir)?;
        if found != major {
            return Err(Error::setting(
                Setting::PgBindir,
                format!(
                    "{} holds PostgreSQL {found}, but {what} is PostgreSQL {major}: give \
                     PostgreSQL {major}'s binaries (nothing was done)",
                    dir.display()
                ),
            ));
        }
        return Ok(dir.to_path_buf());
    }
    let tried = candidates(major);
    for dir in &tried {
        if dir.join("postgres").is_file() && server_major(dir).ok() == Some(major) {
            return Ok(dir.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|d| d.display().to_string()).collect();
    Err(Error::NotFound(format!(
        "no PostgreSQL {major} server binaries for {what} (looked in {}): install them \
         (nothing was done)",
        list.join(", ")
    ))
    .hint(Hint::give(Setting::PgBindir, "DIR")))
}

/// A free TCP port number. The server listens on no TCP address, but its
/// socket file is named after the port, and a free one keeps it clear of
/// anything else's lock files.
pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).at("127.0.0.1:0")?;
    Ok(l.local_addr().at("127.0.0.1:0")?.port())
}

/// Who the server must run as: `None` when we are not root (it runs as
/// us), else the data directory's owner, refusing root itself.
pub(crate) fn run_as(pgdata: &Path) -> Result<Option<(u32, u32)>> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let m = fs::metadata(pgdata).at(pgdata)?;
    if m.uid() == 0 {
        return Err(Error::refused(format!(
            "{} is owned by root, and PostgreSQL does not run as root: the backup recorded \
             root as the data directory's owner",
            pgdata.display()
        )));
    }
    Ok(Some((m.uid(), m.gid())))
}

/// The default database user: the owner of the data directory (initdb
/// makes the user who runs it the bootstrap superuser), else `postgres`.
pub(crate) fn default_user(pgdata: &Path) -> String {
    fs::metadata(pgdata)
        .ok()
        .and_then(|m| libpq::user_name(m.uid()))
        .unwrap_or_else(|| "postgres".into())
}

/// A socket path longer than `sun_path` (108 bytes with its NUL) cannot
/// be bound: refuse such a socket directory before anything is done.
pub(crate) fn check_socket_dir(dir: &Path) -> Result<()> {
    let len = dir.as_os_str().len() + "/.s.PGSQL.65535.lock".len();
    if len > 107 {
        return Err(Error::invalid(format!(
            "{}: too long a path for a Unix socket directory (nothing was done)",
            dir.display()
        ))
        .hint(Hint::give(Setting::Scratch, "SHORTER_DIR")));
    }
    Ok(())
}

/// How to start the private server.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub bindir: PathBuf,
    pub major: u32,
    pub pgdata: PathBuf,
    /// Created here (0700, owned by the server's user); holds the socket
    /// and the drill's `pg_hba.conf`.
    pub sockdir: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    /// The database user to connect as.
    pub user: String,
    /// Extra `name = value` settings (e.g. a smaller `shared_buffers`).
    pub settings: Vec<(String, String)>,
}

pub(crate) struct Server {
    spec: Spec,
    child: Child,
    started: Instant,
    stopped: bool,
}

/// `-c` options that keep the server private (see the module invariants).
fn private_settings(spec: &Spec, hba: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("listen_addresses", String::new()),
        ("port", spec.port.to_string()),
        (
            "unix_socket_directories",
            format!("\"{}\"", spec.sockdir.display()),
        ),
        ("unix_socket_permissions", "0700".into()),
        ("hba_file", hba.display().to_string()),
        ("archive_mode", "off".into()),
        ("synchronous_standby_names", String::new()),
        ("external_pid_file", String::new()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("ssl", "off".into()),
        ("hot_standby", "on".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if version::has_stats_temp_directory(spec.major) {
        v.push(("stats_temp_directory".into(), "pg_stat_tmp".into()));
    }
    v.extend(spec.settings.iter().cloned());
    v
}

/// The rows of a query, each value as PostgreSQL prints it (None for NULL).
pub(crate) type TextRows = Vec<Vec<Option<String>>>;

/// Why [`Server::query_read_only`] returned no rows.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryFailure {
    #[error(transparent)]
    Connect(Error),
    #[error("session settings: {0}")]
    Settings(#[source] postgres::Error),
    #[error("the query failed: {}", server_words(.0))]
    Query(#[source] postgres::Error),
}

/// The server's severity and message for an error it reported (the
/// driver's `Display` says only "db error"), else the driver's message.
fn server_words(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

impl Server {
    /// Prepare the socket directory and start `postgres` in the background.
    pub(crate) fn start(spec: Spec) -> Result<Server> {
        let owner = run_as(&spec.pgdata)?;
        check_socket_dir(&spec.sockdir)?;
        fs::create_dir_all(&spec.sockdir).at(&spec.sockdir)?;
        fs::set_permissions(&spec.sockdir, fs::Permissions::from_mode(0o700)).at(&spec.sockdir)?;
        let hba = spec.sockdir.join("pg_hba.drill.conf");
        fs::write(
            &hba,
            "# pgstrata drill: the private socket only\nlocal all all trust\n",
        )
        .at(&hba)?;
        // Debian keeps postgresql.conf in /etc: the copy then has none, and
        // starts with the defaults (plus the restore's auto.conf).
        let conf = spec.pgdata.join("postgresql.conf");
        if !conf.exists() {
            fs::write(&conf, "# written by pgstrata drill: the backup had none\n").at(&conf)?;
        }
        if let Some((uid, gid)) = owner {
            for p in [&spec.sockdir, &hba, &conf] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).at(p)?;
            }
        }
        let log = File::create(&spec.log).at(&spec.log)?;
        let log2 = log.try_clone().at(&spec.log)?;
        let exe = spec.bindir.join("postgres");
        let mut cmd = Command::new(&exe);
        cmd.arg("-D").arg(&spec.pgdata);
        for (k, v) in private_settings(&spec, &hba) {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .current_dir(&spec.pgdata);
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().at(&exe)?;
        Ok(Server {
            spec,
            child,
            started: Instant::now(),
            stopped: false,
        })
    }

    /// The last lines of the server's log, for error messages.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.spec.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn config(&self, db: &str) -> Config {
        let mut c = Config::new();
        c.host_path(&self.spec.sockdir)
            .port(self.spec.port)
            .user(&self.spec.user)
            .dbname(db)
            .application_name("pgstrata drill")
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// A connection to database `db`.
    fn connect(&self, db: &str) -> Result<Client> {
        self.config(db).connect(NoTls).map_err(|e| {
            Error::pg(
                format!("connect to database {db:?} of the drill's server"),
                e,
            )
        })
    }

    /// Run `sql` (one statement, written by a user) in database `db`, in a
    /// session of its own that is read-only and cancels the statement after
    /// `timeout`: it can neither change the copy for what runs next nor hang
    /// the caller. The simple protocol returns every value as PostgreSQL
    /// prints it.
    pub(crate) fn query_read_only(
        &self,
        db: &str,
        sql: &str,
        timeout: Duration,
    ) -> Result<TextRows, QueryFailure> {
        let mut client = self.connect(db).map_err(QueryFailure::Connect)?;
        client
            .batch_execute(&format!(
                "SET default_transaction_read_only = on; SET statement_timeout = {}",
                timeout.as_millis()
            ))
            .map_err(QueryFailure::Settings)?;
        let msgs = client.simple_query(sql).map_err(QueryFailure::Query)?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// An error if the server process has exited.
    fn check_alive(&mut self, waiting_for: &str) -> Result<()> {
        if let Some(st) = self.child.try_wait().at(&self.spec.pgdata)? {
            self.stopped = true;
            return Err(Error::ServerFailed(format!(
                "the server stopped ({st}) before {waiting_for}; its log ({}) ends:\n{}",
                self.spec.log.display(),
                self.log_tail(8)
            )));
        }
        Ok(())
    }

    /// Wait until the server accepts connections (in recovery that means a
    /// consistent state) and then until it has left recovery (promoted).
    /// Returns both times since the start.
    pub(crate) fn wait_recovered(&mut self, timeout: Duration) -> Result<(Duration, Duration)> {
        let deadline = self.started + timeout;
        let mut consistent = None;
        loop {
            self.check_alive(if consistent.is_some() {
                "it left recovery"
            } else {
                "it reached a consistent state"
            })?;
            if let Ok(mut c) = self.connect("postgres") {
                let at = *consistent.get_or_insert_with(|| self.started.elapsed());
                let in_recovery: bool = c
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .map_err(|e| Error::pg("pg_is_in_recovery()", e))?
                    .get(0);
                if !in_recovery {
                    return Ok((at, self.started.elapsed()));
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the server did not {} within {} s; its log ({}) ends:\n{}",
                    if consistent.is_some() {
                        "leave recovery (reach the target and promote)"
                    } else {
                        "reach a consistent state"
                    },
                    timeout.as_secs(),
                    self.spec.log.display(),
                    self.log_tail(8)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `pg_amcheck --all --heapallindexed` (installing the amcheck extension
    /// where it is missing: this is a scratch copy). `Ok(Err(reason))` when
    /// it ran and found problems.
    pub(crate) fn amcheck(&self) -> Result<std::result::Result<String, String>> {
        let exe = self.spec.bindir.join("pg_amcheck");
        let mut cmd = Command::new(&exe);
        for k in LIBPQ_ENV {
            cmd.env_remove(k);
        }
        let out = cmd
            .arg("--host")
            .arg(&self.spec.sockdir)
            .args(["--port", &self.spec.port.to_string()])
            .args(["--username", &self.spec.user])
            .args(["--all", "--install-missing", "--heapallindexed"])
            .args(["--no-password"])
            .stdin(Stdio::null())
            .output()
            .at(&exe)?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let said = said.trim();
        if out.status.success() {
            Ok(Ok(said.to_string()))
        } else {
            let lines: Vec<&str> = said.lines().take(6).collect();
            Ok(Err(format!(
                "pg_amcheck {}: {}",
                out.status,
                lines.join(" | ")
            )))
        }
    }

    /// Fast shutdown (SIGINT), waiting up to `wait`; then immediate.
    pub(crate) fn stop(mut self, wait: Duration) -> Result<()> {
        self.signal(rustix::process::Signal::INT);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.child.try_wait().at(&self.spec.pgdata)?.is_some() {
                self.stopped = true;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.immediate();
        Err(Error::Timeout(format!(
            "the drill's server did not stop within {} s (fast shutdown); it was stopped \
             immediately",
            wait.as_secs()
        )))
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    fn immediate(&mut self) {
        if !self.stopped {
            self.signal(rustix::process::Signal::QUIT);
            let _ = self.child.wait();
            self.stopped = true;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.immediate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_settings_keep_it_private() {
        let spec = Spec {
            bindir: "/b".into(),
            major: 14,
            pgdata: "/d".into(),
            sockdir: "/s d".into(),
            log: "/l".into(),
            port: 5999,
            user: "postgres".into(),
            settings: vec![("shared_buffers".into(), "16MB".into())],
        };
        let s = private_settings(&spec, Path::new("/s d/hba"));
        let get = |k: &str| s.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("listen_addresses"), Some(""));
        assert_eq!(get("unix_socket_directories"), Some("\"/s d\""));
        assert_eq!(get("archive_mode"), Some("off"));
        assert_eq!(get("stats_temp_directory"), Some("pg_stat_tmp"));
        assert_eq!(get("shared_buffers"), Some("16MB"));
        let s15 = private_settings(&Spec { major: 15, ..spec }, Path::new("/h"));
        assert!(!s15.iter().any(|(k, _)| k == "stats_temp_directory"));
    }

    #[test]
    fn a_port_is_free() {
        assert!(free_port().unwrap() > 0);
    }
}
