//! Restores from a hostile catalog and into a hostile target: nothing is
//! ever written outside the target (and its tablespaces), whatever links the
//! catalog or the target hold, and links inside the target are recreated
//! only when asked for.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::harness::*;
use crate::integrity::catalog;

/// Every entry beneath `dir` (not followed): kind, bytes, mode, owner and
/// mtime, so that any change or new entry shows.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).follow_links(false) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let data = if m.file_type().is_symlink() {
            format!("link {:?}", std::fs::read_link(e.path()).unwrap())
        } else if m.is_file() {
            format!("file {:?}", std::fs::read(e.path()).unwrap())
        } else {
            "dir".to_string()
        };
        out.insert(
            e.path().to_path_buf(),
            format!(
                "{data} mode {:o} owner {}:{} mtime {}.{}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            ),
        );
    }
    out
}

/// A directory outside every target, holding `secret` (mode 0640).
fn outside_dir(s: &Scratch) -> PathBuf {
    let dir = s.path().join("outside");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, b"keep").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    dir
}

/// Replace the catalog rows of `rows` (path, kind, link) by crafted ones:
/// a file row holds PG_VERSION's bytes (its block map).
fn craft(repo: &Repo, rows: &[(&str, &str, Option<&str>)]) {
    let c = catalog(repo);
    for (path, _, _) in rows {
        c.execute("DELETE FROM file_version WHERE path = ?1", [path])
            .unwrap();
    }
    for (path, kind, link) in rows {
        let (size, mode, blockmap) = match *kind {
            "f" => ("size", "mode", "blockmap"),
            "d" => ("0", "448", "NULL"),
            _ => ("0", "511", "NULL"),
        };
        let n = c
            .execute(
                &format!(
                    "INSERT INTO file_version (cluster_id, path, first_seq, last_seq, kind, \
                     size, mtime, mode, uid, gid, link, blockmap) \
                     SELECT cluster_id, ?1, first_seq, last_seq, ?2, {size}, mtime, {mode}, \
                     uid, gid, ?3, {blockmap} FROM file_version WHERE path = 'PG_VERSION'"
                ),
                rusqlite::params![path, kind, link],
            )
            .unwrap();
        assert!(n > 0, "no PG_VERSION row to craft {path} from");
    }
}

fn restore_args<'a>(repo: &'a Repo, target: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--repo",
        repo.arg(),
        "restore",
        "--pgdata",
        target.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    a
}

