//! Shared test harness: throwaway PostgreSQL clusters on private Unix
//! sockets, repositories, and running the real `pgstrata` binary.
//!
//! When the tests run as root (CI does), server commands run as the
//! `postgres` user through `runuser`, and the directories are handed to it.
//! A missing PostgreSQL is a failure with a clear message, never a skip.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub use crate::expect::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_pgstrata");

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

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

/// The server binaries of one major, as installed by `scripts/install-pg.sh`.
/// Panics with what to run when they are missing: never a skip.
pub fn pg_bindir_for(major: u32) -> PathBuf {
    let dir = pg_root().join(major.to_string()).join("bin");
    for tool in ["initdb", "pg_ctl", "postgres"] {
        assert!(
            dir.join(tool).is_file(),
            "PostgreSQL {major} server binaries not found ({} is missing): \
             run scripts/install-pg.sh (as root) to install them",
            dir.join(tool).display()
        );
    }
    let v = server_major(&dir);
    assert_eq!(
        v,
        major,
        "{} holds PostgreSQL {v}, not {major}: rerun scripts/install-pg.sh",
        dir.display()
    );
    dir
}

/// The major of the server binaries in `bindir` (`postgres --version`).
pub fn server_major(bindir: &Path) -> u32 {
    let out = run_as_pg(&bindir.join("postgres"), &["--version"]);
    check(&out, "postgres --version");
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 17.10" or "... 15.18 (Debian 15.18-0+deb12u1)"
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the major from {text:?}"))
}

/// Run a server-side command, as `postgres` when we are root.
pub fn run_as_pg(program: &Path, args: &[&str]) -> Output {
    let out = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .output()
    } else {
        Command::new(program).args(args).output()
    };
    out.unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Hand a path to the postgres user (when root).
pub fn give_to_pg(path: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(st.success(), "chown {}", path.display());
    }
}

/// A temporary directory with a short path (Unix socket paths are limited),
/// traversable by the postgres user.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pgs")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        give_to_pg(dir.path());
        Scratch { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// A new directory owned by postgres.
    pub fn pg_dir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        give_to_pg(&p);
        p
    }
}

/// Run the pgstrata binary.
pub fn pgstrata(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("PGSTRATA_REPO")
        .env_remove("PGSTRATA_CONFIG")
        .output()
        .expect("run pgstrata")
}

