//! The storage seam's contract: every promise of the `Backend` trait
//! (`src/store/backend.rs`), written once and run against every backend and
//! decorator: the local directory, S3 (the test server, `objstore`), the
//! sealing backend of an encrypted repository over each, and the test
//! decorators (the fault injector, unarmed and in its dying-after mode; the
//! hook runner).
//!
//! Each backend is one line of [`backends!`]: a module with one test per
//! promise (`store_contract::s3::list_is_lexical_below_a_prefix`). Each
//! promise is one function here and one name in [`promises!`].
//!
//! Keys are under the prefixes the sealing backend seals (`packs/`, `wal/`,
//! `manifests/`, `catalog/`), so that it is tested sealing, and streamed
//! objects are packs (the only streamed objects it takes).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgstrata::testing::{
    Backend, FaultBackend, FileSource, HookBackend, LocalBackend, MasterKey, Ownership,
    SealedBackend, Source, S3_BUFFER_MAX,
};
use pgstrata::Error;

use crate::objstore;

/// A backend under test, with what must live as long as it.
pub struct Subject {
    pub store: Arc<dyn Backend>,
    _dir: Option<tempfile::TempDir>,
}

fn local() -> Subject {
    let dir = tempfile::tempdir().expect("tempdir");
    let own = Ownership::for_root(dir.path(), false).expect("ownership");
    Subject {
        store: Arc::new(LocalBackend::new(dir.path(), own)),
        _dir: Some(dir),
    }
}

/// A fresh prefix of the test server's bucket.
fn s3() -> Subject {
    Subject {
        store: Arc::new(objstore::backend(&objstore::new_url("contract"))),
        _dir: None,
    }
}

/// `inner` behind a decorator.
fn wrap(inner: Subject, make: impl FnOnce(Arc<dyn Backend>) -> Arc<dyn Backend>) -> Subject {
    Subject {
        store: make(inner.store),
        _dir: inner._dir,
    }
}

fn sealed(inner: Subject) -> Subject {
    let sealer = MasterKey::generate().expect("key").keys().sealer;
    wrap(inner, |b| Arc::new(SealedBackend::new(b, sealer)))
}

/// The fault injector with a budget no test reaches.
fn fault(inner: Subject) -> Subject {
    wrap(inner, |b| Arc::new(FaultBackend::new(b, i64::MAX)))
}

fn dying(inner: Subject) -> Subject {
    wrap(inner, |b| Arc::new(FaultBackend::dying_after(b, i64::MAX)))
}

/// The hook runner with a hook that never fires.
fn hook(inner: Subject) -> Subject {
    wrap(inner, |b| Arc::new(HookBackend::new(b, "never/", || ())))
}

/// One test per promise, for the backend `subject()` makes.
macro_rules! promises {
    ($($promise:ident),+ $(,)?) => {
        $(
            #[test]
            fn $promise() {
                super::$promise(&subject())
            }
        )+
    };
}

/// One module per backend under test: `name => how to make one`.
macro_rules! backends {
    ($($name:ident => $make:expr;)+) => {
        $(
            mod $name {
                use super::*;

                fn subject() -> Subject {
                    $make
                }

                promises!(
                    put_then_get_and_put_replaces,
                    an_empty_object_is_an_object,
                    a_missing_object_is_none_or_missing_object,
                    put_new_creates_only_once,
                    put_new_from_streams_a_source,
                    a_body_of_another_length_than_promised_stores_nothing,
                    a_body_that_breaks_off_stores_nothing,
                    one_of_racing_put_news_wins_whole,
                    racing_puts_leave_one_whole_object,
                    a_streamed_object_is_visible_only_once_finished,
                    an_abandoned_stream_leaves_nothing,
                    a_large_streamed_object_reads_back_in_every_way,
                    ranges_read_exactly_and_a_short_object_is_an_error,
                    several_ranges_come_in_the_order_asked,
                    open_streams_the_whole_object,
                    size_and_modified,
                    list_is_lexical_below_a_prefix,
                    delete_removes_and_a_missing_object_is_no_error,
                    collect_abandoned_leaves_finished_objects,
                    a_write_that_fails_leaves_the_old_object_or_the_whole_new_one,
                );
            }
        )+
    };
}

