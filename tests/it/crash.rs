//! Kill -9 of a real `pgstrata` process at moments spread over its run,
//! then the same command again: it finishes the job, the repository
//! verifies, and every kept backup restores exactly. (The fault backend's
//! crash matrix, at every storage operation, is in `expire.rs`.)

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::expire::expirable_backups;
use crate::harness::check;
use crate::harness::*;

/// Hash every file of backup `id` restored into `dest` (then removed).
fn restored(repo: &str, id: &str, dest: &Path) -> BTreeMap<String, String> {
    check(
        &pgstrata(&[
            "--repo",
            repo,
            "restore",
            "--set",
            id,
            "--pgdata",
            dest.to_str().unwrap(),
        ]),
        "restore",
    );
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dest)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
    {
        let rel = e.path().strip_prefix(dest).unwrap().display().to_string();
        if rel == "postgresql.auto.conf" {
            continue; // names the repository, which differs between copies
        }
        let bytes = std::fs::read(e.path()).unwrap();
        out.insert(rel, pgstrata::ChunkId::of(&bytes).to_hex());
    }
    std::fs::remove_dir_all(dest).unwrap();
    out
}

/// Run `args` and kill -9 it after `delay`; whether it was killed (it may
/// have finished first).
fn run_and_kill(args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("PGSTRATA_REPO")
        .env_remove("PGSTRATA_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pgstrata");
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let st = child.wait().unwrap();
    st.signal() == Some(9)
}

/// Run `args` to the end (it must succeed); how long it took.
fn timed(args: &[&str], what: &str) -> Duration {
    let t = Instant::now();
    check(&pgstrata(args), what);
    t.elapsed()
}

/// Moments to kill a command at, as shares of a run's length: a loaded
/// machine is slower, not different, so fixed delays would not do.
const SHARES: [f64; 6] = [0.05, 0.15, 0.3, 0.5, 0.7, 0.85];

/// A copy of repository `repo` to kill a command in: a directory copy, or
/// every object under a new prefix.
fn copy_of(repo: &Repo, s: &Scratch, n: usize) -> String {
    copy_repo(repo, s, n).arg().to_string()
}

fn copy_repo(repo: &Repo, s: &Scratch, n: usize) -> Repo {
    match &repo.url {
        None => {
            let copy = s.path().join(format!("copy-{n}"));
            let st = Command::new("cp")
                .arg("-a")
                .arg(&repo.path)
                .arg(&copy)
                .status()
                .unwrap();
            assert!(st.success());
            Repo {
                path: copy,
                pass: None,
                url: None,
            }
        }
        Some(url) => {
            let copy = crate::objstore::new_url("copy");
            let (from, to) = (
                crate::objstore::backend(url),
                crate::objstore::backend(&copy),
            );
            for (key, _) in pgstrata::Backend::list(&from, "").unwrap() {
                let body = pgstrata::Backend::get(&from, &key).unwrap().unwrap();
                pgstrata::Backend::put(&to, &key, &body).unwrap();
            }
            Repo {
                path: s.path().join(format!("copy-{n}")),
                pass: None,
                url: Some(copy),
            }
        }
    }
}

/// Archive into `copy` as well as into `repo` (which stays complete, so
/// that the next copy of it misses no WAL), and wait until it does.
fn archive_into(c: &Cluster, repo: &Repo, copy: &Repo) {
    c.exec(&format!(
        "ALTER SYSTEM SET archive_command = '{} && {}'",
        archive_command(repo),
        archive_command(copy)
    ));
    c.exec("SELECT pg_reload_conf()");
    c.switch_wal_and_wait(copy);
}

on_local_and_s3! {
    a_crash_at_any_step_of_backup_in =>
        a_crash_at_any_step_of_backup_then_the_same_backup_again,
        a_crash_at_any_step_of_backup_then_the_same_backup_again_on_s3;
}

