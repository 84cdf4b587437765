//! Point-in-time recovery, timelines, restoring onto a new host, recovery
//! targets and archive settings of restored copies.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::*;

on_local_and_s3! {
    the_classic_accident_by_time_lsn_xid_and_name_in =>
        the_classic_accident_by_time_lsn_xid_and_name,
        the_classic_accident_by_time_lsn_xid_and_name_on_s3;
}

fn the_classic_accident_by_time_lsn_xid_and_name_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec(
        "CREATE TABLE keep (id int, note text);
         CREATE TABLE victim AS SELECT g, md5(g::text) m FROM generate_series(1, 3000) g;",
    );
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("INSERT INTO keep SELECT g, 'before' FROM generate_series(1, 500) g;");
    let mut c = src.client();
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "INSERT INTO keep SELECT g, 'xid' FROM generate_series(501, 600) g",
        &[],
    )
    .unwrap();
    let xid: String = tx
        .query_one("SELECT txid_current()::text", &[])
        .unwrap()
        .get(0);
    tx.commit().unwrap();
    src.exec("SELECT pg_create_restore_point('before_the_drop')");
    let lsn = src.query_one("SELECT pg_current_wal_lsn()::text");
    let time = src.now_utc();
    let want = src.table_hashes();
    src.exec("SELECT pg_sleep(1.2)");
    // The accident, and life going on after it.
    src.exec(
        "DROP TABLE victim; INSERT INTO keep SELECT g, 'after' FROM generate_series(601, 900) g;",
    );
    src.switch_wal_and_wait(&repo);
    assert_ne!(src.table_hashes(), want);

    let promote = ["--target-action", "promote"];
    restore_matches(
        &s,
        &repo,
        "by-time",
        &[&["--target-time", &time][..], &promote].concat(),
        &want,
    );
    restore_matches(
        &s,
        &repo,
        "by-lsn",
        &[&["--target-lsn", &lsn][..], &promote].concat(),
        &want,
    );
    restore_matches(
        &s,
        &repo,
        "by-xid",
        &[&["--target-xid", &xid][..], &promote].concat(),
        &want,
    );
    restore_matches(
        &s,
        &repo,
        "by-name",
        &[&["--target-name", "before_the_drop"][..], &promote].concat(),
        &want,
    );

    // Impossible targets are refused before anything is written.
    let t = s.path().join("never");
    let tp = t.to_str().unwrap();
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            tp,
            "--target-time",
            "2001-01-01 00:00:00+00",
        ]),
        "before the end of the oldest backup",
    );
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            tp,
            "--target-time",
            "2999-01-01 00:00:00+00",
        ]),
        "after the newest archived WAL",
    );
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            tp,
            "--target-lsn",
            "FF/0",
        ]),
        "beyond the newest archived WAL",
    );
    misused(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            tp,
            "--target-time",
            "2026-01-01 00:00:00",
        ]),
        "time zone",
    );
    assert!(!t.exists(), "a refused restore wrote something");
    // Two targets at once are a usage error.
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        tp,
        "--target-xid",
        "5",
        "--target-name",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn restore_onto_a_new_host_with_tablespaces() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let one = s.pg_dir("ts1");
    let two = s.pg_dir("ts2");
    src.exec(&format!(
        "CREATE TABLESPACE one LOCATION '{}'",
        one.display()
    ));
    src.exec(&format!(
        "CREATE TABLESPACE two LOCATION '{}'",
        two.display()
    ));
    src.exec(
        "CREATE TABLE a (id int PRIMARY KEY, v text) TABLESPACE one;
         INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, 4000) g;
         CREATE TABLE b (id int, v text) TABLESPACE two;
         INSERT INTO b SELECT g, repeat('b', 100) FROM generate_series(1, 2000) g;",
    );
    let oid_one = src.query_one("SELECT oid::text FROM pg_tablespace WHERE spcname = 'one'");
    let oid_two = src.query_one("SELECT oid::text FROM pg_tablespace WHERE spcname = 'two'");
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("INSERT INTO a SELECT g, 'late' FROM generate_series(4001, 4100) g;");
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();

    // "The new host": the repository copied to another path, the old one gone.
    let host2 = s.pg_dir("host2");
    let copy = host2.join("repo-copy");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&repo.path)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::rename(&repo.path, s.path().join("repo-gone")).unwrap();
    let repo2 = Repo {
        path: copy.clone(),
        pass: None,
        url: None,
    };

    let new_one = host2.join("one-here");
    let all = host2.join("all-tablespaces");
    let map = format!("{oid_one}={}", new_one.display());
    let mut dst = restore(
        &s,
        &repo2,
        "dst",
        &[
            "--tablespace-map",
            &map,
            "--tablespace-map-all",
            all.to_str().unwrap(),
        ],
    );
    let conf = std::fs::read_to_string(dst.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains(&format!("--repo {}", copy.display())),
        "{conf}"
    );
    assert!(!conf.contains("repo-gone"));
    assert_eq!(
        std::fs::read_link(dst.pgdata.join("pg_tblspc").join(&oid_one)).unwrap(),
        new_one
    );
    assert_eq!(
        std::fs::read_link(dst.pgdata.join("pg_tblspc").join(&oid_two)).unwrap(),
        all.join(&oid_two)
    );
    give_to_pg(&host2);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
    let loc = dst
        .query_one("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'two'");
    assert_eq!(Path::new(&loc), all.join(&oid_two));
}

