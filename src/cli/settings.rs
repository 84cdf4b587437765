//! Options resolved into one validated value per command. The settings are
//! defined in `args`; `config` layers the file under the command line
//! (command line, then environment such as `PGSTRATA_REPO` or libpq's `PG*`,
//! then the config file, then defaults). This module only validates and
//! turns them into the library's options. Every usage mistake is found here,
//! before any work, and exits with status 2.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgstrata::DrillOptions;
use pgstrata::{
    parse_target_time, ArchiveMode, BackupOptions, BackupType, ChangeTracking, CheckOptions,
    ExpireOptions, Invocation, Lsn, PassphraseSource, Recovery, RecoveryTarget, RestoreOptions,
    Retention, TargetAction, TimelineTarget, VerifyOptions, PASSPHRASE_ENV,
};

use super::archiving::{self, AsyncSettings};
use super::args::{
    ActionArg, ArchiveModeArg, BackupArgs, ChangeTrackingArg, CheckArgs, Cli, Command, DrillArgs,
    DrillTable, ExpireArgs, GlobalArgs, OutputArg, RepairArgs, RestoreArgs, RestoreTypeArg,
    ShellArg, TargetArg, TypeArg, UpgradeArgs,
};
use super::config::ConfigFile;
use super::invocation::{Globals, SelfCommand};
use super::remote::{self, RepoSpec};

/// A usage mistake: exit status 2.
#[derive(Debug)]
pub struct Usage(pub String);

pub type R<T> = Result<T, Usage>;

pub fn usage<T>(msg: impl Into<String>) -> R<T> {
    Err(Usage(msg.into()))
}

pub struct Settings {
    pub repo: RepoSpec,
    pub cluster: String,
    /// `--cluster` as given (info and verify show all clusters without it).
    pub cluster_given: Option<String>,
    pub quiet: bool,
    /// Where an encrypted repository's passphrase comes from, if anywhere.
    pub passphrase: Option<PassphraseSource>,
    /// How this run calls pgstrata again (PostgreSQL's commands, workers).
    pub invocation: Arc<SelfCommand>,
    pub command: Run,
}

/// What to run, validated.
pub enum Run {
    Init {
        group_readable: bool,
        encrypt: bool,
    },
    ChangePassphrase {
        new: PassphraseSource,
    },
    Backup {
        opts: BackupOptions,
        auto_expire: Option<ExpireOptions>,
    },
    Restore {
        opts: RestoreOptions,
        /// (spool, segments ahead) when restore_command prefetches.
        prefetch: Option<(PathBuf, usize)>,
    },
    Expire {
        opts: ExpireOptions,
        dry_run: bool,
    },
    ArchivePush {
        path: PathBuf,
        level: i32,
        async_push: Option<AsyncSettings>,
    },
    ArchiveGet {
        name: String,
        dest: PathBuf,
        history: u32,
        /// (spool, segments ahead) when prefetching.
        prefetch: Option<(PathBuf, usize)>,
    },
    ArchivePushWorker {
        pg_wal: PathBuf,
        spool: PathBuf,
        workers: usize,
        level: i32,
    },
    ArchiveGetWorker {
        history: u32,
        spool: PathBuf,
        count: usize,
        workers: usize,
        seg_size: u64,
    },
    Upgrade {
        pgdata: PathBuf,
        lock_wait: Duration,
    },
    Info {
        json: bool,
    },
    Verify {
        opts: VerifyOptions,
        json: bool,
    },
    Check {
        opts: CheckOptions,
    },
    Repair {
        lock_wait: Duration,
    },
    Drill {
        opts: Box<DrillOptions>,
        json: bool,
    },
}

/// Commands that need no repository.
pub enum Standalone {
    Completions(ShellArg),
    Man,
}

