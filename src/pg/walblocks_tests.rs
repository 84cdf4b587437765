use super::*;
use crate::pg::walpage::testwal::{Writer, BLCKSZ, SEG};
use crate::pg::walpage::LONG_HEADER;

/// A block reference as a test writes it.
pub(crate) struct Blk {
    pub id: u8,
    pub fork: u8,
    pub data: u16,
    /// `(length, bimg_info, compressed hole length)`.
    pub image: Option<(u16, u8, Option<u16>)>,
    pub rel: Option<[u32; 3]>,
    pub block: u32,
}

pub(crate) fn blk(id: u8, rel: Option<[u32; 3]>, block: u32) -> Blk {
    Blk {
        id,
        fork: 0,
        data: 10,
        image: None,
        rel,
        block,
    }
}

/// A record laid out as XLogRecordAssemble does: header, block headers,
/// main data length, then images and data, then the main data.
pub(crate) fn record(rmid: u8, info: u8, blocks: &[Blk], main: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; RECORD_HEADER];
    r[16] = info;
    r[17] = rmid;
    let mut payload = 0usize;
    for b in blocks {
        let mut flags = b.fork;
        if b.data > 0 {
            flags |= BKPBLOCK_HAS_DATA;
        }
        if b.image.is_some() {
            flags |= BKPBLOCK_HAS_IMAGE;
        }
        if b.rel.is_none() {
            flags |= BKPBLOCK_SAME_REL;
        }
        r.extend_from_slice(&[b.id, flags]);
        r.extend_from_slice(&b.data.to_le_bytes());
        payload += usize::from(b.data);
        if let Some((len, info, hole)) = b.image {
            r.extend_from_slice(&len.to_le_bytes());
            r.extend_from_slice(&100u16.to_le_bytes());
            r.push(info);
            if let Some(h) = hole {
                r.extend_from_slice(&h.to_le_bytes());
            }
            payload += usize::from(len);
        }
        if let Some(rel) = b.rel {
            rel.iter()
                .for_each(|o| r.extend_from_slice(&o.to_le_bytes()));
        }
        r.extend_from_slice(&b.block.to_le_bytes());
    }
    if main.len() > 255 {
        r.push(XLR_BLOCK_ID_DATA_LONG);
        r.extend_from_slice(&(main.len() as u32).to_le_bytes());
    } else if !main.is_empty() {
        r.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]);
    }
    r.extend(std::iter::repeat_n(0xAB, payload));
    r.extend_from_slice(main);
    let total = r.len() as u32;
    r[0..4].copy_from_slice(&total.to_le_bytes());
    r
}

/// Write small records from `at` until the next one starts at `target`
/// (not within a page's first 300 bytes); returns where that is.
pub(crate) fn fill_to(w: &mut Writer, mut at: usize, target: usize) -> usize {
    loop {
        if at % BLCKSZ == 0 {
            at += crate::pg::walpage::SHORT_HEADER;
        }
        if at >= target {
            return at;
        }
        let d = if at / BLCKSZ == target / BLCKSZ && target - at <= 281 {
            target - at
        } else {
            64
        };
        at = w.append(at, &[record(9, 0, &[], &vec![0; d - 26])]).0;
    }
}

fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn decode(rec: &[u8], flavor: Flavor) -> (Vec<BlockRef>, Result<Option<WalEvent>, DecodeError>) {
    let mut out = Vec::new();
    let r = decode_record(rec, rec.len(), flavor, &mut out);
    (out, r)
}

fn rf(spc: u32, db: u32, rel: u32, fork: u8) -> RelFork {
    RelFork { spc, db, rel, fork }
}

#[test]
fn block_references_with_same_rel_images_and_forks() {
    let mut b2 = blk(1, None, 9);
    b2.image = Some((300, BKPIMAGE_HAS_HOLE | 0x04, Some(7000)));
    b2.data = 0;
    let mut b3 = blk(4, Some([1663, 5, 16400]), 2);
    b3.fork = 2;
    b3.image = Some((8192, 0, None));
    let rec = record(
        10,
        0x00,
        &[blk(0, Some([1663, 5, 16384]), 7), b2, b3],
        &[1; 20],
    );
    let (refs, r) = decode(&rec, Flavor::Pg15);
    assert_eq!(r, Ok(None));
    let got: Vec<(RelFork, u32)> = refs.iter().map(|b| (b.rel, b.block)).collect();
    assert_eq!(
        got,
        vec![
            (rf(1663, 5, 16384, 0), 7),
            (rf(1663, 5, 16384, 0), 9),
            (rf(1663, 5, 16400, 2), 2)
        ]
    );
    // With an origin and a top-level xid before the main data length.
    let mut rec = record(10, 0, &[blk(0, Some([1, 2, 3]), 4)], &[]);
    let at = rec.len() - 10;
    rec.splice(at..at, [253, 1, 0, 252, 9, 0, 0, 0]);
    let total = rec.len() as u32;
    rec[0..4].copy_from_slice(&total.to_le_bytes());
    let (refs, r) = decode(&rec, Flavor::Pg15);
    assert_eq!((refs.len(), r), (1, Ok(None)));
}

