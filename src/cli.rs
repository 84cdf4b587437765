//! Command-line interface: argument and config-file parsing, and dispatch to
//! the library's public API. Precedence: command line, then environment
//! (`PGSTRATA_REPO`, libpq's `PG*`), then `--config` file, then defaults.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use pgstrata::archive::{self, PushOutcome};
use pgstrata::backup::{self, BackupOptions};
use pgstrata::catalog::BackupType;
use pgstrata::catalog::ExpireLog;
use pgstrata::check::{self, CheckOptions};
use pgstrata::expire::{self, ExpireOptions, ExpirePlan, Retention};
use pgstrata::info;
use pgstrata::progress::{Bar, Progress, Silent};
use pgstrata::repair;
use pgstrata::repo::{InitOutcome, Repository};
use pgstrata::restore::target::parse_time;
use pgstrata::restore::{self, RecoveryTarget, RestoreOptions, TargetAction, TimelineTarget};
use pgstrata::verify::{self, VerifyOptions};

#[derive(Parser, Debug)]
#[command(
    name = "pgstrata",
    version,
    about = "Incremental physical backups for PostgreSQL"
)]
pub struct Cli {
    /// Repository directory.
    #[arg(long, global = true, env = "PGSTRATA_REPO")]
    pub repo: Option<PathBuf>,
    /// Cluster name inside the repository [default: main].
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// TOML configuration file; every option can live there.
    #[arg(long, global = true, env = "PGSTRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// error, warn, info, debug or trace [default: warn].
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// No progress bars and no summaries.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TypeArg {
    Full,
    Diff,
    Incr,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputArg {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TargetArg {
    Immediate,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RestoreTypeArg {
    Recovery,
    Standby,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActionArg {
    Pause,
    Promote,
    Shutdown,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an empty repository.
    Init {
        /// Make the repository readable by the owner's group.
        #[arg(long)]
        group_readable: bool,
    },
    /// Back up a running cluster.
    Backup {
        #[arg(long)]
        pgdata: Option<PathBuf>,
        /// full, diff or incr [default: incr, or full when there is none yet].
        #[arg(long = "type", value_enum)]
        backup_type: Option<TypeArg>,
        /// libpq connection string (key=value or URI).
        #[arg(long, short = 'd')]
        dbname: Option<String>,
        /// zstd level [default: 3].
        #[arg(long)]
        compress_level: Option<i32>,
        /// Parallel workers [default: CPUs, at most 8].
        #[arg(long)]
        workers: Option<usize>,
        /// Seconds to wait for the backup's WAL to be archived [default: 60].
        #[arg(long)]
        archive_timeout: Option<u64>,
        /// Ask for an immediate checkpoint instead of a spread one.
        #[arg(long)]
        start_fast: bool,
        /// Read every file, whatever its size and mtime.
        #[arg(long)]
        checksum: bool,
        /// Seconds to wait for another backup or expire to finish [default: 0].
        #[arg(long)]
        lock_wait: Option<u64>,
    },
    /// Reassemble a data directory from a backup.
    #[command(group(clap::ArgGroup::new("recovery_target").multiple(false)
        .args(["target", "target_time", "target_lsn", "target_xid", "target_name"])))]
    Restore {
        #[arg(long)]
        pgdata: PathBuf,
        /// Backup id, or `latest` [default: the newest backup that can reach the target].
        #[arg(long)]
        set: Option<String>,
        /// Stop recovery as soon as the backup is consistent.
        #[arg(long, value_enum)]
        target: Option<TargetArg>,
        /// Recover up to this time; a zone is required (e.g. '2026-11-21 08:30:00+00').
        #[arg(long)]
        target_time: Option<String>,
        /// Recover up to this LSN (e.g. 0/3000028).
        #[arg(long)]
        target_lsn: Option<String>,
        /// Recover up to this transaction id.
        #[arg(long)]
        target_xid: Option<String>,
        /// Recover up to this restore point (pg_create_restore_point).
        #[arg(long)]
        target_name: Option<String>,
        /// Stop just before the target instead of just after it.
        #[arg(long)]
        target_exclusive: bool,
        /// What the server does at the target.
        #[arg(long, value_enum)]
        target_action: Option<ActionArg>,
        /// Timeline to recover along: current, latest or a number.
        #[arg(long)]
        target_timeline: Option<String>,
        /// recovery (default) or standby (writes standby.signal).
        #[arg(long = "type", value_enum, default_value = "recovery")]
        restore_type: RestoreTypeArg,
        /// primary_conninfo for a standby.
        #[arg(long)]
        primary_conninfo: Option<String>,
        /// Update a stopped copy of this cluster in place: rewrite only blocks that differ.
        #[arg(long)]
        delta: bool,
        /// Restore tablespace OID into DIR (repeatable), as OID=DIR.
        #[arg(long, value_name = "OID=DIR")]
        tablespace_map: Vec<String>,
        /// Restore every other tablespace into DIR/<oid>.
        #[arg(long, value_name = "DIR")]
        tablespace_map_all: Option<PathBuf>,
        #[arg(long)]
        workers: Option<usize>,
        /// off (default): the copy never archives; preserve: keep the backup's
        /// archive_mode/archive_command (a restore that replaces the primary).
        #[arg(long, value_name = "off|preserve", default_value = "off")]
        archive_mode: String,
    },
    /// Apply retention, remove WAL no backup needs, collect garbage.
    Expire {
        /// Keep this many full backups (their diffs and incrs go with older fulls).
        #[arg(long)]
        retain_full: Option<u32>,
        /// Keep this many differential backups.
        #[arg(long)]
        retain_diff: Option<u32>,
        /// Keep what restores to any point in the last DAYS days.
        #[arg(long, value_name = "DAYS")]
        retain_days: Option<f64>,
        /// Expire exactly this backup.
        #[arg(long)]
        set: Option<String>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Rewrite packs whose live share falls below PCT percent [default: 50].
        #[arg(long, value_name = "PCT")]
        gc_threshold: Option<f64>,
        /// Seconds to wait for a running backup or expire [default: 0].
        #[arg(long)]
        lock_wait: Option<u64>,
    },
    /// Archive a WAL file (for archive_command).
    ArchivePush {
        path: PathBuf,
        #[arg(long)]
        compress_level: Option<i32>,
    },
    /// Fetch an archived WAL file (for restore_command).
    ArchiveGet { name: String, dest: PathBuf },
    /// Show backups, sizes and the WAL archive.
    Info {
        #[arg(long, value_enum, default_value = "text")]
        output: OutputArg,
    },
    /// Prove the repository can restore what it claims: every chunk, every
    /// manifest, WAL continuity, the catalog.
    Verify {
        /// Check one backup only.
        #[arg(long)]
        set: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: OutputArg,
    },
    /// Prove the live setup works: connection, identity, archive_command.
    Check {
        #[arg(long)]
        pgdata: Option<PathBuf>,
        /// libpq connection string (key=value or URI).
        #[arg(long, short = 'd')]
        dbname: Option<String>,
        /// Seconds to wait for the switched WAL segment to arrive [default: 60].
        #[arg(long)]
        archive_timeout: Option<u64>,
    },
    /// Repair the repository.
    Repair {
        /// Rebuild catalog.db from the packs and manifest copies (the old
        /// catalog is moved aside, not deleted).
        #[arg(long)]
        rebuild_catalog: bool,
        /// Seconds to wait for a running backup to finish [default: 0].
        #[arg(long)]
        lock_wait: Option<u64>,
    },
}

/// Options that may come from the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub repo: Option<PathBuf>,
    pub cluster: Option<String>,
    pub log_level: Option<String>,
    pub pgdata: Option<PathBuf>,
    pub dbname: Option<String>,
    pub compress_level: Option<i32>,
    pub workers: Option<usize>,
    pub archive_timeout: Option<u64>,
    pub start_fast: Option<bool>,
    pub lock_wait: Option<u64>,
    pub pack_size_mib: Option<u64>,
    pub retain_full: Option<u32>,
    pub retain_diff: Option<u32>,
    pub retain_days: Option<f64>,
    pub gc_threshold: Option<f64>,
}

