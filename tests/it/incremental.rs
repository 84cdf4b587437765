//! Differential and incremental backups restore exactly, whatever changed.

use std::time::{Duration, SystemTime};

use std::collections::BTreeMap;

use crate::harness::*;

fn restore_and_compare(
    s: &Scratch,
    repo: &Repo,
    name: &str,
    set: &str,
    want: &BTreeMap<String, String>,
) {
    let args = [
        "--set",
        set,
        "--target",
        "immediate",
        "--target-action",
        "promote",
    ];
    let mut dst = restore_matches(s, repo, name, &args, want);
    dst.amcheck();
    dst.stop();
}

on_local_and_s3! {
    diff_and_incr_restore_exactly_after_every_kind_of_change_in =>
        diff_and_incr_restore_exactly_after_every_kind_of_change,
        diff_and_incr_restore_exactly_after_every_kind_of_change_on_s3;
}

fn diff_and_incr_restore_exactly_after_every_kind_of_change_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let made = std::time::Instant::now();
    load_sample(&src, 20_000);
    src.exec(
        "CREATE TABLE doomed AS SELECT g FROM generate_series(1, 5000) g;
         CREATE TABLE shrinking AS SELECT g, md5(g::text) m FROM generate_series(1, 20000) g;
         CREATE TABLE growing (g int, pad text);
         INSERT INTO growing SELECT g, repeat('p', 200) FROM generate_series(1, 100) g;",
    );
    // A file written in the two seconds before the full's start is read
    // again by the next backup (design.md, Backup flow, step 4); the files
    // initdb wrote and nothing touched since must be older than that for
    // the incr below to skip them.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(made.elapsed()));
    src.backup_ok(&repo, &["--type", "full"]);
    let full_stored = repo.backups()[0]["stored_bytes"].as_u64().unwrap();

    // Inserts, updates, deletes, a dropped table, a truncated relation,
    // a relation extended by many new blocks, a new database.
    src.exec(
        "INSERT INTO accounts SELECT g, 1, 'new' FROM generate_series(20001, 22000) g;
         UPDATE accounts SET balance = balance + 1 WHERE id % 10 = 0;
         DELETE FROM events WHERE kind = 'c';
         DROP TABLE doomed;
         TRUNCATE shrinking;
         INSERT INTO shrinking VALUES (1, 'one');
         INSERT INTO growing SELECT g, repeat('q', 200) FROM generate_series(1, 40000) g;
         ",
    );
    src.exec("CREATE DATABASE newdb");
    src.exec_db(
        "newdb",
        "CREATE TABLE n AS SELECT g FROM generate_series(1, 3000) g;",
    );
    src.backup_ok(&repo, &["--type", "incr"]);
    let after_incr = src.table_hashes();

    // VACUUM FULL rewrites relations into new files.
    src.exec("VACUUM FULL accounts");
    src.exec("VACUUM FULL docs");
    src.exec("UPDATE docs SET meta = meta || '{\"v\":2}' WHERE id % 3 = 0;");
    src.backup_ok(&repo, &["--type", "diff"]);
    let after_diff = src.table_hashes();

    let b = repo.backups();
    assert_eq!(b.len(), 3);
    assert_eq!(b[1]["type"], "incr");
    assert_eq!(b[1]["reference"], b[0]["id"]);
    assert_eq!(b[2]["type"], "diff");
    assert_eq!(
        b[2]["reference"], b[0]["id"],
        "a diff refers to the last full"
    );
    let incr_stored = b[1]["stored_bytes"].as_u64().unwrap();
    assert!(
        incr_stored < full_stored,
        "incr {incr_stored} >= full {full_stored}"
    );
    // The incr did not re-read files that did not change.
    assert!(
        b[1]["read_bytes"].as_u64() < b[1]["db_bytes"].as_u64(),
        "the incr read {} of {} bytes",
        b[1]["read_bytes"],
        b[1]["db_bytes"]
    );

    restore_and_compare(
        &s,
        &repo,
        "r-incr",
        b[1]["id"].as_str().unwrap(),
        &after_incr,
    );
    restore_and_compare(
        &s,
        &repo,
        "r-diff",
        b[2]["id"].as_str().unwrap(),
        &after_diff,
    );
}

