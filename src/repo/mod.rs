//! A repository: the format marker, the catalog, the object store, the
//! repository lock and write sessions, and the WAL archive's objects.
//!
//! ```text
//! REPO/pgstrata.repo     format marker (see crate::format)
//! REPO/pgstrata.key      the wrapped master key, in an encrypted repository
//! REPO/catalog.db        SQLite catalog (+ -wal, -shm)
//! REPO/locks/            the repository lock
//! REPO/packs/ manifests/ wal/ tmp/   objects (keys: crate::format::keys)
//! ```

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod copies;
mod invocation;
mod key;
mod lock;
mod replica;
mod session;
mod stored;
#[cfg(test)]
pub(crate) mod testkit;
mod wal;

pub(crate) use invocation::archive_command_setting;
#[cfg(test)]
pub(crate) use invocation::fake;
pub use invocation::Invocation;
pub use key::{Passphrase, PassphraseSource, PASSPHRASE_ENV};
pub(crate) use lock::ReaderGuard;
pub(crate) use session::WriteSession;
pub(crate) use stored::{PackWriter, SealedPack, Stored};
pub(crate) use wal::{segment_range, timelines, WalStored};

use crate::catalog::Catalog;
use crate::error::{Error, IoContext, Result};
use crate::format::chunk::IdKey;
use crate::format::{self, keys};
use crate::store::{Backend, LocalBackend, Ownership, SealedBackend};
use replica::CatalogCache;

const CATALOG: &str = "catalog.db";

#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyInitialized,
}

/// Where a repository lives.
#[derive(Clone)]
pub enum Location {
    /// A directory on a local (or mounted) file system, catalog included.
    Local(PathBuf),
    /// An object store (S3): every object, and catalog snapshots, are
    /// there; the catalog is worked on in a local cache directory.
    Remote {
        store: Arc<dyn Backend>,
        /// How the repository is named in messages (`s3://bucket/prefix`).
        name: String,
        cache_dir: PathBuf,
    },
}

impl Location {
    pub fn name(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Remote { name, .. } => name.clone(),
        }
    }
}

pub struct Repository {
    /// How messages name the repository.
    name: String,
    /// The repository directory, or the catalog cache of a remote one.
    root: PathBuf,
    own: Ownership,
    /// The store as it is (the marker, the key file and the lock are read
    /// through it before and without unlocking).
    raw: Arc<dyn Backend>,
    backend: Arc<dyn Backend>,
    ids: IdKey,
    /// How the passphrase was given, for commands this one hands on
    /// (`restore_command`); `None` for a plain repository.
    unlocked_by: Option<PassphraseSource>,
    /// The catalog's working copy, for a remote repository.
    cache: Option<CatalogCache>,
}

fn read_marker(raw: &dyn Backend, name: &str) -> Result<Option<u32>> {
    let Some(bytes) = raw.get(keys::MARKER)? else {
        return Ok(None);
    };
    let v = std::str::from_utf8(&bytes)
        .ok()
        .and_then(format::decode_marker)
        .ok_or_else(|| Error::NotARepository(PathBuf::from(name)))?;
    Ok(Some(v))
}

/// Does the store honour conditional writes? The repository lock and the
/// catalog's generations rely on them.
fn probe_conditional_writes(raw: &dyn Backend, name: &str) -> Result<()> {
    let mut r = [0u8; 8];
    format::crypt::random(&mut r)?;
    let key = format!("{}probe-{}", keys::TMP, format::chunk::hex(&r));
    let first = raw.put_new(&key, b"1")?;
    let second = raw.put_new(&key, b"2");
    raw.delete(&key)?;
    match (first, second?) {
        (true, false) => Ok(()),
        _ => Err(Error::refused(format!(
            "the object store of {name} does not honour conditional writes (PUT with \
             If-None-Match: *): pgstrata needs them for its lock and catalog; use a server \
             that supports them (AWS S3, MinIO, Ceph RGW 18+, R2, ...)"
        ))),
    }
}

impl Repository {
    /// Create an empty repository (or say it already is one). With a
    /// passphrase, the repository is encrypted under a new master key.
    pub fn init(
        root: &Path,
        group_readable: bool,
        encrypt: Option<&Passphrase>,
    ) -> Result<InitOutcome> {
        Self::init_at(
            &Location::Local(root.to_path_buf()),
            group_readable,
            encrypt,
        )
    }

