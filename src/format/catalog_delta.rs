//! Catalog deltas: the rows one published catalog generation changed
//! against the generation before it (object storage only).
//!
//! An object `catalog/<G>.db.zst` holds, once zstd-decoded, either a whole
//! SQLite database (it starts `SQLite format 3\0`: a *full* snapshot) or a
//! delta:
//!
//! ```text
//! "PGSTRCD1"                                        8 bytes
//! base generation u64                               the generation this applies to
//! base hash [32]                                    BLAKE3 of that generation's object
//! full generation u64, full's object size u64       the chain's full snapshot
//! chain bytes u64                                   the deltas' sizes between the
//!                                                   full and this one
//! chain length u32, catalog schema u32              deltas since the full, this
//!                                                   one included; user_version
//! tables u32, then per table:
//!   name str, columns u32 + names str, key columns u32 (the first ones)
//!   rows after u64                                  the table's row count once
//!                                                   applied
//!   narrow column str ("" for none)                 a column often set alone
//!   upserts u64 + rows (every column)               rows inserted or changed
//!   deletes u64 + keys (the key columns)            rows removed
//!   narrowed u64 + rows (the key columns, then the narrow column)
//!                                                   rows where only it changed
//! str = u32 length + UTF-8; value = tag u8 (0 null, 1 integer i64, 2 real
//! f64, 3 text str, 4 blob u32 length + bytes); all integers little-endian
//! ```
//!
//! Rules: a delta names rows by their table's primary key, so it applies to
//! any file holding its base generation's rows, whatever the file's page
//! layout; the base hash chains each delta to the object before it, so a
//! copy of another history is never taken for its base. Decoding checks
//! every length against the bytes there are.

use super::{check_magic, le_u32, le_u64};
use crate::error::{Error, Result};

pub(crate) const MAGIC: &[u8; 8] = b"PGSTRCD1";
/// How a whole SQLite database starts.
pub(crate) const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// One column value, as SQLite stores it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What a delta changes in one table, decoded (the owned form, for tests:
/// writers encode with [`DeltaWriter`], readers parse with [`DeltaView`]).
#[cfg(test)]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableDelta {
    pub name: String,
    pub columns: Vec<String>,
    /// The first `key_columns` columns are the primary key.
    pub key_columns: usize,
    /// The table's row count once the delta is applied (a check).
    pub rows_after: u64,
    pub upserts: Vec<Vec<Value>>,
    pub deletes: Vec<Vec<Value>>,
    /// A column that often changes alone (a file version extended to the
    /// next backup), and the rows where only it changed: key, then value.
    pub narrow: String,
    pub narrowed: Vec<Vec<Value>>,
}

/// Where a delta sits in its chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Chain {
    /// The generation the delta applies to.
    pub base: u64,
    /// BLAKE3 of the base generation's object, as stored.
    pub base_hash: [u8; 32],
    /// The full snapshot the chain starts from.
    pub full: u64,
    /// The full snapshot's object size.
    pub full_bytes: u64,
    /// Object bytes of the chain's deltas before this one.
    pub chain_bytes: u64,
    /// Deltas since the full, this one included.
    pub length: u32,
}

#[cfg(test)]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CatalogDelta {
    pub chain: Chain,
    /// The catalog's schema version (`PRAGMA user_version`).
    pub schema: u32,
    pub tables: Vec<TableDelta>,
}

/// What a decoded catalog object is (readers sniff the first bytes
/// instead: `repo::replica`).
#[cfg(test)]
pub enum CatalogObject {
    Full,
    Delta(CatalogDelta),
}

