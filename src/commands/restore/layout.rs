//! Everything a restore writes besides the files' data: its roots, the
//! directories and links, the removal of strays (delta), the recovery
//! files, owners and modes.
//!
//! Invariant: beneath the roots, every path goes through [`beneath`]
//! (resolved from a root's handle, symbolic links and `..` refused, the last
//! component never followed). Links are made only where the plan says:
//! `pg_tblspc/<oid>` and the links the operator asked for (`links`).

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;

use super::beneath::{self, list, remove_entry, Root, Roots};
use super::links::{Content, AUTO_CONF};
use super::{recovery, RestorePlan};
use crate::catalog::{Catalog, FileKind, FileRow};
use crate::error::{Error, IoContext, Result};
use crate::pg::datadir::{is_tablespace_entry, name_of, EXCLUDED_DIR_CONTENTS};
use crate::pg::version;

/// Files pgstrata writes itself after the manifest's files.
pub(super) const RECOVERY_FILES: &[&str] = &[
    "backup_label",
    "tablespace_map",
    "recovery.signal",
    "standby.signal",
];

/// The directories a restore writes beneath (absolute paths, made by the
/// operator's choice: the target, tablespaces, recreated links'
/// destinations), and for linked files the file itself.
pub(super) fn root_dirs(plan: &RestorePlan) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut dirs = vec![plan.target.clone()];
    dirs.extend(plan.tablespaces.iter().map(|(_, d)| d.clone()));
    let mut files = Vec::new();
    for m in &plan.links.made {
        match &m.content {
            Content::Dir(d) => dirs.push(d.clone()),
            Content::File(f) => files.push(f.clone()),
            Content::Nothing => {}
        }
    }
    (dirs, files)
}

/// Make the roots (the target and tablespaces private) and open them.
pub(super) fn open_roots(plan: &RestorePlan) -> Result<Roots> {
    let private = |d: &Path| -> Result<()> {
        fs::create_dir_all(d).at(d)?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).at(d)
    };
    private(&plan.target)?;
    let mut roots = Roots::new(Root::open(&plan.target)?);
    for (oid, dir) in &plan.tablespaces {
        private(dir)?;
        roots.map(&format!("pg_tblspc/{oid}"), Root::open(dir)?, None, true);
    }
    for m in &plan.links.made {
        match &m.content {
            Content::Dir(d) => {
                fs::create_dir_all(d).at(d)?;
                // Never cleaned: the destination is not the restore's own
                // (a hostile catalog could name any directory).
                roots.map(&m.path, Root::open(d)?, None, false);
            }
            Content::File(f) => {
                let (Some(dir), Some(name)) = (f.parent(), f.file_name()) else {
                    return Err(Error::invalid(format!(
                        "link {} leads to {}, which is not a file's path",
                        m.path,
                        f.display()
                    )));
                };
                fs::create_dir_all(dir).at(dir)?;
                roots.map(&m.path, Root::open(dir)?, Some(OsString::from(name)), false);
            }
            Content::Nothing => {}
        }
    }
    Ok(roots)
}

/// A fresh restore failed: remove what it wrote (its roots were empty or
/// missing; `existed` says which of `root_dirs` were there).
pub(super) fn clean_up(plan: &RestorePlan, existed: &[bool]) {
    let (dirs, files) = root_dirs(plan);
    for (d, existed) in dirs.iter().zip(existed) {
        if !existed {
            // std's remove_dir_all does not follow links.
            let _ = fs::remove_dir_all(d);
        } else if let Ok(r) = Root::open(d) {
            for (name, _) in list(r.fd()).unwrap_or_default() {
                let _ = remove_entry(r.fd(), &name);
            }
        }
    }
    for f in files {
        if let (Some(dir), Some(name)) = (f.parent(), f.file_name()) {
            if let Ok(r) = Root::open(dir) {
                let _ = r.remove(Path::new(name));
            }
        }
    }
}

