//! A drill's report for people; the JSON form is the library's
//! `DrillReport` as it is.

use std::fmt::Write;

use pgstrata::{DrillReport, DrillStepResult};

/// What the drill's copy left out or changed, as `restore` warns of it on
/// stderr; a drill has no `--link-all`, so the advice names the restore's.
pub fn warnings(r: &DrillReport) {
    let left_out = r
        .links_not_restored
        .iter()
        .map(|l| (l.path.as_str(), l.leads_to.clone()));
    super::link_warnings(left_out, &r.links_as_files, "restore --link-all");
}

/// For people: one line per step and check.
pub fn report(r: &DrillReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "drill of cluster {}: backup {} (PostgreSQL {}), target {}, started {}",
        r.cluster, r.backup, r.pg_version, r.target, r.time
    );
    // In the order things happened: restore and recovery, the checks,
    // then stop and cleanup.
    let (before, after): (Vec<&DrillStepResult>, Vec<&DrillStepResult>) = r
        .steps
        .iter()
        .partition(|st| st.step == "restore" || st.step == "recovery");
    let line = |s: &mut String, label: String, ok: bool, secs: f64, detail: &str| {
        let _ = writeln!(
            s,
            "  {label:<28} {:<6} {secs:>7.1} s  {}",
            verdict(ok),
            indent(detail)
        );
    };
    for st in before {
        line(&mut s, st.step.clone(), st.ok, st.seconds, &st.detail);
    }
    for c in &r.checks {
        let detail = match &c.database {
            Some(d) => format!("[{d}] {}", c.detail),
            None => c.detail.clone(),
        };
        line(
            &mut s,
            format!("check {:?}", c.name),
            c.ok,
            c.seconds,
            &detail,
        );
    }
    for st in after {
        line(&mut s, st.step.clone(), st.ok, st.seconds, &st.detail);
    }
    let _ = writeln!(
        s,
        "drill {}: {}/{} checks passed{}{}",
        if r.ok { "passed" } else { "FAILED" },
        r.checks_passed,
        r.checks_total,
        r.restore_seconds
            .map(|r| format!(", restore {r:.1} s"))
            .unwrap_or_default(),
        r.consistent_seconds
            .map(|c| format!(", consistent after {c:.1} s"))
            .unwrap_or_default(),
    );
    if r.kept {
        let _ = writeln!(s, "the restored copy is kept in {}", r.scratch);
    }
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}

/// Multi-line details (a server log's tail) stay under their step.
fn indent(s: &str) -> String {
    s.replace('\n', "\n        ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgstrata::DrillCheckResult;

    fn step(step: &str, ok: bool, seconds: f64, detail: &str) -> DrillStepResult {
        DrillStepResult {
            step: step.into(),
            ok,
            seconds,
            detail: detail.into(),
        }
    }

    #[test]
    fn steps_and_checks_come_in_the_order_they_happened() {
        let r = DrillReport {
            cluster: "main".into(),
            backup: "B".into(),
            pg_version: 15,
            target: "end of WAL".into(),
            time: "2026-11-22T06:00:00Z".into(),
            started_us: 0,
            ok: false,
            failure: Some("check \"rows\": returned \"0\"".into()),
            scratch: "/tmp/x".into(),
            kept: false,
            restore_seconds: Some(3.12),
            consistent_seconds: Some(2.0),
            promoted_seconds: Some(2.5),
            checks_passed: 1,
            checks_total: 2,
            steps: vec![
                step("restore", true, 3.12, "9 files"),
                step("recovery", true, 2.5, "consistent"),
                step("stop", true, 0.1, "fast shutdown"),
                step("cleanup", false, 0.1, "cannot remove"),
            ],
            checks: vec![
                DrillCheckResult {
                    name: "amcheck".into(),
                    database: None,
                    ok: true,
                    seconds: 1.0,
                    detail: "no corruption".into(),
                },
                DrillCheckResult {
                    name: "rows".into(),
                    database: Some("shop".into()),
                    ok: false,
                    seconds: 0.0,
                    detail: "returned \"0\"\nsecond line".into(),
                },
            ],
            links_as_files: Vec::new(),
            links_not_restored: Vec::new(),
        };
        let text = report(&r);
        let order: Vec<usize> = [
            "restore",
            "recovery",
            "check \"amcheck\"",
            "check \"rows\"",
            "stop",
            "cleanup",
        ]
        .iter()
        .map(|w| {
            text.find(&format!("  {w} "))
                .unwrap_or_else(|| panic!("{w}: {text}"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("[shop] returned \"0\"\n"), "{text}");
        assert!(
            text.contains("drill FAILED: 1/2 checks passed, restore 3.1 s, consistent after 2.0 s")
        );
    }
}
