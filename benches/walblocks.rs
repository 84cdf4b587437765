//! Criterion bench of WAL block summaries at `archive-push` time: decoding
//! and summarising one 16 MiB segment, against compressing it with zstd at
//! level 3 (what `archive-push` already does to every segment). The
//! segment is `$PGSTRATA_BENCH_WAL` (a real WAL segment file) when set,
//! else a synthetic one with PostgreSQL's layout and an OLTP-like mix of
//! records (inserts, updates over two blocks, index inserts, full-page
//! images). `cargo bench --bench walblocks`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use pgstrata::testing::WalSummary;
use pgstrata::Lsn;

const SEG: usize = 16 << 20;
const BLCKSZ: usize = 8192;
const START: u64 = 0x5_0000_0000;

/// Lays records out as PostgreSQL does: 8-byte aligned, split over pages
/// whose headers say how much of a record continues on them.
struct Segment {
    data: Vec<u8>,
    at: usize,
}

impl Segment {
    fn new() -> Self {
        let mut data = vec![0u8; SEG];
        for p in 0..SEG / BLCKSZ {
            let o = p * BLCKSZ;
            data[o..o + 2].copy_from_slice(&0xD110u16.to_le_bytes());
            data[o + 2..o + 4].copy_from_slice(&(if p == 0 { 2u16 } else { 0 }).to_le_bytes());
            data[o + 4..o + 8].copy_from_slice(&1u32.to_le_bytes());
            data[o + 8..o + 16].copy_from_slice(&(START + o as u64).to_le_bytes());
        }
        data[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
        data[36..40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
        Segment { data, at: 40 }
    }

    /// Append a record; false when it does not fit.
    fn put(&mut self, rec: &[u8]) -> bool {
        let mut rest = rec;
        let mut at = self.at;
        // Keep the last record whole so the segment ends cleanly.
        if at + rec.len() + rec.len() / BLCKSZ * 24 + 64 >= SEG {
            return false;
        }
        loop {
            let page_end = (at / BLCKSZ + 1) * BLCKSZ;
            let n = rest.len().min(page_end - at);
            self.data[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            at += n;
            if rest.is_empty() {
                break;
            }
            let o = page_end;
            self.data[o + 2] |= 1;
            self.data[o + 16..o + 20].copy_from_slice(&(rest.len() as u32).to_le_bytes());
            at = o + 24;
        }
        at = (at + 7) & !7;
        if at % BLCKSZ == 0 {
            at += 24;
        }
        self.at = at;
        true
    }
}

/// A record of `rmid` with blocks `(rel, block, data length, image length)`.
fn record(rmid: u8, blocks: &[(u32, u32, u16, u16)], main: usize, x: &mut u64) -> Vec<u8> {
    let mut r = vec![0u8; 24];
    r[17] = rmid;
    let mut payload = 0usize;
    let mut prev_rel = None;
    for (id, &(rel, block, data, image)) in blocks.iter().enumerate() {
        let mut flags = 0u8;
        if data > 0 {
            flags |= 0x20;
        }
        if image > 0 {
            flags |= 0x10;
        }
        if prev_rel == Some(rel) {
            flags |= 0x80;
        }
        r.extend_from_slice(&[id as u8, flags]);
        r.extend_from_slice(&data.to_le_bytes());
        if image > 0 {
            r.extend_from_slice(&image.to_le_bytes());
            r.extend_from_slice(&200u16.to_le_bytes());
            r.push(0x01);
        }
        if prev_rel != Some(rel) {
            for o in [1663u32, 5, rel] {
                r.extend_from_slice(&o.to_le_bytes());
            }
        }
        r.extend_from_slice(&block.to_le_bytes());
        payload += usize::from(data) + usize::from(image);
        prev_rel = Some(rel);
    }
    r.extend_from_slice(&[255, main as u8]);
    for _ in 0..payload + main {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        r.push((*x % 64) as u8 + b' ');
    }
    let total = r.len() as u32;
    r[0..4].copy_from_slice(&total.to_le_bytes());
    r
}

fn synthetic() -> Vec<u8> {
    let mut s = Segment::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next_block = 0u32;
    for i in 0u64.. {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let hot = (x >> 20) as u32 % 50_000;
        let rec = match i % 100 {
            0..=59 => {
                next_block += u32::from(i % 40 == 0);
                record(10, &[(16384, next_block, 60, 0)], 3, &mut x)
            }
            60..=84 => record(
                10,
                &[(16384, hot, 80, 0), (16384, hot / 2, 0, 0)],
                14,
                &mut x,
            ),
            85..=97 => record(11, &[(16390, hot / 100, 24, 0)], 2, &mut x),
            _ => record(10, &[(16400, hot, 0, 7000)], 0, &mut x),
        };
        if !s.put(&rec) {
            break;
        }
    }
    s.data
}

fn segment() -> Vec<u8> {
    match std::env::var_os("PGSTRATA_BENCH_WAL") {
        Some(p) => std::fs::read(&p).expect("PGSTRATA_BENCH_WAL names a readable WAL segment"),
        None => synthetic(),
    }
}

fn summaries(c: &mut Criterion) {
    let seg = segment();
    let start = {
        let a = u64::from_le_bytes(seg[8..16].try_into().unwrap());
        Lsn(a)
    };
    let s = WalSummary::of_segment(start, &seg, "bench").unwrap();
    let enc = s.encode().unwrap();
    eprintln!(
        "segment of {} bytes: {} blocks in {} forks, {} events; summary {} bytes",
        seg.len(),
        s.block_count(),
        s.blocks.len(),
        s.events.len(),
        enc.len()
    );
    let mut g = c.benchmark_group("walsummary");
    g.throughput(Throughput::Bytes(seg.len() as u64));
    g.sample_size(20);
    g.bench_function("summarise", |b| {
        b.iter(|| {
            WalSummary::of_segment(start, &seg, "bench")
                .unwrap()
                .block_count()
        })
    });
    g.bench_function("summarise_encode", |b| {
        b.iter(|| {
            let s = WalSummary::of_segment(start, &seg, "bench").unwrap();
            s.encode().unwrap().len()
        })
    });
    g.bench_function("zstd3_segment", |b| {
        b.iter(|| zstd::bulk::compress(&seg, 3).unwrap().len())
    });
    g.finish();
}

criterion_group!(benches, summaries);
criterion_main!(benches);
