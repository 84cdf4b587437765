//! Criterion benches of the backup hot paths: fingerprint + chunk + compress
//! one chunk of page-like data, and comparing a file's blocks with its
//! previous block map, sealing and opening objects and unlocking an encrypted
//! repository. `cargo bench`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use pgstrata::testing::BlockMap;
use pgstrata::testing::{compress, fingerprint, ChunkId, CHUNK_BLOCKS};

const BS: usize = 8192;

/// Heap-page-like data that compresses roughly 3-4x, like real tables.
fn pagey(blocks: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks * BS);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in 0..blocks {
        let mut page = vec![0u8; BS];
        page[..8].copy_from_slice(&(b as u64).to_le_bytes());
        let mut off = 24;
        while off + 120 < BS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let row = format!("{:016x} user{} click {:08} ", x, x % 1000, x % 99_999);
            let row = row.as_bytes();
            page[off..off + row.len()].copy_from_slice(row);
            off += row.len() + 12;
        }
        out.extend_from_slice(&page);
    }
    out
}

fn chunk_path(c: &mut Criterion) {
    let data = pagey(CHUNK_BLOCKS, 1);
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("fingerprint_blocks", |b| {
        b.iter(|| data.chunks(BS).map(fingerprint).fold(0u8, |a, f| a ^ f[0]))
    });
    g.bench_function("chunk_id", |b| b.iter(|| ChunkId::of(&data)));
    g.bench_function("page_checksums", |b| {
        b.iter(|| {
            data.chunks(BS)
                .enumerate()
                .map(|(i, p)| pgstrata::testing::page_checksum(p, i as u32))
                .fold(0u16, |a, c| a ^ c)
        })
    });
    g.bench_function("compress_zstd3", |b| {
        b.iter(|| compress(&data, 3).unwrap().1.len())
    });
    g.bench_function("fingerprint_id_compress", |b| {
        b.iter(|| {
            let f = data.chunks(BS).map(fingerprint).fold(0u8, |a, f| a ^ f[0]);
            let id = ChunkId::of(&data);
            let (_, z) = compress(&data, 3).unwrap();
            (f, id, z.len())
        })
    });
    g.finish();
}

fn blockmap_compare(c: &mut Criterion) {
    // A 1 GiB relation segment: 131072 blocks, previous map in 1024 chunks.
    let n = 131_072u32;
    let mut prev = BlockMap::new(BS as u32);
    prev.file_size = u64::from(n) * BS as u64;
    for k in 0..n / 128 {
        let ci = prev.chunk_index(ChunkId::of(&k.to_le_bytes()));
        for j in 0..128 {
            let blk = k * 128 + j;
            prev.push(fingerprint(&blk.to_le_bytes()), ci, j);
        }
    }
    // Today's fingerprints: about 21% of blocks changed.
    let today: Vec<[u8; 16]> = (0..n)
        .map(|b| {
            if b % 5 == 0 || b % 97 == 0 {
                fingerprint(&(b ^ 0xdead_beef).to_le_bytes())
            } else {
                fingerprint(&b.to_le_bytes())
            }
        })
        .collect();
    let enc = prev.encode();
    let mut g = c.benchmark_group("blockmap");
    g.throughput(Throughput::Elements(u64::from(n)));
    g.bench_function("compare_1GiB_file", |b| {
        b.iter_batched(
            || (),
            |()| {
                let mut cur = prev.cursor_at(0);
                let mut kept = 0u32;
                for (blk, fp) in today.iter().enumerate() {
                    if let Some((pfp, _, _)) = cur.at(blk as u32) {
                        if pfp == fp {
                            kept += 1;
                        }
                    }
                }
                kept
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("decode_1GiB_file", |b| {
        b.iter(|| BlockMap::decode(&enc, "bench").unwrap().extents.len())
    });
    g.finish();
}

fn encryption(c: &mut Criterion) {
    use pgstrata::testing::{KeyFile, MasterKey};
    let master = MasterKey::generate().unwrap();
    let sealer = master.keys().sealer;
    let data = pagey(CHUNK_BLOCKS, 3);
    let sealed = sealer.seal(&data).unwrap();
    let mut g = c.benchmark_group("encryption");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("seal_1MiB", |b| {
        b.iter(|| sealer.seal(&data).unwrap().len())
    });
    g.bench_function("open_1MiB", |b| {
        b.iter(|| sealer.open(&sealed, "bench").unwrap().len())
    });
    g.finish();
    let kf = KeyFile::wrap(&master, b"bench passphrase").unwrap();
    let mut g = c.benchmark_group("unlock");
    g.sample_size(10);
    g.bench_function("argon2id_unwrap", |b| {
        b.iter(|| kf.unwrap(b"bench passphrase", "bench").is_ok())
    });
    g.finish();
}

criterion_group!(benches, chunk_path, blockmap_compare, encryption);
criterion_main!(benches);
