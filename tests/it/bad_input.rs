//! Bad input gets a one-line error and changes nothing.

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

#[test]
fn repository_problems() {
    let s = Scratch::new();
    let missing = s.path().join("nope");
    fails_with(
        &pgstrata(&["--repo", missing.to_str().unwrap(), "info"]),
        "is not a pgstrata repository",
    );
    let plain = s.pg_dir("plain");
    std::fs::write(plain.join("file"), b"x").unwrap();
    fails_with(
        &pgstrata(&["--repo", plain.to_str().unwrap(), "info"]),
        "is not a pgstrata repository",
    );
    fails_with(
        &pgstrata(&["--repo", plain.to_str().unwrap(), "init"]),
        "not empty",
    );
    assert_eq!(
        std::fs::read_dir(&plain).unwrap().count(),
        1,
        "init wrote into a foreign directory"
    );

    let repo = Repo::new(&s);
    let o = pgstrata(&["--repo", repo.arg(), "init"]);
    check(&o, "second init");
    assert!(String::from_utf8_lossy(&o.stdout).contains("already"));

    // A repository written by a newer pgstrata.
    let marker = repo.path.join("pgstrata.repo");
    std::fs::write(&marker, "pgstrata repository format 99\n").unwrap();
    fails_with(
        &pgstrata(&["--repo", repo.arg(), "info"]),
        "written by a newer pgstrata (format 99",
    );
    std::fs::write(&marker, "pgstrata repository format 1\n").unwrap();
    // A catalog of a newer schema.
    let db = rusqlite::Connection::open(repo.path.join("catalog.db")).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    fails_with(
        &pgstrata(&["--repo", repo.arg(), "info"]),
        "written by a newer pgstrata (format 99",
    );

    // Usage errors exit 2.
    assert_eq!(
        pgstrata(&["--repo", repo.arg(), "frobnicate"])
            .status
            .code(),
        Some(2)
    );
    let o = pgstrata(&["info"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no repository given"));
}

#[test]
fn backup_refusals() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    // WAL archiving off: refused before anything starts.
    let off = Cluster::new(&s, "off", ClusterOpts::default());
    fails_with(&off.backup(&repo, &[]), "archive_mode is off");
    assert_no_backup_session(&off);

    // Archiving that never reaches the repository: the backup times out
    // naming the segment and the setting.
    let src = Cluster::new(
        &s,
        "src",
        ClusterOpts {
            extra_conf: "archive_mode = on\narchive_command = 'false'\n",
            ..Default::default()
        },
    );
    let o = src.backup(&repo, &["--archive-timeout", "2"]);
    fails_with(&o, "archive_command");
    assert!(err(&o).contains("was not archived"), "{}", err(&o));
    // The setting it suggests calls this binary by its absolute path.
    assert!(
        err(&o).contains(&format!("archive_command = '{BIN} --repo ")),
        "{}",
        err(&o)
    );
    assert!(repo.backups().is_empty(), "a failed backup is listed");
    // The server is not left in backup mode: the session that held it is gone.
    assert_no_backup_session(&src);

    // A directory that is not a data directory.
    let notdata = s.pg_dir("notdata");
    let ci = src.conninfo();
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "backup",
            "--pgdata",
            notdata.to_str().unwrap(),
            "--dbname",
            &ci,
        ]),
        "is not a PostgreSQL data directory",
    );
    // A copy of the connected cluster's data directory: same identifier,
    // but not what the server runs on.
    let copy = s.pg_dir("copy");
    for f in ["PG_VERSION", "global"] {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(src.pgdata.join(f))
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
    }
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "backup",
            "--pgdata",
            copy.to_str().unwrap(),
            "--dbname",
            &ci,
        ]),
        "names a copy of this cluster",
    );
    // A data directory of another cluster than the one connected to.
    let other = Cluster::new(&s, "other", ClusterOpts::default());
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "backup",
            "--pgdata",
            other.pgdata.to_str().unwrap(),
            "--dbname",
            &ci,
        ]),
        "system identifier",
    );
    // A bad cluster name.
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "--cluster",
            "../x",
            "backup",
            "--pgdata",
            src.pgdata.to_str().unwrap(),
            "--dbname",
            &ci,
        ]),
        "invalid cluster name",
    );
}

