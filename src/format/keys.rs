//! Object keys: the names of everything a repository stores. Each kind is
//! built by one function and parsed by one function, here.
//!
//! ```text
//! pgstrata.repo                               the format marker
//! pgstrata.key                                the wrapped master key (encrypted repositories)
//! packs/<2 hex>/<64 hex>.pack                 packs, named by their PackId
//! manifests/<cluster>/<backup>.json.zst       manifest copies
//! wal/<cluster>/<timeline+log>/<name>.zst     WAL segments, .partial, .backup
//! wal/<cluster>/<TTTTTTTT>.history.zst        timeline history files
//! tmp/<anything>                              temporary files, never read
//! catalog/<generation, 20 digits>.db.zst      catalog snapshots (object storage only)
//! locks/repository.lock                       the repository lock (object storage only)
//! locks/readers/<id>                          a restore's or verify's lease (object storage only)
//! ```

use super::pack::PackId;
use crate::error::{Error, Result};
use crate::pg::WalFileName;

pub(crate) const MARKER: &str = "pgstrata.repo";
pub(crate) const KEY_FILE: &str = "pgstrata.key";
pub(crate) const PACKS: &str = "packs/";
pub(crate) const MANIFESTS: &str = "manifests/";
pub(crate) const WAL: &str = "wal/";
pub(crate) const TMP: &str = "tmp/";
pub(crate) const CATALOG: &str = "catalog/";
pub(crate) const LOCK: &str = "locks/repository.lock";
pub(crate) const READERS: &str = "locks/readers/";

/// The lease object of one reader (a random id).
pub(crate) fn reader(id: &str) -> String {
    format!("{READERS}{id}")
}

/// Whether an object of this key is sealed in an encrypted repository: every
/// object but the marker and the key file, which must be read before the
/// repository is unlocked, the lock (who holds it is no secret), and
/// temporary files (sealed as they are written, but never read).
pub(crate) fn is_sealed(key: &str) -> bool {
    [PACKS, MANIFESTS, WAL, CATALOG]
        .iter()
        .any(|p| key.starts_with(p))
}

/// A parsed object key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ObjectKey {
    Marker,
    Pack(PackId),
    Manifest { cluster: String, backup: String },
    Wal { cluster: String, name: String },
    Tmp(String),
}

pub(crate) fn pack(id: &PackId) -> String {
    let h = id.to_hex();
    format!("{PACKS}{}/{h}.pack", &h[..2])
}

/// A catalog snapshot of generation `generation` (they sort by generation).
pub(crate) fn catalog_snapshot(generation: u64) -> String {
    format!("{CATALOG}{generation:020}.db.zst")
}

