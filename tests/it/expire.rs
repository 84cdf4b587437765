//! Retention, WAL expiry, garbage collection, crash safety and locking.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

fn ids(repo: &Repo) -> Vec<String> {
    repo.backups()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

on_local_and_s3! {
    a_simulated_week_keeps_two_fulls_in =>
        a_simulated_week_keeps_two_fulls,
        a_simulated_week_keeps_two_fulls_on_s3;
}

fn a_simulated_week_keeps_two_fulls_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 20_000);
    let mut states: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for night in 0..3 {
        // Each night rewrites a big table, so old chunks become garbage.
        src.exec(&format!(
            "TRUNCATE events; INSERT INTO events SELECT now(), 'n{night}', decode(md5(g::text || '{night}'), 'hex')
               FROM generate_series(1, 30000) g;"
        ));
        src.backup_ok(&repo, &["--type", "full"]);
        states.push((ids(&repo).last().unwrap().clone(), src.table_hashes()));
        for hour in 0..2 {
            src.exec(&format!(
                "UPDATE accounts SET balance = balance + {hour} WHERE id % 50 = {night};"
            ));
            src.backup_ok(&repo, &["--type", "incr"]);
            states.push((ids(&repo).last().unwrap().clone(), src.table_hashes()));
        }
    }
    assert_eq!(ids(&repo).len(), 9);
    let before = repo.stored_bytes();
    let out = pgstrata_ok(&["--repo", repo.arg(), "expire", "--retain-full", "2"]);
    assert!(out.contains("expired 3 backups"), "{out}");
    let kept = ids(&repo);
    let want: Vec<String> = states[3..].iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(kept, want, "the oldest full and its incrs should be gone");
    let after = repo.stored_bytes();
    assert!(
        after < before,
        "repository did not shrink: {before} -> {after}"
    );

    // WAL now starts at the oldest kept backup's start.
    let info = repo.info_json();
    let wal_min = info["clusters"][0]["wal"]["min"]
        .as_str()
        .unwrap()
        .to_string();
    let oldest_start = repo.backups()[0]["wal_start"].as_str().unwrap().to_string();
    assert_eq!(wal_min, oldest_start);
    let last = &info["repo"]["last_expire"];
    assert_eq!(last["backups"].as_u64(), Some(3));
    assert!(last["bytes_freed"].as_u64().unwrap() > 0);
    assert!(pgstrata_ok(&["--repo", repo.arg(), "info"]).contains("last expire"));

    // Every kept backup restores exactly.
    for (i, (id, want)) in states[3..].iter().enumerate() {
        let args = [
            "--set",
            id,
            "--target",
            "immediate",
            "--target-action",
            "promote",
        ];
        restore_matches(&s, &repo, &format!("r{i}"), &args, want).stop();
    }
}

