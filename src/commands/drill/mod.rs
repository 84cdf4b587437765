//! `drill`: prove that a backup restores and runs. Restore it into a
//! scratch directory, start PostgreSQL there privately, let recovery reach
//! the target and promote, run `pg_amcheck` and the configured SQL checks,
//! stop the server, remove the copy, report, and record the outcome in the
//! catalog (`info` shows the last one).
//!
//! Layering: the drill is its own rank above the commands. It composes
//! `restore`'s public functions with `pg::server`; no command uses it, and
//! it is the only module that may use a command (see `docs/design.md`).
//!
//! Invariants:
//! - Bad input (a non-empty scratch directory, an unknown backup set or
//!   unreachable target, server binaries of another major) is an error
//!   before anything is written or recorded. From the restore on, every
//!   failure is a *result*: the report says which step or check failed and
//!   why, and it is recorded.
//! - The copy never archives and never listens on TCP (see `pg::server`);
//!   recovery always ends with a promotion, since the checks need a
//!   writable server (`pg_amcheck --install-missing`).
//! - Everything the drill writes is inside the scratch directory: every
//!   tablespace is restored to `tblspc/<oid>` there, never to its original
//!   location (on the primary's host, the primary's own directory).
//! - The scratch copy, tablespaces included, is removed at the end, passed
//!   or failed, unless `keep`; a directory the drill did not create is
//!   emptied, not removed.

mod checks;
mod report;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use checks::{DrillCheck, Expectation};
pub use report::{CheckResult, DrillReport, LinkNotRestored, StepResult};

use crate::catalog::{BackupRow, DrillRow};
use crate::commands::restore::{self, Recovery, RecoveryTarget, RestoreOptions, TargetAction};
use crate::error::{Error, Hint, IoContext, Result, Setting};
use crate::pg::server::{self, Server, Spec};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::util::{default_workers, human, now_us, rfc3339};

#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// A backup id, or `None` / `latest` to choose by the target.
    pub set: Option<String>,
    /// The recovery target (its action is always promote).
    pub recovery: Recovery,
    /// Where to restore: empty or missing [default: a new directory under
    /// the system's temporary directory].
    pub scratch: Option<PathBuf>,
    /// Keep the restored copy (stopped) instead of removing it.
    pub keep: bool,
    /// The server binaries [default: found for the backup's major].
    pub pg_bindir: Option<PathBuf>,
    /// The database user [default: the data directory's owner].
    pub db_user: Option<String>,
    /// How long recovery may take, from the server's start to promotion.
    pub timeout: Duration,
    /// Run pg_amcheck (with heapallindexed) on every database.
    pub amcheck: bool,
    pub checks: Vec<DrillCheck>,
    /// Extra server settings for the copy (e.g. a smaller shared_buffers).
    pub settings: Vec<(String, String)>,
    pub workers: usize,
    /// How `restore_command` calls pgstrata; a drill needs one.
    pub invocation: Option<std::sync::Arc<dyn crate::repo::Invocation>>,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            set: None,
            recovery: Recovery::default(),
            scratch: None,
            keep: false,
            pg_bindir: None,
            db_user: None,
            timeout: Duration::from_secs(3600),
            amcheck: true,
            checks: Vec::new(),
            settings: Vec::new(),
            workers: default_workers(),
            invocation: None,
        }
    }
}

/// Fast shutdown may take this long before the server is stopped at once.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// The scratch directory: its path, and whether the drill created it.
struct Scratch {
    root: PathBuf,
    created: bool,
}

