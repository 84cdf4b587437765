//! The PostgreSQL major versions pgstrata supports, and what differs between
//! them wherever pgstrata depends on it. Each entry was checked against that
//! major's own source (see the per-version table in `docs/design.md`); the
//! version-matrix tests (`tests/it/matrix.rs`) run every major's real server.

use crate::error::{Error, Result};

/// The oldest supported major.
pub(crate) const MIN_MAJOR: u32 = 14;
/// The newest supported major.
pub(crate) const MAX_MAJOR: u32 = 18;

/// Is `major` one pgstrata backs up and restores?
pub(crate) fn is_supported(major: u32) -> bool {
    (MIN_MAJOR..=MAX_MAJOR).contains(&major)
}

/// The major of a `server_version_num` (e.g. 170004 → 17; 90624 → 9).
pub(crate) fn major_of_version_num(version_num: u32) -> u32 {
    version_num / 10_000
}

/// Refuse an unsupported major with one clear line. `what` names where the
/// version came from (e.g. "the server", "WAL file 0000…01").
pub(crate) fn require_supported(major: u32, what: &str) -> Result<()> {
    if is_supported(major) {
        Ok(())
    } else {
        Err(Error::refused(format!(
            "{what} is PostgreSQL {major}, which pgstrata does not support \
             (supported: PostgreSQL {MIN_MAJOR} to {MAX_MAJOR}); nothing was done"
        )))
    }
}

/// `XLOG_PAGE_MAGIC` (src/include/access/xlog_internal.h) of each major that
/// pgstrata knows, including older ones so that their WAL is named in the
/// refusal. The long page header layout (magic, info, timeline, page address,
/// remaining length, system identifier, segment size, block size) is the same
/// in all of them.
pub(crate) const WAL_PAGE_MAGIC: &[(u32, u16)] = &[
    (10, 0xD097),
    (11, 0xD098),
    (12, 0xD101),
    (13, 0xD106),
    (14, 0xD10D),
    (15, 0xD110),
    (16, 0xD113),
    (17, 0xD116),
    (18, 0xD118),
];

/// The major that writes WAL with this page magic, when known.
pub(crate) fn major_of_wal_magic(magic: u16) -> Option<u32> {
    WAL_PAGE_MAGIC
        .iter()
        .find(|(_, m)| *m == magic)
        .map(|(v, _)| *v)
}

/// The SQL that enters and leaves non-exclusive backup mode. 15 renamed the
/// functions (and dropped exclusive mode); 14 still needs `exclusive => false`.
pub(crate) fn backup_mode_sql(major: u32) -> (&'static str, &'static str) {
    if major >= 15 {
        (
            "SELECT pg_backup_start($1, $2)::text",
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)",
        )
    } else {
        (
            "SELECT pg_start_backup($1, $2, false)::text",
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_stop_backup(false, false)",
        )
    }
}

/// Directories under `pg_wal` that a restored data directory must have
/// (their contents are never backed up). 17 added `pg_wal/summaries` for the
/// WAL summarizer; `pg_basebackup` sends both as empty directories.
pub(crate) fn wal_subdirs(major: u32) -> &'static [&'static str] {
    if major >= 17 {
        &["pg_wal/archive_status", "pg_wal/summaries"]
    } else {
        &["pg_wal/archive_status"]
    }
}

/// Does the major have `stats_temp_directory`? (Only 14: 15 keeps
/// statistics in shared memory.) A private server over a restored copy
/// points it back inside its own data directory, so that it never shares a
/// directory (Debian: /var/run/postgresql/NN-main.pg_stat_tmp) with the
/// production server.
pub(crate) fn has_stats_temp_directory(major: u32) -> bool {
    major < 15
}

#[cfg(test)]
/// Does `initdb` turn data checksums on unless told otherwise? (18 does.)
pub fn initdb_checksums_by_default(major: u32) -> bool {
    major >= 18
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_majors_are_14_to_18() {
        let supported: Vec<u32> = (0..30).filter(|&m| is_supported(m)).collect();
        assert_eq!(supported, vec![14, 15, 16, 17, 18]);
        assert!(require_supported(14, "the server").is_ok());
        assert!(require_supported(18, "the server").is_ok());
        for m in [9, 12, 13, 19, 20] {
            let e = require_supported(m, "the server").unwrap_err().to_string();
            assert!(
                e.contains(&format!("PostgreSQL {m}")) && e.contains("14 to 18"),
                "{e}"
            );
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn version_num_to_major() {
        assert_eq!(major_of_version_num(140023), 14);
        assert_eq!(major_of_version_num(150018), 15);
        assert_eq!(major_of_version_num(180004), 18);
        assert_eq!(major_of_version_num(90624), 9);
        assert_eq!(major_of_version_num(190000), 19);
    }

    #[test]
    fn wal_magic_table_matches_the_sources() {
        // XLOG_PAGE_MAGIC in each major's xlog_internal.h.
        for (major, magic) in [
            (13, 0xD106),
            (14, 0xD10D),
            (15, 0xD110),
            (16, 0xD113),
            (17, 0xD116),
            (18, 0xD118),
        ] {
            assert_eq!(major_of_wal_magic(magic), Some(major), "{magic:#06x}");
        }
        assert_eq!(major_of_wal_magic(0xD119), None);
        assert_eq!(major_of_wal_magic(0), None);
        // One magic per major, increasing with the major.
        for w in WAL_PAGE_MAGIC.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1, "{w:?}");
        }
        for m in MIN_MAJOR..=MAX_MAJOR {
            assert!(
                WAL_PAGE_MAGIC.iter().any(|(v, _)| *v == m),
                "no magic for {m}"
            );
        }
    }

    #[test]
    fn backup_mode_functions_per_major() {
        let (start, stop) = backup_mode_sql(14);
        assert!(start.contains("pg_start_backup(") && start.contains("false"));
        assert!(stop.contains("pg_stop_backup(false, false)"));
        for m in 15..=18 {
            let (start, stop) = backup_mode_sql(m);
            assert!(start.contains("pg_backup_start("), "{m}");
            assert!(stop.contains("pg_backup_stop(false)"), "{m}");
        }
    }

    #[test]
    fn wal_subdirs_and_checksum_defaults_per_major() {
        for m in 14..=16 {
            assert_eq!(wal_subdirs(m), &["pg_wal/archive_status"]);
            assert!(!initdb_checksums_by_default(m));
        }
        assert_eq!(
            wal_subdirs(17),
            &["pg_wal/archive_status", "pg_wal/summaries"]
        );
        assert_eq!(
            wal_subdirs(18),
            &["pg_wal/archive_status", "pg_wal/summaries"]
        );
        assert!(!initdb_checksums_by_default(17));
        assert!(initdb_checksums_by_default(18));
    }
}
