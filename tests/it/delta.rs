//! Delta restores (only what differs rewritten) and standby restores that
//! stream from the primary.

use std::path::Path;

use crate::harness::*;

on_local_and_s3! {
    delta_restore_rewrites_only_what_differs_in =>
        delta_restore_rewrites_only_what_differs,
        delta_restore_rewrites_only_what_differs_on_s3;
}

fn delta_restore_rewrites_only_what_differs_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let mut src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 30_000);
    src.backup_ok(&repo, &["--type", "full"]);
    let first = repo.backups()[0]["id"].as_str().unwrap().to_string();
    src.exec(
        "UPDATE accounts SET balance = 0 WHERE id % 100 = 0; CREATE TABLE extra AS SELECT 1 AS x;",
    );
    src.backup_ok(&repo, &["--type", "incr"]);
    let second = repo.backups()[1]["id"].as_str().unwrap().to_string();

    // An old copy of the cluster (the first backup), then damaged.
    let old = restore(&s, &repo, "old", &["--set", &first]);
    let d = &old.pgdata;
    let mut rels: Vec<_> = walkdir::WalkDir::new(d.join("base"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.metadata().unwrap().len() > 3 * 8192)
        .map(|e| e.path().to_path_buf())
        .collect();
    rels.sort();
    assert!(rels.len() >= 4);
    std::fs::remove_file(&rels[0]).unwrap();
    std::fs::remove_file(d.join("PG_VERSION")).unwrap();
    for victim in &rels[1..3] {
        let mut b = std::fs::read(victim).unwrap();
        b[8192 + 100] ^= 0xff;
        b[2 * 8192 + 7] ^= 0xff;
        std::fs::write(victim, &b).unwrap();
    }
    std::fs::write(d.join("stray.txt"), b"not in any backup").unwrap();
    std::fs::create_dir_all(d.join("base/stray_dir")).unwrap();
    std::fs::write(d.join("base/stray_dir/x"), b"x").unwrap();
    std::fs::write(d.join("pg_wal/000000010000000000000099"), b"old wal").unwrap();
    // Take PG_VERSION back so it still looks like a data directory.
    std::fs::write(d.join("PG_VERSION"), b"15\n").unwrap();

    // Refused while a server runs in the target, and for another cluster.
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--delta",
            "--pgdata",
            src.pgdata.to_str().unwrap(),
        ]),
        "running",
    );
    let other = Cluster::new(&s, "other", ClusterOpts::default());
    let mut other = other;
    other.stop();
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--delta",
            "--pgdata",
            other.pgdata.to_str().unwrap(),
        ]),
        "only updates a copy of the same cluster",
    );
    // Without --delta a non-empty directory is still refused.
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            d.to_str().unwrap(),
        ]),
        "not empty",
    );

    let out = pgstrata_ok(&[
        "--repo",
        repo.arg(),
        "restore",
        "--delta",
        "--set",
        &second,
        "--pgdata",
        d.to_str().unwrap(),
    ]);
    // The harness appends archive_mode = off to what it restores; do the same.
    append(&d.join("postgresql.conf"), "\narchive_mode = off\n");
    let fresh = restore(&s, &repo, "fresh", &["--set", &second]);
    let (a, b) = (tree(d), tree(&fresh.pgdata));
    let differ: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: delta {:?} fresh {:?}", a.get(k), b.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "delta result differs from a fresh restore:\n{}",
        differ.join("\n")
    );

    let written: f64 = out
        .split("delta: ")
        .nth(1)
        .and_then(|r| r.split(" rewritten").next())
        .map(|h| {
            let (n, unit) = h.split_once(' ').unwrap();
            let mult = match unit {
                "B" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1048576.0,
                _ => 1073741824.0,
            };
            n.parse::<f64>().unwrap() * mult
        })
        .unwrap_or_else(|| panic!("no delta figure in {out}"));
    let size = repo.backups()[1]["db_bytes"].as_f64().unwrap();
    assert!(
        written * 5.0 < size,
        "delta wrote {written} bytes of {size}"
    );
    src.stop();

    // And it starts and holds the second backup's data.
    let mut started = Cluster::at(d.parent().unwrap().to_path_buf(), d.clone());
    started.start_ok();
    started.wait_for_consistency();
    assert_eq!(started.query_one("SELECT count(*)::text FROM extra"), "1");
    started.amcheck();
}

