//! `pgstrata drill`: a restore drill on real clusters. The drill restores
//! into a scratch directory, starts its own private server there, runs
//! pg_amcheck and the configured SQL checks, reports, and records the
//! outcome for `info`.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::harness::*;

/// A cluster with table `t` (5000 rows, indexed) in a full backup, then
/// 1000 more rows in archived WAL only.
fn setup(s: &Scratch) -> (Repo, Cluster) {
    let repo = Repo::new(s);
    let src = Cluster::archiving(s, "src", &repo);
    src.exec(
        "CREATE TABLE t (g int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    );
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("INSERT INTO t SELECT g, 'late' FROM generate_series(5001, 6000) g;");
    src.switch_wal_and_wait(&repo);
    (repo, src)
}

/// A config file naming the repository, with `extra` appended.
fn config(s: &Scratch, name: &str, repo: &Repo, extra: &str) -> String {
    let p = s.path().join(name);
    std::fs::write(&p, format!("repo = \"{}\"\n{extra}", repo.arg())).unwrap();
    p.to_str().unwrap().to_string()
}

fn drill(cfg: &str, args: &[&str]) -> Output {
    let mut all = vec!["--config", cfg, "drill"];
    all.extend_from_slice(args);
    pgstrata(&all)
}

fn report(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "drill printed no JSON report ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn step<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {r:#}"))
}

fn check_named<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {r:#}"))
}

const CHECKS: &str = r#"
[[drill.check]]
name = "rows"
sql = "SELECT count(*) FROM t"
expect = "positive"

[[drill.check]]
name = "all rows replayed"
sql = "SELECT count(*) = 6000 FROM t"
"#;

#[test]
fn a_drill_passes_and_info_shows_it() {
    let s = Scratch::new();
    let (repo, src) = setup(&s);
    let cfg = config(&s, "drill.toml", &repo, CHECKS);
    let scratch = s.path().join("d1");
    let o = drill(
        &cfg,
        &["--output", "json", "--scratch", scratch.to_str().unwrap()],
    );
    let r = report(&o);
    assert_eq!(o.status.code(), Some(0), "{r:#}\n{}", err(&o));
    assert_eq!(r["ok"], true);
    assert_eq!(r["failure"], Value::Null);
    assert_eq!(r["cluster"], "main");
    assert_eq!(r["target"], "end of WAL");
    assert_eq!(
        r["pg_version"].as_u64(),
        Some(u64::from(server_major(&src.bindir)))
    );
    assert_eq!(r["checks_total"], 3);
    assert_eq!(r["checks_passed"], 3);
    for st in ["restore", "recovery", "stop", "cleanup"] {
        assert_eq!(step(&r, st)["ok"], true, "{st}: {r:#}");
    }
    assert!(r["restore_seconds"].as_f64().unwrap() > 0.0);
    let consistent = r["consistent_seconds"].as_f64().unwrap();
    assert!(consistent > 0.0 && consistent <= r["promoted_seconds"].as_f64().unwrap());
    assert_eq!(check_named(&r, "amcheck")["ok"], true);
    assert_eq!(check_named(&r, "all rows replayed")["database"], "postgres");
    assert_eq!(check_named(&r, "rows")["detail"], "returned \"6000\"");
    assert!(!scratch.exists(), "the scratch copy was not removed");

    // info shows it, in JSON and as text.
    let backup = repo.backups()[0]["id"].as_str().unwrap().to_string();
    let last = &repo.info_json()["clusters"][0]["last_drill"];
    assert_eq!(last["ok"], true, "{last:#}");
    assert_eq!(last["backup"], backup.as_str());
    assert_eq!(last["checks_passed"], 3);
    assert_eq!(last["checks_total"], 3);
    let text = pgstrata_ok(&["--repo", repo.arg(), "info"]);
    let line = text.lines().find(|l| l.contains("last drill:")).unwrap();
    assert!(
        line.contains("passed (backup ") && line.contains("3/3 checks"),
        "{line}"
    );
    assert!(line.contains("consistent after"), "{line}");

    // A PITR drill: stop where the backup became consistent. The late rows
    // are not there, so "all rows replayed" fails, and the report says so.
    let o = drill(
        &cfg,
        &[
            "--target",
            "immediate",
            "--json",
            "--scratch",
            scratch.to_str().unwrap(),
        ],
    );
    let r = report(&o);
    assert_eq!(o.status.code(), Some(1), "{r:#}");
    assert_eq!(r["target"], "immediate (consistency)");
    assert_eq!(check_named(&r, "rows")["detail"], "returned \"5000\"");
    let failed = check_named(&r, "all rows replayed");
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["detail"], "returned \"f\", expected true");
    assert!(
        err(&o).contains("check \"all rows replayed\""),
        "{}",
        err(&o)
    );
    assert!(!scratch.exists());
}

