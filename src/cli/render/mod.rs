//! Everything pgstrata prints: the library returns data (reports, plans,
//! `Info`), and this module words it for people. JSON is the library's
//! types serialized as they are.

pub mod drill;
pub mod error;
pub mod expire;
pub mod info;
pub mod progress;

use pgstrata::{human, Archiving, ExpireLog, ExpirePlan, RestorePlan, VerifyReport};

pub fn print_expire(quiet: bool, plan: &ExpirePlan, log: &ExpireLog) {
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
            human(log.bytes_freed)
        ),
    );
    if let Some(c) = log.catalog_compacted {
        say(
            quiet,
            format!(
                "compacted the catalog from {} to {}",
                human(c.before),
                human(c.after)
            ),
        );
    }
}

pub fn print_verify(r: &VerifyReport, quiet: bool) {
    if !quiet || !r.is_ok() {
        out(format_args!(
            "checked {} pack(s), {} chunk(s), {} WAL file(s), {}\n",
            r.packs,
            r.chunks,
            r.wal_files,
            human(r.bytes)
        ));
    }
    for b in &r.backups {
        if !quiet || !b.ok {
            out(format_args!(
                "backup {} ({}): {}\n",
                b.id,
                b.cluster,
                if b.ok { "ok" } else { "DAMAGED" }
            ));
        }
    }
    if !quiet {
        for n in &r.notes {
            out(format_args!("note: {n}\n"));
        }
    }
    for p in &r.problems {
        out(format_args!("problem: {p}\n"));
    }
}

/// What a restore leaves out or changes, before it writes.
pub fn restore_warnings(plan: &RestorePlan) {
    let left_out = plan
        .links_not_restored()
        .iter()
        .map(|(path, to)| (path.as_str(), to.display().to_string()));
    link_warnings(left_out, plan.links_as_files(), "--link-all");
}

/// Symbolic links of the data directory a restore left out (path, where it
/// led) or restored as regular files; `link_all` is how to ask for them as
/// links.
fn link_warnings<'a>(
    left_out: impl IntoIterator<Item = (&'a str, String)>,
    as_files: &[String],
    link_all: &str,
) {
    for (path, to) in left_out {
        eprintln!(
            "pgstrata: warning: {path} was a link to {to}: the backup holds only the link, not \
             what it leads to, so it is not restored ({link_all} recreates the link)"
        );
    }
    if !as_files.is_empty() {
        const SHOWN: usize = 10;
        let more = as_files.len().saturating_sub(SHOWN);
        let mut names = as_files[..as_files.len().min(SHOWN)].join(", ");
        if more > 0 {
            names.push_str(&format!(" and {more} more"));
        }
        eprintln!(
            "pgstrata: warning: restored as regular files and directories, though they were \
             symbolic links: {names} ({link_all} restores them as links)"
        );
    }
}

/// What the restored copy does about archiving, one line for the restore
/// summary.
pub fn archiving(a: &Archiving, cluster: &str) -> String {
    match a {
        Archiving::Off => "archiving: off — this copy will NOT archive into this repository when \
                           it promotes (archive_mode = off in postgresql.auto.conf; use \
                           --archive-mode preserve for a restore that replaces the primary)"
            .to_string(),
        Archiving::PreservedButOff => "archiving: preserved, but archive_mode is off in the \
                                       backup's configuration — this copy will not archive \
                                       when it promotes"
            .to_string(),
        Archiving::IntoThisRepository => format!(
            "archiving: preserved — once it promotes, this copy WILL archive into this \
             repository (cluster {cluster}); right for a restore that replaces the primary, \
             not for a test copy (use --archive-mode off)"
        ),
        Archiving::Elsewhere(cmd) => format!(
            "archiving: preserved — once it promotes, this copy archives with its own \
             archive_command ({cmd:?}), which does not name this repository"
        ),
    }
}

/// Write to standard output. A reader that went away (a closed pipe, as in
/// `pgstrata info | head`) gets nothing more, and the command ends with its
/// own exit status (a damaged repository still fails `verify`); any other
/// failure to write is reported.
pub fn out(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(text).and_then(|()| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CLOSED.store(true, Ordering::Relaxed);
            return;
        }
        eprintln!("pgstrata: error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

pub fn say(quiet: bool, msg: String) {
    if !quiet {
        out(format_args!("{msg}\n"));
    }
}
