//! Faults: kill -9 of a real `pgstrata` child process at several moments of
//! a backup and of an archive-push, and a connection dropped mid-backup.
//! Afterwards the repository verifies, the next command works, and the
//! server is not left in backup mode.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{catalog, err, verify_ok};
use crate::bad_input::assert_no_backup_session;
use crate::harness::*;

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("PGSTRATA_REPO")
        .env_remove("PGSTRATA_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pgstrata")
}

fn spawn_backup(repo: &Repo, c: &Cluster, config: &Path, extra: &[&str]) -> Child {
    let ci = c.conninfo();
    let mut args = vec![
        "--repo",
        repo.arg(),
        "--config",
        config.to_str().unwrap(),
        "backup",
        "--pgdata",
        c.pgdata.to_str().unwrap(),
        "--dbname",
        &ci,
        "--start-fast",
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// Files below `dir` and their total size.
fn files_and_bytes(dir: &Path) -> (usize, u64) {
    let mut n = 0;
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if e.file_type().is_file() {
            n += 1;
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    (n, bytes)
}

/// Poll until `cond` holds, then kill -9 the child; panic if it exits first.
fn kill_when(child: &mut Child, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            if let Some(mut s) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut s, &mut e);
            }
            panic!("pgstrata exited ({st}) before the kill point {what:?}: {e}");
        }
        if cond() {
            break;
        }
        assert!(Instant::now() < deadline, "kill point {what:?} never came");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(9), "{what}: {st}");
}

fn running_backup_copied_everything(repo: &Repo) -> bool {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        repo.path.join("catalog.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return false;
    };
    let _ = db.busy_timeout(Duration::from_secs(5));
    db.query_row(
        "SELECT count(*) FROM file f JOIN backup b ON b.id = f.backup_id \
         WHERE b.status = 'running' AND f.path = 'global/pg_control'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .unwrap_or(false)
}

fn complete_backups(repo: &Repo) -> usize {
    repo.backups()
        .iter()
        .filter(|b| b["status"] == "complete")
        .count()
}

#[test]
fn kill_9_of_backup_at_any_moment_leaves_a_usable_repository() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 150_000);
    // Small packs: many seal points inside one backup.
    let config = s.path().join("small-packs.toml");
    std::fs::write(&config, "pack-size-mib = 1\nworkers = 2\n").unwrap();
    let tmp = repo.path.join("tmp");
    let packs = repo.path.join("packs");

    // 1. While the first pack is being written.
    let mut child = spawn_backup(&repo, &src, &config, &["--type", "full"]);
    kill_when(&mut child, "first pack being written", || {
        files_and_bytes(&tmp).1 > 64 << 10
    });
    assert_no_backup_session(&src);
    verify_ok(&repo);

    // 2. After several packs were sealed, with another one half written.
    let sealed_before = files_and_bytes(&packs).0;
    let mut child = spawn_backup(&repo, &src, &config, &["--type", "full"]);
    kill_when(&mut child, "packs sealed, one in progress", || {
        files_and_bytes(&packs).0 >= sealed_before + 3 && files_and_bytes(&tmp).1 > 0
    });
    assert_no_backup_session(&src);
    verify_ok(&repo);
    assert_eq!(complete_backups(&repo), 0);

    // The next backup works.
    src.backup_ok(&repo, &["--type", "full"]);
    verify_ok(&repo);

    // 3. While waiting for the WAL to be archived.
    src.exec("ALTER SYSTEM SET archive_command = 'false'");
    src.exec("SELECT pg_reload_conf()");
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = 0");
    let mut child = spawn_backup(&repo, &src, &config, &["--archive-timeout", "120"]);
    kill_when(&mut child, "waiting for WAL", || {
        running_backup_copied_everything(&repo)
    });
    assert_no_backup_session(&src);
    src.exec("ALTER SYSTEM RESET archive_command");
    src.exec("SELECT pg_reload_conf()");
    let report = verify_ok(&repo);
    assert!(
        report.contains("is aborted"),
        "the interrupted backup is not noted: {report}"
    );
    assert_eq!(complete_backups(&repo), 1);

    // The next incremental works, and the repository restores exactly.
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 50 = 0");
    let o = src.backup_ok(&repo, &[]);
    assert!(o.contains("(incr of "), "{o}");
    verify_ok(&repo);
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    let mut dst = restore(&s, &repo, "dst", &[]);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
}

