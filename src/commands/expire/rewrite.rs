//! Step 3 of `expire`'s apply: rewriting mostly dead packs. Live chunks
//! are streamed out of each old pack, verified, into new packs; a new pack
//! is sealed (durable) before any index row points at it, and an old pack is
//! deleted only after the transaction that moves its rows away commits.

use crate::catalog::{Catalog, PackChunk, PackUsage};
use crate::error::{Error, Result};
use crate::format::keys;
use crate::format::pack::RecordHeader;
use crate::format::PackId;
use crate::repo::{PackWriter, SealedPack, Stored};

/// Size of the packs `expire` rewrites into (a backup's default).
const REWRITE_PACK: u64 = 32 << 20;

/// Copy the live chunks (each verified) of `packs` into new packs of up to
/// [`REWRITE_PACK`] bytes, and forget the `dead` packs. New packs are sealed
/// (durable) as they fill; their index rows move in one transaction per
/// [`MOVE_BATCH`] chunks (and the last one also forgets `dead`), after which
/// the old packs it emptied are deleted. A crash before a commit leaves
/// sealed new packs no row names: garbage the next expire collects. Many
/// small, mostly dead packs (an hourly incr's) become few. Returns the old
/// and the new packs' bytes.
pub(super) fn rewrite_packs(
    deleter: &super::PackDeleter<'_>,
    stored: &Stored,
    cat: &mut Catalog,
    packs: &[&PackUsage],
    dead: &[PackId],
) -> Result<(u64, u64)> {
    let (mut old_bytes, mut new_bytes) = (0u64, 0u64);
    let mut w: Option<PackWriter> = None;
    // Old packs whose live chunks are in `w`.
    let mut emptied: Vec<PackId> = Vec::new();
    // Sealed, not yet indexed; and old packs that had nothing live.
    let mut moves: Vec<(Vec<PackId>, SealedPack)> = Vec::new();
    let mut nothing_live: Vec<PackId> = Vec::new();
    let mut seal = |w: &mut Option<PackWriter>,
                    emptied: &mut Vec<PackId>,
                    moves: &mut Vec<_>,
                    nothing_live: &mut Vec<PackId>| {
        match w.take() {
            Some(p) => {
                let sealed = p.seal()?;
                new_bytes += sealed.size;
                moves.push((std::mem::take(emptied), sealed));
            }
            // Nothing live was left in them after all.
            None => nothing_live.append(emptied),
        }
        Ok::<(), Error>(())
    };
    let commit = |moves: &mut Vec<(Vec<PackId>, SealedPack)>,
                  nothing_live: &mut Vec<PackId>,
                  dead: &[PackId],
                  cat: &mut Catalog| {
        let t = std::time::Instant::now();
        let forgotten: Vec<PackId> = nothing_live.iter().chain(dead).copied().collect();
        cat.packs().replace(moves, &forgotten)?;
        tracing::debug!(
            "expire: {} new packs ({} chunks) indexed, {} packs forgotten, in {:?}",
            moves.len(),
            moves.iter().map(|(_, s)| s.entries.len()).sum::<usize>(),
            moves.iter().map(|(o, _)| o.len()).sum::<usize>() + forgotten.len(),
            t.elapsed()
        );
        let gone: Vec<String> = moves
            .drain(..)
            .flat_map(|(old, _)| old)
            .chain(nothing_live.drain(..))
            .chain(dead.iter().copied())
            .map(|o| keys::pack(&o))
            .collect();
        deleter.dropped(cat, &gone)
    };
    for p in packs {
        let key = keys::pack(&p.id);
        let what = format!("pack {key}");
        // Streamed front to back, skipping the dead records: one request
        // (not one per live chunk), one record in memory.
        let mut r = stored.open(&key)?;
        let mut pos = 0u64;
        for c in cat.packs().liveness(&p.id)?.into_iter().filter(|c| c.live) {
            let rec = next_record(r.as_mut(), &mut pos, &c, &what)?;
            stored.check_record(&rec, &c.id, &what, &key)?;
            let h = RecordHeader::decode(&rec, &what)?;
            if w.is_none() {
                w = Some(stored.new_pack()?);
            }
            if let Some(w) = w.as_mut() {
                w.add(c.id, h.codec, c.raw_len, &rec[RecordHeader::LEN..])?;
            }
        }
        old_bytes += p.size;
        emptied.push(p.id);
        if w.as_ref().is_some_and(|w| w.full(REWRITE_PACK)) {
            seal(&mut w, &mut emptied, &mut moves, &mut nothing_live)?;
            let pending: usize = moves.iter().map(|(_, s)| s.entries.len()).sum();
            if pending >= MOVE_BATCH {
                commit(&mut moves, &mut nothing_live, &[], cat)?;
            }
        }
    }
    seal(&mut w, &mut emptied, &mut moves, &mut nothing_live)?;
    commit(&mut moves, &mut nothing_live, dead, cat)?;
    Ok((old_bytes, new_bytes))
}

/// Chunk rows moved to new packs per transaction, at most about (a sealed
/// pack's entries are held until then: some 50 bytes each).
const MOVE_BATCH: usize = 100_000;

/// Read the record of chunk `c` from a pack streamed from offset `pos`
/// (chunks come in offset order), and move `pos` past it.
fn next_record(
    r: &mut dyn std::io::Read,
    pos: &mut u64,
    c: &PackChunk,
    what: &str,
) -> Result<Vec<u8>> {
    use std::io::{ErrorKind, Read};
    let bad = |detail: String| {
        Error::corrupt(
            what,
            format!("chunk {} at offset {}: {detail}", c.id, c.offset),
        )
    };
    let gap = c
        .offset
        .checked_sub(*pos)
        .ok_or_else(|| bad("overlaps the record before it".into()))?;
    let read_err = |e: std::io::Error| match e.kind() {
        // A sealed segment of an encrypted pack that does not authenticate.
        ErrorKind::InvalidData => bad(e.to_string()),
        _ => Error::io(what, e),
    };
    let skipped = std::io::copy(&mut r.take(gap), &mut std::io::sink()).map_err(read_err)?;
    let mut rec = vec![0u8; RecordHeader::LEN + c.stored_len as usize];
    if skipped < gap {
        return Err(bad("beyond the end of the pack".into()));
    }
    r.read_exact(&mut rec).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => bad("beyond the end of the pack".into()),
        _ => read_err(e),
    })?;
    *pos = c.offset + rec.len() as u64;
    Ok(rec)
}