/// Delta: remove every path in the target (and its tablespaces) that the
/// backup does not have (asked of the catalog path by path, not a set of
/// every path), never following a link. Returns how many were removed.
pub(super) fn remove_strays(plan: &RestorePlan, roots: &Roots, cat: &Catalog) -> Result<u64> {
    let mut removed = 0;
    let t = roots.target();
    stray_walk(
        plan,
        roots,
        cat,
        t,
        t.dir(Path::new(""))?,
        PathBuf::new(),
        "",
        &mut removed,
    )?;
    for (prefix, r) in roots.walked() {
        stray_walk(
            plan,
            roots,
            cat,
            r,
            r.dir(Path::new(""))?,
            PathBuf::new(),
            prefix,
            &mut removed,
        )?;
    }
    Ok(removed)
}

#[allow(clippy::too_many_arguments)]
fn stray_walk(
    plan: &RestorePlan,
    roots: &Roots,
    cat: &Catalog,
    root: &Root,
    dir: std::os::fd::OwnedFd,
    at: PathBuf,
    prefix: &str,
    removed: &mut u64,
) -> Result<()> {
    let entries = list(dir.as_fd()).map_err(|e| Error::io(root.shown(&at), e.into()))?;
    for (name, ft) in entries {
        let rel = if prefix.is_empty() {
            name_of(&name)
        } else {
            format!("{prefix}/{}", name_of(&name))
        };
        let here = at.join(&name);
        // The unfinished-restore marker goes only once the restore is done.
        if prefix.is_empty() && rel == super::resume::MARKER {
            continue;
        }
        // A link with a root of its own is remade with the layout.
        if roots.is_mapped(&rel) {
            continue;
        }
        if !cat.versions().has_path(plan.at, &rel)? {
            remove_entry(dir.as_fd(), &name).map_err(|e| Error::io(root.shown(&here), e.into()))?;
            *removed += 1;
            continue;
        }
        if ft == FileType::Directory {
            let sub = rustix::fs::openat(
                &dir,
                name.as_os_str(),
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::io(root.shown(&here), e.into()))?;
            stray_walk(plan, roots, cat, root, sub, here, &rel, removed)?;
        }
    }
    Ok(())
}

/// Tablespace links, directories, the links asked for, and the directories
/// whose contents are never backed up.
pub(super) fn make_layout(plan: &RestorePlan, roots: &Roots) -> Result<()> {
    let t = roots.target();
    for (oid, dir) in &plan.tablespaces {
        t.ensure_dir(Path::new("pg_tblspc"))?;
        t.symlink(&Path::new("pg_tblspc").join(oid), dir)?;
    }
    for f in plan.layout.iter().filter(|f| f.path != ".") {
        let tablespace = f.kind == FileKind::Link && is_tablespace_entry(&f.path);
        if tablespace {
            continue;
        }
        if let Some(m) = plan.links.get(&f.path) {
            let (r, rest) = roots.locate_entry(&f.path);
            r.symlink(&rest, &m.to)?;
        } else if f.kind == FileKind::Dir {
            let (r, rest) = roots.locate(&f.path);
            r.ensure_dir(&rest)?;
        } else if f.kind == FileKind::Link {
            // Not recreated: nothing of an older copy's stays there (delta).
            let (r, rest) = roots.locate_entry(&f.path);
            r.remove(&rest)?;
        }
        // A linked file restored as a regular one is written with the files.
    }
    for d in EXCLUDED_DIR_CONTENTS
        .iter()
        .chain(version::wal_subdirs(plan.backup.pg_version))
    {
        t.ensure_dir(Path::new(d))?;
    }
    Ok(())
}

