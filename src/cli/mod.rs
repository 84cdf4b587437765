//! The command line: arguments and the config file are resolved into one
//! validated [`settings::Settings`], then one function per command calls the
//! library's public API and prints the outcome.

mod archiving;
pub mod args;
pub mod config;
mod invocation;
mod malloc;
mod remote;
mod render;
mod settings;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use clap::CommandFactory;

use pgstrata::{
    human, AsyncPush, CheckOptions, ExpireOptions, InitOutcome, PassphraseSource, Prefetch,
    Progress, PushOutcome, Repository, RestoreOptions, VerifyOptions,
};

use archiving::AsyncSettings;
pub use args::Cli;
pub use config::ConfigFile;
use invocation::SelfCommand;
pub use render::error::error as render_error;
use render::{out, print_expire, print_verify, say};
pub use settings::Usage;
use settings::{Run, Settings, Standalone};

/// What the process should exit with, when not an error.
pub enum Outcome {
    Ok,
    /// archive-get of a file the repository does not have: fail quietly.
    QuietFailure,
}

/// Resolve and run. A usage mistake is `Err(Ok(Usage))` (exit 2), a failure
/// `Err(Err(e))` (exit 1).
pub fn run(cli: Cli, cfg: &ConfigFile) -> Result<Outcome, Result<Usage, anyhow::Error>> {
    match Settings::resolve(cli, cfg).map_err(Ok)? {
        Ok(s) => execute(s).map_err(Err),
        Err(Standalone::Completions(shell)) => {
            completions(shell);
            Ok(Outcome::Ok)
        }
        Err(Standalone::Man) => man().map(|_| Outcome::Ok).map_err(Err),
    }
}

fn execute(s: Settings) -> anyhow::Result<Outcome> {
    let (cluster, quiet) = (s.cluster.as_str(), s.quiet);
    let loc = s.repo.location()?;
    let repo = &loc;
    let open = || Repository::open_at(&loc, s.passphrase.as_ref());
    match s.command {
        Run::Init {
            group_readable,
            encrypt,
        } => init(
            repo,
            group_readable,
            s.passphrase.as_ref().filter(|_| encrypt),
            quiet,
        )?,
        Run::ChangePassphrase { ref new } => change_passphrase(&open()?, new, quiet)?,
        Run::Backup { opts, auto_expire } => backup(&open()?, cluster, &opts, auto_expire, quiet)?,
        Run::Restore { opts, .. } => {
            malloc::return_freed_memory();
            restore(&open()?, cluster, &opts, quiet)?
        }
        Run::Expire { opts, dry_run } => expire(&open()?, cluster, &opts, dry_run, quiet)?,
        Run::ArchivePush {
            path,
            level,
            async_push,
        } => archive_push(&s.invocation, cluster, &path, level, async_push, &open)?,
        Run::ArchiveGet {
            name,
            dest,
            history,
            prefetch,
        } => {
            let found = match prefetch {
                None => pgstrata::archive_get(&open()?, cluster, history, &name, &dest)?,
                Some((spool, count)) => {
                    let p = prefetcher(&s.invocation, cluster, history, spool, count);
                    pgstrata::archive_get_prefetched(&p, &name, &dest, open)?
                }
            };
            if !found {
                return Ok(Outcome::QuietFailure);
            }
        }
        run @ (Run::ArchivePushWorker { .. } | Run::ArchiveGetWorker { .. }) => {
            worker(run, &s.invocation, cluster, &open()?)?
        }
        Run::Upgrade { pgdata, lock_wait } => {
            upgrade(&open()?, cluster, &pgdata, lock_wait, quiet)?
        }
        Run::Info { json } => {
            let i = pgstrata::info(&open()?, s.cluster_given.as_deref())?;
            match json {
                true => out(format_args!("{}\n", serde_json::to_string_pretty(&i)?)),
                false => out(format_args!("{}", render::info::text(&i))),
            }
        }
        Run::Verify { opts, json } => verify(&open()?, &opts, json, quiet)?,
        Run::Check { opts } => check(&open()?, cluster, &opts, quiet)?,
        Run::Repair { lock_wait } => repair(&open()?, lock_wait, quiet)?,
        Run::Drill { opts, json } => drill(&open()?, cluster, &opts, json, quiet)?,
    }
    Ok(Outcome::Ok)
}

fn change_passphrase(r: &Repository, new: &PassphraseSource, quiet: bool) -> anyhow::Result<()> {
    if !r.is_encrypted() {
        bail!("repository {} is not encrypted", r.name());
    }
    r.change_passphrase(&new.read()?)?;
    say(
        quiet,
        "passphrase changed: the repository's key is wrapped under the new one".into(),
    );
    Ok(())
}

