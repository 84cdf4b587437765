//! Manifest copies: everything the catalog knows about one complete backup,
//! stored beside the packs (`manifests/<cluster>/<backup>.json.zst`) so that
//! a lost catalog can be rebuilt from the repository alone.
//!
//! One zstd frame of JSON. The JSON names below are the on-disk format: the
//! unit test `golden` pins them, so renaming a Rust field cannot silently
//! change what is written. The `format` field is read first, on its own, so a
//! newer manifest is refused as such rather than as "not a manifest".
//!
//! Versions: 1 also carried the catalog's row id of the cluster (ignored on
//! read); 2 carries no database ids; 3 may be a delta: with `prev`, `files`
//! holds only the rows that are new or changed since backup `prev` (the
//! cluster's complete backup just before) and `removed` the paths gone since.
//! A copy without `prev` is whole. `expire` rewrites a delta whose `prev`
//! it removes against the new predecessor, before removing `prev`'s copy.

use serde::{Deserialize, Serialize};

use super::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::pg::Lsn;

/// Manifest version this binary writes; it reads every version up to it.
pub(crate) const MANIFEST_VERSION: u32 = 3;

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
            _ => Err(Error::corrupt(
                "backup status",
                format!("unknown status {s:?}"),
            )),
        }
    }
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
                "file kind",
                format!("unknown file kind {s:?}"),
            )),
        }
    }
}

/// Which cluster the backup belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    pub name: String,
    pub system_id: u64,
    pub pg_version: u32,
    /// Which entry of the cluster's history (1 until a `pgstrata upgrade`).
    #[serde(default = "first_history")]
    pub history: u32,
}

fn first_history() -> u32 {
    1
}

/// A backup's own fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    pub id: String,
    pub backup_type: BackupType,
    pub status: BackupStatus,
    pub reference: Option<String>,
    /// Unix microseconds.
    pub start_time: i64,
    pub stop_time: Option<i64>,
    #[serde(with = "lsn_text")]
    pub start_lsn: Lsn,
    #[serde(with = "opt_lsn_text")]
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
    /// How an incr or diff found what changed (absent in older copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<String>,
}

/// One directory, file or symlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A link row's target, or the target of the followed symlink a file or
    /// directory row was reached through.
    pub link: Option<String>,
    #[serde(with = "opt_chunk_hex")]
    pub blockmap: Option<ChunkId>,
}

/// A page that failed checksum validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageError {
    pub path: String,
    pub block: u64,
    pub detail: String,
}

/// Where [`Manifest::encode_streamed`] takes rows.
pub(crate) type EntrySink<'a> = &'a mut dyn FnMut(&FileEntry) -> Result<()>;

/// The manifest of one complete backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub cluster: ClusterIdentity,
    pub backup: BackupMeta,
    /// The backup this copy lists changes since (None: the whole manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    pub files: Vec<FileEntry>,
    /// Paths `prev` had that this backup has not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    pub page_errors: Vec<PageError>,
}

#[derive(Deserialize)]
struct VersionProbe {
    format: Option<u32>,
}

impl Manifest {
    /// JSON, compressed, from rows in memory (writers stream instead:
    /// [`Manifest::encode_streamed`] gives the same bytes).
    #[cfg(test)]
    pub fn encode(&self) -> Result<Vec<u8>> {
        // Streamed into the compressor: no whole JSON text in memory.
        let err = |e: std::io::Error| Error::Internal(format!("manifest compression: {e}"));
        let mut z = zstd::stream::Encoder::new(Vec::new(), 3).map_err(err)?;
        serde_json::to_writer(&mut z, self)
            .map_err(|e| Error::Internal(format!("manifest encoding: {e}")))?;
        z.finish().map_err(err)
    }

