//! Which symbolic links of a backup a restore recreates.
//!
//! A backup stores a link inside the data directory (other than the
//! tablespaces' `pg_tblspc/<oid>` and a top-level `pg_wal`) as the file or
//! directory it leads to, with the link's destination beside it; older
//! backups stored only the link. By default a restore makes no link inside
//! the target other than the tablespaces': linked files and directories are
//! restored as regular ones, and links stored without content are left out,
//! each named in the plan for a warning. `link_all` (or `link_map` for one link)
//! recreates the links, and a linked file's or directory's content is
//! written at its destination. `postgresql.auto.conf` is always a regular
//! file: the recovery settings go there.

use std::path::{Component, Path, PathBuf};

use super::{check_empty_target, RestoreOptions};
use crate::catalog::{FileKind, FileRow};
use crate::error::{Error, Hint, Result, Setting};
use crate::pg::datadir::path_of;

/// The file the recovery settings are written to.
pub(super) const AUTO_CONF: &str = "postgresql.auto.conf";

/// Where a recreated link's content goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Content {
    /// The backup holds only the link.
    Nothing,
    /// A directory, written at this absolute path.
    Dir(PathBuf),
    /// A file, written at this absolute path.
    File(PathBuf),
}

/// One link the restore recreates in the target.
#[derive(Clone, Debug)]
pub(super) struct Made {
    /// Its manifest path.
    pub path: String,
    /// What the link holds.
    pub to: PathBuf,
    pub content: Content,
}

/// The links a restore recreates, besides the tablespaces'.
#[derive(Clone, Debug, Default)]
pub(super) struct LinkPlan {
    pub made: Vec<Made>,
    /// Links restored as the regular files and directories they led to.
    pub as_files: Vec<String>,
    /// Links to something the backup does not hold: not restored (path,
    /// where it led).
    pub not_restored: Vec<(String, PathBuf)>,
}

impl LinkPlan {
    pub(super) fn get(&self, path: &str) -> Option<&Made> {
        self.made.iter().find(|m| m.path == path)
    }
}

/// Whether row `f` is a link other than a tablespace's.
pub(super) fn is_other_link(f: &FileRow) -> bool {
    match f.kind {
        FileKind::Link => !crate::pg::datadir::is_tablespace_entry(&f.path),
        _ => f.link.is_some(),
    }
}

