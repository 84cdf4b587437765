//! Where an S3 repository is, how to reach it, and whose credentials sign
//! the requests.
//!
//! Credentials come from the standard AWS chain, as far as it goes without
//! an SDK: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`,
//! then the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or
//! `~/.aws/credentials`, profile `AWS_PROFILE` or `default`). Web identity
//! and instance metadata are not supported. Secrets never reach `Debug`,
//! errors or logs.

use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// An S3 repository's location and settings.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// `https://host[:port]` of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// `endpoint/BUCKET/KEY` rather than `BUCKET.endpoint/KEY`.
    pub path_style: bool,
    /// Extra CA certificates (PEM) to trust, for a private CA.
    pub ca_file: Option<PathBuf>,
    /// `x-amz-storage-class` of new objects.
    pub storage_class: Option<String>,
    /// Explicit credentials; `None`: the AWS chain (see the module doc).
    pub credentials: Option<S3Credentials>,
}

/// An access key, its secret and an optional session token.
#[derive(Clone)]
pub struct S3Credentials {
    pub key: String,
    pub secret: Zeroizing<String>,
    pub token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Credentials({}, secret: ..)", self.key)
    }
}

/// S3's rules for bucket names (3-63 of lowercase letters, digits, `.`, `-`).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

impl S3Config {
    /// Parse `s3://BUCKET[/PREFIX]`; the other settings take their defaults
    /// (AWS, `us-east-1`, host style).
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::invalid(format!("{url:?} is not an S3 URL: use s3://BUCKET/PREFIX"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(Error::invalid(format!(
                "{url:?}: {bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, '.' and '-')"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
        {
            return Err(Error::invalid(format!(
                "{url:?}: the prefix must not have empty, '.' or '..' components"
            )));
        }
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            ca_file: None,
            storage_class: None,
            credentials: None,
        })
    }

    /// `s3://bucket/prefix`, as messages name the repository.
    pub fn url(&self) -> String {
        match self.prefix.is_empty() {
            true => format!("s3://{}", self.bucket),
            false => format!("s3://{}/{}", self.bucket, self.prefix),
        }
    }

    /// The endpoint requests go to.
    pub fn endpoint_url(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None if self.region == "us-east-1" => "https://s3.amazonaws.com".into(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }

    /// The credentials to sign with: explicit ones, else the AWS chain.
    pub fn resolve_credentials(&self) -> Result<S3Credentials> {
        if let Some(c) = &self.credentials {
            return Ok(c.clone());
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        {
            return Ok(S3Credentials {
                key,
                secret: Zeroizing::new(secret),
                token: env("AWS_SESSION_TOKEN").map(Zeroizing::new),
            });
        }
        let file = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        if let Some(f) = file.filter(|f| f.is_file()) {
            let text = Zeroizing::new(std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?);
            return shared_profile(&text, &profile).ok_or_else(|| {
                Error::invalid(format!(
                    "no S3 credentials for profile {profile:?} in {}: it needs aws_access_key_id and aws_secret_access_key",
                    f.display()
                ))
            });
        }
        Err(Error::invalid(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write \
             ~/.aws/credentials (profile AWS_PROFILE or default)",
        ))
    }
}

/// The credentials of `[profile]` in a shared credentials file.
fn shared_profile(text: &str, profile: &str) -> Option<S3Credentials> {
    let mut section = String::new();
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().trim_start_matches("profile ").trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k.trim() {
            "aws_access_key_id" => key = Some(v),
            "aws_secret_access_key" => secret = Some(Zeroizing::new(v)),
            "aws_session_token" => token = Some(Zeroizing::new(v)),
            _ => {}
        }
    }
    Some(S3Credentials {
        key: key?,
        secret: secret?,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = S3Config::from_url("s3://my-bucket/pg/main/").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("my-bucket", "pg/main")
        );
        assert_eq!(c.url(), "s3://my-bucket/pg/main");
        assert_eq!(S3Config::from_url("s3://b12").unwrap().prefix, "");
        for bad in [
            "s3://",
            "s3://A_B/x",
            "s3://ab",
            "http://b/x",
            "s3://bucket/a//b",
            "s3://bucket/../x",
        ] {
            assert!(S3Config::from_url(bad).is_err(), "{bad}");
        }
        let mut c = S3Config::from_url("s3://bucket").unwrap();
        assert_eq!(c.endpoint_url(), "https://s3.amazonaws.com");
        c.region = "eu-west-1".into();
        assert_eq!(c.endpoint_url(), "https://s3.eu-west-1.amazonaws.com");
    }

    #[test]
    fn shared_credentials_and_no_secret_in_debug() {
        let text = "[default]\naws_access_key_id = AK1\naws_secret_access_key = S1\n\n\
                    [profile ops]\naws_access_key_id=AK2\naws_secret_access_key=S2\naws_session_token=T2\n";
        let d = shared_profile(text, "default").unwrap();
        assert_eq!((d.key.as_str(), d.secret.as_str()), ("AK1", "S1"));
        let o = shared_profile(text, "ops").unwrap();
        assert_eq!(o.token.as_deref().map(String::as_str), Some("T2"));
        assert!(shared_profile(text, "none").is_none());
        let shown = format!("{o:?}");
        assert!(
            shown.contains("AK2") && !shown.contains("S2") && !shown.contains("T2"),
            "{shown}"
        );
    }
}
