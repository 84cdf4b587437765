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

/// One line for the restore summary.
pub fn summary(repo: &Repository, plan: &RestorePlan, mode: ArchiveMode) -> String {
    if mode == ArchiveMode::Off {
        return "archiving: off — this copy will NOT archive into this repository when it \
                promotes (archive_mode = off in postgresql.auto.conf; use --archive-mode \
                preserve for a restore that replaces the primary)"
            .to_string();
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
        "archiving: preserved, but archive_mode is off in the backup's configuration — this \
         copy will not archive when it promotes"
            .to_string()
    } else if here {
        format!(
            "archiving: preserved — once it promotes, this copy WILL archive into this \
             repository (cluster {}); right for a restore that replaces the primary, not for \
             a test copy (use --archive-mode off)",
            plan.cluster
        )
    } else {
        format!(
            "archiving: preserved — once it promotes, this copy archives with its own \
             archive_command ({cmd:?}), which does not name this repository"
        )
    }
}
