//! Rows of the catalog, as the rest of the library sees them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pg::Lsn;
use crate::store::ChunkId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    pub fn as_str(&self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(BackupType::Full),
            "diff" => Ok(BackupType::Diff),
            "incr" => Ok(BackupType::Incr),
            _ => Err(Error::invalid(format!(
                "unknown backup type {s:?} (full, diff or incr)"
            ))),
        }
    }
    /// Suffix of backup ids of this type.
    pub fn letter(&self) -> char {
        match self {
            BackupType::Full => 'F',
            BackupType::Diff => 'D',
            BackupType::Incr => 'I',
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    Running,
    Complete,
}

impl BackupStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            BackupStatus::Running => "running",
            BackupStatus::Complete => "complete",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "running" => Ok(BackupStatus::Running),
            "complete" => Ok(BackupStatus::Complete),
            _ => Err(Error::corrupt("catalog", format!("unknown status {s:?}"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRow {
    pub id: i64,
    pub name: String,
    pub system_id: u64,
    pub pg_version: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    #[serde(rename = "f")]
    File,
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "l")]
    Link,
}

impl FileKind {
    pub fn code(&self) -> &'static str {
        match self {
            FileKind::File => "f",
            FileKind::Dir => "d",
            FileKind::Link => "l",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f" => Ok(FileKind::File),
            "d" => Ok(FileKind::Dir),
            "l" => Ok(FileKind::Link),
            _ => Err(Error::corrupt(
                "catalog",
                format!("unknown file kind {s:?}"),
            )),
        }
    }
}

/// One manifest entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRow {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub link: Option<String>,
    #[serde(with = "opt_chunk_hex")]
    pub blockmap: Option<ChunkId>,
}

/// Where a chunk lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    pub pack_id: String,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageErrorRow {
    pub path: String,
    pub block: u64,
    pub detail: String,
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod opt_chunk_hex {
    use super::ChunkId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<ChunkId>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(id) => s.serialize_some(&id.to_hex()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ChunkId>, D::Error> {
        let o: Option<String> = Option::deserialize(d)?;
        match o {
            None => Ok(None),
            Some(h) => {
                let bytes = (0..h.len())
                    .step_by(2)
                    .map(|i| h.get(i..i + 2).and_then(|x| u8::from_str_radix(x, 16).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| serde::de::Error::custom("bad chunk id"))?;
                ChunkId::from_slice(&bytes)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom("bad chunk id length"))
            }
        }
    }
}
