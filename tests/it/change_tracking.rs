//! Incrementals that read only the blocks WAL names, from the archived WAL
//! or (PostgreSQL 17 and later with `summarize_wal = on`) from the server's
//! WAL summaries. Each one is taken with `--change-tracking check`, which
//! reads every block as well and fails if WAL missed a write, over workloads
//! that stress what WAL does and does not vouch for; then the backups restore
//! exactly.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

fn pgbench(c: &Cluster, args: &[&str]) {
    let sock = c.sockdir.to_str().unwrap().to_string();
    let mut all = vec!["-h", &sock, "-U", "postgres"];
    all.extend_from_slice(args);
    all.push("postgres");
    check(&run_as_pg(&client_tool("pgbench"), &all), "pgbench");
}

/// An incremental taken in checking mode: it must find its changes in WAL,
/// from `source` (`archived-wal`, `wal-summaries`).
fn checked_incr(c: &Cluster, repo: &Repo, source: &str) -> String {
    let out = c.backup_ok(repo, &["--type", "incr", "--change-tracking", "check"]);
    assert!(
        out.contains(&format!("changes found by: {source}")),
        "the incremental did not use {source}: {out}"
    );
    let b = repo.backups().last().unwrap().clone();
    assert_eq!(b["changes"], source, "{b}");
    out
}

/// Round one: pgbench, and everything that makes new relation files or
/// changes them outside plain block writes.
fn first_round(c: &Cluster, major: u32) {
    pgbench(c, &["-n", "-t", "300", "-c", "2"]);
    c.exec(
        "TRUNCATE pgbench_history;
         INSERT INTO pgbench_history SELECT 1, 1, 1, g, now() FROM generate_series(1, 2000) g;
         CREATE TABLE docs (id serial PRIMARY KEY, body text, tags text[], pos point, at timestamptz);
         INSERT INTO docs (body, tags, pos, at)
           SELECT md5(g::text), ARRAY[g % 7, g % 11]::text[], point(g % 100, g / 100), now()
           FROM generate_series(1, 20000) g;
         CREATE INDEX docs_body ON docs (body);
         CREATE INDEX docs_tags ON docs USING gin (tags);
         CREATE INDEX docs_pos ON docs USING gist (pos);
         CREATE INDEX docs_at ON docs USING brin (at);
         CREATE INDEX docs_hash ON docs USING hash (id);
         CREATE SEQUENCE counter;
         SELECT nextval('counter') FROM generate_series(1, 500);
         CREATE TABLE blobs (id int, lo oid);
         INSERT INTO blobs SELECT g, lo_from_bytea(0, decode(repeat(md5(g::text), 200), 'hex'))
           FROM generate_series(1, 50) g;
         CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 10000) g;
         CREATE TABLE shrinking AS SELECT g, repeat('x', 300) AS pad FROM generate_series(1, 20000) g;",
    );
    c.exec("VACUUM FULL pgbench_tellers");
    c.exec("CLUSTER pgbench_branches USING pgbench_branches_pkey");
    if major >= 15 {
        c.exec("CREATE DATABASE copied STRATEGY FILE_COPY");
        c.exec("CREATE DATABASE logged STRATEGY WAL_LOG");
    } else {
        c.exec("CREATE DATABASE copied");
        c.exec("CREATE DATABASE logged");
    }
    c.exec_db(
        "copied",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g",
    );
    c.exec_db(
        "logged",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g",
    );
    c.exec("CHECKPOINT");
}

/// Round two: more pgbench, a relation that VACUUM shrinks, moves between
/// tablespaces, a database dropped and one copied from another.
fn second_round(c: &Cluster, s: &Scratch, major: u32) {
    pgbench(c, &["-n", "-t", "300", "-c", "2"]);
    let (_, _) = c.create_tablespace(s, "fast", "ts_fast");
    c.exec(
        "DELETE FROM shrinking WHERE g > 2000;
         UPDATE docs SET body = md5(body) WHERE id % 50 = 0;
         SELECT nextval('counter') FROM generate_series(1, 100);
         INSERT INTO blobs SELECT 100, lo_from_bytea(0, 'late');
         ALTER TABLE docs SET TABLESPACE fast;",
    );
    c.exec("VACUUM shrinking");
    c.exec("REINDEX INDEX CONCURRENTLY docs_body");
    c.exec("DROP DATABASE copied");
    c.exec_db("logged", "UPDATE t SET g = g + 1 WHERE g % 3 = 0");
    if major >= 15 {
        c.exec("CREATE DATABASE copied2 TEMPLATE logged STRATEGY FILE_COPY");
    } else {
        c.exec("CREATE DATABASE copied2 TEMPLATE logged");
    }
    c.exec("ALTER DATABASE logged SET TABLESPACE fast");
    c.exec("CHECKPOINT");
}