on_local_and_s3! {
    standby_restore_streams_from_the_primary_in =>
        standby_restore_streams_from_the_primary,
        standby_restore_streams_from_the_primary_on_s3;
}

fn standby_restore_streams_from_the_primary_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let primary = Cluster::archiving(&s, "primary", &repo);
    primary.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;");
    primary.backup_ok(&repo, &["--type", "full"]);
    let ci = format!(
        "host={} user=postgres application_name=standby1",
        primary.sockdir.display()
    );
    let mut standby = restore(
        &s,
        &repo,
        "standby",
        &["--type", "standby", "--primary-conninfo", &ci],
    );
    assert!(standby.pgdata.join("standby.signal").exists());
    assert!(!standby.pgdata.join("recovery.signal").exists());
    standby.start_ok();
    primary.exec("INSERT INTO t SELECT g FROM generate_series(1001, 1500) g;");
    let mut ok = false;
    for _ in 0..1800 {
        let c = std::panic::catch_unwind(|| {
            (
                standby.query_one("SELECT pg_is_in_recovery()::text"),
                standby.query_one("SELECT count(*)::text FROM t"),
                standby.query_one(
                    "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')",
                ),
            )
        });
        if let Ok((rec, n, status)) = c {
            if rec == "true" && n == "1500" && status == "streaming" {
                ok = true;
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        ok,
        "standby never streamed the new rows; log:\n{}",
        standby.log_text()
    );
    let app = primary.query_one(
        "SELECT coalesce(string_agg(application_name, ','), '') FROM pg_stat_replication",
    );
    assert_eq!(app, "standby1");
    // --primary-conninfo without --type standby is a usage mistake.
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        s.path().join("x").to_str().unwrap(),
        "--primary-conninfo",
        "host=x",
    ]);
    misused(&o, "--type standby");
}

/// The relative paths of every entry under `root`.
fn names(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .flatten()
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

/// A copy restored on the primary's host with its tablespace moved
/// (`--tablespace-map-all`), then the primary writes into its own tablespace:
/// a delta of the copy without a map uses the copy's own link and never
/// touches the primary; with the link gone it is refused.
#[test]
fn delta_restore_never_writes_into_the_primarys_tablespace() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let (ts, oid) = src.create_tablespace(&s, "one", "ts_primary");
    src.exec(
        "CREATE TABLE in_ts (id int PRIMARY KEY, v text) TABLESPACE one;
         INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    );
    src.backup_ok(&repo, &["--type", "full"]);
    let copy_ts = s.pg_dir("copy_ts");
    let mut copy = restore(
        &s,
        &repo,
        "copy",
        &["--tablespace-map-all", copy_ts.to_str().unwrap()],
    );
    let own = copy_ts.join(&oid);
    let link = copy.pgdata.join("pg_tblspc").join(&oid);
    assert_eq!(std::fs::read_link(&link).unwrap(), own);

    // The primary moves on: a second backup, then a table only it has.
    src.exec(
        "UPDATE in_ts SET v = 'changed' WHERE id % 10 = 0;
         CREATE TABLE in_ts2 TABLESPACE one AS SELECT g FROM generate_series(1, 1000) g;",
    );
    src.backup_ok(&repo, &["--type", "incr"]);
    let want = src.table_hashes();
    src.exec(
        "CREATE TABLE after_backup TABLESPACE one AS SELECT g FROM generate_series(1, 777) g;
         CHECKPOINT;",
    );
    let after = src
        .pgdata
        .join(src.query_one("SELECT pg_relation_filepath('after_backup')"));
    let primary_files = names(&ts);
    let primary_ok = |src: &Cluster| {
        assert!(after.exists(), "the primary lost {}", after.display());
        assert_eq!(
            names(&ts),
            primary_files,
            "the primary's tablespace changed"
        );
        assert_eq!(
            src.query_one("SELECT count(*)::text FROM after_backup"),
            "777"
        );
        assert_eq!(src.query_one("SELECT count(*)::text FROM in_ts2"), "1000");
    };
    let copy_data = copy.pgdata.clone();
    let delta = |extra: &[&str]| {
        let mut args = vec![
            "--repo",
            repo.arg(),
            "restore",
            "--delta",
            "--target",
            "immediate",
            "--target-action",
            "promote",
            "--pgdata",
            copy_data.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        pgstrata(&args)
    };

    // The copy's own link decides where its tablespace is.
    check(&delta(&[]), "delta restore of the copy");
    primary_ok(&src);
    assert_eq!(std::fs::read_link(&link).unwrap(), own);
    give_to_pg(&copy_ts);
    copy.start_ok();
    copy.wait_for_consistency();
    assert_eq!(copy.table_hashes(), want);
    let loc = copy
        .query_one("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'one'");
    assert_eq!(loc, own.display().to_string());
    copy.amcheck();
    copy.stop();

    // Without the link and without a map, the original (the primary's,
    // not empty) directory is refused.
    std::fs::remove_file(&link).unwrap();
    let o = delta(&[]);
    fails_with(
        &o,
        &format!("tablespace {oid}: {} is not empty", ts.display()),
    );
    fails_with(&o, &format!("--tablespace-map {oid}=DIR"));
    primary_ok(&src);
    assert!(!copy.pgdata.join(".pgstrata-restore-incomplete").exists());
    // Named explicitly, the running primary's tablespace is refused too.
    let map = format!("{oid}={}", ts.display());
    fails_with(
        &delta(&["--tablespace-map", &map]),
        "PostgreSQL server running",
    );
    primary_ok(&src);
    // Named explicitly, the copy's own directory is used.
    let map = format!("{oid}={}", own.display());
    check(
        &delta(&["--tablespace-map", &map]),
        "delta restore with a map",
    );
    assert_eq!(std::fs::read_link(&link).unwrap(), own);
    primary_ok(&src);
    copy.start_ok();
    copy.wait_for_consistency();
    assert_eq!(copy.table_hashes(), want);
}

/// Start `restore` with `args` and kill it (SIGKILL) once it has written
/// part of `target`.
fn kill_part_way(args: &[&str], target: &Path) {
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let files = |d: &Path| {
        walkdir::WalkDir::new(d)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count()
    };
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the restore ended ({st}) before it could be killed: load more data");
        }
        if files(&target.join("base")) >= 100 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        target.join(".pgstrata-restore-incomplete").exists(),
        "a half-written target is not marked"
    );
    for f in ["backup_label", "recovery.signal"] {
        assert!(!target.join(f).exists(), "{f} in a half-written target");
    }
}