    /// The same bytes as [`Manifest::encode`], written to `out`, with
    /// `self.files` replaced by the rows `files` hands out one at a time (to
    /// its sink), so that a whole copy of a large cluster is never a vector
    /// of rows, nor (streamed into an object) its compressed bytes.
    pub fn encode_streamed<W: std::io::Write>(
        &self,
        out: W,
        files: &mut dyn FnMut(EntrySink<'_>) -> Result<()>,
    ) -> Result<W> {
        use std::io::Write;
        let io = |e: std::io::Error| Error::from_io(e, "manifest compression");
        let json = |e: serde_json::Error| match e.io_error_kind() {
            Some(_) => Error::from_io(e.into(), "manifest encoding"),
            None => Error::Internal(format!("manifest encoding: {e}")),
        };
        let mut z = zstd::stream::Encoder::new(out, 3).map_err(io)?;
        // Field order is the struct's (see `golden`).
        write!(z, "{{\"format\":{},\"cluster\":", self.format).map_err(io)?;
        serde_json::to_writer(&mut z, &self.cluster).map_err(json)?;
        z.write_all(b",\"backup\":").map_err(io)?;
        serde_json::to_writer(&mut z, &self.backup).map_err(json)?;
        if let Some(p) = &self.prev {
            z.write_all(b",\"prev\":").map_err(io)?;
            serde_json::to_writer(&mut z, p).map_err(json)?;
        }
        z.write_all(b",\"files\":[").map_err(io)?;
        let mut first = true;
        files(&mut |e| {
            if !first {
                z.write_all(b",").map_err(io)?;
            }
            first = false;
            serde_json::to_writer(&mut z, e).map_err(json)
        })?;
        z.write_all(b"]").map_err(io)?;
        if !self.removed.is_empty() {
            z.write_all(b",\"removed\":").map_err(io)?;
            serde_json::to_writer(&mut z, &self.removed).map_err(json)?;
        }
        z.write_all(b",\"page_errors\":").map_err(io)?;
        serde_json::to_writer(&mut z, &self.page_errors).map_err(json)?;
        z.write_all(b"}").map_err(io)?;
        z.finish().map_err(io)
    }

    /// Decode a stored copy; `what` names it for errors.
    pub fn decode(stored: &[u8], what: &str) -> Result<Self> {
        let json = zstd::stream::decode_all(stored)
            .map_err(|e| Error::corrupt(what, format!("does not decompress: {e}")))?;
        let probe: VersionProbe = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(what, format!("is not a manifest: {e}")))?;
        check_version(probe.format, what)?;
        serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(what, format!("is not a manifest: {e}")))
    }

    /// Check a stored copy as [`Manifest::decode`] does, decoding it as a
    /// stream: every row is decoded and counted, none is kept, so memory
    /// does not grow with the number of files. `open` opens the stored
    /// bytes once (twice for a copy whose `format` is not its first field);
    /// its errors are returned as they are.
    pub fn summary<R: std::io::Read>(
        mut open: impl FnMut() -> Result<R>,
        what: &str,
    ) -> Result<ManifestSummary> {
        let bad = |e: serde_json::Error| match e.io_error_kind() {
            Some(_) => Error::corrupt(what, format!("does not decompress: {e}")),
            None => Error::corrupt(what, format!("is not a manifest: {e}")),
        };
        // serde_json reads a byte at a time: buffered, or each byte would be
        // a call into the decompressor.
        let mut reader = || {
            zstd::stream::read::Decoder::new(open()?)
                .map(|d| std::io::BufReader::with_capacity(64 << 10, d))
                .map_err(|e| Error::corrupt(what, format!("does not decompress: {e}")))
        };
        // Writers put `format` first: read it from the head when it is
        // there (and go on from the same stream), else from a pass of its own.
        let mut first = reader()?;
        let mut head = Vec::with_capacity(32);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut first, 32), &mut head)
            .map_err(|e| Error::corrupt(what, format!("does not decompress: {e}")))?;
        let format = match leading_format(&head) {
            Some(v) => Some(v),
            None => {
                let probe: VersionProbe = serde_json::from_reader(reader()?).map_err(bad)?;
                probe.format
            }
        };
        check_version(format, what)?;
        let rest = std::io::Read::chain(std::io::Cursor::new(head), first);
        let s: Summary = serde_json::from_reader(rest).map_err(bad)?;
        Ok(ManifestSummary {
            backup_id: s.backup.id,
            prev: s.prev,
            files: s.files.0,
        })
    }
}

/// `N` of a JSON text that starts `{"format":N,`.
fn leading_format(head: &[u8]) -> Option<u32> {
    let rest = head.strip_prefix(b"{\"format\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || rest[end] != b',' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn check_version(format: Option<u32>, what: &str) -> Result<()> {
    match format {
        Some(v) if v > MANIFEST_VERSION => Err(Error::NewerFormat {
            what: what.to_string(),
            found: v,
            supported: MANIFEST_VERSION,
        }),
        Some(v) if v >= 1 => Ok(()),
        _ => Err(Error::corrupt(
            what,
            "is not a manifest (no format version)",
        )),
    }
}

/// What [`Manifest::summary`] gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestSummary {
    pub backup_id: String,
    pub prev: Option<String>,
    /// Rows in the copy (a delta's: the changed ones).
    pub files: u64,
}

