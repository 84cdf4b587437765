//! Every on-disk format and object key of a repository, in one place.
//!
//! | what | where | version |
//! |---|---|---|
//! | repository marker | `pgstrata.repo` | [`REPO_FORMAT`] (1 plain, 2 encrypted) |
//! | key file, sealed objects | [`crypt`] (`pgstrata.key`) | `format` field; last byte of `PGSTREN2` |
//! | chunk ids, codecs, compression | [`chunk`] | codec byte |
//! | pack records, trailers, footers | [`pack`] | last byte of `PGSTRPK1` |
//! | block maps | [`blockmap`] | last byte of `PGSTRBM1` |
//! | archived WAL objects | [`wal`] | last byte of `PGSTRWL1` |
//! | WAL block summaries | [`walsummary`] | last byte of `PGSTRWS1` |
//! | manifest copies | [`manifest`] | `format` field |
//! | catalog deltas (object storage) | [`catalog_delta`] | last byte of `PGSTRCD1` |
//! | object keys | [`keys`] | (part of the repository format) |
//!
//! Rules: every decoder checks the version before it decodes anything else,
//! and refuses a newer one with [`Error::NewerFormat`] ("written by a newer
//! pgstrata"); an older one is read. Nothing here does I/O.

pub(crate) mod blockmap;
pub(crate) mod catalog_delta;
pub(crate) mod chunk;
pub(crate) mod crypt;
pub(crate) mod keys;
pub(crate) mod manifest;
pub(crate) mod pack;
pub(crate) mod tailhash;
pub(crate) mod wal;
pub(crate) mod walsummary;

pub use blockmap::BlockMap;
pub(crate) use chunk::Fingerprint;
pub use chunk::{ChunkId, Codec};
pub use manifest::{BackupStatus, BackupType, FileKind, Manifest, ManifestSummary};
pub(crate) use pack::PackId;

use crate::error::{Error, Result};

/// The newest repository layout this binary reads.
pub(crate) const REPO_FORMAT: u32 = 2;
/// The layout of a plain repository (what pgstrata wrote before encryption,
/// so older binaries still read plain repositories).
pub(crate) const REPO_FORMAT_PLAIN: u32 = 1;
/// An encrypted repository: a key file, and every object sealed. Binaries
/// older than encryption refuse it as written by a newer pgstrata.
pub(crate) const REPO_FORMAT_ENCRYPTED: u32 = 2;
const MARKER_PREFIX: &str = "pgstrata repository format ";

/// The text of the repository marker object.
pub(crate) fn encode_marker(encrypted: bool) -> String {
    let v = if encrypted {
        REPO_FORMAT_ENCRYPTED
    } else {
        REPO_FORMAT_PLAIN
    };
    format!("{MARKER_PREFIX}{v}\n")
}

/// The format version a marker names, or `None` when it is not a marker.
pub(crate) fn decode_marker(text: &str) -> Option<u32> {
    text.trim().strip_prefix(MARKER_PREFIX)?.parse().ok()
}

/// Refuse a marker of a newer layout.
pub(crate) fn check_repo_format(found: u32, what: &str) -> Result<()> {
    if found > REPO_FORMAT {
        return Err(Error::NewerFormat {
            what: what.to_string(),
            found,
            supported: REPO_FORMAT,
        });
    }
    Ok(())
}

/// Compare an 8-byte magic whose last byte is an ASCII version digit. The
/// same family with a higher digit was written by a newer pgstrata.
pub(crate) fn check_magic(found: &[u8], expected: &[u8; 8], what: &str) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    if found.len() == 8 && found[..7] == expected[..7] && found[7].is_ascii_digit() {
        let (f, e) = (found[7] - b'0', expected[7] - b'0');
        if f > e {
            return Err(Error::NewerFormat {
                what: what.to_string(),
                found: u32::from(f),
                supported: u32::from(e),
            });
        }
    }
    Err(Error::corrupt(what, "bad magic (not a pgstrata object)"))
}

pub(crate) fn le_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

pub(crate) fn le_u64(b: &[u8], o: usize) -> u64 {
    (u64::from(le_u32(b, o + 4)) << 32) | u64::from(le_u32(b, o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker() {
        assert_eq!(decode_marker(&encode_marker(false)), Some(1));
        assert_eq!(decode_marker(&encode_marker(true)), Some(2));
        assert_eq!(decode_marker("hello"), None);
        assert!(check_repo_format(REPO_FORMAT, "r").is_ok());
        assert!(matches!(
            check_repo_format(REPO_FORMAT + 1, "r"),
            Err(Error::NewerFormat { .. })
        ));
    }

    #[test]
    fn magics() {
        assert!(check_magic(b"PGSTRXX1", b"PGSTRXX1", "x").is_ok());
        assert!(matches!(
            check_magic(b"PGSTRXX2", b"PGSTRXX1", "x"),
            Err(Error::NewerFormat { found: 2, .. })
        ));
        assert!(matches!(
            check_magic(b"garbage!", b"PGSTRXX1", "x"),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            check_magic(b"PGST", b"PGSTRXX1", "x"),
            Err(Error::Corrupt { .. })
        ));
    }
}