#[test]
fn kill_9_of_archive_push_mid_write() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let seg = src.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    src.switch_wal_and_wait(&repo);
    let work = s.pg_dir("work");
    let real = work.join("real");
    check(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "archive-get",
            &seg,
            real.to_str().unwrap(),
        ]),
        "archive-get",
    );
    let real = std::fs::read(&real).unwrap();

    // Big segments of this cluster on a timeline the server never uses,
    // made slow to compress (random after the page header) so that a kill
    // lands while the push is working.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut make = |n: u32| {
        let name = format!("00000020000000000000{n:04X}");
        let mut d = real.clone();
        d[4..8].copy_from_slice(&0x20u32.to_le_bytes());
        // The first page says where it starts: segment n (16 MiB each).
        d[8..16].copy_from_slice(&(u64::from(n) << 24).to_le_bytes());
        for b in d[8192..].iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let p = work.join(&name);
        std::fs::write(&p, &d).unwrap();
        (name, p, d)
    };
    let tmp = repo.path.join("tmp");
    let mut killed_writing = 0;
    // One kill during compression, then kills as the object is written,
    // until one lands in that window (a few tries on a loaded machine).
    for i in 0..10u32 {
        if i >= 3 && killed_writing > 0 {
            break;
        }
        let delay_ms = if i == 0 { 150u64 } else { 0 };
        let (name, path, data) = make(i + 1);
        let mut child = spawn(&[
            "--repo",
            repo.arg(),
            "archive-push",
            "--compress-level",
            "19",
            path.to_str().unwrap(),
        ]);
        if delay_ms > 0 {
            // During compression, before anything is written.
            std::thread::sleep(Duration::from_millis(delay_ms));
            child.kill().unwrap();
        } else {
            // As soon as the object's temporary file appears (an earlier
            // killed push may have left one: count new ones only).
            let before = files_and_bytes(&tmp).0;
            let start = Instant::now();
            while files_and_bytes(&tmp).0 <= before && start.elapsed() < Duration::from_secs(120) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            let _ = child.kill();
        }
        let st = child.wait().unwrap();
        if delay_ms > 0 {
            assert_eq!(st.signal(), Some(9), "the push ended before the kill: {st}");
        }
        if st.signal() == Some(9) && delay_ms == 0 {
            killed_writing += 1;
        }
        verify_ok(&repo);
        // A re-push (what PostgreSQL does after a failed archive_command) works.
        check(
            &pgstrata(&["--repo", repo.arg(), "archive-push", path.to_str().unwrap()]),
            "re-push",
        );
        let back = work.join(format!("{name}.back"));
        check(
            &pgstrata(&[
                "--repo",
                repo.arg(),
                "archive-get",
                &name,
                back.to_str().unwrap(),
            ]),
            "archive-get after re-push",
        );
        assert!(std::fs::read(&back).unwrap() == data, "{name} differs");
    }
    assert!(killed_writing > 0, "no push was killed while writing");
    verify_ok(&repo);
}

