//! Where the repository is: a directory, or `s3://BUCKET/PREFIX` with the
//! settings of the object store and the catalog's cache directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgstrata::{Location, S3Backend, S3Config};

use super::args::{GlobalArgs, UriStyleArg};
use super::settings::{usage, R};

pub enum RepoSpec {
    Local(PathBuf),
    S3(Box<S3Spec>),
}

pub struct S3Spec {
    pub url: String,
    pub config: S3Config,
    pub cache_dir: PathBuf,
    /// The options as given, for the commands this one starts.
    args: Vec<OsString>,
}

impl RepoSpec {
    /// The repository to open: for S3, the client is made here (no request
    /// is sent yet).
    pub fn location(&self) -> anyhow::Result<Location> {
        Ok(match self {
            RepoSpec::Local(p) => Location::Local(p.clone()),
            RepoSpec::S3(s) => Location::Remote {
                store: Arc::new(S3Backend::new(s.config.clone())?),
                name: s.url.clone(),
                cache_dir: s.cache_dir.clone(),
            },
        })
    }

    /// `--repo` and the object store's options, as the commands this one
    /// starts (workers, `restore_command`) must be given them. The cache
    /// directory is left out: `restore_command` runs as the server's user,
    /// with a cache of its own.
    pub fn args(&self) -> Vec<OsString> {
        match self {
            RepoSpec::Local(p) => vec!["--repo".into(), p.into()],
            RepoSpec::S3(s) => s.args.clone(),
        }
    }
}

/// The repository named by `--repo` (or the config), with its settings.
pub fn resolve(g: &GlobalArgs) -> R<Option<RepoSpec>> {
    let Some(repo) = g.repo.clone() else {
        return Ok(None);
    };
    let Some(url) = repo.to_str().filter(|s| s.starts_with("s3://")) else {
        if let Some(s) = repo.to_str().filter(|s| s.contains("://")) {
            return usage(format!(
                "unsupported repository URL {s:?}: use a directory or s3://BUCKET/PREFIX"
            ));
        }
        return Ok(Some(RepoSpec::Local(repo)));
    };
    let mut config =
        S3Config::from_url(url).or_else(|e| usage(super::render::error::library_error(&e)))?;
    let endpoint = g.s3_endpoint.clone();
    let style = g.s3_uri_style.unwrap_or(match endpoint {
        Some(_) => UriStyleArg::Path,
        None => UriStyleArg::Host,
    });
    let region = g
        .s3_region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    let ca_file = g.s3_ca_file.clone();
    let storage_class = g.s3_storage_class.clone();
    if let Some(f) = &ca_file {
        if !f.is_file() {
            return usage(format!("--s3-ca-file {}: no such file", f.display()));
        }
    }
    config.endpoint = endpoint.clone();
    config.region = region.clone();
    config.path_style = style == UriStyleArg::Path;
    config.ca_file = ca_file.clone();
    config.storage_class = storage_class.clone();
    let mut args: Vec<OsString> = vec!["--repo".into(), url.into()];
    if let Some(e) = &endpoint {
        args.extend(["--s3-endpoint".into(), e.into()]);
    }
    args.extend(["--s3-region".into(), region.into()]);
    args.extend([
        "--s3-uri-style".into(),
        match style {
            UriStyleArg::Path => "path",
            UriStyleArg::Host => "host",
        }
        .into(),
    ]);
    if let Some(f) = &ca_file {
        args.extend([
            "--s3-ca-file".into(),
            f.canonicalize().unwrap_or(f.clone()).into(),
        ]);
    }
    if let Some(c) = &storage_class {
        args.extend(["--s3-storage-class".into(), c.into()]);
    }
    let base = g.cache_dir.clone().unwrap_or_else(default_cache_base);
    let cache_dir = base.join(cache_name(url, endpoint.as_deref()));
    Ok(Some(RepoSpec::S3(Box::new(S3Spec {
        url: url.trim_end_matches('/').to_string(),
        config,
        cache_dir,
        args,
    }))))
}

/// `$XDG_CACHE_HOME/pgstrata`, `~/.cache/pgstrata`, or for root (and
/// without a home) `/var/cache/pgstrata`.
fn default_cache_base() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Path::new(&x).join("pgstrata");
    }
    let root = rustix::process::geteuid().is_root();
    match std::env::var_os("HOME").filter(|h| !h.is_empty() && !root) {
        Some(h) => Path::new(&h).join(".cache").join("pgstrata"),
        None => PathBuf::from("/var/cache/pgstrata"),
    }
}

/// One directory per repository: readable, and unique per endpoint, bucket
/// and prefix.
fn cache_name(url: &str, endpoint: Option<&str>) -> String {
    let id = blake3::hash(
        format!("{}|{}", endpoint.unwrap_or(""), url.trim_end_matches('/')).as_bytes(),
    );
    let readable: String = url
        .trim_start_matches("s3://")
        .trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    format!("{readable}-{}", &id.to_hex()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_per_repository() {
        let a = cache_name("s3://b/p", None);
        assert!(a.starts_with("b_p-"), "{a}");
        assert_ne!(a, cache_name("s3://b/p", Some("http://127.0.0.1:9000")));
        assert_ne!(a, cache_name("s3://b/q", None));
        assert_eq!(a, cache_name("s3://b/p/", None));
    }
}
