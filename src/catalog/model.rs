//! Rows of the catalog, as the rest of the library sees them, and their
//! conversion to and from the manifest copy's types (which are the on-disk
//! format and carry no database ids).

pub(crate) use crate::format::{BackupStatus, BackupType, FileKind};

use crate::format::manifest::{BackupMeta, ClusterIdentity, FileEntry, PageError};
use crate::format::{ChunkId, PackId};
use crate::pg::Lsn;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRow {
    /// The catalog's row id (never written to the repository's objects).
    pub id: i64,
    pub name: String,
    /// The current identity: that of history entry `history`.
    pub system_id: u64,
    pub pg_version: u32,
    pub history: u32,
}

/// One identity a cluster has had (a new one after each `pgstrata upgrade`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    pub seq: u32,
    pub system_id: u64,
    pub pg_version: u32,
    /// Unix microseconds.
    pub since: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRow {
    pub id: String,
    pub backup_type: BackupType,
    pub status: BackupStatus,
    pub reference: Option<String>,
    /// Unix microseconds.
    pub start_time: i64,
    pub stop_time: Option<i64>,
    pub start_lsn: Lsn,
    pub stop_lsn: Option<Lsn>,
    pub timeline: u32,
    pub wal_start: Option<String>,
    pub wal_stop: Option<String>,
    pub pg_version: u32,
    pub block_size: u32,
    pub wal_seg_size: u64,
    pub data_checksums: bool,
    pub backup_label: Option<Vec<u8>>,
    pub tablespace_map: Option<Vec<u8>>,
    pub db_bytes: u64,
    pub read_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
    pub page_errors: u64,
    pub host: Option<String>,
    pub pid: Option<u32>,
    /// The cluster history entry (identity) the backup was taken under.
    pub history: u32,
    /// How an incr or diff found what changed (`ChangeSource::describe`).
    pub changes: Option<String>,
}

/// One manifest entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRow {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A symlink's target: of a link row, or of a file or directory the
    /// backup reached through a followed link.
    pub link: Option<String>,
    pub blockmap: Option<ChunkId>,
}

/// Where a chunk lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    pub pack_id: PackId,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageErrorRow {
    pub path: String,
    pub block: u64,
    pub detail: String,
}

impl ClusterRow {
    pub fn identity(&self) -> ClusterIdentity {
        ClusterIdentity {
            name: self.name.clone(),
            system_id: self.system_id,
            pg_version: self.pg_version,
            history: self.history,
        }
    }

    /// Where this cluster's current WAL is archived.
    pub fn wal_id(&self) -> String {
        crate::format::keys::wal_id(&self.name, self.history)
    }
}

impl From<&BackupRow> for BackupMeta {
    fn from(b: &BackupRow) -> Self {
        BackupMeta {
            id: b.id.clone(),
            backup_type: b.backup_type,
            status: b.status,
            reference: b.reference.clone(),
            start_time: b.start_time,
            stop_time: b.stop_time,
            start_lsn: b.start_lsn,
            stop_lsn: b.stop_lsn,
            timeline: b.timeline,
            wal_start: b.wal_start.clone(),
            wal_stop: b.wal_stop.clone(),
            pg_version: b.pg_version,
            block_size: b.block_size,
            wal_seg_size: b.wal_seg_size,
            data_checksums: b.data_checksums,
            backup_label: b.backup_label.clone(),
            tablespace_map: b.tablespace_map.clone(),
            db_bytes: b.db_bytes,
            read_bytes: b.read_bytes,
            stored_bytes: b.stored_bytes,
            files: b.files,
            page_errors: b.page_errors,
            host: b.host.clone(),
            pid: b.pid,
            changes: b.changes.clone(),
        }
    }
}

impl BackupRow {
    /// From a manifest copy taken under cluster history entry `history`.
    pub fn from_meta(b: BackupMeta, history: u32) -> Self {
        BackupRow {
            history,
            ..b.into()
        }
    }
}

impl From<BackupMeta> for BackupRow {
    fn from(b: BackupMeta) -> Self {
        BackupRow {
            id: b.id,
            backup_type: b.backup_type,
            status: b.status,
            reference: b.reference,
            start_time: b.start_time,
            stop_time: b.stop_time,
            start_lsn: b.start_lsn,
            stop_lsn: b.stop_lsn,
            timeline: b.timeline,
            wal_start: b.wal_start,
            wal_stop: b.wal_stop,
            pg_version: b.pg_version,
            block_size: b.block_size,
            wal_seg_size: b.wal_seg_size,
            data_checksums: b.data_checksums,
            backup_label: b.backup_label,
            tablespace_map: b.tablespace_map,
            db_bytes: b.db_bytes,
            read_bytes: b.read_bytes,
            stored_bytes: b.stored_bytes,
            files: b.files,
            page_errors: b.page_errors,
            host: b.host,
            pid: b.pid,
            history: 1,
            changes: b.changes,
        }
    }
}

impl From<&FileRow> for FileEntry {
    fn from(f: &FileRow) -> Self {
        FileEntry {
            path: f.path.clone(),
            kind: f.kind,
            size: f.size,
            mtime_ns: f.mtime_ns,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            link: f.link.clone(),
            blockmap: f.blockmap,
        }
    }
}

impl From<FileEntry> for FileRow {
    fn from(f: FileEntry) -> Self {
        FileRow {
            path: f.path,
            kind: f.kind,
            size: f.size,
            mtime_ns: f.mtime_ns,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            link: f.link,
            blockmap: f.blockmap,
        }
    }
}

impl From<&PageErrorRow> for PageError {
    fn from(e: &PageErrorRow) -> Self {
        PageError {
            path: e.path.clone(),
            block: e.block,
            detail: e.detail.clone(),
        }
    }
}

impl From<PageError> for PageErrorRow {
    fn from(e: PageError) -> Self {
        PageErrorRow {
            path: e.path,
            block: e.block,
            detail: e.detail,
        }
    }
}
