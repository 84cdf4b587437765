//! Deltas of the catalog's rows: taken from a copy's capture by the
//! writer, applied to a copy of their base generation by a reader (the
//! encoding is `format::catalog_delta`).
//!
//! Rules: taking a delta and emptying the capture are one immediate
//! transaction, so a change another connection makes meanwhile is either
//! in this delta or still captured for the next; applying one is one
//! transaction that changes nothing when any check fails (a table or
//! column that is not this catalog's, a row count that differs afterwards,
//! a narrowed update of a row that is not there), and leaves the capture
//! empty.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Transaction};

use super::capture::{self, to_format, to_sql, Table};
use super::collapse::{Bits, Keep};
use crate::catalog::{Catalog, CAPTURE_PREFIX as PREFIX, SCHEMA_VERSION};
use crate::error::{Error, Result, SqlContext};
use crate::format::catalog_delta::{Chain, DeltaView, DeltaWriter, TableView};

/// A delta taken from the capture: encoded, with its chain left to set
/// ([`crate::format::catalog_delta::set_chain`]).
#[derive(Debug)]
pub(super) struct TakenDelta {
    pub(super) bytes: Vec<u8>,
    /// Rows it writes or removes.
    pub(super) rows: u64,
}

/// The captured changes as a delta (its chain left for the caller), and
/// the capture emptied in the same transaction; or `None`, taking nothing,
/// when some table's changes were not captured, or when the capture holds
/// more than one key for every `one_in` rows of the catalog (narrowed
/// updates left out): such a delta is not worth making.
pub(super) fn take(cat: &mut Catalog, one_in: Option<i64>) -> Result<Option<TakenDelta>> {
    let schema = cat.schema_version()?;
    let conn = cat.connection();
    let all = capture::tables(conn)?;
    if !capture::complete(conn, &all)? {
        return Ok(None);
    }
    // Immediate: a change another connection makes meanwhile is either in
    // this delta or still captured for the next.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .ctx("take the captured changes")?;
    let Some(counts) = counts_if_worth_it(&tx, &all, one_in)? else {
        return Ok(None);
    };
    // Encoded as read: the writer holds the delta's bytes, not its rows.
    let mut w = DeltaWriter::new(&Chain::default(), schema, all.len());
    for (t, rows_after) in all.iter().zip(counts) {
        take_table(&tx, &mut w, t, rows_after)?;
    }
    tx.commit().ctx("take the captured changes")?;
    let rows = w.rows();
    Ok(Some(TakenDelta {
        bytes: w.finish(),
        rows,
    }))
}

/// Each table's rows (the delta's check), unless more keys were captured
/// than `one_in` allows.
fn counts_if_worth_it(
    tx: &Transaction<'_>,
    all: &[Table],
    one_in: Option<i64>,
) -> Result<Option<Vec<i64>>> {
    let count = |table: &str| -> Result<i64> {
        tx.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })
        .ctx_with(|| format!("count the rows of {table}"))
    };
    let (mut counts, mut captured) = (Vec::with_capacity(all.len()), 0);
    for t in all {
        counts.push(count(&t.name)?);
        captured += count(&format!("{PREFIX}{}", t.name))?;
    }
    if one_in.is_some_and(|n| captured.saturating_mul(n) > counts.iter().sum::<i64>()) {
        return Ok(None);
    }
    Ok(Some(counts))
}

/// Table `t`'s captured changes into `w` (upserts, deletes, narrowed
/// rows), its capture emptied.
fn take_table(tx: &Transaction<'_>, w: &mut DeltaWriter, t: &Table, rows_after: i64) -> Result<()> {
    let narrow = t.narrow().unwrap_or_default();
    w.table(&t.name, &t.columns, t.key, rows_after as u64, narrow);
    let keys = Table::list(t.key_cols(), "c.");
    let upserts = format!(
        "SELECT {} FROM \"{PREFIX}{n}\" c JOIN \"{n}\" t ON {} ORDER BY {keys}",
        Table::list(&t.columns, "t."),
        t.key_match("t", "c"),
        n = t.name
    );
    section(tx, w, t, &upserts, t.columns.len())?;
    let deletes = format!(
        "SELECT {keys} FROM \"{PREFIX}{n}\" c WHERE NOT EXISTS \
         (SELECT 1 FROM \"{n}\" t WHERE {}) ORDER BY {keys}",
        t.key_match("t", "c"),
        n = t.name
    );
    section(tx, w, t, &deletes, t.key)?;
    match t.narrow() {
        Some(n) => {
            let narrowed = format!(
                "SELECT {keys}, t.\"{n}\" FROM \"{PREFIX}n_{name}\" c \
                 JOIN \"{name}\" t ON {} WHERE NOT EXISTS \
                 (SELECT 1 FROM \"{PREFIX}{name}\" x WHERE {}) ORDER BY {keys}",
                t.key_match("t", "c"),
                t.key_match("x", "c"),
                name = t.name
            );
            section(tx, w, t, &narrowed, t.key + 1)?;
        }
        None => w.section(|_| Ok::<u64, Error>(0))?,
    }
    for table in t.capture_tables() {
        tx.execute(&format!("DELETE FROM \"{table}\""), [])
            .ctx_with(|| format!("the captured changes of table {}", t.name))?;
    }
    Ok(())
}

