//! Change capture: which rows a copy of the catalog changed since it was
//! last equal to a published generation, so that object storage gets a
//! delta of those rows instead of the whole file (`repo/cache/mod.rs`).
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
//! - changes of schema are not captured: a migration drops the triggers,
//!   and a table without a primary key, or without its triggers as its
//!   columns make them now, makes [`Catalog::take_delta`] answer `None`: the
//!   writer publishes the whole file;
//! - a delta applies at the schema it was taken at, and names only this
//!   catalog's tables and columns.

use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, OptionalExtension};

use super::{Catalog, SCHEMA_VERSION};
use crate::error::{Error, Result, SqlContext};
use crate::format::catalog_delta::{Chain, DeltaView, DeltaWriter, Keep, Value};

const PREFIX: &str = "capture_";
const OPS: [(&str, &str); 3] = [("i", "INSERT"), ("u", "UPDATE"), ("d", "DELETE")];
/// Columns that an update often changes alone, captured apart so that the
/// delta carries the key and that value, not the row: every backup extends
/// the version of each unchanged file to its own sequence number.
const NARROW: &[(&str, &str)] = &[("file_version", "last_seq")];

/// A table and its columns, the primary key's first.
struct Table {
    name: String,
    columns: Vec<String>,
    key: usize,
}

impl Table {
    /// The capture table, and the narrow one when there is one.
    fn capture_tables(&self) -> Vec<String> {
        let mut out = vec![format!("{PREFIX}{}", self.name)];
        if self.narrow().is_some() {
            out.push(format!("{PREFIX}n_{}", self.name));
        }
        out
    }