/// Owners (as root) and modes last, directories deepest first.
pub(super) fn finish_owners_and_modes(plan: &RestorePlan, roots: &Roots) -> Result<()> {
    let t = roots.target();
    let as_root = rustix::process::geteuid().is_root();
    if as_root {
        let (uid, gid) = plan
            .layout
            .iter()
            .find(|f| f.path == ".")
            .map(|r| (r.uid, r.gid))
            .unwrap_or((0, 0));
        let extra = RECOVERY_FILES
            .iter()
            .chain([AUTO_CONF, "pg_tblspc"].iter())
            .chain(version::wal_subdirs(plan.backup.pg_version).iter())
            .chain(EXCLUDED_DIR_CONTENTS.iter());
        for p in extra {
            t.chown_entry(Path::new(p), uid, gid)?;
        }
        for (oid, _) in &plan.tablespaces {
            let (r, _) = roots.locate(&format!("pg_tblspc/{oid}"));
            let (u, g) = beneath::ids(uid, gid);
            rustix::fs::fchown(r.fd(), Some(u), Some(g))
                .map_err(|e| Error::io(r.path(), e.into()))?;
        }
    }
    let mut rows: Vec<&FileRow> = plan.layout.iter().collect();
    rows.sort_by_key(|f| std::cmp::Reverse(f.path.len()));
    for f in rows {
        let link = plan.links.get(&f.path).is_some()
            || (f.kind == FileKind::Link && is_tablespace_entry(&f.path));
        if as_root && link {
            let (r, rest) = roots.locate_entry(&f.path);
            r.chown_entry(&rest, f.uid, f.gid)?;
        }
        if f.kind != FileKind::Dir {
            continue;
        }
        let (r, rest) = roots.locate(&f.path);
        let fd = r.dir(&rest)?;
        if as_root {
            let (u, g) = beneath::ids(f.uid, f.gid);
            rustix::fs::fchown(&fd, Some(u), Some(g))
                .map_err(|e| Error::io(r.shown(&rest), e.into()))?;
        }
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(f.mode))
            .map_err(|e| Error::io(r.shown(&rest), e.into()))?;
    }
    Ok(())
}

/// `syncfs` the file system of each root.
pub(super) fn sync_filesystems(roots: &Roots) -> Result<()> {
    roots.all().iter().try_for_each(Root::syncfs)
}

/// `backup_label`, `tablespace_map`, the recovery settings and the signal
/// file, each fsynced. The settings go into a regular `postgresql.auto.conf`
/// of the target: a link there is replaced, never written through.
pub(super) fn write_recovery_files(plan: &RestorePlan, roots: &Roots) -> Result<()> {
    let t = roots.target();
    for stale in RECOVERY_FILES {
        t.remove(Path::new(stale))?;
    }
    if let Some(label) = &plan.backup.backup_label {
        t.write_durably(Path::new("backup_label"), label, 0o600)?;
    }
    if let Some(map) = &plan.backup.tablespace_map {
        // Point each tablespace at where this restore put it.
        let text = String::from_utf8_lossy(map);
        let mut out = String::new();
        for line in text.lines() {
            match line.split_once(' ') {
                Some((oid, _)) => match plan.tablespaces.iter().find(|(o, _)| o == oid) {
                    Some((_, dir)) => out.push_str(&format!("{oid} {}\n", dir.display())),
                    None => out.push_str(&format!("{line}\n")),
                },
                None if !line.is_empty() => out.push_str(&format!("{line}\n")),
                None => {}
            }
        }
        t.write_durably(Path::new("tablespace_map"), out.as_bytes(), 0o600)?;
    }
    let conf = Path::new(AUTO_CONF);
    let (existing, mode) = match t.take_regular(conf)? {
        Some((data, mode)) => (String::from_utf8_lossy(&data).into_owned(), mode),
        None => (String::new(), 0o600),
    };
    let mut text = recovery::strip_previous(&existing);
    text.push_str(&plan.recovery_conf);
    t.write_durably(conf, text.as_bytes(), mode)?;
    t.write_durably(Path::new(plan.signal_file), b"", 0o600)
}