/// The generation a catalog snapshot's key names, if it names one.
pub(crate) fn parse_catalog_snapshot(key: &str) -> Option<u64> {
    let digits = key.strip_prefix(CATALOG)?.strip_suffix(".db.zst")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

pub(crate) fn manifest(cluster: &str, backup: &str) -> String {
    format!("{MANIFESTS}{cluster}/{backup}.json.zst")
}

/// The key of an archived WAL file; a malformed name is an error.
pub(crate) fn wal(cluster: &str, name: &str) -> Result<String> {
    Ok(match WalFileName::parse(name)? {
        WalFileName::History { .. } => format!("{WAL}{cluster}/{name}.zst"),
        _ => format!("{WAL}{cluster}/{}/{name}.zst", &name[..16]),
    })
}

/// Where the WAL of entry `history` of a cluster's history is archived: the
/// cluster's name for the first, `<name>~<n>` after each upgrade (`~` is not
/// allowed in cluster names, so the two never collide).
pub(crate) fn wal_id(cluster: &str, history: u32) -> String {
    if history <= 1 {
        cluster.to_string()
    } else {
        format!("{cluster}~{history}")
    }
}

/// The prefix under which a cluster's WAL lives.
pub(crate) fn wal_prefix(cluster: &str) -> String {
    format!("{WAL}{cluster}/")
}

fn bad(key: &str, why: &str) -> Error {
    Error::corrupt(
        format!("object {key:?}"),
        format!("not a pgstrata object key: {why}"),
    )
}

/// A component that may appear in a key (cluster names, backup ids).
fn plain(c: &str) -> bool {
    !c.is_empty() && !c.starts_with('.') && !c.contains('/')
}

impl ObjectKey {
    /// Parse a key found in a listing.
    pub(crate) fn parse(key: &str) -> Result<Self> {
        if key == MARKER {
            return Ok(ObjectKey::Marker);
        }
        if let Some(rest) = key.strip_prefix(TMP) {
            return match plain(rest) {
                true => Ok(ObjectKey::Tmp(rest.to_string())),
                false => Err(bad(key, "bad temporary name")),
            };
        }
        if let Some(rest) = key.strip_prefix(PACKS) {
            let (dir, file) = rest
                .split_once('/')
                .ok_or_else(|| bad(key, "no pack directory"))?;
            let id = file
                .strip_suffix(".pack")
                .and_then(PackId::from_hex)
                .ok_or_else(|| bad(key, "not a pack name"))?;
            if id.to_hex()[..2] != *dir {
                return Err(bad(key, "pack in the wrong directory"));
            }
            return Ok(ObjectKey::Pack(id));
        }
        if let Some(rest) = key.strip_prefix(MANIFESTS) {
            let (cluster, file) = rest.split_once('/').ok_or_else(|| bad(key, "no cluster"))?;
            let backup = file
                .strip_suffix(".json.zst")
                .filter(|b| plain(b) && plain(cluster))
                .ok_or_else(|| bad(key, "not a manifest name"))?;
            return Ok(ObjectKey::Manifest {
                cluster: cluster.to_string(),
                backup: backup.to_string(),
            });
        }
        if let Some(rest) = key.strip_prefix(WAL) {
            let (cluster, tail) = rest.split_once('/').ok_or_else(|| bad(key, "no cluster"))?;
            let name = tail
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".zst"))
                .filter(|_| plain(cluster))
                .ok_or_else(|| bad(key, "not a WAL object name"))?;
            // The one function that builds WAL keys decides where each lives.
            if wal(cluster, name).ok().as_deref() != Some(key) {
                return Err(bad(key, "not a WAL object name"));
            }
            return Ok(ObjectKey::Wal {
                cluster: cluster.to_string(),
                name: name.to_string(),
            });
        }
        Err(bad(key, "unknown kind"))
    }

    /// The key this names (the inverse of [`ObjectKey::parse`]).
    #[cfg(test)]
    pub fn key(&self) -> Result<String> {
        Ok(match self {
            ObjectKey::Marker => MARKER.to_string(),
            ObjectKey::Pack(id) => pack(id),
            ObjectKey::Manifest { cluster, backup } => manifest(cluster, backup),
            ObjectKey::Wal { cluster, name } => wal(cluster, name)?,
            ObjectKey::Tmp(n) => format!("{TMP}{n}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse() {
        let id = PackId([0xab; 32]);
        let k = pack(&id);
        assert!(k.starts_with("packs/ab/abab"));
        assert_eq!(ObjectKey::parse(&k).unwrap(), ObjectKey::Pack(id));
        let cases = [
            ObjectKey::Marker,
            ObjectKey::Pack(id),
            ObjectKey::Manifest {
                cluster: "main".into(),
                backup: "20261121-080727F".into(),
            },
            ObjectKey::Wal {
                cluster: "main".into(),
                name: "000000010000000000000003".into(),
            },
            ObjectKey::Wal {
                cluster: "main".into(),
                name: "00000002.history".into(),
            },
            ObjectKey::Wal {
                cluster: "main".into(),
                name: "000000010000000000000003.00000028.backup".into(),
            },
            ObjectKey::Tmp("1-2-3.tmp".into()),
        ];
        for c in cases {
            let k = c.key().unwrap();
            assert_eq!(ObjectKey::parse(&k).unwrap(), c, "{k}");
        }
        assert_eq!(
            wal("main", "000000010000000000000003").unwrap(),
            "wal/main/0000000100000000/000000010000000000000003.zst"
        );
        assert_eq!(
            wal("c", "00000002.history").unwrap(),
            "wal/c/00000002.history.zst"
        );
        assert_eq!(manifest("main", "X"), "manifests/main/X.json.zst");
        assert_eq!(parse_catalog_snapshot(&catalog_snapshot(42)), Some(42));
        for k in [
            "catalog/42.db.zst",
            "catalog/x.db.zst",
            "wal/00000000000000000001.db.zst",
        ] {
            assert_eq!(parse_catalog_snapshot(k), None, "{k}");
        }
    }

    #[test]
    fn bad_keys() {
        for k in [
            "packs/ab/xyz.pack",
            "packs/cd/".to_string().as_str(),
            &format!("packs/cd/{}.pack", "ab".repeat(32)),
            "manifests/main/x.json",
            "manifests/x.json.zst",
            "wal/main/000000010000000000000003.zst",
            "wal/main/0000000100000000/garbage.zst",
            "wal/main/0000000100000001/000000010000000000000003.zst",
            "catalog.db",
            "",
        ] {
            assert!(ObjectKey::parse(k).is_err(), "{k}");
        }
        assert!(wal("main", "../etc").is_err());
        assert_eq!(wal_id("main", 1), "main");
        assert_eq!(wal_id("main", 3), "main~3");
        assert_eq!(
            ObjectKey::parse(&wal(&wal_id("main", 2), "00000001.history").unwrap()).unwrap(),
            ObjectKey::Wal {
                cluster: "main~2".into(),
                name: "00000001.history".into()
            }
        );
    }
}