#[test]
fn pitr_across_a_promotion_to_timeline_two() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let mut a = Cluster::archiving(&s, "a", &repo);
    a.exec("CREATE TABLE t (n int, tl text)");
    a.backup_ok(&repo, &["--type", "full"]);
    a.exec("INSERT INTO t SELECT g, 'one' FROM generate_series(1, 100) g;");
    let t1 = a.now_utc();
    let at_t1 = a.table_hashes();
    a.exec("SELECT pg_sleep(1.2); INSERT INTO t SELECT g, 'one-late' FROM generate_series(101, 200) g;");
    a.switch_wal_and_wait(&repo);
    a.stop();

    // Fail over: restore to the end of the archive and promote onto timeline 2,
    // which keeps archiving into the same repository.
    let mut b = restore_archiving(&s, &repo, "b", &[]);
    b.start_ok();
    b.wait_for_consistency();
    assert_eq!(
        b.query_one("SELECT timeline_id::text FROM pg_control_checkpoint()"),
        "2"
    );
    b.exec("INSERT INTO t SELECT g, 'two' FROM generate_series(201, 300) g;");
    b.backup_ok(&repo, &["--type", "full"]);
    b.exec("INSERT INTO t SELECT g, 'two-b' FROM generate_series(301, 350) g;");
    let t2 = b.now_utc();
    let at_t2 = b.table_hashes();
    b.exec("SELECT pg_sleep(1.2); INSERT INTO t SELECT g, 'two-late' FROM generate_series(351, 400) g;");
    b.switch_wal_and_wait(&repo);

    let info = repo.info_json();
    let tls: Vec<u64> = info["clusters"][0]["wal"]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(tls, vec![1, 2]);
    let backups = repo.backups();
    assert_eq!(backups[1]["timeline"].as_u64(), Some(2));
    let names = repo.open().wal_names("main").unwrap();
    assert!(names.contains(&"00000002.history".to_string()), "{names:?}");

    // A point on timeline 2, from the timeline-2 backup.
    restore_matches(
        &s,
        &repo,
        "r2",
        &["--target-time", &t2, "--target-action", "promote"],
        &at_t2,
    );
    // A point on timeline 1 before the switch, from the timeline-1 backup.
    restore_matches(
        &s,
        &repo,
        "r1",
        &[
            "--target-time",
            &t1,
            "--target-timeline",
            "1",
            "--target-action",
            "promote",
        ],
        &at_t1,
    );
}