#[cfg(test)]
impl CatalogObject {
    /// Sort out a zstd-decoded catalog object.
    pub fn decode(b: Vec<u8>, what: &str) -> Result<Self> {
        if b.starts_with(SQLITE_MAGIC) {
            return Ok(CatalogObject::Full);
        }
        if b.len() >= 8 && b[..7] == MAGIC[..7] {
            return CatalogDelta::decode(&b, what).map(CatalogObject::Delta);
        }
        Err(Error::corrupt(
            what,
            "neither an SQLite database nor a catalog delta",
        ))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Integer(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Real(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Text(s) => {
            out.push(3);
            put_str(out, s);
        }
        Value::Blob(b) => {
            out.push(4);
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// Encodes a delta as its rows are read, so that a writer holds the
/// encoded bytes only, never the rows decoded.
pub(crate) struct DeltaWriter {
    out: Vec<u8>,
    rows: u64,
}

/// Where a delta's chain is in its encoding (after the magic).
const CHAIN_AT: std::ops::Range<usize> = 8..76;

impl DeltaWriter {
    pub(crate) fn new(chain: &Chain, schema: u32, tables: usize) -> Self {
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(MAGIC);
        out.resize(CHAIN_AT.end, 0);
        set_chain(&mut out, chain);
        out.extend_from_slice(&schema.to_le_bytes());
        out.extend_from_slice(&(tables as u32).to_le_bytes());
        DeltaWriter { out, rows: 0 }
    }

    /// Start the next table; its three sections (upserts, deletes,
    /// narrowed) follow, in that order.
    pub(crate) fn table(
        &mut self,
        name: &str,
        columns: &[String],
        key_columns: usize,
        rows_after: u64,
        narrow: &str,
    ) {
        let out = &mut self.out;
        put_str(out, name);
        out.extend_from_slice(&(columns.len() as u32).to_le_bytes());
        for c in columns {
            put_str(out, c);
        }
        out.extend_from_slice(&(key_columns as u32).to_le_bytes());
        out.extend_from_slice(&rows_after.to_le_bytes());
        put_str(out, narrow);
    }

    /// One section: `fill` writes each row's values in turn with
    /// [`DeltaWriter::value`] and returns how many rows it wrote.
    pub(crate) fn section<E>(
        &mut self,
        fill: impl FnOnce(&mut Self) -> std::result::Result<u64, E>,
    ) -> std::result::Result<(), E> {
        let at = self.out.len();
        self.out.extend_from_slice(&0u64.to_le_bytes());
        let n = fill(self)?;
        self.out[at..at + 8].copy_from_slice(&n.to_le_bytes());
        self.rows += n;
        Ok(())
    }

    pub(crate) fn value(&mut self, v: &Value) {
        put_value(&mut self.out, v);
    }

    /// Rows written so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Set the chain of an encoded delta (a writer learns it last).
pub(crate) fn set_chain(encoded: &mut [u8], c: &Chain) {
    let mut b = Vec::with_capacity(CHAIN_AT.len());
    b.extend_from_slice(&c.base.to_le_bytes());
    b.extend_from_slice(&c.base_hash);
    for n in [c.full, c.full_bytes, c.chain_bytes] {
        b.extend_from_slice(&n.to_le_bytes());
    }
    b.extend_from_slice(&c.length.to_le_bytes());
    if let Some(at) = encoded.get_mut(CHAIN_AT) {
        at.copy_from_slice(&b);
    }
}

#[cfg(test)]
impl CatalogDelta {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = DeltaWriter::new(&self.chain, self.schema, self.tables.len());
        for t in &self.tables {
            w.table(&t.name, &t.columns, t.key_columns, t.rows_after, &t.narrow);
            for rows in [&t.upserts, &t.deletes, &t.narrowed] {
                let r: std::result::Result<(), std::convert::Infallible> = w.section(|w| {
                    rows.iter().flatten().for_each(|v| w.value(v));
                    Ok(rows.len() as u64)
                });
                let Ok(()) = r;
            }
        }
        w.finish()
    }

    /// Decode the whole delta into owned rows (see [`DeltaView`] for a
    /// reader that keeps them encoded).
    pub fn decode(b: &[u8], what: &str) -> Result<Self> {
        let v = DeltaView::parse(b, what)?;
        let owned = |rows: &Rows<'_>| -> Result<Vec<Vec<Value>>> {
            let mut out = Vec::new();
            rows.each(|r, _| {
                out.push(r.to_vec());
                Ok(())
            })?;
            Ok(out)
        };
        let tables = v
            .tables
            .iter()
            .map(|t| {
                Ok(TableDelta {
                    name: t.name.clone(),
                    columns: t.columns.clone(),
                    key_columns: t.key_columns,
                    rows_after: t.rows_after,
                    upserts: owned(&t.upserts)?,
                    deletes: owned(&t.deletes)?,
                    narrow: t.narrow.clone(),
                    narrowed: owned(&t.narrowed)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CatalogDelta {
            chain: v.chain,
            schema: v.schema,
            tables,
        })
    }

    /// Rows the delta writes or removes.
    pub fn rows(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.upserts.len() + t.deletes.len() + t.narrowed.len())
            .sum()
    }
}

/// A delta whose rows stay encoded until they are applied, one at a time:
/// a reader's memory is the delta's bytes, not its rows decoded.
#[derive(Debug)]
pub(crate) struct DeltaView<'a> {
    /// Readers learn it first, from [`header`]; the owned decoding keeps it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub chain: Chain,
    pub schema: u32,
    pub tables: Vec<TableView<'a>>,
}

/// One table of a [`DeltaView`].
#[derive(Debug)]
pub(crate) struct TableView<'a> {
    pub name: String,
    pub columns: Vec<String>,
    pub key_columns: usize,
    pub rows_after: u64,
    pub narrow: String,
    pub upserts: Rows<'a>,
    pub deletes: Rows<'a>,
    pub narrowed: Rows<'a>,
}

/// One section of rows, still encoded (every value checked when parsed).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows<'a> {
    bytes: &'a [u8],
    count: u64,
    width: usize,
    /// The leading values that make up a row's primary key.
    key: usize,
    what: &'a str,
}

impl Rows<'_> {
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Call `f` with each row in turn (decoded into one reused buffer) and
    /// its key as encoded, which names the row within its table.
    pub(crate) fn each(&self, mut f: impl FnMut(&[Value], &[u8]) -> Result<()>) -> Result<()> {
        let mut r = Reader {
            b: self.bytes,
            at: 0,
            what: self.what,
        };
        let mut row = Vec::with_capacity(self.width);
        for _ in 0..self.count {
            row.clear();
            let start = r.at;
            let mut key_end = start;
            for i in 0..self.width {
                row.push(r.value()?);
                if i + 1 == self.key {
                    key_end = r.at;
                }
            }
            f(&row, &self.bytes[start..key_end])?;
        }
        Ok(())
    }
}

impl<'a> DeltaView<'a> {
    /// Parse and check a zstd-decoded delta (`what` names it in errors).
    pub(crate) fn parse(b: &'a [u8], what: &'a str) -> Result<Self> {
        let mut r = Reader { b, at: 0, what };
        let (chain, schema) = r.header()?;
        let n = r.u32()?;
        let mut tables = Vec::new();
        for _ in 0..n {
            let name = r.str()?;
            let ncols = r.u32()? as usize;
            let columns = (0..ncols).map(|_| r.str()).collect::<Result<Vec<_>>>()?;
            let key_columns = r.u32()? as usize;
            if key_columns == 0 || key_columns > ncols {
                return Err(r.bad(&format!("table {name} has {key_columns} key columns")));
            }
            let rows_after = r.u64()?;
            let narrow = r.str()?;
            let upserts = r.rows(ncols, key_columns)?;
            let deletes = r.rows(key_columns, key_columns)?;
            let narrowed = r.rows(key_columns + 1, key_columns)?;
            tables.push(TableView {
                name,
                columns,
                key_columns,
                rows_after,
                narrow,
                upserts,
                deletes,
                narrowed,
            });
        }
        if r.at != b.len() {
            return Err(r.bad("bytes after the last table"));
        }
        Ok(DeltaView {
            chain,
            schema,
            tables,
        })
    }
}

/// Where a delta sits in its chain and its schema, read from the first
/// [`HEADER_LEN`] bytes of a zstd-decoded delta.
pub(crate) fn header(b: &[u8], what: &str) -> Result<(Chain, u32)> {
    Reader { b, at: 0, what }.header()
}

/// Bytes of a delta before its tables.
pub(crate) const HEADER_LEN: usize = 8 + 8 + 32 + 3 * 8 + 4 + 4;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn bad(&self, detail: &str) -> Error {
        Error::corrupt(
            self.what,
            format!("catalog delta: {detail} (at byte {})", self.at),
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.bad("truncated"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        self.take(4).map(|s| le_u32(s, 0))
    }

    fn u64(&mut self) -> Result<u64> {
        self.take(8).map(|s| le_u64(s, 0))
    }

    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.bad("text that is not UTF-8"))
    }

    fn value(&mut self) -> Result<Value> {
        Ok(match self.take(1)?[0] {
            0 => Value::Null,
            1 => Value::Integer(self.u64()? as i64),
            2 => Value::Real(f64::from_bits(self.u64()?)),
            3 => Value::Text(self.str()?),
            4 => {
                let n = self.u32()? as usize;
                Value::Blob(self.take(n)?.to_vec())
            }
            t => return Err(self.bad(&format!("unknown value tag {t}"))),
        })
    }

    /// A section of `n` rows of `width` values, each checked, kept encoded.
    fn rows(&mut self, width: usize, key: usize) -> Result<Rows<'a>> {
        let n = self.u64()?;
        // Every value takes a byte at least: a count beyond that is damage.
        if n.saturating_mul(width as u64) > (self.b.len() - self.at) as u64 {
            return Err(self.bad("more rows than bytes"));
        }
        let start = self.at;
        for _ in 0..n.saturating_mul(width as u64) {
            self.value()?;
        }
        Ok(Rows {
            bytes: &self.b[start..self.at],
            count: n,
            width,
            key,
            what: self.what,
        })
    }

