//! Repositories: in a local directory or under a prefix of the test S3
//! server's bucket (`objstore`), plain or encrypted; and
//! [`on_local_and_s3!`], which makes one test of each kind.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::{give_to_pg, pgstrata_ok, Scratch};

/// A repository owned by postgres (so the server's archive_command can write).
pub struct Repo {
    /// The directory; for a repository in object storage, an unused one.
    pub path: PathBuf,
    /// The passphrase file of an encrypted repository.
    pub pass: Option<PathBuf>,
    /// `s3://...` for a repository in the test S3 server.
    pub url: Option<String>,
}

/// Where a test's repository lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
}

impl Kind {
    pub fn repo(self, scratch: &Scratch) -> Repo {
        match self {
            Kind::Local => Repo::new(scratch),
            Kind::S3 => Repo::s3(scratch, "repo"),
        }
    }
}

impl Repo {
    pub fn new(scratch: &Scratch) -> Self {
        Repo::named(scratch, "repo")
    }
    /// A second repository in the same scratch directory.
    pub fn named(scratch: &Scratch, name: &str) -> Self {
        let path = scratch.pg_dir(name);
        pgstrata_ok(&["--repo", path.to_str().unwrap(), "init"]);
        Repo {
            path,
            pass: None,
            url: None,
        }
    }
    /// A repository under a new prefix of the test S3 server's bucket.
    pub fn s3(scratch: &Scratch, name: &str) -> Self {
        let url = crate::objstore::new_url(name);
        pgstrata_ok(&["--repo", &url, "init"]);
        Repo {
            path: scratch.path().join(name),
            pass: None,
            url: Some(url),
        }
    }
    /// An encrypted repository; its passphrase file (mode 0600, the
    /// server's user's, for archive_command) is `scratch/<name>.pass`.
    pub fn encrypted(scratch: &Scratch, name: &str) -> Self {
        let path = scratch.pg_dir(name);
        let pass = scratch.path().join(format!("{name}.pass"));
        std::fs::write(&pass, "correct horse battery staple\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        give_to_pg(&pass);
        pgstrata_ok(&[
            "--repo",
            path.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
            "init",
            "--encrypt",
        ]);
        Repo {
            path,
            pass: Some(pass),
            url: None,
        }
    }
    /// The arguments that unlock this repository (none for a plain one).
    pub fn unlock(&self) -> Vec<&str> {
        match &self.pass {
            Some(p) => vec!["--passphrase-file", p.to_str().unwrap()],
            None => vec![],
        }
    }
    pub fn arg(&self) -> &str {
        match &self.url {
            Some(u) => u,
            None => self.path.to_str().unwrap(),
        }
    }
    pub fn open(&self) -> pgstrata::Repository {
        let src = self.pass.clone().map(pgstrata::PassphraseSource::File);
        let loc = match &self.url {
            None => pgstrata::Location::Local(self.path.clone()),
            Some(u) => crate::objstore::location(u, &self.path.with_extension("cache")),
        };
        pgstrata::Repository::open_at(&loc, src.as_ref()).expect("open repo")
    }
    /// Bytes the repository holds (every object; for a local one, every file).
    pub fn stored_bytes(&self) -> u64 {
        match &self.url {
            None => walkdir::WalkDir::new(&self.path)
                .into_iter()
                .flatten()
                .filter(|e| e.file_type().is_file())
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum(),
            Some(_) => self
                .open()
                .backend()
                .list("")
                .expect("list")
                .iter()
                .map(|(_, n)| n)
                .sum(),
        }
    }
    pub fn info_json(&self) -> serde_json::Value {
        let mut args = vec!["--repo", self.arg()];
        args.extend(self.unlock());
        args.extend(["info", "--output", "json"]);
        let out = pgstrata_ok(&args);
        serde_json::from_str(&out).expect("info json")
    }
    pub fn backups(&self) -> Vec<serde_json::Value> {
        self.info_json()["clusters"][0]["backups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Tests that run on a local repository and on one in the test S3 server,
/// from one function of the [`Kind`]: each `body => name, name_on_s3;`
/// makes the test `name` (local) and the test `name_on_s3`. Doc comments
/// before a line go on both.
macro_rules! on_local_and_s3 {
    ($($(#[$attr:meta])* $body:ident => $local:ident, $s3:ident;)+) => {
        $(
            $(#[$attr])*
            #[test]
            fn $local() {
                $body($crate::harness::Kind::Local)
            }

            $(#[$attr])*
            #[test]
            fn $s3() {
                $body($crate::harness::Kind::S3)
            }
        )+
    };
}
pub(crate) use on_local_and_s3;
