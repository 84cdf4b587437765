//! verify, repair --rebuild-catalog and check, against real clusters: what
//! each finds after real damage, and that backups the damage does not touch
//! still restore.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::harness::*;

mod faults;
mod hostile;
mod security;

pub fn verify(repo: &Repo, extra: &[&str]) -> Output {
    let mut args = vec!["--repo", repo.arg(), "verify"];
    args.extend_from_slice(extra);
    pgstrata(&args)
}

/// verify passes: exit 0, every backup ok, no problem line.
pub fn verify_ok(repo: &Repo) -> String {
    let o = verify(repo, &[]);
    check(&o, "pgstrata verify");
    let s = out(&o);
    assert!(!s.contains("problem:") && !s.contains("DAMAGED"), "{s}");
    s
}

/// verify fails with exit 1 and its one-line summary; returns the report.
fn verify_fails(repo: &Repo, extra: &[&str]) -> String {
    let o = verify(repo, extra);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", out(&o), err(&o));
    assert!(
        err(&o).starts_with("pgstrata: error: verify found"),
        "{}",
        err(&o)
    );
    out(&o)
}

pub fn catalog(repo: &Repo) -> rusqlite::Connection {
    rusqlite::Connection::open(repo.path.join("catalog.db")).unwrap()
}

fn pack_path(repo: &Repo, id: &str) -> PathBuf {
    repo.path
        .join("packs")
        .join(&id[..2])
        .join(format!("{id}.pack"))
}

/// The problem lines of a report that mention `needle`.
fn problems_with<'a>(report: &'a str, needle: &str) -> Vec<&'a str> {
    report
        .lines()
        .filter(|l| l.starts_with("problem:") && l.contains(needle))
        .collect()
}

fn restore_set(repo: &Repo, target: &Path, set: &str) -> Output {
    pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        target.to_str().unwrap(),
        "--set",
        set,
    ])
}

