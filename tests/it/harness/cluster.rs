//! Throwaway clusters on private socket directories, restores of them
//! through the CLI, and a sample data set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use super::{
    append, check, client_tool, give_to_pg, pg_bindir, pgstrata, pgstrata_ok, run_as_pg,
    server_major, Repo, Scratch, BIN,
};

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
