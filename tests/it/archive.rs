//! archive-push / archive-get edge cases, through the binary as PostgreSQL
//! would call it.

use std::path::Path;

use crate::harness::*;

fn get(repo: &Repo, name: &str, dest: &Path) -> std::process::Output {
    pgstrata(&[
        "--repo",
        repo.arg(),
        "archive-get",
        name,
        dest.to_str().unwrap(),
    ])
}

fn push(repo: &Repo, path: &Path) -> std::process::Output {
    pgstrata(&["--repo", repo.arg(), "archive-push", path.to_str().unwrap()])
}

#[test]
fn push_get_edge_cases() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g;");
    let seg = src.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    src.switch_wal_and_wait(&repo);

    // archive-get writes the exact bytes, atomically, to DEST.
    let work = s.pg_dir("work");
    let fetched = work.join("fetched");
    check(&get(&repo, &seg, &fetched), "archive-get");
    let bytes = std::fs::read(&fetched).unwrap();
    assert_eq!(bytes.len(), 16 << 20);
    let leftovers: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");

    // An identical re-push succeeds.
    let again = work.join(&seg);
    std::fs::write(&again, &bytes).unwrap();
    check(&push(&repo, &again), "identical re-push");

    // Different content under the same name is refused, and the archive keeps the original.
    let mut other = bytes.clone();
    other[100_000] ^= 0xff;
    std::fs::write(&again, &other).unwrap();
    let o = push(&repo, &again);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different content"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    check(&get(&repo, &seg, &fetched), "archive-get after refusal");
    assert_eq!(std::fs::read(&fetched).unwrap(), bytes);

    // A missing segment: non-zero, quiet, DEST not created.
    let missing = work.join("missing");
    let o = get(&repo, "0000000100000000000000FF", &missing);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!missing.exists());

    // History files round-trip.
    let hist = work.join("00000002.history");
    let content = b"1\t0/3000000\tno recovery target specified\n";
    std::fs::write(&hist, content).unwrap();
    check(&push(&repo, &hist), "push history");
    let back = work.join("hist.back");
    check(&get(&repo, "00000002.history", &back), "get history");
    assert_eq!(std::fs::read(&back).unwrap(), content);

    // .partial and .backup files are archived too.
    let partial = work.join(format!("{seg}.partial"));
    std::fs::write(&partial, &bytes).unwrap();
    check(&push(&repo, &partial), "push partial");
    let names = repo.open().wal_names("main").unwrap();
    assert!(names.contains(&format!("{seg}.partial")), "{names:?}");

    // A real segment's bytes under the next segment's name: refused (its
    // first page says where it starts), nothing stored under that name.
    let n = u64::from_str_radix(&seg[16..24], 16).unwrap();
    let next = format!("{}{:08X}", &seg[..16], n + 1);
    let misnamed = work.join(&next);
    std::fs::write(&misnamed, &bytes).unwrap();
    let o = push(&repo, &misnamed);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("misnamed"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    let names = repo.open().wal_names("main").unwrap();
    assert!(!names.contains(&next), "{names:?}");

    // Malformed names are refused with a clear error, for push and get.
    let bad = work.join("not-a-wal-file");
    std::fs::write(&bad, b"x").unwrap();
    let o = push(&repo, &bad);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("malformed WAL file name"));
    let o = get(&repo, "../../etc/passwd", &work.join("x"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("malformed WAL file name"));
}

#[test]
fn segment_of_another_cluster_is_refused() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let a = Cluster::archiving(&s, "a", &repo);
    a.switch_wal_and_wait(&repo);
    // A second cluster archiving into its own repository gives us a foreign segment.
    let s2 = Scratch::new();
    let repo_b = Repo::new(&s2);
    let b = Cluster::new(
        &s2,
        "b",
        ClusterOpts {
            archive_to: Some(&repo_b),
            ..Default::default()
        },
    );
    b.exec("CREATE TABLE x AS SELECT 1");
    let seg = b.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    b.switch_wal_and_wait(&repo_b);
    let work = s.pg_dir("work");
    let foreign = work.join(&seg);
    check(
        &pgstrata(&[
            "--repo",
            repo_b.arg(),
            "archive-get",
            &seg,
            foreign.to_str().unwrap(),
        ]),
        "get from b",
    );
    let before = repo.open().wal_names("main").unwrap();
    let o = push(&repo, &foreign);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("system identifier"), "{err}");
    assert_eq!(repo.open().wal_names("main").unwrap(), before);
}

#[test]
fn push_with_a_mistyped_cluster_name_is_refused() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT 1 AS x");
    let seg = src.query_one("SELECT pg_walfile_name(pg_current_wal_lsn())");
    src.switch_wal_and_wait(&repo);
    let work = s.pg_dir("work");
    let file = work.join(&seg);
    check(&get(&repo, &seg, &file), "archive-get");
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "--cluster",
        "mian",
        "archive-push",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already belongs to cluster \"main\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    // Nothing was created under the mistyped name.
    let info = repo.info_json();
    let names: Vec<&str> = info["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["main"]);
    assert!(repo.open().wal_names("mian").unwrap().is_empty());
}
