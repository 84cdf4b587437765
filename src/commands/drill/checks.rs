//! SQL checks of a drill: a query, the database it runs in, and what its
//! result must be. Each check runs in its own session, read-only and with
//! a statement timeout, so a check can neither change the copy for the
//! next check nor hang the drill.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::CheckResult;
use crate::pg::server::{Server, TextRows};

/// One `[[drill.check]]` of the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DrillCheck {
    /// Shown in the report.
    pub name: String,
    /// One SQL statement.
    pub sql: String,
    /// The database to run it in [default: postgres].
    #[serde(default = "default_database")]
    pub database: String,
    /// What the result must be [default: true].
    #[serde(default)]
    pub expect: Expectation,
}

fn default_database() -> String {
    "postgres".into()
}

/// What a check's result must be.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Expectation {
    /// One row of one column, boolean true (`SELECT count(*) > 0 FROM t`).
    #[default]
    True,
    /// One row of one column, a number greater than zero (`SELECT count(*) FROM t`).
    Positive,
    /// At least one row.
    Rows,
    /// No rows (e.g. a query that lists broken references).
    Empty,
}

/// How long one check may run.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(600);

/// Run one check; its failure is a result, never an error of the drill.
pub(super) fn run(server: &Server, c: &DrillCheck) -> CheckResult {
    let t = Instant::now();
    let outcome = query(server, c).and_then(|rows| judge(c.expect, &rows));
    CheckResult {
        name: c.name.clone(),
        database: Some(c.database.clone()),
        ok: outcome.is_ok(),
        seconds: t.elapsed().as_secs_f64(),
        detail: match outcome {
            Ok(d) | Err(d) => d,
        },
    }
}

/// The rows of the check's query, or why it failed.
fn query(server: &Server, c: &DrillCheck) -> Result<TextRows, String> {
    server
        .query_read_only(&c.database, &c.sql, STATEMENT_TIMEOUT)
        .map_err(|e| e.to_string())
}

/// Does the result meet the expectation? The reason either way.
fn judge(expect: Expectation, rows: &[Vec<Option<String>>]) -> Result<String, String> {
    let single = || -> Result<Option<&str>, String> {
        match rows {
            [row] if row.len() == 1 => Ok(row[0].as_deref()),
            _ => Err(format!(
                "expected one row of one value, got {} row(s){}",
                rows.len(),
                rows.first()
                    .map(|r| format!(" of {} value(s)", r.len()))
                    .unwrap_or_default()
            )),
        }
    };
    match expect {
        Expectation::True => match single()? {
            Some("t") => Ok("true".into()),
            v => Err(format!("returned {}, expected true", shown(v))),
        },
        Expectation::Positive => {
            let v = single()?;
            match v.and_then(|s| s.trim().parse::<f64>().ok()) {
                Some(n) if n > 0.0 => Ok(format!("returned {}", shown(v))),
                _ => Err(format!(
                    "returned {}, expected a number greater than 0",
                    shown(v)
                )),
            }
        }
        Expectation::Rows if rows.is_empty() => Err("returned no rows, expected some".into()),
        Expectation::Rows => Ok(format!("returned {} row(s)", rows.len())),
        Expectation::Empty if rows.is_empty() => Ok("returned no rows".into()),
        Expectation::Empty => Err(format!(
            "returned {} row(s), expected none; the first: {}",
            rows.len(),
            rows[0]
                .iter()
                .map(|v| shown(v.as_deref()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn shown(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) if s.chars().count() > 60 => {
            format!("{:?}…", s.chars().take(60).collect::<String>())
        }
        Some(s) => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: Option<&str>) -> Vec<Vec<Option<String>>> {
        vec![vec![v.map(str::to_string)]]
    }

    #[test]
    fn expectations() {
        assert!(judge(Expectation::True, &one(Some("t"))).is_ok());
        let e = judge(Expectation::True, &one(Some("f"))).unwrap_err();
        assert_eq!(e, "returned \"f\", expected true");
        assert!(judge(Expectation::True, &one(None))
            .unwrap_err()
            .contains("NULL"));
        assert!(judge(Expectation::True, &[])
            .unwrap_err()
            .contains("got 0 row(s)"));
        assert!(judge(Expectation::Positive, &one(Some("42"))).is_ok());
        assert!(judge(Expectation::Positive, &one(Some("0.5"))).is_ok());
        assert!(judge(Expectation::Positive, &one(Some("0")))
            .unwrap_err()
            .contains("greater than 0"));
        assert!(judge(Expectation::Positive, &one(Some("x"))).is_err());
        assert!(judge(Expectation::Rows, &one(Some("x"))).is_ok());
        assert!(judge(Expectation::Rows, &[]).is_err());
        assert!(judge(Expectation::Empty, &[]).is_ok());
        assert!(judge(Expectation::Empty, &one(Some("orphan 7")))
            .unwrap_err()
            .contains("orphan 7"));
        let two = vec![vec![Some("1".to_string()), Some("2".to_string())]];
        assert!(judge(Expectation::True, &two)
            .unwrap_err()
            .contains("of 2 value(s)"));
    }

    #[test]
    fn the_config_schema() {
        #[derive(Deserialize)]
        struct W {
            check: Vec<DrillCheck>,
        }
        let w: W = toml::from_str(
            "[[check]]\nname = \"a\"\nsql = \"SELECT true\"\n\
             [[check]]\nname = \"b\"\nsql = \"SELECT 1\"\ndatabase = \"shop\"\nexpect = \"positive\"\n",
        )
        .unwrap();
        assert_eq!(w.check[0].database, "postgres");
        assert_eq!(w.check[0].expect, Expectation::True);
        assert_eq!(w.check[1].expect, Expectation::Positive);
        assert!(
            toml::from_str::<W>("[[check]]\nname = \"a\"\nsql = \"x\"\nexpect = \"big\"\n")
                .is_err()
        );
        assert!(toml::from_str::<W>("[[check]]\nname = \"a\"\nsql = \"x\"\nsq = 1\n").is_err());
    }
}
