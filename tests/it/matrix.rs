//! The version matrix: the end-to-end core on the real server binaries of
//! every supported major (14 to 18), one test per major. The binaries come
//! from `scripts/install-pg.sh` (under `/opt/pgstrata-pg/<major>/bin`); a
//! missing major fails with what to run, never skips.
//!
//! Per major: `check`; full, incr and diff backups that each restore exact
//! (and pass pg_amcheck); PITR by time and by restore-point name; a standby
//! restore that streams from the source; `verify`; `info` and `restore`
//! naming the backup's major; and the WAL the server writes carries the page
//! magic pgstrata's table gives that major.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::*;
use crate::integrity::verify_ok;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Restore with `args` into `name`, start it with `bindir`'s server, wait
/// for consistency and compare with `want`. Returns the running cluster.
fn restore_on(
    s: &Scratch,
    repo: &Repo,
    bindir: &Path,
    name: &str,
    args: &[&str],
    want: &BTreeMap<String, String>,
) -> Cluster {
    let mut dst = restore(s, repo, name, args);
    dst.bindir = bindir.to_path_buf();
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(
        &dst.table_hashes(),
        want,
        "restore with {args:?} gave other data"
    );
    dst
}

/// The first WAL segment file in `pgdata/pg_wal`.
fn a_wal_segment(pgdata: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(pgdata.join("pg_wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect();
    segs.sort();
    segs.into_iter().next().expect("no WAL segment in pg_wal")
}

fn run(major: u32) {
    let bindir = pg_bindir_for(major);
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::new(
        &s,
        "src",
        ClusterOpts {
            archive_to: Some(&repo),
            bindir: Some(&bindir),
            ..Default::default()
        },
    );
    let version_num: u32 = src
        .query_one("SELECT current_setting('server_version_num')")
        .parse()
        .unwrap();
    assert_eq!(version_num / 10_000, major, "the server runs another major");

    // The WAL this major writes has the page magic pgstrata's table says.
    let seg = a_wal_segment(&src.pgdata);
    let bytes = std::fs::read(&seg).unwrap();
    let h = pgstrata::testing::LongPageHeader::parse(&bytes, "segment").unwrap();
    assert_eq!(
        h.major_version(),
        Some(major),
        "WAL page magic {:#06x} of PostgreSQL {major}",
        h.magic
    );

    // check: connection, identity, archiving (this binds the cluster from
    // the archived WAL's page magic).
    let ci = src.conninfo();
    let out = pgstrata_ok(&[
        "--repo",
        repo.arg(),
        "check",
        "--pgdata",
        src.pgdata.to_str().unwrap(),
        "--dbname",
        &ci,
    ]);
    assert!(
        out.contains(&format!("check ok: PostgreSQL {major},")),
        "{out}"
    );

    // full, incr, diff: each restores exact.
    load_sample(&src, 5_000);
    src.backup_ok(&repo, &["--type", "full"]);
    let want_full = src.table_hashes();
    src.exec(
        "UPDATE accounts SET balance = balance + 1 WHERE id % 7 = 0;
         DELETE FROM events WHERE kind = 'b';
         CREATE TABLE added AS SELECT g, repeat('x', 300) AS pad FROM generate_series(1, 2000) g;
         CHECKPOINT;",
    );
    src.backup_ok(&repo, &["--type", "incr"]);
    let want_incr = src.table_hashes();
    src.exec(
        "INSERT INTO accounts SELECT g, g, 'late ' || g FROM generate_series(100001, 101000) g;
         DROP TABLE added;",
    );
    src.exec("VACUUM events");
    src.exec("CHECKPOINT");
    src.backup_ok(&repo, &["--type", "diff"]);
    let want_diff = src.table_hashes();
    assert_ne!(want_full, want_incr);
    assert_ne!(want_incr, want_diff);

    // info names each backup's major.
    let info = repo.info_json();
    assert_eq!(
        info["clusters"][0]["pg_version"].as_u64(),
        Some(major.into())
    );
    let backups = repo.backups();
    let types: Vec<&str> = backups
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["full", "incr", "diff"]);
    for b in &backups {
        assert_eq!(b["pg_version"].as_u64(), Some(major.into()), "{b}");
    }
    let text = pgstrata_ok(&["--repo", repo.arg(), "info"]);
    assert!(text.contains(&format!("(PostgreSQL {major},")), "{text}");
    let ids: Vec<String> = backups
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();

    // restore says which major the data directory needs, and writes one of
    // that major (with 17's pg_wal/summaries).
    let target = s.pg_dir("by-cli").join("data");
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        target.to_str().unwrap(),
        "--set",
        &ids[0],
    ]);
    check(&o, "pgstrata restore");
    assert!(
        stdout(&o).contains(&format!("PostgreSQL {major} is needed to start it")),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("PG_VERSION"))
            .unwrap()
            .trim(),
        major.to_string()
    );
    assert!(target.join("pg_wal/archive_status").is_dir());
    assert_eq!(
        target.join("pg_wal/summaries").is_dir(),
        major >= 17,
        "pg_wal/summaries is a PostgreSQL 17+ directory"
    );
    std::fs::remove_dir_all(target.parent().unwrap()).unwrap();

    let promote = ["--target-action", "promote"];
    for (id, want, name) in [
        (&ids[0], &want_full, "r-full"),
        (&ids[1], &want_incr, "r-incr"),
        (&ids[2], &want_diff, "r-diff"),
    ] {
        let mut dst = restore_on(
            &s,
            &repo,
            &bindir,
            name,
            &[
                &["--set", id.as_str(), "--target", "immediate"][..],
                &promote,
            ]
            .concat(),
            want,
        );
        if name == "r-diff" {
            dst.amcheck();
            assert_eq!(
                dst.query_one("SHOW data_checksums"),
                src.query_one("SHOW data_checksums"),
                "the restored cluster keeps the source's data checksums"
            );
        }
        dst.stop();
    }

    // PITR by time and by restore-point name, after an accident.
    src.exec("SELECT pg_create_restore_point('before_the_drop')");
    let time = src.now_utc();
    let want_pitr = src.table_hashes();
    src.exec("SELECT pg_sleep(1.2)");
    src.exec("DROP TABLE docs; UPDATE accounts SET owner = 'gone';");
    src.switch_wal_and_wait(&repo);
    assert_ne!(src.table_hashes(), want_pitr);
    for (name, target) in [
        ("by-time", ["--target-time", time.as_str()]),
        ("by-name", ["--target-name", "before_the_drop"]),
    ] {
        let mut dst = restore_on(
            &s,
            &repo,
            &bindir,
            name,
            &[&target[..], &promote].concat(),
            &want_pitr,
        );
        dst.stop();
    }

    // A standby restore that streams from the source.
    let conninfo = format!(
        "host={} user=postgres application_name=matrix{major}",
        src.sockdir.display()
    );
    let mut standby = restore(
        &s,
        &repo,
        "standby",
        &["--type", "standby", "--primary-conninfo", &conninfo],
    );
    standby.bindir = bindir.clone();
    assert!(standby.pgdata.join("standby.signal").exists());
    standby.start_ok();
    src.exec("CREATE TABLE streamed AS SELECT g FROM generate_series(1, 777) g;");
    let mut streaming = false;
    for _ in 0..600 {
        let got = std::panic::catch_unwind(|| {
            (
                standby.query_one("SELECT pg_is_in_recovery()::text"),
                standby.query_one(
                    "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')",
                ),
                standby.query_one("SELECT coalesce(to_regclass('streamed')::text, '')"),
            )
        });
        if let Ok((rec, status, table)) = got {
            if rec == "true" && status == "streaming" && table == "streamed" {
                streaming = true;
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        streaming,
        "PostgreSQL {major} standby never streamed; log:\n{}",
        standby.log_text()
    );
    assert_eq!(standby.table_hashes(), src.table_hashes());
    assert_eq!(
        src.query_one(
            "SELECT coalesce(string_agg(application_name, ','), '') FROM pg_stat_replication"
        ),
        format!("matrix{major}")
    );
    standby.stop();

    // verify: every chunk, manifest and archived WAL file checks out.
    verify_ok(&repo);
}

#[test]
fn pg14() {
    run(14);
}

#[test]
fn pg15() {
    run(15);
}

#[test]
fn pg16() {
    run(16);
}

#[test]
fn pg17() {
    run(17);
}

#[test]
fn pg18() {
    run(18);
    // 18 turns data checksums on by default; the harness turns them off with
    // --no-data-checksums, and pgstrata reads the setting from the server.
    let bindir = pg_bindir_for(18);
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let c = Cluster::new(
        &s,
        "nosums",
        ClusterOpts {
            archive_to: Some(&repo),
            checksums: false,
            bindir: Some(&bindir),
            ..Default::default()
        },
    );
    assert_eq!(c.query_one("SHOW data_checksums"), "off");
    c.backup_ok(&repo, &["--type", "full"]);
    let want = c.table_hashes();
    let mut dst = restore(
        &s,
        &repo,
        "r",
        &["--target", "immediate", "--target-action", "promote"],
    );
    dst.bindir = bindir;
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
    assert_eq!(dst.query_one("SHOW data_checksums"), "off");
}

/// Every path under `root` (but the lock files): what a refused command
/// must leave exactly as it was.
fn repo_state(root: &Path) -> BTreeMap<String, Node> {
    let mut t = tree(root);
    // The (empty) lock file any command may create is not data.
    t.retain(|rel, _| !rel.starts_with("locks"));
    t
}

/// A real PostgreSQL 13 server (installed by scripts/install-pg.sh only for
/// this) is refused by backup, check and archive-push before any work; so is
/// WAL with a page magic no supported major writes. The repository is left
/// exactly as it was.
#[test]
fn unsupported_majors_are_refused_before_any_work() {
    let bindir = pg_bindir_for(13);
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let old = Cluster::new(
        &s,
        "pg13",
        ClusterOpts {
            bindir: Some(&bindir),
            ..Default::default()
        },
    );
    let before = repo_state(&repo.path);
    let want = "is PostgreSQL 13, which pgstrata does not support (supported: PostgreSQL 14 to 18)";
    fails_one_line(&old.backup(&repo, &["--type", "full"]), 1, want);
    let ci = old.conninfo();
    fails_one_line(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "check",
            "--pgdata",
            old.pgdata.to_str().unwrap(),
            "--dbname",
            &ci,
        ]),
        1,
        want,
    );
    let seg = a_wal_segment(&old.pgdata);
    fails_one_line(
        &pgstrata(&["--repo", repo.arg(), "archive-push", seg.to_str().unwrap()]),
        1,
        want,
    );

    // A segment whose page magic no known major writes (a future major, or
    // not WAL at all): refused too. Made from a real 15 segment.
    let cur = Cluster::new(&s, "pg15", ClusterOpts::default());
    let mut bytes = std::fs::read(a_wal_segment(&cur.pgdata)).unwrap();
    bytes[0..2].copy_from_slice(&0xD11Au16.to_le_bytes());
    let odd = s.path().join("000000010000000000000001");
    std::fs::write(&odd, &bytes).unwrap();
    fails_one_line(
        &pgstrata(&["--repo", repo.arg(), "archive-push", odd.to_str().unwrap()]),
        1,
        "unknown WAL page magic 0xd11a",
    );

    assert_eq!(
        repo_state(&repo.path),
        before,
        "a refused command changed the repository"
    );
    assert!(repo.info_json()["clusters"].as_array().unwrap().is_empty());
}
