//! The `drill` table: one row per restore drill, written once when the
//! drill ends (passed or failed). Rows are never updated; `info` shows the
//! newest per cluster.

use rusqlite::{params, OptionalExtension};

use crate::error::{Result, SqlContext};
use rusqlite::Connection;

/// One drill's outcome, as recorded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrillRow {
    /// Start, unix microseconds.
    pub time: i64,
    pub backup_id: Option<String>,
    pub target: String,
    pub ok: bool,
    pub restore_us: Option<i64>,
    pub consistent_us: Option<i64>,
    pub promoted_us: Option<i64>,
    pub checks_passed: u32,
    pub checks_total: u32,
    /// The JSON report.
    pub report: String,
}

/// The restore drills recorded.
pub struct Drills<'a> {
    pub(super) conn: &'a Connection,
}

impl Drills<'_> {
    pub fn record(&self, cluster_id: i64, d: &DrillRow) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO drill (cluster_id, time, backup_id, target, ok, restore_us, \
                 consistent_us, promoted_us, checks_passed, checks_total, report) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    cluster_id,
                    d.time,
                    d.backup_id,
                    d.target,
                    d.ok,
                    d.restore_us,
                    d.consistent_us,
                    d.promoted_us,
                    d.checks_passed,
                    d.checks_total,
                    d.report
                ],
            )
            .ctx("record drill")?;
        Ok(())
    }

    /// The newest drill of a cluster.
    pub fn last(&self, cluster_id: i64) -> Result<Option<DrillRow>> {
        self.conn
            .query_row(
                "SELECT time, backup_id, target, ok, restore_us, consistent_us, promoted_us, \
                 checks_passed, checks_total, report FROM drill WHERE cluster_id = ?1 \
                 ORDER BY time DESC, id DESC LIMIT 1",
                [cluster_id],
                |r| {
                    Ok(DrillRow {
                        time: r.get(0)?,
                        backup_id: r.get(1)?,
                        target: r.get(2)?,
                        ok: r.get(3)?,
                        restore_us: r.get(4)?,
                        consistent_us: r.get(5)?,
                        promoted_us: r.get(6)?,
                        checks_passed: r.get(7)?,
                        checks_total: r.get(8)?,
                        report: r.get(9)?,
                    })
                },
            )
            .optional()
            .ctx("last drill")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::testkit::{Fixture, SYSTEM_ID};

    #[test]
    fn records_and_reads_the_newest() {
        let f = Fixture::new();
        let cat = f.repo.catalog().unwrap();
        let id = cat.clusters().bind("main", SYSTEM_ID, 15).unwrap().id;
        assert_eq!(cat.drills().last(id).unwrap(), None);
        let mut d = DrillRow {
            time: 10,
            backup_id: Some("B1".into()),
            target: "end of WAL".into(),
            ok: true,
            restore_us: Some(3_100_000),
            consistent_us: Some(2_000_000),
            promoted_us: Some(2_100_000),
            checks_passed: 2,
            checks_total: 2,
            report: "{}".into(),
        };
        cat.drills().record(id, &d).unwrap();
        d.time = 20;
        d.ok = false;
        d.backup_id = None;
        cat.drills().record(id, &d).unwrap();
        assert_eq!(cat.drills().last(id).unwrap(), Some(d));
    }
}
