//! Backups taken from a streaming standby: backup mode runs on the standby
//! and its files are copied, so the primary does no backup I/O.
//!
//! What differs from a primary backup, and why:
//! - The standby must be streaming (a WAL receiver) and replay no more than
//!   `standby_max_lag` behind: behind the primary's current WAL
//!   position when `primary_dbname` is given, else behind what it has
//!   received. A backup of a lagging standby is an old backup.
//! - The standby does not archive: its WAL reaches the repository through
//!   the primary's `archive_command`. `pg_backup_stop` on a standby does not
//!   switch WAL, so the segment holding the stop position completes only
//!   when the primary switches: with `primary_dbname` pgstrata asks the
//!   primary to (`pg_switch_wal()`, its only use of that connection besides
//!   checks); without it, the primary's `archive_timeout` bounds the wait.
//! - `pg_control` is copied last (as always): for a standby backup its
//!   minimum recovery point is where recovery of the copy becomes consistent
//!   (backup_label says `BACKUP FROM: standby`), and it is not past the stop
//!   position whose WAL the backup waits for.

use crate::error::{Error, Result, Setting};
use crate::pg::conn::Server;
use crate::pg::Lsn;
use crate::util::human;

/// The primary, when the backup may talk to it.
pub(super) struct Standby {
    primary: Option<Server>,
}

fn lsn(s: &mut Server, sql: &str) -> Result<Option<Lsn>> {
    let row = s
        .client()
        .query_one(sql, &[])
        .map_err(|e| Error::pg(format!("query failed: {sql}"), e))?;
    row.get::<_, Option<String>>(0)
        .map(|t| t.parse())
        .transpose()
}

impl Standby {
    /// Check that `standby` may be backed up: streaming, of the same cluster
    /// as the primary (when given), and not lagging beyond `max_lag` bytes.
    pub(super) fn check(
        standby: &mut Server,
        primary_dbname: Option<&str>,
        max_lag: u64,
    ) -> Result<Self> {
        let mut primary = primary_dbname
            .map(|d| Server::connect(Some(d)))
            .transpose()?;
        if let Some(p) = &primary {
            if p.info.in_recovery {
                return Err(Error::setting(
                    Setting::PrimaryDbname,
                    "reaches a server in recovery, not the primary",
                ));
            }
            if p.info.system_id != standby.info.system_id {
                return Err(Error::refused(format!(
                    "the standby (system identifier {}) does not replay the primary given as \
                     primary-dbname (system identifier {})",
                    standby.info.system_id, p.info.system_id
                )));
            }
        }
        let status = standby
            .client()
            .query_one(
                "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')",
                &[],
            )
            .map_err(|e| Error::pg("cannot read the standby's WAL receiver", e))?
            .get::<_, String>(0);
        if status != "streaming" {
            return Err(Error::refused(format!(
                "the server is a standby that is not streaming from a primary (WAL receiver: \
                 {status}): pgstrata backs up streaming standbys only"
            )));
        }
        let replay = lsn(standby, "SELECT pg_last_wal_replay_lsn()::text")?.unwrap_or(Lsn(0));
        let (ahead, against) = match primary.as_mut() {
            Some(p) => (
                lsn(p, "SELECT pg_current_wal_lsn()::text")?,
                "the primary's current WAL position",
            ),
            None => (
                lsn(standby, "SELECT pg_last_wal_receive_lsn()::text")?,
                "the WAL it has received",
            ),
        };
        let lag = ahead.map_or(0, |a| a.0.saturating_sub(replay.0));
        if lag > max_lag {
            return Err(Error::refused(format!(
                "the standby's replay ({replay}) is {} behind {against}, more than \
                 standby-max-lag-mib allows ({}): let it catch up, or back up the primary",
                human(lag),
                human(max_lag)
            )));
        }
        tracing::info!(
            "standby replay at {replay}, {} behind {against}",
            human(lag)
        );
        let paused = standby
            .client()
            .query_one("SELECT pg_is_wal_replay_paused()", &[])
            .map_err(|e| Error::pg("cannot ask whether the standby's replay is paused", e))?
            .get::<_, bool>(0);
        if paused {
            // Valid, but of the paused moment: its lag only grows, and only
            // the limit above refuses it.
            tracing::warn!(
                "the standby's replay is paused at {replay}: this backup is of that moment, \
                 not of the primary's present (pg_wal_replay_resume() resumes it)"
            );
        }
        Ok(Standby { primary })
    }

    /// After backup mode stopped on the standby: have the primary complete
    /// the WAL segment in progress, so that it is archived now.
    pub(super) fn complete_segment(&mut self) -> Result<()> {
        if let Some(p) = self.primary.as_mut() {
            let done = p.switch_wal()?;
            tracing::info!("the primary switched WAL after {done}");
        }
        Ok(())
    }

    /// What to add to a timeout waiting for the backup's WAL.
    pub(super) fn wal_hint(&self) -> &'static str {
        match self.primary {
            Some(_) => "",
            None => {
                " This backup was taken from a standby: its last WAL segment is archived by the \
                 primary once the primary switches segments (archive_timeout on the primary), or \
                 give primary-dbname so that pgstrata asks the primary to switch."
            }
        }
    }
}
