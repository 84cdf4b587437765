//! Catalog replication's tests: two hosts on one bucket (a local directory).

use std::fs;
use std::path::Path;

use super::fetch::{self, FETCH_PREFIX, PUBLISH_PREFIX};
use super::*;
use crate::catalog::Catalog;
use crate::error::{Error, Hint};
use crate::format::catalog_delta::CatalogObject;
use crate::format::keys;
use crate::store::fault::FaultBackend;
use crate::store::Backend;
use crate::store::{LocalBackend, Ownership};

fn setup() -> (tempfile::TempDir, LocalBackend) {
    let d = tempfile::tempdir().unwrap();
    let bucket = d.path().join("bucket");
    fs::create_dir(&bucket).unwrap();
    let own = Ownership {
        file_mode: 0o600,
        dir_mode: 0o700,
        chown_to: None,
    };
    (d, LocalBackend::new(bucket, own))
}

/// No object fetched or staged stays in a host's cache directory.
fn assert_nothing_left(dir: &Path) {
    let left: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            n.starts_with(FETCH_PREFIX) || n.starts_with(PUBLISH_PREFIX)
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn clusters(path: &Path) -> usize {
    Catalog::open(path, false)
        .unwrap()
        .clusters()
        .list()
        .unwrap()
        .len()
}

#[test]
fn two_hosts_see_each_others_work_and_dead_writers_are_not_trusted() {
    let (d, bucket) = setup();
    let a = CatalogCache::new(&d.path().join("a"), "s3://b/p").unwrap();
    let e = a.current(&bucket).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Hinted {
                hint: Hint::RebuildCatalog,
                ..
            }
        ) && e.to_string().contains("no catalog snapshot"),
        "{e}"
    );
    drop(Catalog::open(&a.first_file(), true).unwrap());
    a.publish_first(&bucket, &a.first_file()).unwrap();
    assert!(bucket.get(&keys::catalog_snapshot(1)).unwrap().is_some());

    // Host B reads what A made, and writes.
    let b = CatalogCache::new(&d.path().join("b"), "s3://b/p").unwrap();
    assert_eq!(clusters(&b.current(&bucket).unwrap()), 0);
    b.begin_write(&bucket).unwrap();
    let p = b.current(&bucket).unwrap();
    Catalog::open(&p, false)
        .unwrap()
        .clusters()
        .bind("main", 42, 150000)
        .unwrap();
    b.publish(&bucket).unwrap();

    // A sees it; its old copy is not trusted.
    assert_eq!(clusters(&a.current(&bucket).unwrap()), 1);

    // A writer that dies before publishing: its change is not seen,
    // even by the next command on its own host.
    a.begin_write(&bucket).unwrap();
    let p = a.current(&bucket).unwrap();
    Catalog::open(&p, false)
        .unwrap()
        .clusters()
        .bind("other", 43, 150000)
        .unwrap();
    a.abandon();
    let a2 = CatalogCache::new(&d.path().join("a"), "s3://b/p").unwrap();
    assert_eq!(clusters(&a2.current(&bucket).unwrap()), 1);

    // Old generations are removed (the chain of the newest is kept; see
    // the next test), the newest kept. With no backup in the catalog, a
    // writer does not capture: its generation goes whole.
    for _ in 0..4 {
        b.begin_write(&bucket).unwrap();
        let triggers: i64 = Catalog::open(&b.current(&bucket).unwrap(), false)
            .unwrap()
            .conn_for_tests()
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(triggers, 0);
        b.publish(&bucket).unwrap();
        let g = b.read_state().unwrap().unwrap().generation;
        assert!(matches!(object(&bucket, g), CatalogObject::Full));
    }
    let gens = generations(&bucket);
    assert!(!gens.contains(&1) && gens.ends_with(&[4, 5, 6]), "{gens:?}");
    assert_eq!(clusters(&a2.current(&bucket).unwrap()), 1);
}

#[test]
fn a_damaged_snapshot_is_an_error_naming_it() {
    let (d, bucket) = setup();
    bucket.put(&keys::catalog_snapshot(3), b"garbage").unwrap();
    let a = CatalogCache::new(&d.path().join("a"), "r").unwrap();
    let e = a.current(&bucket).unwrap_err().to_string();
    assert!(e.contains("catalog/00000000000000000003.db.zst"), "{e}");
}

