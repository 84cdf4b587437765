//! PostgreSQL's own WAL summaries (17 and later, with `summarize_wal = on`):
//! the WAL summarizer writes, per range of WAL between redo points, which
//! blocks of which relation forks the records of the range modify, in
//! `pg_wal/summaries`. They are read through the server:
//! `pg_get_wal_summarizer_state()`, `pg_available_wal_summaries()` and
//! `pg_wal_summary_contents()`.
//!
//! What a row of the contents means (`walsummarizer.c`, `blkreftable.c`):
//! - `is_limit_block = false`: WAL in the file's range modifies that block
//!   (every fork but the free space map, which is not WAL-logged);
//! - `is_limit_block = true`: the fork was created (limit 0), truncated to
//!   that length, or dropped at commit or abort (limit 0) in the range: blocks
//!   at or past the limit are new, whatever the file names;
//! - relfilenode 0 with limit 0 on the main fork: a database was created or
//!   dropped in that tablespace (`CREATE DATABASE ... STRATEGY FILE_COPY`
//!   copies files with no record per block).
//!
//! WAL written with `wal_level = minimal` is not summarized at all, so it
//! leaves a gap between files; a consumer must check that the files it uses
//! cover its whole range ([`covering`]). Invariants: the contents are
//! streamed (one query over all the files, rows taken as they arrive),
//! never collected; no call here panics on what the server returns.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Row, RowIter};

use crate::error::{Error, Result};
use crate::pg::conn::Server;
use crate::pg::walblocks::RelFork;
use crate::pg::Lsn;

/// One summary file: the WAL of `[start, end)` on timeline `tli`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SummaryFile {
    pub tli: u32,
    pub start: Lsn,
    pub end: Lsn,
}

/// One row of `pg_wal_summary_contents`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SummaryEntry {
    /// `rel` is 0 for a limit block that marks a whole database.
    pub rel: RelFork,
    pub block: u32,
    /// A limit block: the fork's blocks at or past `block` are new.
    pub limit: bool,
}

/// How far the summarizer has written summary files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SummarizerState {
    pub tli: u32,
    pub summarized: Lsn,
}

/// The majors whose servers summarize WAL.
const FIRST_MAJOR: u32 = 17;

impl Server {
    /// `Ok(())` when the server writes WAL summaries, else why not.
    pub(crate) fn wal_summaries_enabled(&mut self) -> Result<std::result::Result<(), String>> {
        let major = self.info.major;
        if major < FIRST_MAJOR {
            return Ok(Err(format!("PostgreSQL {major} does not summarize WAL")));
        }
        let q = "SELECT current_setting('summarize_wal'), current_setting('server_version')";
        let row = self
            .client()
            .query_one(q, &[])
            .map_err(|e| Error::pg("cannot read summarize_wal", e))?;
        let on: String = get(&row, 0)?;
        let version: String = get(&row, 1)?;
        if on != "on" {
            return Ok(Err(format!("summarize_wal is {on}")));
        }
        // The betas of 17 leave out limit blocks that come alone and
        // summarize WAL written with wal_level = minimal.
        if major == FIRST_MAJOR && version.contains("beta") {
            return Ok(Err(format!(
                "PostgreSQL {version} predates the fixes to WAL summaries"
            )));
        }
        Ok(Ok(()))
    }

    pub(crate) fn wal_summarizer_state(&mut self) -> Result<SummarizerState> {
        let q = "SELECT summarized_tli, summarized_lsn::text FROM pg_get_wal_summarizer_state()";
        let row = self
            .client()
            .query_one(q, &[])
            .map_err(|e| Error::pg("cannot read the WAL summarizer's state", e))?;
        Ok(SummarizerState {
            tli: timeline(get(&row, 0)?)?,
            summarized: get::<String>(&row, 1)?.parse()?,
        })
    }

    /// Wait until the summarizer has written files up to `lsn` on `tli` (or
    /// a later timeline); `Err(why)` after `timeout`.
    pub(crate) fn await_wal_summaries(
        &mut self,
        tli: u32,
        lsn: Lsn,
        timeout: Duration,
    ) -> Result<std::result::Result<(), String>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let s = self.wal_summarizer_state()?;
            if (s.tli, s.summarized) >= (tli, lsn) {
                return Ok(Ok(()));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(Err(format!(
                    "the WAL summarizer reached only {} on timeline {} within {} s, not {lsn} \
                     on timeline {tli}",
                    s.summarized,
                    s.tli,
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every summary file the server has.
    pub(crate) fn wal_summaries(&mut self) -> Result<Vec<SummaryFile>> {
        let q = "SELECT tli, start_lsn::text, end_lsn::text FROM pg_available_wal_summaries()";
        let rows = self
            .client()
            .query(q, &[])
            .map_err(|e| Error::pg("cannot list the WAL summaries", e))?;
        rows.iter()
            .map(|r| {
                Ok(SummaryFile {
                    tli: timeline(get(r, 0)?)?,
                    start: get::<String>(r, 1)?.parse()?,
                    end: get::<String>(r, 2)?.parse()?,
                })
            })
            .collect()
    }

    /// The rows of `files`, as the server sends them.
    pub(crate) fn wal_summary_contents(&mut self, files: &[SummaryFile]) -> Result<Entries<'_>> {
        let tlis: Vec<i64> = files.iter().map(|f| i64::from(f.tli)).collect();
        let starts: Vec<String> = files.iter().map(|f| f.start.to_string()).collect();
        let ends: Vec<String> = files.iter().map(|f| f.end.to_string()).collect();
        let q = "SELECT c.relfilenode, c.reltablespace, c.reldatabase, c.relforknumber, \
                 c.relblocknumber, c.is_limit_block \
                 FROM unnest($1::int8[], $2::text[]::pg_lsn[], $3::text[]::pg_lsn[]) \
                   AS s(tli, start_lsn, end_lsn), \
                 LATERAL pg_wal_summary_contents(s.tli, s.start_lsn, s.end_lsn) AS c";
        let params: [&(dyn ToSql + Sync); 3] = [&tlis, &starts, &ends];
        let rows = self
            .client()
            .query_raw(q, params)
            .map_err(|e| Error::pg("cannot read the WAL summaries", e))?;
        Ok(Entries { rows })
    }
}

/// The rows of summary files, streamed.
pub(crate) struct Entries<'a> {
    rows: RowIter<'a>,
}

impl Iterator for Entries<'_> {
    type Item = Result<SummaryEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rows.next() {
            Ok(Some(row)) => Some(entry(&row)),
            Ok(None) => None,
            Err(e) => Some(Err(Error::pg("cannot read the WAL summaries", e))),
        }
    }
}

