//! The data directory rules' tests: exclusions, links, names.

use super::*;

#[test]
fn names() {
    assert!(is_temp_relation("t3_16384"));
    assert!(is_temp_relation("t12_16384_fsm"));
    assert!(!is_temp_relation("16384"));
    assert!(!is_temp_relation("tablespace_map"));
    assert_eq!(relfilenode("16384_vm.2"), Some("16384"));
    assert_eq!(relfilenode("PG_VERSION"), None);
    assert!(is_database_dir("base/1"));
    assert!(is_database_dir("global"));
    assert!(is_database_dir("pg_tblspc/16390/PG_15_202209061/16384"));
    assert!(!is_database_dir("base"));
    assert!(!is_database_dir("pg_xact"));
}

#[test]
fn walk_applies_exclusions() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for dir in [
        "base/5",
        "global",
        "pg_wal/archive_status",
        "pg_stat_tmp",
        "pg_xact",
    ] {
        fs::create_dir_all(p.join(dir)).unwrap();
    }
    for f in [
        "PG_VERSION",
        "postmaster.pid",
        "backup_label",
        "base/5/100",
        "base/5/100_fsm",
        "base/5/200",
        "base/5/200_init",
        "base/5/200_fsm",
        "base/5/t3_300",
        "base/5/pg_internal.init",
        "global/pg_control",
        "pg_wal/000000010000000000000001",
        "pg_stat_tmp/x",
        "pg_xact/0000",
    ] {
        fs::write(p.join(f), b"x").unwrap();
    }
    let paths: Vec<String> = walk(p).unwrap().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        vec![
            ".",
            "PG_VERSION",
            "base",
            "base/5",
            "base/5/100",
            "base/5/100_fsm",
            "base/5/200_init",
            "global",
            "global/pg_control",
            "pg_stat_tmp",
            "pg_wal",
            "pg_xact",
            "pg_xact/0000",
        ]
    );
}

/// A data directory with `global/pg_control`, and a directory beside it
/// for link targets.
fn with_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (p, o) = (d.path().join("data"), d.path().join("outside"));
    for dir in ["global", "pg_tblspc", "base/5", "../outside"] {
        fs::create_dir_all(p.join(dir)).unwrap();
    }
    fs::write(p.join("global/pg_control"), b"c").unwrap();
    (d, p, o)
}

fn find<'a>(rows: &'a [Entry], path: &str) -> &'a Entry {
    rows.iter()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("no {path} in {rows:#?}"))
}

fn paths_under(rows: &[Entry], prefix: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| r.path.starts_with(prefix))
        .map(|r| r.path.clone())
        .collect()
}

#[test]
fn a_link_to_a_file_is_backed_up_as_the_file() {
    use std::os::unix::fs::symlink;
    let (_d, p, o) = with_outside();
    fs::write(o.join("auto.conf"), b"work_mem = 1MB\n").unwrap();
    symlink("../outside/auto.conf", p.join("postgresql.auto.conf")).unwrap();
    let rows = walk(&p).unwrap();
    let f = find(&rows, "postgresql.auto.conf");
    assert_eq!(f.kind, EntryKind::File);
    assert_eq!(f.size, 15, "the target's size");
    assert_eq!(f.link.as_deref(), Some("../outside/auto.conf"));
    let target = fs::metadata(o.join("auto.conf")).unwrap();
    assert_eq!(
        f.mtime_ns,
        target.mtime() * 1_000_000_000 + target.mtime_nsec()
    );
    assert_eq!(f.mode, target.mode() & 0o7777);
    // Excluded names stay excluded, link or not.
    symlink("../outside/auto.conf", p.join("postmaster.opts")).unwrap();
    assert!(walk(&p)
        .unwrap()
        .iter()
        .all(|r| r.path != "postmaster.opts"));
}

