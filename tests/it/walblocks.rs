//! WAL block summaries over real WAL: every page of a table that changed
//! between two checkpoints is among the blocks the summaries of the WAL in
//! between name, and the records that make block tracking untrustworthy
//! (a fork created, a relation truncated, databases created and dropped)
//! are seen. On 15 (the suite's server), 14 (the old block image flags and
//! database records) and 18.

use std::collections::BTreeSet;
use std::path::Path;

use pgstrata::testing::{BlockUnion, RelFork, WalEvent, WalSummary};
use pgstrata::Lsn;

use crate::harness::*;

const SEG: u64 = 16 << 20;
const PAGE: usize = 8192;

fn lsn(c: &Cluster, sql: &str) -> Lsn {
    c.query_one(&format!("SELECT ({sql})::text"))
        .parse()
        .unwrap()
}

fn oid(c: &Cluster, sql: &str) -> u32 {
    c.query_one(&format!("SELECT ({sql})::text"))
        .parse()
        .unwrap()
}

/// The main fork of `table` (under 1 GiB, so one file), as pages.
fn pages(c: &Cluster, table: &str) -> Vec<Vec<u8>> {
    let rel = c.query_one(&format!("SELECT pg_relation_filepath('{table}')"));
    let bytes = std::fs::read(c.pgdata.join(rel)).unwrap();
    bytes.chunks(PAGE).map(<[u8]>::to_vec).collect()
}

/// The union of the summaries of the segments from `from` to `to`'s.
fn summarise(pg_wal: &Path, from: Lsn, to: Lsn) -> (BlockUnion, Vec<usize>) {
    let mut u = BlockUnion::new();
    let mut sizes = Vec::new();
    for segno in from.0 / SEG..=to.0 / SEG {
        let name = format!("{:08X}{:08X}{:08X}", 1, segno / 256, segno % 256);
        let data = std::fs::read(pg_wal.join(&name)).unwrap();
        let s = WalSummary::of_segment(Lsn(segno * SEG), &data, &name).unwrap();
        sizes.push(s.encode().unwrap().len());
        let back = WalSummary::decode(&s.encode().unwrap(), &name).unwrap();
        assert_eq!(back, s);
        u.add(s, &name).unwrap();
    }
    (u, sizes)
}

fn changed_pages(before: &[Vec<u8>], after: &[Vec<u8>]) -> BTreeSet<u32> {
    (0..after.len())
        .filter(|&i| before.get(i) != Some(&after[i]))
        .map(|i| i as u32)
        .collect()
}

fn blocks_of(u: &BlockUnion, rel: RelFork) -> BTreeSet<u32> {
    u.blocks
        .get(&rel)
        .map(|b| b.iter().collect())
        .unwrap_or_default()
}

