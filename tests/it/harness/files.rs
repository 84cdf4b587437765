//! Trees of files, as a test compares them: a restore with a fresh one, a
//! repository before and after a refused command.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a test compares of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits (and set-id, sticky).
    pub mode: u32,
    /// A file's length, a link's target's length; 0 for a directory (whose
    /// size depends on the file system's history, not its entries).
    pub size: u64,
    /// BLAKE3 of a file's bytes or a link's target (of nothing for a
    /// directory).
    pub hash: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Link,
}

impl Node {
    pub fn is_file(&self) -> bool {
        self.kind == NodeKind::File
    }
}

/// Every path below `root` (not `root` itself), links not followed, by its
/// path relative to `root`.
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let m = e.path().symlink_metadata().unwrap();
        let (kind, data) = if m.is_dir() {
            (NodeKind::Dir, vec![])
        } else if m.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            (NodeKind::Link, target.into_os_string().into_encoded_bytes())
        } else {
            (NodeKind::File, std::fs::read(e.path()).unwrap())
        };
        let node = Node {
            kind,
            mode: m.mode() & 0o7777,
            size: data.len() as u64,
            hash: pgstrata::ChunkId::of(&data).to_hex(),
        };
        out.insert(rel, node);
    }
    out
}
