//! `check --pgdata DIR`: prove the live setup works before a backup needs it.
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
use std::time::{Duration, Instant};

use crate::archive;
use crate::error::{Error, IoContext, Result};
use crate::pg::conn::Server;
use crate::pg::control;
use crate::repo::{check_cluster_name, Repository};

#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub pgdata: PathBuf,
    pub dbname: Option<String>,
    pub archive_timeout: Duration,
}

impl CheckOptions {
    pub fn new(pgdata: impl Into<PathBuf>) -> Self {
        CheckOptions {
            pgdata: pgdata.into(),
            dbname: None,
            archive_timeout: Duration::from_secs(60),
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
    control::require_data_directory(&opts.pgdata)?;
    let pgdata = opts.pgdata.canonicalize().at(&opts.pgdata)?;
    let mut server = Server::connect(opts.dbname.as_deref())?;
    let info = server.info.clone();
    if info.in_recovery {
        return Err(Error::refused(
            "the server is a standby; pgstrata backs up (and checks) primaries only",
        ));
    }
    let sysid = control::system_identifier(&pgdata)?;
    if sysid != info.system_id {
        return Err(Error::refused(format!(
            "{} belongs to the cluster with system identifier {sysid}, but the server \
             connected to is {} (data directory {}): check --pgdata and the connection",
            pgdata.display(),
            info.system_id,
            info.data_directory
        )));
    }
    // A copy of the data directory has the same identifier: compare paths too.
    let server_dir = PathBuf::from(&info.data_directory);
    let server_dir = server_dir.canonicalize().unwrap_or(server_dir);
    if server_dir != pgdata {
        return Err(Error::refused(format!(
            "the server's data_directory is {}, not {}: --pgdata names a copy of this \
             cluster, or the connection reaches another server",
            server_dir.display(),
            pgdata.display()
        )));
    }
    let cat = repo.catalog()?;
    let bound = cat.cluster(cluster)?;
    if let Some(c) = &bound {
        if c.system_id != info.system_id {
            return Err(Error::refused(format!(
                "cluster {cluster:?} in this repository has system identifier {}, but this \
                 server has {}: it is another PostgreSQL cluster (use another --cluster name)",
                c.system_id, info.system_id
            )));
        }
        if c.pg_version != info.major {
            return Err(Error::refused(format!(
                "cluster {cluster:?} in this repository is PostgreSQL {}, but this server is \
                 {}: use another --cluster name for a new major version",
                c.pg_version, info.major
            )));
        }
    }
    drop(cat);
    let wanted = format!(
        "archive_command = 'pgstrata --repo {} --cluster {cluster} archive-push %p'",
        repo.root().display()
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
        if archive::has(repo, cluster, &segment)? {
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