#[test]
fn connection_dropped_mid_backup_is_not_committed() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 100_000);
    let config = s.path().join("c.toml");
    std::fs::write(&config, "workers = 1\n").unwrap();
    let mut child = spawn_backup(&repo, &src, &config, &["--type", "full"]);
    // Once the backup is under way, end its session from another one.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "backup ended too soon");
        assert!(Instant::now() < deadline, "the backup never started");
        let started = catalog(&repo)
            .query_row("SELECT count(*) FROM backup", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
            > 0;
        if started {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let n = src.query_one(
        "SELECT count(*)::text FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'pgstrata') x",
    );
    assert_eq!(n, "1");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(e.starts_with("pgstrata: error: PostgreSQL"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
    // Not committed, and the running row is gone.
    assert!(repo.backups().is_empty(), "{:?}", repo.backups());
    verify_ok(&repo);
    assert_no_backup_session(&src);
    src.backup_ok(&repo, &["--type", "full"]);
    verify_ok(&repo);
}

/// Stored bytes of the newest backup, from `info --output json`.
fn newest_stored(repo: &Repo) -> u64 {
    repo.backups().last().unwrap()["stored_bytes"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_killed_full_is_shown_aborted_and_the_next_one_resumes() {
    let s = Scratch::new();
    let (a, b) = (Repo::named(&s, "whole"), Repo::named(&s, "resumed"));
    // Archive into both repositories: `a` measures a whole full backup.
    let conf = format!(
        "archive_mode = on\narchive_command = '{} && {}'\n",
        archive_command(&a),
        archive_command(&b)
    );
    let src = Cluster::new(
        &s,
        "src",
        ClusterOpts {
            extra_conf: &conf,
            ..Default::default()
        },
    );
    load_sample(&src, 300_000);
    src.backup_ok(&a, &["--type", "full"]);
    let whole = newest_stored(&a);
    let config = s.path().join("small-packs.toml");
    std::fs::write(&config, "pack-size-mib = 1\nworkers = 2\n").unwrap();

    // Kill a full into `b` once 80% of what a full stores is sealed in packs.
    let packs = b.path.join("packs");
    let mut child = spawn_backup(&b, &src, &config, &["--type", "full"]);
    let mut seen = Vec::new();
    kill_when(&mut child, "80% of the data stored", || {
        let n = files_and_bytes(&packs).1;
        if seen.last() != Some(&n) {
            seen.push(n);
        }
        n >= whole * 8 / 10
    });
    assert_no_backup_session(&src);
    let killed = b.backups();
    assert_eq!(killed.len(), 1);
    assert_eq!(
        killed[0]["status"], "aborted",
        "{killed:?}; whole {whole}, pack bytes seen {seen:?}"
    );
    let text = pgstrata_ok(&["--repo", b.arg(), "info"]);
    assert!(text.contains("aborted"), "{text}");

    // The rerun reuses what the killed one stored.
    src.backup_ok(&b, &["--type", "full"]);
    let again = newest_stored(&b);
    assert!(
        again * 4 <= whole,
        "the rerun stored {again} bytes again, more than 25% of a full ({whole})"
    );
    // expire removes the aborted backup; the repository verifies and restores.
    let plan = pgstrata_ok(&[
        "--repo",
        b.arg(),
        "expire",
        "--retain-full",
        "1",
        "--dry-run",
    ]);
    assert!(plan.contains("remove unfinished backup"), "{plan}");
    pgstrata_ok(&["--repo", b.arg(), "expire", "--retain-full", "1"]);
    let left = b.backups();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["status"], "complete");
    verify_ok(&b);
    src.switch_wal_and_wait(&b);
    let want = src.table_hashes();
    let mut dst = restore(&s, &b, "dst", &[]);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
}

/// A repository that fails at every step of a backup's writes (the lock,
/// each pack, the catalog): each time the backup reports the failure, does
/// not wait for WAL that will never come (archiving is off), and leaves the
/// server out of backup mode. With every write allowed, the same backup
/// waits for its WAL and times out: the wait is real.
#[test]
fn a_failed_write_is_reported_at_once_even_while_waiting_for_wal() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::new(
        &s,
        "src",
        ClusterOpts {
            extra_conf: "archive_mode = on\narchive_command = 'false'\n",
            ..Default::default()
        },
    );
    load_sample(&src, 20_000);
    // Long enough that a failure reported without waiting for WAL stands
    // apart from the wait even on a loaded machine.
    let timeout = Duration::from_secs(20);
    let mut opts = pgstrata::BackupOptions::new(&src.pgdata);
    opts.dbname = Some(src.conninfo());
    opts.start_fast = true;
    opts.archive_timeout = timeout;
    opts.pack_size = 1 << 20;
    let mut budget = 0;
    loop {
        let mut r = repo.open();
        let inner = r.backend_arc();
        r.set_backend(std::sync::Arc::new(pgstrata::testing::FaultBackend::new(
            inner, budget,
        )));
        let t = Instant::now();
        let e = pgstrata::backup(&r, "main", &opts, &pgstrata::Silent)
            .expect_err("a backup without archived WAL succeeded");
        let took = t.elapsed();
        assert_no_backup_session(&src);
        let msg = e.to_string();
        if msg.contains("was not archived") {
            assert!(took >= timeout, "budget {budget}: timed out after {took:?}");
            assert!(
                budget > 1,
                "fewer than two packs: no pack sealed during the WAL wait"
            );
            break;
        }
        assert!(msg.contains("injected fault"), "budget {budget}: {msg}");
        assert!(
            took < timeout / 2,
            "budget {budget}: the failed write was reported after {took:?}"
        );
        budget += 1;
        assert!(budget < 200, "the backup never reached its WAL wait");
    }
}
