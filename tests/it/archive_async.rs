//! Asynchronous archiving and prefetching on a real cluster: the pusher
//! killed with SIGKILL over and over loses no segment, and recovery through a
//! prefetching restore_command replays exactly.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::*;

fn async_cluster(s: &Scratch, repo: &Repo, spool: &str) -> Cluster {
    let conf = format!(
        "archive_mode = on\narchive_command = '{BIN} --repo {} archive-push --async \
         --spool-dir {spool} --workers 2 %p'\n",
        repo.arg()
    );
    Cluster::new(
        s,
        "src",
        ClusterOpts {
            extra_conf: &conf,
            ..Default::default()
        },
    )
}

/// SIGKILL every pusher working for `spool`; how many were killed.
fn kill_pushers(spool: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", &format!("archive-push-worker.*{spool}")])
        .output()
        .expect("pgrep");
    let pids = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut n = 0;
    for pid in pids.split_whitespace() {
        if Command::new("kill")
            .args(["-9", pid])
            .status()
            .is_ok_and(|s| s.success())
        {
            n += 1;
        }
    }
    n
}

#[test]
fn async_archiving_survives_kill_9_of_the_pusher_and_restores_exactly() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let spool = s.pg_dir("spool");
    let spool = spool.to_str().unwrap().to_string();
    let src = async_cluster(&s, &repo, &spool);
    src.exec("CREATE TABLE t (id int, pad text)");
    src.switch_wal_and_wait(&repo);
    src.backup_ok(&repo, &["--type", "full"]);

    // Twenty segments of changes while a killer SIGKILLs the pusher.
    let stop = AtomicBool::new(false);
    let killed = std::thread::scope(|sc| {
        let killer = sc.spawn(|| {
            let mut killed = 0;
            while !stop.load(Ordering::Relaxed) {
                killed += kill_pushers(&spool);
                std::thread::sleep(Duration::from_millis(150));
            }
            killed
        });
        for i in 0..20 {
            src.exec(&format!(
                "INSERT INTO t SELECT g, repeat(md5(g::text), 20) FROM generate_series({}, {}) g;
                 SELECT pg_switch_wal();",
                i * 2000,
                i * 2000 + 1999
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        killer.join().unwrap()
    });
    assert!(killed > 0, "the test never caught a pusher to kill");
    src.exec("SELECT pg_create_restore_point('after_the_kills')");
    let want = src.table_hashes();
    src.switch_wal_and_wait(&repo);

    // Every segment reached the repository: recovery replays them all.
    restore_matches(
        &s,
        &repo,
        "dst",
        &[
            "--target-name",
            "after_the_kills",
            "--target-action",
            "promote",
        ],
        &want,
    );
    pgstrata_ok(&["--repo", repo.arg(), "verify"]);
    let failed = src.query_one("SELECT failed_count::text FROM pg_stat_archiver");
    eprintln!("pushers killed: {killed}; archive_command failures seen by PostgreSQL: {failed}");
}

#[test]
fn a_prefetching_restore_replays_exactly_and_spools_ahead() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t (id int, pad text)");
    src.backup_ok(&repo, &["--type", "full"]);
    for i in 0..12 {
        src.exec(&format!(
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series({}, {}) g;
             SELECT pg_switch_wal();",
            i * 1000,
            i * 1000 + 999
        ));
    }
    let want = src.table_hashes();
    src.switch_wal_and_wait(&repo);
    let spool = s.pg_dir("restore-spool");
    let dst = restore_matches(
        &s,
        &repo,
        "dst",
        &["--prefetch", "4", "--spool-dir", spool.to_str().unwrap()],
        &want,
    );
    let conf = std::fs::read_to_string(dst.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("--prefetch 4 --spool-dir"), "{conf}");
    // The fetcher worked ahead of recovery.
    assert!(spool.join("main/in/main/want").exists());

    // A relative spool is where it was given, not inside the data directory
    // PostgreSQL runs restore_command in.
    let rel = s.pg_dir("rel");
    let o = Command::new(BIN)
        .current_dir(s.path())
        .args(["--repo", repo.arg()])
        .args(repo.unlock())
        .args(["restore", "--pgdata", rel.join("data").to_str().unwrap()])
        .args(["--prefetch", "2", "--spool-dir", "relative-spool"])
        .output()
        .unwrap();
    check(&o, "restore with a relative --spool-dir");
    let conf = std::fs::read_to_string(rel.join("data/postgresql.auto.conf")).unwrap();
    let abs = s.path().canonicalize().unwrap().join("relative-spool");
    assert!(
        conf.contains(&format!("--spool-dir {} ", abs.display())),
        "{conf}"
    );
}

#[test]
fn async_archiving_bad_input_is_one_line() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let seg = s.path().join("000000010000000000000001");
    std::fs::write(&seg, vec![0u8; 8192]).unwrap();
    // A spool directory that cannot be made.
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "archive-push",
        "--async",
        "--spool-dir",
        "/proc/no/such/spool",
        seg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot use spool directory"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    // A bad queue policy in the config file is a usage error.
    let cfg = s.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "repo = {:?}\narchive-async = true\narchive-queue-full = \"maybe\"\n",
            repo.arg()
        ),
    )
    .unwrap();
    let o = pgstrata(&[
        "--config",
        cfg.to_str().unwrap(),
        "archive-push",
        seg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("archive-queue-full"));
}