/// Every path under `root`, with kind, mode and a content hash, for comparison.
/// Once a restored copy promotes and archives timeline 2
/// into the same repository, every target on timeline 1 (and on timeline 2)
/// must still be reachable, judged by the WAL on that timeline's path.
#[test]
fn targets_on_both_timelines_after_a_restored_copy_promotes() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let a = Cluster::archiving(&s, "a", &repo);
    a.exec("CREATE TABLE t (n int, tl text); INSERT INTO t SELECT g, 'one' FROM generate_series(1, 100) g;");
    a.backup_ok(&repo, &["--type", "full"]);
    a.exec("INSERT INTO t SELECT g, 'one-b' FROM generate_series(101, 200) g;");
    a.switch_wal_and_wait(&repo);

    // A restored copy that keeps archiving into the repository and promotes.
    let mut b = restore_archiving(&s, &repo, "b", &[]);
    b.start_ok();
    b.wait_for_consistency();
    assert_eq!(
        b.query_one("SELECT timeline_id::text FROM pg_control_checkpoint()"),
        "2"
    );
    b.exec("INSERT INTO t SELECT g, 'two' FROM generate_series(201, 300) g;");
    let t2 = b.now_utc();
    let lsn2 = b.query_one("SELECT pg_current_wal_lsn()::text");
    let at_t2 = b.table_hashes();
    b.exec("SELECT pg_sleep(1.2); INSERT INTO t SELECT g, 'two-late' FROM generate_series(301, 400) g;");
    b.switch_wal_and_wait(&repo);
    let end2 = b.table_hashes();
    let names = repo.open().wal_names("main").unwrap();
    assert!(names.contains(&"00000002.history".to_string()), "{names:?}");

    // The original primary lives on, on timeline 1, after the copy's WAL.
    a.exec(
        "SELECT pg_sleep(1.2); INSERT INTO t SELECT g, 'one-c' FROM generate_series(201, 250) g;",
    );
    let t1 = a.now_utc();
    let lsn1 = a.query_one("SELECT pg_current_wal_lsn()::text");
    let at_t1 = a.table_hashes();
    a.exec("SELECT pg_sleep(1.2); INSERT INTO t SELECT g, 'one-late' FROM generate_series(251, 300) g;");
    a.switch_wal_and_wait(&repo);
    let end1 = a.table_hashes();

    let promote = ["--target-action", "promote"];
    let tl1 = ["--target-timeline", "1"];
    let cases: Vec<(&str, Vec<&str>, &BTreeMap<String, String>)> = vec![
        (
            "t1-time",
            [&["--target-time", &t1][..], &tl1, &promote].concat(),
            &at_t1,
        ),
        (
            "t1-lsn",
            [&["--target-lsn", &lsn1][..], &tl1, &promote].concat(),
            &at_t1,
        ),
        ("t1-latest", tl1.to_vec(), &end1),
        (
            "t2-time",
            [&["--target-time", &t2][..], &promote].concat(),
            &at_t2,
        ),
        (
            "t2-lsn",
            [&["--target-lsn", &lsn2][..], &promote].concat(),
            &at_t2,
        ),
        ("t2-latest", vec![], &end2),
    ];
    for (name, args, want) in cases {
        let mut r = restore_matches(&s, &repo, name, &args, want);
        let tli = if name.starts_with("t1") { "1" } else { "2" };
        let now = r.query_one("SELECT timeline_id::text FROM pg_control_checkpoint()");
        // A promoted restore moves to a new timeline; its parent must be the one asked for.
        let hist = std::fs::read_to_string(r.pgdata.join(format!(
            "pg_wal/{:08X}.history",
            now.parse::<u32>().unwrap()
        )))
        .unwrap_or_default();
        assert!(
            hist.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with(&format!("{tli}\t"))),
            "{name}: restored onto timeline {now} from the wrong parent:\n{hist}"
        );
        r.stop();
    }
    // A timeline nothing was archived for is refused, nothing written.
    let never = s.path().join("never");
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        never.to_str().unwrap(),
        "--target-timeline",
        "7",
    ]);
    fails_with(&o, "timeline 7 has no history file");
    fails_with(&o, "choose another target timeline (see `pgstrata info`)");
    assert!(!never.exists());
}

