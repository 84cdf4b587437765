//! `upgrade`: after `pg_upgrade`, continue a cluster in the same repository
//! under its name, as a new entry of its history (like pgBackRest's
//! `stanza-upgrade`).
//!
//! `pg_upgrade` gives the cluster a new system identifier and a new major.
//! Backups and archiving refuse the new identity until this runs: an
//! operator decides, never a silent rebinding. Older entries stay as they
//! are: their backups restore (with the old major's binaries) from their own
//! WAL archive (`wal/<name>/`, `wal/<name>~2/`, ...), and retention expires
//! across the whole history. The first backup after an upgrade is a full.

use std::path::Path;
use std::time::Duration;

use crate::catalog::HistoryRow;
use crate::error::{Error, Result};
use crate::pg::control;
use crate::repo::{check_cluster_name, Repository};

/// What the upgrade did.
#[derive(Clone, Debug)]
pub struct UpgradeReport {
    pub cluster: String,
    pub from: HistoryRow,
    pub to: HistoryRow,
}

/// Bind `cluster` to the identity of the data directory `pgdata` (its
/// `pg_control` and `PG_VERSION`; the server need not run).
pub fn run(
    repo: &Repository,
    cluster: &str,
    pgdata: &Path,
    lock_wait: Duration,
) -> Result<UpgradeReport> {
    check_cluster_name(cluster)?;
    control::require_data_directory(pgdata)?;
    let system_id = control::system_identifier(pgdata)?;
    let major = control::major_version(pgdata)?;
    let session = repo.begin_write("upgrade", lock_wait)?;
    let cat = repo.catalog()?;
    let before = cat.clusters().get(cluster)?;
    let after = cat.clusters().upgrade(cluster, system_id, major)?;
    let histories = cat.clusters().histories(after.id)?;
    let find = |seq: u32| histories.iter().find(|h| h.seq == seq).cloned();
    let (from, to) = match (before.and_then(|b| find(b.history)), find(after.history)) {
        (Some(f), Some(t)) => (f, t),
        _ => {
            return Err(Error::corrupt(
                format!("cluster {cluster:?}"),
                "its history entries are missing after the upgrade",
            ))
        }
    };
    drop(cat);
    session.commit()?;
    Ok(UpgradeReport {
        cluster: cluster.to_string(),
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::keys;
    use crate::repo::testkit::{content, fake_pgdata, fake_segment, Fixture, SYSTEM_ID};

    const NEW_ID: u64 = SYSTEM_ID + 1000;

    #[test]
    fn a_cluster_continues_under_its_new_identity() {
        let f = Fixture::new();
        let old = f.backup(1, &[("x", content(1, 3, 0))]);
        let pgdata = f.scratch("pg16");
        fake_pgdata(&pgdata, 16, NEW_ID);
        // Refused silently? No: backups and archiving say what to do.
        let cat = f.repo.catalog().unwrap();
        let e = cat.clusters().bind("main", NEW_ID, 16).unwrap_err();
        assert!(e.to_string().contains("the upgrade command"), "{e}");
        let seg = fake_segment(f.dir.path(), "000000010000000000000001", 0xD113, NEW_ID);
        let e = crate::commands::archive::push(&f.repo, "main", &seg, 3).unwrap_err();
        assert!(e.to_string().contains("the upgrade command"), "{e}");

        let r = run(&f.repo, "main", &pgdata, Duration::ZERO).unwrap();
        assert_eq!((r.from.seq, r.from.pg_version), (1, 15));
        assert_eq!((r.to.seq, r.to.system_id, r.to.pg_version), (2, NEW_ID, 16));
        let e = run(&f.repo, "main", &pgdata, Duration::ZERO).unwrap_err();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        let older = f.scratch("pg14");
        fake_pgdata(&older, 14, NEW_ID + 1);
        assert!(run(&f.repo, "main", &older, Duration::ZERO).is_err());

        // WAL goes where its identity says, old and new alike.
        crate::commands::archive::push(&f.repo, "main", &seg, 3).unwrap();
        assert!(f
            .repo
            .wal_has("main~2", "000000010000000000000001")
            .unwrap());
        let late = fake_segment(f.dir.path(), "000000010000000000000002", 0xD110, SYSTEM_ID);
        crate::commands::archive::push(&f.repo, "main", &late, 3).unwrap();
        assert!(f.repo.wal_has("main", "000000010000000000000002").unwrap());
        let foreign = fake_segment(f.dir.path(), "000000010000000000000003", 0xD113, 42);
        assert!(crate::commands::archive::push(&f.repo, "main", &foreign, 3).is_err());

        // A backup under the new identity; both restore with their own WAL.
        let new = f.backup(2, &[("x", content(2, 3, 0))]);
        let cat = f.repo.catalog().unwrap();
        assert_eq!(cat.backups().get(&new.id).unwrap().unwrap().history, 2);
        assert_eq!(cat.backups().get(&old.id).unwrap().unwrap().history, 1);
        let info = crate::commands::info::gather(&f.repo, None).unwrap();
        assert_eq!(info.clusters[0].history.len(), 2);
        assert_eq!(info.clusters[0].pg_version, 16);
        let mut o = crate::commands::restore::test_options(f.scratch("old"));
        o.set = Some(old.id.clone());
        let p = crate::commands::restore::plan(&f.repo, "main", &o).unwrap();
        assert!(
            p.recovery_conf.contains("history=1 "),
            "{}",
            p.recovery_conf
        );
        let p = crate::commands::restore::plan(
            &f.repo,
            "main",
            &crate::commands::restore::test_options(f.scratch("new")),
        )
        .unwrap();
        assert_eq!(p.backup.id, new.id);
        assert!(
            p.recovery_conf.contains("history=2 "),
            "{}",
            p.recovery_conf
        );
        let v =
            crate::commands::verify::run(&f.repo, &Default::default(), &crate::progress::Silent)
                .unwrap();
        assert!(v.is_ok(), "{:?}", v.problems);

        // Retention expires across the history: the old identity's backup
        // and all its WAL go.
        let mut eo =
            crate::commands::expire::ExpireOptions::new(crate::commands::expire::Retention {
                full: Some(1),
                ..Default::default()
            });
        eo.tmp_age = Duration::ZERO;
        let (plan, _) = crate::commands::expire::run(&f.repo, "main", &eo, false).unwrap();
        assert_eq!(plan.backups.len(), 1);
        assert!(f.repo.wal_names("main").unwrap().is_empty());
        assert!(!f.repo.wal_names("main~2").unwrap().is_empty());

        // A rebuilt catalog has the history and each backup's entry.
        std::fs::remove_file(f.repo.catalog_path().unwrap()).unwrap();
        crate::commands::repair::rebuild_catalog(&f.repo, Duration::ZERO, &crate::progress::Silent)
            .unwrap();
        let cat = f.repo.catalog().unwrap();
        let c = cat.clusters().get("main").unwrap().unwrap();
        assert_eq!((c.history, c.system_id, c.pg_version), (2, NEW_ID, 16));
        assert_eq!(cat.backups().get(&new.id).unwrap().unwrap().history, 2);
        assert!(keys::wal_id("main", c.history).ends_with("~2"));
    }
}
