//! Shared test harness: throwaway PostgreSQL clusters on private Unix
//! sockets, repositories, and running the real `pgstrata` binary. Every
//! helper the tests share lives here, by subject: `pg` (server binaries of
//! each major, installed on first use), `cluster` (clusters, restores, sample
//! data), `repo` (repositories, local or in the test S3 server, and tests
//! that run on both), `expect` (outcomes of commands), `files` (trees of
//! files to compare). Test modules `use crate::harness::*`.
//!
//! When the tests run as root (CI does), server commands run as the
//! `postgres` user through `runuser`, and the directories are handed to it.
//! A missing PostgreSQL is a failure with a clear message, never a skip.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod cluster;
mod expect;
mod files;
mod pg;
mod repo;

pub use cluster::*;
pub use expect::*;
pub use files::*;
pub use pg::*;
pub use repo::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_pgstrata");

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Run a server-side command, as `postgres` when we are root.
pub fn run_as_pg(program: &Path, args: &[&str]) -> Output {
    let out = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .output()
    } else {
        Command::new(program).args(args).output()
    };
    out.unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Hand a path to the postgres user (when root).
pub fn give_to_pg(path: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(st.success(), "chown {}", path.display());
    }
}

/// A temporary directory with a short path (Unix socket paths are limited),
/// traversable by the postgres user.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pgs")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        give_to_pg(dir.path());
        Scratch { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// A new directory owned by postgres.
    pub fn pg_dir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        give_to_pg(&p);
        p
    }
}

/// Run the pgstrata binary.
pub fn pgstrata(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("PGSTRATA_REPO")
        .env_remove("PGSTRATA_CONFIG")
        .output()
        .expect("run pgstrata")
}

pub fn pgstrata_ok(args: &[&str]) -> String {
    let o = pgstrata(args);
    check(&o, &format!("pgstrata {}", args.join(" ")));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