/// Decide which links to recreate. `layout` holds every row that is or was
/// a link; `target` is absolute.
pub(super) fn plan(
    layout: &[FileRow],
    opts: &RestoreOptions,
    target: &Path,
    delta: bool,
    backup_id: &str,
) -> Result<LinkPlan> {
    let links: Vec<&FileRow> = layout.iter().filter(|f| is_other_link(f)).collect();
    for (path, dest) in &opts.link_map {
        if path == AUTO_CONF {
            return Err(Error::setting(
                Setting::LinkMap,
                format!(
                    "{path}: {AUTO_CONF} is always restored as a regular file (the recovery \
                     settings go there)"
                ),
            ));
        }
        if !links.iter().any(|f| &f.path == path) {
            return Err(Error::setting(
                Setting::LinkMap,
                format!("names {path:?}, which is not a link in backup {backup_id}"),
            ));
        }
        if !dest.is_absolute() {
            return Err(Error::setting(
                Setting::LinkMap,
                format!(
                    "{path}={}: the destination must be an absolute path",
                    dest.display()
                ),
            ));
        }
    }
    let mut plan = LinkPlan::default();
    let mut regular = Vec::new();
    for f in links {
        let was = path_of(f.link.as_deref().unwrap_or_default());
        let mapped = opts.link_map.iter().find(|(p, _)| p == &f.path);
        if f.path == AUTO_CONF {
            if opts.link_all {
                tracing::warn!(
                    "{AUTO_CONF} was a link to {}: restored as a regular file, because the \
                     recovery settings go there",
                    was.display()
                );
            } else if f.kind != FileKind::Link {
                regular.push(f.path.as_str());
            }
            continue;
        }
        if !opts.link_all && mapped.is_none() {
            if f.kind == FileKind::Link {
                plan.not_restored.push((f.path.clone(), was));
            } else {
                regular.push(f.path.as_str());
            }
            continue;
        }
        let to = mapped.map(|(_, d)| d.clone()).unwrap_or(was);
        let content = match f.kind {
            FileKind::Link => Content::Nothing,
            kind => {
                let dest = destination(target, &f.path, &to);
                if dest.starts_with(target) {
                    return Err(Error::invalid(format!(
                        "link {} leads to {}, inside the target: restore it as a regular \
                         file or directory, or move it",
                        f.path,
                        dest.display(),
                    ))
                    .hint(Hint::RestoreWith {
                        setting: Setting::LinkMap,
                        value: Some(format!("{}=DIR", f.path)),
                    }));
                }
                if kind == FileKind::Dir {
                    if !delta {
                        check_empty_target(&dest, &format!("link {} destination", f.path))?;
                    }
                    Content::Dir(dest)
                } else {
                    if !delta && dest.symlink_metadata().is_ok() {
                        return Err(Error::refused(format!(
                            "link {} destination {} exists: update it with a delta restore, \
                             or move it (nothing was written)",
                            f.path,
                            dest.display()
                        ))
                        .hint(Hint::RestoreWith {
                            setting: Setting::LinkMap,
                            value: Some(format!("{}=DIR", f.path)),
                        }));
                    }
                    Content::File(dest)
                }
            }
        };
        plan.made.push(Made {
            path: f.path.clone(),
            to,
            content,
        });
    }
    let outside: Vec<String> = plan
        .made
        .iter()
        .filter_map(|m| match &m.content {
            Content::Dir(d) | Content::File(d) => Some(format!("{} -> {}", m.path, d.display())),
            Content::Nothing => None,
        })
        .collect();
    if !outside.is_empty() {
        // The one place a restore writes outside its target and tablespaces.
        tracing::warn!(
            "writing what these links hold at their destinations: {}",
            outside.join(", ")
        );
    }
    plan.as_files = regular.into_iter().map(String::from).collect();
    Ok(plan)
}

/// The absolute destination of link `path` holding `to`, `..` resolved by
/// name (the destination is the operator's to choose, and need not exist).
fn destination(target: &Path, path: &str, to: &Path) -> PathBuf {
    let base = if to.is_absolute() {
        PathBuf::from("/")
    } else {
        target
            .join(path_of(path))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    let mut out = base;
    for c in to.components() {
        match c {
            Component::RootDir => out = PathBuf::from("/"),
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, kind: FileKind, link: Option<&str>) -> FileRow {
        FileRow {
            path: path.into(),
            kind,
            size: 0,
            mtime_ns: 0,
            mode: 0o700,
            uid: 0,
            gid: 0,
            link: link.map(String::from),
            blockmap: None,
        }
    }

    #[test]
    fn links_become_regular_unless_asked() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("data");
        let layout = vec![
            row("pg_tblspc/16390", FileKind::Link, Some("/ts")),
            row("conf.d", FileKind::Dir, Some("../conf")),
            row(AUTO_CONF, FileKind::File, Some("/etc/auto.conf")),
            row("old", FileKind::Link, Some("/x")),
        ];
        let mut o = RestoreOptions::new(&target);
        assert!(plan(&layout, &o, &target, false, "b")
            .unwrap()
            .made
            .is_empty());
        o.link_all = true;
        let p = plan(&layout, &o, &target, false, "b").unwrap();
        assert_eq!(p.made.len(), 2, "{p:?}");
        assert_eq!(
            p.get("conf.d").unwrap().content,
            Content::Dir(t.path().join("conf"))
        );
        assert_eq!(p.get("old").unwrap().content, Content::Nothing);
        assert!(p.get(AUTO_CONF).is_none());
        o.link_all = false;
        o.link_map = vec![("nope".into(), "/y".into())];
        let e = plan(&layout, &o, &target, false, "b").unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");
        o.link_map = vec![("old".into(), "/y".into())];
        let p = plan(&layout, &o, &target, false, "b").unwrap();
        assert_eq!(p.made.len(), 1);
        assert_eq!(p.made[0].to, PathBuf::from("/y"));
        // A destination inside the target is refused.
        o.link_map = vec![("conf.d".into(), target.join("base"))];
        assert!(plan(&layout, &o, &target, false, "b").is_err());
    }
}
