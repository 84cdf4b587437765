//! Passphrases and the key file of an encrypted repository.
//!
//! The passphrase is read only when an encrypted repository is opened, from
//! one [`PassphraseSource`], and never printed, logged or stored. The key file
//! is replaced atomically (temporary file, fsync, rename), so a crash while
//! the passphrase changes leaves either the old or the new wrapping, each of
//! the same master key.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::error::{Error, IoContext, Result};
use crate::format::crypt::{KeyFile, Keys, MasterKey};
use crate::format::keys;
use crate::store::Backend;

/// The environment variable a passphrase may come from.
pub const PASSPHRASE_ENV: &str = "PGSTRATA_PASSPHRASE";

/// A passphrase (zeroed when dropped; never printed).
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let mut v = bytes.into();
        while matches!(v.last(), Some(b'\n' | b'\r')) {
            v.pop();
        }
        if v.is_empty() {
            return Err(Error::invalid("the passphrase is empty"));
        }
        Ok(Passphrase(Zeroizing::new(v)))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// Where a passphrase comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassphraseSource {
    /// An environment variable (normally [`PASSPHRASE_ENV`]).
    Env(String),
    /// A file readable by its owner only (mode 0600 or stricter).
    File(PathBuf),
    /// A shell command that prints the passphrase.
    Command(String),
}

impl PassphraseSource {
    /// Read the passphrase. Errors are one line and never contain it.
    pub fn read(&self) -> Result<Passphrase> {
        match self {
            PassphraseSource::Env(var) => match std::env::var_os(var) {
                Some(v) => Passphrase::new(v.into_encoded_bytes()),
                None => Err(Error::invalid(format!("{var} is not set"))),
            },
            PassphraseSource::File(path) => read_file(path),
            PassphraseSource::Command(cmd) => run_command(cmd),
        }
    }
}

fn read_file(path: &Path) -> Result<Passphrase> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::invalid(format!(
            "cannot read the passphrase file {}: {e}",
            path.display()
        ))
    })?;
    if meta.mode() & 0o077 != 0 {
        return Err(Error::refused(format!(
            "passphrase file {} has mode {:04o}: it must be readable by its owner only (chmod 600 it)",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    let bytes = Zeroizing::new(std::fs::read(path).at(path)?);
    Passphrase::new(bytes.to_vec())
        .map_err(|_| Error::invalid(format!("passphrase file {} is empty", path.display())))
}

fn run_command(cmd: &str) -> Result<Passphrase> {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::invalid(format!("cannot run passphrase command: {e}")))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "passphrase command failed ({})",
            out.status
        )));
    }
    Passphrase::new(stdout.to_vec())
        .map_err(|_| Error::invalid("passphrase command printed nothing"))
}

fn what(repo: &str) -> String {
    format!("the key of repository {repo}")
}

/// The error for an encrypted repository opened without a passphrase.
pub(super) fn no_passphrase(repo: &str) -> Error {
    Error::invalid(format!(
        "repository {repo} is encrypted: give its passphrase in {PASSPHRASE_ENV}, or with passphrase-file or passphrase-command"
    ))
}

/// Write the key file of a new encrypted repository.
pub(super) fn create(raw: &dyn Backend, p: &Passphrase) -> Result<()> {
    let kf = KeyFile::wrap(&MasterKey::generate()?, p.bytes())?;
    raw.put(keys::KEY_FILE, &kf.encode()?)
}

fn load(raw: &dyn Backend, repo: &str) -> Result<KeyFile> {
    let bytes = raw
        .get(keys::KEY_FILE)?
        .ok_or_else(|| Error::missing("repository key", keys::KEY_FILE))?;
    KeyFile::decode(&bytes, &what(repo))
}

/// Unwrap the master key: the keys to work with, or a refusal.
pub(super) fn unlock(raw: &dyn Backend, p: &Passphrase, repo: &str) -> Result<Keys> {
    Ok(load(raw, repo)?.unwrap(p.bytes(), &what(repo))?.keys())
}

