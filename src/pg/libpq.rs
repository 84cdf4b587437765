//! libpq's client conventions that the `postgres` driver does not have:
//! connection services (`service=`, `PGSERVICE`, `pg_service.conf`), the
//! password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`), the operating
//! system user as default user, and connection errors that say where they
//! tried to connect.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pg::tls;

/// Every connection parameter libpq knows (PostgreSQL 18).
const LIBPQ_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
    "min_protocol_version",
    "max_protocol_version",
];

/// Socket directories libpq builds treat as "the default": a password file
/// entry for `localhost` matches them.
const DEFAULT_SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/run/postgresql", "/tmp"];

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| os_user_entry().map(|(_, dir)| PathBuf::from(dir)))
}

/// The user name and home directory of the effective uid, from /etc/passwd
/// (libpq asks getpwuid for the same).
fn os_user_entry() -> Option<(String, String)> {
    passwd_entry(rustix::process::geteuid().as_raw())
}

/// The user name of `uid`, from /etc/passwd.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    passwd_entry(uid).map(|(n, _)| n)
}

fn passwd_entry(uid: u32) -> Option<(String, String)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid))
            .then(|| (f[0].to_string(), f[5].to_string()))
    })
}

/// The default user name: the operating-system user of the effective uid.
pub(crate) fn os_user() -> Result<String> {
    os_user_entry().map(|(n, _)| n).ok_or_else(|| {
        Error::invalid(format!(
            "no user name for uid {} in /etc/passwd: set PGUSER or user= in dbname",
            rustix::process::geteuid().as_raw()
        ))
    })
}

/// A connection string with its service expanded, and the password file it names.
#[derive(Debug, Default)]
pub(crate) struct Expanded {
    pub conninfo: Option<String>,
    pub passfile: Option<PathBuf>,
}

/// Check the keys of a `key=value` connection string, expand `service=` (or
/// `PGSERVICE`) from the service files, and take out `passfile=`. URIs pass
/// through unchanged (the driver parses them).
pub(crate) fn expand(conninfo: Option<&str>) -> Result<Expanded> {
    let mut kv = match conninfo {
        Some(c) if !c.trim().is_empty() => match tls::pairs(c) {
            Some(kv) => kv,
            // A URI, or a string the driver will reject with its own message.
            None => {
                return Ok(Expanded {
                    conninfo: Some(c.to_string()),
                    passfile: env("PGPASSFILE").map(PathBuf::from),
                })
            }
        },
        _ => Vec::new(),
    };
    for (k, _) in &kv {
        check_key(k, "connection string")?;
    }
    let service = take(&mut kv, "service").or_else(|| env("PGSERVICE"));
    if let Some(name) = service {
        for (k, v) in service_entries(&name)? {
            if !kv.iter().any(|(have, _)| *have == k) {
                kv.push((k, v));
            }
        }
    }
    let passfile = take(&mut kv, "passfile")
        .or_else(|| env("PGPASSFILE"))
        .map(PathBuf::from);
    let conninfo = (conninfo.is_some() || !kv.is_empty()).then(|| {
        kv.iter()
            .map(|(k, v)| format!("{k}={}", tls::quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    });
    Ok(Expanded { conninfo, passfile })
}

fn check_key(k: &str, what: &str) -> Result<()> {
    if LIBPQ_KEYS.contains(&k) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what}: unknown connection setting {k:?}"
        )))
    }
}

fn take(kv: &mut Vec<(String, String)>, key: &str) -> Option<String> {
    let i = kv.iter().position(|(k, _)| k == key)?;
    Some(kv.remove(i).1)
}