/// Restore `set`, start it with the source's server and compare it with the
/// source as it is now. An unlogged table comes back empty, as PostgreSQL
/// leaves it after a crash.
fn restore_exactly(s: &Scratch, repo: &Repo, name: &str, set: &str, src: &Cluster) {
    let mut want = src.table_hashes();
    let spaces = s.pg_dir(&format!("{name}_spaces"));
    let args = [
        "--set",
        set,
        "--target",
        "immediate",
        "--target-action",
        "promote",
        "--tablespace-map-all",
        spaces.to_str().unwrap(),
    ];
    let mut dst = restore(s, repo, name, &args);
    dst.bindir = src.bindir.clone();
    dst.start_ok();
    dst.wait_for_consistency();
    let mut got = dst.table_hashes();
    if want.remove("postgres/public.scratch").is_some() {
        assert_eq!(
            got.remove("postgres/public.scratch").as_deref(),
            Some("0:"),
            "an unlogged table came back with rows"
        );
    }
    assert_eq!(got, want, "backup {set} restored other data");
    dst.amcheck();
    dst.stop();
}

/// `conf` is added to the source's `postgresql.conf`; every incremental
/// must find its changes by `source`.
fn mixed_workloads(bindir: Option<&Path>, conf: &str, source: &str) {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::new(
        &s,
        "src",
        ClusterOpts {
            archive_to: Some(&repo),
            bindir,
            extra_conf: conf,
            ..Default::default()
        },
    );
    let major = server_major(&src.bindir);
    pgbench(&src, &["-i", "-q", "-s", "2"]);
    src.backup_ok(&repo, &["--type", "full"]);

    first_round(&src, major);
    checked_incr(&src, &repo, source);
    let first = repo.backups().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The restore compares with the source as it is now: taken before
    // round two changes it.
    restore_exactly(&s, &repo, "first", &first, &src);

    second_round(&src, &s, major);
    checked_incr(&src, &repo, source);

    // The hourly case: a little pgbench. WAL names a few blocks, and the
    // backup reads those, not the database. Tables in a tablespace (moved
    // there in round two) change too.
    pgbench(&src, &["-n", "-t", "200", "-c", "2"]);
    src.exec("UPDATE docs SET body = body || 'x' WHERE id % 1000 = 0");
    src.exec_db("logged", "UPDATE t SET g = g + 1 WHERE g % 10 = 0");
    src.exec("CHECKPOINT");
    checked_incr(&src, &repo, source);
    let last = repo.backups().last().unwrap().clone();
    let (read, size) = (
        last["read_bytes"].as_u64().unwrap(),
        last["db_bytes"].as_u64().unwrap(),
    );
    assert!(
        read * 4 < size,
        "an hourly incremental read {read} of {size} bytes"
    );
    restore_exactly(&s, &repo, "last", "latest", &src);
}

const SUMMARIES: &str = "summarize_wal = on\n";

#[test]
fn incrementals_from_wal_are_exact_over_mixed_workloads() {
    mixed_workloads(None, "", "archived-wal");
}

#[test]
fn incrementals_from_wal_are_exact_over_mixed_workloads_on_14() {
    mixed_workloads(Some(&pg_bindir_for(14)), "", "archived-wal");
}

#[test]
fn incrementals_from_wal_are_exact_over_mixed_workloads_on_18() {
    mixed_workloads(Some(&pg_bindir_for(18)), "", "archived-wal");
}

#[test]
fn incrementals_from_wal_summaries_are_exact_over_mixed_workloads_on_17() {
    mixed_workloads(Some(&pg_bindir_for(17)), SUMMARIES, "wal-summaries");
}

#[test]
fn incrementals_from_wal_summaries_are_exact_over_mixed_workloads_on_18() {
    mixed_workloads(Some(&pg_bindir_for(18)), SUMMARIES, "wal-summaries");
}

fn summaries_cluster(s: &Scratch, repo: &Repo, conf: &str) -> Cluster {
    let src = Cluster::new(
        s,
        "src",
        ClusterOpts {
            archive_to: Some(repo),
            bindir: Some(&pg_bindir_for(17)),
            extra_conf: conf,
            ..Default::default()
        },
    );
    load_sample(&src, 5_000);
    src.backup_ok(repo, &["--type", "full"]);
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 0; CHECKPOINT");
    src
}

