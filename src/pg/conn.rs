//! The connection to a running server and the backup-mode functions.
//!
//! Settings follow libpq: `dbname` may be a `key=value` string or a URI;
//! a `service=` (or `PGSERVICE`) fills what it leaves unset from
//! `pg_service.conf`, then `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`,
//! `PGAPPNAME`, `PGCONNECT_TIMEOUT`, then libpq's defaults (the user is the
//! operating-system user). The password comes from the string,
//! `PGPASSWORD` or the password file (see [`crate::pg::libpq`]). The session that starts
//! backup mode is held open until it stops: if it drops, PostgreSQL ends
//! backup mode by itself.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use postgres::{Client, Config};

use crate::error::{Error, IoContext, Result};
use crate::pg::{control, libpq, tls, version, Lsn};

/// What a backup needs to know about the server.
#[derive(Clone, Debug)]
pub(crate) struct ServerInfo {
    pub version_num: u32,
    pub major: u32,
    pub system_id: u64,
    pub block_size: u32,
    pub wal_seg_size: u64,
    pub data_checksums: bool,
    pub data_directory: String,
    pub in_recovery: bool,
    pub archive_mode: String,
    pub archive_command: String,
}

/// The result of stopping backup mode.
#[derive(Clone, Debug)]
pub(crate) struct BackupStop {
    pub lsn: Lsn,
    pub backup_label: Vec<u8>,
    pub tablespace_map: Option<Vec<u8>>,
}

/// The configuration and its TLS settings (see [`crate::pg::tls`]).
pub(crate) fn config_tls(dbname: Option<&str>) -> Result<(Config, tls::Settings)> {
    let expanded = libpq::expand(dbname)?;
    let (rest, tls) = tls::extract(expanded.conninfo.as_deref())?;
    let mut cfg = match rest.as_deref() {
        Some(s) if !s.trim().is_empty() => Config::from_str(s)
            .map_err(|e| Error::invalid(format!("invalid connection string: {e}")))?,
        _ => Config::new(),
    };
    // A URI keeps the sslmode it names (the driver parsed it); otherwise the
    // mode taken out of the string (or PGSSLMODE, or prefer) applies.
    let uri_mode = rest
        .as_deref()
        .is_some_and(|r| tls::is_uri(r) && r.contains("sslmode="));
    if !uri_mode {
        cfg.ssl_mode(tls.mode.driver_mode());
    }
    defaults_from_env(&mut cfg)?;
    if cfg.get_password().is_none() {
        password_from_env_or_file(&mut cfg, expanded.passfile.as_deref())?;
    }
    timeout_from_env(&mut cfg)?;
    Ok((cfg, tls))
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// What the string leaves unset, as libpq: PGHOST, PGPORT, PGUSER (else the
/// operating-system user), PGDATABASE, PGAPPNAME.
fn defaults_from_env(cfg: &mut Config) -> Result<()> {
    if cfg.get_hosts().is_empty() {
        let host = env("PGHOST").unwrap_or_else(|| "/var/run/postgresql".into());
        for h in host.split(',') {
            cfg.host(h);
        }
    }
    if cfg.get_ports().is_empty() {
        if let Some(p) = env("PGPORT") {
            let port = p
                .parse()
                .map_err(|_| Error::invalid(format!("invalid PGPORT {p:?}")))?;
            cfg.port(port);
        }
    }
    if cfg.get_user().is_none() {
        let user = match env("PGUSER") {
            Some(u) => u,
            None => libpq::os_user()?,
        };
        cfg.user(&user);
    }
    if cfg.get_dbname().is_none() {
        if let Some(d) = env("PGDATABASE") {
            cfg.dbname(&d);
        }
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name(env("PGAPPNAME").as_deref().unwrap_or("pgstrata"));
    }
    Ok(())
}

/// PGPASSWORD, else the password file (`passfile`, PGPASSFILE, ~/.pgpass).
fn password_from_env_or_file(cfg: &mut Config, passfile: Option<&Path>) -> Result<()> {
    if let Some(p) = env("PGPASSWORD") {
        cfg.password(p);
        return Ok(());
    }
    let host = match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or_default().to_string();
    let db = cfg.get_dbname().unwrap_or(&user).to_string();
    if let Some(p) = libpq::password_from_file(passfile, &host, port, &db, &user)? {
        cfg.password(p);
    }
    Ok(())
}

/// PGCONNECT_TIMEOUT as libpq reads it (zero or less waits forever, at
/// least 2 s), else 30 s.
fn timeout_from_env(cfg: &mut Config) -> Result<()> {
    if cfg.get_connect_timeout().is_some() {
        return Ok(());
    }
    match env("PGCONNECT_TIMEOUT") {
        Some(t) => {
            let secs: i64 = t.trim().parse().map_err(|_| {
                Error::invalid(format!("invalid PGCONNECT_TIMEOUT {t:?}: whole seconds"))
            })?;
            if secs > 0 {
                cfg.connect_timeout(Duration::from_secs(secs.max(2) as u64));
            }
        }
        None => {
            cfg.connect_timeout(Duration::from_secs(30));
        }
    }
    Ok(())
}

/// Describe where a config points, for errors (never includes the password).
pub(crate) fn describe(cfg: &Config) -> String {
    let host = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "host={host} port={port} user={}",
        cfg.get_user().unwrap_or("?")
    )
}

