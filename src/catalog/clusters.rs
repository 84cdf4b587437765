//! Clusters and their history of identities.
//!
//! A cluster name is bound to one system identifier and major version at a
//! time (invariant 5). `pg_upgrade` gives the cluster a new identity; after
//! an explicit `pgstrata upgrade` it continues under the same name as a new
//! history entry. Older entries stay: their backups and WAL still restore.

use rusqlite::{params, OptionalExtension, Row};

use rusqlite::Connection;

use super::{ClusterRow, HistoryRow};
use crate::error::{Error, Hint, Result, Setting, SqlContext};
use crate::util::now_us;

/// A system identifier stored as decimal text (it may exceed i64).
fn system_id(r: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let sid: String = r.get(i)?;
    sid.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("bad system identifier {sid:?}").into(),
        )
    })
}

/// The clusters and their identities.
pub struct Clusters<'a> {
    pub(super) conn: &'a Connection,
}

impl Clusters<'_> {
    pub fn get(&self, name: &str) -> Result<Option<ClusterRow>> {
        self.conn
            .query_row(
                "SELECT id, name, system_id, pg_version, history FROM cluster WHERE name = ?1",
                [name],
                |r| {
                    Ok(ClusterRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        system_id: system_id(r, 2)?,
                        pg_version: r.get(3)?,
                        history: r.get(4)?,
                    })
                },
            )
            .optional()
            .ctx_with(|| format!("the row of cluster {name:?}"))
    }

    pub fn list(&self) -> Result<Vec<ClusterRow>> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM cluster ORDER BY name")
            .ctx("clusters")?;
        let names = st
            .query_map([], |r| r.get::<_, String>(0))
            .ctx("clusters")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("clusters")?;
        let mut out = Vec::new();
        for n in names {
            if let Some(c) = self.get(&n)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The cluster bound to `system_id` under another name, if any.
    pub fn of_system(&self, system_id: u64) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT c.name FROM cluster_history h JOIN cluster c ON c.id = h.cluster_id \
                 WHERE h.system_id = ?1 ORDER BY h.seq DESC LIMIT 1",
                [system_id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .ctx("cluster of a system identifier")
    }

    /// Bind `name` to a system identifier and major version, or check that it
    /// already is bound to these (invariant 5: one cluster, one identity).
    pub fn bind(&self, name: &str, system_id: u64, pg_version: u32) -> Result<ClusterRow> {
        if let Some(c) = self.get(name)? {
            c.check_identity(system_id, pg_version)?;
            return Ok(c);
        }
        // A typo in a cluster name must not silently start a second history of a
        // cluster the repository already knows under another name.
        if let Some(other) = self.of_system(system_id)? {
            return Err(Error::refused(format!(
                "system identifier {system_id} already belongs to cluster {other:?} in this \
                 repository (refusing to create cluster {name:?})"
            ))
            .hint(Hint::give(Setting::Cluster, other)));
        }
        let now = now_us();
        let tx = self.conn.unchecked_transaction().ctx("bind cluster")?;
        tx.execute(
            "INSERT OR IGNORE INTO cluster (name, system_id, pg_version, created_at, history) \
             VALUES (?1, ?2, ?3, ?4, 1)",
            params![name, system_id.to_string(), pg_version, now],
        )
        .ctx("bind cluster")?;
        tx.execute(
            "INSERT OR IGNORE INTO cluster_history (cluster_id, seq, system_id, pg_version, since) \
             SELECT id, 1, system_id, pg_version, created_at FROM cluster WHERE name = ?1",
            [name],
        )
        .ctx("bind cluster")?;
        tx.commit().ctx("bind cluster")?;
        let c = self
            .get(name)?
            .ok_or_else(|| Error::corrupt("catalog", "cluster row vanished"))?;
        c.check_identity(system_id, pg_version)?;
        Ok(c)
    }

    /// Continue cluster `name` under a new identity (after `pg_upgrade`), as
    /// a new history entry, in one transaction.
    pub fn upgrade(&self, name: &str, system_id: u64, pg_version: u32) -> Result<ClusterRow> {
        let c = self.get(name)?.ok_or_else(|| {
            Error::NotFound(format!(
                "cluster {name:?} is not in this repository: nothing to upgrade (a new \
                 cluster is bound by its first backup or WAL segment)"
            ))
        })?;
        if c.system_id == system_id && c.pg_version == pg_version {
            return Err(Error::refused(format!(
                "cluster {name:?} is already PostgreSQL {pg_version} with system identifier \
                 {system_id}: nothing to upgrade"
            )));
        }
        if pg_version < c.pg_version {
            return Err(Error::refused(format!(
                "cluster {name:?} is PostgreSQL {}; this data directory is {pg_version}: \
                 pg_upgrade only goes to a newer major",
                c.pg_version
            )));
        }
        if let Some(other) = self.of_system(system_id)? {
            return Err(Error::refused(format!(
                "system identifier {system_id} already belongs to cluster {other:?} in this \
                 repository"
            )));
        }
        let seq = c.history + 1;
        let tx = self.conn.unchecked_transaction().ctx("upgrade cluster")?;
        tx.execute(
            "INSERT INTO cluster_history (cluster_id, seq, system_id, pg_version, since) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.id, seq, system_id.to_string(), pg_version, now_us()],
        )
        .ctx("upgrade cluster")?;
        tx.execute(
            "UPDATE cluster SET system_id = ?2, pg_version = ?3, history = ?4 WHERE id = ?1",
            params![c.id, system_id.to_string(), pg_version, seq],
        )
        .ctx("upgrade cluster")?;
        tx.commit().ctx("upgrade cluster")?;
        self.get(name)?
            .ok_or_else(|| Error::corrupt("catalog", "cluster row vanished"))
    }

    /// A cluster's identities, oldest first.
    pub fn histories(&self, cluster_id: i64) -> Result<Vec<HistoryRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, system_id, pg_version, since FROM cluster_history \
                 WHERE cluster_id = ?1 ORDER BY seq",
            )
            .ctx("cluster history")?;
        let rows = st
            .query_map([cluster_id], |r| {
                Ok(HistoryRow {
                    seq: r.get(0)?,
                    system_id: system_id(r, 1)?,
                    pg_version: r.get(2)?,
                    since: r.get(3)?,
                })
            })
            .ctx("cluster history")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("a cluster history row")?;
        Ok(rows)
    }

    /// Rebuild history entry `seq` of cluster `name` from a manifest copy
    /// (for `repair`): create the cluster or the entry, or check that the
    /// entry has this identity. The newest entry becomes the current one.
    pub fn restore_history(
        &self,
        name: &str,
        seq: u32,
        system_id: u64,
        pg_version: u32,
        since: i64,
    ) -> Result<ClusterRow> {
        let cluster = match self.get(name)? {
            Some(c) => c,
            None => {
                self.conn
                    .execute(
                        "INSERT INTO cluster (name, system_id, pg_version, created_at, history) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![name, system_id.to_string(), pg_version, since, seq],
                    )
                    .ctx("rebuild cluster")?;
                self.get(name)?
                    .ok_or_else(|| Error::corrupt("catalog", "cluster row vanished"))?
            }
        };
        if let Some(h) = self
            .histories(cluster.id)?
            .into_iter()
            .find(|h| h.seq == seq)
        {
            if h.system_id != system_id || h.pg_version != pg_version {
                return Err(Error::corrupt(
                    format!("cluster {name:?}"),
                    format!(
                        "manifest copies disagree on history entry {seq}: system identifier \
                         {} and {system_id}",
                        h.system_id
                    ),
                ));
            }
        }
        self.ensure_history(&cluster, seq, system_id, pg_version, since)?;
        self.get(name)?
            .ok_or_else(|| Error::corrupt("catalog", "cluster row vanished"))
    }

    fn ensure_history(
        &self,
        cluster: &ClusterRow,
        seq: u32,
        system_id: u64,
        pg_version: u32,
        since: i64,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO cluster_history (cluster_id, seq, system_id, pg_version, \
                 since) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![cluster.id, seq, system_id.to_string(), pg_version, since],
            )
            .ctx("cluster history")?;
        if seq > cluster.history {
            self.conn
                .execute(
                    "UPDATE cluster SET system_id = ?2, pg_version = ?3, history = ?4 \
                     WHERE id = ?1 AND history < ?4",
                    params![cluster.id, system_id.to_string(), pg_version, seq],
                )
                .ctx("cluster history")?;
        }
        Ok(())
    }
}

impl ClusterRow {
    /// Invariant 5: a cluster name stays bound to one system identifier and
    /// one major version (until an explicit `pgstrata upgrade`).
    pub fn check_identity(&self, system_id: u64, pg_version: u32) -> Result<()> {
        if self.system_id != system_id {
            return Err(Error::refused(format!(
                "cluster {:?} in this repository has system identifier {}, but this one has {}: \
                 it is another PostgreSQL cluster, or this cluster was upgraded with pg_upgrade",
                self.name, self.system_id, system_id
            ))
            .hint(Hint::OtherClusterOrUpgrade));
        }
        if self.pg_version != pg_version {
            return Err(Error::refused(format!(
                "cluster {:?} in this repository is PostgreSQL {}, but this one is {}",
                self.name, self.pg_version, pg_version
            ))
            .hint(Hint::Upgrade));
        }
        Ok(())
    }
}