/// Non-exclusive backup mode lives and dies with the session that started it.
pub fn assert_no_backup_session(c: &Cluster) {
    for _ in 0..300 {
        let n = c.query_one(
            "SELECT count(*)::text FROM pg_stat_activity WHERE application_name = 'pgstrata'",
        );
        if n == "0" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("a pgstrata session (holding backup mode) is still connected");
}

/// A repository with one good full backup, for restore refusals.
fn repo_with_backup(s: &Scratch) -> (Repo, Cluster) {
    let repo = Repo::new(s);
    let src = Cluster::new(
        s,
        "src",
        ClusterOpts {
            archive_to: Some(&repo),
            ..Default::default()
        },
    );
    load_sample(&src, 5_000);
    src.backup_ok(&repo, &["--type", "full"]);
    (repo, src)
}

#[test]
fn restore_refusals_change_nothing() {
    let s = Scratch::new();
    let (repo, _src) = repo_with_backup(&s);

    // A non-empty target is refused and left untouched.
    let target = s.pg_dir("busy");
    std::fs::write(target.join("precious"), b"keep me").unwrap();
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        target.to_str().unwrap(),
    ]);
    fails_with(&o, "not empty");
    let names: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("precious")]);
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"keep me");

    // An unknown backup id.
    let t2 = s.path().join("t2");
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            t2.to_str().unwrap(),
            "--set",
            "nope",
        ]),
        "\"nope\" is not a complete backup of cluster \"main\" (see `pgstrata info`)",
    );
    assert!(!t2.exists());
    // A bad --tablespace-map.
    misused(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            t2.to_str().unwrap(),
            "--tablespace-map",
            "x",
        ]),
        "expected OID=DIR",
    );

    // A manifest path that would escape the target.
    let db = rusqlite::Connection::open(repo.path.join("catalog.db")).unwrap();
    db.execute(
        "INSERT INTO file_version (cluster_id, path, first_seq, last_seq, kind, size, mtime, \
         mode, uid, gid) SELECT cluster_id, '../escaped', seq, seq, 'd', 0, 0, 448, 0, 0 \
         FROM backup",
        [],
    )
    .unwrap();
    drop(db);
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            t2.to_str().unwrap(),
        ]),
        "escape",
    );
    assert!(!t2.exists());
    assert!(!s.path().join("escaped").exists());
}

#[test]
fn damaged_packs_fail_restore_loudly() {
    let s = Scratch::new();
    let (repo, _src) = repo_with_backup(&s);
    let mut packs: Vec<_> = walk_files(&repo.path.join("packs"));
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let biggest = packs.last().unwrap().clone();
    let original = std::fs::read(&biggest).unwrap();

    let restore_to = |name: &str| {
        let t = s.path().join(name);
        let o = pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            t.to_str().unwrap(),
        ]);
        (o, t)
    };
    // A flipped byte in the middle of a chunk.
    let mut bad = original.clone();
    bad[original.len() / 2] ^= 0x5a;
    std::fs::write(&biggest, &bad).unwrap();
    let (o, t) = restore_to("t-flip");
    fails_with(&o, "(backup ");
    assert!(
        !t.exists(),
        "a failed restore left a directory that may look usable"
    );

    // A truncated pack.
    std::fs::write(&biggest, &original[..original.len() / 3]).unwrap();
    let (o, t) = restore_to("t-trunc");
    fails_with(&o, "(backup ");
    assert!(!t.exists());

    // A missing pack.
    std::fs::remove_file(&biggest).unwrap();
    let (o, t) = restore_to("t-missing");
    fails_with(&o, "missing");
    assert!(!t.exists());

    // Put it back: the backup restores again.
    std::fs::write(&biggest, &original).unwrap();
    std::fs::set_permissions(&biggest, std::fs::Permissions::from_mode(0o600)).unwrap();
    check(&restore_to("t-ok").0, "restore");
}