impl FileConfig {
    fn retention(&self) -> Retention {
        Retention {
            full: self.retain_full,
            diff: self.retain_diff,
            days: self.retain_days,
            set: None,
        }
    }
}

fn gc_threshold(pct: Option<f64>) -> anyhow::Result<f64> {
    let p = pct.unwrap_or(50.0);
    if !(0.0..=100.0).contains(&p) {
        bail!("--gc-threshold must be a percentage from 0 to 100");
    }
    Ok(p / 100.0)
}

fn print_expire(quiet: bool, plan: &ExpirePlan, log: &ExpireLog) {
    say(
        quiet,
        format!(
            "expired {} backups of cluster {}, removed {} WAL files, deleted {} and rewrote {} packs, \
             removed {} leftovers: {} freed",
            log.backups,
            plan.cluster,
            log.wal_files,
            log.packs_deleted,
            log.packs_rewritten,
            log.orphans,
            info::human(log.bytes_freed)
        ),
    );
}

pub fn load_config(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(p) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("cannot read config file {}", p.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", p.display()))
}

fn progress(quiet: bool) -> Box<dyn Progress> {
    if !quiet && std::io::stderr().is_terminal() {
        Box::new(Bar::new())
    } else {
        Box::new(Silent)
    }
}

/// What the process should exit with, when not an error.
pub enum Outcome {
    Ok,
    /// archive-get of a file the repository does not have: fail quietly.
    QuietFailure,
}

pub fn run(cli: Cli, cfg: FileConfig) -> anyhow::Result<Outcome> {
    let repo_path =
        cli.repo.clone().or(cfg.repo.clone()).context(
            "no repository given: use --repo DIR, PGSTRATA_REPO or repo in the config file",
        )?;
    let cluster = cli
        .cluster
        .clone()
        .or(cfg.cluster.clone())
        .unwrap_or_else(|| "main".into());
    let quiet = cli.quiet;
    match cli.command {
        Command::Init { group_readable } => match Repository::init(&repo_path, group_readable)? {
            InitOutcome::Created => {
                say(quiet, format!("created repository {}", repo_path.display()))
            }
            InitOutcome::AlreadyInitialized => say(
                quiet,
                format!(
                    "{} is already a pgstrata repository; nothing to do",
                    repo_path.display()
                ),
            ),
        },
        Command::Backup {
            pgdata,
            backup_type,
            dbname,
            compress_level,
            workers,
            archive_timeout,
            start_fast,
            checksum,
            lock_wait,
        } => {
            let repo = Repository::open(&repo_path)?;
            let pgdata = pgdata.or(cfg.pgdata.clone()).context(
                "no data directory given: use --pgdata DIR or pgdata in the config file",
            )?;
            let mut o = BackupOptions::new(pgdata);
            o.dbname = dbname.or(cfg.dbname.clone());
            o.backup_type = backup_type.map(|t| match t {
                TypeArg::Full => BackupType::Full,
                TypeArg::Diff => BackupType::Diff,
                TypeArg::Incr => BackupType::Incr,
            });
            if let Some(l) = compress_level.or(cfg.compress_level) {
                if !(1..=22).contains(&l) {
                    bail!("--compress-level must be between 1 and 22");
                }
                o.compress_level = l;
            }
            if let Some(w) = workers.or(cfg.workers) {
                o.workers = w.max(1);
            }
            if let Some(t) = archive_timeout.or(cfg.archive_timeout) {
                o.archive_timeout = Duration::from_secs(t);
            }
            o.start_fast = start_fast || cfg.start_fast.unwrap_or(false);
            o.checksum = checksum;
            if let Some(w) = lock_wait.or(cfg.lock_wait) {
                o.lock_wait = Duration::from_secs(w);
            }
            if let Some(m) = cfg.pack_size_mib {
                o.pack_size = m.max(1) << 20;
            }
            let p = progress(quiet);
            let r = backup::run(&repo, &cluster, &o, p.as_ref())?;
            if r.became_full {
                eprintln!(
                    "pgstrata: no full backup of cluster {cluster:?} yet: took a full backup"
                );
            }
            say(
                quiet,
                format!(
                    "backup {} ({}{}) complete: {} files, {} read of {}, {} stored, {:.1} s, WAL {}..{}",
                    r.id,
                    r.backup_type.as_str(),
                    r.reference.as_deref().map(|x| format!(" of {x}")).unwrap_or_default(),
                    r.files,
                    info::human(r.read_bytes),
                    info::human(r.db_bytes),
                    info::human(r.stored_bytes),
                    r.elapsed.as_secs_f64(),
                    r.start_lsn,
                    r.stop_lsn
                ),
            );
            for e in &r.page_errors {
                eprintln!(
                    "pgstrata: warning: {} block {}: {}",
                    e.path, e.block, e.detail
                );
            }
            // Retention in the config file: every successful backup expires.
            let retention = cfg.retention();
            if !retention.is_empty() {
                let mut eo = ExpireOptions::new(retention);
                eo.gc_threshold = gc_threshold(cfg.gc_threshold)?;
                eo.lock_wait = Duration::from_secs(cfg.lock_wait.unwrap_or(60));
                let (plan, log) = expire::run(&repo, &cluster, &eo, false)?;
                if let Some(log) = log {
                    print_expire(quiet, &plan, &log);
                }
            }
        }
        Command::Restore {
            pgdata,
            set,
            target,
            target_time,
            target_lsn,
            target_xid,
            target_name,
            target_exclusive,
            target_action,
            target_timeline,
            restore_type,
            primary_conninfo,
            delta,
            tablespace_map,
            tablespace_map_all,
            workers,
            archive_mode,
        } => {
            let repo = Repository::open(&repo_path)?;
            let mut o = RestoreOptions::new(pgdata);
            o.recovery.archive_mode = restore::ArchiveMode::parse(&archive_mode)?;
            o.set = set;
            let r = &mut o.recovery;
            r.target = if let Some(TargetArg::Immediate) = target {
                RecoveryTarget::Immediate
            } else if let Some(t) = target_time {
                let (at_us, text) = parse_time(&t)?;
                RecoveryTarget::Time { text, at_us }
            } else if let Some(l) = target_lsn {
                RecoveryTarget::Lsn(l.parse()?)
            } else if let Some(x) = target_xid {
                if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
                    bail!("invalid --target-xid {x:?}: a transaction id is a number");
                }
                RecoveryTarget::Xid(x)
            } else if let Some(n) = target_name {
                RecoveryTarget::Name(n)
            } else {
                RecoveryTarget::EndOfWal
            };
            if target_exclusive
                && matches!(
                    r.target,
                    RecoveryTarget::EndOfWal | RecoveryTarget::Immediate
                )
            {
                bail!("--target-exclusive needs --target-time, --target-lsn, --target-xid or --target-name");
            }
            r.exclusive = target_exclusive;
            r.action = target_action.map(|a| match a {
                ActionArg::Pause => TargetAction::Pause,
                ActionArg::Promote => TargetAction::Promote,
                ActionArg::Shutdown => TargetAction::Shutdown,
            });
            r.timeline = target_timeline
                .as_deref()
                .map(TimelineTarget::parse)
                .transpose()?;
            r.standby = matches!(restore_type, RestoreTypeArg::Standby);
            if primary_conninfo.is_some() && !r.standby {
                bail!("--primary-conninfo goes with --type standby");
            }
            r.primary_conninfo = primary_conninfo;
            o.delta = delta;
            for m in tablespace_map {
                let (oid, dir) = m
                    .split_once('=')
                    .context(format!("--tablespace-map {m:?}: expected OID=DIR"))?;
                let oid: u32 = oid
                    .parse()
                    .context(format!("--tablespace-map {m:?}: {oid:?} is not an oid"))?;
                o.tablespace_map.push((oid, PathBuf::from(dir)));
            }
            o.tablespace_map_all = tablespace_map_all;
            if let Some(w) = workers.or(cfg.workers) {
                o.workers = w.max(1);
            }
            let plan = restore::plan(&repo, &cluster, &o)?;
            let p = progress(quiet);
            let s = restore::apply(&repo, &plan, o.workers, p.as_ref())?;
            let how = if plan.delta {
                format!(
                    "delta: {} rewritten, {} paths removed",
                    info::human(s.written),
                    s.removed
                )
            } else {
                info::human(s.bytes)
            };
            say(
                quiet,
                format!(
                    "restored backup {} to {}: {} files, {how} in {:.1} s; start the server to recover\n{}",
                    s.backup_id,
                    plan.target.display(),
                    s.files,
                    s.elapsed.as_secs_f64(),
                    restore::archiving::summary(&repo, &plan, o.recovery.archive_mode)
                ),
            );
        }
        Command::Expire {
            retain_full,
            retain_diff,
            retain_days,
            set,
            dry_run,
            gc_threshold: pct,
            lock_wait,
        } => {
            let repo = Repository::open(&repo_path)?;
            let mut retention = cfg.retention();
            if retain_full.is_some()
                || retain_diff.is_some()
                || retain_days.is_some()
                || set.is_some()
            {
                retention = Retention {
                    full: retain_full,
                    diff: retain_diff,
                    days: retain_days,
                    set,
                };
            }
            let mut o = ExpireOptions::new(retention);
            o.gc_threshold = gc_threshold(pct.or(cfg.gc_threshold))?;
            if let Some(w) = lock_wait.or(cfg.lock_wait) {
                o.lock_wait = Duration::from_secs(w);
            }
            let (plan, log) = expire::run(&repo, &cluster, &o, dry_run)?;
            match log {
                None => print!("{}", plan.render()),
                Some(log) => {
                    tracing::info!("{}", plan.render());
                    print_expire(quiet, &plan, &log);
                }
            }
        }
        Command::ArchivePush {
            path,
            compress_level,
        } => {
            let repo = Repository::open(&repo_path)?;
            let level = compress_level.or(cfg.compress_level).unwrap_or(3);
            match archive::push(&repo, &cluster, &path, level)? {
                PushOutcome::Stored => {}
                PushOutcome::AlreadyArchived => {
                    tracing::info!(
                        "{} was already archived with the same content",
                        path.display()
                    )
                }
            }
        }
        Command::ArchiveGet { name, dest } => {
            let repo = Repository::open(&repo_path)?;
            if !archive::get(&repo, &cluster, &name, &dest)? {
                return Ok(Outcome::QuietFailure);
            }
        }
        Command::Info { output } => {
            let repo = Repository::open(&repo_path)?;
            let only = cli.cluster.as_deref();
            let i = info::gather(&repo, only)?;
            match output {
                OutputArg::Json => println!("{}", serde_json::to_string_pretty(&i)?),
                OutputArg::Text => print!("{}", info::render_text(&i)),
            }
        }
        Command::Verify { set, output } => {
            let repo = Repository::open(&repo_path)?;
            let o = VerifyOptions {
                set,
                cluster: cli.cluster.clone().or(cfg.cluster.clone()),
            };
            let p = progress(quiet);
            let r = verify::run(&repo, &o, p.as_ref())?;
            match output {
                OutputArg::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                OutputArg::Text => print_verify(&r, quiet),
            }
            if !r.is_ok() {
                let broken = r.backups.iter().filter(|b| !b.ok).count();
                bail!(
                    "verify found {} problem(s); {broken} of {} backup(s) affected",
                    r.problems.len(),
                    r.backups.len()
                );
            }
        }
        Command::Check {
            pgdata,
            dbname,
            archive_timeout,
        } => {
            let repo = Repository::open(&repo_path)?;
            let pgdata = pgdata.or(cfg.pgdata.clone()).context(
                "no data directory given: use --pgdata DIR or pgdata in the config file",
            )?;
            let mut o = CheckOptions::new(pgdata);
            o.dbname = dbname.or(cfg.dbname.clone());
            if let Some(t) = archive_timeout.or(cfg.archive_timeout) {
                o.archive_timeout = Duration::from_secs(t);
            }
            let r = check::run(&repo, &cluster, &o)?;
            say(
                quiet,
                format!(
                    "check ok: PostgreSQL {}, system identifier {}{}; WAL segment {} reached \
                     the repository in {:.1} s",
                    r.pg_version,
                    r.system_id,
                    if r.cluster_bound {
                        format!(" (cluster {cluster:?})")
                    } else {
                        format!(" (cluster {cluster:?} not bound yet)")
                    },
                    r.segment,
                    r.archive_wait.as_secs_f64()
                ),
            );
        }
        Command::Repair {
            rebuild_catalog,
            lock_wait,
        } => {
            if !rebuild_catalog {
                bail!("nothing to repair: say what, e.g. --rebuild-catalog");
            }
            let repo = Repository::open(&repo_path)?;
            let wait = Duration::from_secs(lock_wait.or(cfg.lock_wait).unwrap_or(0));
            let p = progress(quiet);
            let r = repair::rebuild_catalog(&repo, wait, p.as_ref())?;
            if let Some(old) = &r.old_catalog {
                say(quiet, format!("moved the old catalog to {}", old.display()));
            }
            for s in &r.skipped {
                eprintln!("pgstrata: warning: skipped {s}");
            }
            say(
                quiet,
                format!(
                    "rebuilt the catalog: {} cluster(s), {} backup(s), {} pack(s), {} chunk(s); \
                     run `pgstrata verify` to check it",
                    r.clusters,
                    r.backups.len(),
                    r.packs,
                    r.chunks
                ),
            );
        }
    }
    Ok(Outcome::Ok)
}

fn print_verify(r: &verify::VerifyReport, quiet: bool) {
    if !quiet || !r.is_ok() {
        println!(
            "checked {} pack(s), {} chunk(s), {} WAL file(s), {}",
            r.packs,
            r.chunks,
            r.wal_files,
            info::human(r.bytes)
        );
    }
    for b in &r.backups {
        if !quiet || !b.ok {
            println!(
                "backup {} ({}): {}",
                b.id,
                b.cluster,
                if b.ok { "ok" } else { "DAMAGED" }
            );
        }
    }
    if !quiet {
        for n in &r.notes {
            println!("note: {n}");
        }
    }
    for p in &r.problems {
        println!("problem: {p}");
    }
}

fn say(quiet: bool, msg: String) {
    if !quiet {
        println!("{msg}");
    }
}
