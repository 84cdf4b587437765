//! Pass 2, the shape of each manifest: could its rows be a data directory,
//! and would restoring them stay inside the target? A crafted catalog is
//! the threat: rows a backup never writes.
//!
//! Per backup in scope, a manifest holds:
//! - paths that [`path_fault`] accepts (relative, no `..`, no NUL, no empty
//!   name, at most 4096 bytes), stored as text;
//! - each path once;
//! - `.` as a directory, and every other row beneath a directory row, or
//!   beneath the `pg_tblspc/<oid>` link of a tablespace (its contents):
//!   nothing beneath a file, and nothing beneath any other symlink, whose
//!   restore would write through the link to wherever it points;
//! - at `pg_tblspc/<oid>`, a tablespace's link or an in-place tablespace's
//!   directory (not a file, not a followed directory link);
//! - a target on every symlink row.
//!
//! Rows are walked once per file version (shared by the backups it covers),
//! in path order; a parent's versions are looked up once per run of its
//! children and kept as the backups in scope where it is not a directory.
//! Memory: a few thousand parents' findings at most, and at most
//! [`MAX_REPORTED`] problems.

use std::collections::{BTreeSet, HashMap};

use super::{problem, Problem, ProblemKind, VerifyReport};
use crate::catalog::{BackupRow, Catalog, ClusterRow, VersionShape};
use crate::error::Result;
use crate::format::FileKind;
use crate::pg::datadir::{is_oid, path_fault, shown};

/// Problems of this pass reported one by one, at most (a crafted catalog
/// may hold millions of bad rows; the rest are summed up in a note).
const MAX_REPORTED: usize = 10_000;

/// Parents whose findings are kept at once: children of one directory come
/// together in path order, so few are needed.
const PARENTS_KEPT: usize = 4096;

/// What a child finds at its parent's path in one backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AtParent {
    Nothing,
    File,
    Link,
}

/// Check the manifests of one cluster's backups in scope.
pub(super) fn check(
    cat: &Catalog,
    c: &ClusterRow,
    backups: &[BackupRow],
    report: &mut VerifyReport,
) -> Result<()> {
    let ids: Vec<String> = backups.iter().map(|b| b.id.clone()).collect();
    let seqs = cat.versions().seqs_in(c.id, &ids)?;
    if seqs.is_empty() {
        return Ok(());
    }
    let mut walk = Walk {
        cat,
        cluster: c.id,
        seqs: &seqs,
        parents: HashMap::new(),
        last: None,
        found: Vec::new(),
        more: 0,
    };
    cat.versions()
        .for_each_version_shape(c.id, |v| walk.version(v))?;
    let more = walk.more;
    report.problems.append(&mut walk.found);
    if more > 0 {
        report.notes.push(format!(
            "cluster {}: {more} more manifest rows are invalid; only the first \
             {MAX_REPORTED} are listed",
            c.name
        ));
    }
    Ok(())
}

struct Walk<'a> {
    cat: &'a Catalog,
    cluster: i64,
    /// The backups in scope: `(seq, id)`, by seq.
    seqs: &'a [(i64, String)],
    /// Per parent path, the backups in scope (indexes into `seqs`, in
    /// order) where it is not a directory a child may lie beneath.
    parents: HashMap<String, Vec<(usize, AtParent)>>,
    /// The previous version's path and the greatest last seq of its
    /// versions so far (versions of a path come together, by first seq).
    last: Option<(String, i64)>,
    found: Vec<Problem>,
    more: u64,
}

