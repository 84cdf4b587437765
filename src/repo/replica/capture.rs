//! Change capture: which rows a copy of the catalog changed since it was
//! last equal to a published generation, so that object storage gets a
//! delta of those rows instead of the whole file (`delta`).
//!
//! Each table `t` gets a table `capture_t` of primary keys and three
//! triggers that put there the key of every row inserted, updated or
//! deleted, by whichever connection, foreign-key cascades included. A delta
//! holds, per table, the current row of every captured key (an upsert), or
//! the key alone when the row is gone (a delete), and each table's row
//! count as a check.
//!
//! Invariants:
//! - the capture tables are empty whenever a copy equals a published
//!   generation (made from a download, a delta applied, or just published),
//!   so a delta taken later holds every row that differs;
//! - changes of schema are not captured: a migration drops the triggers
//!   (`Catalog::stop_capture`), and a table without a primary key, or
//!   without its triggers as its columns make them now, makes
//!   [`super::delta::take`] answer `None`: the writer publishes the whole
//!   file;
//! - a delta applies at the schema it was taken at, and names only this
//!   catalog's tables and columns.
//!
//! Capture works on every table alike, by the schema SQLite reports, so
//! it uses the catalog's connection directly; it knows one table by name,
//! for the column captured apart ([`NARROW`]).

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension};

use crate::catalog::{Catalog, CAPTURE_PREFIX as PREFIX};
use crate::error::{Result, SqlContext};
use crate::format::catalog_delta::Value;

const OPS: [(&str, &str); 3] = [("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")];
/// Columns that an update often changes alone, captured apart so that the
/// delta carries the key and that value, not the row: every backup extends
/// the version of each unchanged file to its own sequence number.
const NARROW: &[(&str, &str)] = &[("file_version", "last_seq")];

/// A table and its columns, the primary key's first.
pub(super) struct Table {
    pub(super) name: String,
    pub(super) columns: Vec<String>,
    pub(super) key: usize,
}

impl Table {
    /// The capture table, and the narrow one when there is one.
    pub(super) fn capture_tables(&self) -> Vec<String> {
        let mut out = vec![format!("{PREFIX}{}", self.name)];
        if self.narrow().is_some() {
            out.push(format!("{PREFIX}n_{}", self.name));
        }
        out
    }