/// A manifest with its rows counted, not kept.
#[derive(Deserialize)]
struct Summary {
    #[allow(dead_code)]
    cluster: ClusterIdentity,
    backup: BackupMeta,
    #[serde(default)]
    prev: Option<String>,
    files: Counted,
    #[allow(dead_code)]
    #[serde(default)]
    removed: Vec<String>,
    #[allow(dead_code)]
    page_errors: Vec<PageError>,
}

struct Counted(u64);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Rows;
        impl<'de> serde::de::Visitor<'de> for Rows {
            type Value = Counted;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of files")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Counted, A::Error> {
                let mut n = 0;
                while seq.next_element::<FileEntry>()?.is_some() {
                    n += 1;
                }
                Ok(Counted(n))
            }
        }
        d.deserialize_seq(Rows)
    }
}

mod lsn_text {
    use crate::pg::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Lsn, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod opt_lsn_text {
    use crate::pg::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Lsn>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(l) => s.serialize_some(&l.to_string()),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Lsn>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod opt_chunk_hex {
    use super::ChunkId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<ChunkId>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(id) => s.serialize_some(&id.to_hex()),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<ChunkId>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|h| ChunkId::from_hex(&h).ok_or_else(|| serde::de::Error::custom("bad chunk id")))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_VERSION,
            cluster: ClusterIdentity {
                name: "main".into(),
                system_id: 7_300_000_000_000_000_001,
                pg_version: 15,
                history: 1,
            },
            backup: BackupMeta {
                id: "20261121-080727F".into(),
                backup_type: BackupType::Full,
                status: BackupStatus::Complete,
                reference: None,
                start_time: 1,
                stop_time: Some(2),
                start_lsn: Lsn(0x3000028),
                stop_lsn: Some(Lsn(0x3000100)),
                timeline: 1,
                wal_start: Some("000000010000000000000003".into()),
                wal_stop: Some("000000010000000000000003".into()),
                pg_version: 15,
                block_size: 8192,
                wal_seg_size: 16 << 20,
                data_checksums: true,
                backup_label: Some(b"L".to_vec()),
                tablespace_map: None,
                db_bytes: 10,
                read_bytes: 10,
                stored_bytes: 5,
                files: 1,
                page_errors: 0,
                host: Some("h".into()),
                pid: Some(9),
                changes: None,
            },
            prev: None,
            files: vec![FileEntry {
                path: "base/1/2".into(),
                kind: FileKind::File,
                size: 8192,
                mtime_ns: 3,
                mode: 0o600,
                uid: 4,
                gid: 5,
                link: None,
                blockmap: Some(ChunkId([1; 32])),
            }],
            removed: Vec::new(),
            page_errors: vec![PageError {
                path: "base/1/2".into(),
                block: 0,
                detail: "d".into(),
            }],
        }
    }

    /// The JSON names are the on-disk format.
    #[test]
    fn summary_checks_what_decode_checks() {
        let m = sample();
        let z = m.encode().unwrap();
        let summary = |z: &[u8]| Manifest::summary(|| Ok(z), "m");
        let mut opens = 0;
        let s = Manifest::summary(
            || {
                opens += 1;
                Ok(&z[..])
            },
            "m",
        )
        .unwrap();
        assert_eq!(opens, 1, "a copy that starts with its format is read once");
        assert_eq!(s.backup_id, m.backup.id);
        assert_eq!(s.prev, m.prev);
        assert_eq!(s.files, m.files.len() as u64);
        let mut bad = z.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(summary(&bad).is_err());
        let not = zstd::encode_all(&b"{\"format\":1,\"files\":3}"[..], 3).unwrap();
        let e = summary(&not).unwrap_err();
        assert!(e.to_string().contains("is not a manifest"), "{e}");
        let newer = zstd::encode_all(&b"{\"format\":99}"[..], 3).unwrap();
        let e = summary(&newer).unwrap_err();
        assert!(matches!(e, Error::NewerFormat { .. }), "{e}");
    }

    #[test]
    fn golden() {
        let m = sample();
        let json = serde_json::to_string(&m).unwrap();
        let expected = format!(
            concat!(
                r#"{{"format":3,"cluster":{{"name":"main","system_id":7300000000000000001,"pg_version":15,"history":1}},"#,
                r#""backup":{{"id":"20261121-080727F","backup_type":"full","status":"complete","reference":null,"#,
                r#""start_time":1,"stop_time":2,"start_lsn":"0/3000028","stop_lsn":"0/3000100","timeline":1,"#,
                r#""wal_start":"000000010000000000000003","wal_stop":"000000010000000000000003","pg_version":15,"#,
                r#""block_size":8192,"wal_seg_size":16777216,"data_checksums":true,"backup_label":[76],"#,
                r#""tablespace_map":null,"db_bytes":10,"read_bytes":10,"stored_bytes":5,"files":1,"page_errors":0,"#,
                r#""host":"h","pid":9}},"files":[{{"path":"base/1/2","kind":"f","size":8192,"mtime_ns":3,"#,
                r#""mode":384,"uid":4,"gid":5,"link":null,"blockmap":"{}"}}],"#,
                r#""page_errors":[{{"path":"base/1/2","block":0,"detail":"d"}}]}}"#
            ),
            "01".repeat(32)
        );
        assert_eq!(json, expected);
        let back = Manifest::decode(&m.encode().unwrap(), "m").unwrap();
        assert_eq!(back, m);
        // A delta names its base and what went away.
        let d = Manifest {
            prev: Some("20261121-070000F".into()),
            removed: vec!["base/1/3".into()],
            ..sample()
        };
        let json = serde_json::to_string(&d).unwrap();
        assert!(
            json.contains(r#""prev":"20261121-070000F","files":"#)
                && json.contains(r#""removed":["base/1/3"],"page_errors""#),
            "{json}"
        );
        assert_eq!(Manifest::decode(&d.encode().unwrap(), "m").unwrap(), d);
        // Streamed rows give the same bytes, with and without a delta.
        let mut two = sample();
        two.files.push(FileEntry {
            path: "base/1/3".into(),
            ..two.files[0].clone()
        });
        // A followed symlink: a file or directory row that keeps its target.
        let mut linked = sample();
        linked.files.push(FileEntry {
            path: "postgresql.auto.conf".into(),
            link: Some("/etc/postgresql/auto.conf".into()),
            ..linked.files[0].clone()
        });
        linked.files.push(FileEntry {
            path: "conf.d".into(),
            kind: FileKind::Dir,
            size: 0,
            link: Some("../conf.d".into()),
            blockmap: None,
            ..linked.files[0].clone()
        });
        let back = Manifest::decode(&linked.encode().unwrap(), "m").unwrap();
        assert_eq!(back, linked);
        assert!(serde_json::to_string(&linked)
            .unwrap()
            .contains(r#""path":"conf.d","kind":"d","size":0,"mtime_ns":3,"mode":384,"uid":4,"gid":5,"link":"../conf.d""#));
        for m in [sample(), d, two, linked] {
            let head = Manifest {
                files: Vec::new(),
                ..m.clone()
            };
            let streamed = head
                .encode_streamed(Vec::new(), &mut |sink| {
                    m.files.iter().try_for_each(&mut *sink)
                })
                .unwrap();
            assert_eq!(streamed, m.encode().unwrap());
        }
    }

    #[test]
    fn versions() {
        let mut v: serde_json::Value = serde_json::to_value(sample()).unwrap();
        // Version 1 carried the cluster's row id: still read.
        v["format"] = 1.into();
        v["cluster"]["id"] = 3.into();
        v["cluster"].as_object_mut().unwrap().remove("history");
        let z = zstd::bulk::compress(&serde_json::to_vec(&v).unwrap(), 3).unwrap();
        assert_eq!(Manifest::decode(&z, "m").unwrap().format, 1);
        // A newer one, even structurally different, is refused as newer.
        let newer = serde_json::json!({"format": 4, "something": "else"});
        let z = zstd::bulk::compress(&serde_json::to_vec(&newer).unwrap(), 3).unwrap();
        let e = Manifest::decode(&z, "m").unwrap_err();
        assert!(matches!(e, Error::NewerFormat { found: 4, .. }), "{e}");
        assert!(e.to_string().contains("newer pgstrata"), "{e}");
        // Not a manifest at all.
        let z = zstd::bulk::compress(b"[1,2]", 3).unwrap();
        assert!(matches!(
            Manifest::decode(&z, "m"),
            Err(Error::Corrupt { .. })
        ));
        assert!(Manifest::decode(b"not zstd", "m").is_err());
    }
}
