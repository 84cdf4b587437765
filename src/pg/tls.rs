//! TLS for server connections, with libpq's `sslmode` semantics.
//!
//! The `postgres` crate parses `sslmode=disable|prefer|require` only, and
//! rejects `sslrootcert`, `sslcert` and `sslkey`. pgstrata takes those (and
//! `verify-ca` / `verify-full`) out of a `key=value` connection string
//! itself, or from `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
//! and builds the OpenSSL connector to match:
//!
//! | sslmode | encryption | certificate checked | host name checked |
//! |---|---|---|---|
//! | disable | never | - | - |
//! | prefer (default) | if the server offers it | no | no |
//! | require | always | only if a root certificate is given or `~/.postgresql/root.crt` exists (as libpq) | no |
//! | verify-ca | always | yes | no |
//! | verify-full | always | yes | yes |
//!
//! Unix-socket connections never use TLS (PostgreSQL does not offer it there).

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres::config::SslMode;
use postgres_openssl::MakeTlsConnector;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(v: &str) -> Result<Self> {
        Ok(match v {
            "disable" => Mode::Disable,
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            _ => {
                return Err(Error::invalid(format!(
                    "invalid sslmode {v:?}: disable, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }

    /// What the `postgres` crate is told: it only knows whether TLS is
    /// refused, optional or required.
    pub fn driver_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS settings of one connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub rootcert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A `postgresql://` URI rather than `key=value` pairs.
pub fn is_uri(s: &str) -> bool {
    let t = s.trim_start();
    t.starts_with("postgres://") || t.starts_with("postgresql://")
}

/// Split a `key=value` connection string into pairs (libpq quoting: values
/// in single quotes, `\` escapes). `None` when it is not one (a URI).
pub(crate) fn pairs(s: &str) -> Option<Vec<(String, String)>> {
    if is_uri(s) {
        return None;
    }
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return None;
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut val = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next()? {
                    '\\' => val.push(it.next()?),
                    '\'' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    val.push(it.next()?);
                } else {
                    val.push(c);
                }
            }
        }
        out.push((key, val));
    }
}

pub(crate) fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Take the TLS settings out of a connection string. Returns the string the
/// `postgres` crate can parse, and the settings (environment variables fill
/// what the string leaves unset).
pub fn extract(conninfo: Option<&str>) -> Result<(Option<String>, Settings)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut mode = None;
    let mut rootcert = None;
    let mut cert = None;
    let mut key = None;
    let rest = match conninfo.map(|c| (c, pairs(c))) {
        None => None,
        Some((c, None)) => Some(c.to_string()),
        Some((_, Some(kv))) => {
            let mut keep = Vec::new();
            for (k, v) in kv {
                match k.as_str() {
                    "sslmode" => mode = Some(Mode::parse(&v)?),
                    "sslrootcert" => rootcert = Some(PathBuf::from(v)),
                    "sslcert" => cert = Some(PathBuf::from(v)),
                    "sslkey" => key = Some(PathBuf::from(v)),
                    _ => keep.push(format!("{k}={}", quote(&v))),
                }
            }
            Some(keep.join(" "))
        }
    };
    let mode = match (mode, env("PGSSLMODE")) {
        (Some(m), _) => m,
        (None, Some(v)) => Mode::parse(&v)?,
        (None, None) => Mode::Prefer,
    };
    let home = |f: &str| {
        std::env::var_os("HOME")
            .map(|h| Path::new(&h).join(".postgresql").join(f))
            .filter(|p| p.exists())
    };
    let settings = Settings {
        mode,
        rootcert: rootcert
            .or_else(|| env("PGSSLROOTCERT").map(PathBuf::from))
            .or_else(|| home("root.crt")),
        cert: cert
            .or_else(|| env("PGSSLCERT").map(PathBuf::from))
            .or_else(|| home("postgresql.crt")),
        key: key
            .or_else(|| env("PGSSLKEY").map(PathBuf::from))
            .or_else(|| home("postgresql.key")),
    };
    Ok((rest, settings))
}

/// The OpenSSL connector for these settings.
pub fn connector(s: &Settings) -> Result<MakeTlsConnector> {
    let err = |what: &str, e: openssl::error::ErrorStack| {
        Error::invalid(format!("TLS setup: {what}: {e}"))
    };
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| err("OpenSSL", e))?;
    let verify = match s.mode {
        Mode::VerifyCa | Mode::VerifyFull => true,
        // libpq: with a root certificate, require behaves like verify-ca.
        Mode::Require => s.rootcert.is_some(),
        Mode::Disable | Mode::Prefer => false,
    };
    if verify {
        let root = s.rootcert.as_ref().ok_or_else(|| {
            Error::invalid(
                "sslmode verify-ca/verify-full needs a root certificate: set sslrootcert \
                 (or PGSSLROOTCERT, or create ~/.postgresql/root.crt)",
            )
        })?;
        if !root.exists() {
            return Err(Error::invalid(format!(
                "root certificate file {} does not exist",
                root.display()
            )));
        }
        b.set_ca_file(root)
            .map_err(|e| err(&format!("sslrootcert {}", root.display()), e))?;
        b.set_verify(SslVerifyMode::PEER);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    if let Some(c) = &s.cert {
        b.set_certificate_chain_file(c)
            .map_err(|e| err(&format!("sslcert {}", c.display()), e))?;
        let k = s.key.clone().unwrap_or_else(|| c.with_extension("key"));
        b.set_private_key_file(&k, SslFiletype::PEM)
            .map_err(|e| err(&format!("sslkey {}", k.display()), e))?;
    }
    let mut m = MakeTlsConnector::new(b.build());
    let full = s.mode == Mode::VerifyFull;
    m.set_callback(move |cfg, _domain| {
        // verify-ca checks the chain only; verify-full the host name too.
        cfg.set_verify_hostname(full);
        Ok(())
    });
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_libpq_tls_keys() {
        let (rest, s) = extract(Some(
            "host=db port=5433 sslmode=verify-full sslrootcert='/a b/ca.pem' password='x\\'y'",
        ))
        .unwrap();
        assert_eq!(
            rest.as_deref(),
            Some("host='db' port='5433' password='x\\'y'")
        );
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(s.rootcert, Some(PathBuf::from("/a b/ca.pem")));
        assert_eq!(s.mode.driver_mode(), SslMode::Require);
        assert!(extract(Some("sslmode=sometimes")).is_err());
        // URIs pass through for the driver to parse.
        let (rest, _) = extract(Some("postgresql://u@h/db?sslmode=require")).unwrap();
        assert_eq!(rest.as_deref(), Some("postgresql://u@h/db?sslmode=require"));
        // The rebuilt string parses.
        let (rest, _) = extract(Some("host=/tmp user=me dbname='my db'")).unwrap();
        let cfg: postgres::Config = rest.unwrap().parse().unwrap();
        assert_eq!(cfg.get_dbname(), Some("my db"));
    }
}
