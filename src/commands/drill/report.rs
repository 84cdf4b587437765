//! A drill's report: per step and per check, passed or failed with the
//! reason. Its JSON form is a stable interface, like `info`'s: field names
//! and meanings only ever grow; the binary renders the text.

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

/// A symbolic link in the backup's data directory to something the backup
/// does not hold: left out of the copy, as a restore leaves it out.
#[derive(Clone, Debug, Serialize)]
pub struct LinkNotRestored {
    /// Its path in the data directory.
    pub path: String,
    /// Where it led.
    pub leads_to: String,
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
    pub started_us: i64,
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
    /// Symbolic links in the data directory that the copy holds as the
    /// regular files and directories they led to (a restore's default).
    pub links_as_files: Vec<String>,
    /// Symbolic links whose target the backup does not hold, left out.
    pub links_not_restored: Vec<LinkNotRestored>,
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
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
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
            links_as_files: Vec::new(),
            links_not_restored: Vec::new(),
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
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("started_us").is_none());
        assert_eq!(json["steps"][3]["ok"], false);
    }
}