#[test]
fn image_flags_differ_between_14_and_15() {
    // 0x04 is APPLY in 14 (no compression header) and PGLZ in 15.
    let mut b14 = blk(0, Some([1, 2, 3]), 4);
    b14.image = Some((8000, BKPIMAGE_HAS_HOLE | 0x04, None));
    let r14 = record(10, 0, &[b14], &[0; 8]);
    let mut b15 = blk(0, Some([1, 2, 3]), 4);
    b15.image = Some((800, BKPIMAGE_HAS_HOLE | 0x04, Some(100)));
    let r15 = record(10, 0, &[b15], &[0; 8]);
    assert_eq!(decode(&r14, Flavor::Pg14).0[0].block, 4);
    assert_eq!(decode(&r15, Flavor::Pg15).0[0].block, 4);
    assert!(decode(&r14, Flavor::Pg15).1.is_err());
    assert!(decode(&r15, Flavor::Pg14).1.is_err());
    // 14's compressed bit (0x02) is APPLY in 15.
    let mut c14 = blk(0, Some([1, 2, 3]), 5);
    c14.image = Some((600, BKPIMAGE_HAS_HOLE | 0x02, Some(10)));
    let c14 = record(10, 0, &[c14], &[0; 8]);
    assert_eq!(decode(&c14, Flavor::Pg14).0[0].block, 5);
    assert!(decode(&c14, Flavor::Pg15).1.is_err());
}

#[test]
fn special_records() {
    let ev = |rmid, info, main: &[u8], f| decode(&record(rmid, info, &[], main), f).1;
    let create = le(&[1663, 5, 16384, 1]);
    assert_eq!(
        ev(2, 0x10, &create, Flavor::Pg15),
        Ok(Some(WalEvent::RelCreate {
            rel: rf(1663, 5, 16384, 1)
        }))
    );
    assert_eq!(
        ev(2, 0x20, &le(&[12, 1663, 5, 16384, 7]), Flavor::Pg14),
        Ok(Some(WalEvent::RelTruncate {
            rel: rf(1663, 5, 16384, 0),
            blocks: 12,
            flags: 7
        }))
    );
    let copy = WalEvent::DbCreate {
        spc: 1663,
        db: 16390,
        copied_from: Some((1663, 1)),
    };
    let copy_main = le(&[16390, 1663, 1, 1663]);
    assert_eq!(
        ev(4, 0x00, &copy_main, Flavor::Pg14),
        Ok(Some(copy.clone()))
    );
    assert_eq!(ev(4, 0x00, &copy_main, Flavor::Pg15), Ok(Some(copy)));
    assert_eq!(
        ev(4, 0x10, &le(&[16391, 1663]), Flavor::Pg15),
        Ok(Some(WalEvent::DbCreate {
            spc: 1663,
            db: 16391,
            copied_from: None
        }))
    );
    let drop = Ok(Some(WalEvent::DbDrop {
        db: 16391,
        spcs: vec![1663, 16500],
    }));
    assert_eq!(
        ev(4, 0x10, &le(&[16391, 2, 1663, 16500]), Flavor::Pg14),
        drop
    );
    assert_eq!(
        ev(4, 0x20, &le(&[16391, 2, 1663, 16500]), Flavor::Pg15),
        drop
    );
    assert!(ev(4, 0x20, &le(&[16391, 3, 1663]), Flavor::Pg15).is_err());
    let mut param = le(&[100, 8, 10, 0, 64, 0]);
    param.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        ev(0, 0x60, &param, Flavor::Pg15),
        Ok(Some(WalEvent::WalLevel(0)))
    );
    assert_eq!(ev(0, 0x40, &[], Flavor::Pg15), Ok(Some(WalEvent::Switch)));
    assert_eq!(
        ev(0, 0x90, &le(&[0, 0, 3, 2]), Flavor::Pg15),
        Ok(Some(WalEvent::EndOfRecovery {
            timeline: 3,
            prev: 2
        }))
    );
    // A checkpoint (no block, not special) and a too-short main data.
    assert_eq!(ev(0, 0x10, &[0; 88], Flavor::Pg15), Ok(None));
    assert!(ev(2, 0x10, &[0; 8], Flavor::Pg15).is_err());
}

#[test]
fn malformed_headers_are_errors_not_guesses() {
    let good = record(
        10,
        0,
        &[blk(0, Some([1, 2, 3]), 4), blk(1, None, 5)],
        &[0; 4],
    );
    let mut out = Vec::new();
    // Short prefixes of a record whose main data is not needed.
    for n in 0..good.len() {
        let r = decode_record(&good[..n], good.len(), Flavor::Pg15, &mut out);
        assert!(n >= 54 || r == Err(DecodeError::Short), "{n}: {r:?}");
        assert!(r.is_ok() || out.is_empty());
        out.clear();
    }
    let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut r = good.clone();
        edit(&mut r);
        decode(&r, Flavor::Pg15).1
    };
    assert!(bad(&|r| r[24 + 20] = 7).is_ok());
    assert!(bad(&|r| r[24 + 20] = 0).is_err()); // second id not after the first
    assert!(bad(&|r| r[24 + 1] |= BKPBLOCK_SAME_REL).is_err());
    assert!(bad(&|r| r[24 + 2] = 0).is_err()); // HAS_DATA with length 0
    assert!(bad(&|r| r[24] = 40).is_err()); // not a block id
    assert!(bad(&|r| r.push(0)).is_err()); // total differs from xl_tot_len
                                           // Garbage never panics.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        let mut r = good.clone();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % r.len();
            r[i] = (x >> 32) as u8;
        }
        let _ = decode_record(&r, r.len(), Flavor::Pg15, &mut out);
        let _ = decode_record(&r, (x >> 40) as usize, Flavor::Pg14, &mut out);
    }
}

