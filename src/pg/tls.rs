//! TLS for server connections, with libpq's `sslmode` semantics.
//!
//! The `postgres` crate parses `sslmode=disable|prefer|require` only, and
//! rejects `sslrootcert`, `sslcert` and `sslkey`. pgstrata takes those (and
//! `verify-ca` / `verify-full`) out of a `key=value` connection string
//! itself, or from `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
//! and builds the rustls connector (pure Rust, ring provider) to match:
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

use std::sync::Arc;

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
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
    pub(crate) fn driver_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS settings of one connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub mode: Mode,
    pub rootcert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A `postgresql://` URI rather than `key=value` pairs.
pub(crate) fn is_uri(s: &str) -> bool {
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
pub(crate) fn extract(conninfo: Option<&str>) -> Result<(Option<String>, Settings)> {
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

/// Accepts any server certificate (libpq's `prefer`, and `require` without
/// a root certificate), but still checks the handshake signatures.
#[derive(Debug)]
struct NoCertCheck(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca` and `verify-full`: the chain must lead to the root
/// certificate (or the server certificate is itself in the root file, as
/// with a self-signed server certificate, which libpq accepts); the host
/// name is checked for `verify-full` only.
#[derive(Debug)]
struct RootCheck {
    webpki: Arc<WebPkiServerVerifier>,
    roots: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl ServerCertVerifier for RootCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let name_only = |e: &rustls::Error| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            )
        };
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(e) if name_only(&e) && !self.check_name => Ok(ServerCertVerified::assertion()),
            Err(e) if name_only(&e) => Err(e),
            Err(e) => {
                if !self.roots.iter().any(|r| r.as_ref() == end_entity.as_ref()) {
                    // libpq's (OpenSSL's) words, then rustls' reason.
                    return Err(rustls::Error::General(format!(
                        "certificate verify failed: the server certificate does not lead to \
                         the root certificate ({e})"
                    )));
                }
                if self.check_name {
                    let cert = ParsedCertificate::try_from(end_entity)?;
                    verify_server_name(&cert, server_name)?;
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The rustls connector for these settings.
pub(crate) fn connector(s: &Settings) -> Result<MakeRustlsConnect> {
    let err =
        |what: &str, e: &dyn std::fmt::Display| Error::invalid(format!("TLS setup: {what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS versions", &e))?;
    let verify = match s.mode {
        Mode::VerifyCa | Mode::VerifyFull => true,
        // libpq: with a root certificate, require behaves like verify-ca.
        Mode::Require => s.rootcert.is_some(),
        Mode::Disable | Mode::Prefer => false,
    };
    let verifier: Arc<dyn ServerCertVerifier> = if verify {
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
        let what = format!("sslrootcert {}", root.display());
        let ders = CertificateDer::pem_file_iter(root)
            .map_err(|e| err(&what, &e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| err(&what, &e))?;
        if ders.is_empty() {
            return Err(err(&what, &"no certificate in the file"));
        }
        let mut roots = RootCertStore::empty();
        for c in &ders {
            roots.add(c.clone()).map_err(|e| err(&what, &e))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| err(&what, &e))?;
        Arc::new(RootCheck {
            webpki,
            roots: ders,
            check_name: s.mode == Mode::VerifyFull,
        })
    } else {
        Arc::new(NoCertCheck(provider.signature_verification_algorithms))
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &s.cert {
        Some(c) => {
            let what = format!("sslcert {}", c.display());
            let chain = CertificateDer::pem_file_iter(c)
                .map_err(|e| err(&what, &e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| err(&what, &e))?;
            let k = s.key.clone().unwrap_or_else(|| c.with_extension("key"));
            let key = PrivateKeyDer::from_pem_file(&k)
                .map_err(|e| err(&format!("sslkey {}", k.display()), &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err(&what, &e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
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