backends! {
    local => local();
    s3 => s3();
    sealed_local => sealed(local());
    sealed_s3 => sealed(s3());
    fault_local => fault(local());
    fault_s3 => fault(s3());
    dying_local => dying(local());
    hook_local => hook(local());
}

/// `n` bytes that differ with `seed` and do not repeat within a segment.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

fn is_missing<T: std::fmt::Debug>(r: pgstrata::Result<T>) -> bool {
    matches!(r, Err(Error::MissingObject { .. }))
}

/// An error that names `key`.
fn fails_naming<T: std::fmt::Debug>(r: pgstrata::Result<T>, key: &str) {
    match r {
        Ok(v) => panic!("{key}: expected an error, got {v:?}"),
        Err(e) => assert!(e.to_string().contains(key), "{e} does not name {key}"),
    }
}

fn read_all(b: &dyn Backend, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    b.open(key)
        .expect("open")
        .read_to_end(&mut out)
        .expect("read");
    out
}

fn keys_below(b: &dyn Backend, prefix: &str) -> Vec<String> {
    b.list(prefix)
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn put_then_get_and_put_replaces(s: &Subject) {
    let b = &*s.store;
    let k = "wal/c/000000010000000000000001";
    let (first, second) = (bytes(70_000, 1), bytes(50_001, 2));
    b.put(k, &first).unwrap();
    assert_eq!(b.get(k).unwrap(), Some(first.clone()));
    // Range reads before the replacement fill any cache of ranges.
    assert_eq!(b.get_range(k, 40_000, 10).unwrap(), &first[40_000..40_010]);
    b.put(k, &second).unwrap();
    assert_eq!(b.get(k).unwrap(), Some(second.clone()));
    assert_eq!(b.get_range(k, 40_000, 10).unwrap(), &second[40_000..40_010]);
    assert_eq!(b.size(k).unwrap(), Some(second.len() as u64));
    assert_eq!(read_all(b, k), second);
    // A key the sealing backend leaves in the clear.
    b.put("locks/l", b"plain").unwrap();
    assert_eq!(b.get("locks/l").unwrap().as_deref(), Some(&b"plain"[..]));
}

fn an_empty_object_is_an_object(s: &Subject) {
    let b = &*s.store;
    let k = "manifests/c/empty.json.zst";
    b.put(k, b"").unwrap();
    assert_eq!(b.get(k).unwrap(), Some(Vec::new()));
    assert_eq!(b.size(k).unwrap(), Some(0));
    assert!(read_all(b, k).is_empty());
    assert_eq!(b.get_range(k, 0, 0).unwrap(), Vec::<u8>::new());
    assert_eq!(b.list("manifests/").unwrap(), vec![(k.to_string(), 0)]);
    assert!(!b.put_new(k, b"x").unwrap(), "an empty object is there");
}

fn a_missing_object_is_none_or_missing_object(s: &Subject) {
    let b = &*s.store;
    let k = "wal/c/nope";
    assert_eq!(b.get(k).unwrap(), None);
    assert_eq!(b.size(k).unwrap(), None);
    assert_eq!(b.modified(k).unwrap(), None);
    assert!(is_missing(b.get_range(k, 0, 1)));
    assert!(is_missing(b.get_range_into(k, 0, 1, &mut Vec::new())));
    assert!(is_missing(b.open(k).map(|_| ())));
    let ranges = b.get_ranges(k, &[(0, 1), (5, 2)]);
    assert_eq!(ranges.len(), 2);
    assert!(ranges.into_iter().all(is_missing));
    assert!(b.list("wal/").unwrap().is_empty());
    assert!(b.list("").unwrap().is_empty());
}

fn put_new_creates_only_once(s: &Subject) {
    let b = &*s.store;
    let k = "catalog/00000000000000000001.zst";
    assert!(b.put_new(k, b"mine").unwrap());
    assert!(!b.put_new(k, b"theirs, and longer").unwrap());
    assert!(!b.put_new(k, b"mine").unwrap());
    assert_eq!(b.get(k).unwrap().as_deref(), Some(&b"mine"[..]));
    // put replaces what put_new made; put_new still finds it there.
    b.put(k, b"replaced").unwrap();
    assert!(!b.put_new(k, b"again").unwrap());
    assert_eq!(b.get(k).unwrap().as_deref(), Some(&b"replaced"[..]));
}

fn put_new_from_streams_a_source(s: &Subject) {
    let b = &*s.store;
    let dir = tempfile::tempdir().unwrap();
    for n in [0, 1, 16 * 1024, 16 * 1024 + 1, 200_000] {
        let data = bytes(n, n as u32);
        let path = dir.path().join(format!("body-{n}"));
        std::fs::write(&path, &data).unwrap();
        let src = FileSource::new(std::fs::File::open(&path).unwrap(), &path).unwrap();
        let k = format!("catalog/{n:020}.zst");
        assert!(b.put_new_from(&k, &src).unwrap(), "{k}");
        assert!(!b.put_new_from(&k, &src).unwrap(), "{k}");
        assert!(!b.put_new_from(&k, &bytes(n + 1, 9)).unwrap(), "{k}");
        assert_eq!(b.get(&k).unwrap(), Some(data), "{k}");
    }
}

/// A body whose length is not what it says.
struct Lying(u64, Vec<u8>);

impl Source for Lying {
    fn len(&self) -> u64 {
        self.0
    }
    fn reader(&self) -> pgstrata::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(self.1.as_slice()))
    }
}