/// `--target-name` restores from the newest backup that
/// ended before the restore point; an unknown name is refused before writing.
#[test]
fn target_name_chooses_the_backup_before_the_restore_point() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let a = Cluster::archiving(&s, "a", &repo);
    a.exec("CREATE TABLE t (n int, note text); INSERT INTO t SELECT g, 'base' FROM generate_series(1, 100) g;");
    a.backup_ok(&repo, &["--type", "full"]);
    a.exec("INSERT INTO t SELECT g, 'p1' FROM generate_series(101, 200) g;");
    a.exec("SELECT pg_create_restore_point('point_one')");
    let want1 = a.table_hashes();
    a.exec("INSERT INTO t SELECT g, 'after p1' FROM generate_series(201, 300) g;");
    a.backup_ok(&repo, &["--type", "incr"]);
    // A restore point whose record crosses into the next WAL segment would
    // still be found; here: one after a large write spanning segments.
    a.exec("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(301, 60000) g;");
    a.exec("SELECT pg_create_restore_point('point_two')");
    let want2 = a.table_hashes();
    a.exec("DELETE FROM t WHERE n % 2 = 0;");
    a.backup_ok(&repo, &["--type", "incr"]);
    a.exec("UPDATE t SET note = 'late' WHERE n < 50;");
    a.switch_wal_and_wait(&repo);
    let ids: Vec<String> = repo
        .backups()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);

    let promote = ["--target-action", "promote"];
    for (name, want, backup) in [
        ("point_one", &want1, &ids[0]),
        ("point_two", &want2, &ids[1]),
    ] {
        let mut r = restore_matches(
            &s,
            &repo,
            name,
            &[&["--target-name", name][..], &promote].concat(),
            want,
        );
        let conf = std::fs::read_to_string(r.pgdata.join("postgresql.auto.conf")).unwrap();
        assert!(
            conf.contains(&format!("(backup {backup})")),
            "{name} should restore backup {backup}:\n{conf}"
        );
        r.stop();
    }
    // An unknown name is refused and nothing is written.
    let never = s.path().join("never");
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        never.to_str().unwrap(),
        "--target-name",
        "no_such_point",
    ]);
    fails_with(
        &o,
        "restore point \"no_such_point\" is not in the archived WAL",
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
    assert!(!never.exists());
    // --set with a backup that ends after the restore point is refused too.
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        never.to_str().unwrap(),
        "--target-name",
        "point_one",
        "--set",
        &ids[2],
    ]);
    fails_with(&o, "is before backup");
    assert!(!never.exists());
}

/// `restore --archive-mode`: off (the default) keeps a promoted copy from
/// archiving into the repository; preserve keeps the source's archiving.
#[test]
fn archive_mode_off_by_default_and_preserve_on_request() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let a = Cluster::archiving(&s, "a", &repo);
    a.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g;");
    a.backup_ok(&repo, &["--type", "full"]);
    a.switch_wal_and_wait(&repo);

    let base = s.pg_dir("off");
    let pgdata = base.join("data");
    let out = pgstrata_ok(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        pgdata.to_str().unwrap(),
    ]);
    assert!(
        out.contains("will NOT archive into this repository"),
        "{out}"
    );
    let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
    give_to_pg(&base);
    let mut off = Cluster::at(base, pgdata);
    off.start_ok();
    off.wait_for_consistency();
    assert_eq!(off.query_one("SHOW archive_mode"), "off");
    off.exec("CREATE TABLE only_in_copy AS SELECT 1 AS x; SELECT pg_switch_wal();");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let names = repo.open().wal_names("main").unwrap();
    assert!(
        !names.iter().any(|n| n.starts_with("00000002")),
        "the copy archived into the repository: {names:?}"
    );
    off.stop();

    let base = s.pg_dir("keep");
    let pgdata = base.join("data");
    let out = pgstrata_ok(&[
        "--repo",
        repo.arg(),
        "restore",
        "--archive-mode",
        "preserve",
        "--pgdata",
        pgdata.to_str().unwrap(),
    ]);
    assert!(out.contains("WILL archive into this repository"), "{out}");
    give_to_pg(&base);
    let mut keep = Cluster::at(base, pgdata);
    keep.start_ok();
    keep.wait_for_consistency();
    assert_eq!(keep.query_one("SHOW archive_mode"), "on");
    keep.switch_wal_and_wait(&repo);
    let names = repo.open().wal_names("main").unwrap();
    assert!(names.contains(&"00000002.history".to_string()), "{names:?}");

    // A bad value is a usage error that writes nothing.
    let never = s.path().join("never");
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--archive-mode",
        "sometimes",
        "--pgdata",
        never.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("sometimes"));
    assert!(!never.exists());
}
