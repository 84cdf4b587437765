//! BLAKE3 of a buffer that may end in a long run of zeros, without hashing
//! the zeros each time.
//!
//! A WAL segment closed early (`pg_switch_wal`, `archive_timeout`, every
//! backup's stop) is mostly a zero tail, and every archived segment is
//! hashed on push and again on every read and verify. BLAKE3 is a tree:
//! the chaining value of a subtree depends only on its bytes and its
//! offset, so the value of an all-zero subtree at a given offset is the
//! same in every such segment. The input is hashed in pieces of [`PIECE`]
//! bytes, each a subtree of its own; the values of all-zero pieces are
//! computed once per process and kept, so only the pieces with data are
//! hashed each time. The result is exactly `blake3::hash` (tests compare the
//! two).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::Hasher;

/// All-zero subtrees this long or shorter are hashed, not looked up.
const LEAF: u64 = 64 << 10;

static ZEROS: [u8; LEAF as usize] = [0; LEAF as usize];

/// The chaining values of all-zero subtrees longer than [`LEAF`], by
/// (offset, length). Bounded: a piece's offsets and the halves of pieces and
/// of short last pieces (under 200 entries for 16 MiB segments).
fn memo() -> &'static Mutex<HashMap<(u64, u64), ChainingValue>> {
    static MEMO: OnceLock<Mutex<HashMap<(u64, u64), ChainingValue>>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// BLAKE3 of `data`, the same as `blake3::hash(data)`: hashed as
/// [`Pieces`], so a zero tail costs a lookup per piece.
pub(crate) fn hash(data: &[u8]) -> blake3::Hash {
    if data.len() <= PIECE {
        return blake3::hash(data);
    }
    let mut p = Pieces::default();
    data.chunks(PIECE).for_each(|piece| p.add(piece));
    p.finish()
}

/// Bytes per piece fed to [`Pieces`].
pub(crate) const PIECE: usize = 256 << 10;

/// BLAKE3 of a stream fed a piece at a time: every piece [`PIECE`] bytes but
/// the last. Each piece is a subtree of its own, so only its chaining value
/// is kept, and an all-zero piece costs a lookup.
#[derive(Default)]
pub(crate) struct Pieces {
    /// The first piece, kept until a second shows it is not the whole input
    /// (a one-piece input is hashed as a root).
    first: Option<Vec<u8>>,
    cvs: Vec<ChainingValue>,
    len: u64,
    misfed: bool,
}

impl Pieces {
    /// Add the next piece. An empty piece is nothing; a piece after a short
    /// one is a misuse, and makes the hash one that matches nothing.
    pub(crate) fn add(&mut self, piece: &[u8]) {
        if piece.is_empty() {
            return;
        }
        if self.len % PIECE as u64 != 0 || self.misfed {
            debug_assert!(false, "a piece after a short one");
            self.misfed = true;
            return;
        }
        if self.len == 0 && self.first.is_none() {
            self.first = Some(piece.to_vec());
            self.len = piece.len() as u64;
            return;
        }
        if let Some(first) = self.first.take() {
            self.cvs.push(piece_cv(&first, 0));
        }
        self.cvs.push(piece_cv(piece, self.len));
        self.len += piece.len() as u64;
    }

    /// Add a piece of `n` zeros (as [`Pieces::add`] would), without a
    /// buffer of them: a lookup.
    pub(crate) fn add_zeros(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if self.len == 0 || self.len % PIECE as u64 != 0 || self.misfed {
            // A first piece may be the whole input, hashed as a root.
            self.add(&vec![0u8; n]);
            return;
        }
        if let Some(first) = self.first.take() {
            self.cvs.push(piece_cv(&first, 0));
        }
        self.cvs.push(zero_subtree(self.len, n as u64));
        self.len += n as u64;
    }

    /// Bytes added so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.len
    }

    pub(crate) fn finish(self) -> blake3::Hash {
        if self.misfed {
            return blake3::hash(b"pieces fed out of order");
        }
        if let Some(first) = &self.first {
            return blake3::hash(first);
        }
        if self.cvs.is_empty() {
            return blake3::hash(&[]);
        }
        let left = left_subtree_len(self.len);
        let split = (left / PIECE as u64) as usize;
        merge_subtrees_root(
            &tree(&self.cvs[..split], left),
            &tree(&self.cvs[split..], self.len - left),
            Mode::Hash,
        )
    }
}

