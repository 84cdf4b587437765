//! Where a restore puts each tablespace, and the directories it must never
//! write into.
//!
//! Invariants:
//! - The tablespace map is checked against the backup before any directory
//!   is looked at: an OID the backup lacks is named with the ones it has.
//! - A location comes from the tablespace map, else the directory for all,
//!   else (delta) the target's own `pg_tblspc/<oid>` link, else the path
//!   the tablespace had when it was backed up.
//! - A delta restore never writes into a non-empty directory that was not
//!   named and that the target does not link to: the original location is
//!   often the running primary's own tablespace, and a delta removes and
//!   rewrites what it finds there.
//! - No restore puts a tablespace inside (or around) the target, another of
//!   its tablespaces, or the data directory or a tablespace of a PostgreSQL
//!   server running on this host. Running servers are found cheaply: a live
//!   `postmaster.pid` in the location or any directory above it, and every
//!   postmaster visible in `/proc` (its working directory is its data
//!   directory, whose `postmaster.pid` names it), with that data directory's
//!   `pg_tblspc` links. A server of another user is visible only when
//!   pgstrata runs as that user or as root.

use std::fs;
use std::path::{Path, PathBuf};

use crate::catalog::{BackupRow, FileKind, FileRow};
use crate::error::{Error, Hint, IoContext, Result, Setting};
use crate::pg::datadir::path_of;
use crate::util::process_alive;

use super::RestoreOptions;

/// The tablespace OIDs the backup has, from its layout.
fn backup_oids(layout: &[FileRow]) -> Result<Vec<(u32, String)>> {
    let mut out = Vec::new();
    for f in layout.iter().filter(|f| f.kind == FileKind::Link) {
        // Another link inside a tablespace is no tablespace; a link in
        // `pg_tblspc` that is not named by an oid is refused.
        let Some(oid) = f
            .path
            .strip_prefix("pg_tblspc/")
            .filter(|o| !o.contains('/'))
        else {
            continue;
        };
        let n: u32 = oid.parse().map_err(|_| {
            Error::corrupt(
                "manifest",
                format!("tablespace link {:?} is not an oid", f.path),
            )
        })?;
        out.push((n, f.link.clone().unwrap_or_default()));
    }
    Ok(out)
}

/// Advice: restore tablespace `oid` into a directory of the user's.
fn map_hint(oid: &str) -> Hint {
    Hint::RestoreWith {
        setting: Setting::TablespaceMap,
        value: Some(format!("{oid}=DIR")),
    }
}

/// The tablespace map names only tablespaces the backup has, each once.
/// Checked before anything else about the target, so that a mistyped OID is
/// the error rather than some other tablespace's directory.
pub(super) fn check_map(
    layout: &[FileRow],
    opts: &RestoreOptions,
    backup: &BackupRow,
) -> Result<()> {
    let known = backup_oids(layout)?;
    for (i, (oid, _)) in opts.tablespace_map.iter().enumerate() {
        if opts.tablespace_map[..i].iter().any(|(o, _)| o == oid) {
            return Err(Error::setting(
                Setting::TablespaceMap,
                format!("names tablespace {oid} twice"),
            ));
        }
        if !known.iter().any(|(k, _)| k == oid) {
            let has = match known.len() {
                0 => "it has no tablespaces".to_string(),
                _ => format!(
                    "its tablespaces: {}",
                    known
                        .iter()
                        .map(|(k, _)| k.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(Error::setting(
                Setting::TablespaceMap,
                format!(
                    "names tablespace {oid}, which backup {} does not have ({has}; nothing \
                     was written)",
                    backup.id
                ),
            ));
        }
    }
    Ok(())
}

/// Where each tablespace goes: (oid, directory the link will point to).
pub(super) fn plan(
    layout: &[FileRow],
    opts: &RestoreOptions,
    target: &Path,
    delta: bool,
) -> Result<Vec<(String, PathBuf)>> {
    let oids = backup_oids(layout)?;
    if oids.is_empty() {
        return Ok(Vec::new());
    }
    let live = LiveServers::find(target);
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (n, original) in oids {
        let oid = n.to_string();
        let named = match opts.tablespace_map.iter().find(|(o, _)| *o == n) {
            Some((_, d)) => Some(d.clone()),
            None => opts.tablespace_map_all.as_ref().map(|all| all.join(&oid)),
        };
        let dir = match named {
            Some(d) => {
                absolute(&oid, &d)?;
                if !delta {
                    super::check_empty_target(&d, &format!("tablespace {oid} directory"))?;
                }
                d
            }
            None => {
                let linked = if delta { own_link(target, &oid)? } else { None };
                match linked {
                    Some(d) => d,
                    None => {
                        let d = path_of(&original);
                        absolute(&oid, &d)?;
                        unlinked(&oid, &d, target, delta)?;
                        d
                    }
                }
            }
        };
        let resolved = resolve(&dir);
        if overlaps(&resolved, &resolve(target)) {
            return Err(Error::refused(format!(
                "tablespace {oid} would be restored to {}, which overlaps the target {}: map \
                 it elsewhere (nothing was written)",
                dir.display(),
                target.display()
            ))
            .hint(map_hint(&oid)));
        }
        if let Some((other, _)) = out.iter().find(|(_, d)| overlaps(&resolve(d), &resolved)) {
            return Err(Error::refused(format!(
                "tablespaces {other} and {oid} would both be restored to {}: map one of them \
                 elsewhere (nothing was written)",
                dir.display()
            ))
            .hint(map_hint(&oid)));
        }
        live.refuse_overlap(&oid, &dir, &resolved)?;
        out.push((oid, dir));
    }
    Ok(out)
}

fn absolute(oid: &str, dir: &Path) -> Result<()> {
    if dir.is_absolute() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "tablespace {oid} would be restored to {dir:?}, which is not an absolute path"
    )))
}