fn upgrade(
    repo: &Repository,
    cluster: &str,
    pgdata: &Path,
    lock_wait: std::time::Duration,
    quiet: bool,
) -> anyhow::Result<()> {
    let r = pgstrata::upgrade(repo, cluster, pgdata, lock_wait)?;
    say(
        quiet,
        format!(
            "cluster {:?} upgraded: PostgreSQL {} (system identifier {}) is now history entry {}; \
             entry {} (PostgreSQL {}, system identifier {}) and its backups stay restorable. The \
             next backup is a full.",
            r.cluster,
            r.to.pg_version,
            r.to.system_id,
            r.to.seq,
            r.from.seq,
            r.from.pg_version,
            r.from.system_id
        ),
    );
    Ok(())
}

/// The background pusher and prefetcher, started by archive-push and
/// archive-get.
fn worker(run: Run, inv: &Arc<SelfCommand>, cluster: &str, r: &Repository) -> anyhow::Result<()> {
    match run {
        Run::ArchivePushWorker {
            pg_wal,
            spool,
            workers,
            level,
        } => match pgstrata::archive_pusher(r, cluster, &pg_wal, &spool, workers, level)? {
            Some(st) => tracing::info!("WAL pusher done: {st:?}"),
            None => tracing::debug!("another WAL pusher runs"),
        },
        Run::ArchiveGetWorker {
            history,
            spool,
            count,
            workers,
            seg_size,
        } => {
            let p = prefetcher(inv, cluster, history, spool, count);
            let n = pgstrata::archive_prefetcher(r, &p, seg_size, workers)?;
            tracing::info!("WAL prefetcher done: {n} segments fetched");
        }
        _ => bail!("internal: not a worker"),
    }
    Ok(())
}

fn expire(
    repo: &Repository,
    cluster: &str,
    opts: &ExpireOptions,
    dry_run: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let (plan, log) = pgstrata::expire(repo, cluster, opts, dry_run)?;
    match log {
        None => out(format_args!("{}", render::expire::plan(&plan))),
        Some(log) => {
            tracing::info!("{}", render::expire::plan(&plan));
            print_expire(quiet, &plan, &log);
        }
    }
    Ok(())
}

fn verify(repo: &Repository, opts: &VerifyOptions, json: bool, quiet: bool) -> anyhow::Result<()> {
    let p = progress(quiet);
    let r = pgstrata::verify(repo, opts, p.as_ref())?;
    match json {
        true => out(format_args!("{}\n", serde_json::to_string_pretty(&r)?)),
        false => print_verify(&r, quiet),
    }
    if !r.is_ok() {
        let broken = r.backups.iter().filter(|b| !b.ok).count();
        bail!(
            "verify found {} problem(s); {broken} of {} backup(s) affected",
            r.problems.len(),
            r.backups.len()
        );
    }
    Ok(())
}

fn archive_push(
    inv: &SelfCommand,
    cluster: &str,
    path: &Path,
    level: i32,
    async_push: Option<AsyncSettings>,
    open: &dyn Fn() -> pgstrata::Result<Repository>,
) -> anyhow::Result<()> {
    let Some(a) = async_push else {
        if pgstrata::archive_push(&open()?, cluster, path, level)? == PushOutcome::AlreadyArchived {
            tracing::info!(
                "{} was already archived with the same content",
                path.display()
            );
        }
        return Ok(());
    };
    // %p is relative to the data directory: the pusher gets pg_wal's full path.
    let pg_wal = std::env::current_dir()?.join(path.parent().unwrap_or(Path::new("")));
    let worker = inv.push_worker(cluster, &pg_wal, &a.spool, a.workers, level);
    let opts = AsyncPush {
        spool: a.spool,
        cluster: cluster.to_string(),
        timeout: a.timeout,
        queue_max: a.queue_max,
        queue_full: a.queue_full,
        worker,
    };
    pgstrata::archive_push_async(&opts, path)?;
    Ok(())
}

fn prefetcher(
    inv: &Arc<SelfCommand>,
    cluster: &str,
    history: u32,
    spool: PathBuf,
    count: usize,
) -> Prefetch {
    Prefetch {
        spool,
        cluster: cluster.to_string(),
        history,
        count,
        invocation: inv.clone(),
    }
}

fn check(repo: &Repository, cluster: &str, opts: &CheckOptions, quiet: bool) -> anyhow::Result<()> {
    let r = pgstrata::check(repo, cluster, opts)?;
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
    Ok(())
}

