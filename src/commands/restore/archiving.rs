//! What the restore summary says about archiving: will the restored copy
//! push WAL into this repository once it promotes?

use std::path::Path;

use super::recovery::ArchiveMode;
use super::RestorePlan;
use crate::repo::Repository;

/// The last value of `name` in postgresql.conf then postgresql.auto.conf.
fn setting(pgdata: &Path, name: &str) -> Option<String> {
    let mut found = None;
    for f in ["postgresql.conf", "postgresql.auto.conf"] {
        let Ok(text) = std::fs::read_to_string(pgdata.join(f)) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.trim() != name {
                continue;
            }
            let v = v.trim();
            let v = match v.strip_prefix('\'') {
                Some(q) => q
                    .rsplit_once('\'')
                    .map(|(inner, _)| inner.replace("''", "'"))
                    .unwrap_or_default(),
                None => v.split('#').next().unwrap_or("").trim().to_string(),
            };
            found = Some(v);
        }
    }
    found
}

/// Will the restored copy archive, and where, once it promotes?
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Archiving {
    /// `archive_mode = off` was written: the copy never archives.
    Off,
    /// The backup's settings were kept, and they do not archive.
    PreservedButOff,
    /// The backup's settings were kept: the copy archives into this
    /// repository, under the plan's cluster.
    IntoThisRepository,
    /// The backup's settings were kept: the copy archives with its own
    /// `archive_command`, which does not name this repository.
    Elsewhere(String),
}

/// What the restored copy does about archiving, for the restore summary.
pub fn summary(repo: &Repository, plan: &RestorePlan, mode: ArchiveMode) -> Archiving {
    if mode == ArchiveMode::Off {
        return Archiving::Off;
    }
    let on = setting(&plan.target, "archive_mode").is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "on" | "always" | "true" | "yes" | "1"
        )
    });
    let cmd = setting(&plan.target, "archive_command").unwrap_or_default();
    let here = cmd.contains("archive-push")
        && if repo.is_remote() {
            cmd.contains(repo.name())
        } else {
            let root = repo.root();
            let canon = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
            cmd.contains(&*root.to_string_lossy()) || cmd.contains(&*canon.to_string_lossy())
        };
    if !on {
        Archiving::PreservedButOff
    } else if here {
        Archiving::IntoThisRepository
    } else {
        Archiving::Elsewhere(cmd)
    }
}