#[test]
fn a_damaged_pack_fails_the_drill_naming_the_file() {
    let s = Scratch::new();
    let (repo, _src) = setup(&s);
    let mut packs = crate::bad_input::walk_files(&repo.path.join("packs"));
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let biggest = packs.last().unwrap().clone();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&biggest, &bytes).unwrap();

    let cfg = config(&s, "drill.toml", &repo, CHECKS);
    let o = drill(&cfg, &["--json"]);
    let r = report(&o);
    assert_eq!(o.status.code(), Some(1), "{r:#}");
    assert_eq!(r["ok"], false);
    let restore = step(&r, "restore");
    assert_eq!(restore["ok"], false);
    let detail = restore["detail"].as_str().unwrap();
    // The damaged relation file (and its backup) is named.
    assert!(
        detail.contains("(backup ") && (detail.contains("base/") || detail.contains("global/")),
        "{detail}"
    );
    assert!(
        r["failure"].as_str().unwrap().starts_with("restore: "),
        "{r:#}"
    );
    assert_eq!(r["checks_passed"], 0);
    assert_eq!(r["checks_total"], 3);
    assert!(check_named(&r, "amcheck")["detail"]
        .as_str()
        .unwrap()
        .starts_with("not run"));
    assert!(err(&o).contains("failed: restore: "), "{}", err(&o));
    assert!(
        !Path::new(r["scratch"].as_str().unwrap()).exists(),
        "the failed copy was not removed"
    );
    let last = &repo.info_json()["clusters"][0]["last_drill"];
    assert_eq!(last["ok"], false, "{last:#}");
    let text = pgstrata_ok(&["--repo", repo.arg(), "info"]);
    assert!(text.contains("FAILED (backup "), "{text}");
}

