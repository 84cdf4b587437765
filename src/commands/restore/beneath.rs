//! Paths beneath the restore's roots.
//!
//! Invariant: every path a restore creates, opens, removes or changes
//! inside the target (or a tablespace directory, or with `link_all` a
//! link's destination) is resolved from that root's directory handle with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and its last component
//! is then acted on with an `*at` call that does not follow it. A symbolic
//! link or `..` met on the way, whether the catalog or the target put it
//! there, is an error, never a way out: nothing outside the roots is
//! written even if a check made earlier was missed. Only the roots
//! themselves are opened by absolute path. Removing an entry never follows
//! it: a symbolic link is removed, never what it points to.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::pg::datadir::path_of;

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// One directory restore writes beneath, open.
#[derive(Debug)]
pub(super) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Open the directory `path` (the one place a path is taken whole).
    pub(super) fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(path, dir_flags(), Mode::empty())
            .map_err(|e| Error::io(path, e.into()))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `rest` as a path to show in messages.
    pub(super) fn shown(&self, rest: &Path) -> PathBuf {
        if rest.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rest)
        }
    }

    fn err(&self, rest: &Path, e: Errno) -> Error {
        if e == Errno::LOOP || e == Errno::XDEV {
            return Error::refused(format!(
                "{}: a symbolic link or `..` on the way leads out of {}; restore does not \
                 follow it",
                self.shown(rest).display(),
                self.path.display()
            ));
        }
        Error::io(self.shown(rest), e.into())
    }

    /// `openat2` beneath this root, retried while the kernel asks (a rename
    /// elsewhere on the file system can make it answer EAGAIN).
    fn open_raw(
        &self,
        rest: &Path,
        flags: OFlags,
        mode: u32,
    ) -> std::result::Result<OwnedFd, Errno> {
        let p: &Path = if rest.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rest
        };
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(
                &self.fd,
                p,
                flags | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
                resolve(),
            ) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r,
            }
        }
    }

    /// The directory `rest` (empty: the root itself).
    pub(super) fn dir(&self, rest: &Path) -> Result<OwnedFd> {
        self.open_raw(rest, dir_flags(), 0)
            .map_err(|e| self.err(rest, e))
    }

    /// The directory holding `rest`, and `rest`'s last name.
    pub(super) fn parent<'a>(&self, rest: &'a Path) -> Result<(OwnedFd, &'a OsStr)> {
        let name = match rest.components().next_back() {
            Some(Component::Normal(n)) => n,
            _ => {
                return Err(Error::refused(format!(
                    "{}: not a name beneath {}",
                    self.shown(rest).display(),
                    self.path.display()
                )))
            }
        };
        let parent = rest.parent().unwrap_or(Path::new(""));
        Ok((self.dir(parent)?, name))
    }

    /// Create the file `rest`, which must not exist.
    pub(super) fn create_new(&self, rest: &Path, mode: u32) -> Result<File> {
        self.open_raw(
            rest,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            mode,
        )
        .map(File::from)
        .map_err(|e| self.err(rest, e))
    }

    /// Remove whatever `rest` is (without following it). False if it was not
    /// there.
    pub(super) fn remove(&self, rest: &Path) -> Result<bool> {
        let (dir, name) = self.parent(rest)?;
        match remove_entry(dir.as_fd(), name) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(self.err(rest, e)),
        }
    }

    /// Make `rest` a directory, creating what is missing on the way and
    /// replacing a file or symbolic link where a directory belongs.
    pub(super) fn ensure_dir(&self, rest: &Path) -> Result<()> {
        let mut cur = self.dir(Path::new(""))?;
        for c in rest.components() {
            let Component::Normal(name) = c else {
                return Err(self.err(rest, Errno::XDEV));
            };
            let open = |at: &OwnedFd| {
                rustix::fs::openat(at, name, dir_flags() | OFlags::NOFOLLOW, Mode::empty())
            };
            cur = match open(&cur) {
                Ok(fd) => fd,
                Err(e) => {
                    if e == Errno::NOTDIR || e == Errno::LOOP {
                        remove_entry(cur.as_fd(), name).map_err(|e| self.err(rest, e))?;
                    } else if e != Errno::NOENT {
                        return Err(self.err(rest, e));
                    }
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.err(rest, e)),
                    }
                    open(&cur).map_err(|e| self.err(rest, e))?
                }
            };
        }
        Ok(())
    }

    /// Make `rest` a symbolic link to `to`, replacing what is there.
    pub(super) fn symlink(&self, rest: &Path, to: &Path) -> Result<()> {
        let (dir, name) = self.parent(rest)?;
        match remove_entry(dir.as_fd(), name) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(self.err(rest, e)),
        }
        rustix::fs::symlinkat(to, &dir, name).map_err(|e| self.err(rest, e))
    }

    /// Owner of `rest` itself (a link's, not its destination's); nothing if
    /// it is not there.
    pub(super) fn chown_entry(&self, rest: &Path, uid: u32, gid: u32) -> Result<()> {
        let (dir, name) = self.parent(rest)?;
        let (u, g) = ids(uid, gid);
        match rustix::fs::chownat(&dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.err(rest, e)),
        }
    }

    /// The contents and mode of the regular file `rest`. Anything else
    /// there (a symbolic link above all) is removed unread: `None`.
    pub(super) fn take_regular(&self, rest: &Path) -> Result<Option<(Vec<u8>, u32)>> {
        let (dir, name) = self.parent(rest)?;
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.err(rest, e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.err(rest, e))?;
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut File::from(fd), &mut data)
                    .map_err(|e| Error::io(self.shown(rest), e))?;
                return Ok(Some((data, st.st_mode & 0o7777)));
            }
            Ok(_) => {}
        }
        remove_entry(dir.as_fd(), name).map_err(|e| self.err(rest, e))?;
        Ok(None)
    }

    /// Write the regular file `rest` (replacing its contents) and fsync it.
    pub(super) fn write_durably(&self, rest: &Path, data: &[u8], mode: u32) -> Result<()> {
        let fd = self
            .open_raw(
                rest,
                OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW,
                mode,
            )
            .map_err(|e| self.err(rest, e))?;
        let mut f = File::from(fd);
        std::io::Write::write_all(&mut f, data).map_err(|e| Error::io(self.shown(rest), e))?;
        f.sync_all().map_err(|e| Error::io(self.shown(rest), e))
    }

    pub(super) fn syncfs(&self) -> Result<()> {
        rustix::fs::syncfs(&self.fd).map_err(|e| Error::io(&self.path, e.into()))
    }
}

