//! pgstrata's own command line, spelled in one place: for PostgreSQL's
//! `archive_command` and `restore_command`, and for the background workers
//! archive-push and archive-get start. The library receives it as a
//! [`pgstrata::Invocation`] and never spells a flag itself.
//!
//! Invariant: a command built here opens the same repository, unlocked the
//! same way, as the run that built it; paths PostgreSQL or a worker resolves
//! from another directory are absolute.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use pgstrata::{shell_word, Invocation, PassphraseSource};

use super::remote::RepoSpec;

/// How this run calls pgstrata again.
#[derive(Debug)]
pub struct SelfCommand {
    /// This executable (`pgstrata` on the `PATH` if it cannot be found).
    exe: PathBuf,
    repo: RepoWords,
    /// `--config` as given.
    config: Option<PathBuf>,
    /// Global options only workers are given: `--cache-dir`, `--log-level`
    /// and the passphrase options as given on the command line.
    worker_only: Vec<OsString>,
    /// Options `restore_command` passes to `archive-get` (prefetching).
    get_args: Vec<OsString>,
}

#[derive(Debug)]
enum RepoWords {
    /// A directory, as given.
    Local(PathBuf),
    /// `--repo URL` and the object store's options; the URL alone.
    Remote { words: Vec<OsString>, url: String },
}

/// The global options of this run that a worker needs too.
pub struct Globals<'a> {
    pub config: Option<&'a Path>,
    pub cache_dir: Option<&'a Path>,
    pub log_level: Option<&'a str>,
    pub passphrase_file: Option<&'a Path>,
    pub passphrase_command: Option<&'a str>,
}

impl SelfCommand {
    pub fn new(repo: &RepoSpec, g: &Globals<'_>) -> Self {
        let repo = match repo {
            RepoSpec::Local(p) => RepoWords::Local(p.clone()),
            RepoSpec::S3(s) => RepoWords::Remote {
                words: repo.args(),
                url: s.url.clone(),
            },
        };
        let mut worker_only: Vec<OsString> = Vec::new();
        if let Some(d) = g.cache_dir {
            worker_only.extend(["--cache-dir".into(), d.into()]);
        }
        if let Some(l) = g.log_level {
            worker_only.extend(["--log-level".into(), l.into()]);
        }
        if let Some(f) = g.passphrase_file {
            worker_only.extend(["--passphrase-file".into(), f.into()]);
        }
        if let Some(c) = g.passphrase_command {
            worker_only.extend(["--passphrase-command".into(), c.into()]);
        }
        SelfCommand {
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("pgstrata")),
            repo,
            config: g.config.map(Path::to_path_buf),
            worker_only,
            get_args: Vec::new(),
        }
    }

    /// `restore_command` keeps `count` segments fetched ahead into `spool`
    /// (an absolute path: PostgreSQL runs the command in the data directory).
    pub fn prefetch_on_restore(&mut self, count: usize, spool: &Path) {
        self.get_args = vec![
            "--prefetch".into(),
            count.to_string().into(),
            "--spool-dir".into(),
            spool.into(),
        ];
    }

    /// The global options a worker opens the same repository with (a
    /// passphrase in the environment is inherited).
    fn worker_globals(&self, cluster: &str) -> Vec<OsString> {
        let mut g = vec![self.exe.clone().into_os_string()];
        match &self.repo {
            RepoWords::Local(p) => g.extend(["--repo".into(), p.into()]),
            RepoWords::Remote { words, .. } => g.extend(words.iter().cloned()),
        }
        g.extend(["--cluster".into(), cluster.into()]);
        if let Some(c) = &self.config {
            g.extend(["--config".into(), c.into()]);
        }
        g.extend(self.worker_only.iter().cloned());
        g
    }

    /// The background pusher of `archive-push --async`.
    pub fn push_worker(
        &self,
        cluster: &str,
        pg_wal: &Path,
        spool: &Path,
        workers: usize,
        level: i32,
    ) -> Vec<OsString> {
        let mut w = self.worker_globals(cluster);
        w.extend([
            "archive-push-worker".into(),
            "--pg-wal".into(),
            pg_wal.into(),
            "--spool-dir".into(),
            spool.into(),
            "--workers".into(),
            workers.to_string().into(),
            "--compress-level".into(),
            level.to_string().into(),
        ]);
        w
    }

    /// The local repository by absolute path (PostgreSQL runs the command
    /// in the data directory), as given if it cannot be resolved.
    fn local_root(p: &Path) -> String {
        p.canonicalize()
            .unwrap_or_else(|_| p.to_path_buf())
            .to_string_lossy()
            .into_owned()
    }

    fn exe_word(&self) -> String {
        shell_word(&self.exe.to_string_lossy())
    }
}

/// The options that make another pgstrata command unlock the repository the
/// same way, a file by absolute path; none for an environment variable,
/// which that command's environment must set.
fn unlock_words(src: Option<&PassphraseSource>) -> Vec<String> {
    match src {
        Some(PassphraseSource::File(f)) => {
            let f = f.canonicalize().unwrap_or_else(|_| f.clone());
            vec!["--passphrase-file".into(), f.to_string_lossy().into_owned()]
        }
        Some(PassphraseSource::Command(c)) => vec!["--passphrase-command".into(), c.clone()],
        Some(PassphraseSource::Env(_)) | None => Vec::new(),
    }
}

