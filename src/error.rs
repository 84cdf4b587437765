//! The library's error type. Every variant names what it concerns (a file, a
//! backup, a WAL segment) so the binary can print one precise line.
//!
//! Kinds: user input (`Invalid`, `Refused`, `NotFound` of something the user
//! named, `NotARepository`), damage (`Corrupt`, `NewerFormat`), a missing
//! object (`MissingObject`, from the backend), the environment (`Io`,
//! `Catalog`, `Postgres`, `Timeout`, `ServerFailed`) and faults of pgstrata itself
//! (`Internal`).
//!
//! The library never names a command-line flag: an error about a setting
//! names it as a [`Setting`], and advice is a [`Hint`] attached with
//! [`Error::hint`]. Both are data the binary words in its own terms; the
//! library's `Display` words them neutrally (by their config-file names).

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog: {context}: {source}")]
    Catalog {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("PostgreSQL: {context}: {}", pg_message(source))]
    Postgres {
        context: String,
        #[source]
        source: postgres::Error,
    },
    /// The binary adds how to create one.
    #[error("{0} is not a pgstrata repository")]
    NotARepository(PathBuf),
    #[error("{what} was written by a newer pgstrata (format {found}; this one reads up to {supported}): upgrade pgstrata")]
    NewerFormat {
        what: String,
        found: u32,
        supported: u32,
    },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    /// An object the repository should hold is not there (a typed not-found
    /// from the backend; `what` says who needed it).
    #[error("{what}: {key} is missing")]
    MissingObject { what: String, key: String },
    #[error("{0}")]
    Timeout(String),
    /// A PostgreSQL server that pgstrata started (a drill's) failed: it
    /// stopped, or did not come up; the message carries the end of its log.
    #[error("{0}")]
    ServerFailed(String),
    /// A fault of pgstrata itself (a panicked thread, a poisoned lock).
    #[error("internal error: {0}")]
    Internal(String),
    /// The value given for a setting is wrong: `detail` follows its name.
    #[error("{setting} {detail}")]
    Setting { setting: Setting, detail: String },
    /// An error and what the user can do about it.
    #[error("{error} ({hint})")]
    Hinted { error: Box<Error>, hint: Hint },
}

/// A setting of pgstrata's that a message refers to. The library's options
/// structs hold their values; the binary knows how the user gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Cluster,
    Pgdata,
    Dbname,
    S3UriStyle,
    S3CaFile,
    S3Region,
    PgBindir,
    Scratch,
    Set,
    TargetTime,
    TargetTimeline,
    Delta,
    LinkAll,
    LinkMap,
    TablespaceMap,
    ArchiveMode,
    PrimaryDbname,
    StandbyMaxLagMib,
    StartFast,
    RetainFull,
    RetainDiff,
    RetainDays,
    LockWait,
}