/// One section of the delta: the rows `sql` reads, `width` values each.
fn section(
    tx: &Transaction<'_>,
    w: &mut DeltaWriter,
    t: &Table,
    sql: &str,
    width: usize,
) -> Result<()> {
    let ctx = || format!("the captured changes of table {}", t.name);
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
}

/// Apply `delta` (named `what` in errors) to this copy, which must hold
/// its base generation, in one transaction; the capture tables end empty.
/// A row count that differs afterwards is damage, and nothing is applied.
/// `keep` says, per table, which narrowed rows to apply (all without it):
/// see [`super::collapse::Collapse`].
pub(super) fn apply(
    cat: &mut Catalog,
    delta: &DeltaView<'_>,
    keep: Option<&Keep>,
    what: &str,
) -> Result<()> {
    to_its_schema(cat, delta, what)?;
    let conn = cat.connection();
    let local = capture::tables(conn)?;
    // Names go into SQL: only this catalog's own tables and columns.
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
    for t in &local {
        for name in t.capture_tables() {
            if capture::schema_object_exists(conn, "table", &name)? {
                captures.push(name);
            }
        }
    }
    // The writer's rows were consistent, but a delta applies one table
    // after another: a row may come before the row it refers to.
    conn.pragma_update(None, "foreign_keys", "OFF")
        .ctx("foreign_keys")?;
    let tx = conn.transaction().ctx("apply a catalog delta")?;
    for (ti, t) in delta.tables.iter().enumerate() {
        apply_table(&tx, t, keep.and_then(|k| k.get(ti)), what)?;
    }
    for name in &captures {
        tx.execute(&format!("DELETE FROM \"{name}\""), [])
            .ctx("clear captured changes")?;
    }
    tx.commit().ctx("apply a catalog delta")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .ctx("foreign_keys")
}

/// Deltas apply at the schema they were taken at: the copy follows.
fn to_its_schema(cat: &mut Catalog, delta: &DeltaView<'_>, what: &str) -> Result<()> {
    if delta.schema > SCHEMA_VERSION {
        return Err(Error::NewerFormat {
            what: what.to_string(),
            found: delta.schema,
            supported: SCHEMA_VERSION,
        });
    }
    cat.migrate_to(delta.schema, std::path::Path::new(what))?;
    let schema = cat.schema_version()?;
    if schema != delta.schema {
        return Err(Error::corrupt(
            what,
            format!(
                "a delta of catalog schema {} for a copy of schema {schema}",
                delta.schema
            ),
        ));
    }
    Ok(())
}

/// `?1, ?2, ... ?n`
fn holes(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One table's deletes, upserts and narrowed rows, then its row count
/// checked.
fn apply_table(
    tx: &Transaction<'_>,
    t: &TableView<'_>,
    keep: Option<&Bits>,
    what: &str,
) -> Result<()> {
    let ctx = || format!("apply {what} to table {}", t.name);
    let key_cols = &t.columns[..t.key_columns];
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
        apply_narrowed(tx, t, keep, what)?;
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
                "table {} has {n} rows once applied, not {}: the delta does not fit this copy",
                t.name, t.rows_after
            ),
        ));
    }
    Ok(())
}