impl Walk<'_> {
    /// Indexes into `seqs` of the backups in `[first, last]`.
    fn covered(&self, first: i64, last: i64) -> std::ops::Range<usize> {
        let lo = self.seqs.partition_point(|(s, _)| *s < first);
        let hi = self.seqs.partition_point(|(s, _)| *s <= last);
        lo..hi.max(lo)
    }

    fn version(&mut self, v: VersionShape) -> Result<()> {
        let overlap = match &self.last {
            Some((p, last)) if *p == v.path => Some((v.first_seq, (*last).min(v.last_seq))),
            _ => None,
        };
        self.last = match self.last.take() {
            Some((p, last)) if p == v.path => Some((p, last.max(v.last_seq))),
            _ => Some((v.path.clone(), v.last_seq)),
        };
        let span = self.covered(v.first_seq, v.last_seq);
        if span.is_empty() {
            return Ok(());
        }
        if let Some((lo, hi)) = overlap.filter(|(lo, hi)| lo <= hi) {
            let twice = self.covered(lo, hi);
            self.report(&v.path, "appears more than once in the manifest", twice);
        }
        if v.path_not_text {
            self.report(&v.path, "the path is not UTF-8 text", span);
            return Ok(());
        }
        if let Some(fault) = path_fault(&v.path) {
            self.report(&v.path, &format!("invalid path: {fault}"), span);
            return Ok(());
        }
        if v.kind == FileKind::Link && !v.has_link {
            self.report(&v.path, "a symlink without a target", span.clone());
        }
        if v.path == "." {
            if v.kind != FileKind::Dir {
                self.report(
                    &v.path,
                    "the data directory itself is not a directory",
                    span,
                );
            }
            return Ok(());
        }
        let (parent, name) = v.path.rsplit_once('/').unwrap_or((".", &v.path));
        if parent == "pg_tblspc" && is_oid(name) {
            match (v.kind, v.has_link) {
                (FileKind::File, _) => self.report(
                    &v.path,
                    "a tablespace entry that is a file (a tablespace is a symlink, or an \
                     in-place directory)",
                    span.clone(),
                ),
                (FileKind::Dir, true) => self.report(
                    &v.path,
                    "a tablespace entry recorded as a followed directory link (a tablespace \
                     is recorded as a symlink)",
                    span.clone(),
                ),
                _ => {}
            }
        }
        self.beneath(&v.path, parent, span)
    }

    /// The parent of `path` is, in every backup of `span`, a directory (or
    /// a tablespace's link).
    fn beneath(&mut self, path: &str, parent: &str, span: std::ops::Range<usize>) -> Result<()> {
        if !self.parents.contains_key(parent) {
            if self.parents.len() >= PARENTS_KEPT {
                self.parents.clear();
            }
            let found = self.not_a_directory(parent)?;
            self.parents.insert(parent.to_string(), found);
        }
        let bad = &self.parents[parent];
        let from = bad.partition_point(|(i, _)| *i < span.start);
        let mut by_kind: Vec<(AtParent, Vec<usize>)> = Vec::new();
        for &(i, at) in bad[from..].iter().take_while(|(i, _)| *i < span.end) {
            match by_kind.iter_mut().find(|(k, _)| *k == at) {
                Some((_, list)) => list.push(i),
                None => by_kind.push((at, vec![i])),
            }
        }
        for (at, list) in by_kind {
            let detail = match at {
                AtParent::Nothing => format!(
                    "its directory {} has no row (a manifest lists every directory)",
                    printable(parent)
                ),
                AtParent::File => format!(
                    "lies beneath {}, which is a file, not a directory",
                    printable(parent)
                ),
                AtParent::Link => format!(
                    "lies beneath {}, a symlink: restoring it would write through the link, \
                     outside the data directory",
                    printable(parent)
                ),
            };
            self.report_at(path, &detail, list);
        }
        Ok(())
    }

    /// The backups in scope where `parent` is not something a row may lie
    /// beneath: missing, a file, or a symlink other than a tablespace's.
    fn not_a_directory(&self, parent: &str) -> Result<Vec<(usize, AtParent)>> {
        let versions = self.cat.versions().path_versions(self.cluster, parent)?;
        let tablespace = parent.strip_prefix("pg_tblspc/").is_some_and(is_oid);
        let mut out = Vec::new();
        for (i, (seq, _)) in self.seqs.iter().enumerate() {
            let at = versions.partition_point(|v| v.0 <= *seq);
            let kind = at
                .checked_sub(1)
                .map(|k| &versions[k])
                .filter(|v| v.1 >= *seq)
                .map(|v| v.2);
            let found = match kind {
                None => AtParent::Nothing,
                Some(FileKind::File) => AtParent::File,
                Some(FileKind::Link) if !tablespace => AtParent::Link,
                Some(_) => continue,
            };
            out.push((i, found));
        }
        Ok(out)
    }

    fn report(&mut self, path: &str, detail: &str, span: std::ops::Range<usize>) {
        self.report_at(path, detail, span.collect());
    }

    /// A problem with `path` in the backups `at` (indexes into `seqs`);
    /// merged with the last one when it is the same problem of another
    /// version of the path.
    fn report_at(&mut self, path: &str, detail: &str, at: Vec<usize>) {
        if at.is_empty() {
            return;
        }
        let object = format!("file {}", printable(path));
        let backups = at.iter().map(|&i| self.seqs[i].1.clone());
        if let Some(p) = self
            .found
            .last_mut()
            .filter(|p| p.object == object && p.detail == detail)
        {
            let mut all: BTreeSet<String> = p.backups.drain(..).collect();
            all.extend(backups);
            p.backups = all.into_iter().collect();
            return;
        }
        if self.found.len() >= MAX_REPORTED {
            self.more += 1;
            return;
        }
        let files = [printable(path)].into_iter().collect();
        self.found.push(problem(
            ProblemKind::ManifestInvalid,
            object,
            detail,
            (backups.collect(), files),
        ));
    }
}