#[test]
fn a_link_to_a_directory_is_walked_with_the_usual_exclusions() {
    use std::os::unix::fs::symlink;
    let (_d, p, o) = with_outside();
    fs::create_dir_all(o.join("conf/sub")).unwrap();
    fs::create_dir_all(o.join("stat")).unwrap();
    fs::create_dir_all(o.join("db")).unwrap();
    for f in [
        "conf/a",
        "conf/sub/b",
        "conf/pgsql_tmp1",
        "stat/x",
        "db/100",
        "db/t3_7",
    ] {
        fs::write(o.join(f), b"x").unwrap();
    }
    symlink(o.join("conf"), p.join("conf.d")).unwrap();
    // pg_stat_tmp on a tmpfs: kept, its contents not.
    symlink(o.join("stat"), p.join("pg_stat_tmp")).unwrap();
    // A database directory elsewhere: temporary relations are skipped.
    symlink(o.join("db"), p.join("base/6")).unwrap();
    let rows = walk(&p).unwrap();
    let c = find(&rows, "conf.d");
    assert_eq!(c.kind, EntryKind::Dir);
    assert_eq!(c.link.as_deref(), o.join("conf").to_str());
    assert_eq!(
        paths_under(&rows, "conf.d"),
        vec!["conf.d", "conf.d/a", "conf.d/sub", "conf.d/sub/b"]
    );
    assert!(find(&rows, "conf.d/a").link.is_none());
    assert_eq!(find(&rows, "pg_stat_tmp").kind, EntryKind::Dir);
    assert_eq!(paths_under(&rows, "pg_stat_tmp"), vec!["pg_stat_tmp"]);
    assert_eq!(paths_under(&rows, "base/6"), vec!["base/6", "base/6/100"]);
}

