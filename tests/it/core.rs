//! The main job end to end: full backup of a running cluster, writes after
//! it, restore elsewhere, start, and compare.

use crate::harness::*;

on_local_and_s3! {
    full_backup_restores_exactly_with_later_writes_in =>
        full_backup_restores_exactly_with_later_writes,
        full_backup_restores_exactly_with_later_writes_on_s3;
}

fn full_backup_restores_exactly_with_later_writes_in(kind: Kind) {
    let s = Scratch::new();
    let repo = kind.repo(&s);
    let mut src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 20_000);

    let out = src.backup_ok(&repo, &["--type", "full"]);
    assert!(out.contains("(full) complete"), "{out}");

    // Writes after the backup must be recovered from the archived WAL.
    src.exec(
        "INSERT INTO accounts SELECT g, 0, 'late' FROM generate_series(20001, 21000) g;
         UPDATE docs SET body = body || 'x' WHERE id % 7 = 0;
         DELETE FROM events WHERE kind = 'b';
         CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 500) g;",
    );
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    assert!(want.len() >= 4, "{want:?}");

    let mut dst = restore(&s, &repo, "dst", &[]);
    assert!(dst.pgdata.join("recovery.signal").exists());
    assert!(dst.pgdata.join("backup_label").exists());
    assert!(dst.pgdata.join("pg_wal/archive_status").is_dir());
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(
        dst.table_hashes(),
        want,
        "restored data differs from the source"
    );
    dst.amcheck();
    dst.stop();
    dst.checksums_ok();
    src.stop();
}

#[test]
fn restore_target_immediate_stops_at_backup_end() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;");
    src.backup_ok(&repo, &["--type", "full"]);
    let at_backup = src.table_hashes();
    src.exec("INSERT INTO t SELECT g FROM generate_series(1, 1000) g;");
    src.switch_wal_and_wait(&repo);

    let mut dst = restore(
        &s,
        &repo,
        "dst",
        &["--target", "immediate", "--target-action", "promote"],
    );
    let conf = std::fs::read_to_string(dst.pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("recovery_target = 'immediate'"), "{conf}");
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), at_backup);
}

#[test]
fn second_full_of_unchanged_data_stores_under_one_percent() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 50_000);
    src.backup_ok(&repo, &["--type", "full"]);
    src.backup_ok(&repo, &["--type", "full"]);
    let b = repo.backups();
    assert_eq!(b.len(), 2);
    let first = b[0]["stored_bytes"].as_u64().unwrap();
    let second = b[1]["stored_bytes"].as_u64().unwrap();
    assert!(first > 1_000_000, "first full stored only {first} bytes");
    assert!(
        second * 100 < first,
        "second full stored {second} bytes, not under 1% of {first}"
    );
}

#[test]
fn info_json_follows_the_contract() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.backup_ok(&repo, &["--type", "full"]);
    let info = repo.info_json();
    let c = &info["clusters"][0];
    assert_eq!(c["name"], "main");
    let sysid: u64 = src
        .query_one("SELECT system_identifier::text FROM pg_control_system()")
        .parse()
        .unwrap();
    // A string, so that JSON tools keep all 64 bits.
    assert_eq!(c["system_id"].as_str(), Some(sysid.to_string().as_str()));
    assert_eq!(c["pg_version"].as_u64(), Some(15));
    let b = &c["backups"][0];
    for key in [
        "id",
        "type",
        "status",
        "reference",
        "start_time",
        "stop_time",
        "start_lsn",
        "stop_lsn",
        "timeline",
        "wal_start",
        "wal_stop",
        "db_bytes",
        "read_bytes",
        "stored_bytes",
    ] {
        assert!(b.get(key).is_some(), "backup lacks {key}: {b}");
    }
    assert_eq!(b["type"], "full");
    assert_eq!(b["status"], "complete");
    assert!(b["start_time"].as_str().unwrap().ends_with('Z'));
    let lsn = b["start_lsn"].as_str().unwrap();
    assert!(
        lsn.contains('/') && lsn.parse::<pgstrata::Lsn>().is_ok(),
        "{lsn}"
    );
    assert!(b["stored_bytes"].as_u64().unwrap() > 0);
    assert!(c["wal"]["min"].is_string() && c["wal"]["max"].is_string());
    assert!(info["repo"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(info["repo"]["encrypted"], false);
    // Text output names the backup too.
    let text = pgstrata_ok(&["--repo", repo.arg(), "info"]);
    assert!(text.contains(b["id"].as_str().unwrap()), "{text}");
}

#[test]
fn default_type_becomes_full_and_says_so() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let o = src.backup(&repo, &[]);
    check(&o, "backup");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("has no complete full backup") && err.contains("took a full backup"),
        "stderr: {err}"
    );
    let o = src.backup(&repo, &[]);
    check(&o, "backup");
    let b = repo.backups();
    assert_eq!(b[0]["type"], "full");
    assert_eq!(b[1]["type"], "incr");
    assert_eq!(b[1]["reference"], b[0]["id"]);
}