#[test]
fn retain_days_keeps_exactly_the_window_and_dry_run_changes_nothing() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;");
    for t in ["full", "incr", "incr", "full"] {
        src.exec("INSERT INTO t SELECT g FROM generate_series(1, 100) g;");
        src.backup_ok(&repo, &["--type", t]);
    }
    let all = ids(&repo);
    // Move the backups into the past: 10, 8, 5 and 1 day(s) ago.
    let db = rusqlite::Connection::open(repo.path.join("catalog.db")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    for (id, days) in all.iter().zip([10i64, 8, 5, 1]) {
        let start = now - days * 86_400_000_000;
        db.execute(
            "UPDATE backup SET start_time = ?2, stop_time = ?3 WHERE id = ?1",
            rusqlite::params![id, start, start + 10_000_000],
        )
        .unwrap();
    }
    drop(db);

    // Dry run: prints the plan, changes nothing.
    let listing = |p: &Path| -> Vec<(String, u64)> {
        let mut v: Vec<_> = walkdir::WalkDir::new(p)
            .into_iter()
            .flatten()
            .filter(|e| {
                e.file_type().is_file() && !e.path().to_string_lossy().contains("catalog.db")
            })
            .map(|e| (e.path().display().to_string(), e.metadata().unwrap().len()))
            .collect();
        v.sort();
        v
    };
    let before = listing(&repo.path);
    let out = pgstrata_ok(&[
        "--repo",
        repo.arg(),
        "expire",
        "--retain-days",
        "6",
        "--dry-run",
    ]);
    assert!(out.contains(&format!("expire backup {}", all[0])), "{out}");
    assert!(!out.contains(&format!("expire backup {}", all[1])), "{out}");
    assert_eq!(
        listing(&repo.path),
        before,
        "dry run changed the repository"
    );
    assert_eq!(ids(&repo), all);

    // 6 days: the backup 8 days old is the one that reaches the window start.
    pgstrata_ok(&["--repo", repo.arg(), "expire", "--retain-days", "6"]);
    assert_eq!(ids(&repo), all[1..].to_vec());
    // 4 days: now the 5-day-old backup anchors the window.
    pgstrata_ok(&["--repo", repo.arg(), "expire", "--retain-days", "4"]);
    assert_eq!(ids(&repo), all[2..].to_vec());
    // 0.5 days: only the newest backup (1 day old) is needed.
    pgstrata_ok(&["--repo", repo.arg(), "expire", "--retain-days", "0.5"]);
    assert_eq!(ids(&repo), all[3..].to_vec());
    // Bad options.
    let o = pgstrata(&["--repo", repo.arg(), "expire", "--retain-full", "0"]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("at least 1"));
    let o = pgstrata(&["--repo", repo.arg(), "expire", "--set", &all[3]]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("newest"));
}