#[test]
fn verify_names_damage_and_spares_other_backups() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 5_000);
    src.backup_ok(&repo, &["--type", "full"]);
    let at_first = src.table_hashes();
    // A big change: the second backup's own pack holds it, and nothing of
    // the first backup lives in that pack.
    src.exec(
        "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v \
         FROM generate_series(1, 60000) g; CHECKPOINT;",
    );
    let big = src.query_one("SELECT pg_relation_filepath('big')");
    src.backup_ok(&repo, &[]);
    let ids: Vec<String> = repo
        .backups()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let (b1, b2) = (ids[0].clone(), ids[1].clone());

    let report = verify_ok(&repo);
    assert!(
        report.contains(&format!("backup {b1} (main): ok")),
        "{report}"
    );
    assert!(
        report.contains(&format!("backup {b2} (main): ok")),
        "{report}"
    );
    // --set checks one backup.
    let one = out(&verify(&repo, &["--set", &b1]));
    assert!(one.contains(&format!("backup {b1} (main): ok")), "{one}");
    assert!(!one.contains(&b2), "{one}");

    let db = catalog(&repo);
    let pack2: String = db
        .query_row(
            "SELECT id FROM pack WHERE backup_id = ?1 ORDER BY size DESC LIMIT 1",
            [&b2],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    let path2 = pack_path(&repo, &pack2);
    let original = std::fs::read(&path2).unwrap();
    let damaged_only_b2 = |report: &str| {
        assert!(
            report.contains(&format!("backup {b2} (main): DAMAGED")),
            "{report}"
        );
        assert!(
            report.contains(&format!("backup {b1} (main): ok")),
            "{report}"
        );
        for l in report.lines().filter(|l| l.starts_with("problem:")) {
            assert!(!l.contains(&b1), "the first backup is blamed: {l}");
        }
    };

    // 1. A flipped byte in the middle of the pack.
    let mut bad = original.clone();
    bad[original.len() / 2] ^= 0x5a;
    std::fs::write(&path2, &bad).unwrap();
    let report = verify_fails(&repo, &[]);
    damaged_only_b2(&report);
    let p = problems_with(&report, &pack2);
    assert_eq!(p.len(), 1, "{report}");
    assert!(
        // Where the flipped byte lands decides which check catches it: the
        // chunk's hash, or zstd's own frame checks.
        p[0].contains("pack corrupt")
            && (p[0].contains("does not match") || p[0].contains("does not decompress")),
        "{report}"
    );
    assert!(p[0].contains("; files "), "no file named: {report}");
    // verify --set of the untouched backup passes.
    check(&verify(&repo, &["--set", &b1]), "verify --set first backup");
    // Restoring the damaged backup fails loudly, naming a file and the backup.
    let t = s.path().join("t-flip");
    let o = restore_set(&repo, &t, &b2);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains(&format!("(backup {b2})")), "{}", err(&o));
    assert!(!t.exists());

    // 2. A truncated pack: the big table's chunks are gone.
    std::fs::write(&path2, &original[..original.len() / 3]).unwrap();
    let report = verify_fails(&repo, &[]);
    damaged_only_b2(&report);
    let p = problems_with(&report, &pack2);
    assert!(p[0].contains("pack corrupt"), "{report}");
    assert!(p[0].contains(&big), "{big} not named: {report}");

    // 3. A missing pack. The first backup still restores, exactly.
    std::fs::remove_file(&path2).unwrap();
    let report = verify_fails(&repo, &[]);
    damaged_only_b2(&report);
    let p = problems_with(&report, &pack2);
    assert!(
        p[0].contains("pack missing") && p[0].contains(&big),
        "{report}"
    );
    let t = s.path().join("t-missing");
    let o = restore_set(&repo, &t, &b2);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("missing"), "{}", err(&o));
    let mut first = restore(
        &s,
        &repo,
        "first",
        &[
            "--set",
            &b1,
            "--target",
            "immediate",
            "--target-action",
            "promote",
        ],
    );
    first.start_ok();
    first.wait_for_consistency();
    assert_eq!(first.table_hashes(), at_first);
    first.stop();
    std::fs::write(&path2, &original).unwrap();
    std::fs::set_permissions(&path2, std::fs::Permissions::from_mode(0o600)).unwrap();
    verify_ok(&repo);

    // 4. A deleted chunk row: the biggest chunk of the big table.
    let db = catalog(&repo);
    let (chunk, offset): (Vec<u8>, i64) = db
        .query_row(
            "SELECT id, offset FROM chunk WHERE pack_id = ?1 ORDER BY raw_len DESC LIMIT 1",
            [&pack2],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    db.execute("DELETE FROM chunk WHERE id = ?1", [&chunk])
        .unwrap();
    drop(db);
    let report = verify_fails(&repo, &[]);
    damaged_only_b2(&report);
    let p = problems_with(&report, "chunk not indexed");
    assert_eq!(p.len(), 1, "{report}");
    assert!(p[0].contains(&big), "{report}");
    let t = s.path().join("t-row");
    let o = restore_set(&repo, &t, &b2);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains(&format!("{big} (backup {b2})")),
        "{}",
        err(&o)
    );
    assert!(!t.exists());
    let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
    assert!(p[0].contains(&hex), "the chunk is not named: {report}");
    let db = catalog(&repo);
    // Put the row back from the pack's own record: verify passes again.
    let raw_len = u32::from_le_bytes(
        original[offset as usize + 4..offset as usize + 8]
            .try_into()
            .unwrap(),
    );
    let slen = u32::from_le_bytes(
        original[offset as usize + 8..offset as usize + 12]
            .try_into()
            .unwrap(),
    );
    db.execute(
        "INSERT INTO chunk (id, pack_id, offset, stored_len, raw_len) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![chunk, pack2, offset, slen, raw_len],
    )
    .unwrap();
    drop(db);
    verify_ok(&repo);
    // A deleted pack row: the index points into a pack the catalog forgot.
    let db = catalog(&repo);
    let row: (i64, i64, Option<String>, i64) = db
        .query_row(
            "SELECT size, chunks, backup_id, created_at FROM pack WHERE id = ?1",
            [&pack2],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    db.pragma_update(None, "foreign_keys", "OFF").unwrap();
    db.execute("DELETE FROM pack WHERE id = ?1", [&pack2])
        .unwrap();
    let report = verify_fails(&repo, &[]);
    assert!(
        problems_with(&report, "catalog: catalog.db")
            .iter()
            .any(|l| l.contains("pack")),
        "{report}"
    );
    db.execute(
        "INSERT INTO pack (id, size, chunks, backup_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![pack2, row.0, row.1, row.2, row.3],
    )
    .unwrap();
    drop(db);
    verify_ok(&repo);

    // 5. WAL: a segment missing inside a backup's range, and a gap after it.
    for _ in 0..3 {
        src.exec("CREATE TABLE IF NOT EXISTS churn (x int); INSERT INTO churn VALUES (1);");
        src.switch_wal_and_wait(&repo);
    }
    let info = repo.info_json();
    let b2info = &info["clusters"][0]["backups"][1];
    let stop = b2info["wal_stop"].as_str().unwrap().to_string();
    let walmax = info["clusters"][0]["wal"]["max"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(walmax > stop, "{walmax} {stop}");
    let key = |name: &str| {
        repo.path
            .join(format!("wal/main/{}/{name}.zst", &name[..16]))
    };
    // The segment after the second backup's stop: a gap for both backups.
    let after = next_segment(&stop);
    let moved = s.path().join("moved.zst");
    std::fs::rename(key(&after), &moved).unwrap();
    let report = verify_fails(&repo, &[]);
    let p = problems_with(&report, "WAL gap");
    assert_eq!(p.len(), 1, "{report}");
    assert!(
        p[0].contains(&after) && p[0].contains(&b1) && p[0].contains(&b2),
        "{report}"
    );
    std::fs::rename(&moved, key(&after)).unwrap();
    // The second backup's stop segment: it can never become consistent.
    std::fs::rename(key(&stop), &moved).unwrap();
    let report = verify_fails(&repo, &[]);
    let p = problems_with(&report, "WAL missing");
    assert_eq!(p.len(), 1, "{report}");
    assert!(p[0].contains(&stop) && p[0].contains(&b2), "{report}");
    assert!(
        report.contains(&format!("backup {b2} (main): DAMAGED")),
        "{report}"
    );
    std::fs::rename(&moved, key(&stop)).unwrap();
    // A damaged WAL object.
    let mut w = std::fs::read(key(&stop)).unwrap();
    let n = w.len() - 10;
    w[n] ^= 0x77;
    std::fs::write(key(&stop), &w).unwrap();
    let report = verify_fails(&repo, &[]);
    assert_eq!(problems_with(&report, "WAL corrupt").len(), 1, "{report}");
    w[n] ^= 0x77;
    std::fs::write(key(&stop), &w).unwrap();
    verify_ok(&repo);
}

fn next_segment(name: &str) -> String {
    let tli = &name[..8];
    let log = u32::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u32::from_str_radix(&name[16..24], 16).unwrap();
    // 16 MiB segments: 256 per log id.
    let (log, seg) = if seg == 0xFF {
        (log + 1, 0)
    } else {
        (log, seg + 1)
    };
    format!("{tli}{log:08X}{seg:08X}")
}

#[test]
fn rebuild_catalog_after_loss() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 5_000);
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 10 = 0; CHECKPOINT;");
    src.backup_ok(&repo, &[]);
    src.exec("INSERT INTO accounts SELECT g, 1, 'late' FROM generate_series(5001, 6000) g;");
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    let before = repo.info_json();

    // A catalog overwritten with garbage: the error says what repairs it.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(repo.path.join(format!("catalog.db{suffix}")));
    }
    std::fs::write(repo.path.join("catalog.db"), vec![0x5a; 20_000]).unwrap();
    let o = pgstrata(&["--repo", repo.arg(), "info"]);
    crate::harness::fails_with(&o, "repair --rebuild-catalog");
    assert!(err(&o).contains("not an SQLite database"), "{}", err(&o));
    assert_eq!(err(&o).trim().lines().count(), 1, "{}", err(&o));

    let _ = std::fs::remove_file(repo.path.join("catalog.db"));
    let o = pgstrata(&["--repo", repo.arg(), "info"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("repair --rebuild-catalog"), "{}", err(&o));

    let o = pgstrata(&["--repo", repo.arg(), "repair", "--rebuild-catalog"]);
    check(&o, "repair --rebuild-catalog");
    assert!(out(&o).contains("2 backup(s)"), "{}", out(&o));
    let after = repo.info_json();
    let key = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["clusters"][0]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.as_object_mut().unwrap().remove("dedupe_ratio");
                b
            })
            .collect()
    };
    assert_eq!(key(&after), key(&before));
    assert_eq!(
        after["clusters"][0]["system_id"],
        before["clusters"][0]["system_id"]
    );
    assert_eq!(after["clusters"][0]["wal"], before["clusters"][0]["wal"]);
    verify_ok(&repo);

    // A second repair keeps the first rebuilt catalog aside, never deletes it.
    check(
        &pgstrata(&["--repo", repo.arg(), "repair", "--rebuild-catalog"]),
        "second repair",
    );
    let aside: Vec<_> = std::fs::read_dir(&repo.path)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("catalog.db.old-")
        })
        .filter(|e| !e.file_name().to_string_lossy().ends_with("-wal"))
        .filter(|e| !e.file_name().to_string_lossy().ends_with("-shm"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");

    let mut dst = restore(&s, &repo, "dst", &[]);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
    dst.stop();
    // And the next backup works on the rebuilt catalog, block-granular.
    let o = src.backup_ok(&repo, &[]);
    assert!(o.contains("(incr of "), "{o}");
    verify_ok(&repo);
}

fn check_cmd(repo: &Repo, c: &Cluster, extra: &[&str]) -> Output {
    let ci = c.conninfo();
    let mut args = vec![
        "--repo",
        repo.arg(),
        "check",
        "--pgdata",
        c.pgdata.to_str().unwrap(),
        "--dbname",
        &ci,
    ];
    args.extend_from_slice(extra);
    pgstrata(&args)
}

#[test]
fn check_proves_the_live_setup() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let o = check_cmd(&repo, &src, &[]);
    check(&o, "pgstrata check");
    assert!(out(&o).contains("reached the repository"), "{}", out(&o));
    let sysid = src.query_one("SELECT system_identifier::text FROM pg_control_system()");
    assert!(out(&o).contains(&sysid), "{}", out(&o));

    // archive_command that does not reach the repository: a clear timeout.
    src.exec("ALTER SYSTEM SET archive_command = 'false'");
    src.exec("SELECT pg_reload_conf()");
    // The archiver rereads its settings when it gets to it: wait until it
    // has failed once.
    let failed = || src.query_one("SELECT failed_count::text FROM pg_stat_archiver");
    let before = failed();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while failed() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the archiver never ran the failing archive_command"
        );
        src.exec("SELECT txid_current(); SELECT pg_switch_wal()");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let o = check_cmd(&repo, &src, &["--archive-timeout", "2"]);
    fails_with(&o, "was not archived to this repository within 2 s");
    assert!(err(&o).contains("archive_command"), "{}", err(&o));
    src.exec("ALTER SYSTEM RESET archive_command");
    src.exec("SELECT pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(300));
    check(&check_cmd(&repo, &src, &[]), "check after the fix");

    // Another cluster: its identity is not the repository's "main".
    let other = Cluster::new(&s, "other", ClusterOpts::default());
    fails_with(&check_cmd(&repo, &other, &[]), "system identifier");
    // Under its own name it gets as far as archive_mode.
    fails_with(
        &check_cmd(&repo, &other, &["--cluster", "other"]),
        "archive_mode is off",
    );
    // --pgdata of one cluster, connection to another.
    let ci = src.conninfo();
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "check",
            "--pgdata",
            other.pgdata.to_str().unwrap(),
            "--dbname",
            &ci,
        ]),
        "system identifier",
    );
    // check writes nothing but the WAL the server archives.
    assert!(repo.backups().is_empty());
}
