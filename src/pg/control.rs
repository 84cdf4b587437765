//! Reading `global/pg_control` and recognising a data directory.
//!
//! Only the first field of `ControlFileData`, the 64-bit system identifier, has
//! the same offset in every PostgreSQL version; everything else pgstrata needs
//! (block size, WAL segment size, checksums) it asks the running server.

use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// The system identifier recorded in a data directory's `global/pg_control`.
pub(crate) fn system_identifier(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).at(&path)?;
    if bytes.len() < 8 {
        return Err(Error::corrupt(
            path.display().to_string(),
            "shorter than a control file",
        ));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[..8]);
    Ok(u64::from_le_bytes(id))
}

/// The timeline of the latest checkpoint (on a standby, restartpoint)
/// recorded in `global/pg_control`: `checkPointCopy.ThisTimeLineID`, at the
/// same offset in every supported major (after the system identifier,
/// versions, state, time and the checkpoint's LSN, then the redo LSN). Read
/// from the file rather than with `pg_control_checkpoint()`, which only
/// superusers may call by default.
pub(crate) fn checkpoint_timeline(pgdata: &Path) -> Result<u32> {
    const THIS_TIMELINE: usize = 48;
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).at(&path)?;
    let t = bytes
        .get(THIS_TIMELINE..THIS_TIMELINE + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .filter(|t| *t >= 1)
        .ok_or_else(|| {
            Error::corrupt(
                path.display().to_string(),
                "no checkpoint timeline where every supported major keeps it",
            )
        })?;
    Ok(t)
}

/// The major version in `PG_VERSION` (e.g. 15).
pub(crate) fn major_version(pgdata: &Path) -> Result<u32> {
    let path = pgdata.join("PG_VERSION");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(format!(
                "{} is not a PostgreSQL data directory (no PG_VERSION)",
                pgdata.display()
            ))
        } else {
            Error::io(&path, e)
        }
    })?;
    let v = text.trim();
    // "9.6" style versions have a dot; 10+ are plain integers.
    let major = v.split('.').next().unwrap_or("");
    major.parse().map_err(|_| {
        Error::corrupt(
            path.display().to_string(),
            format!("unexpected version {v:?}"),
        )
    })
}

/// Check that `pgdata` looks like a PostgreSQL data directory.
pub(crate) fn require_data_directory(pgdata: &Path) -> Result<()> {
    major_version(pgdata)?;
    let control = pgdata.join("global/pg_control");
    if !control.is_file() {
        return Err(Error::invalid(format!(
            "{} is not a PostgreSQL data directory (no global/pg_control)",
            pgdata.display()
        )));
    }
    Ok(())
}