/// A full backup dying at each storage operation in turn (before it, and
/// right after it took effect), then the same backup again: the backup
/// kept from before still restores exactly, the repository verifies, and
/// the new backup restores the source's data.
fn a_crash_at_any_step_of_backup_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let mut src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 20_000);
    src.backup_ok(&repo, &["--type", "full"]);
    let first = repo.backups()[0]["id"].as_str().unwrap().to_string();
    let work = s.pg_dir("work");
    let golden = restored(repo.arg(), &first, &work.join("golden"));
    src.exec("UPDATE accounts SET balance = 7 WHERE id % 5 = 0; CHECKPOINT;");
    let mut opts = pgstrata::BackupOptions::new(&src.pgdata);
    opts.dbname = Some(src.conninfo());
    opts.start_fast = true;
    opts.pack_size = 1 << 20; // several packs: seal points inside the backup
    opts.backup_type = Some(pgstrata::BackupType::Full);
    let mut n = 0;
    let mut last = None;
    for after in [false, true] {
        let mut crashed_at = 0;
        for budget in 0.. {
            n += 1;
            let when = format!("budget {budget} (after: {after})");
            let copy = copy_repo(&repo, &s, n);
            archive_into(&src, &repo, &copy);
            let mut r = copy.open();
            let inner = r.backend_arc();
            r.set_backend(std::sync::Arc::new(match after {
                true => pgstrata::testing::FaultBackend::dying_after(inner, budget),
                false => pgstrata::testing::FaultBackend::new(inner, budget),
            }));
            if pgstrata::backup(&r, "main", &opts, &pgstrata::Silent).is_ok() {
                break;
            }
            drop(r);
            crashed_at += 1;
            crate::bad_input::assert_no_backup_session(&src);
            check(
                &pgstrata(&["--repo", copy.arg(), "verify"]),
                &format!("{when}: verify after the crash"),
            );
            // The same backup again.
            pgstrata::backup(&copy.open(), "main", &opts, &pgstrata::Silent)
                .unwrap_or_else(|e| panic!("{when}: the same backup again: {e}"));
            check(
                &pgstrata(&["--repo", copy.arg(), "verify"]),
                &format!("{when}: verify after the rerun"),
            );
            assert_eq!(
                restored(copy.arg(), &first, &work.join("check")),
                golden,
                "{when}: the backup kept from before"
            );
            last = Some(copy);
        }
        assert!(
            crashed_at >= 3,
            "only {crashed_at} crash points were exercised"
        );
    }
    // The last rerun's backup holds the source's data.
    let copy = last.unwrap();
    archive_into(&src, &repo, &copy);
    let want = src.table_hashes();
    src.stop();
    let dst = restore_matches(&s, &copy, "dst", &[], &want);
    dst.amcheck();
}

on_local_and_s3! {
    kill_9_of_expire_then_the_same_expire_again_in =>
        kill_9_of_expire_then_the_same_expire_again,
        kill_9_of_expire_then_the_same_expire_again_on_s3;
}

fn kill_9_of_expire_then_the_same_expire_again_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let kept = expirable_backups(&repo, &src);
    let work = s.pg_dir("work");
    let golden: Vec<_> = kept
        .iter()
        .map(|id| restored(repo.arg(), id, &work.join("golden")))
        .collect();
    let expire_in = |copy: &str| -> Vec<String> {
        [
            "--repo",
            copy,
            "expire",
            "--retain-full",
            "1",
            "--gc-threshold",
            "99",
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = copy_of(&repo, &s, 99);
    let run = timed(
        &expire_in(&whole)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "an expire run to the end",
    );
    let mut killed = 0;
    for (n, share) in SHARES.into_iter().enumerate() {
        let copy = copy_of(&repo, &s, n);
        let args = expire_in(&copy);
        let expire: Vec<&str> = args.iter().map(String::as_str).collect();
        killed += usize::from(run_and_kill(&expire, run.mul_f64(share)));
        let when = format!("killed at {:.0}% of {run:?}", share * 100.0);
        check(
            &pgstrata(&expire),
            &format!("{when}: the same expire again"),
        );
        check(
            &pgstrata(&["--repo", &copy, "verify"]),
            &format!("{when}: verify"),
        );
        for (id, want) in kept.iter().zip(&golden) {
            assert_eq!(
                &restored(&copy, id, &work.join("check")),
                want,
                "{when}: backup {id}"
            );
        }
        if repo.url.is_none() {
            std::fs::remove_dir_all(&copy).unwrap();
        }
    }
    assert!(
        killed >= 2,
        "only {killed} runs were killed before they ended"
    );
}

on_local_and_s3! {
    kill_9_of_backup_then_the_same_backup_again_in =>
        kill_9_of_backup_then_the_same_backup_again,
        kill_9_of_backup_then_the_same_backup_again_on_s3;
}

/// Backups killed at moments spread over their run, each followed by the
/// same backup again, then an expire; the repository verifies and the last
/// backup restores the source's data.
fn kill_9_of_backup_then_the_same_backup_again_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 60_000);
    let config = s.path().join("small-packs.toml");
    std::fs::write(&config, "pack-size-mib = 1\nworkers = 2\n").unwrap();
    let args = src.backup_args(
        &repo,
        &["--config", config.to_str().unwrap(), "--type", "full"],
    );
    let backup: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = timed(&backup, "a full run to the end");
    let mut killed = 0;
    for (round, share) in [0.15, 0.4, 0.7].into_iter().enumerate() {
        src.exec(&format!(
            "UPDATE accounts SET balance = balance + {round} WHERE id % 7 = {round};"
        ));
        killed += usize::from(run_and_kill(&backup, run.mul_f64(share)));
        crate::bad_input::assert_no_backup_session(&src);
        check(
            &pgstrata(&backup),
            &format!(
                "killed at {:.0}% of {run:?}: the same full again",
                share * 100.0
            ),
        );
    }
    assert!(
        killed >= 2,
        "only {killed} backups were killed before they ended"
    );
    check(
        &pgstrata(&["--repo", repo.arg(), "expire", "--retain-full", "1"]),
        "expire after the kills",
    );
    check(&pgstrata(&["--repo", repo.arg(), "verify"]), "verify");
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    let dst = restore_matches(&s, &repo, "dst", &[], &want);
    dst.amcheck();
}

