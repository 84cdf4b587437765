//! Which narrowed rows of a chain of deltas count: only the last narrow
//! value of a row does, and a later upsert or delete replaces the row
//! whole. A reader works it out before it applies the chain, so that a
//! chain of 48 hourly deltas of 61,000 files does not set each file's
//! `last_seq` 48 times.

use crate::error::Result;
use crate::format::catalog_delta::DeltaView;

/// Per table of one delta, which of its narrowed rows to apply.
pub(super) type Keep = Vec<Bits>;

/// A bit per row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    pub(super) fn push(&mut self, bit: bool) {
        if self.len % 64 == 0 {
            self.words.push(0);
        }
        if bit {
            if let Some(w) = self.words.last_mut() {
                *w |= 1 << (self.len % 64);
            }
        }
        self.len += 1;
    }

    /// Bit `i`, or `None` past the end.
    pub(super) fn get(&self, i: usize) -> Option<bool> {
        (i < self.len).then(|| {
            self.words
                .get(i / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1)
        })
    }
}

/// Works out, over a chain of deltas fed newest first, which narrowed rows
/// count: only the last narrow value of a row does, and a later upsert or
/// delete replaces the row whole. Row counts are not changed by narrowed
/// rows, so every delta's check still holds. (A chain of 48 hourly deltas
/// of 61,000 files would otherwise set each file's `last_seq` 48 times.)
/// It remembers a 128-bit hash of each key seen (table and key), not the
/// deltas: a chain is walked twice, one delta in memory at a time.
#[derive(Debug, Default)]
pub(super) struct Collapse {
    seen: std::collections::HashSet<u128>,
}

impl Collapse {
    /// The narrowed rows of `d` to apply, given every delta after it.
    pub(super) fn newer_first(&mut self, d: &DeltaView<'_>) -> Result<Keep> {
        let mut keep = Vec::with_capacity(d.tables.len());
        for t in &d.tables {
            let id = |key: &[u8]| -> u128 {
                let mut h = blake3::Hasher::new();
                h.update(&(t.name.len() as u64).to_le_bytes());
                h.update(t.name.as_bytes());
                h.update(key);
                let mut a = [0u8; 16];
                a.copy_from_slice(&h.finalize().as_bytes()[..16]);
                u128::from_le_bytes(a)
            };
            let mut k = Bits::default();
            t.narrowed.each(|_, key| {
                k.push(!self.seen.contains(&id(key)));
                Ok(())
            })?;
            for rows in [&t.upserts, &t.deletes, &t.narrowed] {
                rows.each(|_, key| {
                    self.seen.insert(id(key));
                    Ok(())
                })?;
            }
            keep.push(k);
        }
        Ok(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::catalog_delta::{CatalogDelta, TableDelta, Value};

    #[test]
    fn a_chain_keeps_each_rows_last_narrow_value_only() {
        let t = |upserts: Vec<i64>, deletes: Vec<i64>, narrowed: Vec<(i64, i64)>| TableDelta {
            name: "v".into(),
            columns: vec!["k".into(), "n".into()],
            key_columns: 1,
            narrow: "n".into(),
            upserts: upserts
                .into_iter()
                .map(|k| vec![Value::Integer(k), Value::Integer(0)])
                .collect(),
            deletes: deletes
                .into_iter()
                .map(|k| vec![Value::Integer(k)])
                .collect(),
            narrowed: narrowed
                .into_iter()
                .map(|(k, n)| vec![Value::Integer(k), Value::Integer(n)])
                .collect(),
            ..Default::default()
        };
        let d = |t| CatalogDelta {
            tables: vec![t],
            ..Default::default()
        };
        // 1 is narrowed thrice, 2 narrowed then upserted, 3 narrowed then
        // deleted, 4 upserted then narrowed, 5 narrowed once.
        let chain = [
            d(t(vec![4], vec![], vec![(1, 1), (2, 1), (3, 1), (5, 1)])),
            d(t(vec![2], vec![3], vec![(1, 2), (4, 2)])),
            d(t(vec![], vec![], vec![(1, 3)])),
        ];
        let bytes: Vec<Vec<u8>> = chain.iter().map(|d| d.encode()).collect();
        let mut collapse = Collapse::default();
        let mut keep: Vec<Keep> = bytes
            .iter()
            .rev()
            .map(|b| {
                collapse
                    .newer_first(&DeltaView::parse(b, "o").unwrap())
                    .unwrap()
            })
            .collect();
        keep.reverse();
        let narrowed = |i: usize| -> Vec<Vec<Value>> {
            let t = &chain[i].tables[0];
            t.narrowed
                .iter()
                .enumerate()
                .filter(|(j, _)| keep[i][0].get(*j).unwrap())
                .map(|(_, r)| r.clone())
                .collect()
        };
        let row = |k, n| vec![Value::Integer(k), Value::Integer(n)];
        assert_eq!(narrowed(0), vec![row(5, 1)]);
        assert_eq!(narrowed(1), vec![row(4, 2)]);
        assert_eq!(narrowed(2), vec![row(1, 3)]);
        // The same key in another table is another row.
        let mut other = chain[2].clone();
        other.tables[0].name = "w".into();
        let b = other.encode();
        let k = collapse
            .newer_first(&DeltaView::parse(&b, "o").unwrap())
            .unwrap();
        let mut one = Bits::default();
        one.push(true);
        assert_eq!(k, vec![one]);
        // Bits past a word.
        let mut b = Bits::default();
        (0..130).for_each(|i| b.push(i % 3 == 0));
        assert!((0..130).all(|i| b.get(i) == Some(i % 3 == 0)));
        assert_eq!(b.get(130), None);
    }
}
