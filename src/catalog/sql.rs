//! How typed values are stored in SQLite, in one place. A malformed value
//! read back is a conversion error (which the query's context turns into an
//! error naming the row), never silently skipped.
//!
//! | type | SQL |
//! |---|---|
//! | `ChunkId` | BLOB, 32 bytes |
//! | `PackId` | TEXT, 64 hex digits |
//! | `Lsn` | INTEGER (the u64 bit pattern) |
//! | `BackupType`, `BackupStatus`, `FileKind` | TEXT codes |

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::format::{BackupStatus, BackupType, ChunkId, FileKind, PackId};
use crate::pg::Lsn;

fn other(msg: String) -> FromSqlError {
    FromSqlError::Other(msg.into())
}

impl ToSql for ChunkId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
    }
}

impl FromSql for ChunkId {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let b = v.as_blob()?;
        ChunkId::from_slice(b).ok_or(FromSqlError::InvalidBlobSize {
            expected_size: 32,
            blob_size: b.len(),
        })
    }
}

impl ToSql for PackId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_hex()))
    }
}

impl FromSql for PackId {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = v.as_str()?;
        PackId::from_hex(s).ok_or_else(|| other(format!("bad pack id {s:?}")))
    }
}

impl ToSql for Lsn {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0 as i64))
    }
}

impl FromSql for Lsn {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Lsn(v.as_i64()? as u64))
    }
}

macro_rules! text_enum {
    ($t:ty, $to:ident) => {
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.$to()))
            }
        }
        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                <$t>::parse(v.as_str()?).map_err(|e| other(e.to_string()))
            }
        }
    };
}

text_enum!(BackupType, as_str);
text_enum!(BackupStatus, as_str);
text_enum!(FileKind, code);

/// A u64 stored as INTEGER.
pub(super) fn u64_of(v: i64) -> u64 {
    v as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn round_trips_and_refusals() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE t (b BLOB, s TEXT, i INTEGER)")
            .unwrap();
        let id = ChunkId::of(b"x");
        let p = PackId([7; 32]);
        let l = Lsn(u64::MAX - 5);
        c.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            rusqlite::params![id, p, l],
        )
        .unwrap();
        let (a, b, d): (ChunkId, PackId, Lsn) = c
            .query_row("SELECT b, s, i FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((a, b, d), (id, p, l));
        let k: FileKind = c.query_row("SELECT 'd'", [], |r| r.get(0)).unwrap();
        assert_eq!(k, FileKind::Dir);
        assert!(c
            .query_row("SELECT x'0102'", [], |r| r.get::<_, ChunkId>(0))
            .is_err());
        assert!(c
            .query_row("SELECT 'zz'", [], |r| r.get::<_, PackId>(0))
            .is_err());
        assert!(c
            .query_row("SELECT 'q'", [], |r| r.get::<_, FileKind>(0))
            .is_err());
        assert!(c
            .query_row("SELECT 'weekly'", [], |r| r.get::<_, BackupType>(0))
            .is_err());
    }
}