/// A catalog whose link leads out of the target, with a file beneath the
/// link: no restore (fresh or delta, with or without `--link-all`) writes
/// through it. A pre-existing file there keeps its bytes, mode and owner.
#[test]
fn a_crafted_catalog_writes_nothing_outside_the_target() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    src.backup_ok(&repo, &["--type", "full"]);
    // A stopped copy of the cluster for the delta restores.
    let old = restore(&s, &repo, "old", &[]);
    let outside = outside_dir(&s);
    let abs = outside.to_str().unwrap().to_string();
    let watched = |t: &Path| {
        let mut w = snapshot(&outside);
        // A link to `..` would put `secret` beside the target.
        w.insert(
            t.parent().unwrap().join("secret"),
            format!("{}", t.parent().unwrap().join("secret").exists()),
        );
        w
    };
    let mut n = 0;
    for link in [abs.as_str(), "../../outside", ".."] {
        craft(
            &repo,
            &[("evil", "l", Some(link)), ("evil/secret", "f", None)],
        );
        for extra in [&[][..], &["--link-all"][..]] {
            n += 1;
            let fresh = s.path().join(format!("fresh{n}")).join("data");
            let before = watched(&fresh);
            let o = pgstrata(&restore_args(&repo, &fresh, extra));
            assert_eq!(
                watched(&fresh),
                before,
                "restore {extra:?} of a link to {link} wrote outside the target: {o:?}"
            );
            let before = watched(&old.pgdata);
            let mut args = restore_args(&repo, &old.pgdata, extra);
            args.push("--delta");
            let o = pgstrata(&args);
            assert_eq!(
                watched(&old.pgdata),
                before,
                "delta restore {extra:?} of a link to {link} wrote outside the target: {o:?}"
            );
        }
    }
    // `pg_tblspc/<oid>` as a directory (not a link), over a delta target
    // that has a link to outside there: restored as a directory inside.
    craft(
        &repo,
        &[
            ("evil", "d", None),
            ("evil/secret", "f", None),
            ("pg_tblspc/99999", "d", None),
            ("pg_tblspc/99999/secret", "f", None),
        ],
    );
    let planted = old.pgdata.join("pg_tblspc/99999");
    let _ = std::fs::remove_dir_all(&planted);
    let _ = std::fs::remove_file(&planted);
    std::os::unix::fs::symlink(&outside, &planted).unwrap();
    let _ = std::fs::remove_file(old.pgdata.join("evil"));
    std::os::unix::fs::symlink(&outside, old.pgdata.join("evil")).unwrap();
    let before = snapshot(&outside);
    let mut args = restore_args(&repo, &old.pgdata, &[]);
    args.push("--delta");
    pgstrata_ok(&args);
    assert_eq!(snapshot(&outside), before);
    for p in ["pg_tblspc/99999", "evil"] {
        let m = old.pgdata.join(p).symlink_metadata().unwrap();
        assert!(m.is_dir(), "{p} is not a directory of the target");
        assert_eq!(
            std::fs::read(old.pgdata.join(p).join("secret")).unwrap(),
            std::fs::read(old.pgdata.join("PG_VERSION")).unwrap()
        );
    }
}

/// A delta target holding links (a relation file, a database directory and
/// postgresql.auto.conf leading outside, stray links): they are replaced by
/// regular files and directories, what they led to is untouched, and the
/// copy starts with the source's data.
#[test]
fn delta_replaces_links_planted_in_the_target() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let mut src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 5_000);
    src.backup_ok(&repo, &["--type", "full"]);
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    src.stop();
    let old = restore(&s, &repo, "old", &[]);
    let d = old.pgdata.clone();
    let outside = outside_dir(&s);
    // A relation file.
    let mut rels: Vec<PathBuf> = walkdir::WalkDir::new(d.join("base"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.metadata().unwrap().len() > 8192)
        .map(|e| e.path().to_path_buf())
        .collect();
    rels.sort();
    let rel = rels.last().unwrap().clone();
    std::fs::write(outside.join("rel"), b"outside rel").unwrap();
    std::fs::remove_file(&rel).unwrap();
    std::os::unix::fs::symlink(outside.join("rel"), &rel).unwrap();
    // A database directory, to a directory with a file of the same name.
    std::fs::create_dir_all(outside.join("db1")).unwrap();
    std::fs::write(outside.join("db1/PG_VERSION"), b"outside db1").unwrap();
    std::fs::remove_dir_all(d.join("base/1")).unwrap();
    std::os::unix::fs::symlink(outside.join("db1"), d.join("base/1")).unwrap();
    // postgresql.auto.conf.
    std::fs::write(outside.join("auto.conf"), b"# the primary's own\n").unwrap();
    std::fs::remove_file(d.join("postgresql.auto.conf")).unwrap();
    std::os::unix::fs::symlink(outside.join("auto.conf"), d.join("postgresql.auto.conf")).unwrap();
    // `global`, with the control file an interrupted restore removes first.
    std::fs::create_dir_all(outside.join("global")).unwrap();
    std::fs::copy(
        d.join("global/pg_control"),
        outside.join("global/pg_control"),
    )
    .unwrap();
    std::fs::remove_dir_all(d.join("global")).unwrap();
    std::os::unix::fs::symlink(outside.join("global"), d.join("global")).unwrap();
    // Links the backup does not have.
    std::os::unix::fs::symlink(outside.join("secret"), d.join("stray_link")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("base/stray_dir")).unwrap();
    let before = snapshot(&outside);

    let mut args = restore_args(&repo, &d, &["--delta"]);
    args.push("--archive-mode");
    args.push("off");
    pgstrata_ok(&args);
    assert_eq!(
        snapshot(&outside),
        before,
        "the delta restore wrote outside"
    );
    assert!(rel.symlink_metadata().unwrap().is_file());
    assert!(d.join("base/1").symlink_metadata().unwrap().is_dir());
    assert!(d.join("global").symlink_metadata().unwrap().is_dir());
    let conf = d.join("postgresql.auto.conf");
    assert!(conf.symlink_metadata().unwrap().is_file());
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("restore_command"));
    assert!(d.join("stray_link").symlink_metadata().is_err());
    assert!(d.join("base/stray_dir").symlink_metadata().is_err());
    append(&d.join("postgresql.conf"), "\narchive_mode = off\n");
    give_to_pg(d.parent().unwrap());
    let mut copy = Cluster::at(d.parent().unwrap().to_path_buf(), d.clone());
    copy.start_ok();
    copy.wait_for_consistency();
    assert_eq!(copy.table_hashes(), want);
}

