//! The data directory rules: which files a base backup copies.
//!
//! Follows PostgreSQL's own list (`basebackup.c`): the contents of `pg_wal`,
//! `pg_dynshmem`, `pg_notify`, `pg_serial`, `pg_snapshots`, `pg_stat_tmp`,
//! `pg_subtrans` and `pg_replslot` are skipped but the directories kept;
//! `postmaster.pid`, `postmaster.opts`, `pg_internal.init*`, `pgsql_tmp*`,
//! temporary relations, the non-init forks of unlogged relations, and stale
//! `backup_label` / `tablespace_map` / `backup_manifest` files are skipped.
//! Tablespaces (`pg_tblspc/<oid>` symlinks) are recorded as links and their
//! contents walked under `pg_tblspc/<oid>/`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// What a data directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Link,
}

/// One entry of a data directory, as the walk found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
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
    /// Symlink target.
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
pub fn name_of(os: &OsStr) -> String {
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
pub fn path_of(name: &str) -> PathBuf {
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
pub const EXCLUDED_DIR_CONTENTS: &[&str] = &[
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
pub const RESTORE_MARKER: &str = ".pgstrata-restore-incomplete";

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
pub fn walk_each(pgdata: &Path, each: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
    let meta = fs::metadata(pgdata).at(pgdata)?;
    each(row(".", EntryKind::Dir, &meta, None))?;
    walk_dir(pgdata, "", each)
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

fn walk_dir(dir: &Path, rel: &str, out: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
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
            walk_link(&path, rel, &name, &relpath, &meta, out)?;
        } else if ft.is_dir() {
            out(row(&relpath, EntryKind::Dir, &meta, None))?;
            if top && EXCLUDED_DIR_CONTENTS.contains(&name.as_str()) {
                continue;
            }
            walk_dir(&path, &relpath, out)?;
        } else if ft.is_file() {
            out(row(&relpath, EntryKind::File, &meta, None))?;
        }
        // Sockets, fifos and devices are not part of a data directory's state.
    }
    Ok(())
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

/// A symlink: a tablespace (recorded as a link and walked into), `pg_wal`
/// moved elsewhere (`initdb -X`, recorded as a directory), or any other link
/// (recorded as a link).
fn walk_link(
    path: &Path,
    rel: &str,
    name: &str,
    relpath: &str,
    meta: &fs::Metadata,
    out: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<()> {
    let target = fs::read_link(path).at(path)?;
    if rel.is_empty() && name == "pg_wal" {
        let tmeta = fs::metadata(path).at(path)?;
        out(row(relpath, EntryKind::Dir, &tmeta, None))?;
        return Ok(());
    }
    out(row(
        relpath,
        EntryKind::Link,
        meta,
        Some(name_of(target.as_os_str())),
    ))?;
    if rel == "pg_tblspc" {
        fs::metadata(path).at(path)?;
        walk_dir(&resolve(path, &target), relpath, out)?;
    }
    Ok(())
}

fn resolve(link: &Path, target: &Path) -> PathBuf {
    if target.is_absolute() {
        target.to_path_buf()
    } else {
        link.parent().unwrap_or(Path::new("/")).join(target)
    }
}

/// Refuse manifest paths that could escape the restore target.
pub fn check_manifest_path(path: &str) -> Result<()> {
    if path == "." {
        return Ok(());
    }
    if path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::corrupt(
            "manifest",
            format!("path {path:?} would escape the target directory"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_temp_relation("t3_16384"));
        assert!(is_temp_relation("t12_16384_fsm"));
        assert!(!is_temp_relation("16384"));
        assert!(!is_temp_relation("tablespace_map"));
        assert_eq!(relfilenode("16384_vm.2"), Some("16384"));
        assert_eq!(relfilenode("PG_VERSION"), None);
        assert!(is_database_dir("base/1"));
        assert!(is_database_dir("global"));
        assert!(is_database_dir("pg_tblspc/16390/PG_15_202209061/16384"));
        assert!(!is_database_dir("base"));
        assert!(!is_database_dir("pg_xact"));
    }

    #[test]
    fn walk_applies_exclusions() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for dir in [
            "base/5",
            "global",
            "pg_wal/archive_status",
            "pg_stat_tmp",
            "pg_xact",
        ] {
            fs::create_dir_all(p.join(dir)).unwrap();
        }
        for f in [
            "PG_VERSION",
            "postmaster.pid",
            "backup_label",
            "base/5/100",
            "base/5/100_fsm",
            "base/5/200",
            "base/5/200_init",
            "base/5/200_fsm",
            "base/5/t3_300",
            "base/5/pg_internal.init",
            "global/pg_control",
            "pg_wal/000000010000000000000001",
            "pg_stat_tmp/x",
            "pg_xact/0000",
        ] {
            fs::write(p.join(f), b"x").unwrap();
        }
        let paths: Vec<String> = walk(p).unwrap().into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            vec![
                ".",
                "PG_VERSION",
                "base",
                "base/5",
                "base/5/100",
                "base/5/100_fsm",
                "base/5/200_init",
                "global",
                "global/pg_control",
                "pg_stat_tmp",
                "pg_wal",
                "pg_xact",
                "pg_xact/0000",
            ]
        );
    }

    #[test]
    fn names_that_are_not_utf8_round_trip() {
        let cases: Vec<Vec<u8>> = vec![
            b"plain/ascii".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            b"caf\xe9".to_vec(),
            b"\xff\xfe/\x80x".to_vec(),
            "\u{f780}\u{f7ff}\u{f77f}".as_bytes().to_vec(),
            b"\xef\x9e\x80\xef\x9e".to_vec(),
        ];
        for b in cases {
            let os = OsStr::from_bytes(&b);
            let name = name_of(os);
            assert_eq!(
                path_of(&name).as_os_str().as_bytes(),
                b.as_slice(),
                "{name:?}"
            );
            assert!(!name.contains('\0'));
        }
        assert_eq!(name_of(OsStr::new("base/1/1259")), "base/1/1259");
        assert_ne!(
            name_of(OsStr::from_bytes(b"\xe9")),
            name_of(OsStr::new("\u{e9}"))
        );
    }

    #[test]
    fn manifest_paths() {
        assert!(check_manifest_path("base/1/123").is_ok());
        assert!(check_manifest_path(".").is_ok());
        for bad in ["../x", "/etc/passwd", "base/../../x", "a//b", ""] {
            assert!(check_manifest_path(bad).is_err(), "{bad}");
        }
    }
}