pub(super) fn ids(uid: u32, gid: u32) -> (rustix::fs::Uid, rustix::fs::Gid) {
    (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    )
}

/// The names in directory `dir` with their types (not followed).
pub(super) fn list(dir: BorrowedFd<'_>) -> std::result::Result<Vec<(OsString, FileType)>, Errno> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let name = OsStr::from_bytes(e.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let ft = match e.file_type() {
            FileType::Unknown => FileType::from_raw_mode(
                rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?.st_mode,
            ),
            t => t,
        };
        out.push((name.to_os_string(), ft));
    }
    Ok(out)
}

/// Remove the entry `name` of `dir`: a file or symbolic link is unlinked
/// (never followed), a directory emptied the same way and removed.
pub(super) fn remove_entry(dir: BorrowedFd<'_>, name: &OsStr) -> std::result::Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => {}
        r => return r,
    }
    let sub = rustix::fs::openat(dir, name, dir_flags() | OFlags::NOFOLLOW, Mode::empty())?;
    for (n, _) in list(sub.as_fd())? {
        remove_entry(sub.as_fd(), &n)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Where a manifest path's data goes: beneath which root.
#[derive(Debug)]
struct Mapped {
    /// The manifest path of the link (`pg_tblspc/<oid>`, or a link restored
    /// as a link with its content at its destination).
    prefix: String,
    root: usize,
    /// For a linked file: its name in the root (its destination's directory).
    file: Option<OsString>,
    /// A delta restore removes what the backup lacks beneath it.
    walk: bool,
}

/// The target and the other directories a restore writes beneath, open.
#[derive(Debug)]
pub(super) struct Roots {
    roots: Vec<Root>,
    mapped: Vec<Mapped>,
}

impl Roots {
    pub(super) fn new(target: Root) -> Roots {
        Roots {
            roots: vec![target],
            mapped: Vec::new(),
        }
    }

    /// Put what is beneath manifest path `prefix` beneath `root` (for a
    /// linked file, `file` is its name in `root`); `walk`: a delta restore
    /// removes what the backup lacks there.
    pub(super) fn map(&mut self, prefix: &str, root: Root, file: Option<OsString>, walk: bool) {
        self.roots.push(root);
        self.mapped.push(Mapped {
            prefix: prefix.to_string(),
            root: self.roots.len() - 1,
            file,
            walk,
        });
    }

    pub(super) fn target(&self) -> &Root {
        &self.roots[0]
    }

    pub(super) fn all(&self) -> &[Root] {
        &self.roots
    }

    /// The roots other than the target that a delta restore cleans, with
    /// their manifest paths.
    pub(super) fn walked(&self) -> impl Iterator<Item = (&str, &Root)> {
        self.mapped
            .iter()
            .filter(|m| m.walk && m.file.is_none())
            .map(|m| (m.prefix.as_str(), &self.roots[m.root]))
    }

    /// Whether `path` is a link whose content has a root of its own.
    pub(super) fn is_mapped(&self, path: &str) -> bool {
        self.mapped.iter().any(|m| m.prefix == path)
    }

    /// Where the content of manifest path `path` is: a root, and the path
    /// beneath it (empty: the root itself).
    pub(super) fn locate(&self, path: &str) -> (&Root, PathBuf) {
        if path == "." {
            return (self.target(), PathBuf::new());
        }
        let best = self
            .mapped
            .iter()
            .filter(|m| {
                path == m.prefix
                    || (m.file.is_none()
                        && path.len() > m.prefix.len()
                        && path.starts_with(m.prefix.as_str())
                        && path.as_bytes()[m.prefix.len()] == b'/')
            })
            .max_by_key(|m| m.prefix.len());
        match best {
            Some(m) if path == m.prefix => (
                &self.roots[m.root],
                m.file.as_ref().map(PathBuf::from).unwrap_or_default(),
            ),
            Some(m) => (&self.roots[m.root], path_of(&path[m.prefix.len() + 1..])),
            None => (self.target(), path_of(path)),
        }
    }

    /// Where the entry `path` itself is (for a link with a root of its own:
    /// the link, not its content).
    pub(super) fn locate_entry(&self, path: &str) -> (&Root, PathBuf) {
        if !self.is_mapped(path) {
            return self.locate(path);
        }
        match path.rsplit_once('/') {
            Some((parent, name)) => {
                let (root, rest) = self.locate(parent);
                (root, rest.join(path_of(name)))
            }
            None => (self.target(), path_of(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_resolves_out_of_a_root() {
        let t = tempfile::tempdir().unwrap();
        let (inside, outside) = (t.path().join("in"), t.path().join("out"));
        std::fs::create_dir_all(inside.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("evil")).unwrap();
        std::os::unix::fs::symlink("../out", inside.join("d/up")).unwrap();
        let r = Root::open(&inside).unwrap();
        for p in ["evil/secret", "d/up/secret", "../out/secret"] {
            let e = r.create_new(Path::new(p), 0o600).unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{p}: {e}");
            assert!(r.write_durably(Path::new(p), b"x", 0o600).is_err(), "{p}");
        }
        assert!(r.ensure_dir(Path::new("../out/x")).is_err());
        // A link where a directory belongs is replaced, never followed.
        r.ensure_dir(Path::new("evil/sub")).unwrap();
        assert!(inside.join("evil/sub").is_dir());
        assert!(!outside.join("sub").exists());
        // Removing a link to a directory leaves the directory alone.
        r.remove(Path::new("d")).unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep");
        // A link in place of a regular file is removed unread.
        std::os::unix::fs::symlink(outside.join("secret"), inside.join("conf")).unwrap();
        assert!(r.take_regular(Path::new("conf")).unwrap().is_none());
        r.write_durably(Path::new("conf"), b"mine", 0o600).unwrap();
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"keep");
        assert_eq!(std::fs::read(inside.join("conf")).unwrap(), b"mine");
    }

    #[test]
    fn locate_picks_the_deepest_root() {
        let t = tempfile::tempdir().unwrap();
        let mut roots = Roots::new(Root::open(t.path()).unwrap());
        roots.map("pg_tblspc/16390", Root::open(t.path()).unwrap(), None, true);
        roots.map(
            "conf.d/f",
            Root::open(t.path()).unwrap(),
            Some("g".into()),
            false,
        );
        assert_eq!(roots.locate("base/1").1, PathBuf::from("base/1"));
        assert_eq!(
            roots.locate("pg_tblspc/16390/PG_15/1").1,
            PathBuf::from("PG_15/1")
        );
        assert_eq!(
            roots.locate("pg_tblspc/163900/x").1,
            PathBuf::from("pg_tblspc/163900/x")
        );
        assert_eq!(roots.locate("pg_tblspc/16390").1, PathBuf::new());
        assert_eq!(
            roots.locate_entry("pg_tblspc/16390").1,
            PathBuf::from("pg_tblspc/16390")
        );
        assert_eq!(roots.locate("conf.d/f").1, PathBuf::from("g"));
        assert_eq!(roots.locate_entry("conf.d/f").1, PathBuf::from("conf.d/f"));
    }
}