    fn header(&mut self) -> Result<(Chain, u32)> {
        check_magic(self.take(8)?, MAGIC, self.what)?;
        let base = self.u64()?;
        let mut base_hash = [0u8; 32];
        base_hash.copy_from_slice(self.take(32)?);
        let chain = Chain {
            base,
            base_hash,
            full: self.u64()?,
            full_bytes: self.u64()?,
            chain_bytes: self.u64()?,
            length: self.u32()?,
        };
        Ok((chain, self.u32()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CatalogDelta {
        CatalogDelta {
            chain: Chain {
                base: 7,
                base_hash: [3; 32],
                full: 5,
                full_bytes: 1000,
                chain_bytes: 300,
                length: 2,
            },
            schema: 7,
            tables: vec![TableDelta {
                name: "chunk".into(),
                columns: vec!["id".into(), "pack_id".into(), "ratio".into()],
                key_columns: 1,
                rows_after: 42,
                upserts: vec![vec![
                    Value::Blob(vec![1; 32]),
                    Value::Text("p".into()),
                    Value::Real(0.5),
                ]],
                deletes: vec![vec![Value::Blob(vec![2; 32])], vec![Value::Integer(-3)]],
                narrow: "ratio".into(),
                narrowed: vec![vec![Value::Null, Value::Real(1.5)]],
            }],
        }
    }

    #[test]
    fn round_trip_and_sorting_out() {
        let d = sample();
        let b = d.encode();
        assert_eq!(CatalogDelta::decode(&b, "o").unwrap(), d);
        assert!(matches!(
            CatalogObject::decode(b, "o").unwrap(),
            CatalogObject::Delta(x) if x == d
        ));
        let mut db = SQLITE_MAGIC.to_vec();
        db.extend_from_slice(&[0; 100]);
        assert!(matches!(
            CatalogObject::decode(db, "o").unwrap(),
            CatalogObject::Full
        ));
        assert!(CatalogObject::decode(b"garbage".to_vec(), "o").is_err());
    }

    #[test]
    fn damage_is_an_error_naming_the_object() {
        let b = sample().encode();
        for cut in [3, 20, 60, b.len() - 1] {
            let e = CatalogDelta::decode(&b[..cut], "catalog/9").unwrap_err();
            assert!(e.to_string().contains("catalog/9"), "{e}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(CatalogDelta::decode(&longer, "o").is_err());
        let mut newer = b.clone();
        newer[7] = b'2';
        assert!(matches!(
            CatalogDelta::decode(&newer, "o"),
            Err(Error::NewerFormat { .. })
        ));
    }
}