fn entry(row: &Row) -> Result<SummaryEntry> {
    let fork: i16 = get(row, 3)?;
    let block: i64 = get(row, 4)?;
    Ok(SummaryEntry {
        rel: RelFork {
            rel: get(row, 0)?,
            spc: get(row, 1)?,
            db: get(row, 2)?,
            fork: u8::try_from(fork)
                .map_err(|_| Error::invalid(format!("WAL summary: fork number {fork}")))?,
        },
        block: u32::try_from(block)
            .map_err(|_| Error::invalid(format!("WAL summary: block number {block}")))?,
        limit: get(row, 5)?,
    })
}

fn get<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| Error::pg(format!("WAL summaries: column {i}"), e))
}

fn timeline(t: i64) -> Result<u32> {
    u32::try_from(t).map_err(|_| Error::invalid(format!("timeline {t} out of range")))
}

/// The files of timeline `tli` that together cover `[from, to)`, in order;
/// `Err(why)` when a part of it is in none (never summarized, as WAL of
/// `wal_level = minimal`; removed after `wal_summary_keep_time`; or on
/// another timeline). Files wholly inside what earlier ones cover are left
/// out; the first may start before `from` and the last end after `to`.
pub(crate) fn covering(
    files: &[SummaryFile],
    tli: u32,
    from: Lsn,
    to: Lsn,
) -> std::result::Result<Vec<SummaryFile>, String> {
    let mut mine: Vec<SummaryFile> = files
        .iter()
        .filter(|f| f.tli == tli && f.end > from && f.start < to)
        .copied()
        .collect();
    mine.sort_by_key(|f| (f.start, f.end));
    let mut at = from;
    let mut used = Vec::new();
    for f in mine {
        if at >= to {
            break;
        }
        if f.start > at {
            return Err(format!(
                "no WAL summary of timeline {tli} covers {at} to {}",
                f.start
            ));
        }
        if f.end > at {
            at = f.end;
            used.push(f);
        }
    }
    if at < to {
        return Err(format!(
            "the WAL summaries of timeline {tli} cover only up to {at}, not {to}"
        ));
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(tli: u32, start: u64, end: u64) -> SummaryFile {
        SummaryFile {
            tli,
            start: Lsn(start),
            end: Lsn(end),
        }
    }

    #[test]
    fn files_must_cover_the_range_on_the_timeline() {
        let files = [
            f(1, 300, 400),
            f(1, 0, 100),
            f(1, 100, 300),
            f(1, 400, 500),
            f(2, 500, 600),
        ];
        assert_eq!(
            covering(&files, 1, Lsn(150), Lsn(400)),
            Ok(vec![f(1, 100, 300), f(1, 300, 400)])
        );
        assert_eq!(
            covering(&files, 1, Lsn(100), Lsn(450)),
            Ok(vec![f(1, 100, 300), f(1, 300, 400), f(1, 400, 500)])
        );
        assert_eq!(covering(&files, 1, Lsn(200), Lsn(200)), Ok(vec![]));
        // Past what the timeline has, and on a timeline that has none of it.
        let e = covering(&files, 1, Lsn(100), Lsn(550)).unwrap_err();
        assert!(e.contains("only up to 0/1F4"), "{e}");
        let e = covering(&files, 2, Lsn(100), Lsn(550)).unwrap_err();
        assert!(e.contains("covers 0/64 to 0/1F4"), "{e}");
    }

    #[test]
    fn a_gap_refuses_and_an_overlap_is_fine() {
        // A hole (wal_level = minimal, or a file removed).
        let files = [f(1, 0, 100), f(1, 120, 300)];
        let e = covering(&files, 1, Lsn(50), Lsn(200)).unwrap_err();
        assert!(e.contains("covers 0/64 to 0/78"), "{e}");
        // The summarizer restarted from an earlier point: files overlap.
        let files = [f(1, 0, 100), f(1, 80, 250), f(1, 90, 120), f(1, 250, 300)];
        assert_eq!(
            covering(&files, 1, Lsn(50), Lsn(260)),
            Ok(vec![f(1, 0, 100), f(1, 80, 250), f(1, 250, 300)])
        );
    }
}
