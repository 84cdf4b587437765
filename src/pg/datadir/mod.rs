//! The data directory rules: which files a base backup copies.
//!
//! Follows PostgreSQL's own list (`basebackup.c`): the contents of `pg_wal`,
//! `pg_dynshmem`, `pg_notify`, `pg_serial`, `pg_snapshots`, `pg_stat_tmp`,
//! `pg_subtrans` and `pg_replslot` are skipped but the directories kept;
//! `postmaster.pid`, `postmaster.opts`, `pg_internal.init*`, `pgsql_tmp*`,
//! temporary relations, the non-init forks of unlogged relations, and stale
//! `backup_label` / `tablespace_map` / `backup_manifest` files are skipped.
//! Tablespaces (`pg_tblspc/<oid>` symlinks) are recorded as links and their
//! contents walked under `pg_tblspc/<oid>/`; a top-level `pg_wal` symlink
//! (`initdb -X`) is recorded as a directory.
//!
//! Every other symlink is followed: a link to a regular file is a file row,
//! a link to a directory a directory row whose contents are walked (under
//! the same exclusion rules as at the link's own path), each carrying the
//! link's target. A dangling link, or one to anything else, stays a link row
//! (with a warning). Invariant: the walk ends. It never enters a directory
//! that is already on the path it is walking (an ancestor of the data
//! directory included), so a link that points back up is recorded as a link.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// What a data directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    Dir,
    Link,
}

/// One entry of a data directory, as the walk found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Relative to the data directory, `/`-separated; `.` is the directory itself.
    pub path: String,
    pub kind: EntryKind,
    /// Bytes, for files (0 otherwise).
    pub size: u64,
    /// Unix nanoseconds.
    pub mtime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The symlink's target: of a link row, and of a file or directory
    /// row reached through a followed link (`None` for everything else).
    pub link: Option<String>,
}

/// File names are bytes; manifests hold text. A name that is not UTF-8 is
/// kept exactly: each byte that is not part of valid UTF-8 becomes the
/// private-use character U+F700 + byte, and so does each byte of a valid
/// character in U+F780..U+F7FF (so the mapping is one-to-one both ways).
/// Every other character, and all of ASCII, is itself.
const ESCAPE_BASE: u32 = 0xF700;

fn escaped(c: char) -> bool {
    (ESCAPE_BASE + 0x80..=ESCAPE_BASE + 0xFF).contains(&u32::from(c))
}

fn escape_byte(out: &mut String, b: u8) {
    out.push(char::from_u32(ESCAPE_BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER));
}

fn push_text(out: &mut String, s: &str) {
    for c in s.chars() {
        if escaped(c) {
            let mut buf = [0u8; 4];
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                escape_byte(out, b);
            }
        } else {
            out.push(c);
        }
    }
}

/// A path or file name as manifest text (see [`ESCAPE_BASE`]).
pub(crate) fn name_of(os: &OsStr) -> String {
    let mut out = String::with_capacity(os.len());
    let mut rest = os.as_bytes();
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_text(&mut out, s);
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                push_text(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(after.len());
                for &b in &after[..bad] {
                    escape_byte(&mut out, b);
                }
                rest = &after[bad..];
            }
        }
    }
    out
}

/// The exact bytes manifest text names, as a path.
pub(crate) fn path_of(name: &str) -> PathBuf {
    let mut bytes = Vec::with_capacity(name.len());
    for c in name.chars() {
        if escaped(c) {
            bytes.push((u32::from(c) - ESCAPE_BASE) as u8);
        } else {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    PathBuf::from(OsString::from_vec(bytes))
}

/// Top-level directories whose contents are never backed up.
pub(crate) const EXCLUDED_DIR_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_replslot",
];

/// Top-level files never backed up (the server writes fresh ones, or the
/// backup supplies its own `backup_label` / `tablespace_map`).
const EXCLUDED_TOP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "recovery.signal",
    "standby.signal",
    RESTORE_MARKER,
];

/// What a restore in progress leaves at the top of its target (restore's
/// marker); never part of a backup.
pub(crate) const RESTORE_MARKER: &str = ".pgstrata-restore-incomplete";

fn excluded_anywhere(name: &str) -> bool {
    name.starts_with("pg_internal.init") || name.starts_with("pgsql_tmp")
}