fn a_body_of_another_length_than_promised_stores_nothing(s: &Subject) {
    let b = &*s.store;
    let k = "catalog/x.zst";
    for (len, n) in [(100_000, 60_000), (10, 5), (3, 5)] {
        let r = b.put_new_from(k, &Lying(len, bytes(n, 3)));
        assert!(r.is_err(), "{n} bytes said to be {len}: {r:?}");
        assert_eq!(b.get(k).unwrap(), None, "{n} bytes said to be {len}");
        assert!(b.list("catalog/").unwrap().is_empty());
    }
    assert!(b.put_new_from(k, &Lying(5, bytes(5, 3))).unwrap());
    assert_eq!(b.get(k).unwrap(), Some(bytes(5, 3)));
}

/// A body whose reading fails after `good` bytes, as a file on a failing
/// disk does.
struct Breaking(usize);

impl Source for Breaking {
    fn len(&self) -> u64 {
        2 * self.0 as u64
    }
    fn reader(&self) -> pgstrata::Result<Box<dyn Read + Send + '_>> {
        let bad = std::io::Error::other("disk on fire (injected)");
        let failing = FailAfter(Some(bad));
        Ok(Box::new(std::io::Read::chain(
            std::io::Cursor::new(bytes(self.0, 4)),
            failing,
        )))
    }
}

struct FailAfter(Option<std::io::Error>);

impl Read for FailAfter {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| std::io::Error::other("still on fire")))
    }
}

fn a_body_that_breaks_off_stores_nothing(s: &Subject) {
    let b = &*s.store;
    let k = "wal/c/broken";
    for good in [1, 1000, 100_000] {
        assert!(b.put_new_from(k, &Breaking(good)).is_err(), "{good}");
        assert_eq!(b.get(k).unwrap(), None, "{good}");
        assert!(b.list("wal/").unwrap().is_empty(), "{good}");
    }
}

const RACERS: u32 = 8;