impl Settings {
    /// Resolve; `Ok(Err(..))` for the commands that need no repository.
    pub fn resolve(cli: Cli, cfg: &ConfigFile) -> R<Result<Settings, Standalone>> {
        let given = cli.global;
        let in_file: GlobalArgs = cfg.read().map_err(Usage)?;
        let passphrase = passphrase_source(&given, &in_file)?;
        let global = cfg.under(given.clone()).map_err(Usage)?;
        let repo = remote::resolve(&global)?;
        let command = match cli.command {
            Command::Completions { shell } => return Ok(Err(Standalone::Completions(shell))),
            Command::Man => return Ok(Err(Standalone::Man)),
            c => c,
        };
        let Some(repo) = repo else {
            return usage(
                "no repository given: use --repo DIR|s3://BUCKET/PREFIX, PGSTRATA_REPO or repo \
                 in the config file",
            );
        };

        let cluster = global.cluster.clone().unwrap_or_else(|| "main".into());
        let mut run = run_of(command, global.cluster.clone(), cfg, passphrase.is_some())?;
        // Commands started by this one read the same file: they are given
        // only what was given here.
        let mut invocation = SelfCommand::new(
            &repo,
            &Globals {
                config: given.config.as_deref(),
                cache_dir: given.cache_dir.as_deref(),
                log_level: given.log_level.as_deref(),
                passphrase_file: given.passphrase_file.as_deref(),
                passphrase_command: given.passphrase_command.as_deref(),
            },
        );
        if let Run::Restore {
            prefetch: Some((spool, n)),
            ..
        } = &run
        {
            invocation.prefetch_on_restore(*n, spool);
        }
        let invocation = Arc::new(invocation);
        let inv: Arc<dyn Invocation> = invocation.clone();
        match &mut run {
            Run::Restore { opts, .. } => opts.invocation = Some(inv),
            Run::Backup { opts, .. } => opts.invocation = Some(inv),
            Run::Check { opts } => opts.invocation = Some(inv),
            Run::Drill { opts, .. } => opts.invocation = Some(inv),
            _ => {}
        }
        Ok(Ok(Settings {
            repo,
            cluster,
            cluster_given: given.cluster,
            quiet: given.quiet,
            passphrase,
            invocation,
            command: run,
        }))
    }
}

/// What to run, from the command's own arguments.
fn run_of(
    command: Command,
    cluster: Option<String>,
    cfg: &ConfigFile,
    has_passphrase: bool,
) -> R<Run> {
    Ok(match command {
        Command::Init {
            group_readable,
            encrypt,
        } => init(group_readable, encrypt, has_passphrase)?,
        Command::ChangePassphrase {
            new_passphrase_file,
            new_passphrase_command,
        } => Run::ChangePassphrase {
            new: new_passphrase(new_passphrase_file, new_passphrase_command)?,
        },
        Command::Backup(a) => backup(under(cfg, a)?)?,
        Command::Restore(a) => restore(under(cfg, *a)?)?,
        Command::Expire(a) => expire(a, cfg)?,
        Command::ArchivePush(a) => archiving::push(under(cfg, a)?)?,
        Command::ArchiveGet(a) => archiving::get(under(cfg, a)?)?,
        Command::ArchivePushWorker(a) => archiving::push_worker(a),
        Command::ArchiveGetWorker(a) => archiving::get_worker(a),
        Command::Upgrade(a) => {
            let UpgradeArgs { pgdata, lock_wait } = under(cfg, a)?;
            Run::Upgrade {
                pgdata: pgdata_of(pgdata)?,
                lock_wait: Duration::from_secs(lock_wait.unwrap_or(0)),
            }
        }
        Command::Info { output } => Run::Info {
            json: matches!(output, OutputArg::Json),
        },
        Command::Verify { set, output } => Run::Verify {
            opts: VerifyOptions { set, cluster },
            json: matches!(output, OutputArg::Json),
        },
        Command::Check(a) => check(under(cfg, a)?)?,
        Command::Repair(a) => {
            let RepairArgs {
                rebuild_catalog,
                lock_wait,
            } = under(cfg, a)?;
            if !rebuild_catalog {
                return usage("nothing to repair: say what, e.g. --rebuild-catalog");
            }
            Run::Repair {
                lock_wait: Duration::from_secs(lock_wait.unwrap_or(0)),
            }
        }
        Command::Drill(a) => drill(under(cfg, *a)?)?,
        Command::Completions { .. } | Command::Man => unreachable_standalone()?,
    })
}

/// A command's settings: the command line, then the config file.
fn under<T: serde::de::DeserializeOwned + merge::Merge>(cfg: &ConfigFile, given: T) -> R<T> {
    cfg.under(given).map_err(Usage)
}

fn init(group_readable: bool, encrypt: bool, has_passphrase: bool) -> R<Run> {
    if encrypt && !has_passphrase {
        return usage(format!(
            "--encrypt needs a passphrase: set {PASSPHRASE_ENV}, or use --passphrase-file or \
             --passphrase-command"
        ));
    }
    Ok(Run::Init {
        group_readable,
        encrypt,
    })
}