/// Without `summarize_wal`, a 17 server has no summaries: the archived WAL
/// says what changed.
#[test]
fn without_summarize_wal_the_archived_wal_is_read_on_17() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = summaries_cluster(&s, &repo, "summarize_wal = off\n");
    checked_incr(&src, &repo, "archived-wal");
    restore_exactly(&s, &repo, "dst", "latest", &src);
}

/// Remove the server's WAL summaries once the summarizer is past `lsn`, so
/// that none covers it.
fn drop_summaries_past(c: &Cluster, lsn: &str) {
    let past =
        format!("SELECT (summarized_lsn > '{lsn}')::text FROM pg_get_wal_summarizer_state()");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.query_one(&past) != "true" {
        assert!(Instant::now() < deadline, "the summarizer is stuck");
        std::thread::sleep(Duration::from_millis(100));
    }
    for e in std::fs::read_dir(c.pgdata.join("pg_wal/summaries")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "summary") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

fn last_start(repo: &Repo) -> String {
    repo.backups().last().unwrap()["start_lsn"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Summaries that do not cover the range since the prior backup's start
/// (here removed; in life, WAL of `wal_level = minimal` or summaries older
/// than `wal_summary_keep_time`) give way to the archived WAL, also when WAL
/// is required or checked; the next backup's range is covered again.
#[test]
fn a_gap_in_the_wal_summaries_falls_back_to_the_archived_wal() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = summaries_cluster(&s, &repo, SUMMARIES);
    drop_summaries_past(&src, &last_start(&repo));
    let out = src.backup_ok(&repo, &["--type", "incr", "--change-tracking", "wal"]);
    assert!(out.contains("changes found by: archived-wal"), "{out}");

    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 1; CHECKPOINT");
    drop_summaries_past(&src, &last_start(&repo));
    checked_incr(&src, &repo, "archived-wal");

    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 2; CHECKPOINT");
    checked_incr(&src, &repo, "wal-summaries");
    restore_exactly(&s, &repo, "dst", "latest", &src);
}

/// A database dropped and made again under the same OID by a file copy
/// from another template: its files are at the same paths as in the prior
/// backup (the catalogs' with the same relfilenodes and sizes), and WAL
/// names none of their blocks. Both sources make the whole database read
/// (the summaries by its limit block, relfilenode 0).
fn recreated_database(bindir: Option<&Path>, conf: &str, source: &str) {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::new(
        &s,
        "src",
        ClusterOpts {
            archive_to: Some(&repo),
            bindir,
            extra_conf: conf,
            ..Default::default()
        },
    );
    src.exec("CREATE DATABASE reborn OID = 50000 STRATEGY FILE_COPY");
    src.exec_db(
        "reborn",
        "CREATE TABLE old AS SELECT g FROM generate_series(1, 5000) g",
    );
    src.exec("CREATE DATABASE tpl STRATEGY FILE_COPY");
    src.exec_db(
        "tpl",
        "CREATE TABLE mine AS SELECT g * 2 AS g FROM generate_series(1, 5000) g",
    );
    src.exec("CHECKPOINT");
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("DROP DATABASE reborn");
    src.exec("CREATE DATABASE reborn OID = 50000 TEMPLATE tpl STRATEGY FILE_COPY");
    src.exec("CHECKPOINT");
    checked_incr(&src, &repo, source);
    restore_exactly(&s, &repo, "dst", "latest", &src);
}

#[test]
fn a_database_recreated_by_file_copy_is_read_whole() {
    recreated_database(None, "", "archived-wal");
}

#[test]
fn a_database_recreated_by_file_copy_is_read_whole_from_wal_summaries_on_17() {
    recreated_database(Some(&pg_bindir_for(17)), SUMMARIES, "wal-summaries");
}

/// When WAL cannot say, `auto` reads files and says why; `wal` refuses;
/// `off` reads files.
#[test]
fn incomplete_wal_falls_back_to_reading_files_and_says_why() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 5_000);
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 0");
    src.switch_wal_and_wait(&repo);
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 1; CHECKPOINT");
    src.switch_wal_and_wait(&repo);
    src.exec("CHECKPOINT");

    let out = src.backup_ok(&repo, &["--type", "incr", "--change-tracking", "off"]);
    assert!(
        out.contains("changes found by: file-scan: change tracking is off"),
        "{out}"
    );
    let out = src.backup_ok(&repo, &["--type", "incr", "--checksum"]);
    assert!(
        out.contains("changes found by: file-scan: every block is read, as asked"),
        "{out}"
    );
    misused(
        &src.backup(&repo, &["--checksum", "--change-tracking", "wal"]),
        "does not go with --change-tracking wal",
    );

    // A finished segment after that backup's start goes missing from the
    // repository and from pg_wal.
    let start = repo.backups().last().unwrap()["wal_start"]
        .as_str()
        .unwrap()
        .to_string();
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 2");
    src.switch_wal_and_wait(&repo);
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 3");
    src.switch_wal_and_wait(&repo);
    src.exec("CHECKPOINT");
    let next = format!(
        "{}{:08X}",
        &start[..16],
        u32::from_str_radix(&start[16..], 16).unwrap() + 1
    );
    let archived: Vec<String> = tree(&repo.path.join("wal"))
        .into_keys()
        .filter(|k| k.ends_with(&format!("{next}.zst")))
        .collect();
    assert_eq!(archived.len(), 1, "segment {next} is not in the repository");
    std::fs::remove_file(repo.path.join("wal").join(&archived[0])).unwrap();
    let _ = std::fs::remove_file(src.pgdata.join("pg_wal").join(&next));

    let o = src.backup(&repo, &["--type", "incr", "--change-tracking", "wal"]);
    fails_with(&o, "cannot be found from WAL");
    fails_with(&o, &next);
    let out = src.backup_ok(&repo, &["--type", "incr"]);
    assert!(out.contains("changes found by: file-scan: "), "{out}");
    assert!(out.contains(&next), "{out}");
    let b = repo.backups().last().unwrap().clone();
    assert!(
        b["changes"]
            .as_str()
            .unwrap()
            .starts_with("file-scan: WAL segment"),
        "{b}"
    );
    assert_eq!(repo.backups()[0]["changes"], serde_json::Value::Null);
    let text = pgstrata_ok(&["--repo", repo.arg(), "info"]);
    assert!(text.contains("(changes: file-scan: WAL segment"), "{text}");
    restore_exactly(&s, &repo, "dst", "latest", &src);
}

