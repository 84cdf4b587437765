//! A repository: the format marker, the catalog, the object store, the
//! repository lock and the WAL archive's objects.
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

mod key;
mod lock;
#[cfg(test)]
pub(crate) mod testkit;
mod wal;

pub use key::{Passphrase, PassphraseSource, PASSPHRASE_ENV};
pub use lock::RepoLock;
pub use wal::{segment_range, timelines, WalStored};

use crate::catalog::Catalog;
use crate::error::{Error, IoContext, Result};
use crate::format::chunk::IdKey;
use crate::format::{self, keys};
use crate::store::{Backend, LocalBackend, Ownership, SealedBackend};

const CATALOG: &str = "catalog.db";

#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyInitialized,
}

pub struct Repository {
    root: PathBuf,
    own: Ownership,
    backend: Arc<dyn Backend>,
    ids: IdKey,
    /// How the passphrase was given, for commands this one hands on
    /// (`restore_command`); `None` for a plain repository.
    unlocked_by: Option<PassphraseSource>,
}

fn read_marker(root: &Path) -> Result<Option<u32>> {
    let path = root.join(keys::MARKER);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let v =
        format::decode_marker(&text).ok_or_else(|| Error::NotARepository(root.to_path_buf()))?;
    Ok(Some(v))
}

impl Repository {
    /// Create an empty repository (or say it already is one). With a
    /// passphrase, the repository is encrypted under a new master key.
    pub fn init(
        root: &Path,
        group_readable: bool,
        encrypt: Option<&Passphrase>,
    ) -> Result<InitOutcome> {
        if root.exists() {
            if !root.is_dir() {
                return Err(Error::invalid(format!(
                    "{} is not a directory",
                    root.display()
                )));
            }
            if let Some(v) = read_marker(root)? {
                check_version(root, v)?;
                return Ok(InitOutcome::AlreadyInitialized);
            }
            if fs::read_dir(root).at(root)?.next().is_some() {
                return Err(Error::refused(format!(
                    "{} exists, is not empty and is not a pgstrata repository",
                    root.display()
                )));
            }
        } else {
            let mode = if group_readable { 0o750 } else { 0o700 };
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(root)
                .at(root)?;
        }
        // The root's mode is the repository's, whatever umask or the caller
        // who created the empty directory chose.
        let mode = if group_readable { 0o750 } else { 0o700 };
        fs::set_permissions(root, fs::Permissions::from_mode(mode)).at(root)?;
        let own = Ownership::for_root(root, group_readable)?;
        let raw = LocalBackend::new(root, own);
        if let Some(p) = encrypt {
            key::create(&raw, p)?;
        }
        let repo = Repository {
            root: root.to_path_buf(),
            own,
            backend: Arc::new(LocalBackend::new(root, own)),
            ids: IdKey::Plain,
            unlocked_by: None,
        };
        drop(repo.catalog_create()?);
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
        if !root.is_dir() {
            return Err(Error::NotARepository(root.to_path_buf()));
        }
        let v = read_marker(root)?.ok_or_else(|| Error::NotARepository(root.to_path_buf()))?;
        check_version(root, v)?;
        let marker = root.join(keys::MARKER);
        let meta = fs::metadata(&marker).at(&marker)?;
        let group_readable =
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o040 != 0;
        let own = Ownership::for_root(root, group_readable)?;
        let raw = Arc::new(LocalBackend::new(root, own));
        let mut repo = Repository {
            root: root.to_path_buf(),
            own,
            backend: raw.clone(),
            ids: IdKey::Plain,
            unlocked_by: None,
        };
        let has_key = raw.size(keys::KEY_FILE)?.is_some();
        match (v == format::REPO_FORMAT_ENCRYPTED, has_key) {
            (false, false) => {}
            (true, true) => {
                let src = source.ok_or_else(|| key::no_passphrase(root))?;
                let keys = key::unlock(raw.as_ref(), &src.read()?, root)?;
                repo.backend = Arc::new(SealedBackend::new(raw, keys.sealer));
                repo.ids = keys.ids;
                repo.unlocked_by = Some(src.clone());
            }
            (true, false) => {
                return Err(Error::corrupt(
                    format!("repository {}", root.display()),
                    format!("it is encrypted but its key file {} is missing: without it nothing in it can be read", keys::KEY_FILE),
                ))
            }
            (false, true) => {
                return Err(Error::corrupt(
                    format!("repository {}", root.display()),
                    format!("its marker says plain but it has a key file {}", keys::KEY_FILE),
                ))
            }
        }
        Ok(repo)
    }

    /// How content ids are derived here (keyed in an encrypted repository).
    pub fn ids(&self) -> &IdKey {
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
        let src = self.unlocked_by.as_ref().ok_or_else(|| {
            Error::refused(format!(
                "repository {} is not encrypted",
                self.root.display()
            ))
        })?;
        let raw = LocalBackend::new(&self.root, self.own);
        key::rewrap(&raw, &src.read()?, new, &self.root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

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

    pub fn catalog_path(&self) -> PathBuf {
        self.root.join(CATALOG)
    }

    pub fn catalog(&self) -> Result<Catalog> {
        let cat = Catalog::open(&self.catalog_path(), false)?;
        self.fix_catalog_owner()?;
        Ok(cat)
    }

    pub(crate) fn catalog_create(&self) -> Result<Catalog> {
        let cat = Catalog::open(&self.catalog_path(), true)?;
        self.fix_catalog_owner()?;
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

fn check_version(root: &Path, v: u32) -> Result<()> {
    format::check_repo_format(v, &format!("repository {}", root.display()))
}

/// Check a cluster name is usable as a directory component.
pub fn check_cluster_name(name: &str) -> Result<()> {
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