    pub(super) fn narrow(&self) -> Option<&'static str> {
        NARROW
            .iter()
            .find(|(t, _)| *t == self.name)
            .map(|(_, c)| *c)
    }

    /// An update that changed the narrow column and nothing else.
    fn narrow_update(&self, narrow: &str) -> String {
        self.columns
            .iter()
            .filter(|c| c.as_str() != narrow)
            .map(|c| format!("OLD.\"{c}\" IS NEW.\"{c}\""))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Triggers and their names.
    pub(super) fn triggers(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = OPS
            .iter()
            .map(|(op, verb)| {
                (
                    format!("{PREFIX}{}_{op}", self.name),
                    self.trigger(op, verb),
                )
            })
            .collect();
        if let Some(n) = self.narrow() {
            out.push((
                format!("{PREFIX}{}_n", self.name),
                format!(
                    "CREATE TRIGGER \"{PREFIX}{t}_n\" AFTER UPDATE ON \"{t}\" \
                     WHEN {} BEGIN INSERT OR IGNORE INTO \"{PREFIX}n_{t}\" VALUES ({}); END",
                    self.narrow_update(n),
                    Table::list(self.key_cols(), "NEW."),
                    t = self.name
                ),
            ));
        }
        out
    }

    pub(super) fn key_cols(&self) -> &[String] {
        &self.columns[..self.key]
    }

    pub(super) fn list(cols: &[String], prefix: &str) -> String {
        cols.iter()
            .map(|c| format!("{prefix}\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `a."k1" = b."k1" AND ...`
    pub(super) fn key_match(&self, a: &str, b: &str) -> String {
        self.key_cols()
            .iter()
            .map(|c| format!("{a}.\"{c}\" = {b}.\"{c}\""))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn trigger(&self, op: &str, verb: &str) -> String {
        let keys = |row: &str| format!("({})", Table::list(self.key_cols(), &format!("{row}.")));
        let rows = match op {
            "i" => keys("NEW"),
            "d" => keys("OLD"),
            _ => format!("{}, {}", keys("OLD"), keys("NEW")),
        };
        let when = match self.narrow() {
            Some(n) if op == "u" => format!("WHEN NOT ({})", self.narrow_update(n)),
            _ => String::new(),
        };
        format!(
            "CREATE TRIGGER \"{PREFIX}{t}_{op}\" AFTER {verb} ON \"{t}\" {when} \
             BEGIN INSERT OR IGNORE INTO \"{PREFIX}{t}\" VALUES {rows}; END",
            t = self.name
        )
    }
}

/// A value as the delta encodes it.
pub(super) fn to_format(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Integer(i),
        SqlValue::Real(f) => Value::Real(f),
        SqlValue::Text(s) => Value::Text(s),
        SqlValue::Blob(b) => Value::Blob(b),
    }
}

/// A value as SQLite takes it.
pub(super) fn to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(*i),
        Value::Real(f) => SqlValue::Real(*f),
        Value::Text(s) => SqlValue::Text(s.clone()),
        Value::Blob(b) => SqlValue::Blob(b.clone()),
    }
}

/// The catalog's own tables (not SQLite's, not the capture tables), each
/// with its columns, the primary key's first.
pub(super) fn tables(conn: &Connection) -> Result<Vec<Table>> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND name NOT LIKE 'capture\\_%' ESCAPE '\\' ORDER BY name",
        )
        .and_then(|mut st| {
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .ctx("list the catalog's tables")?;
    names.into_iter().map(|name| table(conn, name)).collect()
}

fn table(conn: &Connection, name: String) -> Result<Table> {
    // (name, position in the primary key, 0 when not in it)
    let cols: Vec<(String, i64)> = conn
        .prepare(&format!("PRAGMA table_info(\"{name}\")"))
        .and_then(|mut st| {
            st.query_map([], |r| Ok((r.get(1)?, r.get(5)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .ctx_with(|| format!("the columns of table {name}"))?;
    let mut key: Vec<&(String, i64)> = cols.iter().filter(|c| c.1 > 0).collect();
    key.sort_by_key(|c| c.1);
    let mut columns: Vec<String> = key.iter().map(|c| c.0.clone()).collect();
    columns.extend(cols.iter().filter(|c| c.1 == 0).map(|c| c.0.clone()));
    Ok(Table {
        name,
        columns,
        key: key.len(),
    })
}

/// Capture changes of every table from now on (capture tables made where
/// missing, triggers made afresh for the columns there are), starting
/// empty.
pub(super) fn start(cat: &mut Catalog) -> Result<()> {
    cat.stop_capture()?;
    let conn = cat.connection();
    let tables = tables(conn)?;
    let tx = conn.transaction().ctx("start change capture")?;
    for t in tables.iter().filter(|t| t.key > 0) {
        let ctx = || format!("capture changes of table {}", t.name);
        for table in t.capture_tables() {
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS \"{table}\" ({k}, PRIMARY KEY ({k})) WITHOUT ROWID; \
                 DELETE FROM \"{table}\";",
                k = Table::list(t.key_cols(), "")
            ))
            .ctx_with(ctx)?;
        }
        for (_, sql) in t.triggers() {
            tx.execute_batch(&sql).ctx_with(ctx)?;
        }
    }
    tx.commit().ctx("start change capture")
}

/// Whether any backup, complete or not, is recorded (a repository's first
/// backup is published whole, not captured).
pub(super) fn has_backups(cat: &mut Catalog) -> Result<bool> {
    cat.connection()
        .query_row("SELECT 1 FROM backup LIMIT 1", [], |_| Ok(()))
        .optional()
        .ctx("look for backups")
        .map(|r| r.is_some())
}

/// Whether changes were captured that are not published (for instance a
/// cluster that `archive-push` bound in this copy).
pub(super) fn pending(cat: &mut Catalog) -> Result<bool> {
    let conn = cat.connection();
    for t in tables(conn)? {
        for table in t.capture_tables() {
            if schema_object_exists(conn, "table", &table)?
                && conn
                    .query_row(
                        &format!("SELECT 1 FROM \"{table}\" LIMIT 1"),
                        [],
                        |_| Ok(()),
                    )
                    .optional()
                    .ctx("read captured changes")?
                    .is_some()
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

pub(super) fn schema_object_exists(conn: &Connection, kind: &str, name: &str) -> Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_schema WHERE type = ?1 AND name = ?2",
        [kind, name],
        |_| Ok(()),
    )
    .optional()
    .ctx("read the catalog's schema")
    .map(|r| r.is_some())
}

/// Whether every table's changes are captured: it has a primary key, its
/// capture tables, and its triggers as its columns make them now (a
/// trigger older than a migration that added a column would narrow an
/// update of it).
pub(super) fn complete(conn: &Connection, all: &[Table]) -> Result<bool> {
    for t in all {
        if t.key == 0 {
            return Ok(false);
        }
        for table in t.capture_tables() {
            if !schema_object_exists(conn, "table", &table)? {
                return Ok(false);
            }
        }
        for (name, sql) in t.triggers() {
            let made: Option<String> = conn
                .query_row(
                    "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .optional()
                .ctx("read the capture triggers")?;
            if made.as_deref() != Some(sql.as_str()) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