/// The settings of service `name`: from `PGSERVICEFILE` (or
/// `~/.pg_service.conf`), else `PGSYSCONFDIR/pg_service.conf`.
fn service_entries(name: &str) -> Result<Vec<(String, String)>> {
    let user_file = env("PGSERVICEFILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".pg_service.conf")));
    let sysconf = env("PGSYSCONFDIR").unwrap_or_else(|| "/etc/postgresql-common".into());
    let files: Vec<PathBuf> = user_file
        .into_iter()
        .chain(std::iter::once(Path::new(&sysconf).join("pg_service.conf")))
        .collect();
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(f, e)),
        };
        if let Some(entries) = parse_service_file(&text, name, f)? {
            return Ok(entries);
        }
    }
    Err(Error::NotFound(format!(
        "definition of service {name:?} not found (looked in {})",
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// One service's settings from an INI-style service file, if it has it.
pub(crate) fn parse_service_file(
    text: &str,
    name: &str,
    file: &Path,
) -> Result<Option<Vec<(String, String)>>> {
    let mut inside = false;
    let mut found = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let section = section.strip_suffix(']').ok_or_else(|| {
                Error::invalid(format!(
                    "syntax error in service file {}, line {}",
                    file.display(),
                    i + 1
                ))
            })?;
            if found && inside {
                break;
            }
            inside = section == name;
            found |= inside;
            continue;
        }
        if !inside {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| {
            Error::invalid(format!(
                "syntax error in service file {}, line {}",
                file.display(),
                i + 1
            ))
        })?;
        let (k, v) = (k.trim(), v.trim());
        if k == "service" {
            return Err(Error::invalid(format!(
                "nested service specifications not supported in service file {}, line {}",
                file.display(),
                i + 1
            )));
        }
        check_key(
            k,
            &format!("service file {}, line {}", file.display(), i + 1),
        )?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(found.then_some(out))
}

/// Split a password file line into its fields (`\` escapes `:` and `\`).
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut it = line.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => {
                if let Some(n) = it.next() {
                    if let Some(last) = out.last_mut() {
                        last.push(n);
                    }
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// The password for this connection from the password file, as libpq finds
/// it: `passfile` (or `PGPASSFILE`, or `~/.pgpass`); ignored with a warning
/// when group or others can read it. `host` is a host name or a socket
/// directory.
pub(crate) fn password_from_file(
    passfile: Option<&Path>,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Result<Option<String>> {
    let Some(path) = passfile
        .map(Path::to_path_buf)
        .or_else(|| home().map(|h| h.join(".pgpass")))
    else {
        return Ok(None);
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    if !meta.is_file() {
        tracing::warn!("password file {} is not a plain file", path.display());
        return Ok(None);
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        );
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let host = if host.is_empty() || DEFAULT_SOCKET_DIRS.contains(&host) {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f = pgpass_fields(line);
        if f.len() < 5 {
            continue;
        }
        let ok = |field: &str, want: &str| field == "*" || field == want;
        if ok(&f[0], host) && ok(&f[1], &port) && ok(&f[2], dbname) && ok(&f[3], user) {
            return Ok(Some(f[4].clone()));
        }
    }
    Ok(None)
}

/// Where a connection attempt went, libpq style: a socket file or host:port.
pub(crate) fn endpoint(host: &postgres::config::Host, port: u16) -> String {
    match host {
        postgres::config::Host::Tcp(h) => format!("host \"{h}\", port {port}"),
        postgres::config::Host::Unix(dir) => {
            format!("socket \"{}/.s.PGSQL.{port}\"", dir.display())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines() {
        assert_eq!(
            pgpass_fields(r"db\:host:5432:*:me:pa\:ss\\w:rd"),
            vec!["db:host", "5432", "*", "me", r"pa:ss\w:rd"]
        );
    }

    #[test]
    fn service_files() {
        let text = "# c\n[other]\nhost=x\n[mine]\nhost = /run/pg\nport=5433\n\n[after]\nuser=z\n";
        let got = parse_service_file(text, "mine", Path::new("f"))
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            vec![
                ("host".to_string(), "/run/pg".to_string()),
                ("port".to_string(), "5433".to_string())
            ]
        );
        assert!(parse_service_file(text, "none", Path::new("f"))
            .unwrap()
            .is_none());
        let e = parse_service_file("[s]\nbogus=1\n", "s", Path::new("f")).unwrap_err();
        assert!(e.to_string().contains("\"bogus\""), "{e}");
        assert!(parse_service_file("[s]\nservice=t\n", "s", Path::new("f")).is_err());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = expand(Some("host=/tmp prot=5432")).unwrap_err();
        assert!(e.to_string().contains("\"prot\""), "{e}");
        let x = expand(Some("host=/tmp passfile=/p/x")).unwrap();
        assert_eq!(x.passfile, Some(PathBuf::from("/p/x")));
        assert!(!x.conninfo.unwrap().contains("passfile"));
    }
}