/// Wrap the master key under `new` in place of `old`.
pub(super) fn rewrap(
    raw: &dyn Backend,
    old: &Passphrase,
    new: &Passphrase,
    repo: &str,
) -> Result<()> {
    let master = load(raw, repo)?.unwrap(old.bytes(), &what(repo))?;
    let kf = KeyFile::wrap(&master, new.bytes())?;
    raw.put(keys::KEY_FILE, &kf.encode()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sources() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pass");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let missing = d.path().join("nonexistent");
        let e = PassphraseSource::File(missing).read().unwrap_err();
        assert!(e.to_string().contains("the passphrase file"), "{e}");
        let e = PassphraseSource::File(f.clone()).read().unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(!e.to_string().contains("s3cret"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = PassphraseSource::File(f).read().unwrap();
        assert_eq!(p.bytes(), b"s3cret");
        assert_eq!(format!("{p:?}"), "Passphrase(..)");
        let p = PassphraseSource::Command("echo from-cmd".into())
            .read()
            .unwrap();
        assert_eq!(p.bytes(), b"from-cmd");
        assert!(PassphraseSource::Command("exit 3".into()).read().is_err());
        assert!(PassphraseSource::Command("true".into()).read().is_err());
        assert!(PassphraseSource::Env("PGSTRATA_TEST_SURELY_UNSET".into())
            .read()
            .is_err());
        assert!(Passphrase::new("\n").is_err());
    }

    #[test]
    fn unlocking_and_changing_the_passphrase() {
        use crate::repo::testkit::{content, Fixture};
        use crate::repo::Repository;
        let f = Fixture::encrypted();
        let marker: Vec<u8> = b"TABLE-MARKER-1f3a "
            .iter()
            .copied()
            .cycle()
            .take(8192 * 4)
            .collect();
        f.backup(1, &[("a", marker), ("b", content(2, 2, 0))]);
        let root = f.repo.root().to_path_buf();
        // Nothing stored shows the content, whatever the file.
        for e in walkdir::WalkDir::new(&root) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let b = std::fs::read(e.path()).unwrap();
                assert!(
                    !b.windows(12).any(|w| w == b"TABLE-MARKER"),
                    "{}",
                    e.path().display()
                );
            }
        }
        let good = PassphraseSource::File(f.passphrase_file());
        let bad_file = f.scratch("bad");
        std::fs::write(&bad_file, "not it").unwrap();
        std::fs::set_permissions(&bad_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let bad = PassphraseSource::File(bad_file.clone());
        let e = Repository::open_with(&root, Some(&bad)).err().unwrap();
        assert!(matches!(e, Error::Refused(_)), "{e}");
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        let e = Repository::open(&root).err().unwrap();
        assert!(e.to_string().contains("is encrypted"), "{e}");
        // A new passphrase: the old one stops working, the data stays.
        let new_file = f.scratch("new");
        std::fs::write(&new_file, "a new one").unwrap();
        std::fs::set_permissions(&new_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let new = PassphraseSource::File(new_file);
        let r = Repository::open_with(&root, Some(&good)).unwrap();
        r.change_passphrase(&new.read().unwrap()).unwrap();
        assert!(Repository::open_with(&root, Some(&good)).is_err());
        let r = Repository::open_with(&root, Some(&new)).unwrap();
        assert_eq!(r.ids().hash(b"x"), f.repo.ids().hash(b"x"));
        assert_ne!(r.ids().hash(b"x"), IdKeyPlain.hash(b"x"));
        // A plain repository ignores a passphrase, and has nothing to change.
        let plain = Fixture::new();
        let p = Repository::open_with(plain.repo.root(), Some(&good)).unwrap();
        assert!(!p.is_encrypted());
        assert!(p.change_passphrase(&new.read().unwrap()).is_err());
        // The key file gone: refused, saying why.
        std::fs::remove_file(root.join(keys::KEY_FILE)).unwrap();
        let e = Repository::open_with(&root, Some(&new)).err().unwrap();
        assert!(e.to_string().contains("key file"), "{e}");
    }

    use crate::format::chunk::IdKey::Plain as IdKeyPlain;
}