impl Setting {
    /// The setting's name in the config file (kebab-case).
    pub fn key(self) -> &'static str {
        match self {
            Setting::Cluster => "cluster",
            Setting::Pgdata => "pgdata",
            Setting::Dbname => "dbname",
            Setting::S3UriStyle => "s3-uri-style",
            Setting::S3CaFile => "s3-ca-file",
            Setting::S3Region => "s3-region",
            Setting::PgBindir => "pg-bindir",
            Setting::Scratch => "scratch",
            Setting::Set => "set",
            Setting::TargetTime => "target-time",
            Setting::TargetTimeline => "target-timeline",
            Setting::Delta => "delta",
            Setting::LinkAll => "link-all",
            Setting::LinkMap => "link-map",
            Setting::TablespaceMap => "tablespace-map",
            Setting::ArchiveMode => "archive-mode",
            Setting::PrimaryDbname => "primary-dbname",
            Setting::StandbyMaxLagMib => "standby-max-lag-mib",
            Setting::StartFast => "start-fast",
            Setting::RetainFull => "retain-full",
            Setting::RetainDiff => "retain-diff",
            Setting::RetainDays => "retain-days",
            Setting::LockWait => "lock-wait",
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

/// What the user can do about an error, as data: the binary words it (e.g.
/// as the command to run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Rebuild the catalog from the repository (the `repair` command).
    RebuildCatalog,
    /// After pg_upgrade, record the cluster's new identity (the `upgrade`
    /// command).
    Upgrade,
    /// Another cluster name, or after pg_upgrade the `upgrade` command.
    OtherClusterOrUpgrade,
    /// What there is to choose from (backups, timelines) is shown by the
    /// `info` command.
    SeeInfo,
    /// Damage found before anything was written: the `verify` command shows
    /// what else in the repository it affects.
    NothingWrittenVerify,
    /// Give `setting`, with `value` (or a value of the user's choosing).
    Give {
        setting: Setting,
        value: Option<String>,
    },
    /// Leave `setting` out.
    LeaveOut(Setting),
    /// Restore with `setting` (a switch, or a value like `OID=DIR`).
    RestoreWith {
        setting: Setting,
        value: Option<String>,
    },
}

impl Hint {
    pub fn give(setting: Setting, value: impl Into<String>) -> Hint {
        Hint::Give {
            setting,
            value: Some(value.into()),
        }
    }
}

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = |v: &Option<String>| v.as_deref().map(|v| format!(" {v}")).unwrap_or_default();
        match self {
            Hint::RebuildCatalog => f.write_str("rebuild the catalog with the repair command"),
            Hint::Upgrade => f.write_str("after pg_upgrade, run the upgrade command first"),
            Hint::OtherClusterOrUpgrade => f.write_str(
                "use another cluster name, or after pg_upgrade run the upgrade command first",
            ),
            Hint::SeeInfo => f.write_str("see the info command"),
            Hint::NothingWrittenVerify => {
                f.write_str("nothing was written; the verify command shows what else is affected")
            }
            Hint::Give { setting, value: v } => write!(f, "set {setting}{}", value(v)),
            Hint::LeaveOut(s) => write!(f, "leave out {s}"),
            Hint::RestoreWith { setting, value: v } => {
                write!(f, "restore with {setting}{}", value(v))
            }
        }
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
    /// The value given for `setting` is wrong.
    pub fn setting(setting: Setting, detail: impl Into<String>) -> Self {
        Error::Setting {
            setting,
            detail: detail.into(),
        }
    }
    /// Attach what the user can do about this error.
    pub fn hint(self, hint: Hint) -> Self {
        Error::Hinted {
            error: Box::new(self),
            hint,
        }
    }
    /// The error without the advice attached to it.
    pub fn without_hint(&self) -> &Error {
        match self {
            Error::Hinted { error, .. } => error.without_hint(),
            e => e,
        }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub fn refused(msg: impl Into<String>) -> Self {
        Error::Refused(msg.into())
    }
    pub fn missing(what: impl Into<String>, key: impl Into<String>) -> Self {
        Error::MissingObject {
            what: what.into(),
            key: key.into(),
        }
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }
    /// An I/O error from a writer: the repository's own error when the
    /// writer was an object (see `store::WriteObject`), else `what` and
    /// the error, as an internal one.
    pub fn from_io(e: std::io::Error, what: &str) -> Self {
        if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Error::Internal(format!("{what}: {e}"));
        }
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(ours)) => *ours,
            _ => Error::Internal(format!("{what}: I/O error")),
        }
    }
    pub fn pg(context: impl Into<String>, source: postgres::Error) -> Self {
        Error::Postgres {
            context: context.into(),
            source,
        }
    }
}

/// The server's own words for a database error (the driver's `Display`
/// says only "db error"), else the driver's message.
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{}: {}", db.severity(), db.message());
            if let Some(h) = db.hint() {
                m.push_str(&format!(" (hint: {h})"));
            }
            m
        }
        None => {
            // The cause (e.g. why a TLS handshake failed) is what the user
            // needs; the driver does not always print it.
            let mut m = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                let t = c.to_string();
                if !m.contains(&t) {
                    m.push_str(&format!(": {t}"));
                }
                src = c.source();
            }
            m
        }
    }
}

/// Attach a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

/// Attach context to a rusqlite result.
pub(crate) trait SqlContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
    /// The same, with the context made only on error (for lookups done
    /// once per file or chunk).
    fn ctx_with(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| Error::Catalog {
            context: context.to_string(),
            source,
        })
    }

    fn ctx_with(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Catalog {
            context: context(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_io_gives_back_our_error_or_keeps_the_os_one() {
        let ours = Error::missing("object", "packs/ab");
        let back = Error::from_io(std::io::Error::other(ours), "manifest compression");
        assert!(matches!(back, Error::MissingObject { .. }), "{back}");
        let os = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = Error::from_io(os, "manifest compression").to_string();
        assert!(
            e.contains("manifest compression") && e.contains("storage"),
            "{e}"
        );
    }
}