fn object(bucket: &LocalBackend, generation: u64) -> CatalogObject {
    let packed = bucket
        .get(&keys::catalog_snapshot(generation))
        .unwrap()
        .unwrap();
    CatalogObject::decode(zstd::decode_all(packed.as_slice()).unwrap(), "o").unwrap()
}

fn generations(bucket: &LocalBackend) -> Vec<u64> {
    bucket
        .list(keys::CATALOG)
        .unwrap()
        .iter()
        .filter_map(|(k, _)| keys::parse_catalog_snapshot(k))
        .collect()
}

fn write(cache: &CatalogCache, bucket: &LocalBackend, sql: &str) {
    cache.begin_write(bucket).unwrap();
    let p = cache.current(bucket).unwrap();
    let cat = Catalog::open(&p, false).unwrap();
    cat.conn_for_tests().execute_batch(sql).unwrap();
    drop(cat);
    cache.publish(bucket).unwrap();
}

/// Host `a`'s cache, whose first generation is a catalog of some size
/// (so that small changes go as deltas) with one backup.
fn seeded(d: &Path, bucket: &LocalBackend) -> CatalogCache {
    let a = CatalogCache::new(&d.join("a"), "r").unwrap();
    {
        let cat = Catalog::open(&a.first_file(), true).unwrap();
        // A catalog of some size, so that small changes go as deltas.
        cat.conn_for_tests()
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
                 INSERT INTO expire_log SELECT i, random(), i, i, i, i, i, random() FROM n; \
                 INSERT INTO cluster (id, name, system_id, pg_version, created_at) \
                 VALUES (9, 'seed', '9', 15, 0); \
                 INSERT INTO backup (id, cluster_id, type, status, start_time, start_lsn, \
                 timeline, pg_version, block_size, wal_seg_size, data_checksums, seq) \
                 VALUES ('b', 9, 'full', 'complete', 0, 0, 1, 15, 8192, 16777216, 1, 1)",
            )
            .unwrap();
    }
    a.publish_first(bucket, &a.first_file()).unwrap();
    a
}

fn expire_log_rows(p: &Path) -> i64 {
    Catalog::open(p, false)
        .unwrap()
        .conn_for_tests()
        .query_row("SELECT count(*) FROM expire_log", [], |r| r.get(0))
        .unwrap()
}

/// A writer that dies after committing to its copy: the next writer of its
/// host starts from the bucket's generation, not from the dead writer's
/// file, so the delta it publishes fits every other host's copy.
#[test]
fn the_next_writer_after_a_dead_one_publishes_a_delta_that_fits() {
    let (d, bucket) = setup();
    let a = seeded(d.path(), &bucket);
    // B's copy of generation 1 is a download, named for its generation.
    let b = CatalogCache::new(&d.path().join("b"), "r").unwrap();
    assert_eq!(expire_log_rows(&b.current(&bucket).unwrap()), 3000);
    b.begin_write(&bucket).unwrap();
    let p = b.current(&bucket).unwrap();
    Catalog::open(&p, false)
        .unwrap()
        .conn_for_tests()
        .execute_batch("DELETE FROM expire_log WHERE id <= 20")
        .unwrap();
    b.abandon();
    let b2 = CatalogCache::new(&d.path().join("b"), "r").unwrap();
    write(&b2, &bucket, "DELETE FROM expire_log WHERE id = 100");
    assert!(matches!(object(&bucket, 2), CatalogObject::Delta(_)));
    assert_eq!(expire_log_rows(&b2.current(&bucket).unwrap()), 2999);
    let c = CatalogCache::new(&d.path().join("c"), "r").unwrap();
    for host in [&a, &c] {
        assert_eq!(expire_log_rows(&host.current(&bucket).unwrap()), 2999);
    }
}