#[test]
fn tablespaces_owners_and_modes_are_restored() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let ts = s.pg_dir("ts_one");
    src.exec(&format!(
        "CREATE TABLESPACE one LOCATION '{}'",
        ts.display()
    ));
    src.exec(
        "CREATE TABLE in_ts (id int PRIMARY KEY, v text) TABLESPACE one;
         INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
         CREATE TABLE outside AS SELECT g FROM generate_series(1, 100) g;",
    );
    let oid = src.query_one("SELECT oid::text FROM pg_tablespace WHERE spcname = 'one'");
    src.backup_ok(&repo, &["--type", "full"]);
    let want = src.table_hashes();

    let moved = s.path().join("ts_moved");
    let map = format!("{oid}={}", moved.display());
    let mut dst = restore(&s, &repo, "dst", &["--tablespace-map", &map]);
    let link = std::fs::read_link(dst.pgdata.join("pg_tblspc").join(&oid)).unwrap();
    assert_eq!(link, moved);
    let tmap = std::fs::read_to_string(dst.pgdata.join("tablespace_map")).unwrap();
    assert!(
        tmap.contains(&format!("{oid} {}", moved.display())),
        "{tmap}"
    );

    // Modes and (as root) owners are as recorded.
    use std::os::unix::fs::MetadataExt;
    for rel in [
        ".",
        "PG_VERSION",
        "base",
        "global/pg_control",
        "postgresql.conf",
    ] {
        let a = std::fs::metadata(src.pgdata.join(rel)).unwrap();
        let b = std::fs::metadata(dst.pgdata.join(rel)).unwrap();
        assert_eq!(a.mode() & 0o7777, b.mode() & 0o7777, "mode of {rel}");
        assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "owner of {rel}");
    }
    give_to_pg(&moved);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
    let loc = dst
        .query_one("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'one'");
    assert_eq!(loc, moved.display().to_string());
    // The original tablespace directory was not touched by the restore.
    dst.amcheck();
}

#[test]
fn corrupt_page_is_reported_and_recorded_and_backup_completes() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let mut src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE victim AS SELECT g, md5(g::text) m FROM generate_series(1, 2000) g; CHECKPOINT;");
    let rel = src.query_one("SELECT pg_relation_filepath('victim')");
    src.stop();
    // Flip bytes in the tuple area of block 1: an old page (LSN before the
    // backup) with a bad checksum is real corruption.
    let path = src.pgdata.join(&rel);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8192 + 4000] ^= 0xff;
    bytes[8192 + 4001] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    src.start_ok();
    let o = src.backup(&repo, &["--type", "full"]);
    check(&o, "backup with a corrupt page");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&rel) && err.contains("block 1"), "{err}");
    let b = repo.backups();
    assert_eq!(b[0]["status"], "complete");
    assert_eq!(b[0]["page_errors"].as_u64(), Some(1));
    let text = pgstrata_ok(&["--repo", repo.arg(), "info"]);
    assert!(text.contains("1 page checksum errors"), "{text}");
}

/// A spread checkpoint is not a silent wait, and logs carry RFC 3339 times.
#[test]
fn spread_checkpoint_is_announced_and_logs_have_timestamps() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let ci = src.conninfo();
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "--log-level",
        "info",
        "backup",
        "--pgdata",
        src.pgdata.to_str().unwrap(),
        "--dbname",
        &ci,
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains(
            "waiting for the next checkpoint (spread); --start-fast asks for an immediate one"
        ),
        "{e}"
    );
    let log = e
        .lines()
        .find(|l| l.contains("backup mode started"))
        .unwrap_or_else(|| panic!("no info log line: {e}"));
    let stamp = log.split_whitespace().next().unwrap();
    assert!(
        stamp.len() >= 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "not an RFC 3339 UTC timestamp: {log}"
    );
    // --quiet says nothing on success.
    let o = src.backup(&repo, &["--quiet"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

/// File names are bytes: names that are not UTF-8 (and names using the
/// escape range) are backed up and restored byte-exact.
#[test]
fn file_names_that_are_not_utf8_restore_byte_exact() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let name = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
    let file = name(b"notes-\xe9\xff.txt");
    let dir = name(b"dir-\xfe");
    let inner = name(b"inner-\x80");
    let escape_range = name("private-\u{f780}".as_bytes());
    let link = name(b"link-\xe9");
    let target = name(b"target-\xff/x");
    std::fs::write(src.pgdata.join(&file), b"latin-1 name").unwrap();
    std::fs::create_dir(src.pgdata.join(&dir)).unwrap();
    std::fs::write(src.pgdata.join(&dir).join(&inner), b"inside").unwrap();
    std::fs::write(src.pgdata.join(&escape_range), b"escape range").unwrap();
    std::os::unix::fs::symlink(&target, src.pgdata.join(&link)).unwrap();
    give_to_pg(&src.pgdata);
    src.backup_ok(&repo, &["--type", "full"]);
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    // --link-all: links inside the data directory are not recreated by default.
    let mut dst = restore(&s, &repo, "dst", &["--link-all"]);
    assert_eq!(
        std::fs::read(dst.pgdata.join(&file)).unwrap(),
        b"latin-1 name"
    );
    assert_eq!(
        std::fs::read(dst.pgdata.join(&dir).join(&inner)).unwrap(),
        b"inside"
    );
    assert_eq!(
        std::fs::read(dst.pgdata.join(&escape_range)).unwrap(),
        b"escape range"
    );
    assert_eq!(
        std::fs::read_link(dst.pgdata.join(&link))
            .unwrap()
            .as_os_str(),
        target.as_os_str()
    );
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
}