/// `t<digits>_<digits>[_fork][.seg]`: a temporary relation.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else {
        return false;
    };
    let Some((backend, rel)) = rest.split_once('_') else {
        return false;
    };
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && rel.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

/// The relfilenode a relation file name belongs to (`16384_vm.1` → `16384`).
fn relfilenode(name: &str) -> Option<&str> {
    let stem = name.split('.').next()?;
    let digits = stem.split('_').next()?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// Is `rel` (relative path of a directory) a database directory, whose files
/// are relations? `base/<oid>`, `global`, `pg_tblspc/<oid>/<PG_ver>/<oid>`.
fn is_database_dir(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["global"] => true,
        ["base", _] => true,
        ["pg_tblspc", _, ver, _] => ver.starts_with("PG_"),
        _ => false,
    }
}

/// `(tablespace, database, relfilenode, segment)` of a main fork's file:
/// `base/DB/REL[.N]`, `global/REL[.N]` or `pg_tblspc/SPC/PG_…/DB/REL[.N]`
/// (the tablespace oid of `base` is 1663, of `global` 1664, as in WAL).
pub(crate) fn main_fork_file(path: &str) -> Option<(u32, u32, u32, u32)> {
    const DEFAULT_TABLESPACE: u32 = 1663;
    const GLOBAL_TABLESPACE: u32 = 1664;
    let (dir, file) = path.rsplit_once('/')?;
    if !is_database_dir(dir) {
        return None;
    }
    let oid = |s: &str| is_oid(s).then(|| s.parse::<u32>().ok()).flatten();
    let parts: Vec<&str> = dir.split('/').collect();
    let (spc, db) = match parts.as_slice() {
        ["global"] => (GLOBAL_TABLESPACE, 0),
        ["base", db] => (DEFAULT_TABLESPACE, oid(db)?),
        [_, spc, _, db] => (oid(spc)?, oid(db)?),
        _ => return None,
    };
    let (rel, seg) = match file.split_once('.') {
        Some((r, s)) => (oid(r)?, oid(s)?),
        None => (oid(file)?, 0),
    };
    Some((spc, db, rel, seg))
}