#[test]
fn a_failing_sql_check_fails_the_drill_and_keep_keeps_the_copy() {
    let s = Scratch::new();
    let (repo, _src) = setup(&s);
    let cfg = config(
        &s,
        "drill.toml",
        &repo,
        r#"
[drill.settings]
shared_buffers = "16MB"
work_mem = 8192

[[drill.check]]
name = "no late rows"
sql = "SELECT g FROM t WHERE g > 5990 ORDER BY g"
expect = "empty"

[[drill.check]]
name = "orders exist"
database = "postgres"
sql = "SELECT count(*) FROM orders"
expect = "positive"
"#,
    );
    let scratch = s.path().join("kept");
    let o = drill(&cfg, &["--scratch", scratch.to_str().unwrap(), "--keep"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}\n{}", err(&o));
    assert!(text.contains("drill FAILED: 1/3 checks passed"), "{text}");
    assert!(
        text.contains("check \"no late rows\"")
            && text.contains("returned 10 row(s), expected none"),
        "{text}"
    );
    assert!(
        text.contains("relation \"orders\" does not exist"),
        "{text}"
    );
    assert!(err(&o).contains("check \"no late rows\""), "{}", err(&o));
    // Kept, and stopped: a restorable copy to look at.
    let data = scratch.join("data");
    assert!(data.join("PG_VERSION").exists());
    assert!(
        !data.join("postmaster.pid").exists(),
        "the server was not stopped"
    );
    assert!(scratch.join("server.log").exists());
}

#[test]
fn drill_bad_input_loses_nothing() {
    let s = Scratch::new();
    let (repo, _src) = setup(&s);
    let cfg = config(&s, "drill.toml", &repo, "");
    let busy = s.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("precious"), "x").unwrap();
    let o = drill(&cfg, &["--scratch", busy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("is not empty"), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(busy.join("precious")).unwrap(), "x");

    let fresh = s.path().join("fresh");
    let o = drill(
        &cfg,
        &[
            "--set",
            "20000101-000000F",
            "--scratch",
            fresh.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("\"20000101-000000F\" is not a complete backup"),
        "{}",
        err(&o)
    );
    assert!(!fresh.exists());

    // Server binaries of another major.
    let other = pg_bindir_for(16);
    let o = drill(
        &cfg,
        &[
            "--pg-bindir",
            other.to_str().unwrap(),
            "--scratch",
            fresh.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("holds PostgreSQL 16, but backup"),
        "{}",
        err(&o)
    );
    assert!(!fresh.exists());
    // A malformed check is a usage error.
    let bad = config(
        &s,
        "bad.toml",
        &repo,
        "[[drill.check]]\nname = \"x\"\nsql = \"SELECT 1\"\nexpect = \"lots\"\n",
    );
    let o = drill(&bad, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("lots"), "{}", err(&o));
    // Nothing was recorded.
    assert_eq!(repo.info_json()["clusters"][0]["last_drill"], Value::Null);
}

/// The entries directly in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Drilled on the primary's own host, a cluster with a tablespace is
/// restored with the tablespace inside the scratch directory: the drill
/// passes (or fails on its check) and leaves nothing behind, and the
/// primary's tablespace is untouched.
#[test]
fn a_drill_keeps_tablespaces_in_its_scratch_directory() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    let (ts, oid) = src.create_tablespace(&s, "one", "ts_primary");
    src.exec(
        "CREATE TABLE t (g int PRIMARY KEY, v text) TABLESPACE one;
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
    );
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("INSERT INTO t SELECT g, 'late' FROM generate_series(5001, 6000) g; CHECKPOINT;");
    src.switch_wal_and_wait(&repo);
    let walk = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = walkdir::WalkDir::new(d)
            .into_iter()
            .flatten()
            .map(|e| e.path().display().to_string())
            .collect();
        v.sort();
        v
    };
    let primary_ts = walk(&ts);
    let before = listing(s.path());
    let cfg = config(&s, "drill.toml", &repo, CHECKS);
    let before_cfg = listing(s.path());
    assert_eq!(before_cfg.len(), before.len() + 1);

    let scratch = s.path().join("d1");
    let o = drill(
        &cfg,
        &["--output", "json", "--scratch", scratch.to_str().unwrap()],
    );
    let r = report(&o);
    assert_eq!(o.status.code(), Some(0), "{r:#}\n{}", err(&o));
    assert_eq!(check_named(&r, "rows")["detail"], "returned \"6000\"");
    assert_eq!(step(&r, "cleanup")["ok"], true, "{r:#}");
    assert!(!scratch.exists(), "the scratch copy was not removed");
    assert_eq!(listing(s.path()), before_cfg, "the drill left something");
    assert_eq!(walk(&ts), primary_ts, "the primary's tablespace changed");
    assert_eq!(src.query_one("SELECT count(*)::text FROM t"), "6000");

    // Kept, the copy's tablespace is in the scratch directory.
    let kept = s.path().join("d2");
    let o = drill(
        &cfg,
        &["--json", "--keep", "--scratch", kept.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let link = std::fs::read_link(kept.join("data/pg_tblspc").join(&oid)).unwrap();
    assert!(link.starts_with(&kept), "{}", link.display());
    std::fs::remove_dir_all(&kept).unwrap();

    // A failed drill removes its tablespace too.
    let o = drill(
        &cfg,
        &[
            "--target",
            "immediate",
            "--json",
            "--scratch",
            scratch.to_str().unwrap(),
        ],
    );
    let r = report(&o);
    assert_eq!(o.status.code(), Some(1), "{r:#}");
    assert_eq!(check_named(&r, "all rows replayed")["ok"], false);
    assert!(!scratch.exists(), "the failed copy was not removed");
    assert_eq!(
        listing(s.path()),
        before_cfg,
        "the failed drill left something"
    );
    assert_eq!(walk(&ts), primary_ts, "the primary's tablespace changed");
}

/// A drill restores as `restore` does, so it warns as `restore` does of the
/// data directory's symbolic links: a linked file comes back as a regular
/// file, and a link to nothing (kept as a bare link) is left out. The JSON
/// report has both as fields, and no text warning.
#[test]
fn a_drill_warns_of_symbolic_links_in_the_data_directory() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let src = Cluster::archiving(&s, "src", &repo);
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let etc = s.pg_dir("etc");
    std::fs::write(etc.join("extra.conf"), b"# extra\n").unwrap();
    std::os::unix::fs::symlink(etc.join("extra.conf"), src.pgdata.join("extra.conf")).unwrap();
    let gone = s.path().join("gone.conf");
    std::os::unix::fs::symlink(&gone, src.pgdata.join("gone.conf")).unwrap();
    src.backup_ok(&repo, &["--type", "full"]);
    src.switch_wal_and_wait(&repo);
    let cfg = config(&s, "drill.toml", &repo, "");

    let o = drill(&cfg, &[]);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains(
            "pgstrata: warning: restored as regular files and directories, though they were \
             symbolic links: extra.conf (restore --link-all restores them as links)"
        ),
        "{e}"
    );
    assert!(
        e.contains(&format!(
            "pgstrata: warning: gone.conf was a link to {}: the backup holds only the link, \
             not what it leads to, so it is not restored (restore --link-all recreates the link)",
            gone.display()
        )),
        "{e}"
    );

    let o = drill(&cfg, &["--json"]);
    let r = report(&o);
    assert_eq!(o.status.code(), Some(0), "{r:#}\n{}", err(&o));
    assert_eq!(
        r["links_as_files"],
        serde_json::json!(["extra.conf"]),
        "{r:#}"
    );
    assert_eq!(
        r["links_not_restored"],
        serde_json::json!([{"path": "gone.conf", "leads_to": gone.to_str().unwrap()}]),
        "{r:#}"
    );
    assert!(!err(&o).contains("warning: "), "{}", err(&o));
}
