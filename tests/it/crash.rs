//! Kill -9 of a real `pgstrata` process at moments spread over its run,
//! then the same command again: it finishes the job, the repository
//! verifies, and every kept backup restores exactly. (The fault backend's
//! crash matrix, at every storage operation, is in `expire.rs`.)

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::expect::check;
use crate::expire::expirable_backups;
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

/// A copy of repository `repo` to kill a command in: a directory copy, or
/// every object under a new prefix.
fn copy_of(repo: &Repo, s: &Scratch, n: usize) -> String {
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
            copy.to_str().unwrap().to_string()
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
            copy
        }
    }
}

#[test]
fn kill_9_of_expire_then_the_same_expire_again() {
    kill_9_of_expire_then_the_same_expire_again_in(Kind::Local);
}

#[test]
fn kill_9_of_expire_then_the_same_expire_again_on_s3() {
    kill_9_of_expire_then_the_same_expire_again_in(Kind::S3);
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
    let mut killed = 0;
    for (n, ms) in [30u64, 60, 100, 150, 250, 400, 700].into_iter().enumerate() {
        let copy = copy_of(&repo, &s, n);
        let expire = [
            "--repo",
            &copy,
            "expire",
            "--retain-full",
            "1",
            "--gc-threshold",
            "99",
        ];
        killed += usize::from(run_and_kill(&expire, Duration::from_millis(ms)));
        let when = format!("killed after {ms} ms");
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