/// A failed connection: where it tried, and (when nothing answered there)
/// libpq's hint. Never includes the password.
fn connect_error(cfg: &Config, e: postgres::Error) -> Error {
    use std::io::ErrorKind as K;
    // Nothing answered there (as opposed to a TLS or protocol failure).
    let mut io = false;
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(c) = src {
        if let Some(ioe) = c.downcast_ref::<std::io::Error>() {
            io |= matches!(
                ioe.kind(),
                K::NotFound
                    | K::ConnectionRefused
                    | K::TimedOut
                    | K::AddrNotAvailable
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::PermissionDenied
            );
        }
        src = c.source();
    }
    if e.as_db_error().is_some() || !io {
        return Error::pg(format!("cannot connect ({})", describe(cfg)), e);
    }
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let places = cfg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| libpq::endpoint(h, cfg.get_ports().get(i).copied().unwrap_or(port)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut cause = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(c) = src {
        cause = c.to_string();
        src = c.source();
    }
    Error::Refused(format!(
        "cannot connect to PostgreSQL on {places} as user {:?}: {cause}; is the server running \
         and listening on {places}?",
        cfg.get_user().unwrap_or("?")
    ))
}

pub(crate) struct Server {
    client: Client,
    pub info: ServerInfo,
}

impl Server {
    pub(crate) fn connect(dbname: Option<&str>) -> Result<Self> {
        let (cfg, tls) = config_tls(dbname)?;
        let mut client = cfg
            .connect(tls::connector(&tls)?)
            .map_err(|e| connect_error(&cfg, e))?;
        let info = server_info(&mut client)?;
        tracing::debug!(
            "connected to PostgreSQL {} ({})",
            info.version_num,
            describe(&cfg)
        );
        Ok(Server { client, info })
    }

    /// Connect to the server that runs the data directory `pgdata`, and
    /// prove it: same system identifier as `pgdata`'s pg_control, and the
    /// server's `data_directory` is `pgdata` itself (a copy of the cluster
    /// elsewhere has the same identifier). A standby is refused unless
    /// `standby_ok`. Returns the canonical `pgdata`.
    pub(crate) fn connect_for(
        dbname: Option<&str>,
        pgdata: &Path,
        standby_ok: bool,
    ) -> Result<(Self, PathBuf)> {
        control::require_data_directory(pgdata)?;
        let pgdata = pgdata.canonicalize().at(pgdata)?;
        let server = Server::connect(dbname)?;
        let info = &server.info;
        if info.in_recovery && !standby_ok {
            return Err(Error::refused(
                "the server is a standby: connect to the primary (it switches WAL)",
            ));
        }
        let sysid = control::system_identifier(&pgdata)?;
        if sysid != info.system_id {
            return Err(Error::refused(format!(
                "{} belongs to the cluster with system identifier {sysid}, but the server \
                 connected to is {} (data directory {}): check pgdata and the connection",
                pgdata.display(),
                info.system_id,
                info.data_directory
            )));
        }
        let server_dir = PathBuf::from(&info.data_directory);
        let server_dir = server_dir.canonicalize().unwrap_or(server_dir);
        if server_dir != pgdata {
            return Err(Error::refused(format!(
                "the server's data_directory is {}, not {}: pgdata names a copy of this \
                 cluster, or the connection reaches another server",
                server_dir.display(),
                pgdata.display()
            )));
        }
        Ok((server, pgdata))
    }

    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Enter backup mode; returns the start LSN.
    pub(crate) fn backup_start(&mut self, label: &str, fast: bool) -> Result<Lsn> {
        let sql = version::backup_mode_sql(self.info.major).0;
        let row = self
            .client
            .query_one(sql, &[&label, &fast])
            .map_err(|e| Error::pg("cannot start backup mode", e))?;
        row.get::<_, String>(0).parse()
    }

    /// Leave backup mode without waiting for archiving (pgstrata waits itself,
    /// with a timeout and a clear error).
    pub(crate) fn backup_stop(&mut self) -> Result<BackupStop> {
        let sql = version::backup_mode_sql(self.info.major).1;
        let row = self
            .client
            .query_one(sql, &[])
            .map_err(|e| Error::pg("cannot stop backup mode", e))?;
        let lsn: String = row.get(0);
        let label: String = row.get(1);
        let map: Option<String> = row.get(2);
        Ok(BackupStop {
            lsn: lsn.parse()?,
            backup_label: label.into_bytes(),
            tablespace_map: map.filter(|m| !m.is_empty()).map(String::into_bytes),
        })
    }

    /// Force a switch to a new WAL segment; returns the name of the segment
    /// that was just completed.
    pub(crate) fn switch_wal(&mut self) -> Result<String> {
        let row = self
            .client
            .query_one("SELECT pg_walfile_name(pg_switch_wal() - 1)", &[])
            .map_err(|e| Error::pg("cannot switch WAL", e))?;
        Ok(row.get(0))
    }
}

fn server_info(c: &mut Client) -> Result<ServerInfo> {
    let q = |c: &mut Client, sql: &str| -> Result<String> {
        c.query_one(sql, &[])
            .map(|r| r.get::<_, String>(0))
            .map_err(|e| Error::pg(format!("query failed: {sql}"), e))
    };
    let version_num: u32 = q(c, "SELECT current_setting('server_version_num')")?
        .parse()
        .map_err(|_| Error::invalid("unexpected server_version_num"))?;
    // Refuse an unsupported major before anything else is asked or done.
    version::require_supported(version::major_of_version_num(version_num), "the server")?;
    let system_id: u64 = q(c, "SELECT system_identifier::text FROM pg_control_system()")?
        .parse()
        .map_err(|_| Error::invalid("unexpected system identifier"))?;
    let block_size: u32 = q(c, "SELECT current_setting('block_size')")?
        .parse()
        .map_err(|_| Error::invalid("unexpected block_size"))?;
    let wal_seg_size: u64 = q(
        c,
        "SELECT (setting::bigint * CASE unit WHEN '8kB' THEN 8192 WHEN 'MB' THEN 1048576 \
         ELSE 1 END)::text FROM pg_settings WHERE name = 'wal_segment_size'",
    )?
    .parse()
    .map_err(|_| Error::invalid("unexpected wal_segment_size"))?;
    let data_checksums = q(c, "SELECT current_setting('data_checksums')")? == "on";
    let data_directory = q(c, "SELECT current_setting('data_directory')").map_err(|e| {
        Error::refused(format!(
            "{e}; the backup role must be a superuser or have pg_read_all_settings"
        ))
    })?;
    let in_recovery = q(c, "SELECT pg_is_in_recovery()::text")? == "true";
    let archive_mode = q(c, "SELECT current_setting('archive_mode')")?;
    let archive_command = q(c, "SELECT current_setting('archive_command')")?;
    Ok(ServerInfo {
        version_num,
        major: version::major_of_version_num(version_num),
        system_id,
        block_size,
        wal_seg_size,
        data_checksums,
        data_directory,
        in_recovery,
        archive_mode,
        archive_command,
    })
}