fn one_of_racing_put_news_wins_whole(s: &Subject) {
    let k = "manifests/c/raced.json.zst";
    let won: Vec<u32> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..RACERS)
            .map(|i| {
                let b = s.store.clone();
                scope.spawn(move || b.put_new(k, &bytes(30_000 + i as usize, i)).unwrap())
            })
            .collect();
        (0..RACERS)
            .zip(threads)
            .filter_map(|(i, t)| t.join().unwrap().then_some(i))
            .collect()
    });
    assert_eq!(won.len(), 1, "winners: {won:?}");
    assert_eq!(
        s.store.get(k).unwrap(),
        Some(bytes(30_000 + won[0] as usize, won[0]))
    );
}

fn racing_puts_leave_one_whole_object(s: &Subject) {
    let k = "manifests/c/overwritten.json.zst";
    std::thread::scope(|scope| {
        for i in 0..RACERS {
            let b = s.store.clone();
            scope.spawn(move || b.put(k, &bytes(30_000 + i as usize, i)).unwrap());
        }
    });
    let got = s.store.get(k).unwrap().unwrap();
    let i = (got.len() - 30_000) as u32;
    assert!(i < RACERS, "{} bytes", got.len());
    assert_eq!(got, bytes(30_000 + i as usize, i), "a mix of writes");
}

fn a_streamed_object_is_visible_only_once_finished(s: &Subject) {
    let b = &*s.store;
    let k = "packs/ab/streamed.pack";
    let data = bytes(100_003, 5);
    let mut w = b.writer().unwrap();
    for piece in data.chunks(7_919) {
        w.write_all(piece).unwrap();
    }
    assert_eq!(w.written(), data.len() as u64);
    assert_eq!(b.get(k).unwrap(), None);
    assert!(b.list("packs/").unwrap().is_empty());
    w.finish(k).unwrap();
    assert_eq!(b.get(k).unwrap(), Some(data.clone()));
    assert_eq!(b.size(k).unwrap(), Some(data.len() as u64));
    assert_eq!(
        b.list("packs/").unwrap(),
        vec![(k.into(), data.len() as u64)]
    );
    // Two writers at once are two objects.
    let (mut w1, mut w2) = (b.writer().unwrap(), b.writer().unwrap());
    w1.write_all(b"one").unwrap();
    w2.write_all(b"two").unwrap();
    w2.finish("packs/cd/2.pack").unwrap();
    w1.finish("packs/cd/1.pack").unwrap();
    assert_eq!(
        b.get("packs/cd/1.pack").unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(
        b.get("packs/cd/2.pack").unwrap().as_deref(),
        Some(&b"two"[..])
    );
}

fn an_abandoned_stream_leaves_nothing(s: &Subject) {
    let b = &*s.store;
    let mut w = b.writer().unwrap();
    w.write_all(&bytes(50_000, 6)).unwrap();
    drop(w);
    assert!(b.list("packs/").unwrap().is_empty());
    let mut w = b.writer().unwrap();
    w.write_all(b"whole").unwrap();
    w.finish("packs/ab/after.pack").unwrap();
    assert_eq!(keys_below(b, "packs/"), ["packs/ab/after.pack"]);
}

/// Past S3's in-memory buffer (a multipart upload) and across its read
/// windows.
fn a_large_streamed_object_reads_back_in_every_way(s: &Subject) {
    const MIB: usize = 1 << 20;
    let b = &*s.store;
    let k = "packs/ef/large.pack";
    let data = bytes(S3_BUFFER_MAX + 3 * MIB + 17, 7);
    let mut w = b.writer().unwrap();
    for piece in data.chunks(MIB + 1) {
        w.write_all(piece).unwrap();
    }
    w.finish(k).unwrap();
    assert_eq!(b.size(k).unwrap(), Some(data.len() as u64));
    assert_eq!(keys_below(b, ""), [k]);
    for (off, len) in [
        (0, 10),
        (4 * MIB - 5, 10),
        (8 * MIB - 1, 2),
        (4 * MIB - 100, 4 * MIB + 200),
        (data.len() - 3, 3),
    ] {
        let got = b.get_range(k, off as u64, len).unwrap();
        assert!(got == data[off..off + len], "{off}+{len}");
    }
    assert!(read_all(b, k) == data, "streamed back");
    assert!(b.get(k).unwrap() == Some(data), "read whole");
}

fn ranges_read_exactly_and_a_short_object_is_an_error(s: &Subject) {
    let b = &*s.store;
    let k = "packs/00/ranges.pack";
    let data = bytes(3 * 16 * 1024 + 99, 8);
    let n = data.len();
    b.put(k, &data).unwrap();
    for (off, len) in [(0, 1), (5, 100), (16 * 1024 - 1, 2), (0, n), (n - 10, 10)] {
        assert_eq!(
            b.get_range(k, off as u64, len).unwrap(),
            &data[off..off + len]
        );
    }
    for (off, len) in [(n - 10, 11), (n, 1), (n + 5, 1)] {
        fails_naming(b.get_range(k, off as u64, len), k);
    }
    let mut out = b"old contents, longer than what replaces them".to_vec();
    b.get_range_into(k, 7, 3, &mut out).unwrap();
    assert_eq!(out, &data[7..10]);
    fails_naming(b.get_range_into(k, n as u64 - 1, 2, &mut out), k);
}

fn several_ranges_come_in_the_order_asked(s: &Subject) {
    let b = &*s.store;
    let k = "packs/00/several.pack";
    let data = bytes(40_000, 9);
    b.put(k, &data).unwrap();
    let got = b.get_ranges(k, &[(30_000, 5), (10, 3), (39_999, 2), (0, 40_000)]);
    assert_eq!(got.len(), 4);
    let mut got = got.into_iter();
    assert_eq!(got.next().unwrap().unwrap(), &data[30_000..30_005]);
    assert_eq!(got.next().unwrap().unwrap(), &data[10..13]);
    fails_naming(got.next().unwrap(), k);
    assert_eq!(got.next().unwrap().unwrap(), data);
    assert!(b.get_ranges(k, &[]).is_empty());
}

fn open_streams_the_whole_object(s: &Subject) {
    let b = &*s.store;
    for n in [1, 16 * 1024, 16 * 1024 + 1, 300_000] {
        let k = format!("wal/c/{n:024}");
        let data = bytes(n, 10);
        b.put(&k, &data).unwrap();
        let mut r = b.open(&k).unwrap();
        // Small reads, as a decoder makes them.
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match r.read(&mut buf).unwrap() {
                0 => break,
                m => got.extend_from_slice(&buf[..m]),
            }
        }
        assert!(got == data, "{k}");
    }
}

