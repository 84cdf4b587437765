//! Backups taken from a streaming standby, on a real primary and a real
//! standby: full and incr restore exactly, PITR from them, and the
//! refusals (another cluster's standby, a lagging standby).

use std::time::Duration;

use crate::harness::*;

/// A standby of `primary`, restored from `repo` and streaming.
fn streaming_standby(s: &Scratch, repo: &Repo, primary: &Cluster, name: &str) -> Cluster {
    let ci = format!(
        "host={} user=postgres application_name={name}",
        primary.sockdir.display()
    );
    let mut standby = restore(
        s,
        repo,
        name,
        &["--type", "standby", "--primary-conninfo", &ci],
    );
    standby.start_ok();
    for _ in 0..1800 {
        let st = std::panic::catch_unwind(|| {
            standby.query_one("SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')")
        });
        if st.is_ok_and(|v| v == "streaming") {
            return standby;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} never streamed; log:\n{}", standby.log_text());
}

/// Wait until the standby has replayed everything the primary wrote.
fn caught_up(primary: &Cluster, standby: &Cluster) {
    let target = primary.query_one("SELECT pg_current_wal_lsn()::text");
    for _ in 0..1800 {
        let ok = standby.query_one(&format!(
            "SELECT (pg_last_wal_replay_lsn() >= '{target}'::pg_lsn)::text"
        ));
        if ok == "true" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the standby never replayed up to {target}");
}

fn backup_standby(
    standby: &Cluster,
    primary: &Cluster,
    repo: &Repo,
    extra: &[&str],
) -> std::process::Output {
    let pci = primary.conninfo();
    let mut args = vec!["--primary-dbname", pci.as_str()];
    args.extend_from_slice(extra);
    standby.backup(repo, &args)
}

fn newest_id(repo: &Repo) -> String {
    let b = repo.backups();
    b.last().unwrap()["id"].as_str().unwrap().to_string()
}

#[test]
fn full_and_incr_from_a_standby_restore_exactly_with_pitr() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let primary = Cluster::archiving(&s, "primary", &repo);
    load_sample(&primary, 5000);
    primary.backup_ok(&repo, &["--type", "full"]);
    let standby = streaming_standby(&s, &repo, &primary, "standby1");

    primary.exec("CREATE TABLE late AS SELECT g, md5(g::text) m FROM generate_series(1, 20000) g;");
    caught_up(&primary, &standby);
    let o = backup_standby(&standby, &primary, &repo, &["--type", "full"]);
    check(&o, "full backup from the standby");
    let full = newest_id(&repo);

    primary.exec(
        "UPDATE accounts SET balance = balance + 7 WHERE id % 5 = 0;
         INSERT INTO late SELECT g, 'x' FROM generate_series(20001, 25000) g;",
    );
    caught_up(&primary, &standby);
    let o = backup_standby(&standby, &primary, &repo, &["--type", "incr"]);
    check(&o, "incr backup from the standby");
    let incr = newest_id(&repo);
    let b = repo.backups();
    let incr_row = b.last().unwrap();
    assert_eq!(incr_row["type"], "incr");
    assert_eq!(incr_row["reference"].as_str(), Some(full.as_str()));
    assert_eq!(incr_row["from_standby"], true);
    assert_eq!(b[0]["from_standby"], false);

    primary.exec("INSERT INTO late VALUES (-1, 'before the point')");
    primary.exec("SELECT pg_create_restore_point('after_the_incr')");
    let at_point = primary.table_hashes();
    primary.exec("DROP TABLE late; DELETE FROM accounts WHERE id < 50;");
    let now = primary.table_hashes();
    primary.switch_wal_and_wait(&repo);

    let promote = ["--target-action", "promote"];
    let pitr = restore_matches(
        &s,
        &repo,
        "pitr",
        &[
            &["--set", &incr, "--target-name", "after_the_incr"][..],
            &promote,
        ]
        .concat(),
        &at_point,
    );
    pitr.amcheck();
    drop(pitr);
    restore_matches(&s, &repo, "from-incr", &["--set", &incr], &now);
    let mut c = restore(&s, &repo, "from-full", &["--set", &full]);
    let label = std::fs::read_to_string(c.pgdata.join("backup_label")).unwrap();
    assert!(label.contains("BACKUP FROM: standby"), "{label}");
    c.start_ok();
    c.wait_for_consistency();
    assert_eq!(c.table_hashes(), now);
}

#[test]
fn another_clusters_standby_and_a_lagging_standby_are_refused() {
    let s = Scratch::new();
    // The repository knows cluster "main" = primary one.
    let repo = Repo::new(&s);
    let one = Cluster::archiving(&s, "one", &repo);
    one.backup_ok(&repo, &["--type", "full"]);
    // Another cluster, with its own repository and a standby.
    let repo2 = Repo::named(&s, "repo2");
    let two = Cluster::archiving(&s, "two", &repo2);
    two.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g;");
    two.backup_ok(&repo2, &["--type", "full"]);
    let standby2 = streaming_standby(&s, &repo2, &two, "standby2");

    // The standby of cluster two, into the repository of cluster one.
    let o = standby2.backup(&repo, &["--type", "full"]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("system identifier"), "{e}");
    assert_eq!(repo.backups().len(), 1, "a refused backup left something");

    // Its own primary given as the primary of a standby of another cluster.
    let o = backup_standby(&standby2, &one, &repo2, &["--type", "full"]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("does not replay the primary"), "{e}");

    // A standby whose replay is paused while the primary writes on.
    standby2.exec("SELECT pg_wal_replay_pause()");
    two.exec("INSERT INTO t SELECT g FROM generate_series(1, 200000) g;");
    let o = backup_standby(
        &standby2,
        &two,
        &repo2,
        &["--type", "full", "--standby-max-lag-mib", "1"],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("behind") && e.contains("standby-max-lag-mib"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert_eq!(repo2.backups().len(), 1);
    // Within the limit it is backed up as of the paused moment, with a warning.
    let o = backup_standby(&standby2, &two, &repo2, &["--type", "full"]);
    check(&o, "backup of a paused standby");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("replay is paused"), "{e}");
    assert_eq!(repo2.backups().len(), 2);
    standby2.exec("SELECT pg_wal_replay_resume()");

    // --primary-dbname with a primary to back up is a mistake.
    let o = backup_standby(&two, &two, &repo2, &["--type", "full"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("--primary-dbname is for backups from a standby"));
}