/// After a failover onto timeline 2, the WAL from the prior backup's start
/// on timeline 1 to the new backup's on timeline 2 is followed through the
/// history file, as recovery follows it; a backup whose timeline is not on
/// that history makes the next one read files, saying why.
#[test]
fn incrementals_follow_the_timeline_path_after_a_failover() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let mut a = Cluster::archiving(&s, "a", &repo);
    load_sample(&a, 5_000);
    a.backup_ok(&repo, &["--type", "full"]);
    a.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 50 = 0");
    a.switch_wal_and_wait(&repo);
    a.stop();

    // Fail over: the copy promotes onto timeline 2 and archives into the
    // same repository.
    let mut b = restore_archiving(&s, &repo, "b", &[]);
    b.start_ok();
    b.wait_for_consistency();
    assert_eq!(
        b.query_one("SELECT timeline_id::text FROM pg_control_checkpoint()"),
        "2"
    );
    b.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 50 = 1");
    b.exec("CHECKPOINT");
    checked_incr(&b, &repo, "archived-wal");
    restore_exactly(&s, &repo, "r1", "latest", &b);

    // The old primary comes back on timeline 1 and writes on: the newest
    // backup (timeline 2) is not on its history.
    a.start_ok();
    a.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 50 = 2");
    a.exec("CHECKPOINT");
    let out = a.backup_ok(&repo, &["--type", "incr"]);
    assert!(
        out.contains("changes found by: file-scan: the timeline changed"),
        "{out}"
    );
    a.stop();
    b.stop();
}

/// A backup role that is not a superuser (`pg_read_all_settings` and the
/// backup functions, as operations.md asks) takes incrementals from the
/// archived WAL too: the checkpoint's timeline is read from `pg_control`,
/// not with a function only superusers may call.
#[test]
fn a_role_that_is_not_a_superuser_takes_incrementals_from_wal() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 2_000);
    src.exec(
        "CREATE ROLE backup_agent LOGIN;
         GRANT pg_read_all_settings TO backup_agent;
         GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO backup_agent;
         GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO backup_agent;
         GRANT EXECUTE ON FUNCTION pg_switch_wal() TO backup_agent;",
    );
    let ci = format!(
        "host={} user=backup_agent dbname=postgres",
        src.sockdir.display()
    );
    let backup = |kind: &str| {
        pgstrata_ok(&[
            "--repo",
            repo.arg(),
            "backup",
            "--pgdata",
            src.pgdata.to_str().unwrap(),
            "--dbname",
            &ci,
            "--start-fast",
            "--type",
            kind,
        ])
    };
    backup("full");
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 10 = 0; CHECKPOINT");
    let out = backup("incr");
    assert!(out.contains("changes found by: archived-wal"), "{out}");
    restore_exactly(&s, &repo, "dst", "latest", &src);
}
