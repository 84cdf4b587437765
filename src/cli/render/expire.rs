//! What `expire` plans and did, for people.

use std::fmt::Write;

use pgstrata::{human, rfc3339, ExpirePlan};

/// The plan, for a dry run and logs.
pub fn plan(plan: &ExpirePlan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "expire plan for cluster {}:", plan.cluster);
    if plan.backups.is_empty() {
        let _ = writeln!(s, "  backups to expire: none");
    }
    for (b, why) in &plan.backups {
        let _ = writeln!(
            s,
            "  expire backup {} ({}, {}): {why}",
            b.id,
            b.backup_type.as_str(),
            rfc3339(b.start_time)
        );
    }
    for id in &plan.leftovers {
        let _ = writeln!(s, "  remove unfinished backup {id}");
    }
    match (plan.wal.first(), plan.wal.last()) {
        (Some(a), Some(z)) => {
            let _ = writeln!(
                s,
                "  remove {} WAL files ({} .. {})",
                plan.wal.len(),
                a.1,
                z.1
            );
        }
        _ => {
            let _ = writeln!(s, "  remove WAL: none");
        }
    }
    let del: u64 = plan.delete_packs.iter().map(|p| p.size).sum();
    let _ = writeln!(
        s,
        "  delete {} packs ({})",
        plan.delete_packs.len(),
        human(del)
    );
    for p in &plan.rewrite_packs {
        let _ = writeln!(
            s,
            "  rewrite pack {} ({} live of {})",
            &p.id.to_hex()[..16],
            human(p.live_bytes),
            human(p.size)
        );
    }
    if !plan.orphans.is_empty() {
        let _ = writeln!(
            s,
            "  remove {} leftover objects of interrupted work",
            plan.orphans.len()
        );
    }
    let _ = writeln!(s, "  space freed: up to {}", human(plan.bytes));
    s
}
