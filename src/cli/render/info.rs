//! `info` for people; the JSON form is the library's `Info` as it is.

use std::fmt::Write;

use pgstrata::{human, ClusterInfo, Info, LastDrill};

pub fn text(info: &Info) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "repository {}: {} ({} in packs){}",
        info.repo.path,
        human(info.repo.bytes),
        human(info.repo.pack_bytes),
        if info.repo.encrypted {
            ", encrypted"
        } else {
            ""
        }
    );
    if let Some(l) = &info.repo.last_expire {
        let _ = writeln!(
            s,
            "last expire {}: {} backups, {} WAL files, {} packs deleted, {} rewritten, {} leftovers, {} freed",
            l.time, l.backups, l.wal_files, l.packs_deleted, l.packs_rewritten, l.orphans, human(l.bytes_freed)
        );
    }
    if info.clusters.is_empty() {
        let _ = writeln!(s, "no clusters yet");
    }
    for c in &info.clusters {
        render_cluster(&mut s, c);
    }
    s
}

fn render_cluster(s: &mut String, c: &ClusterInfo) {
    let _ = writeln!(
        s,
        "\ncluster {} (PostgreSQL {}, system id {})",
        c.name, c.pg_version, c.system_id
    );
    if c.history.len() > 1 {
        for h in &c.history {
            let _ = writeln!(
                s,
                "  history {}: PostgreSQL {}, system id {}, since {}",
                h.seq, h.pg_version, h.system_id, h.since
            );
        }
    }
    match (&c.wal.min, &c.wal.max) {
        (Some(a), Some(b)) => {
            let _ = writeln!(
                s,
                "  wal archive: {a} .. {b} ({} files, timelines {:?})",
                c.wal.files, c.wal.timelines
            );
        }
        _ => {
            let _ = writeln!(s, "  wal archive: empty");
        }
    }
    if let Some(d) = &c.last_drill {
        render_drill(s, d);
    }
    if c.backups.is_empty() {
        let _ = writeln!(s, "  no backups");
        return;
    }
    let _ = writeln!(
        s,
        "  {:<20} {:<5} {:>3} {:<9} {:<20} {:<20} {:>10} {:>10} {:>10} {:>7}  wal",
        "backup",
        "type",
        "pg",
        "status",
        "start (UTC)",
        "reference",
        "size",
        "read",
        "stored",
        "ratio"
    );
    for b in &c.backups {
        let _ = writeln!(
            s,
            "  {:<20} {:<5} {:>3} {:<9} {:<20} {:<20} {:>10} {:>10} {:>10} {:>7}  {}..{}{}{}{}",
            b.id,
            b.backup_type,
            b.pg_version,
            b.status,
            b.start_time.trim_end_matches('Z').replace('T', " "),
            b.reference.as_deref().unwrap_or("-"),
            human(b.db_bytes),
            human(b.read_bytes),
            human(b.stored_bytes),
            b.dedupe_ratio
                .map(|r| format!("{r}x"))
                .unwrap_or_else(|| "-".into()),
            b.wal_start.as_deref().unwrap_or("?"),
            b.wal_stop.as_deref().unwrap_or("?"),
            if b.from_standby {
                "  (from a standby)"
            } else {
                ""
            },
            if b.page_errors > 0 {
                format!("  ({} page checksum errors)", b.page_errors)
            } else {
                String::new()
            },
            b.changes
                .as_deref()
                .map(|c| format!("  (changes: {c})"))
                .unwrap_or_default()
        );
    }
}

/// "last drill: <when> passed (backup X, restore 3.1 s, consistent after
/// 2.0 s, 2/2 checks)".
fn render_drill(s: &mut String, d: &LastDrill) {
    let mut parts = vec![format!("backup {}", d.backup.as_deref().unwrap_or("-"))];
    if d.target != "end of WAL" {
        parts.push(format!("target {}", d.target));
    }
    if let Some(r) = d.restore_seconds {
        parts.push(format!("restore {r:.1} s"));
    }
    if let Some(c) = d.consistent_seconds {
        parts.push(format!("consistent after {c:.1} s"));
    }
    parts.push(format!("{}/{} checks", d.checks_passed, d.checks_total));
    let _ = writeln!(
        s,
        "  last drill: {} {} ({}){}",
        d.time,
        if d.ok { "passed" } else { "FAILED" },
        parts.join(", "),
        d.failure
            .as_deref()
            .map(|f| format!(": {f}"))
            .unwrap_or_default()
    );
}
