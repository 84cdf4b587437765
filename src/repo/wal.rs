//! The WAL archive's objects: one per WAL file, under `wal/<cluster>/` (keys
//! in [`crate::format::keys`], layout in [`crate::format::wal`]). The
//! `archive` command decides *whether* to store a file; this module only
//! stores, lists and reads them, for every command that needs WAL.

use std::io::Write;
use std::path::Path;

use super::Repository;
use crate::error::{Error, IoContext, Result};
use crate::format::keys::{self, ObjectKey};
use crate::format::wal::{self as walfmt, WalHeader};
use crate::pg::{TimelineId, WalFileName};
use crate::util::{write_whole_with, Durability};

/// One archived WAL object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalStored {
    pub name: String,
    pub key: String,
    pub size: u64,
}

impl Repository {
    /// The archived WAL objects of a cluster, sorted by name. An object whose
    /// key is not a WAL key is an error naming it.
    pub fn wal_objects(&self, cluster: &str) -> Result<Vec<WalStored>> {
        let mut out = Vec::new();
        for (key, size) in self.backend().list(&keys::wal_prefix(cluster))? {
            match ObjectKey::parse(&key)? {
                ObjectKey::Wal { name, .. } => out.push(WalStored { name, key, size }),
                _ => return Err(Error::corrupt(key, "not a WAL object in the WAL archive")),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Names of the archived WAL files of a cluster, sorted.
    pub fn wal_names(&self, cluster: &str) -> Result<Vec<String>> {
        Ok(self
            .wal_objects(cluster)?
            .into_iter()
            .map(|w| w.name)
            .collect())
    }

    /// Is this WAL file archived?
    pub fn wal_has(&self, cluster: &str, name: &str) -> Result<bool> {
        Ok(self.backend().size(&keys::wal(cluster, name)?)?.is_some())
    }

    /// The recorded hash of an archived WAL file, without reading it whole.
    pub fn wal_hash(&self, cluster: &str, name: &str) -> Result<Option<[u8; 32]>> {
        let key = keys::wal(cluster, name)?;
        if self.backend().size(&key)?.is_none() {
            return Ok(None);
        }
        let h = self.backend().get_range(&key, 0, WalHeader::LEN)?;
        Ok(Some(WalHeader::decode(&h, &key)?.hash))
    }

    /// Store an encoded WAL object unless one of that name exists (`false`).
    pub fn wal_put_new(&self, cluster: &str, name: &str, object: &[u8]) -> Result<bool> {
        self.backend().put_new(&keys::wal(cluster, name)?, object)
    }

    /// Read and verify an archived WAL file; `None` when it is not archived.
    pub fn wal_fetch(&self, cluster: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let key = keys::wal(cluster, name)?;
        match self.backend().get(&key)? {
            Some(obj) => walfmt::decode(&obj, &key).map(Some),
            None => Ok(None),
        }
    }

    /// Write an archived WAL file to `dest`, verified, whole or not at all
    /// ([`write_whole_with`]); `false` when it is not archived. It is
    /// decompressed a piece at a time into the file, never held whole.
    pub fn wal_fetch_to(
        &self,
        cluster: &str,
        name: &str,
        dest: &Path,
        durability: Durability,
    ) -> Result<bool> {
        let key = keys::wal(cluster, name)?;
        let Some(obj) = self.backend().get(&key)? else {
            return Ok(false);
        };
        write_whole_with(dest, durability, |f, tmp| {
            walfmt::decode_to(&obj, &key, &mut |piece| f.write_all(piece).at(tmp))
        })?;
        Ok(true)
    }

    /// Verify an archived WAL file without keeping its bytes; `false` when
    /// it is not archived.
    pub fn wal_check(&self, cluster: &str, name: &str) -> Result<bool> {
        let key = keys::wal(cluster, name)?;
        match self.backend().get(&key)? {
            Some(obj) => walfmt::check(&obj, &key).map(|()| true),
            None => Ok(false),
        }
    }

    /// When an archived WAL file reached the repository (unix µs).
    pub fn wal_archived_at(&self, cluster: &str, name: &str) -> Result<Option<i64>> {
        Ok(self
            .backend()
            .modified(&keys::wal(cluster, name)?)?
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as i64))
    }
}

/// The oldest and newest segment names (segments only, any timeline).
pub(crate) fn segment_range(names: &[String]) -> Option<(String, String)> {
    let segs: Vec<&String> = names
        .iter()
        .filter(|n| matches!(WalFileName::parse(n), Ok(WalFileName::Segment { .. })))
        .collect();
    Some(((*segs.first()?).clone(), (*segs.last()?).clone()))
}

/// Timelines that have any archived segment.
pub(crate) fn timelines(names: &[String]) -> Vec<TimelineId> {
    let mut t: Vec<TimelineId> = names
        .iter()
        .filter_map(|n| WalFileName::parse(n).ok())
        .filter(|w| w.is_segment_data())
        .map(|w| w.timeline())
        .collect();
    t.sort();
    t.dedup();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_timelines() {
        let names: Vec<String> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "00000002.history",
            "000000020000000000000002",
            "000000020000000000000002.partial",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            segment_range(&names),
            Some((
                "000000010000000000000001".into(),
                "000000020000000000000002".into()
            ))
        );
        assert_eq!(timelines(&names), vec![TimelineId(1), TimelineId(2)]);
        assert_eq!(segment_range(&[]), None);
    }

    #[test]
    fn store_and_read() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        Repository::init(&root, false, None).unwrap();
        let repo = Repository::open(&root).unwrap();
        let name = "000000010000000000000005";
        assert!(!repo.wal_has("main", name).unwrap());
        let obj = walfmt::encode(b"segment bytes", 3).unwrap();
        assert!(repo.wal_put_new("main", name, &obj).unwrap());
        assert!(!repo.wal_put_new("main", name, &obj).unwrap());
        assert!(repo.wal_has("main", name).unwrap());
        assert_eq!(
            repo.wal_fetch("main", name).unwrap().unwrap(),
            b"segment bytes"
        );
        assert_eq!(
            repo.wal_hash("main", name).unwrap().unwrap(),
            *blake3::hash(b"segment bytes").as_bytes()
        );
        assert_eq!(repo.wal_names("main").unwrap(), vec![name.to_string()]);
        assert!(repo.wal_archived_at("main", name).unwrap().is_some());
        assert!(repo
            .wal_fetch("main", "000000010000000000000006")
            .unwrap()
            .is_none());
        assert!(repo.wal_has("main", "bogus").is_err());
    }