/// In the backup's representation of a linked file (the file's bytes, with
/// the link beside them), whether the backup stored it so or (older
/// backups) stored only the link: `row` becomes a file row with the bytes
/// of `copy`, keeping its link.
fn as_linked_file(repo: &Repo, row: &str, copy: &str) {
    let c = catalog(repo);
    c.execute(
        "UPDATE file_version SET kind = 'f', \
         size = (SELECT size FROM file_version WHERE path = ?2), \
         mode = (SELECT mode FROM file_version WHERE path = ?2), \
         blockmap = (SELECT blockmap FROM file_version WHERE path = ?2) \
         WHERE path = ?1 AND kind = 'l'",
        [row, copy],
    )
    .unwrap();
}

/// A cluster whose postgresql.auto.conf (and another file) are links to
/// files outside its data directory: a restore never writes those files;
/// by default both come back as regular files (the recovery settings in
/// auto.conf), with `--link-all` the other link is back (moved with
/// `--link-map`) and auto.conf is still a regular file.
#[test]
fn linked_configuration_files_are_restored_inside_the_target() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let mut src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let etc = s.pg_dir("etc");
    let auto = src.pgdata.join("postgresql.auto.conf");
    let auto_text = std::fs::read(&auto).unwrap();
    std::fs::write(etc.join("auto.conf"), &auto_text).unwrap();
    std::fs::write(etc.join("extra.conf"), b"# extra\n").unwrap();
    // Regular copies of both, for the catalog's newer representation below.
    std::fs::write(src.pgdata.join("auto_copy.conf"), &auto_text).unwrap();
    std::fs::write(src.pgdata.join("extra_copy.conf"), b"# extra\n").unwrap();
    std::fs::remove_file(&auto).unwrap();
    std::os::unix::fs::symlink(etc.join("auto.conf"), &auto).unwrap();
    std::os::unix::fs::symlink(etc.join("extra.conf"), src.pgdata.join("extra.conf")).unwrap();
    give_to_pg(&src.pgdata);
    give_to_pg(&etc);
    src.backup_ok(&repo, &["--type", "full"]);
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    src.stop();
    let before = snapshot(&etc);

    // As the backup stored them.
    let mut dst = restore(&s, &repo, "dst", &[]);
    assert_eq!(snapshot(&etc), before, "the restore wrote through a link");
    let conf = dst.pgdata.join("postgresql.auto.conf");
    assert!(conf.symlink_metadata().unwrap().is_file());
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("restore_command"));
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
    dst.stop();

    // Stored as linked files: by default regular files with their bytes.
    as_linked_file(&repo, "postgresql.auto.conf", "auto_copy.conf");
    as_linked_file(&repo, "extra.conf", "extra_copy.conf");
    let target = s.path().join("dst2/data");
    let o = pgstrata(&restore_args(&repo, &target, &[]));
    crate::harness::check(&o, "restore");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("extra.conf") && err.contains("--link-all"),
        "{err}"
    );
    assert_eq!(snapshot(&etc), before, "the restore wrote through a link");
    let conf = target.join("postgresql.auto.conf");
    assert!(conf.symlink_metadata().unwrap().is_file());
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.starts_with(&String::from_utf8_lossy(&auto_text).into_owned()));
    assert!(text.contains("restore_command"), "{text}");
    let extra = target.join("extra.conf");
    assert!(extra.symlink_metadata().unwrap().is_file());
    assert_eq!(std::fs::read(&extra).unwrap(), b"# extra\n");

    // A linked directory, stored with its contents: a regular directory by
    // default, and with --link-map a link to where its contents are written.
    craft(
        &repo,
        &[
            ("conf.d", "d", Some(etc.to_str().unwrap())),
            ("conf.d/a.conf", "f", None),
        ],
    );
    let target = s.path().join("dst5/data");
    crate::harness::check(&pgstrata(&restore_args(&repo, &target, &[])), "restore");
    assert!(target.join("conf.d").symlink_metadata().unwrap().is_dir());
    assert!(target.join("conf.d/a.conf").is_file());
    let moved_dir = s.path().join("moved_dir");
    let map_dir = format!("conf.d={}", moved_dir.display());
    let target = s.path().join("dst6/data");
    crate::harness::check(
        &pgstrata(&restore_args(&repo, &target, &["--link-map", &map_dir])),
        "restore --link-map",
    );
    assert_eq!(
        std::fs::read_link(target.join("conf.d")).unwrap(),
        moved_dir
    );
    assert_eq!(
        std::fs::read(moved_dir.join("a.conf")).unwrap(),
        std::fs::read(target.join("PG_VERSION")).unwrap()
    );
    // Not asked for: extra.conf is a regular file.
    assert!(target
        .join("extra.conf")
        .symlink_metadata()
        .unwrap()
        .is_file());
    // Its directory is not empty: refused before anything is written.
    let o = pgstrata(&restore_args(
        &repo,
        &s.path().join("dst7/data"),
        &["--link-map", &map_dir],
    ));
    crate::harness::fails_with(&o, "not empty");
    assert!(!s.path().join("dst7/data").exists());
    assert_eq!(snapshot(&etc), before, "the restore wrote through a link");

    // --link-all: the link is back (moved with --link-map), its bytes at
    // its destination; auto.conf is still a regular file, with a warning.
    let moved = s.path().join("moved/extra.conf");
    let map = format!("extra.conf={}", moved.display());
    let map_dir2 = format!("conf.d={}", s.path().join("moved_dir2").display());
    let target = s.path().join("dst3/data");
    let o = pgstrata(&restore_args(
        &repo,
        &target,
        &["--link-all", "--link-map", &map, "--link-map", &map_dir2],
    ));
    crate::harness::check(&o, "restore --link-all");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("postgresql.auto.conf was a link"), "{err}");
    assert_eq!(snapshot(&etc), before, "the restore wrote through a link");
    assert_eq!(
        std::fs::read_link(target.join("extra.conf")).unwrap(),
        moved
    );
    assert_eq!(std::fs::read(&moved).unwrap(), b"# extra\n");
    let conf = target.join("postgresql.auto.conf");
    assert!(conf.symlink_metadata().unwrap().is_file());
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("restore_command"));

    // A --link-map naming no link of the backup is a clear error.
    let o = pgstrata(&restore_args(
        &repo,
        &s.path().join("dst4/data"),
        &["--link-map", "nope.conf=/tmp/x"],
    ));
    crate::harness::fails_with(&o, "--link-map names \"nope.conf\"");
    let o = pgstrata(&restore_args(
        &repo,
        &s.path().join("dst4/data"),
        &["--link-map", "nope.conf"],
    ));
    crate::harness::misused(&o, "expected PATH=DEST");
}
