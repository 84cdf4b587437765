//! A backend that seals objects on the way out and opens them on the way in
//! (the envelope is [`crate::format::crypt`]). It wraps any backend, so
//! everything above it sees plaintext objects, sizes and offsets.
//!
//! Only keys that [`keys::is_sealed`] names are sealed: the marker and the key
//! file stay readable before the repository is unlocked. Streaming writers
//! are for packs only and always seal. An object that does not authenticate
//! is [`Error::Corrupt`] naming its key; nothing unauthenticated is returned.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::format::crypt::{
    self, parse_header, plain_len, segment_offset, segments, ObjectCipher, Sealer, HEADER_LEN,
    SEALED_SEGMENT, SEGMENT,
};
use crate::format::keys;
use crate::store::backend::{Backend, ObjectWriter, Source};

/// Seals what it stores in `inner`.
pub struct SealedBackend {
    /// Tells this backend's cached segments from another's.
    id: u64,
    inner: Arc<dyn Backend>,
    sealer: Sealer,
    /// Cipher and stored size of objects read by range: objects are
    /// immutable once named, and a range read should not cost two more.
    headers: Mutex<HashMap<String, (ObjectCipher, u64)>>,
}

const HEADER_CACHE: usize = 4096;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// An opened segment: (backend id, key, segment index, plaintext).
type OpenedSegment = (u64, String, u64, Vec<u8>);

/// Segments a thread keeps opened: enough for the records of small files
/// (a chunk and a block map a few hundred bytes apart) read one after the
/// other.
const RECENT: usize = 16;

thread_local! {
    /// The segments this thread opened last, newest at the back.
    static RECENT_SEGMENTS: RefCell<VecDeque<OpenedSegment>> =
        const { RefCell::new(VecDeque::new()) };
}

fn recent(id: u64, key: &str, index: u64) -> Option<Vec<u8>> {
    RECENT_SEGMENTS.with(|c| {
        c.borrow()
            .iter()
            .rev()
            .find(|(i, k, x, _)| *i == id && k == key && *x == index)
            .map(|e| e.3.clone())
    })
}

fn remember(entry: OpenedSegment) {
    RECENT_SEGMENTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= RECENT {
            c.pop_front();
        }
        c.push_back(entry);
    });
}

fn what(key: &str) -> String {
    format!("object {key}")
}

impl SealedBackend {
    pub fn new(inner: Arc<dyn Backend>, sealer: Sealer) -> Self {
        SealedBackend {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            inner,
            sealer,
            headers: Mutex::new(HashMap::new()),
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut h) = self.headers.lock() {
            h.remove(key);
        }
        RECENT_SEGMENTS.with(|c| c.borrow_mut().clear());
    }

    fn header(&self, key: &str) -> Result<(ObjectCipher, u64)> {
        if let Some(h) = self.headers.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(h);
        }
        let size = self
            .inner
            .size(key)?
            .ok_or_else(|| Error::missing("object", key))?;
        let prefix = parse_header(&self.inner.get_range(key, 0, HEADER_LEN)?, &what(key))?;
        let cipher = self.sealer.object(&prefix);
        if let Ok(mut m) = self.headers.lock() {
            if m.len() >= HEADER_CACHE {
                m.clear();
            }
            m.insert(key.to_string(), (cipher.clone(), size));
        }
        Ok((cipher, size))
    }

    fn read_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let w = what(key);
        let (cipher, size) = self.header(key)?;
        let plain = plain_len(size)
            .ok_or_else(|| Error::corrupt(&w, "truncated (size fits no sealed object)"))?;
        let end = offset + len as u64;
        if end > plain {
            return Err(Error::corrupt(
                &w,
                format!("truncated: cannot read {len} bytes at offset {offset}"),
            ));
        }
        let first = offset / SEGMENT as u64;
        let last = (end - 1) / SEGMENT as u64;
        // Neighbouring records share segments: those this thread opened
        // lately are not read and opened again.
        let mut opened = Vec::new();
        let mut from_seg = first;
        while from_seg <= last {
            match recent(self.id, key, from_seg) {
                Some(p) => opened.extend_from_slice(&p),
                None => break,
            }
            from_seg += 1;
        }
        // Bytes of the first segment before `offset`.
        let lead = (offset - first * SEGMENT as u64) as usize;
        if from_seg > last {
            if opened.len() < lead + len {
                return Err(Error::corrupt(&w, "truncated"));
            }
            opened.truncate(lead + len);
            opened.drain(..lead);
            return Ok(opened);
        }
        let from = segment_offset(from_seg);
        let to = segment_offset(last + 1).min(size);
        let sealed = self.inner.get_range(key, from, (to - from) as usize)?;
        // Cached (whole) segments cover the start of the range; the rest is
        // opened with the skip folded into closing the tags' gaps.
        let cached = opened.len();
        let (skip, want) = if cached == 0 {
            (lead, len)
        } else {
            (0, len - (cached - lead))
        };
        let mut tail = Vec::with_capacity(SEGMENT);
        let more = cipher.open_range(
            from_seg,
            sealed,
            Some(segments(plain)),
            (skip, want),
            Some(&mut tail),
            &w,
        )?;
        remember((self.id, key.to_string(), last, tail));
        if cached == 0 {
            return Ok(more);
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(opened.get(lead..).unwrap_or(&[]));
        out.extend_from_slice(&more);
        if out.len() != len {
            return Err(Error::corrupt(&w, "truncated"));
        }
        Ok(out)
    }
}