/// The blocks and events of a scan, sorted.
fn seen(s: &SegmentScan) -> Vec<u32> {
    let mut b: Vec<u32> = s.blocks.iter().map(|b| b.block).collect();
    b.sort_unstable();
    b
}

#[test]
fn scan_follows_records_over_pages_and_keeps_the_split_one() {
    let mut w = Writer::new(0, 0);
    let mut recs: Vec<Vec<u8>> = Vec::new();
    for i in 0..40u32 {
        let mut b = blk(0, Some([1663, 5, 16384]), i);
        if i % 3 == 0 {
            b.image = Some((1000, 0x05, Some(200)));
        }
        recs.push(record(10, 0, &[b], &[0; 30]));
    }
    recs.push(record(2, 0x10, &[], &le(&[1663, 5, 16384, 0])));
    let (at, rest) = w.append(LONG_HEADER, &recs);
    assert!(rest.is_empty());
    // A record whose header runs into the next segment.
    let split_at = SEG - 24;
    assert_eq!(fill_to(&mut w, at, split_at), split_at);
    let last = record(10, 0, &[blk(0, Some([1663, 5, 16385]), 77)], &[0; 40]);
    let spill = w.put(split_at, &last);
    let s = scan_segment(Lsn(0), &w.data, "seg").unwrap();
    assert_eq!(s.major, 17);
    assert_eq!(s.end, Lsn(SEG as u64));
    assert_eq!(seen(&s)[..40], (0..40).collect::<Vec<_>>()[..]);
    assert_eq!(s.events.len(), 1);
    let tail = s.tail.clone().unwrap();
    assert_eq!((tail.start, tail.bytes.len()), (Lsn(split_at as u64), 24));

    let mut w2 = Writer::new(SEG as u64, spill.len() as u32);
    w2.put(LONG_HEADER, &spill);
    let s2 = scan_segment(Lsn(SEG as u64), &w2.data, "seg2").unwrap();
    let head = s2.head.clone().unwrap();
    assert_eq!(head.rem as usize, spill.len());
    // The rest of the second segment is zeros: the records stop there.
    assert_eq!(
        s2.end,
        Lsn((SEG + LONG_HEADER + spill.len() + 7) as u64 & !7)
    );
    let mut out = Vec::new();
    let r = decode_stitched(&tail, &head, Flavor::Pg15, &mut out);
    assert_eq!(r, Some(Ok(None)));
    assert_eq!((out[0].rel.rel, out[0].block), (16385, 77));
}

#[test]
fn a_record_that_fits_is_decoded_where_it_starts() {
    // A big record (an image) whose header is all in this segment.
    let mut w = Writer::new(0, 0);
    let mut b = blk(0, Some([1663, 5, 16384]), 3);
    b.image = Some((8192, 0, None));
    let big = record(10, 0, &[b], &[0; 10]);
    let spill = w.put(SEG - BLCKSZ / 2, &big);
    assert!(!spill.is_empty());
    // Zeros before it end the records.
    let s = scan_segment(Lsn(0), &w.data, "seg").unwrap();
    assert_eq!(s.end, Lsn(LONG_HEADER as u64));
    let mut w = Writer::new(0, 0);
    let recs = vec![record(9, 0, &[], &vec![0; BLCKSZ * 3 + 100])];
    let (at, _) = w.append(LONG_HEADER, &recs);
    let at = fill_to(&mut w, at, SEG - BLCKSZ / 2);
    w.put(at, &big);
    let s = scan_segment(Lsn(0), &w.data, "seg").unwrap();
    assert!(s.tail.is_none());
    assert_eq!(seen(&s), vec![3]);
    assert_eq!(s.end, Lsn(SEG as u64));
}

#[test]
fn an_undecodable_record_is_an_event_and_old_magic_is_refused() {
    let mut w = Writer::new(0, 0);
    let mut bad = record(10, 0, &[blk(0, Some([1, 2, 3]), 4)], &[0; 10]);
    bad[24] = 60;
    w.append(LONG_HEADER, &[bad]);
    let s = scan_segment(Lsn(0), &w.data, "seg").unwrap();
    assert_eq!(
        s.events,
        vec![(Lsn(LONG_HEADER as u64), WalEvent::Undecodable)]
    );
    let w = Writer::with_magic(0, 0, 0xD106);
    assert!(scan_segment(Lsn(0), &w.data, "seg13").is_err());
    assert!(scan_segment(Lsn(0), &[0; 16], "short").is_err());
}