    /// [`Repository::init`] anywhere.
    pub fn init_at(
        loc: &Location,
        group_readable: bool,
        encrypt: Option<&Passphrase>,
    ) -> Result<InitOutcome> {
        let name = loc.name();
        let (raw, root, own, cache): (Arc<dyn Backend>, PathBuf, Ownership, _) = match loc {
            Location::Local(root) => {
                if let Some(out) = prepare_local_root(root, group_readable)? {
                    return Ok(out);
                }
                let own = Ownership::for_root(root, group_readable)?;
                (
                    Arc::new(LocalBackend::new(root, own)),
                    root.clone(),
                    own,
                    None,
                )
            }
            Location::Remote {
                store, cache_dir, ..
            } => {
                if let Some(v) = read_marker(store.as_ref(), &name)? {
                    format::check_repo_format(v, &format!("repository {name}"))?;
                    return Ok(InitOutcome::AlreadyInitialized);
                }
                if !store.list("")?.is_empty() {
                    return Err(Error::refused(format!(
                        "{name} is not empty and is not a pgstrata repository"
                    )));
                }
                probe_conditional_writes(store.as_ref(), &name)?;
                let cache = CatalogCache::new(cache_dir, &name)?;
                (
                    store.clone(),
                    cache_dir.clone(),
                    Ownership::private(),
                    Some(cache),
                )
            }
        };
        if let Some(p) = encrypt {
            key::create(raw.as_ref(), p)?;
        }
        let mut repo = Repository {
            name: name.clone(),
            root,
            own,
            raw: raw.clone(),
            backend: raw.clone(),
            ids: IdKey::Plain,
            unlocked_by: None,
            cache: None,
        };
        match cache {
            None => drop(repo.catalog_create()?),
            Some(c) => {
                // The first snapshot is sealed like any other.
                if let Some(p) = encrypt {
                    let keys = key::unlock(raw.as_ref(), p, &name)?;
                    repo.backend = Arc::new(SealedBackend::new(raw.clone(), keys.sealer));
                }
                let first = c.first_file();
                let _ = fs::remove_file(&first);
                drop(Catalog::open(&first, true)?);
                c.publish_first(repo.backend.as_ref(), &first)?;
                repo.cache = Some(c);
            }
        }
        // The marker goes last: a repository without it was never initialised.
        raw.put(
            keys::MARKER,
            format::encode_marker(encrypt.is_some()).as_bytes(),
        )?;
        Ok(InitOutcome::Created)
    }

    /// Open an existing plain repository (an encrypted one is refused:
    /// see [`Repository::open_with`]).
    pub fn open(root: &Path) -> Result<Self> {
        Self::open_with(root, None)
    }

    /// Open an existing repository, unlocking it with the passphrase from
    /// `source` when it is encrypted (the passphrase is read only then).
    /// A wrong passphrase is refused here, before any work.
    pub fn open_with(root: &Path, source: Option<&PassphraseSource>) -> Result<Self> {
        Self::open_at(&Location::Local(root.to_path_buf()), source)
    }