/// A restore killed part-way is finished by running the same command
/// again, or by `--delta` (even before PG_VERSION was written).
#[test]
fn an_interrupted_restore_is_finished_by_running_it_again() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 300_000);
    src.backup_ok(&repo, &["--type", "full"]);
    let want = src.table_hashes();
    let restore_args = |t: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--repo",
            repo.arg(),
            "restore",
            "--workers",
            "1",
            "--target",
            "immediate",
            "--target-action",
            "promote",
            "--pgdata",
            t.to_str().unwrap(),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let run_ok = |args: &[String]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        pgstrata_ok(&a)
    };
    let started = |base: &Path| {
        let base = base.to_path_buf();
        let data = base.join("data");
        append(&data.join("postgresql.conf"), "\narchive_mode = off\n");
        give_to_pg(&base);
        let mut c = Cluster::at(base, data);
        c.start_ok();
        c.wait_for_consistency();
        assert_eq!(c.table_hashes(), want);
        c.amcheck();
        c
    };

    // The same command again.
    let a = s.pg_dir("a").join("data");
    let args = restore_args(&a, &[]);
    kill_part_way(&args.iter().map(String::as_str).collect::<Vec<_>>(), &a);
    let out = run_ok(&args);
    assert!(out.contains("delta:"), "{out}");
    assert!(!a.join(".pgstrata-restore-incomplete").exists());
    let mut ca = started(a.parent().unwrap());
    ca.stop();

    // --delta, killed before PG_VERSION and pg_control were written.
    let b = s.pg_dir("b").join("data");
    let args = restore_args(&b, &[]);
    kill_part_way(&args.iter().map(String::as_str).collect::<Vec<_>>(), &b);
    let _ = std::fs::remove_file(b.join("PG_VERSION"));
    let _ = std::fs::remove_file(b.join("global/pg_control"));
    run_ok(&restore_args(&b, &["--delta"]));
    assert!(!b.join(".pgstrata-restore-incomplete").exists());
    started(b.parent().unwrap());
}