/// The command line first, then the environment, then the config file.
fn passphrase_source(given: &GlobalArgs, cfg: &GlobalArgs) -> R<Option<PassphraseSource>> {
    if let Some(f) = &given.passphrase_file {
        return Ok(Some(PassphraseSource::File(f.clone())));
    }
    if let Some(c) = &given.passphrase_command {
        return Ok(Some(PassphraseSource::Command(c.clone())));
    }
    if std::env::var_os(PASSPHRASE_ENV).is_some() {
        return Ok(Some(PassphraseSource::Env(PASSPHRASE_ENV.into())));
    }
    match (&cfg.passphrase_file, &cfg.passphrase_command) {
        (Some(_), Some(_)) => {
            usage("the config file names both passphrase-file and passphrase-command: keep one")
        }
        (Some(f), None) => Ok(Some(PassphraseSource::File(f.clone()))),
        (None, Some(c)) => Ok(Some(PassphraseSource::Command(c.clone()))),
        (None, None) => Ok(None),
    }
}

fn new_passphrase(file: Option<PathBuf>, command: Option<String>) -> R<PassphraseSource> {
    const NEW_ENV: &str = "PGSTRATA_NEW_PASSPHRASE";
    match (file, command) {
        (Some(f), _) => Ok(PassphraseSource::File(f)),
        (None, Some(c)) => Ok(PassphraseSource::Command(c)),
        (None, None) if std::env::var_os(NEW_ENV).is_some() => {
            Ok(PassphraseSource::Env(NEW_ENV.into()))
        }
        (None, None) => usage(format!(
            "no new passphrase: set {NEW_ENV}, or use --new-passphrase-file or \
             --new-passphrase-command"
        )),
    }
}

fn check(a: CheckArgs) -> R<Run> {
    let mut o = CheckOptions::new(pgdata_of(a.pgdata)?);
    o.dbname = a.dbname;
    if let Some(t) = a.archive_timeout {
        o.archive_timeout = Duration::from_secs(t);
    }
    Ok(Run::Check { opts: o })
}

fn unreachable_standalone() -> R<Run> {
    usage("internal: standalone command reached the repository commands")
}

fn pgdata_of(pgdata: Option<PathBuf>) -> R<PathBuf> {
    match pgdata {
        Some(p) => Ok(p),
        None => usage("no data directory given: use --pgdata DIR or pgdata in the config file"),
    }
}

pub fn level(l: Option<i32>) -> R<Option<i32>> {
    match l {
        Some(l) if !(1..=22).contains(&l) => usage("--compress-level must be between 1 and 22"),
        l => Ok(l),
    }
}

fn workers(w: Option<usize>) -> R<Option<usize>> {
    match w {
        Some(0) => usage("--workers must be at least 1"),
        w => Ok(w),
    }
}

fn gc_threshold(pct: Option<f64>) -> R<f64> {
    let p = pct.unwrap_or(50.0);
    if !(0.0..=100.0).contains(&p) {
        return usage("--gc-threshold must be a percentage from 0 to 100");
    }
    Ok(p / 100.0)
}

fn retention(full: Option<u32>, diff: Option<u32>, days: Option<f64>) -> R<Retention> {
    for (what, n) in [("--retain-full", full), ("--retain-diff", diff)] {
        if n == Some(0) {
            return usage(format!("{what} must be at least 1"));
        }
    }
    if days.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        return usage("--retain-days must be a positive number of days");
    }
    Ok(Retention {
        full,
        diff,
        days,
        set: None,
    })
}

