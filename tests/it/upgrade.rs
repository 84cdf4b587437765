//! Major upgrades: a cluster upgraded from 16 to 17 continues in the same
//! repository under the same name, after an explicit `pgstrata upgrade`.
//!
//! No `pg_upgrade` of 17 is to be had from the package registries here (the
//! server packages hold initdb, pg_ctl and postgres only), so
//! a new PostgreSQL 17 cluster loaded with the 16 cluster's data
//! stands in: the repository sees exactly what it sees after pg_upgrade, a
//! new system identifier and a new major under the same cluster name.

use crate::harness::*;

fn copy_table(from: &Cluster, to: &Cluster, table: &str, ddl: &str) {
    to.exec(ddl);
    let mut src = from.client();
    let mut dst = to.client();
    let mut reader = src
        .copy_out(&format!("COPY {table} TO STDOUT") as &str)
        .unwrap();
    let mut writer = dst
        .copy_in(&format!("COPY {table} FROM STDIN") as &str)
        .unwrap();
    std::io::copy(&mut reader, &mut writer).unwrap();
    writer.finish().unwrap();
}

#[test]
fn a_cluster_upgraded_from_16_to_17_continues_in_the_repository() {
    let (b16, b17) = (pg_bindir_for(16), pg_bindir_for(17));
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let mut old = Cluster::new(
        &s,
        "pg16",
        ClusterOpts {
            archive_to: Some(&repo),
            bindir: Some(&b16),
            ..Default::default()
        },
    );
    let ddl = "CREATE TABLE acct (id int PRIMARY KEY, v text)";
    old.exec(ddl);
    old.exec("INSERT INTO acct SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    old.backup_ok(&repo, &["--type", "full"]);
    old.exec("UPDATE acct SET v = 'changed' WHERE id % 10 = 0");
    old.backup_ok(&repo, &[]);
    old.switch_wal_and_wait(&repo);
    let at_16 = old.table_hashes();

    // The "upgraded" cluster: PostgreSQL 17, the same data, a new identity.
    let new = Cluster::new(
        &s,
        "pg17",
        ClusterOpts {
            archive_to: Some(&repo),
            bindir: Some(&b17),
            ..Default::default()
        },
    );
    copy_table(&old, &new, "acct", ddl);
    old.stop();
    assert_eq!(new.table_hashes(), at_16);

    // Never silently: backups are refused until `pgstrata upgrade`.
    let o = new.backup(&repo, &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("pgstrata upgrade"), "{e}");
    let out = pgstrata_ok(&[
        "--repo",
        repo.arg(),
        "upgrade",
        "--pgdata",
        new.pgdata.to_str().unwrap(),
    ]);
    assert!(
        out.contains("PostgreSQL 17") && out.contains("history entry 2"),
        "{out}"
    );

    // The first backup after the upgrade is a full, whatever was asked.
    let o = new.backup(&repo, &["--type", "incr"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("took a full backup"), "{e}");
    new.exec("UPDATE acct SET v = 'after upgrade' WHERE id % 7 = 0");
    new.backup_ok(&repo, &[]);
    new.switch_wal_and_wait(&repo);
    let at_17 = new.table_hashes();

    // info shows the history and each backup's major.
    let info = repo.info_json();
    let c = &info["clusters"][0];
    let history = c["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{c}");
    assert_eq!(history[0]["pg_version"], 16);
    assert_eq!(history[1]["pg_version"], 17);
    let majors: Vec<u64> = c["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["pg_version"].as_u64().unwrap())
        .collect();
    assert_eq!(majors, [16, 16, 17, 17]);
    let ids: Vec<String> = c["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    let text = pgstrata_ok(&["--repo", repo.arg(), "info"]);
    assert!(text.contains("history 1: PostgreSQL 16"), "{text}");

    // The old major's backups still restore, from their own WAL, with the
    // old major's binaries.
    let mut r16 = restore(&s, &repo, "r16", &["--set", &ids[1]]);
    r16.bindir = b16.clone();
    r16.start_ok();
    r16.wait_for_consistency();
    assert_eq!(r16.table_hashes(), at_16);
    r16.stop();
    let mut r17 = restore(&s, &repo, "r17", &[]);
    r17.bindir = b17.clone();
    r17.start_ok();
    r17.wait_for_consistency();
    assert_eq!(r17.table_hashes(), at_17);
    r17.stop();
    pgstrata_ok(&["--repo", repo.arg(), "verify"]);

    // Retention expires across the history: the 16 backups and their WAL go,
    // the 17 ones still restore.
    pgstrata_ok(&["--repo", repo.arg(), "expire", "--retain-full", "1"]);
    let left: Vec<u64> = repo
        .backups()
        .iter()
        .map(|b| b["pg_version"].as_u64().unwrap())
        .collect();
    assert_eq!(left, [17, 17]);
    assert!(repo.open().wal_names("main").unwrap().is_empty());
    pgstrata_ok(&["--repo", repo.arg(), "verify"]);
    let mut again = restore(&s, &repo, "again", &[]);
    again.bindir = b17;
    again.start_ok();
    again.wait_for_consistency();
    assert_eq!(again.table_hashes(), at_17);
}
