use super::*;
use crate::pg::walblocks::tests::{blk, fill_to, record};
use crate::pg::walpage::testwal::{Writer, SEG};
use crate::pg::walpage::LONG_HEADER;

fn rf(rel: u32, fork: u8) -> RelFork {
    RelFork {
        spc: 1663,
        db: 5,
        rel,
        fork,
    }
}

fn sample() -> WalSummary {
    let mut blocks = BTreeMap::new();
    let mut a = RoaringBitmap::new();
    a.insert_range(0..5000);
    a.insert(7);
    a.insert(70_000);
    a.insert(u32::MAX);
    blocks.insert(rf(16384, 0), a);
    blocks.insert(rf(16384, 2), [0u32, 3].into_iter().collect());
    WalSummary {
        start: Lsn(0x1_0000_0000),
        end: Lsn(0x1_0100_0000),
        seg_size: 16 << 20,
        timeline: 2,
        major: 15,
        blocks,
        events: vec![
            (Lsn(0x1_0000_0100), WalEvent::RelCreate { rel: rf(1, 0) }),
            (
                Lsn(0x1_0000_0200),
                WalEvent::RelTruncate {
                    rel: rf(2, 0),
                    blocks: 3,
                    flags: 7,
                },
            ),
            (
                Lsn(0x1_0000_0300),
                WalEvent::DbCreate {
                    spc: 1663,
                    db: 9,
                    copied_from: Some((1663, 1)),
                },
            ),
            (
                Lsn(0x1_0000_0308),
                WalEvent::DbCreate {
                    spc: 1663,
                    db: 10,
                    copied_from: None,
                },
            ),
            (
                Lsn(0x1_0000_0400),
                WalEvent::DbDrop {
                    db: 9,
                    spcs: vec![1663, 20000],
                },
            ),
            (Lsn(0x1_0000_0500), WalEvent::WalLevel(1)),
            (
                Lsn(0x1_0000_0600),
                WalEvent::EndOfRecovery {
                    timeline: 2,
                    prev: 1,
                },
            ),
            (Lsn(0x1_0000_0700), WalEvent::Undecodable),
            (Lsn(0x1_00FF_FF00), WalEvent::Switch),
        ],
        head: Some(Head {
            rem: 5000,
            bytes: vec![1, 2, 3],
        }),
        tail: Some(Tail {
            start: Lsn(0x1_00FF_FFF0),
            total: 300,
            bytes: vec![9; 16],
        }),
    }
}

#[test]
fn round_trip() {
    let s = sample();
    let enc = s.encode().unwrap();
    assert_eq!(WalSummary::decode(&enc, "s").unwrap(), s);
    assert_eq!(s.block_count(), 5000 + 2 + 2);
    // Long runs cost two varints: the whole thing is small.
    assert!(enc.len() < 200, "{}", enc.len());
}

#[test]
fn damage_is_an_error_never_a_panic() {
    let enc = sample().encode().unwrap();
    for n in 0..enc.len() {
        assert!(WalSummary::decode(&enc[..n], "s").is_err());
    }
    let mut newer = enc.clone();
    newer[7] = b'2';
    assert!(matches!(
        WalSummary::decode(&newer, "s"),
        Err(Error::NewerFormat { .. })
    ));
    // Garbage bodies behind a good magic and frame.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for len in 0..2000usize {
        let body: Vec<u8> = (0..len % 97)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut obj = MAGIC.to_vec();
        obj.extend_from_slice(&zstd::bulk::compress(&body, 1).unwrap());
        let _ = WalSummary::decode(&obj, "g");
    }
    // Flipped bytes of a real body.
    let body = zstd::bulk::decompress(&enc[8..], 1 << 20).unwrap();
    for i in 0..body.len() {
        let mut b = body.clone();
        b[i] ^= 0xFF;
        let mut obj = MAGIC.to_vec();
        obj.extend_from_slice(&zstd::bulk::compress(&b, 1).unwrap());
        let _ = WalSummary::decode(&obj, "f");
    }
}

/// Two synthetic segments with a record split between them.
fn two_segments() -> (Vec<u8>, Vec<u8>) {
    let mut w = Writer::new(0, 0);
    let recs: Vec<Vec<u8>> = (0..10)
        .map(|i| record(10, 0, &[blk(0, Some([1663, 5, 16384]), i)], &[0; 8]))
        .collect();
    let (at, _) = w.append(LONG_HEADER, &recs);
    let at = fill_to(&mut w, at, SEG - 16);
    let split = record(
        2,
        0x10,
        &[],
        &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0],
    );
    let spill = w.put(at, &split);
    let mut w2 = Writer::new(SEG as u64, spill.len() as u32);
    w2.put(LONG_HEADER, &spill);
    let at = (LONG_HEADER + spill.len() + 7) & !7;
    w2.append(
        at,
        &[
            record(10, 0, &[blk(0, Some([1663, 5, 16384]), 500)], &[0; 8]),
            record(0, 0x40, &[], &[]),
        ],
    );
    (w.data, w2.data)
}

#[test]
fn union_stitches_split_records_and_refuses_gaps() {
    let (a, b) = two_segments();
    let sa = WalSummary::of_segment(Lsn(0), &a, "a").unwrap();
    let sb = WalSummary::of_segment(Lsn(SEG as u64), &b, "b").unwrap();
    assert!(sa.tail.is_some() && sb.head.is_some());
    let sa = WalSummary::decode(&sa.encode().unwrap(), "a").unwrap();
    let sb = WalSummary::decode(&sb.encode().unwrap(), "b").unwrap();
    let mut u = BlockUnion::new();
    u.add(sa.clone(), "a").unwrap();
    u.add(sb.clone(), "b").unwrap();
    let blocks: Vec<u32> = u.blocks[&rf(16384, 0)].iter().collect();
    assert_eq!(blocks, (0..10).chain([500]).collect::<Vec<_>>());
    let kinds: Vec<&WalEvent> = u.events.iter().map(|e| &e.1).collect();
    assert_eq!(
        kinds,
        vec![
            &WalEvent::RelCreate {
                rel: RelFork {
                    spc: 1,
                    db: 2,
                    rel: 3,
                    fork: 0
                }
            },
            &WalEvent::Switch
        ]
    );
    assert_eq!(u.events[0].0, Lsn(SEG as u64 - 16));
    // After a switch the next segment follows on, though records stopped.
    assert!(sb.end.0 < 2 * SEG as u64);
    let mut next = sa.clone();
    next.start = Lsn(2 * SEG as u64);
    next.head = None;
    u.add(next, "c").unwrap();
    // A missing segment, or WAL that ended early, is refused.
    let mut u = BlockUnion::new();
    u.add(sa.clone(), "a").unwrap();
    assert!(u.add(sa.clone(), "a again").is_err());
    let mut u = BlockUnion::new();
    let mut short = sa.clone();
    short.end = Lsn(100);
    short.tail = None;
    u.add(short, "short").unwrap();
    assert!(u.add(sb.clone(), "b").is_err());
    // A tail without the head that continues it is undecodable.
    let mut u = BlockUnion::new();
    u.add(sa, "a").unwrap();
    let mut sb = sb;
    sb.head = None;
    u.add(sb, "b").unwrap();
    assert_eq!(u.events[0].1, WalEvent::Undecodable);
}