fn backup(a: BackupArgs) -> R<Run> {
    let mut o = BackupOptions::new(pgdata_of(a.pgdata)?);
    o.dbname = a.dbname;
    o.backup_type = a.backup_type.map(|t| match t {
        TypeArg::Full => BackupType::Full,
        TypeArg::Diff => BackupType::Diff,
        TypeArg::Incr => BackupType::Incr,
    });
    if let Some(l) = level(a.compress_level)? {
        o.compress_level = l;
    }
    if let Some(w) = workers(a.workers)? {
        o.workers = w;
    }
    if let Some(t) = a.archive_timeout {
        o.archive_timeout = Duration::from_secs(t);
    }
    o.start_fast = a.start_fast;
    o.primary_dbname = a.primary_dbname;
    if let Some(m) = a.standby_max_lag_mib {
        o.standby_max_lag = m.saturating_mul(1 << 20);
    }
    o.checksum = a.checksum;
    o.change_tracking = match a.change_tracking {
        Some(ChangeTrackingArg::Auto) | None => ChangeTracking::Auto,
        Some(ChangeTrackingArg::Wal) => ChangeTracking::Wal,
        Some(ChangeTrackingArg::Off) => ChangeTracking::Off,
        Some(ChangeTrackingArg::Check) => ChangeTracking::Check,
    };
    if a.checksum
        && matches!(
            o.change_tracking,
            ChangeTracking::Wal | ChangeTracking::Check
        )
    {
        return usage(
            "--checksum reads every block: it does not go with --change-tracking wal or check",
        );
    }
    if let Some(w) = a.lock_wait {
        o.lock_wait = Duration::from_secs(w);
    }
    match a.pack_size_mib {
        Some(m) if !(1..=4096).contains(&m) => {
            return usage("--pack-size-mib must be between 1 and 4096")
        }
        Some(m) => o.pack_size = m << 20,
        None => {}
    }
    // Retention in the config file: every successful backup expires.
    let r = retention(a.retain_full, a.retain_diff, a.retain_days)?;
    let auto_expire = if r.is_empty() {
        None
    } else {
        let mut eo = ExpireOptions::new(r);
        eo.gc_threshold = gc_threshold(a.gc_threshold)?;
        eo.lock_wait = Duration::from_secs(a.lock_wait.unwrap_or(60));
        Some(eo)
    };
    Ok(Run::Backup {
        opts: o,
        auto_expire,
    })
}

/// Retention given on the command line replaces the config file's as a
/// whole: `--retain-days 7` does not keep the file's `retain-full` too.
fn expire(given: ExpireArgs, cfg: &ConfigFile) -> R<Run> {
    let on_cli = (given.retain_full, given.retain_diff, given.retain_days);
    let whole = on_cli != (None, None, None) || given.set.is_some();
    let mut a = under(cfg, given)?;
    if whole {
        (a.retain_full, a.retain_diff, a.retain_days) = on_cli;
    }
    let mut r = retention(a.retain_full, a.retain_diff, a.retain_days)?;
    r.set = a.set;
    let mut o = ExpireOptions::new(r);
    o.gc_threshold = gc_threshold(a.gc_threshold)?;
    if let Some(w) = a.lock_wait {
        o.lock_wait = Duration::from_secs(w);
    }
    Ok(Run::Expire {
        opts: o,
        dry_run: a.dry_run,
    })
}