#[test]
fn hosts_follow_by_deltas_and_chains_stay_short() {
    let (d, bucket) = setup();
    let a = seeded(d.path(), &bucket);
    assert!(matches!(object(&bucket, 1), CatalogObject::Full));
    let b = CatalogCache::new(&d.path().join("b"), "r").unwrap();
    assert_eq!(clusters(&b.current(&bucket).unwrap()), 1);

    write(
        &a,
        &bucket,
        "INSERT INTO cluster (id, name, system_id, pg_version, created_at) \
                         VALUES (1, 'main', '42', 15, 0)",
    );
    let CatalogObject::Delta(d2) = object(&bucket, 2) else {
        panic!("generation 2 is not a delta");
    };
    assert_eq!(d2.chain.base, 1);
    assert_eq!(d2.rows(), 1);
    // B applies it to its copy; C, a new host, to the full.
    assert_eq!(clusters(&b.current(&bucket).unwrap()), 2);
    let c = CatalogCache::new(&d.path().join("c"), "r").unwrap();
    assert_eq!(clusters(&c.current(&bucket).unwrap()), 2);

    // B binds a cluster in its copy without the lock (as archive-push
    // may): that copy is no base for the next generation.
    Catalog::open(&b.current(&bucket).unwrap(), false)
        .unwrap()
        .clusters()
        .bind("other", 43, 150000)
        .unwrap();
    write(&a, &bucket, "DELETE FROM expire_log WHERE id <= 10");
    let p = b.current(&bucket).unwrap();
    assert_eq!(clusters(&p), 2);
    let count = |p: &Path| -> i64 {
        Catalog::open(p, false)
            .unwrap()
            .conn_for_tests()
            .query_row("SELECT count(*) FROM expire_log", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&p), 2990);

    // A change of most of the catalog goes whole, without a delta made.
    write(
        &a,
        &bucket,
        "UPDATE expire_log SET wal_files = wal_files + 1",
    );
    assert!(matches!(object(&bucket, 4), CatalogObject::Full));
    assert_eq!(count(&b.current(&bucket).unwrap()), 2990);

    // A copy that went its own way without capturing it, and a copy
    // whose generation came from another history: neither is a base,
    // and neither host is stuck.
    let p = b.current(&bucket).unwrap();
    {
        let mut cat = Catalog::open(&p, false).unwrap();
        cat.stop_capture().unwrap();
        cat.conn_for_tests()
            .execute_batch("DELETE FROM expire_log WHERE id = 11")
            .unwrap();
    }
    let p = c.current(&bucket).unwrap();
    assert_eq!(count(&p), 2990);
    let mut st = c.read_state().unwrap().unwrap();
    st.chain.as_mut().unwrap().hash = [7; 32];
    c.write_state(&st).unwrap();
    write(&a, &bucket, "DELETE FROM expire_log WHERE id = 12");
    assert!(matches!(object(&bucket, 5), CatalogObject::Delta(_)));
    for host in [&b, &c] {
        let q = host.current(&bucket).unwrap();
        assert_ne!(q, p);
        assert_eq!(count(&q), 2989);
    }

    // Deltas until the chain is long: then a full, and the older chain
    // goes once three generations are past it.
    let mut fulls = vec![4];
    for i in 0..MAX_CHAIN_LENGTH + 3 {
        write(
            &a,
            &bucket,
            &format!("UPDATE expire_log SET backups = {i} WHERE id = 100"),
        );
        let g = a.read_state().unwrap().unwrap().generation;
        if matches!(object(&bucket, g), CatalogObject::Full) {
            fulls.push(g);
        }
    }
    assert_eq!(fulls, vec![4, 4 + u64::from(MAX_CHAIN_LENGTH) + 1]);
    let newest = a.read_state().unwrap().unwrap().generation;
    assert_eq!(
        generations(&bucket),
        (fulls[1]..=newest).collect::<Vec<_>>()
    );
    // B, two chains behind, and C catch up.
    for host in [&b, &c] {
        let p = host.current(&bucket).unwrap();
        assert_eq!(count(&p), 2989);
        assert_eq!(clusters(&p), 2);
    }

    // A delta that does not decode is an error naming it.
    a.begin_write(&bucket).unwrap();
    a.abandon();
    bucket
        .put(
            &keys::catalog_snapshot(newest + 1),
            &zstd::encode_all(&b"PGSTRCD1xx"[..], 3).unwrap(),
        )
        .unwrap();
    let e = c.current(&bucket).unwrap_err().to_string();
    assert!(e.contains(&keys::catalog_snapshot(newest + 1)), "{e}");
}

