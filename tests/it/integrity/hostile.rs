//! Hostile repositories: one real backup (of a data directory with
//! symlinked configuration, which backs up as files and directories and
//! verifies), then, per case, a copy of the repository whose catalog is
//! crafted with rows no backup writes. `verify` must fail (exit 1, its
//! one-line summary on stderr) with a problem line naming the backup, the
//! path and what is wrong. One more case is one more row of `CASES`.

use std::os::unix::fs::symlink;
use std::path::Path;

use rusqlite::{params, Connection};

use super::{catalog, err, out, verify, verify_ok};
use crate::harness::*;

/// Add a row at `path` to every backup, shaped like the backup's `.`.
fn add(db: &Connection, path: &str, kind: &str, link: Option<&str>) {
    db.execute(
        "INSERT INTO file_version SELECT cluster_id, ?1, first_seq, last_seq, ?2, 0, mtime, \
         mode, uid, gid, ?3, NULL FROM file_version WHERE path = '.'",
        params![path, kind, link],
    )
    .unwrap();
}

fn sql(db: &Connection, s: &str) {
    db.execute_batch(s).unwrap();
}

/// A crafted catalog: what it changes, the path the problem line names (as
/// printed), and what the line must say.
struct Case {
    name: &'static str,
    craft: fn(&Connection),
    path: &'static str,
    says: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "a link row with a file beneath it",
        craft: |db| {
            add(db, "evil", "l", Some("/etc"));
            add(db, "evil/cron.d", "d", None);
            add(db, "evil/cron.d/job", "f", None);
        },
        path: "evil/cron.d",
        says: "lies beneath evil, a symlink: restoring it would write through the link",
    },
    Case {
        name: "a link to .. with a row beneath it",
        craft: |db| {
            add(db, "up", "l", Some(".."));
            add(db, "up/escaped", "f", None);
        },
        path: "up/escaped",
        says: "lies beneath up, a symlink",
    },
    Case {
        name: "a real directory turned into a link",
        craft: |db| {
            sql(
                db,
                "UPDATE file_version SET kind = 'l', link = '/tmp' WHERE path = 'base'",
            )
        },
        path: "base/1",
        says: "lies beneath base, a symlink",
    },
    Case {
        name: "an absolute path",
        craft: |db| add(db, "/etc/cron.d/evil", "f", None),
        path: "/etc/cron.d/evil",
        says: "it is absolute: it would escape the target directory",
    },
    Case {
        name: "a path that climbs out",
        craft: |db| add(db, "../outside", "d", None),
        path: "../outside",
        says: "would escape the target directory",
    },
    Case {
        name: "a path that climbs out from inside",
        craft: |db| add(db, "base/../../outside", "d", None),
        path: "base/../../outside",
        says: "would escape the target directory",
    },
    Case {
        name: "an empty name",
        craft: |db| add(db, "base//x", "f", None),
        path: "base//x",
        says: "it has an empty or `.` component",
    },
    Case {
        name: "a NUL in a name",
        craft: |db| add(db, "base/x\0y", "f", None),
        path: r#""base/x\0y""#,
        says: "it holds a NUL byte",
    },
    Case {
        name: "a path longer than PATH_MAX",
        craft: |db| add(db, &format!("{}x", "d/".repeat(2100)), "f", None),
        path: r#""d/d/d/d/"#,
        says: "it is 4201 bytes long (at most 4096)",
    },
    Case {
        name: "a path stored as a blob",
        craft: |db| {
            db.execute(
                "UPDATE file_version SET path = CAST(path AS BLOB) WHERE path = 'PG_VERSION'",
                [],
            )
            .unwrap();
        },
        path: "PG_VERSION",
        says: "the path is not UTF-8 text",
    },
    Case {
        name: "a tablespace entry that is a file",
        craft: |db| add(db, "pg_tblspc/16400", "f", None),
        path: "pg_tblspc/16400",
        says: "a tablespace entry that is a file",
    },
    Case {
        name: "a tablespace entry that is a followed directory link",
        craft: |db| add(db, "pg_tblspc/16400", "d", Some("/etc")),
        path: "pg_tblspc/16400",
        says: "a tablespace entry recorded as a followed directory link",
    },
    Case {
        name: "a link in pg_tblspc that is not a tablespace, with rows beneath",
        craft: |db| {
            add(db, "pg_tblspc/evil", "l", Some("/etc"));
            add(db, "pg_tblspc/evil/passwd", "f", None);
        },
        path: "pg_tblspc/evil/passwd",
        says: "lies beneath pg_tblspc/evil, a symlink",
    },
    Case {
        name: "a path twice in one backup",
        craft: |db| {
            sql(
                db,
                "INSERT INTO file_version SELECT cluster_id, path, first_seq - 1, last_seq, kind, \
                 size, mtime, mode, uid, gid, link, blockmap FROM file_version \
                 WHERE path = 'PG_VERSION'",
            )
        },
        path: "PG_VERSION",
        says: "appears more than once in the manifest",
    },
    Case {
        name: "a row beneath a file",
        craft: |db| add(db, "PG_VERSION/x", "f", None),
        path: "PG_VERSION/x",
        says: "lies beneath PG_VERSION, which is a file, not a directory",
    },
    Case {
        name: "a row whose directory has no row",
        craft: |db| add(db, "nodir/x", "f", None),
        path: "nodir/x",
        says: "its directory nodir has no row",
    },
    Case {
        name: "a symlink without a target",
        craft: |db| add(db, "nolink", "l", None),
        path: "nolink",
        says: "a symlink without a target",
    },
    Case {
        name: "the data directory itself a file",
        craft: |db| sql(db, "UPDATE file_version SET kind = 'f' WHERE path = '.'"),
        path: ".",
        says: "the data directory itself is not a directory",
    },
    Case {
        name: "a size its block map disagrees with",
        craft: |db| {
            sql(
                db,
                "UPDATE file_version SET size = size + 8192 WHERE path = 'global/pg_control'",
            )
        },
        path: "global/pg_control",
        says: "the manifest says 16384",
    },
    Case {
        name: "a huge size",
        craft: |db| {
            sql(
                db,
                "UPDATE file_version SET size = 9223372036854775807 WHERE path = 'PG_VERSION'",
            )
        },
        path: "PG_VERSION",
        says: "9223372036854775807",
    },
    Case {
        name: "bytes without a block map",
        craft: |db| {
            sql(
                db,
                "UPDATE file_version SET blockmap = NULL WHERE path = 'PG_VERSION'",
            )
        },
        path: "PG_VERSION",
        says: "no block map: the file cannot be restored",
    },
];