fn size_and_modified(s: &Subject) {
    let b = &*s.store;
    let k = "manifests/c/sized.json.zst";
    // Stores keep whole seconds.
    let before = SystemTime::now() - Duration::from_secs(2);
    b.put(k, &bytes(12_345, 11)).unwrap();
    let after = SystemTime::now() + Duration::from_secs(2);
    assert_eq!(b.size(k).unwrap(), Some(12_345));
    let t = b.modified(k).unwrap().expect("modified");
    assert!(
        before <= t && t <= after,
        "{t:?} not between {before:?} and {after:?}"
    );
}

fn list_is_lexical_below_a_prefix(s: &Subject) {
    let b = &*s.store;
    let objects = [
        ("wal/a/2", 2),
        ("wal/a/1", 1),
        ("wal/a/sub/4", 4),
        ("wal/a-b/3", 3),
        ("wal/a.b/3", 3),
        ("wal/ab/5", 5),
        ("wal/a~2/6", 6),
        ("packs/00/x.pack", 7),
        ("locks/l", 8),
    ];
    for (k, n) in objects {
        b.put(k, &bytes(n, n as u32)).unwrap();
    }
    let below = |prefix: &str| {
        let mut v: Vec<(String, u64)> = objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, n)| (k.to_string(), *n as u64))
            .collect();
        v.sort();
        v
    };
    for prefix in ["", "wal/", "wal/a/", "wal/a/sub/", "packs/", "locks/"] {
        assert_eq!(b.list(prefix).unwrap(), below(prefix), "below {prefix:?}");
    }
    assert!(b.list("nothing/").unwrap().is_empty());
    assert!(b.list("wal/a/sub/4/").unwrap().is_empty());
}