    /// [`Repository::open_with`] anywhere.
    pub fn open_at(loc: &Location, source: Option<&PassphraseSource>) -> Result<Self> {
        let name = loc.name();
        let not_repo = || Error::NotARepository(PathBuf::from(&name));
        let (raw, root, own, cache): (Arc<dyn Backend>, PathBuf, Ownership, _) = match loc {
            Location::Local(root) => {
                if !root.is_dir() {
                    return Err(not_repo());
                }
                let marker = root.join(keys::MARKER);
                let group_readable = match fs::metadata(&marker) {
                    Ok(m) => m.permissions().mode() & 0o040 != 0,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_repo()),
                    Err(e) => return Err(Error::io(marker, e)),
                };
                let own = Ownership::for_root(root, group_readable)?;
                (
                    Arc::new(LocalBackend::new(root, own)),
                    root.clone(),
                    own,
                    None,
                )
            }
            Location::Remote {
                store, cache_dir, ..
            } => (store.clone(), cache_dir.clone(), Ownership::private(), None),
        };
        let v = read_marker(raw.as_ref(), &name)?.ok_or_else(not_repo)?;
        format::check_repo_format(v, &format!("repository {name}"))?;
        // The cache directory is made only for a repository.
        let cache = match (loc, cache) {
            (Location::Remote { cache_dir, .. }, _) => Some(CatalogCache::new(cache_dir, &name)?),
            (_, c) => c,
        };
        let mut repo = Repository {
            name: name.clone(),
            root,
            own,
            raw: raw.clone(),
            backend: raw.clone(),
            ids: IdKey::Plain,
            unlocked_by: None,
            cache,
        };
        let has_key = raw.size(keys::KEY_FILE)?.is_some();
        match (v == format::REPO_FORMAT_ENCRYPTED, has_key) {
            (false, false) => {}
            (true, true) => {
                let src = source.ok_or_else(|| key::no_passphrase(&name))?;
                let keys = key::unlock(raw.as_ref(), &src.read()?, &name)?;
                repo.backend = Arc::new(SealedBackend::new(raw, keys.sealer));
                repo.ids = keys.ids;
                repo.unlocked_by = Some(src.clone());
            }
            (true, false) => {
                return Err(Error::corrupt(
                    format!("repository {name}"),
                    format!("it is encrypted but its key file {} is missing: without it nothing in it can be read", keys::KEY_FILE),
                ))
            }
            (false, true) => {
                return Err(Error::corrupt(
                    format!("repository {name}"),
                    format!("its marker says plain but it has a key file {}", keys::KEY_FILE),
                ))
            }
        }
        Ok(repo)
    }

    /// How content ids are derived here (keyed in an encrypted repository):
    /// key material, which stays in this layer (see [`Stored`]).
    #[cfg(test)]
    pub(in crate::repo) fn ids(&self) -> &IdKey {
        &self.ids
    }

    pub fn is_encrypted(&self) -> bool {
        self.unlocked_by.is_some()
    }

    /// How the passphrase was given, for a command run later (`None` for a
    /// plain repository).
    pub fn passphrase_source(&self) -> Option<&PassphraseSource> {
        self.unlocked_by.as_ref()
    }

    /// Wrap the master key under a new passphrase; no object changes.
    pub fn change_passphrase(&self, new: &Passphrase) -> Result<()> {
        let src = self
            .unlocked_by
            .as_ref()
            .ok_or_else(|| Error::refused(format!("repository {} is not encrypted", self.name)))?;
        key::rewrap(self.raw.as_ref(), &src.read()?, new, &self.name)
    }

    /// The repository directory; for a remote repository, its catalog
    /// cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How messages name the repository: its directory or its URL.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Is the repository in an object store (catalog in a local cache)?
    pub fn is_remote(&self) -> bool {
        self.cache.is_some()
    }

    /// The store without sealing (the lock lives there).
    pub(crate) fn raw(&self) -> Arc<dyn Backend> {
        self.raw.clone()
    }

    /// The repository's objects, for commands: the one reader (and deleter)
    /// of stored data, each read verified and opened with the keys.
    pub fn stored(&self) -> Stored {
        Stored::new(self.backend.clone(), self.ids)
    }

    /// The object store (sealing, in an encrypted repository): for this
    /// layer only; commands go through [`Repository::stored`].
    #[cfg(not(any(test, feature = "testing")))]
    pub(in crate::repo) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The object store, for tests that damage or watch objects.
    #[cfg(any(test, feature = "testing"))]
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The object store, for tests that wrap it (fault injection).
    #[cfg(any(test, feature = "testing"))]
    pub fn backend_arc(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    /// Swap the object store (crash tests use a fault-injecting one).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_backend(&mut self, backend: Arc<dyn Backend>) {
        self.backend = backend;
    }

    pub fn ownership(&self) -> Ownership {
        self.own
    }

    /// The catalog file; for a remote repository, the working copy of the
    /// newest snapshot (fetched first when stale).
    pub fn catalog_path(&self) -> Result<PathBuf> {
        match &self.cache {
            None => Ok(self.root.join(CATALOG)),
            Some(c) => self.fetching(|| c.current(self.backend())),
        }
    }

    pub fn catalog(&self) -> Result<Catalog> {
        self.catalog_with_path().map(|(cat, _)| cat)
    }

    /// The catalog and its file, for read-only connections beside it.
    pub fn catalog_with_path(&self) -> Result<(Catalog, PathBuf)> {
        let path = self.catalog_path()?;
        let cat = Catalog::open(&path, false)?;
        if self.cache.is_none() {
            self.fix_catalog_owner()?;
        }
        Ok((cat, path))
    }

    /// Retry once when a snapshot listed a moment ago was removed by a
    /// newer publish before it could be fetched.
    fn fetching<T>(&self, f: impl Fn() -> Result<T>) -> Result<T> {
        match f() {
            Err(Error::MissingObject { .. }) => f(),
            r => r,
        }
    }

    pub(crate) fn catalog_create(&self) -> Result<Catalog> {
        let cat = Catalog::open(&self.catalog_path()?, true)?;
        if self.cache.is_none() {
            self.fix_catalog_owner()?;
        }
        Ok(cat)
    }

    /// SQLite creates its files 0644 (less the umask) with the caller's
    /// owner: give them the repository's mode, and when root runs a command,
    /// hand them to the repository's owner so the server's user can still
    /// archive WAL.
    fn fix_catalog_owner(&self) -> Result<()> {
        for suffix in ["", "-wal", "-shm"] {
            let p = self.root.join(format!("{CATALOG}{suffix}"));
            let Ok(meta) = fs::metadata(&p) else {
                continue;
            };
            if meta.permissions().mode() & 0o777 != self.own.file_mode {
                match fs::set_permissions(&p, fs::Permissions::from_mode(self.own.file_mode)) {
                    Ok(()) => {}
                    // Not ours to change (a group member reading the repository).
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                    Err(e) => return Err(Error::io(p, e)),
                }
            }
            if self.own.chown_to.is_some() {
                self.own.apply(&p)?;
            }
        }
        Ok(())
    }
}

