//! The marker of a restore in progress, so that a restore that was killed
//! (or crashed, or failed part-way through a delta) can be finished.
//!
//! Invariants:
//! - [`begin`] writes [`MARKER`] into the target, fsynced with its
//!   directory, before anything else is written there; [`finish`] removes it
//!   as the very last step, after apply's final sync. A target holding it
//!   was left half-written by pgstrata: rerunning the restore finishes it as
//!   a delta restore, and a delta accepts it even without `PG_VERSION` or
//!   `global/pg_control`.
//! - While the marker is there, PostgreSQL cannot start the target as if it
//!   were consistent: after the marker is durable, [`begin`] removes
//!   `backup_label`, the signal files and, for a delta, `global/pg_control`
//!   (a stopped copy's own control file would let the server start on a
//!   mix of old and new files). Apply writes them again, at its end.
//! - The marker is never part of a backup (`pg::datadir` excludes it) and a
//!   delta restore does not remove it as a stray.

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

use super::beneath::Root;
use super::RestorePlan;

/// The marker's name, at the top of the target.
pub(super) use crate::pg::datadir::RESTORE_MARKER as MARKER;

/// What the marker says: the restore that was under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marker {
    pub backup: String,
    pub system_id: u64,
}

/// The marker in `target`, if there is one. A marker that cannot be read is
/// an error naming it: guessing could rewrite another cluster's copy.
pub(super) fn read(target: &Path) -> Result<Option<Marker>> {
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
pub(super) fn begin(plan: &RestorePlan) -> Result<bool> {
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
    // Beneath the target like everything else a restore writes: a link
    // planted at one of these names (or at `global`) is refused, never
    // followed.
    let r = Root::open(root)?;
    let text = format!(
        "pgstrata restore in progress: PostgreSQL must not start here; run the restore \
         again to finish it\nbackup {}\nsystem_identifier {}\n",
        plan.backup.id, plan.system_id
    );
    r.write_durably(Path::new(MARKER), text.as_bytes(), 0o600)?;
    sync_root(&r, "")?;
    let mut startable = vec!["backup_label", "recovery.signal", "standby.signal"];
    if plan.delta {
        // A link planted at `global` goes itself (the layout makes the
        // directory again); what it leads to is left alone.
        let global = rustix::fs::statat(r.fd(), "global", rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        if global.is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
        }) {
            r.remove(Path::new("global"))?;
        }
        startable.push("global/pg_control");
    }
    let mut removed = false;
    for s in startable {
        removed |= remove_beneath(&r, s)?;
    }
    if removed {
        sync_root(&r, "")?;
        sync_root(&r, "global").or_else(|e| match &e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })?;
    }
    Ok(created)
}

/// Remove `rest` beneath `r`; false if it (or its directory) is missing.
fn remove_beneath(r: &Root, rest: &str) -> Result<bool> {
    match r.remove(Path::new(rest)) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(false),
        other => other,
    }
}

/// fsync the directory `rest` beneath `r`.
fn sync_root(r: &Root, rest: &str) -> Result<()> {
    let d = r.dir(Path::new(rest))?;
    rustix::fs::fsync(&d).map_err(|e| Error::io(r.shown(Path::new(rest)), e.into()))
}

/// The restore is complete and durable: remove the marker, durably.
pub(super) fn finish(plan: &RestorePlan) -> Result<()> {
    let r = Root::open(&plan.target)?;
    remove_beneath(&r, MARKER)?;
    sync_root(&r, "")
}

/// A fresh restore failed and apply emptied the target: remove the
/// directory too when [`begin`] created it.
pub(super) fn undo(plan: &RestorePlan, created: bool) {
    if let Ok(r) = Root::open(&plan.target) {
        let _ = remove_beneath(&r, MARKER);
    }
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