#[test]
fn dangling_special_and_looping_links_stay_links() {
    use std::os::unix::fs::symlink;
    let (_d, p, o) = with_outside();
    fs::create_dir_all(o.join("conf")).unwrap();
    fs::write(o.join("conf/a"), b"x").unwrap();
    symlink("/nonexistent/pgstrata/x", p.join("gone")).unwrap();
    symlink("self", p.join("self")).unwrap();
    symlink(".", p.join("here")).unwrap();
    symlink("..", p.join("up")).unwrap();
    symlink("/", p.join("root")).unwrap();
    symlink(o.join("conf"), p.join("conf.d")).unwrap();
    // Inside a followed directory: a link back to it.
    symlink("../conf", o.join("conf/again")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(o.join("sock")).unwrap();
    symlink(o.join("sock"), p.join("sock")).unwrap();
    let rows = walk(&p).unwrap();
    for (path, target) in [
        ("gone", "/nonexistent/pgstrata/x"),
        ("self", "self"),
        ("here", "."),
        ("up", ".."),
        ("root", "/"),
        ("conf.d/again", "../conf"),
        ("sock", o.join("sock").to_str().unwrap()),
    ] {
        let r = find(&rows, path);
        assert_eq!(r.kind, EntryKind::Link, "{path}");
        assert_eq!(r.link.as_deref(), Some(target), "{path}");
        assert_eq!(r.size, 0, "{path}");
        assert_eq!(
            paths_under(&rows, &format!("{path}/")),
            Vec::<String>::new()
        );
    }
    assert_eq!(
        paths_under(&rows, "conf.d"),
        vec!["conf.d", "conf.d/a", "conf.d/again"]
    );
}

#[test]
fn pg_wal_and_tablespace_links_keep_their_meaning() {
    use std::os::unix::fs::symlink;
    let (_d, p, o) = with_outside();
    fs::create_dir_all(o.join("wal/archive_status")).unwrap();
    fs::write(o.join("wal/000000010000000000000001"), b"w").unwrap();
    fs::create_dir_all(o.join("ts/PG_15_202209061/5")).unwrap();
    fs::write(o.join("ts/PG_15_202209061/5/100"), b"r").unwrap();
    fs::write(o.join("ts/PG_15_202209061/5/t3_9"), b"r").unwrap();
    symlink(o.join("wal"), p.join("pg_wal")).unwrap();
    symlink(o.join("ts"), p.join("pg_tblspc/16390")).unwrap();
    // Not a tablespace's name: a link followed like any other.
    symlink(o.join("ts"), p.join("pg_tblspc/extra")).unwrap();
    let rows = walk(&p).unwrap();
    let w = find(&rows, "pg_wal");
    assert_eq!((w.kind, w.link.as_deref()), (EntryKind::Dir, None));
    assert_eq!(paths_under(&rows, "pg_wal"), vec!["pg_wal"]);
    let t = find(&rows, "pg_tblspc/16390");
    assert_eq!(t.kind, EntryKind::Link);
    assert_eq!(t.link.as_deref(), o.join("ts").to_str());
    assert_eq!(
        paths_under(&rows, "pg_tblspc/16390"),
        vec![
            "pg_tblspc/16390",
            "pg_tblspc/16390/PG_15_202209061",
            "pg_tblspc/16390/PG_15_202209061/5",
            "pg_tblspc/16390/PG_15_202209061/5/100",
        ]
    );
    let x = find(&rows, "pg_tblspc/extra");
    assert_eq!(x.kind, EntryKind::Dir);
    assert_eq!(x.link.as_deref(), o.join("ts").to_str());
}

#[test]
fn names_that_are_not_utf8_round_trip() {
    let cases: Vec<Vec<u8>> = vec![
        b"plain/ascii".to_vec(),
        "caf\u{e9}".as_bytes().to_vec(),
        b"caf\xe9".to_vec(),
        b"\xff\xfe/\x80x".to_vec(),
        "\u{f780}\u{f7ff}\u{f77f}".as_bytes().to_vec(),
        b"\xef\x9e\x80\xef\x9e".to_vec(),
    ];
    for b in cases {
        let os = OsStr::from_bytes(&b);
        let name = name_of(os);
        assert_eq!(
            path_of(&name).as_os_str().as_bytes(),
            b.as_slice(),
            "{name:?}"
        );
        assert!(!name.contains('\0'));
    }
    assert_eq!(name_of(OsStr::new("base/1/1259")), "base/1/1259");
    assert_ne!(
        name_of(OsStr::from_bytes(b"\xe9")),
        name_of(OsStr::new("\u{e9}"))
    );
}

#[test]
fn manifest_paths() {
    assert!(check_manifest_path("base/1/123").is_ok());
    assert!(check_manifest_path(".").is_ok());
    for bad in [
        "../x",
        "/etc/passwd",
        "base/../../x",
        "a//b",
        "",
        "a/./b",
        "a\0b",
        "a/",
    ] {
        assert!(check_manifest_path(bad).is_err(), "{bad}");
    }
    let e = check_manifest_path("base/../../x").unwrap_err().to_string();
    assert!(e.contains("would escape the target directory"), "{e}");
    let long = "d/".repeat(2048) + "x";
    let e = check_manifest_path(&long).unwrap_err().to_string();
    assert!(e.contains("4097 bytes long") && e.len() < 300, "{e}");
    assert!(check_manifest_path(&long[2..]).is_ok());
    // Measured as the bytes it names: 2,000 bytes that are not UTF-8.
    let raw = name_of(OsStr::from_bytes(&[0xff; 2000]));
    assert!(raw.len() > MAX_PATH_BYTES && check_manifest_path(&raw).is_ok());
    assert_eq!(shown("a\nb"), r#""a\nb""#);
}

#[test]
fn main_fork_files_are_named_by_their_locator() {
    assert_eq!(main_fork_file("base/5/16384"), Some((1663, 5, 16384, 0)));
    assert_eq!(main_fork_file("base/5/16384.2"), Some((1663, 5, 16384, 2)));
    assert_eq!(main_fork_file("global/1262"), Some((1664, 0, 1262, 0)));
    assert_eq!(
        main_fork_file("pg_tblspc/16400/PG_15_202209061/5/16401.1"),
        Some((16400, 5, 16401, 1))
    );
    for other in [
        "base/5/16384_vm",
        "base/5/16384_fsm",
        "base/5/16384_init",
        "base/5/PG_VERSION",
        "base/5/pg_filenode.map",
        "global/pg_control",
        "pg_xact/0000",
        "base/5/t3_16384",
        "pg_tblspc/16400/notpg/5/16401",
    ] {
        assert_eq!(main_fork_file(other), None, "{other}");
    }
}