/// The narrowed rows of one table that `keep` keeps (all without it).
fn apply_narrowed(
    tx: &Transaction<'_>,
    t: &TableView<'_>,
    keep: Option<&Bits>,
    what: &str,
) -> Result<()> {
    let ctx = || format!("apply {what} to table {}", t.name);
    let mut set = tx
        .prepare(&format!(
            "UPDATE \"{n}\" SET \"{}\" = ?{} WHERE ({}) = ({})",
            t.narrow,
            t.key_columns + 1,
            Table::list(&t.columns[..t.key_columns], ""),
            holes(t.key_columns),
            n = t.name
        ))
        .ctx_with(ctx)?;
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
                    "it sets {} of a row table {} does not have: the delta does not fit this \
                     copy",
                    t.narrow, t.name
                ),
            ));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::PageErrorRow;
    use crate::format::catalog_delta::{CatalogDelta, Value};
    use crate::repo::testkit::{content, Fixture};

    /// A repository with a backup, and a copy of its catalog; both capture.
    fn two_copies() -> (Fixture, Catalog, Catalog) {
        let f = Fixture::new();
        f.backup(1, &[("x", content(1, 3, 0)), ("y", content(2, 1, 0))]);
        let (mut a, path) = f.repo.catalog_with_path().unwrap();
        let copy = f.dir.path().join("copy.db");
        Catalog::copy_file(&path, &copy).unwrap();
        capture::start(&mut a).unwrap();
        let mut b = Catalog::open(&copy, false).unwrap();
        capture::start(&mut b).unwrap();
        (f, a, b)
    }

    fn dump(cat: &Catalog) -> Vec<String> {
        let mut out = Vec::new();
        for t in capture::tables(cat.conn_for_tests()).unwrap() {
            let mut st = cat
                .conn_for_tests()
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
    fn take_decoded(a: &mut Catalog, one_in: Option<i64>) -> Result<Option<CatalogDelta>> {
        take(a, one_in)?
            .map(|t| CatalogDelta::decode(&t.bytes, "taken"))
            .transpose()
    }

    /// Apply `d` as a reader does: encoded, then parsed.
    fn apply_encoded(b: &mut Catalog, d: &CatalogDelta, what: &str) -> Result<()> {
        let bytes = d.encode();
        apply(b, &DeltaView::parse(&bytes, what)?, None, what)
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
        assert!(take_decoded(&mut a, Some(1000)).unwrap().is_none());
        assert!(capture::pending(&mut a).unwrap());
        let d1 = take_decoded(&mut a, None).unwrap().unwrap();
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
        apply_encoded(&mut b, &d1, "delta 1").unwrap();
        assert_eq!(dump(&a), dump(&b));
        assert!(!capture::pending(&mut b).unwrap());
        assert_eq!(b.page_errors(&m3.id).unwrap().len(), 1);

        // Deletes, a cascade (page errors go with their backup) and updates.
        assert!(
            !capture::pending(&mut a).unwrap(),
            "taken, the capture is empty"
        );
        a.delete_backup(&m3.id).unwrap();
        a.conn_for_tests()
            .execute(
                "UPDATE backup SET host = 'elsewhere' WHERE id = ?1",
                [&m2.id],
            )
            .unwrap();
        assert!(capture::pending(&mut a).unwrap());
        let d2 = take_decoded(&mut a, None).unwrap().unwrap();
        let errors = d2.tables.iter().find(|t| t.name == "page_error").unwrap();
        assert_eq!(errors.deletes.len(), 1, "the cascade was captured");
        let again = CatalogDelta::decode(&d2.encode(), "x").unwrap();
        apply_encoded(&mut b, &again, "delta 2").unwrap();
        assert_eq!(dump(&a), dump(&b));

        // A copy that is not the delta's base is refused, and unchanged.
        f.backup(4, &[("x", content(5, 1, 0))]);
        let d3 = take_decoded(&mut a, None).unwrap().unwrap();
        b.conn_for_tests()
            .execute("INSERT INTO expire_log VALUES (1, 0, 0, 0, 0, 0, 0, 0)", [])
            .unwrap();
        let before = dump(&b);
        let e = apply_encoded(&mut b, &d3, "delta 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("delta 3") && e.contains("expire_log"), "{e}");
        assert_eq!(dump(&b), before);
    }

    #[test]
    fn a_table_not_captured_makes_no_delta() {
        let (_f, mut a, _b) = two_copies();
        assert!(take_decoded(&mut a, None).unwrap().is_some());
        a.conn_for_tests()
            .execute_batch("CREATE TABLE extra (x)")
            .unwrap();
        assert!(take_decoded(&mut a, None).unwrap().is_none());
        a.conn_for_tests()
            .execute_batch("DROP TABLE extra; DROP TRIGGER capture_drill_u")
            .unwrap();
        assert!(take_decoded(&mut a, None).unwrap().is_none());
        // A migration that adds a column: the triggers made before it would
        // narrow an update of the new column with last_seq.
        capture::start(&mut a).unwrap();
        assert!(take_decoded(&mut a, None).unwrap().is_some());
        a.conn_for_tests()
            .execute_batch("ALTER TABLE file_version ADD COLUMN extra")
            .unwrap();
        assert!(take_decoded(&mut a, None).unwrap().is_none());
        capture::start(&mut a).unwrap();
        assert!(take_decoded(&mut a, None).unwrap().is_some());
    }

    #[test]
    fn a_delta_not_of_this_catalog_is_refused() {
        let (f, mut a, mut b) = two_copies();
        f.backup(2, &[("x", content(1, 3, 0))]);
        let good = take_decoded(&mut a, None).unwrap().unwrap();
        let before = dump(&b);
        let mut newer = good.clone();
        newer.schema = SCHEMA_VERSION + 1;
        assert!(matches!(
            apply_encoded(&mut b, &newer, "o"),
            Err(Error::NewerFormat { .. })
        ));
        let mut named = good.clone();
        named.tables[0].name = "cluster\"; DROP TABLE chunk; --".into();
        let e = apply_encoded(&mut b, &named, "object 9")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("object 9") && e.contains("not this catalog's"),
            "{e}"
        );
        let mut columns = good.clone();
        columns.tables[0].columns.swap(1, 2);
        assert!(apply_encoded(&mut b, &columns, "o").is_err());
        assert_eq!(dump(&b), before);
        apply_encoded(&mut b, &good, "o").unwrap();
        assert_eq!(dump(&a), dump(&b));
    }
}