/// A row's narrow value set over several deltas, with upserts and deletes
/// in between, comes out as the writer left it on a new host (full and
/// chain) and on a host with a copy; nothing fetched stays behind.
#[test]
fn a_chain_of_narrowed_updates_lands_as_the_writer_left_it() {
    let (d, bucket) = setup();
    let a = CatalogCache::new(&d.path().join("a"), "r").unwrap();
    let version = "INSERT INTO file_version (cluster_id, path, first_seq, last_seq, kind, size, \
                   mtime, mode, uid, gid)";
    {
        let cat = Catalog::open(&a.first_file(), true).unwrap();
        cat.conn_for_tests()
            .execute_batch(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
                 INSERT INTO expire_log SELECT i, random(), i, i, i, i, i, random() FROM n; \
                 INSERT INTO cluster (id, name, system_id, pg_version, created_at) \
                 VALUES (9, 'seed', '9', 15, 0); \
                 INSERT INTO backup (id, cluster_id, type, status, start_time, start_lsn, \
                 timeline, pg_version, block_size, wal_seg_size, data_checksums, seq) \
                 VALUES ('b', 9, 'full', 'complete', 0, 0, 1, 15, 8192, 16777216, 1, 1); \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
                 {version} SELECT 9, 'p' || i, 1, 1, 'f', i, 0, 384, 0, 0 FROM n"
            ))
            .unwrap();
    }
    a.publish_first(&bucket, &a.first_file()).unwrap();
    let b = CatalogCache::new(&d.path().join("b"), "r").unwrap();
    b.current(&bucket).unwrap();
    for sql in [
        "UPDATE file_version SET last_seq = last_seq + 1".to_string(),
        "UPDATE file_version SET size = size + 1000, last_seq = last_seq + 1 \
         WHERE path IN ('p1', 'p2')"
            .into(),
        "DELETE FROM file_version WHERE path IN ('p3', 'p4')".into(),
        "UPDATE file_version SET last_seq = last_seq + 1 WHERE path <> 'p5'".into(),
        format!("{version} VALUES (9, 'p3', 1, 7, 'f', 3, 0, 384, 0, 0)"),
        "UPDATE file_version SET last_seq = 9 WHERE path = 'p3'".into(),
    ] {
        write(&a, &bucket, &sql);
    }
    let newest = a.read_state().unwrap().unwrap().generation;
    for g in 2..=newest {
        assert!(matches!(object(&bucket, g), CatalogObject::Delta(_)), "{g}");
    }
    let rows = |p: &Path| -> Vec<(String, i64, i64)> {
        let cat = Catalog::open(p, false).unwrap();
        let mut st = cat
            .conn_for_tests()
            .prepare("SELECT path, last_seq, size FROM file_version ORDER BY path")
            .unwrap();
        let v = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        v
    };
    let want = rows(&a.current(&bucket).unwrap());
    let find = |p: &str| want.iter().find(|r| r.0 == p).cloned();
    assert_eq!(find("p1"), Some(("p1".into(), 4, 1001)));
    assert_eq!(find("p3"), Some(("p3".into(), 9, 3)));
    assert_eq!(find("p4"), None);
    assert_eq!(find("p5"), Some(("p5".into(), 2, 5)));
    assert_eq!(find("p6"), Some(("p6".into(), 3, 6)));
    let c = CatalogCache::new(&d.path().join("c"), "r").unwrap();
    assert_eq!(rows(&c.current(&bucket).unwrap()), want);
    assert_eq!(rows(&b.current(&bucket).unwrap()), want);
    for host in ["a", "b", "c"] {
        assert_nothing_left(&d.path().join(host));
    }
}

/// A download that breaks off is started again, a few times; then the
/// error names the object. Nothing fetched stays behind either way.
#[test]
fn a_download_that_breaks_off_is_fetched_again() {
    let (d, bucket) = setup();
    let a = CatalogCache::new(&d.path().join("a"), "r").unwrap();
    drop(Catalog::open(&a.first_file(), true).unwrap());
    a.publish_first(&bucket, &a.first_file()).unwrap();
    let breaking = FaultBackend::new(std::sync::Arc::new(bucket), i64::MAX);
    breaking.break_bodies(fetch::ATTEMPTS - 1);
    let b = CatalogCache::new(&d.path().join("b"), "r").unwrap();
    assert_eq!(clusters(&b.current(&breaking).unwrap()), 0);
    breaking.break_bodies(fetch::ATTEMPTS);
    let c = CatalogCache::new(&d.path().join("c"), "r").unwrap();
    let e = c.current(&breaking).unwrap_err().to_string();
    assert!(
        e.contains(&keys::catalog_snapshot(1)) && e.contains("connection reset"),
        "{e}"
    );
    for host in ["a", "b", "c"] {
        assert_nothing_left(&d.path().join(host));
    }
}