pub fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// Exit status: 0 success, 1 failure, 2 usage error, for a table of cases.
#[test]
fn exit_status_table() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let r = repo.arg();
    let cfg = s.path().join("bad.toml");
    std::fs::write(&cfg, "retain-ful = 2\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let t = s.path().join("t");
    let t = t.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--repo", r, "info"], 0, ""),
        (&["--repo", r, "init"], 0, "already"),
        (&["--version"], 0, ""),
        (&["info"], 2, "no repository given"),
        (&["--repo", r, "frobnicate"], 2, "unrecognized subcommand"),
        (
            &["--repo", r, "expire", "--retain-full", "0"],
            2,
            "at least 1",
        ),
        (
            &["--repo", r, "expire", "--retain-diff", "0"],
            2,
            "at least 1",
        ),
        (&["--repo", r, "expire", "--retain-days=-1"], 2, "positive"),
        // A negative number written as operators type it, not with "=".
        (
            &["--repo", r, "expire", "--retain-days", "-1"],
            2,
            "positive",
        ),
        (
            &["--repo", r, "expire", "--retain-full", "-2"],
            2,
            "invalid value '-2' for '--retain-full",
        ),
        (
            &["--repo", r, "expire", "--gc-threshold", "150"],
            2,
            "percentage",
        ),
        (
            &[
                "--repo",
                r,
                "backup",
                "--pgdata",
                t,
                "--compress-level",
                "0",
            ],
            2,
            "between 1 and 22",
        ),
        (
            &["--repo", r, "backup", "--pgdata", t, "--workers", "0"],
            2,
            "at least 1",
        ),
        (
            &["--repo", r, "backup", "--pgdata", t, "--pack-size-mib", "0"],
            2,
            "pack-size-mib",
        ),
        (&["--repo", r, "backup"], 2, "no data directory given"),
        (&["--repo", r, "check"], 2, "no data directory given"),
        (&["--repo", r, "restore"], 2, "--pgdata"),
        (
            &[
                "--repo",
                r,
                "restore",
                "--pgdata",
                t,
                "--target-time",
                "soon",
            ],
            2,
            "--target-time",
        ),
        (
            &["--repo", r, "restore", "--pgdata", t, "--target-lsn", "12"],
            2,
            "invalid LSN",
        ),
        (
            &["--repo", r, "restore", "--pgdata", t, "--target-xid", "x1"],
            2,
            "--target-xid",
        ),
        (
            &[
                "--repo",
                r,
                "restore",
                "--pgdata",
                t,
                "--target-timeline",
                "0",
            ],
            2,
            "--target-timeline",
        ),
        (
            &["--repo", r, "restore", "--pgdata", t, "--target-exclusive"],
            2,
            "--target-exclusive",
        ),
        (
            &[
                "--repo",
                r,
                "restore",
                "--pgdata",
                t,
                "--tablespace-map",
                "1",
            ],
            2,
            "OID=DIR",
        ),
        (&["--repo", r, "repair"], 2, "--rebuild-catalog"),
        (
            &["--repo", r, "--log-level", "loud", "info"],
            2,
            "invalid log level",
        ),
        (&["--repo", r, "--config", cfg, "info"], 2, "retain-ful"),
        (
            &[
                "--repo",
                r,
                "archive-push",
                "/nonexistent/000000010000000000000001",
            ],
            1,
            "nonexistent",
        ),
        (
            &["--repo", r, "archive-get", "000000010000000000000001", t],
            1,
            "",
        ),
        (
            &["--repo", r, "archive-get", "../../etc/passwd", t],
            1,
            "malformed WAL file name",
        ),
        (
            &["--repo", "/nonexistent/repo", "info"],
            1,
            "not a pgstrata repository",
        ),
        (&["--repo", r, "restore", "--pgdata", t], 1, "no backups"),
        (&["--repo", r, "verify", "--set", "nope"], 1, "nope"),
    ];
    for (args, code, needle) in cases {
        let o = pgstrata(args);
        let e = err(&o);
        let said = format!("{}{e}", String::from_utf8_lossy(&o.stdout));
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {e}");
        assert!(
            said.contains(needle),
            "{args:?}: output lacks {needle:?}: {said}"
        );
        if *code != 0 && !e.is_empty() {
            assert!(
                e.starts_with("pgstrata: error: ") || e.starts_with("error:"),
                "{args:?}: {e}"
            );
        }
    }
    // Log levels are case-insensitive, and PGSTRATA_LOG / RUST_LOG are read.
    assert!(pgstrata(&["--repo", r, "--log-level", "DEBUG", "info"])
        .status
        .success());
    let o = std::process::Command::new(BIN)
        .args(["--repo", r, "info"])
        .env("PGSTRATA_LOG", "Info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let o = std::process::Command::new(BIN)
        .args(["--repo", r, "info"])
        .env_remove("PGSTRATA_LOG")
        .env("RUST_LOG", "pgstrata=nonsense")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    // The environment beats the config file's log-level.
    let quiet_cfg = s.path().join("quiet.toml");
    std::fs::write(&quiet_cfg, "log-level = \"error\"\n").unwrap();
    let o = std::process::Command::new(BIN)
        .args([
            "--repo",
            r,
            "--config",
            quiet_cfg.to_str().unwrap(),
            "verify",
        ])
        .env("PGSTRATA_LOG", "debug")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("DEBUG"), "{}", err(&o));
    // A reader that went away: no panic, the command's own status.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = std::process::Command::new(BIN)
        .args(["--repo", r, "info", "--output", "json"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
}

/// `--tablespace-map` with an OID the backup lacks is named first (with the
/// OIDs it has), before any other tablespace's directory is looked at; a
/// tablespace is never put inside the target or a running server's data
/// directory or tablespace.
#[test]
fn tablespace_map_refusals_name_the_tablespace() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let (ts, oid) = src.create_tablespace(&s, "one", "ts_primary");
    src.exec("CREATE TABLE t TABLESPACE one AS SELECT g FROM generate_series(1, 100) g;");
    src.backup_ok(&repo, &["--type", "full"]);
    let t = s.path().join("t");
    let restore = |map: &str| {
        pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            t.to_str().unwrap(),
            "--tablespace-map",
            map,
        ])
    };
    // The primary's tablespace (where this one was) is not empty, but the
    // unknown OID is what is wrong.
    let o = restore("99=/x");
    fails_with(&o, "tablespace 99");
    fails_with(&o, &format!("its tablespaces: {oid}"));
    assert!(!err(&o).contains(&ts.display().to_string()), "{}", err(&o));

    let inside_target = format!("{oid}={}", t.join("ts").display());
    fails_with(&restore(&inside_target), "overlaps the target");
    let inside_primary = format!("{oid}={}", src.pgdata.join("ts").display());
    fails_with(&restore(&inside_primary), "PostgreSQL server running");
    let under_primary_ts = format!("{oid}={}", ts.join("sub").display());
    fails_with(&restore(&under_primary_ts), "PostgreSQL server running");
    assert!(!t.exists());
    assert!(!src.pgdata.join("ts").exists());
    assert!(!ts.join("sub").exists());
}