    fn narrow(&self) -> Option<&'static str> {
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
    fn triggers(&self) -> Vec<(String, String)> {
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

    fn key_cols(&self) -> &[String] {
        &self.columns[..self.key]
    }

    fn list(cols: &[String], prefix: &str) -> String {
        cols.iter()
            .map(|c| format!("{prefix}\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `a."k1" = b."k1" AND ...`
    fn key_match(&self, a: &str, b: &str) -> String {
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

/// A delta taken from the capture: encoded, with its chain left to set
/// ([`crate::format::catalog_delta::set_chain`]).
#[derive(Debug)]
pub struct TakenDelta {
    pub bytes: Vec<u8>,
    /// Rows it writes or removes.
    pub rows: u64,
}

fn to_format(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Integer(i),
        SqlValue::Real(f) => Value::Real(f),
        SqlValue::Text(s) => Value::Text(s),
        SqlValue::Blob(b) => Value::Blob(b),
    }
}

fn to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(*i),
        Value::Real(f) => SqlValue::Real(*f),
        Value::Text(s) => SqlValue::Text(s.clone()),
        Value::Blob(b) => SqlValue::Blob(b.clone()),
    }
}

impl Catalog {
    /// The catalog's own tables (not SQLite's, not the capture tables).
    fn tables(&self) -> Result<Vec<Table>> {
        let names: Vec<String> = self
            .conn
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
        let mut out = Vec::new();
        for name in names {
            // (name, position in the primary key, 0 when not in it)
            let cols: Vec<(String, i64)> = self
                .conn
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
            out.push(Table {
                name,
                columns,
                key: key.len(),
            });
        }
        Ok(out)
    }

    /// Capture changes of every table from now on (capture tables made
    /// where missing, triggers made afresh for the columns there are),
    /// starting empty.
    pub fn start_capture(&mut self) -> Result<()> {
        self.stop_capture()?;
        let tables = self.tables()?;
        let tx = self.conn.transaction().ctx("start change capture")?;
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

    /// Stop capturing (the triggers dropped; the capture tables stay): a
    /// private copy being brought up to a published generation.
    pub fn stop_capture(&mut self) -> Result<()> {
        let names: Vec<String> = self
            .conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'trigger' \
                 AND name LIKE 'capture\\_%' ESCAPE '\\'",
            )
            .and_then(|mut st| {
                st.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .ctx("list the capture triggers")?;
        let tx = self.conn.transaction().ctx("stop change capture")?;
        for n in names {
            tx.execute_batch(&format!("DROP TRIGGER \"{n}\""))
                .ctx("stop change capture")?;
        }
        tx.commit().ctx("stop change capture")
    }

    /// Whether any backup, complete or not, is recorded.
    pub fn has_backups(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT 1 FROM backup LIMIT 1", [], |_| Ok(()))
            .optional()
            .ctx("look for backups")
            .map(|r| r.is_some())
    }

    /// Whether changes were captured that are not published (for instance
    /// a cluster that `archive-push` bound in this copy).
    pub fn has_captured_changes(&self) -> Result<bool> {
        for t in self.tables()? {
            for table in t.capture_tables() {
                if self.schema_object_exists("table", &table)?
                    && self
                        .conn
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

    fn schema_object_exists(&self, kind: &str, name: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM sqlite_schema WHERE type = ?1 AND name = ?2",
                [kind, name],
                |_| Ok(()),
            )
            .optional()
            .ctx("read the catalog's schema")
            .map(|r| r.is_some())
    }

    /// The captured changes as a delta (its chain left for the caller),
    /// and the capture emptied in the same transaction; or `None`, taking
    /// nothing, when some table's changes were not captured, or when the
    /// capture holds more than one key for every `one_in` rows of the
    /// catalog (narrowed updates left out): such a delta is not worth making.
    pub fn take_delta(&mut self, one_in: Option<i64>) -> Result<Option<TakenDelta>> {
        let all = self.tables()?;
        for t in &all {
            if t.key == 0 {
                return Ok(None);
            }
            for table in t.capture_tables() {
                if !self.schema_object_exists("table", &table)? {
                    return Ok(None);
                }
            }
            // Made for these columns: a trigger older than a migration that
            // added one would narrow an update of it.
            for (name, sql) in t.triggers() {
                let made: Option<String> = self
                    .conn
                    .query_row(
                        "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?1",
                        [&name],
                        |r| r.get(0),
                    )
                    .optional()
                    .ctx("read the capture triggers")?;
                if made.as_deref() != Some(sql.as_str()) {
                    return Ok(None);
                }
            }
        }
        let schema = self.schema_version()?;
        // Immediate: a change another connection makes meanwhile is either
        // in this delta or still captured for the next.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("take the captured changes")?;
        // Each table's rows (the delta's check), and the keys captured.
        let count = |table: &str| -> Result<i64> {
            tx.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .ctx_with(|| format!("count the rows of {table}"))
        };
        let (mut counts, mut captured) = (Vec::with_capacity(all.len()), 0);
        for t in &all {
            counts.push(count(&t.name)?);
            captured += count(&format!("{PREFIX}{}", t.name))?;
        }
        if one_in.is_some_and(|n| captured.saturating_mul(n) > counts.iter().sum::<i64>()) {
            return Ok(None);
        }
        // Encoded as read: the writer holds the delta's bytes, not its rows.
        let mut w = DeltaWriter::new(&Chain::default(), schema, all.len());
        for (t, rows_after) in all.into_iter().zip(counts) {
            let ctx = || format!("the captured changes of table {}", t.name);
            let rows = |w: &mut DeltaWriter, sql: &str, width: usize| -> Result<()> {
                let mut st = tx.prepare(sql).ctx_with(ctx)?;
                let mut rows = st.query([]).ctx_with(ctx)?;
                w.section(|w| {
                    let mut n = 0;
                    while let Some(r) = rows.next().ctx_with(ctx)? {
                        for i in 0..width {
                            w.value(&to_format(r.get::<_, SqlValue>(i).ctx_with(ctx)?));
                        }
                        n += 1;
                    }
                    Ok(n)
                })
            };
            let narrow = t.narrow().unwrap_or_default();
            w.table(&t.name, &t.columns, t.key, rows_after as u64, narrow);
            let keys = Table::list(t.key_cols(), "c.");
            rows(
                &mut w,
                &format!(
                    "SELECT {} FROM \"{PREFIX}{n}\" c JOIN \"{n}\" t ON {} ORDER BY {keys}",
                    Table::list(&t.columns, "t."),
                    t.key_match("t", "c"),
                    n = t.name
                ),
                t.columns.len(),
            )?;
            rows(
                &mut w,
                &format!(
                    "SELECT {keys} FROM \"{PREFIX}{n}\" c WHERE NOT EXISTS \
                     (SELECT 1 FROM \"{n}\" t WHERE {}) ORDER BY {keys}",
                    t.key_match("t", "c"),
                    n = t.name
                ),
                t.key,
            )?;
            match t.narrow() {
                Some(n) => rows(
                    &mut w,
                    &format!(
                        "SELECT {keys}, t.\"{n}\" FROM \"{PREFIX}n_{name}\" c \
                         JOIN \"{name}\" t ON {} WHERE NOT EXISTS \
                         (SELECT 1 FROM \"{PREFIX}{name}\" x WHERE {}) ORDER BY {keys}",
                        t.key_match("t", "c"),
                        t.key_match("x", "c"),
                        name = t.name
                    ),
                    t.key + 1,
                )?,
                None => w.section(|_| Ok::<u64, Error>(0))?,
            }
            for table in t.capture_tables() {
                tx.execute(&format!("DELETE FROM \"{table}\""), [])
                    .ctx_with(ctx)?;
            }
        }
        tx.commit().ctx("take the captured changes")?;
        let rows = w.rows();
        Ok(Some(TakenDelta {
            bytes: w.finish(),
            rows,
        }))
    }

    /// Apply `delta` (named `what` in errors) to this copy, which must hold
    /// its base generation, in one transaction; the capture tables end
    /// empty. A row count that differs afterwards is damage, and nothing is
    /// applied.
    /// `keep` says, per table, which narrowed rows to apply (all without
    /// it): see [`crate::format::catalog_delta::Collapse`].
    pub fn apply_delta(
        &mut self,
        delta: &DeltaView<'_>,
        keep: Option<&Keep>,
        what: &str,
    ) -> Result<()> {
        if delta.schema > SCHEMA_VERSION {
            return Err(Error::NewerFormat {
                what: what.to_string(),
                found: delta.schema,
                supported: SCHEMA_VERSION,
            });
        }
        // Deltas apply at the schema they were taken at: the copy follows.
        self.migrate_to(delta.schema, Path::new(what))?;
        let schema = self.schema_version()?;
        if schema != delta.schema {
            return Err(Error::corrupt(
                what,
                format!(
                    "a delta of catalog schema {} for a copy of schema {schema}",
                    delta.schema
                ),
            ));
        }
        // Names go into SQL: only this catalog's own tables and columns.
        let local = self.tables()?;
        for t in &delta.tables {
            let fits = local
                .iter()
                .any(|l| l.name == t.name && l.columns == t.columns && l.key == t.key_columns);
            if !fits {
                return Err(Error::corrupt(
                    what,
                    format!("its table {:?} is not this catalog's", t.name),
                ));
            }
        }
        // The applied changes' own capture, emptied at the end.
        let mut captures = Vec::new();
        for t in self.tables()? {
            for name in t.capture_tables() {
                if self.schema_object_exists("table", &name)? {
                    captures.push(name);
                }
            }
        }
        // The writer's rows were consistent, but a delta applies one table
        // after another: a row may come before the row it refers to.
        self.conn
            .pragma_update(None, "foreign_keys", "OFF")
            .ctx("foreign_keys")?;
        let tx = self.conn.transaction().ctx("apply a catalog delta")?;
        for (ti, t) in delta.tables.iter().enumerate() {
            let ctx = || format!("apply {what} to table {}", t.name);
            let key_cols = &t.columns[..t.key_columns];
            let holes = |n: usize| {
                (1..=n)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut del = tx
                .prepare(&format!(
                    "DELETE FROM \"{n}\" WHERE ({}) = ({})",
                    Table::list(key_cols, ""),
                    holes(t.key_columns),
                    n = t.name
                ))
                .ctx_with(ctx)?;
            t.deletes.each(|k, _| {
                del.execute(params_from_iter(k.iter().map(to_sql)))
                    .ctx_with(ctx)?;
                Ok(())
            })?;
            let mut up = tx
                .prepare(&format!(
                    "INSERT OR REPLACE INTO \"{n}\" ({}) VALUES ({})",
                    Table::list(&t.columns, ""),
                    holes(t.columns.len()),
                    n = t.name
                ))
                .ctx_with(ctx)?;
            t.upserts.each(|r, _| {
                up.execute(params_from_iter(r.iter().map(to_sql)))
                    .ctx_with(ctx)?;
                Ok(())
            })?;
            if !t.narrowed.is_empty() {
                let mut set = tx
                    .prepare(&format!(
                        "UPDATE \"{n}\" SET \"{}\" = ?{} WHERE ({}) = ({})",
                        t.narrow,
                        t.key_columns + 1,
                        Table::list(key_cols, ""),
                        holes(t.key_columns),
                        n = t.name
                    ))
                    .ctx_with(ctx)?;
                let keep = keep.and_then(|k| k.get(ti));
                let mut i = 0;
                t.narrowed.each(|r, _| {
                    i += 1;
                    if keep.is_some_and(|k| k.get(i - 1) == Some(false)) {
                        return Ok(());
                    }
                    if set
                        .execute(params_from_iter(r.iter().map(to_sql)))
                        .ctx_with(ctx)?
                        != 1
                    {
                        return Err(Error::corrupt(
                            what,
                            format!(
                                "it sets {} of a row table {} does not have: the delta does not \
                                 fit this copy",
                                t.narrow, t.name
                            ),
                        ));
                    }
                    Ok(())
                })?;
            }
            let n: i64 = tx
                .query_row(&format!("SELECT count(*) FROM \"{}\"", t.name), [], |r| {
                    r.get(0)
                })
                .ctx_with(ctx)?;
            if n as u64 != t.rows_after {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "table {} has {n} rows once applied, not {}: the delta does not fit \
                         this copy",
                        t.name, t.rows_after
                    ),
                ));
            }
        }
        for name in &captures {
            tx.execute(&format!("DELETE FROM \"{name}\""), [])
                .ctx("clear captured changes")?;
        }
        tx.commit().ctx("apply a catalog delta")?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .ctx("foreign_keys")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::PageErrorRow;
    use crate::format::catalog_delta::CatalogDelta;
    use crate::repo::testkit::{content, Fixture};

    /// A repository with a backup, and a copy of its catalog; both capture.
    fn two_copies() -> (Fixture, Catalog, Catalog) {
        let f = Fixture::new();
        f.backup(1, &[("x", content(1, 3, 0)), ("y", content(2, 1, 0))]);
        let (mut a, path) = f.repo.catalog_with_path().unwrap();
        let copy = f.dir.path().join("copy.db");
        Catalog::copy_file(&path, &copy).unwrap();
        a.start_capture().unwrap();
        let mut b = Catalog::open(&copy, false).unwrap();
        b.start_capture().unwrap();
        (f, a, b)
    }

    fn dump(cat: &Catalog) -> Vec<String> {
        let mut out = Vec::new();
        for t in cat.tables().unwrap() {
            let mut st = cat
                .conn
                .prepare(&format!(
                    "SELECT * FROM \"{}\" ORDER BY {}",
                    t.name,
                    Table::list(&t.columns, "")
                ))
                .unwrap();
            let n = st.column_count();
            let rows = st
                .query_map([], |r| {
                    (0..n)
                        .map(|i| r.get::<_, SqlValue>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .unwrap();
            for r in rows {
                out.push(format!("{}: {:?}", t.name, r.unwrap()));
            }
        }
        out
    }

    /// Take a delta, decoded.
    fn take(a: &mut Catalog, one_in: Option<i64>) -> Result<Option<CatalogDelta>> {
        a.take_delta(one_in)?
            .map(|t| CatalogDelta::decode(&t.bytes, "taken"))
            .transpose()
    }

    /// Apply `d` as a reader does: encoded, then parsed.
    fn apply(b: &mut Catalog, d: &CatalogDelta, what: &str) -> Result<()> {
        let bytes = d.encode();
        b.apply_delta(&DeltaView::parse(&bytes, what)?, None, what)
    }

    #[test]
    fn a_delta_makes_the_other_copy_equal_cascades_included() {
        let (f, mut a, mut b) = two_copies();
        // Written through connections of their own, as commands do.
        let m2 = f.backup(2, &[("x", content(1, 3, 0)), ("z", content(3, 2, 0))]);
        let m3 = f.backup(3, &[("x", content(4, 3, 0))]);
        let err = PageErrorRow {
            path: "x".into(),
            block: 1,
            detail: "checksum".into(),
        };
        a.add_page_errors(&m3.id, &[err.clone(), err]).unwrap();
        // Too many keys for the limit: nothing is taken.
        assert!(take(&mut a, Some(1000)).unwrap().is_none());
        assert!(a.has_captured_changes().unwrap());
        let d1 = take(&mut a, None).unwrap().unwrap();
        let versions = d1.tables.iter().find(|t| t.name == "file_version").unwrap();
        // "." was extended to backups 2 and 3, and changed in nothing else.
        assert_eq!(versions.narrow, "last_seq");
        assert!(
            versions
                .narrowed
                .iter()
                .any(|r| r[1] == Value::Text(".".into())),
            "{versions:?}"
        );
        assert!(!versions.upserts.is_empty());
        apply(&mut b, &d1, "delta 1").unwrap();
        assert_eq!(dump(&a), dump(&b));
        assert!(!b.has_captured_changes().unwrap());
        assert_eq!(b.page_errors(&m3.id).unwrap().len(), 1);

        // Deletes, a cascade (page errors go with their backup) and updates.
        assert!(
            !a.has_captured_changes().unwrap(),
            "taken, the capture is empty"
        );
        a.delete_backup(&m3.id).unwrap();
        a.conn
            .execute(
                "UPDATE backup SET host = 'elsewhere' WHERE id = ?1",
                [&m2.id],
            )
            .unwrap();
        assert!(a.has_captured_changes().unwrap());
        let d2 = take(&mut a, None).unwrap().unwrap();
        let errors = d2.tables.iter().find(|t| t.name == "page_error").unwrap();
        assert_eq!(errors.deletes.len(), 1, "the cascade was captured");
        let again = CatalogDelta::decode(&d2.encode(), "x").unwrap();
        apply(&mut b, &again, "delta 2").unwrap();
        assert_eq!(dump(&a), dump(&b));

        // A copy that is not the delta's base is refused, and unchanged.
        f.backup(4, &[("x", content(5, 1, 0))]);
        let d3 = take(&mut a, None).unwrap().unwrap();
        b.conn
            .execute("INSERT INTO expire_log VALUES (1, 0, 0, 0, 0, 0, 0, 0)", [])
            .unwrap();
        let before = dump(&b);
        let e = apply(&mut b, &d3, "delta 3").unwrap_err().to_string();
        assert!(e.contains("delta 3") && e.contains("expire_log"), "{e}");
        assert_eq!(dump(&b), before);
    }

    #[test]
    fn a_table_not_captured_makes_no_delta() {
        let (_f, mut a, _b) = two_copies();
        assert!(take(&mut a, None).unwrap().is_some());
        a.conn.execute_batch("CREATE TABLE extra (x)").unwrap();
        assert!(take(&mut a, None).unwrap().is_none());
        a.conn
            .execute_batch("DROP TABLE extra; DROP TRIGGER capture_drill_u")
            .unwrap();
        assert!(take(&mut a, None).unwrap().is_none());
        // A migration that adds a column: the triggers made before it would
        // narrow an update of the new column with last_seq.
        a.start_capture().unwrap();
        assert!(take(&mut a, None).unwrap().is_some());
        a.conn
            .execute_batch("ALTER TABLE file_version ADD COLUMN extra")
            .unwrap();
        assert!(take(&mut a, None).unwrap().is_none());
        a.start_capture().unwrap();
        assert!(take(&mut a, None).unwrap().is_some());
    }

    #[test]
    fn a_delta_not_of_this_catalog_is_refused() {
        let (f, mut a, mut b) = two_copies();
        f.backup(2, &[("x", content(1, 3, 0))]);
        let good = take(&mut a, None).unwrap().unwrap();
        let before = dump(&b);
        let mut newer = good.clone();
        newer.schema = SCHEMA_VERSION + 1;
        assert!(matches!(
            apply(&mut b, &newer, "o"),
            Err(Error::NewerFormat { .. })
        ));
        let mut named = good.clone();
        named.tables[0].name = "cluster\"; DROP TABLE chunk; --".into();
        let e = apply(&mut b, &named, "object 9").unwrap_err().to_string();
        assert!(
            e.contains("object 9") && e.contains("not this catalog's"),
            "{e}"
        );
        let mut columns = good.clone();
        columns.tables[0].columns.swap(1, 2);
        assert!(apply(&mut b, &columns, "o").is_err());
        assert_eq!(dump(&b), before);
        apply(&mut b, &good, "o").unwrap();
        assert_eq!(dump(&a), dump(&b));
    }
}
