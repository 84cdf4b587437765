//! Manifest copies: each complete backup's manifest as an object, so that a
//! lost catalog can be rebuilt from the repository (`repair`).
//!
//! A copy lists the changes since the cluster's complete backup just before
//! it (its predecessor), or the whole manifest when it has none, so an
//! hourly incr's copy costs what changed, not a row per file. Invariant: a
//! delta copy's base is its current predecessor. `expire` keeps it so:
//! after the catalog forgets backups, every copy whose base went is
//! rewritten against its new predecessor, and only then are the expired
//! backups' copies deleted. A crash in between leaves copies that still
//! chain (through copies not yet deleted); the next `expire` finishes.

use super::Repository;
use crate::catalog::{BackupRow, Catalog};
use crate::error::Result;
use crate::format::keys;
use crate::format::manifest::{ClusterIdentity, Manifest, MANIFEST_VERSION};
use crate::store::WriteObject;

impl Repository {
    /// Store the copy of `row` (about to complete) against its predecessor
    /// and record that base. Returns the copy's size.
    pub fn put_manifest_copy(
        &self,
        cat: &Catalog,
        cluster: ClusterIdentity,
        row: &BackupRow,
    ) -> Result<u64> {
        let prev = cat.versions().predecessor(&row.id)?;
        let head = Manifest {
            format: MANIFEST_VERSION,
            backup: row.into(),
            files: Vec::new(),
            removed: cat.versions().removed_since(&row.id, prev.as_deref())?,
            page_errors: cat
                .backups()
                .page_errors(&row.id)?
                .iter()
                .map(Into::into)
                .collect(),
            prev,
            cluster,
        };
        let size = self.put_copy(cat, &row.id, &head)?;
        cat.versions()
            .set_copy_prev(&row.id, head.prev.as_deref())?;
        Ok(size)
    }

    /// Rewrite every copy whose base is no longer its predecessor. Returns
    /// how many were rewritten.
    pub fn rewrite_stale_copies(&self, cat: &Catalog) -> Result<u64> {
        let stale = cat.versions().stale_copies()?;
        for (cluster, id, pred) in &stale {
            let key = keys::manifest(cluster, id);
            let z = self
                .backend()
                .get(&key)?
                .ok_or_else(|| crate::error::Error::missing("manifest copy", &key))?;
            let mut m = Manifest::decode(&z, &key)?;
            m.format = MANIFEST_VERSION;
            m.prev = pred.clone();
            m.files = Vec::new();
            m.removed = cat.versions().removed_since(id, pred.as_deref())?;
            self.put_copy(cat, id, &m)?;
            cat.versions().set_copy_prev(id, pred.as_deref())?;
        }
        Ok(stale.len() as u64)
    }

    /// Store `head` with the changed rows since `head.prev`, streamed from
    /// the catalog through the compressor into the object (a copy of a
    /// cluster of many files is never in memory). Returns its size.
    fn put_copy(&self, cat: &Catalog, backup_id: &str, head: &Manifest) -> Result<u64> {
        let out = WriteObject(self.backend().writer()?);
        let out = head.encode_streamed(out, &mut |sink| {
            cat.versions()
                .for_each_changed(backup_id, head.prev.as_deref(), &mut |r| sink(&(&r).into()))
        })?;
        let size = out.0.written();
        out.0
            .finish(&keys::manifest(&head.cluster.name, backup_id))?;
        Ok(size)
    }
}