#[test]
fn incr_restores_after_its_full_manifest_is_gone() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 10_000);
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("UPDATE accounts SET balance = 0 WHERE id < 100;");
    src.backup_ok(&repo, &["--type", "incr"]);
    let want = src.table_hashes();
    let b = repo.backups();
    let full = b[0]["id"].as_str().unwrap().to_string();
    // Remove the full's manifest entirely (its chunks stay: the incr uses them).
    let db = rusqlite::Connection::open(repo.path.join("catalog.db")).unwrap();
    db.execute("PRAGMA foreign_keys = ON", []).unwrap();
    let n = db
        .execute("DELETE FROM backup WHERE id = ?1", [&full])
        .unwrap();
    assert_eq!(n, 1);
    let left: i64 = db
        .query_row(
            "SELECT count(*) FROM file WHERE backup_id = ?1",
            [&full],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    // And every file version only the full used (rows are shared versions).
    let gone = db
        .execute(
            "DELETE FROM file_version WHERE NOT EXISTS (SELECT 1 FROM backup b \
             WHERE b.seq BETWEEN first_seq AND last_seq)",
            [],
        )
        .unwrap();
    assert!(gone > 0, "the full had rows of its own");
    drop(db);
    restore_and_compare(&s, &repo, "r", b[1]["id"].as_str().unwrap(), &want);
}

fn set_mtime(path: &std::path::Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn change_in_the_reference_second_and_checksum_mode() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    // Three extra files in PGDATA: one whose mtime is after the backup's
    // start and one stamped a moment before it (as a coarse kernel clock may
    // stamp a write made just after the start), so that a same-size change
    // keeping that mtime must still be seen; and one with an old mtime that
    // only --checksum can catch.
    let recent = src.pgdata.join("recent.dat");
    let lagging = src.pgdata.join("lagging.dat");
    let old = src.pgdata.join("old.dat");
    // The lagging stamp must fall within the second before the full's start
    // (what a coarse clock can do); on a loaded machine the full may start
    // later than that, and is then taken again with a fresh stamp.
    let (mut recent_mtime, mut lagging_mtime);
    let old_mtime = SystemTime::now() - Duration::from_secs(86_400);
    let mut tries = 0;
    loop {
        recent_mtime = SystemTime::now() + Duration::from_secs(2);
        lagging_mtime = SystemTime::now() - Duration::from_millis(100);
        for (f, m) in [
            (&recent, recent_mtime),
            (&lagging, lagging_mtime),
            (&old, old_mtime),
        ] {
            std::fs::write(f, vec![b'a'; 10_000]).unwrap();
            set_mtime(f, m);
            give_to_pg(f);
        }
        src.backup_ok(&repo, &["--type", "full"]);
        let started = repo.backups().last().unwrap()["start_time"]
            .as_str()
            .unwrap()
            .to_string();
        let started: jiff::Timestamp = started.parse().unwrap();
        // The incr's bound: the whole second before the start's.
        let bound = SystemTime::UNIX_EPOCH + Duration::from_secs(started.as_second() as u64 - 1);
        if lagging_mtime >= bound {
            break;
        }
        tries += 1;
        assert!(
            tries < 5,
            "no full started within a second of its files' stamps"
        );
    }

    for (f, m) in [
        (&recent, recent_mtime),
        (&lagging, lagging_mtime),
        (&old, old_mtime),
    ] {
        std::fs::write(f, vec![b'b'; 10_000]).unwrap();
        set_mtime(f, m);
    }

    // Plain incr: the files stamped near or after the reference's start are
    // re-read; the old one, same size and mtime, is trusted as unchanged (as
    // in every tool that uses timestamps).
    src.backup_ok(&repo, &["--type", "incr"]);
    let r1 = restore(&s, &repo, "r1", &[]);
    for f in ["recent.dat", "lagging.dat"] {
        assert_eq!(
            std::fs::read(r1.pgdata.join(f)).unwrap(),
            vec![b'b'; 10_000],
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read(r1.pgdata.join("old.dat")).unwrap(),
        vec![b'a'; 10_000]
    );

    // --checksum reads everything and finds the change.
    src.backup_ok(&repo, &["--type", "incr", "--checksum"]);
    let b = repo.backups();
    let last = b.last().unwrap();
    assert_eq!(last["read_bytes"], last["db_bytes"]);
    let r2 = restore(&s, &repo, "r2", &[]);
    assert_eq!(
        std::fs::read(r2.pgdata.join("old.dat")).unwrap(),
        vec![b'b'; 10_000]
    );
    // mtimes are restored as recorded.
    let m = std::fs::metadata(r2.pgdata.join("old.dat"))
        .unwrap()
        .modified()
        .unwrap();
    let d = m.duration_since(old_mtime).unwrap_or_else(|e| e.duration());
    assert!(d < Duration::from_millis(1), "mtime not restored: {d:?}");
}