/// Make or check a local repository directory for `init`;
/// `Some` when there is nothing to do.
fn prepare_local_root(root: &Path, group_readable: bool) -> Result<Option<InitOutcome>> {
    let mode = if group_readable { 0o750 } else { 0o700 };
    if root.exists() {
        if !root.is_dir() {
            return Err(Error::invalid(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let probe = LocalBackend::new(root, Ownership::private());
        if let Some(v) = read_marker(&probe, &root.display().to_string())? {
            format::check_repo_format(v, &format!("repository {}", root.display()))?;
            return Ok(Some(InitOutcome::AlreadyInitialized));
        }
        if fs::read_dir(root).at(root)?.next().is_some() {
            return Err(Error::refused(format!(
                "{} exists, is not empty and is not a pgstrata repository",
                root.display()
            )));
        }
    } else {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(root)
            .at(root)?;
    }
    // The root's mode is the repository's, whatever umask or the caller
    // who created the empty directory chose.
    fs::set_permissions(root, fs::Permissions::from_mode(mode)).at(root)?;
    Ok(None)
}

/// Check a cluster name is usable as a directory component.
pub(crate) fn check_cluster_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        || name.starts_with('.')
    {
        return Err(Error::invalid(format!(
            "invalid cluster name {name:?}: use letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn remote(dir: &Path, cache: &str) -> Location {
        let bucket = dir.join("bucket");
        fs::create_dir_all(&bucket).unwrap();
        Location::Remote {
            store: Arc::new(LocalBackend::new(bucket, Ownership::private())),
            name: "s3://bucket/prefix".into(),
            cache_dir: dir.join(cache),
        }
    }

    #[test]
    fn a_remote_repository_needs_only_the_bucket() {
        let d = tempfile::tempdir().unwrap();
        let a = remote(d.path(), "cache-a");
        assert_eq!(
            Repository::init_at(&a, false, None).unwrap(),
            InitOutcome::Created
        );
        assert_eq!(
            Repository::init_at(&a, false, None).unwrap(),
            InitOutcome::AlreadyInitialized
        );
        let ra = Repository::open_at(&a, None).unwrap();
        assert!(ra.is_remote());
        let session = ra.begin_write("backup", Duration::ZERO).unwrap();
        // One holder at a time, whichever host.
        let rb = Repository::open_at(&remote(d.path(), "cache-b"), None).unwrap();
        let e = rb
            .begin_write("expire", Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("locked by another pgstrata"), "{e}");
        ra.catalog()
            .unwrap()
            .clusters()
            .bind("main", 42, 150000)
            .unwrap();
        // Not visible elsewhere before it is published...
        assert!(rb.catalog().unwrap().clusters().list().unwrap().is_empty());
        session.commit().unwrap();
        // ...and visible after, from a cache that never saw it.
        assert_eq!(rb.catalog().unwrap().clusters().list().unwrap().len(), 1);
        let rc = Repository::open_at(&remote(d.path(), "cache-c"), None).unwrap();
        assert_eq!(rc.catalog().unwrap().clusters().list().unwrap().len(), 1);
        // The cache is a cache: removing it loses nothing.
        drop((ra, rb, rc));
        fs::remove_dir_all(d.path().join("cache-a")).unwrap();
        let ra = Repository::open_at(&a, None).unwrap();
        assert_eq!(ra.catalog().unwrap().clusters().list().unwrap().len(), 1);
        // A prefix holding other things is not made a repository.
        let other = Location::Remote {
            store: Arc::new(LocalBackend::new(d.path(), Ownership::private())),
            name: "s3://bucket".into(),
            cache_dir: d.path().join("cache-o"),
        };
        let e = Repository::init_at(&other, false, None).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        let e = Repository::open_at(&other, None).err().unwrap();
        assert!(matches!(e, Error::NotARepository(_)), "{e}");
    }

    /// A store that ignores `If-None-Match` (writes always succeed).
    struct Careless(LocalBackend);
    impl Backend for Careless {
        fn put(&self, k: &str, d: &[u8]) -> Result<()> {
            self.0.put(k, d)
        }
        fn put_new_from(&self, k: &str, d: &dyn crate::store::backend::Source) -> Result<bool> {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut d.reader()?, &mut all).unwrap();
            self.0.put(k, &all).map(|_| true)
        }
        fn writer(&self) -> Result<Box<dyn crate::store::backend::ObjectWriter>> {
            self.0.writer()
        }
        fn get(&self, k: &str) -> Result<Option<Vec<u8>>> {
            self.0.get(k)
        }
        fn get_range(&self, k: &str, o: u64, l: usize) -> Result<Vec<u8>> {
            self.0.get_range(k, o, l)
        }
        fn open(&self, k: &str) -> Result<Box<dyn std::io::Read + Send>> {
            self.0.open(k)
        }
        fn size(&self, k: &str) -> Result<Option<u64>> {
            self.0.size(k)
        }
        fn modified(&self, k: &str) -> Result<Option<std::time::SystemTime>> {
            self.0.modified(k)
        }
        fn list(&self, p: &str) -> Result<Vec<(String, u64)>> {
            self.0.list(p)
        }
        fn delete(&self, k: &str) -> Result<()> {
            self.0.delete(k)
        }
    }

    #[test]
    fn a_store_without_conditional_writes_is_refused_at_init() {
        let d = tempfile::tempdir().unwrap();
        let loc = Location::Remote {
            store: Arc::new(Careless(LocalBackend::new(d.path(), Ownership::private()))),
            name: "s3://careless/p".into(),
            cache_dir: d.path().join("cache"),
        };
        let e = Repository::init_at(&loc, false, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not honour conditional writes"), "{e}");
        assert!(fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .all(|e| e.file_name() != keys::MARKER));
    }

    #[test]
    fn an_encrypted_remote_catalog_is_sealed() {
        let d = tempfile::tempdir().unwrap();
        let loc = remote(d.path(), "cache");
        let pass = Passphrase::new("remote secret").unwrap();
        Repository::init_at(&loc, false, Some(&pass)).unwrap();
        let e = Repository::open_at(&loc, None).err().unwrap();
        assert!(e.to_string().contains("is encrypted"), "{e}");
        let src = PassphraseSource::Env("PGSTRATA_TEST_REMOTE_PASS".into());
        std::env::set_var("PGSTRATA_TEST_REMOTE_PASS", "remote secret");
        let r = Repository::open_at(&loc, Some(&src)).unwrap();
        let session = r.begin_write("backup", Duration::ZERO).unwrap();
        r.catalog()
            .unwrap()
            .clusters()
            .bind("secret-cluster-name", 42, 150000)
            .unwrap();
        session.commit().unwrap();
        for e in walkdir::WalkDir::new(d.path().join("bucket")) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let b = fs::read(e.path()).unwrap();
                assert!(
                    !b.windows(6).any(|w| w == b"SQLite" || w == b"secret"),
                    "{}",
                    e.path().display()
                );
            }
        }
        fs::remove_dir_all(d.path().join("cache")).unwrap();
        let r = Repository::open_at(&loc, Some(&src)).unwrap();
        assert_eq!(
            r.catalog().unwrap().clusters().list().unwrap()[0].name,
            "secret-cluster-name"
        );
    }
}
