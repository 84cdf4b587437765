//! Fixtures for unit tests: small repositories built through the real
//! format, store and catalog code, without PostgreSQL, and ways to damage
//! them the way disks and bugs do.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::Repository;
use crate::catalog::{BackupRow, BackupStatus, BackupType, FileKind, FileRow};
use crate::format::chunk::{compress, CHUNK_BLOCKS};
use crate::format::{wal as walfmt, BlockMap, ChunkId, PackId};
use crate::pg::{Lsn, TimelineId, WalSegment};
use crate::store::PackWriter;

pub const BLOCK: usize = 8192;
pub const SYSTEM_ID: u64 = 7_000_000_000_000_000_042;
const SEG: u64 = 16 << 20;

/// A repository in a temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
}

/// One synthetic backup: its id, its files' contents, and its pack.
pub struct Made {
    pub id: String,
    pub files: Vec<(String, Vec<u8>)>,
    pub pack: PackId,
}

/// Deterministic file contents: `blocks` pages (the last `tail` bytes short).
pub fn content(seed: u8, blocks: usize, tail: usize) -> Vec<u8> {
    let len = blocks * BLOCK - tail;
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed)) as u8
        })
        .collect()
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("repo");
        Repository::init(&root, false, None).expect("init");
        let repo = Repository::open(&root).expect("open");
        Fixture { dir, repo }
    }

    /// An encrypted repository, unlocked with the passphrase in the file
    /// [`Fixture::passphrase_file`].
    pub fn encrypted() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("repo");
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "fixture passphrase\n").expect("write");
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let src = super::PassphraseSource::File(pass.clone());
        Repository::init(&root, false, Some(&src.read().expect("read"))).expect("init");
        let repo = Repository::open_with(&root, Some(&src)).expect("open");
        Fixture { dir, repo }
    }

    pub fn passphrase_file(&self) -> PathBuf {
        self.dir.path().join("pass")
    }

    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A complete backup of `files` (path, bytes), with its WAL archived and
    /// its manifest copy written, as `backup` would leave it.
    pub fn backup(&self, n: u32, files: &[(&str, Vec<u8>)]) -> Made {
        let cat = self.repo.catalog().expect("catalog");
        let cl = match cat.clusters().get("main").expect("cluster") {
            Some(c) => c,
            None => cat.clusters().bind("main", SYSTEM_ID, 15).expect("bind"),
        };
        let id = format!("20260101-0000{n:02}F");
        let mut pack = PackWriter::new(self.repo.backend()).expect("pack");
        // Deduplicated like a real backup: a chunk the repository has is
        // referenced, not stored again.
        let mut known = cat.packs().chunk_ids().expect("chunk ids");
        let ids = *self.repo.ids();
        let mut rows = vec![row(".", FileKind::Dir, 0, None)];
        let mut relation = Vec::new();
        for (path, data) in files {
            let mut map = BlockMap::new(BLOCK as u32);
            map.file_size = data.len() as u64;
            for chunk in data.chunks(CHUNK_BLOCKS * BLOCK) {
                let cid = ids.chunk_id(chunk);
                if known.insert(cid) {
                    let (codec, stored) = compress(chunk, 3).expect("compress");
                    pack.add(cid, codec, chunk.len() as u32, &stored)
                        .expect("add");
                }
                let ci = map.chunk_index(cid);
                for (k, b) in chunk.chunks(BLOCK).enumerate() {
                    map.push(ids.fingerprint(b), ci, k as u32);
                }
            }
            let enc = map.encode();
            let bm = ids.chunk_id(&enc);
            if known.insert(bm) {
                let (codec, stored) = compress(&enc, 3).expect("compress");
                pack.add(bm, codec, enc.len() as u32, &stored).expect("add");
            }
            relation.push((bm, map.chunks.clone()));
            rows.push(row(path, FileKind::File, data.len() as u64, Some(bm)));
        }
        let sealed = pack.seal().expect("seal");
        cat.packs().add(&sealed, Some(&id)).expect("add pack");
        let seg = WalSegment::containing(TimelineId(1), Lsn(u64::from(n) * SEG), SEG);
        let mut b = backup_row(&id, u64::from(n) * SEG, &seg.name(SEG));
        b.history = cl.history;
        b.pg_version = cl.pg_version;
        cat.backups().insert(cl.id, &b).expect("insert");
        cat.versions()
            .insert_files(&id, &rows, &relation)
            .expect("files");
        let wal = walfmt::encode(format!("wal of {id}").as_bytes(), 3).expect("wal");
        self.repo
            .wal_put_new(&cl.wal_id(), &seg.name(SEG), &wal)
            .expect("wal");
        b.status = BackupStatus::Complete;
        self.repo
            .put_manifest_copy(&cat, cl.identity(), &b)
            .expect("copy");
        cat.backups().complete(&b).expect("complete");
        Made {
            id,
            files: files
                .iter()
                .map(|(p, d)| (p.to_string(), d.clone()))
                .collect(),
            pack: sealed.id,
        }
    }

    /// Run SQL against the catalog (to damage it).
    pub fn sql(&self, sql: &str) {
        rusqlite::Connection::open(self.repo.catalog_path().expect("catalog path"))
            .expect("open catalog")
            .execute_batch(sql)
            .expect("sql");
    }

    /// Flip one byte of an object as stored (sealed, in an encrypted
    /// repository), the way a disk would.
    pub fn flip(&self, key: &str, at: usize) {
        let path = self.repo.root().join(key);
        let mut b = std::fs::read(&path).expect("read");
        b[at] ^= 0x5a;
        std::fs::write(&path, &b).expect("write");
    }
}

