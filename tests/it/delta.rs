//! Delta restores (only what differs rewritten) and standby restores that
//! stream from the primary.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::*;

fn tree(root: &Path) -> BTreeMap<String, (String, u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let m = e.path().symlink_metadata().unwrap();
        let (kind, data) = if m.is_dir() {
            ("d".to_string(), vec![])
        } else if m.file_type().is_symlink() {
            (
                "l".to_string(),
                std::fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
                    .into_bytes(),
            )
        } else {
            ("f".to_string(), std::fs::read(e.path()).unwrap())
        };
        out.insert(
            rel,
            (
                kind,
                m.mode() & 0o7777,
                pgstrata::ChunkId::of(&data).to_hex(),
            ),
        );
    }
    out
}

#[test]
fn delta_restore_rewrites_only_what_differs() {
    delta_restore_rewrites_only_what_differs_in(Kind::Local);
}

#[test]
fn delta_restore_rewrites_only_what_differs_on_s3() {
    delta_restore_rewrites_only_what_differs_in(Kind::S3);
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

#[test]
fn standby_restore_streams_from_the_primary() {
    standby_restore_streams_from_the_primary_in(Kind::Local);
}

#[test]
fn standby_restore_streams_from_the_primary_on_s3() {
    standby_restore_streams_from_the_primary_in(Kind::S3);
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