#[test]
fn kill_9_of_repair_then_the_same_repair_again() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 20_000);
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("UPDATE accounts SET balance = 0 WHERE id % 3 = 0;");
    src.backup_ok(&repo, &[]);
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    let repair = ["--repo", repo.arg(), "repair", "--rebuild-catalog"];
    let run = timed(&repair, "a repair run to the end");
    let mut killed = 0;
    for share in [0.2, 0.5, 0.8] {
        killed += usize::from(run_and_kill(&repair, run.mul_f64(share)));
        check(
            &pgstrata(&repair),
            &format!("killed at {:.0}% of {run:?}: repair again", share * 100.0),
        );
        check(&pgstrata(&["--repo", repo.arg(), "verify"]), "verify");
    }
    assert!(killed >= 1, "no repair was killed before it ended");
    let n = repo.backups().len();
    assert_eq!(n, 2, "the rebuilt catalog lists {n} backups");
    restore_matches(&s, &repo, "dst", &[], &want);
}

#[test]
fn a_crash_at_any_step_of_archive_push_then_the_same_push_again() {
    let s = Scratch::new();
    let src = Cluster::new(&s, "src", ClusterOpts::default());
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g;");
    let name = src.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    src.query_one("SELECT pg_switch_wal()::text");
    let work = s.pg_dir("work");
    let seg = work.join(&name);
    std::fs::copy(src.pgdata.join("pg_wal").join(&name), &seg).unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let mut n = 0;
    for kind in [Kind::Local, Kind::S3] {
        for after in [false, true] {
            let mut crashed_at = 0;
            for budget in 0.. {
                n += 1;
                let when = format!("{kind:?}, budget {budget} (after: {after})");
                let repo = match kind {
                    Kind::Local => Repo::named(&s, &format!("repo-{n}")),
                    Kind::S3 => Repo::s3(&s, &format!("repo-{n}")),
                };
                let mut r = repo.open();
                let inner = r.backend_arc();
                r.set_backend(std::sync::Arc::new(match after {
                    true => pgstrata::testing::FaultBackend::dying_after(inner, budget),
                    false => pgstrata::testing::FaultBackend::new(inner, budget),
                }));
                if pgstrata::archive_push(&r, "main", &seg, 3).is_ok() {
                    break;
                }
                drop(r);
                crashed_at += 1;
                // PostgreSQL runs archive_command again.
                check(
                    &pgstrata(&["--repo", repo.arg(), "archive-push", seg.to_str().unwrap()]),
                    &format!("{when}: the same push again"),
                );
                let back = work.join("back");
                check(
                    &pgstrata(&[
                        "--repo",
                        repo.arg(),
                        "archive-get",
                        &name,
                        back.to_str().unwrap(),
                    ]),
                    &format!("{when}: archive-get"),
                );
                assert_eq!(std::fs::read(&back).unwrap(), bytes, "{when}");
                std::fs::remove_file(&back).unwrap();
                check(
                    &pgstrata(&["--repo", repo.arg(), "verify"]),
                    &format!("{when}: verify"),
                );
            }
            assert!(crashed_at >= 1, "{kind:?}: no crash point was exercised");
        }
    }
}