fn run(bindir: &Path) {
    let scratch = Scratch::new();
    let c = Cluster::new(
        &scratch,
        "wb",
        ClusterOpts {
            bindir: Some(bindir),
            // Keep every segment of the test in pg_wal.
            extra_conf: "wal_keep_size = 1GB\n",
            ..Default::default()
        },
    );
    let major = server_major(bindir);
    c.exec(
        "CREATE TABLE t (id int, v text) WITH (fillfactor = 50);
         INSERT INTO t SELECT g, repeat('x', 40) FROM generate_series(1, 20000) g;
         CREATE TABLE w (id int, v text) WITH (fillfactor = 50);
         INSERT INTO w SELECT g, repeat('z', 40) FROM generate_series(1, 20000) g;
         CREATE TABLE v (id int, pad text);
         INSERT INTO v SELECT g, repeat('y', 100) FROM generate_series(1, 5000) g;",
    );
    // Hint bits set now, so reading w later changes none of its pages.
    for sql in [
        "SELECT count(*) FROM w",
        "VACUUM t",
        "VACUUM v",
        "VACUUM w",
        "SELECT count(*) FROM w",
        "CHECKPOINT",
        // Summaries are per segment: the window starts in a fresh one.
        "SELECT pg_switch_wal()",
    ] {
        c.exec(sql);
    }
    let before = pages(&c, "t");
    let w_before = pages(&c, "w");
    let from = lsn(&c, "pg_current_wal_lsn()");
    let db = oid(&c, "SELECT oid FROM pg_database WHERE datname = 'postgres'");
    let t_rel = oid(&c, "pg_relation_filenode('t')");
    let v_rel = oid(&c, "pg_relation_filenode('v')");
    let w_rel = oid(&c, "pg_relation_filenode('w')");

    c.exec(
        "UPDATE t SET v = v || 'changed' WHERE id % 997 = 0;
         UPDATE w SET v = v || 'changed' WHERE id % 2000 = 0;
         DELETE FROM t WHERE id BETWEEN 5000 AND 5100;
         INSERT INTO t SELECT g, 'new' FROM generate_series(20001, 21000) g;
         CREATE INDEX t_id ON t (id);
         DELETE FROM v WHERE id > 1000;",
    );
    c.exec("VACUUM t");
    c.exec("VACUUM v");
    let idx_rel = oid(&c, "pg_relation_filenode('t_id')");
    if major >= 15 {
        c.exec("CREATE DATABASE d_copy STRATEGY FILE_COPY");
        c.exec("CREATE DATABASE d_wal STRATEGY WAL_LOG");
    } else {
        c.exec("CREATE DATABASE d_copy");
    }
    let d_copy = oid(&c, "SELECT oid FROM pg_database WHERE datname = 'd_copy'");
    c.exec("DROP DATABASE d_copy");
    c.exec("CHECKPOINT");
    let after = pages(&c, "t");
    let w_after = pages(&c, "w");
    let to = lsn(&c, "pg_current_wal_lsn()");
    c.exec("SELECT pg_switch_wal()");

    let (u, sizes) = summarise(&c.pgdata.join("pg_wal"), from, to);
    assert!(
        u.end >= to,
        "records accounted for up to {}, not {to}",
        u.end
    );
    let t_main = RelFork {
        spc: 1663,
        db,
        rel: t_rel,
        fork: 0,
    };
    let tracked = blocks_of(&u, t_main);
    let changed = changed_pages(&before, &after);
    assert!(!changed.is_empty());
    let missed: Vec<&u32> = changed.difference(&tracked).collect();
    assert!(
        missed.is_empty(),
        "PostgreSQL {major}: changed pages of t not in WAL: {missed:?}"
    );
    // A table of which a few rows changed: its few pages, not all.
    let w_tracked = blocks_of(
        &u,
        RelFork {
            rel: w_rel,
            ..t_main
        },
    );
    let w_changed = changed_pages(&w_before, &w_after);
    let missed: Vec<&u32> = w_changed.difference(&w_tracked).collect();
    assert!(
        missed.is_empty(),
        "PostgreSQL {major}: changed pages of w not in WAL: {missed:?}"
    );
    assert!(
        !w_changed.is_empty() && w_tracked.len() * 10 < w_after.len(),
        "PostgreSQL {major}: {} pages of w's {} tracked",
        w_tracked.len(),
        w_after.len()
    );

    let events: Vec<&WalEvent> = u.events.iter().map(|e| &e.1).collect();
    assert!(!events.contains(&&WalEvent::Undecodable), "{events:?}");
    let has = |want: &dyn Fn(&WalEvent) -> bool, what: &str| {
        assert!(
            events.iter().any(|e| want(e)),
            "PostgreSQL {major}: no {what} in {events:?}"
        );
    };
    has(
        &|e| matches!(e, WalEvent::RelCreate { rel } if rel.rel == idx_rel && rel.fork == 0),
        "creation of the index",
    );
    has(
        &|e| matches!(e, WalEvent::RelTruncate { rel, blocks, .. } if rel.rel == v_rel && *blocks > 0),
        "truncation of v",
    );
    has(
        &|e| matches!(e, WalEvent::DbCreate { db, copied_from: Some((1663, 1)), .. } if *db == d_copy),
        "file-copy CREATE DATABASE",
    );
    has(
        &|e| matches!(e, WalEvent::DbDrop { db, .. } if *db == d_copy),
        "DROP DATABASE",
    );
    if major >= 15 {
        has(
            &|e| {
                matches!(
                    e,
                    WalEvent::DbCreate {
                        copied_from: None,
                        ..
                    }
                )
            },
            "WAL_LOG CREATE DATABASE",
        );
    }
    // The index was built in the window: its blocks are in WAL too.
    let idx = RelFork {
        rel: idx_rel,
        ..t_main
    };
    assert!(!blocks_of(&u, idx).is_empty());
    eprintln!(
        "PostgreSQL {major}: {} segments, {} blocks tracked ({} of w's {} pages, {} changed), \
         summaries of {sizes:?} bytes",
        sizes.len(),
        u.block_count(),
        w_tracked.len(),
        w_after.len(),
        w_changed.len()
    );
}

#[test]
fn summaries_name_every_changed_block_on_15() {
    run(pg_bindir());
}

#[test]
fn summaries_name_every_changed_block_on_14() {
    run(&pg_bindir_for(14));
}

#[test]
fn summaries_name_every_changed_block_on_18() {
    run(&pg_bindir_for(18));
}