/// Walk a data directory and return its backup entries, sorted by path,
/// directories before their contents. `global/pg_control` is included.
#[cfg(test)]
pub fn walk(pgdata: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    walk_each(pgdata, &mut |e| {
        out.push(e);
        Ok(())
    })?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Walk a data directory, handing each backup entry to `each` as it is
/// found (a directory before its contents; otherwise in no set order).
/// Memory does not grow with the number of files: directories are read as
/// they are listed, not collected; only the unlogged relations of the
/// database directory being walked are held.
pub(crate) fn walk_each(pgdata: &Path, each: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
    walk_with(pgdata, true, each)
}

/// [`walk_each`] without its warnings (about links it does not follow), for
/// a pass before the one that reports them.
pub(crate) fn walk_each_quietly(
    pgdata: &Path,
    each: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<()> {
    walk_with(pgdata, false, each)
}

fn walk_with(pgdata: &Path, warn: bool, each: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
    let meta = fs::metadata(pgdata).at(pgdata)?;
    each(row(".", EntryKind::Dir, &meta, None))?;
    let mut walk = Walk {
        open: enclosing(pgdata),
        warn,
        out: each,
    };
    walk.open.push(dir_id(&meta));
    walk.dir(pgdata, "")
}

/// A directory's identity, whatever path leads to it.
type DirId = (u64, u64);

fn dir_id(m: &fs::Metadata) -> DirId {
    (m.dev(), m.ino())
}

/// The directories above the data directory (`/` included): a link to one
/// of them leads back into the data directory.
fn enclosing(pgdata: &Path) -> Vec<DirId> {
    let Ok(real) = fs::canonicalize(pgdata) else {
        return Vec::new();
    };
    let mut ids: Vec<DirId> = real
        .ancestors()
        .skip(1)
        .filter_map(|a| fs::metadata(a).ok())
        .map(|m| dir_id(&m))
        .collect();
    ids.reverse();
    ids
}

/// One walk: where it hands entries, and the directories it is inside.
struct Walk<'a> {
    /// The directories on the path being walked, from `/` down; memory
    /// grows with the depth of the tree, not its size.
    open: Vec<DirId>,
    /// Whether to warn about what is not followed.
    warn: bool,
    out: &'a mut dyn FnMut(Entry) -> Result<()>,
}

fn row(path: &str, kind: EntryKind, m: &fs::Metadata, link: Option<String>) -> Entry {
    Entry {
        path: path.to_string(),
        kind,
        size: if kind == EntryKind::File { m.len() } else { 0 },
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        link,
    }
}

fn join_rel(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// In a database directory, the relfilenodes that have an init fork: the
/// unlogged relations, of which only the init fork is backed up. A listing
/// of its own, before the walk's, because an init fork may be listed after
/// the other forks of its relation. (A relation made unlogged between the
/// two listings keeps its other forks in the backup: harmless, recovery
/// resets them from the init fork.)
fn unlogged_relations(dir: &Path, rel: &str) -> std::io::Result<HashSet<String>> {
    let mut set = HashSet::new();
    if !is_database_dir(rel) {
        return Ok(set);
    }
    for ent in fs::read_dir(dir)? {
        let name = ent?.file_name();
        let Some(n) = name.to_str() else { continue };
        let stem = n.split('.').next().unwrap_or(n);
        if let Some((node, "init")) = stem.split_once('_') {
            set.insert(node.to_string());
        }
    }
    Ok(set)
}

/// Is entry `name` of directory `rel` left out of a backup?
fn excluded(rel: &str, name: &str, unlogged: &HashSet<String>) -> bool {
    if excluded_anywhere(name) || (rel.is_empty() && EXCLUDED_TOP_FILES.contains(&name)) {
        return true;
    }
    if !is_database_dir(rel) {
        return false;
    }
    is_temp_relation(name)
        || relfilenode(name).is_some_and(|node| unlogged.contains(node) && !name.contains("_init"))
}

impl Walk<'_> {
    fn warning(&self, what: std::fmt::Arguments<'_>) {
        if self.warn {
            tracing::warn!("{what}");
        }
    }

    /// Walk directory `dir` (found at `rel`) whose identity is `id`, unless
    /// the walk is inside it already; says whether it did.
    fn enter(&mut self, dir: &Path, rel: &str, id: DirId) -> Result<bool> {
        if self.open.contains(&id) {
            return Ok(false);
        }
        self.open.push(id);
        let r = self.dir(dir, rel);
        self.open.pop();
        r.map(|()| true)
    }

    fn dir(&mut self, dir: &Path, rel: &str) -> Result<()> {
        // A directory dropped while we walk (DROP DATABASE): WAL replay redoes it.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty();
        let unlogged = match unlogged_relations(dir, rel) {
            Ok(u) => u,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let top = rel.is_empty();
        // Entries are handled as they are listed, never collected: one database
        // directory holds every relation file of its database.
        for ent in rd {
            let name = name_of(&ent.at(dir)?.file_name());
            if excluded(rel, &name, &unlogged) {
                continue;
            }
            let path = dir.join(path_of(&name));
            let relpath = join_rel(rel, &name);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                self.link(&path, rel, &name, &relpath, &meta)?;
            } else if ft.is_dir() {
                (self.out)(row(&relpath, EntryKind::Dir, &meta, None))?;
                if top && EXCLUDED_DIR_CONTENTS.contains(&name.as_str()) {
                    continue;
                }
                // Only a bind mount of a directory above can loop here.
                if !self.enter(&path, &relpath, dir_id(&meta))? {
                    self.warning(format_args!(
                        "{}: the directory contains itself (a bind mount?): not walked again",
                        path.display()
                    ));
                }
            } else if ft.is_file() {
                (self.out)(row(&relpath, EntryKind::File, &meta, None))?;
            }
            // Sockets, fifos and devices are not part of a data directory's state.
        }
        Ok(())
    }

    /// A symlink (see the module doc): a tablespace, `pg_wal` moved elsewhere,
    /// or a link that is followed.
    fn link(
        &mut self,
        path: &Path,
        rel: &str,
        name: &str,
        relpath: &str,
        meta: &fs::Metadata,
    ) -> Result<()> {
        let target = fs::read_link(path).at(path)?;
        let text = name_of(target.as_os_str());
        let top = rel.is_empty();
        if top && name == "pg_wal" {
            let tmeta = fs::metadata(path).at(path)?;
            return (self.out)(row(relpath, EntryKind::Dir, &tmeta, None));
        }
        let as_link =
            |s: &mut Self| (s.out)(row(relpath, EntryKind::Link, meta, Some(text.clone())));
        if rel == "pg_tblspc" && is_oid(name) {
            as_link(self)?;
            let tmeta = fs::metadata(path).at(path)?;
            if !self.enter(&resolve(path, &target), relpath, dir_id(&tmeta))? {
                self.warning(format_args!(
                    "{}: the tablespace link leads to {}, which contains it: not walked",
                    path.display(),
                    target.display()
                ));
            }
            return Ok(());
        }
        let tmeta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                let (at, to) = (path.display(), target.display());
                self.warning(format_args!(
                    "{at}: the symlink to {to} leads nowhere ({e}): kept as a link"
                ));
                return as_link(self);
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let ft = tmeta.file_type();
        if ft.is_file() {
            return (self.out)(row(relpath, EntryKind::File, &tmeta, Some(text)));
        }
        if !ft.is_dir() {
            self.warning(format_args!(
                "{}: the symlink to {} is not to a file or directory: kept as a link",
                path.display(),
                target.display()
            ));
            return as_link(self);
        }
        let id = dir_id(&tmeta);
        if self.open.contains(&id) {
            self.warning(format_args!(
                "{}: the symlink to {} leads to a directory containing it: kept as a link",
                path.display(),
                target.display()
            ));
            return as_link(self);
        }
        (self.out)(row(relpath, EntryKind::Dir, &tmeta, Some(text.clone())))?;
        if top && EXCLUDED_DIR_CONTENTS.contains(&name) {
            return Ok(());
        }
        self.enter(path, relpath, id).map(drop)
    }
}

/// A tablespace's name in `pg_tblspc`: its oid.
pub(crate) fn is_oid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// Whether manifest path `path` is a tablespace's entry, `pg_tblspc/<oid>`
/// (a link found deeper, inside a tablespace, is an ordinary link).
pub(crate) fn is_tablespace_entry(path: &str) -> bool {
    path.strip_prefix("pg_tblspc/").is_some_and(is_oid)
}

fn resolve(link: &Path, target: &Path) -> PathBuf {
    if target.is_absolute() {
        target.to_path_buf()
    } else {
        link.parent().unwrap_or(Path::new("/")).join(target)
    }
}

/// The longest path a manifest may hold, in bytes (Linux's `PATH_MAX`).
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// What is wrong with a manifest path, if anything: `.` (the data directory
/// itself) or `/`-separated names, none empty, `.` or `..`, without NUL,
/// at most [`MAX_PATH_BYTES`] once mapped back to bytes. Anything else could
/// escape the restore target, or is a name no file system takes.
pub(crate) fn path_fault(path: &str) -> Option<String> {
    if path == "." {
        return None;
    }
    let fault = if path.is_empty() {
        "it is empty".to_string()
    } else if path.contains('\0') {
        "it holds a NUL byte".to_string()
    } else if path.starts_with('/') {
        "it is absolute: it would escape the target directory".to_string()
    } else if path.split('/').any(|c| c == "..") {
        "a `..` in it would escape the target directory".to_string()
    } else if path.split('/').any(|c| c.is_empty() || c == ".") {
        "it has an empty or `.` component".to_string()
    } else if path.len() > MAX_PATH_BYTES && path_of(path).as_os_str().len() > MAX_PATH_BYTES {
        // Bytes that are not UTF-8 take three in the text: measured as bytes.
        format!(
            "it is {} bytes long (at most {MAX_PATH_BYTES})",
            path_of(path).as_os_str().len()
        )
    } else {
        return None;
    };
    Some(fault)
}

/// Refuse manifest paths that could escape the restore target (or that no
/// file system takes): see [`path_fault`].
pub(crate) fn check_manifest_path(path: &str) -> Result<()> {
    match path_fault(path) {
        None => Ok(()),
        Some(fault) => Err(Error::corrupt(
            "manifest",
            format!("path {}: {fault}", shown(path)),
        )),
    }
}

/// A manifest path for a one-line message: quoted and escaped (a NUL or a
/// newline in it is shown, not printed), and cut short when very long.
pub(crate) fn shown(path: &str) -> String {
    const SHOW: usize = 120;
    if path.len() <= SHOW + 40 {
        return format!("{path:?}");
    }
    let end = path
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|&i| i <= SHOW)
        .last()
        .unwrap_or(0);
    format!("{:?}... ({} bytes)", &path[..end], path.len())
}

#[cfg(test)]
mod tests;