fn row(path: &str, kind: FileKind, size: u64, blockmap: Option<ChunkId>) -> FileRow {
    FileRow {
        path: path.into(),
        kind,
        size,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: if kind == FileKind::Dir { 0o700 } else { 0o600 },
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        link: None,
        blockmap,
    }
}

pub(crate) fn backup_row(id: &str, start: u64, wal: &str) -> BackupRow {
    BackupRow {
        id: id.into(),
        backup_type: BackupType::Full,
        status: BackupStatus::Running,
        reference: None,
        start_time: 1_700_000_000_000_000 + start as i64,
        stop_time: Some(1_700_000_000_000_000 + start as i64 + 1),
        start_lsn: Lsn(start + 40),
        stop_lsn: Some(Lsn(start + 400)),
        timeline: 1,
        wal_start: Some(wal.into()),
        wal_stop: Some(wal.into()),
        pg_version: 15,
        block_size: BLOCK as u32,
        wal_seg_size: SEG,
        data_checksums: false,
        backup_label: Some(b"START WAL LOCATION: 0/0 (file x)\n".to_vec()),
        tablespace_map: None,
        db_bytes: 0,
        read_bytes: 0,
        stored_bytes: 0,
        files: 0,
        page_errors: 0,
        host: None,
        pid: None,
        history: 1,
        changes: None,
    }
}

/// A data directory with just what `upgrade` reads: `PG_VERSION` and the
/// system identifier at the start of `global/pg_control`.
pub fn fake_pgdata(dir: &std::path::Path, major: u32, system_id: u64) {
    std::fs::create_dir_all(dir.join("global")).expect("mkdir");
    std::fs::write(dir.join("PG_VERSION"), format!("{major}\n")).expect("PG_VERSION");
    let mut control = system_id.to_le_bytes().to_vec();
    control.resize(8192, 0);
    std::fs::write(dir.join("global/pg_control"), control).expect("pg_control");
}

/// A WAL segment file (16 MiB segments) whose long page header names
/// `system_id`, and the timeline and start its name gives.
pub fn fake_segment(dir: &std::path::Path, name: &str, magic: u16, system_id: u64) -> PathBuf {
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&name[r], 16).expect("WAL name");
    let page_addr = (hex(8..16) << 32) | (hex(16..24) << 24);
    let mut b = vec![0u8; 8192];
    b[0..2].copy_from_slice(&magic.to_le_bytes());
    b[2..4].copy_from_slice(&2u16.to_le_bytes());
    b[4..8].copy_from_slice(&(hex(0..8) as u32).to_le_bytes());
    b[8..16].copy_from_slice(&page_addr.to_le_bytes());
    b[24..32].copy_from_slice(&system_id.to_le_bytes());
    b[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    let p = dir.join(name);
    std::fs::write(&p, b).expect("segment");
    p
}
