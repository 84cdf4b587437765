//! The marker of a restore in progress, so that a restore that was killed
//! (or crashed, or failed part-way through a delta) can be finished.
//!
//! Invariants:
//! - [`begin`] writes [`MARKER`] into the target, fsynced with its
//!   directory, before anything else is written there; [`finish`] removes it
//!   as the very last step, after apply's final sync. A target holding it
//!   was left half-written by pgstrata: rerunning the restore finishes it as
//!   a delta restore, and `--delta` accepts it even without `PG_VERSION` or
//!   `global/pg_control`.
//! - While the marker is there, PostgreSQL cannot start the target as if it
//!   were consistent: after the marker is durable, [`begin`] removes
//!   `backup_label`, the signal files and, for a delta, `global/pg_control`
//!   (a stopped copy's own control file would let the server start on a
//!   mix of old and new files). Apply writes them again, at its end.
//! - The marker is never part of a backup (`pg::datadir` excludes it) and a
//!   delta restore does not remove it as a stray.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

use super::RestorePlan;

/// The marker's name, at the top of the target.
pub use crate::pg::datadir::RESTORE_MARKER as MARKER;

/// What the marker says: the restore that was under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub backup: String,
    pub system_id: u64,
}

/// The marker in `target`, if there is one. A marker that cannot be read is
/// an error naming it: guessing could rewrite another cluster's copy.
pub fn read(target: &Path) -> Result<Option<Marker>> {
    let p = target.join(MARKER);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
        Err(e) => return Err(Error::io(p, e)),
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    match (
        field("backup "),
        field("system_identifier ").and_then(|s| s.parse().ok()),
    ) {
        (Some(backup), Some(system_id)) => Ok(Some(Marker { backup, system_id })),
        _ => Err(Error::corrupt(
            p.display().to_string(),
            "not a pgstrata restore marker: remove it and the half-restored directory, then \
             restore again",
        )),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).at(dir)?.sync_all().at(dir)
}

/// Mark `plan.target` as being written by pgstrata. Returns whether the
/// target directory was created here (a failed fresh restore removes it
/// again).
pub fn begin(plan: &RestorePlan) -> Result<bool> {
    let root = &plan.target;
    let created = !root.exists();
    if created {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .at(root)?;
        if let Some(parent) = root.parent() {
            sync_dir(parent)?;
        }
    }
    let p = root.join(MARKER);
    let text = format!(
        "pgstrata restore in progress: PostgreSQL must not start here; run the restore \
         again to finish it\nbackup {}\nsystem_identifier {}\n",
        plan.backup.id, plan.system_id
    );
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&p)
        .at(&p)?;
    f.write_all(text.as_bytes()).at(&p)?;
    f.sync_all().at(&p)?;
    sync_dir(root)?;
    let mut startable: Vec<PathBuf> = ["backup_label", "recovery.signal", "standby.signal"]
        .iter()
        .map(|n| root.join(n))
        .collect();
    if plan.delta {
        startable.push(root.join("global/pg_control"));
    }
    let mut removed = false;
    for s in &startable {
        match fs::remove_file(s) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(s, e)),
        }
    }
    if removed {
        sync_dir(root)?;
        sync_dir(&root.join("global")).or_else(|e| match &e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })?;
    }
    Ok(created)
}

/// The restore is complete and durable: remove the marker, durably.
pub fn finish(plan: &RestorePlan) -> Result<()> {
    let p = plan.target.join(MARKER);
    fs::remove_file(&p).at(&p)?;
    sync_dir(&plan.target)
}

/// A fresh restore failed and apply emptied the target: remove the
/// directory too when [`begin`] created it.
pub fn undo(plan: &RestorePlan, created: bool) {
    let _ = fs::remove_file(plan.target.join(MARKER));
    if created {
        let _ = fs::remove_dir(&plan.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_and_a_foreign_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read(t.path()).unwrap(), None);
        assert_eq!(read(&t.path().join("missing")).unwrap(), None);
        fs::write(
            t.path().join(MARKER),
            "comment\nbackup 20261207-010101F\nsystem_identifier 42\n",
        )
        .unwrap();
        assert_eq!(
            read(t.path()).unwrap(),
            Some(Marker {
                backup: "20261207-010101F".into(),
                system_id: 42
            })
        );
        fs::write(t.path().join(MARKER), "junk").unwrap();
        let e = read(t.path()).unwrap_err();
        assert!(e.to_string().contains(MARKER), "{e}");
    }
}