fn init(
    repo: &pgstrata::Location,
    group_readable: bool,
    encrypt: Option<&PassphraseSource>,
    quiet: bool,
) -> anyhow::Result<()> {
    let pass = encrypt.map(PassphraseSource::read).transpose()?;
    match Repository::init_at(repo, group_readable, pass.as_ref())? {
        InitOutcome::Created => say(quiet, format!("created repository {}", repo.name())),
        InitOutcome::AlreadyInitialized => say(
            quiet,
            format!(
                "{} is already a pgstrata repository; nothing to do",
                repo.name()
            ),
        ),
    }
    Ok(())
}

fn backup(
    repo: &Repository,
    cluster: &str,
    opts: &pgstrata::BackupOptions,
    auto_expire: Option<ExpireOptions>,
    quiet: bool,
) -> anyhow::Result<()> {
    let p = progress(quiet);
    let r = pgstrata::backup(repo, cluster, opts, p.as_ref())?;
    if r.became_full {
        eprintln!(
            "pgstrata: cluster {cluster:?} has no complete full backup to base this one on: \
             took a full backup"
        );
    }
    say(
        quiet,
        format!(
            "backup {} ({}{}) complete: {} files, {} read of {}, {} stored, {:.1} s, WAL {}..{}",
            r.id,
            r.backup_type.as_str(),
            r.reference
                .as_deref()
                .map(|x| format!(" of {x}"))
                .unwrap_or_default(),
            r.files,
            human(r.read_bytes),
            human(r.db_bytes),
            human(r.stored_bytes),
            r.elapsed.as_secs_f64(),
            r.start_lsn,
            r.stop_lsn
        ),
    );
    if r.changes != pgstrata::ChangeSource::Full {
        say(
            quiet,
            format!("  changes found by: {}", r.changes.describe()),
        );
    }
    for e in &r.page_errors {
        eprintln!(
            "pgstrata: warning: {} block {}: {}",
            e.path, e.block, e.detail
        );
    }
    if let Some(eo) = auto_expire {
        let (plan, log) = pgstrata::expire(repo, cluster, &eo, false)?;
        if let Some(log) = log {
            print_expire(quiet, &plan, &log);
        }
    }
    Ok(())
}

fn restore(
    repo: &Repository,
    cluster: &str,
    opts: &RestoreOptions,
    quiet: bool,
) -> anyhow::Result<()> {
    let plan = pgstrata::plan_restore(repo, cluster, opts)?;
    render::restore_warnings(&plan);
    let p = progress(quiet);
    let s = pgstrata::apply_restore(repo, &plan, opts.workers, p.as_ref())?;
    let how = if plan.delta {
        format!(
            "delta: {} rewritten, {} paths removed",
            human(s.written),
            s.removed
        )
    } else {
        human(s.bytes)
    };
    say(
        quiet,
        format!(
            "restored backup {} to {}: {} files, {how} in {:.1} s; PostgreSQL {} is \
             needed to start it; start the server to recover\n{}",
            s.backup_id,
            plan.target.display(),
            s.files,
            s.elapsed.as_secs_f64(),
            s.pg_version,
            render::archiving(
                &pgstrata::restore_archiving_summary(repo, &plan, opts.recovery.archive_mode),
                &plan.cluster
            )
        ),
    );
    Ok(())
}

fn repair(repo: &Repository, lock_wait: std::time::Duration, quiet: bool) -> anyhow::Result<()> {
    let p = progress(quiet);
    let r = pgstrata::rebuild_catalog(repo, lock_wait, p.as_ref())?;
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
    Ok(())
}

fn drill(
    repo: &Repository,
    cluster: &str,
    opts: &pgstrata::DrillOptions,
    json: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let p = progress(quiet || json);
    let r = pgstrata::drill(repo, cluster, opts, p.as_ref())?;
    if !json {
        render::drill::warnings(&r);
    }
    match json {
        true => out(format_args!("{}\n", serde_json::to_string_pretty(&r)?)),
        false if !quiet || !r.ok => out(format_args!("{}", render::drill::report(&r))),
        false => {}
    }
    if let Some(f) = &r.failure {
        bail!("drill of backup {} failed: {f}", r.backup);
    }
    Ok(())
}

fn completions(shell: args::ShellArg) {
    use clap_complete::Shell;
    let shell = match shell {
        args::ShellArg::Bash => Shell::Bash,
        args::ShellArg::Zsh => Shell::Zsh,
        args::ShellArg::Fish => Shell::Fish,
        args::ShellArg::Elvish => Shell::Elvish,
        args::ShellArg::Powershell => Shell::PowerShell,
    };
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "pgstrata",
        &mut std::io::stdout(),
    );
}

fn man() -> anyhow::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(())
}

fn progress(quiet: bool) -> Box<dyn Progress> {
    match (quiet, std::io::stderr().is_terminal()) {
        (true, _) => Box::new(pgstrata::Silent),
        (false, true) => Box::new(render::progress::Bar::new()),
        (false, false) => Box::new(render::progress::Lines),
    }
}