impl Backend for SealedBackend {
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.forget(key);
        if keys::is_sealed(key) {
            self.inner.put(key, &self.sealer.seal(data)?)
        } else {
            self.inner.put(key, data)
        }
    }

    fn put_new_from(&self, key: &str, body: &dyn Source) -> Result<bool> {
        if keys::is_sealed(key) {
            let (header, prefix) = crypt::new_header()?;
            let sealed = SealedSource {
                plain: body,
                sealer: &self.sealer,
                header,
                prefix,
            };
            self.inner.put_new_from(key, &sealed)
        } else {
            self.inner.put_new_from(key, body)
        }
    }

    fn writer(&self) -> Result<Box<dyn ObjectWriter>> {
        let (header, prefix) = crypt::new_header()?;
        let mut inner = self.inner.writer()?;
        inner.write_all(&header)?;
        Ok(Box::new(SealedWriter {
            inner,
            cipher: self.sealer.object(&prefix),
            pending: Vec::with_capacity((SEAL_BATCH + 1) * SEGMENT),
            out: Vec::with_capacity(SEALED_SEGMENT),
            index: 0,
            written: 0,
        }))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.inner.get(key)? {
            Some(d) if keys::is_sealed(key) => Ok(Some(self.sealer.open(&d, &what(key))?)),
            other => Ok(other),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if !keys::is_sealed(key) {
            return self.inner.get_range(key, offset, len);
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        match self.read_range(key, offset, len) {
            // A cached header may be of an object since replaced under the
            // same name: read it afresh once before calling it damage.
            Err(Error::Corrupt { .. }) => {
                self.forget(key);
                self.read_range(key, offset, len)
            }
            r => r,
        }
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let r = self.inner.open(key)?;
        if !keys::is_sealed(key) {
            return Ok(r);
        }
        Ok(Box::new(SealedReader {
            inner: r,
            sealer: self.sealer.clone(),
            what: what(key),
            cipher: None,
            index: 0,
            next: Vec::new(),
            plain: Vec::new(),
            pos: 0,
            done: false,
        }))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.inner.size(key)? {
            Some(n) if keys::is_sealed(key) => plain_len(n)
                .map(Some)
                .ok_or_else(|| Error::corrupt(what(key), "truncated (size fits no sealed object)")),
            other => Ok(other),
        }
    }

    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.modified(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // Plaintext sizes, as `size` gives; a damaged size lists as 0 and is
        // for `verify` to report when it reads the object.
        Ok(self
            .inner
            .list(prefix)?
            .into_iter()
            .map(|(k, n)| {
                let n = if keys::is_sealed(&k) {
                    plain_len(n).unwrap_or(0)
                } else {
                    n
                };
                (k, n)
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.forget(key);
        self.inner.delete(key)
    }

    fn delete_many(&self, keys: &[String]) -> Result<()> {
        keys.iter().for_each(|k| self.forget(k));
        self.inner.delete_many(keys)
    }

    fn collect_abandoned(&self, older_than: std::time::Duration) -> Result<u64> {
        self.inner.collect_abandoned(older_than)
    }

    fn request_counts(&self) -> Option<crate::store::backend::RequestCounts> {
        self.inner.request_counts()
    }
}

/// Seals a streamed object segment by segment. A segment is sealed only
/// once more data follows it, so the last one is known at `finish`.
struct SealedWriter {
    inner: Box<dyn ObjectWriter>,
    cipher: ObjectCipher,
    pending: Vec<u8>,
    out: Vec<u8>,
    index: u64,
    written: u64,
}

/// Segments sealed together, in parallel: the pack writer is one thread,
/// and sealing one segment after another there would make it the
/// bottleneck of a backup.
const SEAL_BATCH: usize = 32;

impl SealedWriter {
    /// Seal and write the pending bytes as the final segment.
    fn flush_last(&mut self) -> Result<()> {
        self.out.clear();
        self.cipher
            .seal_segment(self.index, true, &self.pending, &mut self.out)?;
        self.inner.write_all(&self.out)?;
        self.pending.clear();
        self.index += 1;
        Ok(())
    }

    /// Seal and write the first `n` full pending segments (never the last
    /// pending bytes: they may be the final segment).
    fn flush_full(&mut self, n: usize) -> Result<()> {
        use rayon::prelude::*;
        let (cipher, first) = (&self.cipher, self.index);
        let sealed: Vec<Vec<u8>> = self.pending[..n * SEGMENT]
            .par_chunks(SEGMENT)
            .enumerate()
            .map(|(k, seg)| {
                let mut out = Vec::with_capacity(SEALED_SEGMENT);
                cipher.seal_segment(first + k as u64, false, seg, &mut out)?;
                Ok(out)
            })
            .collect::<Result<_>>()?;
        for seg in &sealed {
            self.inner.write_all(seg)?;
        }
        self.pending.drain(..n * SEGMENT);
        self.index += n as u64;
        Ok(())
    }
}

impl ObjectWriter for SealedWriter {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        self.written += buf.len() as u64;
        self.pending.extend_from_slice(buf);
        // Full segments with more bytes after them are not the last one.
        let full = self.pending.len().saturating_sub(1) / SEGMENT;
        if full >= SEAL_BATCH {
            self.flush_full(full)?;
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn finish(mut self: Box<Self>, key: &str) -> Result<()> {
        if !keys::is_sealed(key) {
            return Err(Error::internal(format!(
                "a streamed object must be sealed, not {key}"
            )));
        }
        let full = self.pending.len().saturating_sub(1) / SEGMENT;
        if full > 0 {
            self.flush_full(full)?;
        }
        self.flush_last()?;
        let SealedWriter { inner, .. } = *self;
        inner.finish(key)
    }
}

/// A body sealed as it is read. The header is chosen once, so every
/// reading gives the same bytes (a retried upload compares them).
struct SealedSource<'a> {
    plain: &'a dyn Source,
    sealer: &'a Sealer,
    header: [u8; HEADER_LEN],
    prefix: [u8; crypt::PREFIX_LEN],
}

impl Source for SealedSource<'_> {
    fn len(&self) -> u64 {
        crypt::sealed_len(self.plain.len())
    }

    fn reader(&self) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(SealingReader {
            plain: self.plain.reader()?,
            left: self.plain.len(),
            cipher: self.sealer.object(&self.prefix),
            segments: segments(self.plain.len()),
            index: 0,
            out: self.header.to_vec(),
            pos: 0,
        }))
    }
}

struct SealingReader<'a> {
    plain: Box<dyn Read + Send + 'a>,
    /// Plain bytes still to read.
    left: u64,
    cipher: ObjectCipher,
    segments: u64,
    index: u64,
    out: Vec<u8>,
    pos: usize,
}