/// Where the target's `pg_tblspc/<oid>` link points, if it is a link.
fn own_link(target: &Path, oid: &str) -> Result<Option<PathBuf>> {
    let link = target.join("pg_tblspc").join(oid);
    match fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            let dest = fs::read_link(&link).at(&link)?;
            // A relative link is relative to the directory holding it.
            Ok(Some(target.join("pg_tblspc").join(dest)))
        }
        _ => Ok(None),
    }
}

/// A location nobody named and the target does not link to: a fresh
/// restore needs it empty or missing; so does a delta, which would otherwise
/// rewrite a directory that may be another cluster's.
fn unlinked(oid: &str, dir: &Path, target: &Path, delta: bool) -> Result<()> {
    if !delta {
        return super::check_empty_target(dir, &format!("tablespace {oid} directory"));
    }
    let empty = match fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io(dir, e)),
    };
    if empty {
        return Ok(());
    }
    Err(Error::refused(format!(
        "tablespace {oid}: {} is not empty and {} does not link to it (no \
         pg_tblspc/{oid} link): it may be another cluster's; give the copy's tablespace \
         directory (nothing was written)",
        dir.display(),
        target.display()
    ))
    .hint(map_hint(oid)))
}

/// `p` with symbolic links resolved as far as it exists (the rest appended
/// as given), so that two spellings of one directory compare equal.
fn resolve(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.iter().rev().fold(c, |acc, r| acc.join(r));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// One is the other or inside it.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The pid in `dir/postmaster.pid`, when that process is alive.
pub(super) fn live_postmaster(dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    let pid = text.lines().next()?.trim().parse::<i32>().ok()?;
    // A standalone backend (initdb's, `postgres --single`) writes its pid
    // negated.
    let pid = i32::try_from(pid.unsigned_abs()).ok().filter(|p| *p > 0)?;
    process_alive(pid).then_some(pid)
}

/// A running server's data directory and tablespaces (resolved).
struct Live {
    pid: i32,
    data: PathBuf,
    tablespaces: Vec<PathBuf>,
}

/// The PostgreSQL servers running on this host that pgstrata can see.
struct LiveServers(Vec<Live>);

impl LiveServers {
    fn find(target: &Path) -> LiveServers {
        let mut found: Vec<Live> = Vec::new();
        let Ok(rd) = fs::read_dir("/proc") else {
            return LiveServers(found);
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // Servers' processes are all called postgres (or postmaster);
            // only the postmaster is named in its postmaster.pid.
            let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if !matches!(comm.trim(), "postgres" | "postmaster") {
                continue;
            }
            let Ok(cwd) = fs::read_link(e.path().join("cwd")) else {
                continue;
            };
            if live_postmaster(&cwd) != Some(pid) {
                continue;
            }
            let data = resolve(&cwd);
            // The target's own server is refused elsewhere, with its message.
            if data == resolve(target) || found.iter().any(|l| l.data == data) {
                continue;
            }
            let tablespaces = links(&data);
            found.push(Live {
                pid,
                data,
                tablespaces,
            });
        }
        LiveServers(found)
    }

    /// Refuse `dir` (resolved: `resolved`) when it overlaps a running
    /// server's data directory or tablespace, or sits under a directory
    /// with a live `postmaster.pid`.
    fn refuse_overlap(&self, oid: &str, dir: &Path, resolved: &Path) -> Result<()> {
        let refuse = |what: String, pid: i32| {
            Err(Error::refused(format!(
                "tablespace {oid} would be restored to {}, which overlaps {what} of the \
                 PostgreSQL server running with pid {pid}: give the copy's tablespace directory \
                 (nothing was written)",
                dir.display()
            ))
            .hint(map_hint(oid)))
        };
        for a in resolved.ancestors() {
            if let Some(pid) = live_postmaster(a) {
                return refuse(format!("the data directory {}", a.display()), pid);
            }
        }
        for l in &self.0 {
            if overlaps(resolved, &l.data) {
                return refuse(format!("the data directory {}", l.data.display()), l.pid);
            }
            if let Some(t) = l.tablespaces.iter().find(|t| overlaps(resolved, t)) {
                return refuse(format!("the tablespace {}", t.display()), l.pid);
            }
        }
        Ok(())
    }
}

/// Where a data directory's `pg_tblspc` links point (resolved).
fn links(data: &Path) -> Vec<PathBuf> {
    let dir = data.join("pg_tblspc");
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|d| resolve(&dir.join(d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_what_exists_and_keeps_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("link")).unwrap();
        let got = resolve(&t.path().join("link/not/yet"));
        assert_eq!(got, real.canonicalize().unwrap().join("not/yet"));
        assert!(overlaps(&got, &real.canonicalize().unwrap()));
        assert!(!overlaps(Path::new("/a/bc"), Path::new("/a/b")));
    }

    #[test]
    fn a_live_postmaster_above_a_location_is_found() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        fs::create_dir_all(data.join("ts")).unwrap();
        fs::write(
            data.join("postmaster.pid"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let none = LiveServers(Vec::new());
        let inside = data.join("ts");
        let e = none
            .refuse_overlap("16384", &inside, &resolve(&inside))
            .unwrap_err();
        assert!(
            matches!(e.without_hint(), Error::Refused(_))
                && e.to_string()
                    .ends_with("(restore with tablespace-map 16384=DIR)"),
            "{e}"
        );
        let elsewhere = t.path().join("elsewhere");
        none.refuse_overlap("16384", &elsewhere, &resolve(&elsewhere))
            .unwrap();
    }
}