pub fn pgstrata_ok(args: &[&str]) -> String {
    let o = pgstrata(args);
    check(&o, &format!("pgstrata {}", args.join(" ")));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A repository owned by postgres (so the server's archive_command can write).
pub struct Repo {
    /// The directory; for a repository in object storage, an unused one.
    pub path: PathBuf,
    /// The passphrase file of an encrypted repository.
    pub pass: Option<PathBuf>,
    /// `s3://...` for a repository in the test S3 server.
    pub url: Option<String>,
}

/// Where a test's repository lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
}

impl Kind {
    pub fn repo(self, scratch: &Scratch) -> Repo {
        match self {
            Kind::Local => Repo::new(scratch),
            Kind::S3 => Repo::s3(scratch, "repo"),
        }
    }
}

impl Repo {
    pub fn new(scratch: &Scratch) -> Self {
        Repo::named(scratch, "repo")
    }
    /// A second repository in the same scratch directory.
    pub fn named(scratch: &Scratch, name: &str) -> Self {
        let path = scratch.pg_dir(name);
        pgstrata_ok(&["--repo", path.to_str().unwrap(), "init"]);
        Repo {
            path,
            pass: None,
            url: None,
        }
    }
    /// A repository under a new prefix of the test S3 server's bucket.
    pub fn s3(scratch: &Scratch, name: &str) -> Self {
        let url = crate::objstore::new_url(name);
        pgstrata_ok(&["--repo", &url, "init"]);
        Repo {
            path: scratch.path().join(name),
            pass: None,
            url: Some(url),
        }
    }
    /// An encrypted repository; its passphrase file (mode 0600, the
    /// server's user's, for archive_command) is `scratch/<name>.pass`.
    pub fn encrypted(scratch: &Scratch, name: &str) -> Self {
        let path = scratch.pg_dir(name);
        let pass = scratch.path().join(format!("{name}.pass"));
        std::fs::write(&pass, "correct horse battery staple\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        give_to_pg(&pass);
        pgstrata_ok(&[
            "--repo",
            path.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
            "init",
            "--encrypt",
        ]);
        Repo {
            path,
            pass: Some(pass),
            url: None,
        }
    }
    /// The arguments that unlock this repository (none for a plain one).
    pub fn unlock(&self) -> Vec<&str> {
        match &self.pass {
            Some(p) => vec!["--passphrase-file", p.to_str().unwrap()],
            None => vec![],
        }
    }
    pub fn arg(&self) -> &str {
        match &self.url {
            Some(u) => u,
            None => self.path.to_str().unwrap(),
        }
    }
    pub fn open(&self) -> pgstrata::Repository {
        let src = self.pass.clone().map(pgstrata::PassphraseSource::File);
        let loc = match &self.url {
            None => pgstrata::Location::Local(self.path.clone()),
            Some(u) => crate::objstore::location(u, &self.path.with_extension("cache")),
        };
        pgstrata::Repository::open_at(&loc, src.as_ref()).expect("open repo")
    }
    /// Bytes the repository holds (every object; for a local one, every file).
    pub fn stored_bytes(&self) -> u64 {
        match &self.url {
            None => walkdir::WalkDir::new(&self.path)
                .into_iter()
                .flatten()
                .filter(|e| e.file_type().is_file())
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum(),
            Some(_) => self
                .open()
                .backend()
                .list("")
                .expect("list")
                .iter()
                .map(|(_, n)| n)
                .sum(),
        }
    }
    pub fn info_json(&self) -> serde_json::Value {
        let mut args = vec!["--repo", self.arg()];
        args.extend(self.unlock());
        args.extend(["info", "--output", "json"]);
        let out = pgstrata_ok(&args);
        serde_json::from_str(&out).expect("info json")
    }
    pub fn backups(&self) -> Vec<serde_json::Value> {
        self.info_json()["clusters"][0]["backups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A throwaway cluster on its own socket directory.
pub struct Cluster {
    pub pgdata: PathBuf,
    pub sockdir: PathBuf,
    pub log: PathBuf,
    /// The server binaries (initdb, pg_ctl, postgres) this cluster runs with.
    pub bindir: PathBuf,
    running: bool,
}

pub struct ClusterOpts<'a> {
    pub archive_to: Option<&'a Repo>,
    pub checksums: bool,
    pub extra_conf: &'a str,
    /// Server binaries of another major (default: `pg_bindir()`).
    pub bindir: Option<&'a Path>,
}

impl Default for ClusterOpts<'_> {
    fn default() -> Self {
        ClusterOpts {
            archive_to: None,
            checksums: true,
            extra_conf: "",
            bindir: None,
        }
    }
}

pub fn archive_command(repo: &Repo) -> String {
    format!(
        "{BIN} --repo {} {}archive-push %p",
        repo.arg(),
        repo.unlock()
            .iter()
            .map(|a| format!("{a} "))
            .collect::<String>()
    )
}

impl Cluster {
    /// initdb and start a new cluster in `scratch/name`.
    pub fn new(scratch: &Scratch, name: &str, opts: ClusterOpts<'_>) -> Self {
        let base = scratch.pg_dir(name);
        let pgdata = base.join("data");
        let mut args = vec![
            "-D",
            pgdata.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ];
        let bindir = opts.bindir.unwrap_or(pg_bindir()).to_path_buf();
        if opts.checksums {
            args.push("-k");
        } else if server_major(&bindir) >= 18 {
            // 18 turns data checksums on by default.
            args.push("--no-data-checksums");
        }
        check(&run_as_pg(&bindir.join("initdb"), &args), "initdb");
        // autovacuum off: a test's backups then see the test's own changes
        // only; a vacuum at a moment the scheduler picks (visibility map,
        // freezing) would rewrite pages between two backups whose sizes a
        // test compares.
        let mut conf = String::from(
            "\nlisten_addresses = ''\nfsync = off\nwal_level = replica\nmax_wal_senders = 4\n\
             autovacuum = off\n",
        );
        if let Some(repo) = opts.archive_to {
            conf.push_str(&format!(
                "archive_mode = on\narchive_command = '{}'\n",
                archive_command(repo)
            ));
        }
        conf.push_str(opts.extra_conf);
        append(&pgdata.join("postgresql.conf"), &conf);
        let mut c = Cluster::at(base, pgdata);
        c.bindir = bindir;
        c.start_ok();
        c
    }

    /// A new cluster whose WAL is archived into `repo`.
    pub fn archiving(scratch: &Scratch, name: &str, repo: &Repo) -> Self {
        Cluster::new(
            scratch,
            name,
            ClusterOpts {
                archive_to: Some(repo),
                ..Default::default()
            },
        )
    }

    /// A cluster over an existing (e.g. restored) data directory, not started.
    pub fn at(base: PathBuf, pgdata: PathBuf) -> Self {
        Cluster {
            sockdir: base.clone(),
            log: base.join("server.log"),
            pgdata,
            bindir: pg_bindir().to_path_buf(),
            running: false,
        }
    }

    pub fn start(&mut self) -> Output {
        self.start_with("-c listen_addresses=''")
    }

    /// Start with extra server options (`-c name=value ...`) on top of the
    /// private socket directory.
    pub fn start_with(&mut self, extra: &str) -> Output {
        let opts = format!(
            "-c unix_socket_directories={} {extra}",
            self.sockdir.display()
        );
        let out = run_as_pg(
            &self.bindir.join("pg_ctl"),
            &[
                "-D",
                self.pgdata.to_str().unwrap(),
                "-l",
                self.log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "120",
                "start",
            ],
        );
        if out.status.success() {
            self.running = true;
        }
        out
    }

    pub fn start_ok(&mut self) {
        let out = self.start();
        if !out.status.success() {
            panic!(
                "pg_ctl start failed:\n{}\nlog:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if self.running {
            let out = run_as_pg(
                &self.bindir.join("pg_ctl"),
                &[
                    "-D",
                    self.pgdata.to_str().unwrap(),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "120",
                    "stop",
                ],
            );
            check(&out, "pg_ctl stop");
            self.running = false;
        }
    }

    pub fn conninfo(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres",
            self.sockdir.display()
        )
    }

    pub fn client_db(&self, db: &str) -> postgres::Client {
        let ci = format!("host={} user=postgres dbname={db}", self.sockdir.display());
        let mut last = None;
        for _ in 0..50 {
            match postgres::Client::connect(&ci, postgres::NoTls) {
                Ok(c) => return c,
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
        panic!(
            "cannot connect to {ci}: {:?}\nlog:\n{}",
            last,
            self.log_text()
        );
    }

    pub fn client(&self) -> postgres::Client {
        self.client_db("postgres")
    }

    pub fn exec(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error().map(|d| d.message())));
    }

    pub fn exec_db(&self, db: &str, sql: &str) {
        self.client_db(db)
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error().map(|d| d.message())));
    }

    /// `CREATE TABLESPACE name` in the new directory `scratch/dir`; returns
    /// the directory and the tablespace's OID.
    pub fn create_tablespace(&self, scratch: &Scratch, name: &str, dir: &str) -> (PathBuf, String) {
        let path = scratch.pg_dir(dir);
        self.exec(&format!(
            "CREATE TABLESPACE {name} LOCATION '{}'",
            path.display()
        ));
        let oid = self.query_one(&format!(
            "SELECT oid::text FROM pg_tablespace WHERE spcname = '{name}'"
        ));
        (path, oid)
    }

    pub fn query_one(&self, sql: &str) -> String {
        let row = self
            .client()
            .query_one(sql, &[])
            .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error().map(|d| d.message())));
        row.get::<_, String>(0)
    }

    /// The server's clock now, as a recovery target time in UTC.
    pub fn now_utc(&self) -> String {
        self.query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
        )
    }

    /// Switch WAL and wait until the finished segment is archived.
    pub fn switch_wal_and_wait(&self, repo: &Repo) {
        // A switch with no WAL since the last one is a no-op that names the
        // next, unfinished segment: write a record first.
        self.query_one("SELECT pg_logical_emit_message(false, 'test', 'switch')::text");
        let seg = self.query_one("SELECT pg_walfile_name(pg_switch_wal())");
        let r = repo.open();
        // The cluster's current WAL archive: `main`, or `main~N` after
        // `pgstrata upgrade`.
        let history = repo.info_json()["clusters"][0]["history"]
            .as_array()
            .map(|h| h.len())
            .unwrap_or(1);
        let wal_id = match history {
            0 | 1 => "main".to_string(),
            n => format!("main~{n}"),
        };
        // Deadlines here are generous: a loaded machine is slow, not wrong.
        for _ in 0..1800 {
            if r.wal_has(&wal_id, &seg).unwrap() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "segment {seg} was not archived to {wal_id} (it has {:?}); log:\n{}",
            r.wal_names(&wal_id),
            self.log_text()
        );
    }

    pub fn backup(&self, repo: &Repo, extra: &[&str]) -> Output {
        let args = self.backup_args(repo, extra);
        pgstrata(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The command line of a backup of this cluster into `repo`.
    pub fn backup_args(&self, repo: &Repo, extra: &[&str]) -> Vec<String> {
        let ci = self.conninfo();
        let mut args = vec!["--repo", repo.arg()];
        args.extend(repo.unlock());
        args.extend([
            "backup",
            "--pgdata",
            self.pgdata.to_str().unwrap(),
            "--dbname",
            &ci,
            "--start-fast",
        ]);
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect()
    }

    pub fn backup_ok(&self, repo: &Repo, extra: &[&str]) -> String {
        let o = self.backup(repo, extra);
        check(&o, "pgstrata backup");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// An ordered hash of every user table of every database: what a user
    /// would compare between source and restored cluster.
    pub fn table_hashes(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let dbs: Vec<String> = self
            .client()
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for db in dbs {
            let mut c = self.client_db(&db);
            let tables: Vec<String> = c
                .query(
                    "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                     WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            for t in tables {
                let sql = format!(
                    "SELECT count(*)::text || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
                );
                let h: String = c.query_one(sql.as_str(), &[]).unwrap().get(0);
                out.insert(format!("{db}/{t}"), h);
            }
        }
        out
    }

    /// pg_amcheck over every database (installs amcheck where missing).
    pub fn amcheck(&self) {
        let out = run_as_pg(
            &client_tool("pg_amcheck"),
            &[
                "-h",
                self.sockdir.to_str().unwrap(),
                "-U",
                "postgres",
                "--all",
                "--install-missing",
                "--heapallindexed",
            ],
        );
        check(&out, "pg_amcheck");
    }

    /// pg_checksums --check on the stopped cluster.
    pub fn checksums_ok(&self) {
        let out = run_as_pg(
            &self.bindir.join("pg_checksums"),
            &["--check", "-D", self.pgdata.to_str().unwrap()],
        );
        check(&out, "pg_checksums --check");
    }

    pub fn wait_for_consistency(&self) {
        for _ in 0..1800 {
            if let Ok(mut c) = postgres::Client::connect(&self.conninfo(), postgres::NoTls) {
                if let Ok(r) = c.query_one("SELECT pg_is_in_recovery()", &[]) {
                    if !r.get::<_, bool>(0) {
                        return;
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "restored cluster never finished recovery; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = run_as_pg(
                &self.bindir.join("pg_ctl"),
                &[
                    "-D",
                    self.pgdata.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
    }
}

pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Restore with the CLI into `scratch/name/data` and return the (stopped)
/// cluster over it. The restored copy does not archive into the repository.
pub fn restore(scratch: &Scratch, repo: &Repo, name: &str, extra: &[&str]) -> Cluster {
    // `--archive-mode off` is the default; the append keeps it so for a test
    // that passes `--archive-mode preserve` in `extra`.
    let c = restore_into(scratch, repo, name, extra);
    append(&c.pgdata.join("postgresql.conf"), "\narchive_mode = off\n");
    c
}

/// Like `restore`, but the restored cluster keeps the source's archiving
/// settings (`--archive-mode preserve`: it archives into the same repository
/// once promoted).
pub fn restore_archiving(scratch: &Scratch, repo: &Repo, name: &str, extra: &[&str]) -> Cluster {
    restore_into(
        scratch,
        repo,
        name,
        &[&["--archive-mode", "preserve"][..], extra].concat(),
    )
}

fn restore_into(scratch: &Scratch, repo: &Repo, name: &str, extra: &[&str]) -> Cluster {
    let base = scratch.pg_dir(name);
    let pgdata = base.join("data");
    let mut args = vec!["--repo", repo.arg()];
    args.extend(repo.unlock());
    args.extend(["restore", "--pgdata", pgdata.to_str().unwrap()]);
    args.extend_from_slice(extra);
    pgstrata_ok(&args);
    give_to_pg(&base);
    Cluster::at(base, pgdata)
}

/// Load a mixed data set: several tables, indexes, TOAST values.
pub fn load_sample(c: &Cluster, rows: i64) {
    c.exec(&format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance numeric NOT NULL, owner text);
         INSERT INTO accounts SELECT g, g * 1.5, 'owner ' || g FROM generate_series(1, {rows}) g;
         CREATE INDEX accounts_owner ON accounts (owner);
         CREATE TABLE docs (id serial PRIMARY KEY, body text, meta jsonb);
         INSERT INTO docs (body, meta) SELECT string_agg(md5(g::text || ':' || i), '') , jsonb_build_object('g', g)
           FROM generate_series(1, {docs}) g, generate_series(1, 120) i GROUP BY g;
         CREATE TABLE events (ts timestamptz, kind text, payload bytea);
         INSERT INTO events SELECT now() - g * interval '1 second', (ARRAY['a','b','c'])[1 + g % 3], decode(md5(g::text), 'hex')
           FROM generate_series(1, {rows}) g;
         CREATE INDEX events_ts ON events (ts);
         CHECKPOINT;",
        docs = (rows / 50).max(10)
    ));
}

/// Restore with `args`, start the result, wait until it is out of recovery
/// and check it holds exactly `want`. Returns the running cluster.
pub fn restore_matches(
    scratch: &Scratch,
    repo: &Repo,
    name: &str,
    args: &[&str],
    want: &BTreeMap<String, String>,
) -> Cluster {
    let mut dst = restore(scratch, repo, name, args);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(
        &dst.table_hashes(),
        want,
        "restore with {args:?} gave other data"
    );
    dst
}
