//! `check`: prove the live setup works before a backup needs it.
//!
//! In order, stopping at the first failure with an error that names the
//! setting to fix: the data directory is one; the server answers; it is a
//! primary; its system identifier matches the data directory's `pg_control`
//! (and the server's `data_directory` is that directory); the repository's
//! cluster of that name, if bound, has the same identifier and major version;
//! `archive_mode` is on; and a forced WAL switch's segment reaches this
//! repository within the timeout. Writes nothing to the repository itself;
//! the switched segment is archived by the server's own `archive_command`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::pg::conn::Server;
use crate::repo::{archive_command_setting, Invocation};
use crate::repo::{check_cluster_name, Repository};

#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub pgdata: PathBuf,
    pub dbname: Option<String>,
    pub archive_timeout: Duration,
    /// How `archive_command` calls pgstrata, for the message that says
    /// what to set.
    pub invocation: Option<Arc<dyn Invocation>>,
}

impl CheckOptions {
    pub fn new(pgdata: impl Into<PathBuf>) -> Self {
        CheckOptions {
            pgdata: pgdata.into(),
            dbname: None,
            archive_timeout: Duration::from_secs(60),
            invocation: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CheckReport {
    pub system_id: u64,
    pub pg_version: u32,
    /// The repository already had this cluster bound (else a first backup or
    /// segment will bind it).
    pub cluster_bound: bool,
    /// The segment the check switched to and saw arrive.
    pub segment: String,
    pub archive_wait: Duration,
}

pub fn run(repo: &Repository, cluster: &str, opts: &CheckOptions) -> Result<CheckReport> {
    check_cluster_name(cluster)?;
    let (mut server, _) = Server::connect_for(opts.dbname.as_deref(), &opts.pgdata, false)?;
    let info = server.info.clone();
    let cat = repo.catalog()?;
    let bound = cat.clusters().get(cluster)?;
    let wal_id = bound
        .as_ref()
        .map(|c| c.wal_id())
        .unwrap_or_else(|| cluster.to_string());
    if let Some(c) = &bound {
        c.check_identity(info.system_id, info.major)?;
    }
    drop(cat);
    let wanted = archive_command_setting(
        opts.invocation.as_deref(),
        cluster,
        repo.passphrase_source(),
    );
    if info.archive_mode == "off" {
        return Err(Error::refused(format!(
            "archive_mode is off: set archive_mode = on and {wanted}, then restart PostgreSQL"
        )));
    }
    // A switch with no WAL since the last one switches nothing, and the
    // segment named would be an old one: write a record first.
    server
        .client()
        .query_one(
            "SELECT pg_logical_emit_message(false, 'pgstrata', 'check')::text",
            &[],
        )
        .map_err(|e| Error::pg("cannot write a WAL record for the check", e))?;
    let segment = server.switch_wal()?;
    let started = Instant::now();
    let deadline = started + opts.archive_timeout;
    loop {
        if repo.wal_has(&wal_id, &segment)? {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "WAL segment {segment} was not archived to this repository within {} s after \
                 a WAL switch: archive_command does not reach it (now: {:?}); set {wanted} \
                 and check the server log",
                opts.archive_timeout.as_secs(),
                info.archive_command
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(CheckReport {
        system_id: info.system_id,
        pg_version: info.major,
        cluster_bound: bound.is_some(),
        segment,
        archive_wait: started.elapsed(),
    })
}