impl Read for SealingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.out.len() {
            if self.index == self.segments {
                // A body that goes on past its length would be stored cut
                // short, and sealed as if whole.
                return match read_up_to(&mut self.plain, 1)?.is_empty() {
                    true => Ok(0),
                    false => Err(std::io::Error::other("the body is longer than its length")),
                };
            }
            let want = self.left.min(SEGMENT as u64) as usize;
            let seg = read_up_to(&mut self.plain, want)?;
            if seg.len() < want {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the body ended short of its length",
                ));
            }
            self.left -= want as u64;
            let last = self.index + 1 == self.segments;
            self.out.clear();
            self.pos = 0;
            self.cipher
                .seal_segment(self.index, last, &seg, &mut self.out)
                .map_err(std::io::Error::other)?;
            self.index += 1;
        }
        let n = (self.out.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Opens a sealed object as it streams: each segment is authenticated
/// before any of its bytes are handed out, and the segment after it is read
/// first, to know whether it is the last.
struct SealedReader {
    inner: Box<dyn Read + Send>,
    sealer: Sealer,
    what: String,
    cipher: Option<ObjectCipher>,
    index: u64,
    next: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

fn read_up_to(r: &mut dyn Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

impl SealedReader {
    fn advance(&mut self) -> Result<()> {
        let io = |e| Error::io(&self.what, e);
        if self.cipher.is_none() {
            let h = read_up_to(&mut self.inner, HEADER_LEN).map_err(io)?;
            let p = parse_header(&h, &self.what)?;
            self.next = read_up_to(&mut self.inner, SEALED_SEGMENT).map_err(io)?;
            self.cipher = Some(self.sealer.object(&p));
        }
        let current = std::mem::take(&mut self.next);
        self.next = read_up_to(&mut self.inner, SEALED_SEGMENT).map_err(io)?;
        if current.len() < crypt::TAG_LEN {
            return Err(Error::corrupt(&self.what, "truncated"));
        }
        let last = self.next.is_empty();
        let total = last.then_some(self.index + 1);
        let cipher = self
            .cipher
            .as_ref()
            .ok_or_else(|| Error::internal("sealed reader without a cipher"))?;
        self.plain = cipher.open_segments(self.index, current, total, &self.what)?;
        self.pos = 0;
        self.index += 1;
        self.done = last;
        Ok(())
    }
}

impl Read for SealedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.advance()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        }
        let n = (self.plain.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypt::MasterKey;
    use crate::store::{LocalBackend, Ownership};

    fn backends() -> (tempfile::TempDir, Arc<LocalBackend>, SealedBackend) {
        let d = tempfile::tempdir().unwrap();
        let own = Ownership::for_root(d.path(), false).unwrap();
        let raw = Arc::new(LocalBackend::new(d.path(), own));
        let sealed = SealedBackend::new(raw.clone(), MasterKey::generate().unwrap().keys().sealer);
        (d, raw, sealed)
    }

    #[test]
    fn round_trips_and_hides() {
        let (_d, raw, b) = backends();
        let data: Vec<u8> = b"MARKER-STRING "
            .iter()
            .copied()
            .cycle()
            .take(3 * SEGMENT + 99)
            .collect();
        b.put("manifests/c/x.json.zst", &data).unwrap();
        let stored = raw.get("manifests/c/x.json.zst").unwrap().unwrap();
        assert!(!stored.windows(6).any(|w| w == b"MARKER"));
        assert_eq!(b.get("manifests/c/x.json.zst").unwrap().unwrap(), data);
        // What put sealed whole reads back as a stream too (catalog objects
        // are fetched that way).
        let catalog = keys::catalog_snapshot(2);
        assert!(b.put_new(&catalog, &data).unwrap());
        let mut streamed = Vec::new();
        b.open(&catalog)
            .unwrap()
            .read_to_end(&mut streamed)
            .unwrap();
        assert_eq!(streamed, data);
        assert_eq!(
            b.size("manifests/c/x.json.zst").unwrap(),
            Some(data.len() as u64)
        );
        let mut w = b.writer().unwrap();
        w.write_all(&data[..1000]).unwrap();
        w.write_all(&data[1000..]).unwrap();
        assert_eq!(w.written(), data.len() as u64);
        w.finish("packs/ab/p.pack").unwrap();
        // The third and fifth reads start in the segment the one before ended in.
        for (off, len) in [
            (0, 1),
            (5, SEGMENT),
            (SEGMENT + 7, 50),
            (SEGMENT - 1, 2),
            (SEGMENT + 1, 2 * SEGMENT),
            (3 * SEGMENT, 99),
        ] {
            let got = b.get_range("packs/ab/p.pack", off as u64, len).unwrap();
            assert_eq!(got, &data[off..off + len]);
        }
        // Reads of every shape, each near the one before, as restore does.
        let mut x: u64 = 12345;
        for _ in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let off = (x >> 33) as usize % data.len();
            let len = 1 + (x >> 13) as usize % (2 * SEGMENT + 10);
            let len = len.min(data.len() - off);
            let got = b.get_range("packs/ab/p.pack", off as u64, len).unwrap();
            assert_eq!(got, &data[off..off + len], "{off}+{len}");
        }
        assert!(b
            .get_range("packs/ab/p.pack", 3 * SEGMENT as u64, 100)
            .is_err());
        let mut all = Vec::new();
        b.open("packs/ab/p.pack")
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, data);
        let listed = b.list(keys::PACKS).unwrap();
        assert_eq!(listed, vec![("packs/ab/p.pack".into(), data.len() as u64)]);
        // Unsealed keys pass through.
        b.put(keys::MARKER, b"plain").unwrap();
        assert_eq!(raw.get(keys::MARKER).unwrap().unwrap(), b"plain");
    }

    #[test]
    fn flipped_byte_is_corrupt_everywhere() {
        let (d, _raw, b) = backends();
        let data = vec![7u8; 2 * SEGMENT + 5];
        b.put("wal/c/x.zst", &data).unwrap();
        let path = d.path().join("wal/c/x.zst");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN + SEALED_SEGMENT + 3] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(b.get("wal/c/x.zst"), Err(Error::Corrupt { .. })));
        assert!(b.get_range("wal/c/x.zst", SEGMENT as u64, 10).is_err());
        assert!(b.get_range("wal/c/x.zst", 0, 10).is_ok());
        let mut out = Vec::new();
        assert!(b
            .open("wal/c/x.zst")
            .unwrap()
            .read_to_end(&mut out)
            .is_err());
    }

    #[test]
    fn empty_and_exact_segment_objects() {
        let (_d, _raw, b) = backends();
        for n in [0, SEGMENT, 2 * SEGMENT] {
            let mut w = b.writer().unwrap();
            w.write_all(&vec![1u8; n]).unwrap();
            w.finish("packs/00/e.pack").unwrap();
            let mut all = Vec::new();
            b.open("packs/00/e.pack")
                .unwrap()
                .read_to_end(&mut all)
                .unwrap();
            assert_eq!(all.len(), n);
            assert_eq!(b.get("packs/00/e.pack").unwrap().unwrap().len(), n);
        }
    }

    #[test]
    fn streamed_conditional_puts_seal() {
        let (d, raw, b) = backends();
        for n in [0, 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT] {
            let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
            let path = d.path().join(format!("body-{n}"));
            std::fs::write(&path, &data).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let src = crate::store::backend::FileSource::new(file, &path).unwrap();
            let key = format!("catalog/{n:020}.zst");
            assert!(b.put_new_from(&key, &src).unwrap());
            assert!(!b.put_new_from(&key, &src).unwrap());
            assert_eq!(b.get(&key).unwrap().unwrap(), data, "{n} bytes");
            let stored = raw.get(&key).unwrap().unwrap();
            assert_eq!(stored.len() as u64, crypt::sealed_len(n as u64));
            assert!(!stored.windows(8).any(|w| n > 8 && w == &data[..8]));
            // The same body reads the same each time: a retried upload is
            // recognised by its bytes.
            let sealed = SealedSource {
                plain: &src,
                sealer: &b.sealer,
                header: crypt::new_header().unwrap().0,
                prefix: [3; crypt::PREFIX_LEN],
            };
            let (mut x, mut y) = (Vec::new(), Vec::new());
            sealed.reader().unwrap().read_to_end(&mut x).unwrap();
            sealed.reader().unwrap().read_to_end(&mut y).unwrap();
            assert_eq!((x.len() as u64, &x), (sealed.len(), &y));
        }
    }

    #[test]
    fn a_sealed_body_shorter_than_promised_stores_nothing() {
        let (_d, raw, b) = backends();
        let lying = crate::store::backend::tests::Lying(3 * SEGMENT as u64, vec![7u8; SEGMENT + 5]);
        assert!(b.put_new_from("catalog/x.zst", &lying).is_err());
        assert!(raw.list("catalog/").unwrap().is_empty());
    }
}
