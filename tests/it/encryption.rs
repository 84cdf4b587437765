//! Encrypted repositories on real clusters: exact restores and PITR, no
//! plaintext anywhere in the repository, passphrase mistakes refused before
//! any work, damage caught.

use std::path::Path;

use crate::harness::*;

const MARKER: &str = "pgstrata-plaintext-canary-7c1e";

/// Every file below `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let b = std::fs::read(e.path()).unwrap();
            if b.windows(needle.len()).any(|w| w == needle) {
                hits.push(e.path().display().to_string());
            }
        }
    }
    hits
}

#[test]
fn an_encrypted_repository_restores_exactly_with_pitr_and_hides_every_byte() {
    let s = Scratch::new();
    let repo = Repo::encrypted(&s, "repo");
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 20_000);
    // The canary goes into a table (data files) before the full, and into
    // WAL only (after the full) for the incr and the archive.
    src.exec(&format!(
        "CREATE TABLE canary (id int, note text);
         INSERT INTO canary SELECT g, '{MARKER}' FROM generate_series(1, 50) g;"
    ));
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec(&format!(
        "INSERT INTO canary SELECT g, '{MARKER} after' FROM generate_series(51, 80) g;
         UPDATE accounts SET balance = balance + 1 WHERE id % 7 = 0;"
    ));
    src.backup_ok(&repo, &["--type", "incr"]);
    src.exec("INSERT INTO canary VALUES (81, 'before the point')");
    src.exec("SELECT pg_create_restore_point('before_the_drop')");
    let want = src.table_hashes();
    src.exec("DROP TABLE canary; UPDATE accounts SET owner = 'x' WHERE id < 100;");
    src.switch_wal_and_wait(&repo);
    let now = src.table_hashes();

    // The source holds the canary in plain text (so this test can fail)...
    assert!(!files_containing(&src.pgdata.join("pg_wal"), MARKER.as_bytes()).is_empty());
    // ...the repository nowhere: packs, block maps, manifests, WAL, catalog.
    let leaks = files_containing(&repo.path, MARKER.as_bytes());
    assert!(leaks.is_empty(), "plaintext in {leaks:?}");

    let promote = ["--target-action", "promote"];
    restore_matches(
        &s,
        &repo,
        "pitr",
        &[&["--target-name", "before_the_drop"][..], &promote].concat(),
        &want,
    );
    let latest = restore_matches(&s, &repo, "latest", &[], &now);
    latest.amcheck();

    let mut args = vec!["--repo", repo.arg()];
    args.extend(repo.unlock());
    args.push("verify");
    pgstrata_ok(&args);
    assert_eq!(repo.info_json()["repo"]["encrypted"], true);
}

#[test]
fn passphrase_mistakes_are_refused_before_any_work_and_damage_is_caught() {
    let s = Scratch::new();
    let repo = Repo::encrypted(&s, "repo");
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 5000) g");
    src.backup_ok(&repo, &["--type", "full"]);
    let ci = src.conninfo();
    let pgdata = src.pgdata.to_str().unwrap().to_string();
    let backup_with = |unlock: &[&str]| {
        let mut a = vec!["--repo", repo.arg()];
        a.extend_from_slice(unlock);
        a.extend([
            "backup",
            "--start-fast",
            "--pgdata",
            &pgdata,
            "--dbname",
            &ci,
        ]);
        pgstrata(&a)
    };

    // Wrong, missing, and readable-by-others passphrases.
    let wrong = s.path().join("wrong.pass");
    std::fs::write(&wrong, "not the passphrase").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    fails_one_line(
        &backup_with(&["--passphrase-file", wrong.to_str().unwrap()]),
        1,
        "wrong passphrase",
    );
    fails_one_line(&backup_with(&[]), 1, "is encrypted");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fails_one_line(
        &backup_with(&["--passphrase-file", wrong.to_str().unwrap()]),
        1,
        "chmod 600",
    );
    fails_one_line(
        &backup_with(&["--passphrase-command", "echo nope"]),
        1,
        "wrong passphrase",
    );
    assert_eq!(repo.backups().len(), 1, "a refused backup left something");
    let other = s.pg_dir("other");
    fails_one_line(
        &pgstrata(&["--repo", other.to_str().unwrap(), "init", "--encrypt"]),
        2,
        "--encrypt needs a passphrase",
    );

    // A new passphrase: the old one stops working; nothing is rewritten.
    let before: Vec<_> = walkdir::WalkDir::new(repo.path.join("packs"))
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    let new = s.path().join("new.pass");
    std::fs::write(&new, "a much better passphrase").unwrap();
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut a = vec!["--repo", repo.arg()];
    a.extend(repo.unlock());
    a.extend([
        "change-passphrase",
        "--new-passphrase-file",
        new.to_str().unwrap(),
    ]);
    pgstrata_ok(&a);
    fails_one_line(&backup_with(&repo.unlock()), 1, "wrong passphrase");
    // The operator then puts the new passphrase where archive_command
    // reads it.
    std::fs::copy(&new, repo.pass.as_ref().unwrap()).unwrap();
    let o = backup_with(&repo.unlock());
    check(&o, "backup with the new passphrase");
    assert!(before.iter().all(|p| p.exists()));

    // A byte flipped in a pack: verify names the pack and fails.
    let pack = walkdir::WalkDir::new(repo.path.join("packs"))
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_type().is_file())
        .unwrap()
        .into_path();
    let mut b = std::fs::read(&pack).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    std::fs::write(&pack, &b).unwrap();
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "--passphrase-file",
        new.to_str().unwrap(),
        "verify",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(out.contains(name), "verify does not name {name}: {out}");
}