#[test]
fn backup_and_expire_exclude_each_other_but_archiving_goes_on() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    // Slow archiving keeps the backup waiting for its WAL, holding the lock
    // for seconds: what runs meanwhile and ends while it still holds it was
    // not blocked by it.
    let conf = format!(
        "archive_mode = on\narchive_command = 'sleep 6 && {}'\n",
        archive_command(&repo)
    );
    let src = Cluster::new(
        &s,
        "src",
        ClusterOpts {
            extra_conf: &conf,
            ..Default::default()
        },
    );
    let ci = src.conninfo();
    let spawn = || {
        std::process::Command::new(BIN)
            .args([
                "--repo",
                repo.arg(),
                "backup",
                "--pgdata",
                src.pgdata.to_str().unwrap(),
                "--dbname",
                &ci,
                "--start-fast",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let lockfile = repo.path.join("locks/repository.lock");
    let wait_locked = || {
        for _ in 0..200 {
            if std::fs::read_to_string(&lockfile).is_ok_and(|t| t.contains("command backup")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("backup never took the lock");
    };
    let mut child = spawn();
    wait_locked();
    // The backup binds the cluster just after taking the lock; the history
    // file pushed below needs that binding, so wait for it (under load the
    // refusals below can finish first).
    for _ in 0..200 {
        if repo
            .open()
            .catalog()
            .unwrap()
            .clusters()
            .get("main")
            .unwrap()
            .is_some()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // expire and a second backup fail at once, naming the holder.
    let o = pgstrata(&["--repo", repo.arg(), "expire", "--retain-full", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("locked by another pgstrata") && err.contains(&format!("pid {}", child.id())),
        "{err}"
    );
    assert!(
        err.contains("command backup") && err.contains("since"),
        "{err}"
    );
    let o = src.backup(&repo, &[]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // archive-push is never blocked by the lock.
    let hist = s.pg_dir("w").join("00000005.history");
    std::fs::write(&hist, b"4\t0/5000000\tx\n").unwrap();
    check(
        &pgstrata(&["--repo", repo.arg(), "archive-push", hist.to_str().unwrap()]),
        "archive-push under lock",
    );
    assert!(
        child.try_wait().unwrap().is_none()
            && std::fs::read_to_string(&lockfile).is_ok_and(|t| t.contains("command backup")),
        "the backup let the lock go before the refusals and the push ended"
    );

    // expire --lock-wait waits for the backup, then runs.
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "expire",
        "--retain-full",
        "1",
        "--lock-wait",
        "120",
    ]);
    check(&o, "expire --lock-wait");
    let st = child.wait().unwrap();
    assert!(st.success());
    assert_eq!(ids(&repo).len(), 1);

    // A holder killed with -9 leaves no lock behind; its row is cleaned up.
    let mut child = spawn();
    wait_locked();
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let out = pgstrata_ok(&["--repo", repo.arg(), "expire", "--retain-full", "1"]);
    assert!(out.contains("expired 0 backups"), "{out}");
    let info = repo.info_json();
    for b in info["clusters"][0]["backups"].as_array().unwrap() {
        assert_eq!(
            b["status"], "complete",
            "a killed backup's row is left: {b}"
        );
    }
}

/// Restore a backup through the library and hash every file (no server).
fn restored_tree(repo_path: &Path, id: &str, dest: &Path) -> BTreeMap<String, Node> {
    restored_tree_of(&pgstrata::Repository::open(repo_path).unwrap(), id, dest)
}

/// The binary's command line for a local repository, as the library's
/// restores need it (these tests never start the restored server).
#[derive(Debug)]
struct Bin(PathBuf);

impl pgstrata::Invocation for Bin {
    fn archive_command(&self, cluster: &str, _: Option<&pgstrata::PassphraseSource>) -> String {
        format!(
            "{BIN} --repo {} --cluster {cluster} archive-push %p",
            self.0.display()
        )
    }
    fn restore_command(
        &self,
        cluster: &str,
        _: u32,
        _: Option<&pgstrata::PassphraseSource>,
    ) -> String {
        format!(
            "{BIN} --repo {} --cluster {cluster} archive-get %f \"%p\"",
            self.0.display()
        )
    }
    fn prefetcher(&self, _: &str, _: u32, _: &Path, _: usize, _: u64) -> Vec<std::ffi::OsString> {
        Vec::new()
    }
}

fn restored_tree_of(repo: &pgstrata::Repository, id: &str, dest: &Path) -> BTreeMap<String, Node> {
    let mut o = pgstrata::RestoreOptions::new(dest);
    o.set = Some(id.to_string());
    o.invocation = Some(Arc::new(Bin(repo.root().to_path_buf())));
    let plan =
        pgstrata::plan_restore(repo, "main", &o).unwrap_or_else(|e| panic!("plan {id}: {e}"));
    pgstrata::apply_restore(repo, &plan, 2, &pgstrata::Silent)
        .unwrap_or_else(|e| panic!("restore {id}: {e}"));
    let out = restored_files(dest);
    std::fs::remove_dir_all(dest).unwrap();
    out
}

/// Three backups, of which a `--retain-full 1` expires the first and
/// leaves packs to delete and to rewrite; returns the kept backups' ids.
pub(crate) fn expirable_backups(repo: &Repo, src: &Cluster) -> Vec<String> {
    load_sample(src, 20_000);
    src.backup_ok(repo, &["--type", "full"]);
    src.exec("TRUNCATE events; INSERT INTO events SELECT now(), 'x', decode(md5(g::text), 'hex') FROM generate_series(1, 20000) g;");
    src.backup_ok(repo, &["--type", "full"]);
    src.exec("UPDATE accounts SET balance = -1 WHERE id < 300;");
    src.backup_ok(repo, &["--type", "incr"]);
    ids(repo)[1..].to_vec()
}

/// An expire with `--retain-full 1` that rewrites every partly dead pack.
fn crash_test_expire() -> pgstrata::ExpireOptions {
    let retention = pgstrata::Retention {
        full: Some(1),
        ..Default::default()
    };
    let mut opts = pgstrata::ExpireOptions::new(retention);
    opts.gc_threshold = 0.99; // rewrite every pack that is partly dead, too
    opts
}

#[test]
fn a_crash_at_any_step_of_expire_loses_nothing_kept() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let kept = &expirable_backups(&repo, &src)[..];
    let work = s.pg_dir("work");
    let golden: Vec<_> = kept
        .iter()
        .map(|id| restored_tree(&repo.path, id, &work.join("golden")))
        .collect();
    let opts = crash_test_expire();
    // Dying before a storage operation, and right after one took effect
    // (a pack sealed but not yet indexed, say).
    for after in [false, true] {
        crash_at_each_step(&repo, &work, kept, &golden, &opts, after);
    }
}

fn crash_at_each_step(
    repo: &Repo,
    work: &Path,
    kept: &[String],
    golden: &[BTreeMap<String, Node>],
    opts: &pgstrata::ExpireOptions,
    after: bool,
) {
    let mut crashed_at = 0;
    for budget in 0.. {
        let budget_name = if after {
            format!("after {budget} operations")
        } else {
            format!("{budget} operations")
        };
        let copy = work.join(format!("repo-{after}-{budget}"));
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&repo.path)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        let mut r = pgstrata::Repository::open(&copy).unwrap();
        let inner = r.backend_arc();
        r.set_backend(Arc::new(match after {
            true => pgstrata::testing::FaultBackend::dying_after(inner, budget),
            false => pgstrata::testing::FaultBackend::new(inner, budget),
        }));
        let first = pgstrata::expire(&r, "main", opts, false);
        if let Ok((plan, _)) = first {
            assert!(
                plan.delete_packs.len() + plan.rewrite_packs.len() > 0,
                "nothing to collect: {plan:?}"
            );
            std::fs::remove_dir_all(&copy).unwrap();
            break;
        }
        crashed_at += 1;
        verify_ok(&copy, &format!("budget {budget_name}: after the crash"));
        // Right after the crash, every kept backup restores.
        for (id, want) in kept.iter().zip(golden) {
            assert_eq!(
                &restored_tree(&copy, id, &work.join("check")),
                want,
                "budget {budget_name}: {id} after the crash"
            );
        }
        // The next expire finishes the job, and leaves nothing to collect.
        let r = pgstrata::Repository::open(&copy).unwrap();
        pgstrata::expire(&r, "main", opts, false)
            .unwrap_or_else(|e| panic!("budget {budget_name}: rerun: {e}"));
        let (again, _) = pgstrata::expire(&r, "main", opts, true).unwrap();
        assert!(
            again.is_empty(),
            "budget {budget_name}: still to do after a clean run:\n{again:?}"
        );
        for (id, want) in kept.iter().zip(golden) {
            assert_eq!(
                &restored_tree(&copy, id, &work.join("check")),
                want,
                "budget {budget_name}: {id} after the rerun"
            );
        }
        verify_ok(&copy, &format!("budget {budget_name}: after the rerun"));
        let left: Vec<String> = ids_in(&copy);
        assert_eq!(left, kept.to_vec());
        std::fs::remove_dir_all(&copy).unwrap();
    }
    assert!(
        crashed_at >= 5,
        "only {crashed_at} crash points were exercised"
    );
}

/// In object storage: after a crash at each storage operation (before it,
/// and right after it took effect), a host with only the bucket sees a
/// catalog that claims nothing the bucket lost; the same expire run again
/// finishes the job; every kept backup restores exactly.
#[test]
fn a_crash_at_any_step_of_expire_on_s3_loses_nothing_kept() {
    let s = Scratch::new();
    let repo = Repo::s3(&s, "repo");
    let src = Cluster::archiving(&s, "src", &repo);
    let kept = expirable_backups(&repo, &src);
    let work = s.pg_dir("work");
    let url = repo.url.clone().unwrap();
    let host = std::sync::atomic::AtomicU32::new(0);
    // A host of its own each time: nothing but the bucket.
    let new_host = |url: &str| {
        let n = host.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cache = s.path().join(format!("host-{n}"));
        pgstrata::Repository::open_at(&crate::objstore::location(url, &cache), None).unwrap()
    };
    let golden: Vec<_> = kept
        .iter()
        .map(|id| restored_tree_of(&new_host(&url), id, &work.join("golden")))
        .collect();
    let opts = crash_test_expire();
    let from = crate::objstore::backend(&url);
    for after in [false, true] {
        let mut crashed_at = 0;
        for budget in 0.. {
            let when = format!("budget {budget} (after: {after})");
            let copy = crate::objstore::new_url("copy");
            let to = crate::objstore::backend(&copy);
            for (key, _) in pgstrata::Backend::list(&from, "").unwrap() {
                let body = pgstrata::Backend::get(&from, &key).unwrap().unwrap();
                pgstrata::Backend::put(&to, &key, &body).unwrap();
            }
            let cache = s.path().join(format!("crashed-{after}-{budget}"));
            let mut r =
                pgstrata::Repository::open_at(&crate::objstore::location(&copy, &cache), None)
                    .unwrap();
            let inner = r.backend_arc();
            r.set_backend(Arc::new(match after {
                true => pgstrata::testing::FaultBackend::dying_after(inner, budget),
                false => pgstrata::testing::FaultBackend::new(inner, budget),
            }));
            if pgstrata::expire(&r, "main", &opts, false).is_ok() {
                break;
            }
            drop(r);
            crashed_at += 1;
            verify_repo_ok(&new_host(&copy), &format!("{when}: after the crash"));
            // The same host runs it again.
            let r = pgstrata::Repository::open_at(&crate::objstore::location(&copy, &cache), None)
                .unwrap();
            pgstrata::expire(&r, "main", &opts, false)
                .unwrap_or_else(|e| panic!("{when}: rerun: {e}"));
            // Packs a run drops are deleted by the next one, once its
            // catalog is published.
            pgstrata::expire(&r, "main", &opts, false)
                .unwrap_or_else(|e| panic!("{when}: second rerun: {e}"));
            let (again, _) = pgstrata::expire(&r, "main", &opts, true).unwrap();
            assert!(
                again.is_empty(),
                "{when}: still to do after a clean run:\n{again:?}"
            );
            let other = new_host(&copy);
            verify_repo_ok(&other, &format!("{when}: after the rerun"));
            for (id, want) in kept.iter().zip(&golden) {
                assert_eq!(
                    &restored_tree_of(&other, id, &work.join("check")),
                    want,
                    "{when}: {id} after the rerun"
                );
            }
        }
        assert!(
            crashed_at >= 5,
            "only {crashed_at} crash points were exercised"
        );
    }
}

/// `verify` over the whole repository finds nothing wrong.
fn verify_ok(repo: &Path, when: &str) {
    verify_repo_ok(&pgstrata::Repository::open(repo).unwrap(), when);
}

fn verify_repo_ok(r: &pgstrata::Repository, when: &str) {
    let report = pgstrata::verify(r, &Default::default(), &pgstrata::Silent).unwrap();
    assert!(
        report.is_ok(),
        "{when}: verify found problems: {:?}",
        report.problems
    );
}

fn ids_in(repo: &Path) -> Vec<String> {
    let r = pgstrata::Repository::open(repo).unwrap();
    let info = pgstrata::info(&r, None).unwrap();
    info.clusters[0]
        .backups
        .iter()
        .map(|b| b.id.clone())
        .collect()
}

#[test]
fn retention_in_the_config_file_expires_after_each_backup() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let cfg = s.path().join("pgstrata.toml");
    std::fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\npgdata = \"{}\"\ndbname = \"{}\"\nstart-fast = true\nretain-full = 1\n",
            repo.arg(),
            src.pgdata.display(),
            src.conninfo()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    pgstrata_ok(&["--config", c, "backup", "--type", "full"]);
    src.exec("CREATE TABLE t AS SELECT 1 AS x");
    let out = pgstrata_ok(&["--config", c, "backup", "--type", "full"]);
    assert!(out.contains("expired 1 backups"), "{out}");
    assert_eq!(ids(&repo).len(), 1);

    // A config file with a typo is a usage error that names the key.
    std::fs::write(&cfg, "repo = \"/x\"\nretain-fulls = 2\n").unwrap();
    let o = pgstrata(&["--config", c, "info"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("retain-fulls"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

on_local_and_s3! {
    /// An expire that runs while verify is under way (cron jobs overlap) removes
    /// packs and rows verify was about to read: that is not damage. Verify sees
    /// what was removed under it and checks again.
    an_expire_in_the_middle_of_verify_in =>
        an_expire_in_the_middle_of_verify_is_not_reported_as_damage,
        an_expire_in_the_middle_of_verify_is_not_reported_as_damage_on_s3;
}

fn an_expire_in_the_middle_of_verify_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let _src = two_fulls_of_different_data(&s, &repo);
    let all = ids(&repo);
    // In object storage the expire runs as another host would (a cache of
    // its own): verify's catalog does not see its changes until it ends.
    let other = another_host(&s, &repo);
    let mut r = repo.open();
    let hook = Arc::new(pgstrata::testing::HookBackend::new(
        r.backend_arc(),
        "packs/",
        move || {
            // verify has read the catalog's packs and is about to list the store's.
            let plan = keep_the_newest_full(&other);
            assert!(
                plan.delete_packs.len() + plan.rewrite_packs.len() > 0,
                "the expire removes no pack: {plan:?}"
            );
        },
    ));
    r.set_backend(hook.clone());
    let report = pgstrata::verify(&r, &Default::default(), &pgstrata::Silent).unwrap();
    assert!(hook.fired(), "verify never listed the packs");
    assert!(
        report.is_ok(),
        "verify reported the expire as damage: {:?}",
        report.problems
    );
    let checked: Vec<&str> = report.backups.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(
        checked,
        [all[1].as_str()],
        "the verdicts are of what is left"
    );
    assert!(
        report.notes.iter().any(|n| n.contains("verified again")),
        "no note says verify ran again: {:?}",
        report.notes
    );
    let out = pgstrata_ok(&["--repo", repo.arg(), "verify"]);
    assert!(!out.contains("verified again"), "{out}");
}

on_local_and_s3! {
    /// A restore that an expire overtakes (the expire rewrites the packs the
    /// restored backup's chunks are in, and drops the old ones), and then
    /// another expire that would collect the old packs, still restores the
    /// backup whole: the restore is registered as a reader, and expire leaves
    /// packs a reader may still read. In object storage the expire runs as
    /// another host would (a cache of its own), so the restore goes on with the
    /// catalog it began with.
    an_expire_in_the_middle_of_a_restore_in =>
        an_expire_in_the_middle_of_a_restore_takes_nothing_it_reads,
        an_expire_in_the_middle_of_a_restore_takes_nothing_it_reads_on_s3;
}

fn an_expire_in_the_middle_of_a_restore_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let _src = two_fulls_of_different_data(&s, &repo);
    let latest = ids(&repo)[1].clone();
    let work = s.pg_dir("work");
    let plan = |r: &pgstrata::Repository, dest: &Path| {
        let mut o = pgstrata::RestoreOptions::new(dest);
        o.set = Some(latest.clone());
        o.invocation = Some(Arc::new(Bin(r.root().to_path_buf())));
        pgstrata::plan_restore(r, "main", &o).unwrap()
    };
    let apply = |r: &pgstrata::Repository, p: &pgstrata::RestorePlan| {
        pgstrata::apply_restore(r, p, 2, &pgstrata::Silent).map(|_| restored_files(&p.target))
    };
    let other = another_host(&s, &repo);
    let mut r = repo.open();
    let hook = Arc::new(pgstrata::testing::HookBackend::on_read(
        r.backend_arc(),
        "packs/",
        move || {
            // The restore has made its plan and reads its first chunk.
            let plan = keep_the_newest_full(&other);
            assert!(
                !plan.rewrite_packs.is_empty(),
                "the expire rewrites no pack: {plan:?}"
            );
            // The next one finds the replaced packs orphaned, and leaves them.
            let plan = keep_the_newest_full(&other);
            assert!(
                plan.orphans.iter().any(|k| k.starts_with("packs/")),
                "no pack left for the second expire: {plan:?}"
            );
        },
    ));
    // Planned first (the plan reads block maps too): the expires run in
    // the middle of the apply, on the catalog the plan read.
    let planned = plan(&r, &work.join("during"));
    r.set_backend(hook.clone());
    let during = apply(&r, &planned)
        .unwrap_or_else(|e| panic!("the restore an expire overtook failed: {e}"));
    assert!(hook.fired(), "the restore read no pack");
    // The packs left behind go with the next expire, once no reader is there.
    let packs = || repo.open().backend().list("packs/").unwrap().len();
    let left = packs();
    let out = pgstrata_ok(&["--repo", repo.arg(), "expire", "--retain-full", "1"]);
    assert_eq!(
        packs(),
        left,
        "packs deleted while the restore is registered: {out}"
    );
    drop((planned, r));
    let out = pgstrata_ok(&["--repo", repo.arg(), "expire", "--retain-full", "1"]);
    assert!(packs() < left, "nothing collected: {out}");
    let r = repo.open();
    let after = apply(&r, &plan(&r, &work.join("after"))).unwrap();
    assert_eq!(during, after, "the restore an expire overtook differs");
    let report = pgstrata::verify(&repo.open(), &Default::default(), &pgstrata::Silent).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

/// A cluster backed up twice in full, with most of a table rewritten in
/// between (so that expiring the first full drops and rewrites packs).
fn two_fulls_of_different_data(s: &Scratch, repo: &Repo) -> Cluster {
    let src = Cluster::archiving(s, "src", repo);
    load_sample(&src, 20_000);
    src.backup_ok(repo, &["--type", "full"]);
    src.exec("TRUNCATE events; INSERT INTO events SELECT now(), 'y', decode(md5(g::text), 'hex') FROM generate_series(1, 20000) g;");
    src.backup_ok(repo, &["--type", "full"]);
    src
}

/// The repository as another host opens it: in object storage, with a
/// catalog cache of its own, so its changes reach this host's commands
/// only once published.
fn another_host(s: &Scratch, repo: &Repo) -> pgstrata::Repository {
    match repo.url.as_deref() {
        None => repo.open(),
        Some(url) => pgstrata::Repository::open_at(
            &crate::objstore::location(url, &s.path().join("other-host-cache")),
            None,
        )
        .unwrap(),
    }
}

/// Expire all but the newest full, rewriting every pack that is partly dead.
fn keep_the_newest_full(r: &pgstrata::Repository) -> pgstrata::ExpirePlan {
    let mut opts = pgstrata::ExpireOptions::new(pgstrata::Retention {
        full: Some(1),
        ..Default::default()
    });
    opts.gc_threshold = 0.99;
    pgstrata::expire(r, "main", &opts, false).unwrap().0
}

/// Every file of a restore with its BLAKE3, but `postgresql.auto.conf`
/// (it names the repository's path, which differs between copies).
fn restored_files(dir: &Path) -> BTreeMap<String, Node> {
    let mut t = tree(dir);
    t.retain(|rel, n| n.is_file() && rel != "postgresql.auto.conf");
    t
}
