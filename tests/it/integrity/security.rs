//! Security: what the repository creates is private by default (group-
//! readable on request), passwords never reach the output, and bad input to
//! the integrity commands is a one-line error that changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{err, fails_with, out};
use crate::harness::*;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file and directory below the repository, with a mode other than
/// the expected one.
fn wrong_modes(root: &Path, file: u32, dir: u32) -> Vec<String> {
    let mut bad = Vec::new();
    for e in walkdir::WalkDir::new(root).into_iter().flatten() {
        let want = if e.file_type().is_dir() { dir } else { file };
        let m = mode(e.path());
        if m != want {
            bad.push(format!("{} {:o} (want {:o})", e.path().display(), m, want));
        }
    }
    bad
}

fn backed_up_repo(s: &Scratch, group_readable: bool) -> (Repo, Cluster) {
    let path = s.pg_dir("repo");
    let mut args = vec!["--repo", path.to_str().unwrap(), "init"];
    if group_readable {
        args.push("--group-readable");
    }
    pgstrata_ok(&args);
    let repo = Repo { path };
    let src = Cluster::new(
        s,
        "src",
        ClusterOpts {
            archive_to: Some(&repo),
            ..Default::default()
        },
    );
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g");
    src.backup_ok(&repo, &["--type", "full"]);
    src.switch_wal_and_wait(&repo);
    check(
        &pgstrata(&["--repo", repo.arg(), "repair", "--rebuild-catalog"]),
        "repair",
    );
    (repo, src)
}

fn assert_kinds_present(root: &Path) {
    let names: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    for needle in [".pack", "catalog.db", ".json.zst", "wal/main/", "locks/"] {
        assert!(
            names.iter().any(|n| n.contains(needle)),
            "no {needle} in {names:?}"
        );
    }
}

#[test]
fn repository_modes_private_by_default() {
    let s = Scratch::new();
    let (repo, _src) = backed_up_repo(&s, false);
    assert_kinds_present(&repo.path);
    let bad = wrong_modes(&repo.path, 0o600, 0o700);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn repository_modes_group_readable_on_request() {
    let s = Scratch::new();
    let (repo, _src) = backed_up_repo(&s, true);
    assert_kinds_present(&repo.path);
    let bad = wrong_modes(&repo.path, 0o640, 0o750);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn passwords_never_reach_the_output() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let data = s.pg_dir("fake");
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::write(data.join("global/pg_control"), [0u8; 8192]).unwrap();
    let nosock = s.path().join("nosock");
    let cases = [
        format!("host={} port=1 user=x password=s3cr3tpw", nosock.display()),
        "host=127.0.0.1 port=1 user=x password=s3cr3tpw connect_timeout=2".to_string(),
        "postgresql://x:s3cr3tpw@127.0.0.1:1/db".to_string(),
        "host=127.0.0.1 password=s3cr3tpw bogus=1".to_string(),
        "password='s3cr3tpw".to_string(),
    ];
    for ci in &cases {
        for cmd in ["backup", "check"] {
            let o = pgstrata(&[
                "--repo",
                repo.arg(),
                "--log-level",
                "trace",
                cmd,
                "--pgdata",
                data.to_str().unwrap(),
                "--dbname",
                ci,
            ]);
            assert_eq!(o.status.code(), Some(1), "{cmd} {ci}: {}", err(&o));
            let all = format!("{}{}", out(&o), err(&o));
            assert!(
                !all.contains("s3cr3tpw"),
                "{cmd} {ci} printed the password: {all}"
            );
            assert!(err(&o).starts_with("pgstrata: error: "), "{}", err(&o));
        }
    }
    // From the environment too.
    let o = std::process::Command::new(BIN)
        .args([
            "--repo",
            repo.arg(),
            "--log-level",
            "trace",
            "check",
            "--pgdata",
        ])
        .arg(&data)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "1")
        .env("PGPASSWORD", "s3cr3tpw")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(!format!("{}{}", out(&o), err(&o)).contains("s3cr3tpw"));
}

#[test]
fn integrity_commands_refuse_what_is_not_a_repository() {
    let s = Scratch::new();
    let plain = s.pg_dir("plain");
    std::fs::write(plain.join("file"), b"x").unwrap();
    let missing = s.path().join("missing");
    for dir in [&plain, &missing] {
        let d = dir.to_str().unwrap();
        for args in [
            vec!["--repo", d, "verify"],
            vec!["--repo", d, "repair", "--rebuild-catalog"],
            vec!["--repo", d, "check", "--pgdata", d],
        ] {
            let o = pgstrata(&args);
            fails_with(&o, "is not a pgstrata repository");
            assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
        }
    }
    // Nothing was written.
    let names: Vec<_> = std::fs::read_dir(&plain).unwrap().flatten().collect();
    assert_eq!(names.len(), 1);
    assert!(!missing.exists());

    // repair without saying what, and verify --set of an unknown backup.
    let repo = Repo::new(&s);
    fails_with(
        &pgstrata(&["--repo", repo.arg(), "repair"]),
        "--rebuild-catalog",
    );
    fails_with(
        &pgstrata(&["--repo", repo.arg(), "verify", "--set", "nope"]),
        "\"nope\" is not a complete backup",
    );
    // check on a directory that is not a data directory.
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "check",
            "--pgdata",
            plain.to_str().unwrap(),
        ]),
        "is not a PostgreSQL data directory",
    );
}