/// A path as problems name it: as it is, unless it holds control
/// characters or is very long (then quoted, escaped and cut short), so
/// that a problem stays one line.
fn printable(path: &str) -> String {
    if path.len() <= 160 && !path.chars().any(char::is_control) {
        path.to_string()
    } else {
        shown(path)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{kinds, two, verify};
    use super::*;
    use crate::repo::testkit::Fixture;

    /// A row to add: path, kind, link target.
    type Row = (&'static str, &'static str, Option<&'static str>);

    /// Rows like `.`'s (one version per run of backups), at `path`.
    fn add_row(f: &Fixture, path: &str, kind: &str, link: Option<&str>) {
        let link = link.map_or("NULL".to_string(), |l| format!("'{l}'"));
        f.sql(&format!(
            "INSERT INTO file_version SELECT cluster_id, '{path}', first_seq, last_seq, '{kind}', \
             0, mtime, mode, uid, gid, {link}, NULL FROM file_version WHERE path = '.'"
        ));
    }

    #[test]
    fn tablespaces_and_followed_links_are_a_data_directory() {
        let (f, _, _) = two();
        add_row(&f, "pg_tblspc", "d", None);
        add_row(&f, "pg_tblspc/16390", "l", Some("/srv/ts"));
        add_row(&f, "pg_tblspc/16390/PG_15_202209061", "d", None);
        add_row(&f, "pg_tblspc/16391", "d", None);
        add_row(&f, "conf.d", "d", Some("/etc/pg/conf.d"));
        add_row(&f, "conf.d/x.conf", "f", None);
        add_row(&f, "gone", "l", Some("/nowhere"));
        let r = verify(&f);
        assert!(r.is_ok(), "{:?}", r.problems);
    }

    /// Rows no data directory has are named, with the backups whose
    /// manifest holds them; the rest of the repository is fine.
    #[test]
    fn a_manifest_no_data_directory_has_is_named() {
        let cases: &[(&[Row], &str, &str)] = &[
            (
                &[("evil", "l", Some("/etc")), ("evil/secret", "f", None)],
                "evil/secret",
                "lies beneath evil, a symlink",
            ),
            (
                &[("a/x", "f", None)],
                "a/x",
                "lies beneath a, which is a file",
            ),
            (
                &[("nodir/x", "f", None)],
                "nodir/x",
                "its directory nodir has no row",
            ),
            (&[("../up", "d", None)], "../up", "would escape the target"),
            (&[("/abs", "d", None)], "/abs", "absolute"),
            (
                &[("pg_tblspc", "d", None), ("pg_tblspc/7", "f", None)],
                "pg_tblspc/7",
                "a tablespace entry that is a file",
            ),
            (
                &[
                    ("pg_tblspc", "d", None),
                    ("pg_tblspc/x", "l", Some("/t")),
                    ("pg_tblspc/x/y", "d", None),
                ],
                "pg_tblspc/x/y",
                "lies beneath pg_tblspc/x, a symlink",
            ),
            (
                &[("nolink", "l", None)],
                "nolink",
                "a symlink without a target",
            ),
        ];
        for (rows, path, needle) in cases {
            let (f, a, b) = two();
            for (p, k, l) in *rows {
                add_row(&f, p, k, *l);
            }
            let r = verify(&f);
            let p = r
                .problems
                .iter()
                .find(|p| p.detail.contains(needle))
                .unwrap_or_else(|| panic!("{path}: {:?}", r.problems));
            assert_eq!(p.files, vec![path.to_string()], "{p}");
            // `a` is a file of the first backup only.
            let want = match *path {
                "a/x" => vec![a.clone()],
                _ => vec![a.clone(), b.clone()],
            };
            assert_eq!(p.backups, want, "{p}");
            assert_eq!(
                kinds(&r),
                vec![ProblemKind::ManifestInvalid],
                "{:?}",
                r.problems
            );
        }
        // A path twice in one backup (overlapping versions), in the second
        // backup only; `.` not a directory.
        let (f, _, b) = two();
        f.sql(
            "INSERT INTO file_version SELECT cluster_id, 'c', first_seq - 1, last_seq, kind, size, \
             mtime, mode, uid, gid, link, blockmap FROM file_version WHERE path = 'c'",
        );
        f.sql("UPDATE file_version SET kind = 'f' WHERE path = '.'");
        let r = verify(&f);
        let details: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            details
                .iter()
                .any(|d| d.contains("file c: appears more than once")
                    && d.ends_with(&format!("affects backup {b}; files c"))),
            "{details:#?}"
        );
        assert!(
            details
                .iter()
                .any(|d| d.contains("the data directory itself is not a directory")),
            "{details:#?}"
        );
    }
}