fn restore(a: RestoreArgs) -> R<Run> {
    let mut o = RestoreOptions::new(a.pgdata);
    let mut prefetch = None;
    if let Some((spool, n)) = archiving::prefetch(a.prefetch, a.spool_dir) {
        // PostgreSQL runs restore_command in the data directory: a relative
        // spool would land inside it.
        let spool = match std::path::absolute(&spool) {
            Ok(p) => p,
            Err(e) => return usage(format!("--spool-dir {}: {e}", spool.display())),
        };
        prefetch = Some((spool, n));
    }
    o.set = a.set;
    o.recovery = recovery(
        &a.target,
        a.target_time,
        a.target_lsn,
        a.target_xid,
        a.target_name,
    )?;
    let r = &mut o.recovery;
    if a.target_exclusive
        && matches!(
            r.target,
            RecoveryTarget::EndOfWal | RecoveryTarget::Immediate
        )
    {
        return usage(
            "--target-exclusive needs --target-time, --target-lsn, --target-xid or --target-name",
        );
    }
    r.exclusive = a.target_exclusive;
    r.action = a.target_action.map(|x| match x {
        ActionArg::Pause => TargetAction::Pause,
        ActionArg::Promote => TargetAction::Promote,
        ActionArg::Shutdown => TargetAction::Shutdown,
    });
    r.timeline = match a.target_timeline.as_deref().map(TimelineTarget::parse) {
        Some(Err(e)) => return usage(super::render::error::library_error(&e)),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    r.standby = matches!(a.restore_type, RestoreTypeArg::Standby);
    if a.primary_conninfo.is_some() && !r.standby {
        return usage("--primary-conninfo goes with --type standby");
    }
    r.primary_conninfo = a.primary_conninfo;
    o.delta = a.delta;
    o.recovery.archive_mode = match a.archive_mode {
        ArchiveModeArg::Off => ArchiveMode::Off,
        ArchiveModeArg::Preserve => ArchiveMode::Preserve,
    };
    for m in a.tablespace_map {
        let Some((oid, dir)) = m.split_once('=') else {
            return usage(format!("--tablespace-map {m:?}: expected OID=DIR"));
        };
        let Ok(oid) = oid.parse::<u32>() else {
            return usage(format!("--tablespace-map {m:?}: {oid:?} is not an oid"));
        };
        o.tablespace_map.push((oid, PathBuf::from(dir)));
    }
    o.tablespace_map_all = a.tablespace_map_all;
    o.link_all = a.link_all;
    for m in a.link_map {
        match m.split_once('=') {
            Some((path, dest)) if !path.is_empty() && !dest.is_empty() => o
                .link_map
                .push((path.trim_end_matches('/').to_string(), PathBuf::from(dest))),
            _ => return usage(format!("--link-map {m:?}: expected PATH=DEST")),
        }
    }
    if let Some(w) = workers(a.workers)? {
        o.workers = w;
    }
    Ok(Run::Restore { opts: o, prefetch })
}

fn recovery(
    target: &Option<TargetArg>,
    time: Option<String>,
    lsn: Option<String>,
    xid: Option<String>,
    name: Option<String>,
) -> R<Recovery> {
    let target = if let Some(TargetArg::Immediate) = target {
        RecoveryTarget::Immediate
    } else if let Some(t) = time {
        match parse_target_time(&t) {
            Ok((at_us, text)) => RecoveryTarget::Time { text, at_us },
            Err(e) => return usage(super::render::error::library_error(&e)),
        }
    } else if let Some(l) = lsn {
        match l.parse::<Lsn>() {
            Ok(l) => RecoveryTarget::Lsn(l),
            Err(e) => return usage(super::render::error::library_error(&e)),
        }
    } else if let Some(x) = xid {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return usage(format!(
                "invalid --target-xid {x:?}: a transaction id is a number"
            ));
        }
        RecoveryTarget::Xid(x)
    } else if let Some(n) = name {
        RecoveryTarget::Name(n)
    } else {
        RecoveryTarget::EndOfWal
    };
    Ok(Recovery {
        target,
        ..Default::default()
    })
}

fn drill(a: DrillArgs) -> R<Run> {
    let DrillTable {
        scratch,
        pg_bindir,
        db_user,
        timeout,
        amcheck,
        settings,
        check,
    } = a.drill;
    let mut o = DrillOptions {
        set: a.set,
        recovery: recovery(
            &a.target,
            a.target_time,
            a.target_lsn,
            a.target_xid,
            a.target_name,
        )?,
        scratch,
        keep: a.keep,
        pg_bindir,
        db_user,
        amcheck: amcheck.unwrap_or(true),
        checks: check,
        ..Default::default()
    };
    if a.target_exclusive
        && matches!(
            o.recovery.target,
            RecoveryTarget::EndOfWal | RecoveryTarget::Immediate
        )
    {
        return usage(
            "--target-exclusive needs --target-time, --target-lsn, --target-xid or --target-name",
        );
    }
    o.recovery.exclusive = a.target_exclusive;
    o.recovery.timeline = match a.target_timeline.as_deref().map(TimelineTarget::parse) {
        Some(Err(e)) => return usage(super::render::error::library_error(&e)),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    match timeout {
        Some(0) => return usage("--timeout must be at least 1 second"),
        Some(t) => o.timeout = Duration::from_secs(t),
        None => {}
    }
    if let Some(w) = workers(a.workers)? {
        o.workers = w;
    }
    o.settings = drill_settings(&settings)?;
    let mut names = std::collections::HashSet::new();
    for c in &o.checks {
        if c.name.trim().is_empty() || !names.insert(c.name.as_str()) {
            return usage(format!(
                "[[drill.check]] names must be unique and not empty: {:?}",
                c.name
            ));
        }
    }
    Ok(Run::Drill {
        opts: Box::new(o),
        json: a.json || matches!(a.output, OutputArg::Json),
    })
}

/// `[drill.settings]`: strings as they are, numbers and booleans as TOML
/// writes them.
fn drill_settings(settings: &toml::Table) -> R<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (k, v) in settings {
        let v = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                v.to_string()
            }
            _ => {
                return usage(format!(
                    "[drill.settings] {k}: expected a string or a number"
                ))
            }
        };
        out.push((k.clone(), v));
    }
    Ok(out)
}