impl Scratch {
    /// Refuse a non-empty directory before anything else happens.
    fn check(given: Option<&Path>) -> Result<()> {
        let Some(p) = given else { return Ok(()) };
        if p.exists() {
            if !p.is_dir() {
                return Err(Error::refused(format!(
                    "scratch directory {} exists and is not a directory (nothing was done)",
                    p.display()
                )));
            }
            if fs::read_dir(p).at(p)?.next().is_some() {
                return Err(Error::refused(format!(
                    "scratch directory {} is not empty: a drill restores into an empty or \
                     missing directory (nothing was done)",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    fn create(given: Option<&Path>) -> Result<Scratch> {
        let (root, created) = match given {
            Some(p) if p.exists() => (p.to_path_buf(), false),
            Some(p) => (p.to_path_buf(), true),
            None => {
                let name = format!("pgstrata-drill-{}-{}", std::process::id(), now_us());
                (std::env::temp_dir().join(name), true)
            }
        };
        if created {
            fs::DirBuilder::new().mode(0o700).create(&root).at(&root)?;
        }
        let root = root.canonicalize().at(&root)?;
        Ok(Scratch { root, created })
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Every tablespace goes to `tblspc/<oid>` here, never to where it was
    /// backed up from: on the primary's host that is the primary's own.
    fn tablespaces(&self) -> PathBuf {
        self.root.join("tblspc")
    }

    fn sockdir(&self) -> PathBuf {
        self.root.join("sock")
    }

    fn remove(&self) -> Result<()> {
        if self.created {
            return fs::remove_dir_all(&self.root).at(&self.root);
        }
        for e in fs::read_dir(&self.root).at(&self.root)? {
            let p = e.at(&self.root)?.path();
            match fs::symlink_metadata(&p).at(&p)?.is_dir() {
                true => fs::remove_dir_all(&p).at(&p)?,
                false => fs::remove_file(&p).at(&p)?,
            }
        }
        Ok(())
    }
}

/// The recovery target in words, for the report and `info`.
pub fn describe_target(r: &Recovery) -> String {
    match &r.target {
        RecoveryTarget::EndOfWal => "end of WAL".into(),
        RecoveryTarget::Immediate => "immediate (consistency)".into(),
        RecoveryTarget::Time { text, .. } => format!("time {text}"),
        RecoveryTarget::Lsn(l) => format!("lsn {l}"),
        RecoveryTarget::Xid(x) => format!("xid {x}"),
        RecoveryTarget::Name(n) => format!("restore point {n:?}"),
    }
}

fn restore_options(opts: &DrillOptions, pgdata: &Path, tablespaces: &Path) -> RestoreOptions {
    let mut r = RestoreOptions::new(pgdata);
    r.tablespace_map_all = Some(tablespaces.to_path_buf());
    r.set = opts.set.clone();
    r.recovery = opts.recovery.clone();
    // The copy must end recovery by itself, as a primary that never
    // archives (ArchiveMode's default) into the repository.
    r.recovery.action = Some(TargetAction::Promote);
    r.recovery.standby = false;
    r.recovery.primary_conninfo = None;
    r.recovery.archive_mode = restore::ArchiveMode::Off;
    r.workers = opts.workers;
    r.invocation = opts.invocation.clone();
    r
}

/// Run a drill. `Err` is bad input (nothing was written or recorded); a
/// drill that ran returns its report, passed or failed.
pub fn run(
    repo: &Repository,
    cluster: &str,
    opts: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    Scratch::check(opts.scratch.as_deref())?;
    let probe = restore_options(opts, Path::new("/nonexistent"), Path::new("/nonexistent"));
    let (cl, backup) = restore::chosen_backup(repo, cluster, &probe)?;
    let what = format!("backup {}", backup.id);
    let bindir = server::bindir_for(backup.pg_version, opts.pg_bindir.as_deref(), &what)?;
    if opts.amcheck && !bindir.join("pg_amcheck").is_file() {
        return Err(Error::NotFound(format!(
            "{} has no pg_amcheck (PostgreSQL {}'s client tools): install them, or give a \
             directory of server binaries that has both (nothing was done)",
            bindir.display(),
            backup.pg_version
        ))
        .hint(Hint::give(Setting::PgBindir, "DIR")));
    }
    let scratch = Scratch::create(opts.scratch.as_deref())?;
    if let Err(e) = server::check_socket_dir(&scratch.sockdir()) {
        let _ = scratch.remove();
        return Err(e);
    }
    let mut report = new_report(cluster, &backup, opts, &scratch);
    let ropts = restore_options(opts, &scratch.data(), &scratch.tablespaces());
    let restored = restore_step(repo, cluster, &ropts, &mut report, progress);
    if restored {
        serve_and_check(&bindir, &backup, opts, &scratch, &mut report);
    } else {
        skip_checks(opts, &mut report, "the restore failed");
    }
    cleanup(&scratch, opts.keep, &mut report);
    let row = DrillRow {
        time: report.started_us,
        backup_id: Some(backup.id.clone()),
        target: report.target.clone(),
        ok: report.ok,
        restore_us: report.restore_seconds.map(secs_to_us),
        consistent_us: report.consistent_seconds.map(secs_to_us),
        promoted_us: report.promoted_seconds.map(secs_to_us),
        checks_passed: report.checks_passed,
        checks_total: report.checks_total,
        report: serde_json::to_string(&report)
            .map_err(|e| Error::internal(format!("drill report as JSON: {e}")))?,
    };
    // In object storage the record is a catalog change like any other:
    // made by the lock holder and published (after a running backup, if
    // one holds the lock).
    let session = match repo.is_remote() {
        true => Some(repo.begin_write("drill", std::time::Duration::from_secs(3600))?),
        false => None,
    };
    repo.catalog()?.drills().record(cl.id, &row)?;
    if let Some(s) = session {
        s.commit()?;
    }
    Ok(report)
}

fn secs_to_us(s: f64) -> i64 {
    (s * 1e6).round() as i64
}

fn new_report(
    cluster: &str,
    backup: &BackupRow,
    opts: &DrillOptions,
    scratch: &Scratch,
) -> DrillReport {
    let started_us = now_us();
    DrillReport {
        cluster: cluster.into(),
        backup: backup.id.clone(),
        pg_version: backup.pg_version,
        target: describe_target(&opts.recovery),
        time: rfc3339(started_us),
        started_us,
        ok: true,
        failure: None,
        scratch: scratch.root.display().to_string(),
        kept: false,
        restore_seconds: None,
        consistent_seconds: None,
        promoted_seconds: None,
        checks_passed: 0,
        checks_total: u32::from(opts.amcheck) + opts.checks.len() as u32,
        steps: Vec::new(),
        checks: Vec::new(),
        links_as_files: Vec::new(),
        links_not_restored: Vec::new(),
    }
}

/// Plan and apply the restore; false when it failed (the report says why).
fn restore_step(
    repo: &Repository,
    cluster: &str,
    ropts: &RestoreOptions,
    report: &mut DrillReport,
    progress: &dyn Progress,
) -> bool {
    let t = Instant::now();
    let outcome = restore::plan(repo, cluster, ropts)
        .and_then(|plan| {
            note_links(&plan, report);
            restore::apply(repo, &plan, ropts.workers, progress)
        })
        .map(|s| format!("{} files, {}", s.files, human(s.bytes)))
        .map_err(|e| e.to_string());
    let ok = outcome.is_ok();
    let secs = t.elapsed().as_secs_f64();
    if ok {
        report.restore_seconds = Some(secs);
    }
    report.step("restore", secs, outcome);
    ok
}

/// What the copy holds differently from the backup's data directory, as
/// data for the binary's warnings (the same a restore gives).
fn note_links(plan: &restore::RestorePlan, report: &mut DrillReport) {
    report.links_as_files = plan.links_as_files().to_vec();
    report.links_not_restored = plan
        .links_not_restored()
        .iter()
        .map(|(path, to)| LinkNotRestored {
            path: path.clone(),
            leads_to: to.display().to_string(),
        })
        .collect();
}

/// Start the server, wait for recovery, run the checks, stop it.
fn serve_and_check(
    bindir: &Path,
    backup: &BackupRow,
    opts: &DrillOptions,
    scratch: &Scratch,
    report: &mut DrillReport,
) {
    let t = Instant::now();
    let started = start_server(bindir, backup, opts, scratch).and_then(|mut s| {
        let times = s.wait_recovered(opts.timeout)?;
        Ok((s, times))
    });
    let server = match started {
        Ok((s, (consistent, promoted))) => {
            report.consistent_seconds = Some(consistent.as_secs_f64());
            report.promoted_seconds = Some(promoted.as_secs_f64());
            report.step(
                "recovery",
                t.elapsed().as_secs_f64(),
                Ok(format!(
                    "consistent after {:.1} s, promoted after {:.1} s",
                    consistent.as_secs_f64(),
                    promoted.as_secs_f64()
                )),
            );
            s
        }
        Err(e) => {
            report.step("recovery", t.elapsed().as_secs_f64(), Err(e.to_string()));
            skip_checks(opts, report, "the server did not recover");
            return;
        }
    };
    if opts.amcheck {
        report.check(amcheck(&server));
    }
    for c in &opts.checks {
        report.check(checks::run(&server, c));
    }
    let t = Instant::now();
    let stopped = server
        .stop(STOP_WAIT)
        .map(|_| "fast shutdown".to_string())
        .map_err(|e| e.to_string());
    report.step("stop", t.elapsed().as_secs_f64(), stopped);
}

fn start_server(
    bindir: &Path,
    backup: &BackupRow,
    opts: &DrillOptions,
    scratch: &Scratch,
) -> Result<Server> {
    let pgdata = scratch.data();
    // The server's user must reach its data and socket directories.
    if let Some((uid, gid)) = server::run_as(&pgdata)? {
        std::os::unix::fs::chown(&scratch.root, Some(uid), Some(gid)).at(&scratch.root)?;
        fs::set_permissions(&scratch.root, fs::Permissions::from_mode(0o700)).at(&scratch.root)?;
    }
    let spec = Spec {
        bindir: bindir.to_path_buf(),
        major: backup.pg_version,
        sockdir: scratch.sockdir(),
        log: scratch.root.join("server.log"),
        port: server::free_port()?,
        user: opts
            .db_user
            .clone()
            .unwrap_or_else(|| server::default_user(&pgdata)),
        settings: opts.settings.clone(),
        pgdata,
    };
    Server::start(spec)
}

fn amcheck(server: &Server) -> CheckResult {
    let t = Instant::now();
    let outcome = server.amcheck().unwrap_or_else(|e| Err(e.to_string()));
    CheckResult {
        name: "amcheck".into(),
        database: None,
        ok: outcome.is_ok(),
        seconds: t.elapsed().as_secs_f64(),
        detail: match outcome {
            Ok(_) => "pg_amcheck --all --heapallindexed: no corruption".into(),
            Err(e) => e,
        },
    }
}

/// Checks that could not run are failures too, each with the reason.
fn skip_checks(opts: &DrillOptions, report: &mut DrillReport, why: &str) {
    let names = opts
        .amcheck
        .then(|| ("amcheck".to_string(), None))
        .into_iter()
        .chain(
            opts.checks
                .iter()
                .map(|c| (c.name.clone(), Some(c.database.clone()))),
        );
    for (name, database) in names {
        report.checks.push(CheckResult {
            name,
            database,
            ok: false,
            seconds: 0.0,
            detail: format!("not run: {why}"),
        });
    }
}

fn cleanup(scratch: &Scratch, keep: bool, report: &mut DrillReport) {
    let t = Instant::now();
    if keep {
        report.kept = true;
        return;
    }
    let outcome = scratch
        .remove()
        .map(|_| format!("removed {}", scratch.root.display()))
        .map_err(|e| e.to_string());
    report.step("cleanup", t.elapsed().as_secs_f64(), outcome);
}
