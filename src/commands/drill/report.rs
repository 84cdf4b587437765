//! A drill's report: per step and per check, passed or failed with the
//! reason. Its JSON form (`--output json`) is a stable interface, like
//! `info`'s: field names and meanings only ever grow.

use std::fmt::Write;

use serde::Serialize;

/// One step of the drill (`restore`, `recovery`, `stop`, `cleanup`).
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub step: String,
    pub ok: bool,
    pub seconds: f64,
    pub detail: String,
}

/// One check (`amcheck`, or a configured SQL check).
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub name: String,
    /// The database of a SQL check (`amcheck` checks them all).
    pub database: Option<String>,
    pub ok: bool,
    pub seconds: f64,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    pub cluster: String,
    /// The backup restored.
    pub backup: String,
    /// The PostgreSQL major of the backup (and of the binaries used).
    pub pg_version: u32,
    /// The recovery target, in words (`end of WAL`, `time 2026-…`, …).
    pub target: String,
    /// When the drill started, RFC 3339 UTC.
    pub time: String,
    /// The same instant in unix microseconds, for the catalog.
    #[serde(skip)]
    pub(super) started_us: i64,
    /// Every step and every check passed.
    pub ok: bool,
    /// The first failure, in one line (none when `ok`).
    pub failure: Option<String>,
    /// Where the copy was restored; gone unless `kept`.
    pub scratch: String,
    pub kept: bool,
    pub restore_seconds: Option<f64>,
    /// From the server's start to a consistent state (connections accepted).
    pub consistent_seconds: Option<f64>,
    /// From the server's start to the end of recovery (promotion).
    pub promoted_seconds: Option<f64>,
    pub checks_passed: u32,
    pub checks_total: u32,
    pub steps: Vec<StepResult>,
    pub checks: Vec<CheckResult>,
}

impl DrillReport {
    /// Record a step; the first failure becomes the report's `failure`.
    pub(super) fn step(&mut self, step: &str, seconds: f64, outcome: Result<String, String>) {
        let ok = outcome.is_ok();
        let detail = match outcome {
            Ok(d) | Err(d) => d,
        };
        if !ok {
            self.fail(format!("{step}: {}", first_line(&detail)));
        }
        self.steps.push(StepResult {
            step: step.into(),
            ok,
            seconds,
            detail,
        });
    }

    pub(super) fn check(&mut self, c: CheckResult) {
        if c.ok {
            self.checks_passed += 1;
        } else {
            self.fail(format!("check {:?}: {}", c.name, first_line(&c.detail)));
        }
        self.checks.push(c);
    }

    fn fail(&mut self, why: String) {
        self.ok = false;
        self.failure.get_or_insert(why);
    }

    /// For people: one line per step and check.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "drill of cluster {}: backup {} (PostgreSQL {}), target {}, started {}",
            self.cluster, self.backup, self.pg_version, self.target, self.time
        );
        // In the order things happened: restore and recovery, the checks,
        // then stop and cleanup.
        let (before, after): (Vec<&StepResult>, Vec<&StepResult>) = self
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
        for c in &self.checks {
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
            if self.ok { "passed" } else { "FAILED" },
            self.checks_passed,
            self.checks_total,
            self.restore_seconds
                .map(|r| format!(", restore {r:.1} s"))
                .unwrap_or_default(),
            self.consistent_seconds
                .map(|c| format!(", consistent after {c:.1} s"))
                .unwrap_or_default(),
        );
        if self.kept {
            let _ = writeln!(s, "the restored copy is kept in {}", self.scratch);
        }
        s
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAILED"
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Multi-line details (a server log's tail) stay under their step.
fn indent(s: &str) -> String {
    s.replace('\n', "\n        ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> DrillReport {
        DrillReport {
            cluster: "main".into(),
            backup: "B".into(),
            pg_version: 15,
            target: "end of WAL".into(),
            time: "2026-11-22T06:00:00Z".into(),
            started_us: 0,
            ok: true,
            failure: None,
            scratch: "/tmp/x".into(),
            kept: false,
            restore_seconds: Some(3.12),
            consistent_seconds: Some(2.0),
            promoted_seconds: Some(2.5),
            checks_passed: 0,
            checks_total: 2,
            steps: Vec::new(),
            checks: Vec::new(),
        }
    }

    #[test]
    fn the_first_failure_is_kept_and_steps_come_in_order() {
        let mut r = report();
        r.step("restore", 3.12, Ok("9 files".into()));
        r.step("recovery", 2.5, Ok("consistent".into()));
        r.step("stop", 0.1, Ok("fast shutdown".into()));
        r.check(CheckResult {
            name: "amcheck".into(),
            database: None,
            ok: true,
            seconds: 1.0,
            detail: "no corruption".into(),
        });
        r.check(CheckResult {
            name: "rows".into(),
            database: Some("shop".into()),
            ok: false,
            seconds: 0.0,
            detail: "returned \"0\"\nsecond line".into(),
        });
        r.step("cleanup", 0.1, Err("cannot remove".into()));
        assert!(!r.ok);
        assert_eq!(r.checks_passed, 1);
        assert_eq!(r.failure.as_deref(), Some("check \"rows\": returned \"0\""));
        let text = r.render_text();
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
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("started_us").is_none());
        assert_eq!(json["steps"][3]["ok"], false);
    }
}