    /// Fetched into a file: the bytes, whole; a damaged object leaves the
    /// destination as it was and no temporary file behind.
    #[test]
    fn fetch_to_a_file() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r");
        Repository::init(&root, false, None).unwrap();
        let repo = Repository::open(&root).unwrap();
        let mut seg = vec![0u8; 1 << 20];
        seg.iter_mut()
            .take(700_000)
            .enumerate()
            .for_each(|(i, b)| *b = (i % 251) as u8);
        let obj = walfmt::encode(&seg, 3).unwrap();
        let (good, bad) = ("000000010000000000000001", "000000010000000000000002");
        repo.wal_put_new("main", good, &obj).unwrap();
        let mut damaged = obj.clone();
        let n = damaged.len() - 5;
        damaged[n] ^= 1;
        repo.wal_put_new("main", bad, &damaged).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let dest = out.join("RECOVERYXLOG");
        assert!(repo
            .wal_fetch_to("main", good, &dest, Durability::Fsync)
            .unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), seg);
        let e = repo
            .wal_fetch_to("main", bad, &dest, Durability::PageCache)
            .unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert_eq!(std::fs::read(&dest).unwrap(), seg);
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("RECOVERYXLOG")]);
        let missing = "000000010000000000000003";
        assert!(!repo
            .wal_fetch_to("main", missing, &out.join(missing), Durability::PageCache)
            .unwrap());
        assert!(!out.join(missing).exists());
    }
}