fn shell_words<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> String {
    words
        .into_iter()
        .map(|w| shell_word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Invocation for SelfCommand {
    fn archive_command(&self, cluster: &str, unlocked_by: Option<&PassphraseSource>) -> String {
        let repo = match &self.repo {
            RepoWords::Local(p) => Self::local_root(p),
            RepoWords::Remote { url, .. } => url.clone(),
        };
        let mut words = vec!["--repo".to_string(), repo];
        words.extend(unlock_words(unlocked_by));
        words.extend(["--cluster".into(), cluster.into(), "archive-push".into()]);
        format!("{} {} %p", self.exe_word(), shell_words(&words))
    }

    fn restore_command(
        &self,
        cluster: &str,
        history: u32,
        unlocked_by: Option<&PassphraseSource>,
    ) -> String {
        let mut words: Vec<String> = match &self.repo {
            RepoWords::Local(p) => vec!["--repo".into(), Self::local_root(p)],
            RepoWords::Remote { words, .. } => {
                let mut w: Vec<String> = words
                    .iter()
                    .map(|w| w.to_string_lossy().into_owned())
                    .collect();
                if let Some(c) = &self.config {
                    let c = c.canonicalize().unwrap_or_else(|_| c.clone());
                    w.extend(["--config".into(), c.to_string_lossy().into_owned()]);
                }
                w
            }
        };
        words.extend(unlock_words(unlocked_by));
        words.extend(["--cluster".into(), cluster.into(), "archive-get".into()]);
        words.extend(
            self.get_args
                .iter()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        if history > 1 {
            words.extend(["--history".into(), history.to_string()]);
        }
        format!("{} {} %f \"%p\"", self.exe_word(), shell_words(&words))
    }

    fn prefetcher(
        &self,
        cluster: &str,
        history: u32,
        spool: &Path,
        count: usize,
        segment_size: u64,
    ) -> Vec<OsString> {
        let mut w = self.worker_globals(cluster);
        w.extend([
            "archive-get-worker".into(),
            "--history".into(),
            history.to_string().into(),
            "--spool-dir".into(),
            spool.into(),
            "--prefetch".into(),
            count.to_string().into(),
            "--workers".into(),
            "2".into(),
            "--segment-size".into(),
            segment_size.to_string().into(),
        ]);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(repo: &str) -> SelfCommand {
        SelfCommand {
            exe: PathBuf::from("/usr/bin/pgstrata"),
            repo: RepoWords::Local(PathBuf::from(repo)),
            config: None,
            worker_only: Vec::new(),
            get_args: Vec::new(),
        }
    }

    #[test]
    fn restore_command_names_the_history_entry_and_the_unlocking() {
        let c = local("/var/lib/my repo");
        assert_eq!(
            c.restore_command("main", 1, None),
            "/usr/bin/pgstrata --repo '/var/lib/my repo' --cluster main archive-get %f \"%p\""
        );
        assert_eq!(
            local("/r").restore_command("main", 2, None),
            "/usr/bin/pgstrata --repo /r --cluster main archive-get --history 2 %f \"%p\""
        );
        let cmd = PassphraseSource::Command("pass show 'db backup'".into());
        assert_eq!(
            local("/r").restore_command("main", 1, Some(&cmd)),
            r#"/usr/bin/pgstrata --repo /r --passphrase-command 'pass show '\''db backup'\''' --cluster main archive-get %f "%p""#
        );
        let env = PassphraseSource::Env("PGSTRATA_PASSPHRASE".into());
        assert_eq!(
            local("/r").restore_command("main", 1, Some(&env)),
            "/usr/bin/pgstrata --repo /r --cluster main archive-get %f \"%p\""
        );
        let mut p = local("/r");
        p.prefetch_on_restore(8, Path::new("/spool"));
        assert_eq!(
            p.restore_command("main", 2, None),
            "/usr/bin/pgstrata --repo /r --cluster main archive-get --prefetch 8 --spool-dir /spool \
             --history 2 %f \"%p\""
        );
    }

    #[test]
    fn the_suggested_archive_command_names_everything_by_absolute_path() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("my repo");
        std::fs::create_dir(&root).unwrap();
        // Given by a relative path: the setting still names it absolutely.
        let rel = root.strip_prefix("/").unwrap();
        let cwd = std::env::current_dir().unwrap();
        let rel = std::iter::repeat_n("..", cwd.components().count() - 1)
            .collect::<PathBuf>()
            .join(rel);
        let c = local(&rel.to_string_lossy());
        assert_eq!(
            c.archive_command("main", None),
            format!(
                "/usr/bin/pgstrata --repo '{}' --cluster main archive-push %p",
                root.canonicalize().unwrap().display()
            )
        );
        // Unlocked by a passphrase file: the command unlocks the same way.
        let pass = d.path().join("pass");
        std::fs::write(&pass, "x").unwrap();
        let src = PassphraseSource::File(pass.clone());
        let got = c.archive_command("c", Some(&src));
        assert!(
            got.contains(&format!("--passphrase-file {} --cluster c", pass.display())),
            "{got}"
        );
    }
}