/// Every file below `from`, copied to `to`.
fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).into_iter().flatten() {
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A cluster whose `postgresql.auto.conf` and a configuration directory
/// are symlinks out of the data directory, with a dangling link beside.
fn with_linked_config(s: &Scratch, repo: &Repo) -> Cluster {
    let src = Cluster::archiving(s, "src", repo);
    let etc = s.pg_dir("etc");
    let auto = src.pgdata.join("postgresql.auto.conf");
    std::fs::copy(&auto, etc.join("auto.conf")).unwrap();
    std::fs::remove_file(&auto).unwrap();
    symlink(etc.join("auto.conf"), &auto).unwrap();
    std::fs::create_dir_all(etc.join("conf.d")).unwrap();
    std::fs::write(etc.join("conf.d/extra.conf"), "work_mem = '8MB'\n").unwrap();
    symlink(etc.join("conf.d"), src.pgdata.join("conf.d")).unwrap();
    symlink("/nonexistent/pgstrata", src.pgdata.join("dangling")).unwrap();
    give_to_pg(&etc);
    src
}

#[test]
fn verify_rejects_hostile_manifests() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = with_linked_config(&s, &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let o = src.backup(&repo, &["--type", "full"]);
    check(&o, "backup");
    // The dangling link is named once (the walk runs twice).
    let warned = err(&o)
        .matches("dangling: the symlink to /nonexistent/pgstrata")
        .count();
    assert_eq!(warned, 1, "{}", err(&o));
    let id = repo.backups()[0]["id"].as_str().unwrap().to_string();

    // Followed links are files and directories that keep their target; a
    // dangling one stays a link. A real backup verifies.
    let rows: Vec<(String, String, Option<String>, i64)> = {
        let db = catalog(&repo);
        let mut st = db
            .prepare(
                "SELECT path, kind, link, size FROM file_version WHERE path IN \
                 ('postgresql.auto.conf', 'conf.d', 'conf.d/extra.conf', 'dangling') ORDER BY path",
            )
            .unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows
    };
    let etc = s.path().join("etc");
    let shown = |p: &str| Some(etc.join(p).to_str().unwrap().to_string());
    assert_eq!(
        rows,
        vec![
            ("conf.d".into(), "d".into(), shown("conf.d"), 0),
            ("conf.d/extra.conf".into(), "f".into(), None, 17),
            (
                "dangling".into(),
                "l".into(),
                Some("/nonexistent/pgstrata".into()),
                0
            ),
            (
                "postgresql.auto.conf".into(),
                "f".into(),
                shown("auto.conf"),
                std::fs::metadata(etc.join("auto.conf")).unwrap().len() as i64
            ),
        ]
    );
    verify_ok(&repo);

    for (i, case) in CASES.iter().enumerate() {
        let copy = Repo {
            path: s.path().join(format!("hostile-{i}")),
            pass: None,
            url: None,
        };
        copy_tree(&repo.path, &copy.path);
        (case.craft)(&catalog(&copy));
        let o = verify(&copy, &[]);
        let (stdout, stderr) = (out(&o), err(&o));
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: {stdout}\n{stderr}",
            case.name
        );
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("pgstrata: error: verify found"),
            "{}: {stderr}",
            case.name
        );
        assert!(
            stdout.contains(&format!("backup {id} (main): DAMAGED")),
            "{}: {stdout}",
            case.name
        );
        let named = stdout.lines().any(|l| {
            l.starts_with("problem: ")
                && l.contains(case.path)
                && l.contains(case.says)
                && l.contains(&format!("affects backup {id}"))
        });
        assert!(named, "{}: no problem line names it:\n{stdout}", case.name);
        std::fs::remove_dir_all(&copy.path).unwrap();
    }
}
