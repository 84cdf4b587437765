//! Catalog schema, as an ordered list of migrations. `PRAGMA user_version`
//! holds the number of migrations applied; a catalog with a higher number
//! than this binary knows was written by a newer pgstrata and is refused.

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE cluster (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    system_id   TEXT NOT NULL,          -- u64 as decimal text (may exceed i64)
    pg_version  INTEGER NOT NULL,       -- major version, e.g. 15
    created_at  INTEGER NOT NULL        -- unix microseconds
);

-- Sealed, durable packs only.
CREATE TABLE pack (
    id          TEXT PRIMARY KEY,       -- hex BLAKE3 of the trailer
    size        INTEGER NOT NULL,
    chunks      INTEGER NOT NULL,
    backup_id   TEXT,                   -- the backup that wrote it (informative)
    created_at  INTEGER NOT NULL
);

-- The chunk index. A row exists only once its pack is durable.
CREATE TABLE chunk (
    id          BLOB PRIMARY KEY,       -- 32-byte BLAKE3 of the raw bytes
    pack_id     TEXT NOT NULL REFERENCES pack(id),
    offset      INTEGER NOT NULL,       -- record offset in the pack
    stored_len  INTEGER NOT NULL,
    raw_len     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX chunk_pack ON chunk(pack_id);

CREATE TABLE backup (
    id              TEXT PRIMARY KEY,
    cluster_id      INTEGER NOT NULL REFERENCES cluster(id),
    type            TEXT NOT NULL CHECK (type IN ('full', 'diff', 'incr')),
    status          TEXT NOT NULL CHECK (status IN ('running', 'complete')),
    reference       TEXT,
    start_time      INTEGER NOT NULL,   -- unix microseconds
    stop_time       INTEGER,
    start_lsn       INTEGER NOT NULL,
    stop_lsn        INTEGER,
    timeline        INTEGER NOT NULL,
    wal_start       TEXT,
    wal_stop        TEXT,
    pg_version      INTEGER NOT NULL,
    block_size      INTEGER NOT NULL,
    wal_seg_size    INTEGER NOT NULL,
    data_checksums  INTEGER NOT NULL,
    backup_label    BLOB,
    tablespace_map  BLOB,
    db_bytes        INTEGER NOT NULL DEFAULT 0,
    read_bytes      INTEGER NOT NULL DEFAULT 0,
    stored_bytes    INTEGER NOT NULL DEFAULT 0,
    files           INTEGER NOT NULL DEFAULT 0,
    page_errors     INTEGER NOT NULL DEFAULT 0,
    host            TEXT,
    pid             INTEGER
);
CREATE INDEX backup_cluster ON backup(cluster_id, start_time);

-- Every directory, file and symlink of a backup: the manifest.
CREATE TABLE file (
    backup_id   TEXT NOT NULL REFERENCES backup(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,          -- relative to PGDATA, '/'-separated
    kind        TEXT NOT NULL CHECK (kind IN ('f', 'd', 'l')),
    size        INTEGER NOT NULL,
    mtime       INTEGER NOT NULL,       -- unix nanoseconds
    mode        INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    link        TEXT,                   -- symlink target
    blockmap    BLOB,                   -- chunk id of the encoded block map
    PRIMARY KEY (backup_id, path)
) WITHOUT ROWID;
CREATE INDEX file_blockmap ON file(blockmap);

-- Which data chunks each block map points to (derived from the block maps;
-- lets garbage collection and verification work in SQL).
CREATE TABLE blockmap_chunk (
    blockmap    BLOB NOT NULL,
    chunk       BLOB NOT NULL,
    PRIMARY KEY (blockmap, chunk)
) WITHOUT ROWID;

-- Pages that failed checksum validation (and were not torn).
CREATE TABLE page_error (
    backup_id   TEXT NOT NULL REFERENCES backup(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    block       INTEGER NOT NULL,
    detail      TEXT NOT NULL
);
"#,
    // 2: what each expire did, for `info`.
    r#"
CREATE TABLE expire_log (
    id              INTEGER PRIMARY KEY,
    time            INTEGER NOT NULL,   -- unix microseconds
    backups         INTEGER NOT NULL,   -- backups expired
    wal_files       INTEGER NOT NULL,   -- WAL files removed
    packs_deleted   INTEGER NOT NULL,
    packs_rewritten INTEGER NOT NULL,
    orphans         INTEGER NOT NULL,   -- leftover objects of interrupted work removed
    bytes_freed     INTEGER NOT NULL
);
"#,
    // 3: a cluster's history of identities (pg_upgrade gives a cluster a new
    // system identifier and major under the same name).
    r#"
CREATE TABLE cluster_history (
    cluster_id  INTEGER NOT NULL REFERENCES cluster(id),
    seq         INTEGER NOT NULL,       -- 1, 2, ... ; the cluster row holds the newest
    system_id   TEXT NOT NULL,
    pg_version  INTEGER NOT NULL,
    since       INTEGER NOT NULL,       -- unix microseconds
    PRIMARY KEY (cluster_id, seq)
);
INSERT INTO cluster_history (cluster_id, seq, system_id, pg_version, since)
    SELECT id, 1, system_id, pg_version, created_at FROM cluster;
ALTER TABLE cluster ADD COLUMN history INTEGER NOT NULL DEFAULT 1;
ALTER TABLE backup ADD COLUMN history INTEGER NOT NULL DEFAULT 1;
"#,
    // 4: restore drills (`pgstrata drill`): what each one found, for `info`.
    // `backup_id` is not a foreign key: a drilled backup may expire later,
    // and its drill's record stays.
    r#"
CREATE TABLE drill (
    id              INTEGER PRIMARY KEY,
    cluster_id      INTEGER NOT NULL REFERENCES cluster(id),
    time            INTEGER NOT NULL,   -- start, unix microseconds
    backup_id       TEXT,               -- NULL when no backup could be restored
    target          TEXT NOT NULL,      -- the recovery target, as words
    ok              INTEGER NOT NULL,   -- 1 passed, 0 failed
    restore_us      INTEGER,            -- restore duration
    consistent_us   INTEGER,            -- server start to consistency
    promoted_us     INTEGER,            -- server start to promotion
    checks_passed   INTEGER NOT NULL,
    checks_total    INTEGER NOT NULL,
    report          TEXT NOT NULL       -- the JSON report, as printed
);
CREATE INDEX drill_cluster ON drill(cluster_id, time);
"#,
    // 5: file rows become versions shared by consecutive backups. Each
    // backup of a cluster gets the next sequence number; a version holds
    // one path's row for the backups with seq in [first_seq, last_seq].
    // A backup's manifest is every version covering its seq (the `file`
    // view), so an unchanged file costs an update, not a row per backup.
    // Existing rows become one version per backup (not merged).
    r#"
ALTER TABLE cluster ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE backup ADD COLUMN seq INTEGER;
-- The backup this one's manifest copy is a delta against (NULL: whole).
ALTER TABLE backup ADD COLUMN copy_prev TEXT;
UPDATE backup SET seq = (SELECT COUNT(*) FROM backup b2
                          WHERE b2.cluster_id = backup.cluster_id AND b2.id <= backup.id);
UPDATE cluster SET last_seq = (SELECT COALESCE(MAX(seq), 0) FROM backup WHERE cluster_id = cluster.id);
CREATE UNIQUE INDEX backup_seq ON backup(cluster_id, seq);
CREATE TABLE file_version (
    cluster_id  INTEGER NOT NULL REFERENCES cluster(id),
    path        TEXT NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('f', 'd', 'l')),
    size        INTEGER NOT NULL,
    mtime       INTEGER NOT NULL,
    mode        INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    link        TEXT,
    blockmap    BLOB,
    PRIMARY KEY (cluster_id, path, first_seq)
) WITHOUT ROWID;
INSERT INTO file_version (cluster_id, path, first_seq, last_seq, kind, size, mtime, mode, uid,
                          gid, link, blockmap)
    SELECT b.cluster_id, f.path, b.seq, b.seq, f.kind, f.size, f.mtime, f.mode, f.uid, f.gid,
           f.link, f.blockmap
      FROM file f JOIN backup b ON b.id = f.backup_id;
DROP TABLE file;
CREATE INDEX file_version_blockmap ON file_version(blockmap) WHERE blockmap IS NOT NULL;
CREATE VIEW file AS
    SELECT b.id AS backup_id, v.path, v.kind, v.size, v.mtime, v.mode, v.uid, v.gid, v.link,
           v.blockmap
      FROM backup b JOIN file_version v
        ON v.cluster_id = b.cluster_id AND b.seq BETWEEN v.first_seq AND v.last_seq;
"#,
    // 6: the chunks of a pack, in record order, from the index alone:
    // `verify` and `expire` read them pack by pack, and a lookup of every
    // row in the table was most of that (3.9 s against 0.6 s at 550,000
    // chunks).
    r#"
DROP INDEX chunk_pack;
CREATE INDEX chunk_pack ON chunk(pack_id, offset, stored_len, raw_len);
"#,
    // 7: every table has a primary key, so that a change can name its row
    // (catalog deltas in object storage, `repo/replica/capture.rs`). A page is
    // reported once per backup.
    r#"
CREATE TABLE page_error_new (
    backup_id   TEXT NOT NULL REFERENCES backup(id) ON DELETE CASCADE,
    path        TEXT NOT NULL,
    block       INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    PRIMARY KEY (backup_id, path, block)
) WITHOUT ROWID;
INSERT OR IGNORE INTO page_error_new SELECT backup_id, path, block, detail FROM page_error;
DROP TABLE page_error;
ALTER TABLE page_error_new RENAME TO page_error;
"#,
    // 8: how an incremental or differential found what changed
    // (`archived-wal`, `wal-summaries`, `file-scan: WHY`; NULL for fulls and
    // for backups taken before this was recorded).
    r#"
ALTER TABLE backup ADD COLUMN changes TEXT;
"#,
];

/// Indexes as the last migration that touched them defines them: `expire`
/// drops and rebuilds them when it deletes a large share of their rows.
pub(super) const CHUNK_PACK_INDEX: &str =
    "CREATE INDEX chunk_pack ON chunk(pack_id, offset, stored_len, raw_len)";
pub(super) const FILE_VERSION_BLOCKMAP_INDEX: &str =
    "CREATE INDEX file_version_blockmap ON file_version(blockmap) WHERE blockmap IS NOT NULL";