fn delete_removes_and_a_missing_object_is_no_error(s: &Subject) {
    let b = &*s.store;
    let keys: Vec<String> = (0..5).map(|i| format!("wal/d/{i}")).collect();
    for k in &keys {
        b.put(k, k.as_bytes()).unwrap();
    }
    b.delete(&keys[0]).unwrap();
    b.delete(&keys[0]).unwrap();
    b.delete("wal/d/never").unwrap();
    assert_eq!(b.get(&keys[0]).unwrap(), None);
    assert_eq!(b.size(&keys[0]).unwrap(), None);
    assert!(is_missing(b.get_range(&keys[0], 0, 1)));
    assert_eq!(keys_below(b, "wal/"), keys[1..]);
    let many = [&keys[1..4], &["wal/d/never".to_string(), keys[0].clone()]].concat();
    b.delete_many(&many).unwrap();
    assert_eq!(keys_below(b, "wal/"), [keys[4].clone()]);
    b.delete_many(&[]).unwrap();
    // A deleted name can be created anew.
    assert!(b.put_new(&keys[0], b"again").unwrap());
}

fn collect_abandoned_leaves_finished_objects(s: &Subject) {
    let b = &*s.store;
    b.put("packs/00/kept.pack", b"kept").unwrap();
    let w = b.writer().unwrap();
    b.collect_abandoned(Duration::ZERO).unwrap();
    drop(w);
    b.collect_abandoned(Duration::ZERO).unwrap();
    assert_eq!(keys_below(b, ""), ["packs/00/kept.pack"]);
    assert_eq!(
        b.get("packs/00/kept.pack").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}

/// A process that dies before a write takes effect leaves the old object
/// (or none); one that dies right after leaves the whole new one. The
/// fault injector plays both deaths over the backend under test.
fn a_write_that_fails_leaves_the_old_object_or_the_whole_new_one(s: &Subject) {
    let b = &*s.store;
    let (k, new) = ("manifests/c/m.json.zst", bytes(40_000, 12));
    b.put(k, b"old").unwrap();

    let before = FaultBackend::new(s.store.clone(), 0);
    assert!(before.put(k, &new).is_err());
    assert!(before.put_new("wal/c/n", &new).is_err());
    let mut w = before.writer().unwrap();
    w.write_all(&new).unwrap();
    assert!(w.finish("packs/00/w.pack").is_err());
    assert!(before.delete(k).is_err());
    assert_eq!(b.get(k).unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(keys_below(b, ""), [k]);

    for (i, op) in ["put", "put_new", "finish", "delete"]
        .into_iter()
        .enumerate()
    {
        let after = FaultBackend::dying_after(s.store.clone(), 0);
        let r = match op {
            "put" => after.put(k, &new),
            "put_new" => after.put_new("wal/c/n", &new).map(|_| ()),
            "finish" => {
                let mut w = after.writer().unwrap();
                w.write_all(&new).unwrap();
                w.finish("packs/00/w.pack")
            }
            _ => after.delete("wal/c/n"),
        };
        assert!(r.is_err(), "{op}");
        // The budget is spent: the next write fails and does nothing.
        assert!(after.put("wal/c/later", b"x").is_err(), "{op}");
        let want = [
            vec![k],
            vec![k, "wal/c/n"],
            vec![k, "packs/00/w.pack", "wal/c/n"],
            vec![k, "packs/00/w.pack"],
        ];
        assert_eq!(keys_below(b, ""), want[i], "after {op}");
    }
    assert_eq!(b.get(k).unwrap(), Some(new.clone()));
    assert_eq!(b.get("packs/00/w.pack").unwrap(), Some(new));
}