fn piece_cv(piece: &[u8], offset: u64) -> ChainingValue {
    if is_zero(piece) {
        zero_subtree(offset, piece.len() as u64)
    } else {
        Hasher::new()
            .set_input_offset(offset)
            .update(piece)
            .finalize_non_root()
    }
}

/// The chaining value of the subtree of `len` bytes whose pieces have `cvs`.
fn tree(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_subtree_len(len);
    let split = (left / PIECE as u64) as usize;
    merge_subtrees_non_root(
        &tree(&cvs[..split], left),
        &tree(&cvs[split..], len - left),
        Mode::Hash,
    )
}

/// Is `data` all zeros?
pub(crate) fn is_zero(data: &[u8]) -> bool {
    data.chunks(LEAF as usize).all(|c| c == &ZEROS[..c.len()])
}

fn zero_subtree(offset: u64, len: u64) -> ChainingValue {
    if len <= LEAF {
        return Hasher::new()
            .set_input_offset(offset)
            .update(&ZEROS[..len as usize])
            .finalize_non_root();
    }
    // A poisoned lock only means another thread panicked mid-insert of a
    // value that is correct whenever present.
    let known = memo()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(offset, len))
        .copied();
    if let Some(cv) = known {
        return cv;
    }
    let left = left_subtree_len(len);
    let cv = merge_subtrees_non_root(
        &zero_subtree(offset, left),
        &zero_subtree(offset + left, len - left),
        Mode::Hash,
    );
    memo()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((offset, len), cv);
    cv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_blake3_for_any_tail() {
        let seg = 16usize << 20;
        let mut data = vec![0u8; seg];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        // Data ending at odd places: mid-chunk, on a chunk boundary, on a
        // leaf boundary, right before a subtree boundary, nothing, all.
        for cut in [
            0,
            1,
            1000,
            1024,
            LEAF as usize - 1,
            LEAF as usize,
            3 << 20,
            (8 << 20) - 1,
            8 << 20,
            (8 << 20) + 4097,
            seg - PIECE,
            seg - PIECE + 1,
            seg,
        ] {
            let mut d = data.clone();
            d[cut..].fill(0);
            assert_eq!(hash(&d), blake3::hash(&d), "cut at {cut}");
        }
        // Lengths that are not a power of two, and short ones.
        for len in [0, 1, 1024, 1025, 300_000, (5 << 20) + 17] {
            let mut d = data[..len].to_vec();
            d[len / 3..].fill(0);
            assert_eq!(hash(&d), blake3::hash(&d), "len {len}");
            // A shorter input, its zeros starting later.
            assert_eq!(
                hash(&d[..len / 2]),
                blake3::hash(&d[..len / 2]),
                "len {len}"
            );
        }
    }

    #[test]
    fn pieces_equal_blake3() {
        let mut data = vec![0u8; (16 << 20) + 1000];
        for (i, b) in data.iter_mut().enumerate().take(3 << 20) {
            *b = (i % 253) as u8 | 1;
        }
        data[(9 << 20) + 3] = 5;
        for len in [
            0,
            1,
            PIECE - 1,
            PIECE,
            PIECE + 1,
            2 * PIECE,
            5 * PIECE + 77,
            16 << 20,
            (16 << 20) + 1000,
        ] {
            let d = &data[..len];
            let mut p = Pieces::default();
            for piece in d.chunks(PIECE) {
                p.add(piece);
            }
            assert_eq!(p.bytes(), len as u64);
            assert_eq!(p.finish(), blake3::hash(d), "len {len}");
            // Zero pieces given as counts, not bytes.
            let mut p = Pieces::default();
            for piece in d.chunks(PIECE) {
                if is_zero(piece) {
                    p.add_zeros(piece.len());
                } else {
                    p.add(piece);
                }
            }
            assert_eq!(p.finish(), blake3::hash(d), "len {len}, zeros as counts");
        }
        let mut p = Pieces::default();
        p.add_zeros(PIECE);
        p.add_zeros(7);
        assert_eq!(p.finish(), blake3::hash(&[0u8; PIECE + 7]));
    }

    #[test]
    fn zero_tail() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 9000]));
        let mut d = vec![0u8; 9000];
        d[4500] = 1;
        assert!(is_zero(&d[4501..]) && !is_zero(&d[4500..]));
        d[8999] = 2;
        assert!(!is_zero(&d[4501..]));
        assert!(is_zero(&[0; 100_000]) && is_zero(&[]));
        assert!(!is_zero(&d));
    }
}
