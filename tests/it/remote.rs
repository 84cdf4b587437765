//! Repositories in object storage, end to end against the test S3 server
//! (`objstore`): a new host restores from the bucket alone, two hosts see
//! each other's work, damage in the bucket is found, the catalog is rebuilt
//! from the bucket, a dead host's lock is taken over, and bad settings get
//! one clear line. (Full, diff, incr, PITR and expire run on S3 too: the
//! `_on_s3` variants in their modules.)

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::harness::*;
use crate::objstore;

/// pgstrata as another host: its own catalog cache.
fn on_host(cache: &std::path::Path, args: &[&str]) -> Output {
    let mut a = vec!["--cache-dir", cache.to_str().unwrap()];
    a.extend_from_slice(args);
    pgstrata(&a)
}

fn on_host_ok(cache: &std::path::Path, args: &[&str]) -> String {
    let o = on_host(cache, args);
    check(&o, &format!("pgstrata {}", args.join(" ")));
    out(&o)
}

#[test]
fn a_new_host_restores_from_the_bucket_alone_and_hosts_share_one_repository() {
    let s = Scratch::new();
    let repo = Repo::s3(&s, "repo");
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 10_000);
    // The live setup reaches the bucket: check switches WAL and waits for it.
    let ci = src.conninfo();
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "check",
        "--pgdata",
        src.pgdata.to_str().unwrap(),
        "--dbname",
        &ci,
    ]);
    check(&o, "check against S3");
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 10 = 0; CHECKPOINT;");
    src.backup_ok(&repo, &["--type", "incr"]);
    // The incr's catalog changes went to the bucket as a delta, a small
    // share of the whole catalog, which went as a full snapshot before.
    let store = repo.open().backend_arc();
    let objects = store.list("catalog/").unwrap();
    let body = |k: &str| zstd::decode_all(store.get(k).unwrap().unwrap().as_slice()).unwrap();
    let (newest, delta_bytes) = objects.last().unwrap().clone();
    assert!(
        body(&newest).starts_with(b"PGSTRCD1"),
        "{newest} is no delta"
    );
    let full_bytes = objects
        .iter()
        .filter(|(k, _)| body(k).starts_with(b"SQLite format 3"))
        .map(|(_, n)| *n)
        .max()
        .unwrap();
    assert!(
        delta_bytes * 5 < full_bytes,
        "{delta_bytes} against {full_bytes}"
    );
    // Host C keeps a copy of this generation, to bring up by deltas later.
    let host_c = s.path().join("host-c-cache");
    on_host_ok(&host_c, &["--repo", repo.arg(), "info"]);
    src.exec("INSERT INTO accounts SELECT g, 1, 'late' FROM generate_series(10001, 11000) g;");
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();

    // Host B: nothing local but the bucket's settings.
    let host_b = s.path().join("host-b-cache");
    let info = on_host_ok(&host_b, &["--repo", repo.arg(), "info"]);
    assert!(info.contains("incr"), "{info}");
    assert!(info.contains(repo.arg()), "{info}");
    on_host_ok(&host_b, &["--repo", repo.arg(), "verify"]);
    let base = s.pg_dir("dst");
    let pgdata = base.join("data");
    on_host_ok(
        &host_b,
        &[
            "--repo",
            repo.arg(),
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
        ],
    );
    give_to_pg(&base);
    let mut dst = Cluster::at(base, pgdata);
    append(
        &dst.pgdata.join("postgresql.conf"),
        "\narchive_mode = off\n",
    );
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want, "restore on a new host differs");
    dst.amcheck();
    dst.stop();

    // Host B expires; host A (the default cache) sees it, and backs up on top.
    let before = repo.backups().len();
    src.backup_ok(&repo, &["--type", "full"]);
    on_host_ok(
        &host_b,
        &["--repo", repo.arg(), "expire", "--retain-full", "1"],
    );
    let after: Vec<String> = repo
        .backups()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after.len(), 1, "{after:?} (had {before} + 1)");
    let o = src.backup_ok(&repo, &["--type", "incr"]);
    assert!(o.contains(&format!("(incr of {})", after[0])), "{o}");
    // Host W takes the next backup.
    let host_w = s.path().join("host-w-cache");
    src.exec("UPDATE accounts SET balance = balance - 1 WHERE id % 7 = 0; CHECKPOINT;");
    src.backup_ok(
        &repo,
        &["--type", "incr", "--cache-dir", host_w.to_str().unwrap()],
    );
    // The cache is a cache: removing it loses nothing.
    std::fs::remove_dir_all(&host_b).unwrap();
    let info = on_host_ok(&host_b, &["--repo", repo.arg(), "info", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["clusters"][0]["backups"].as_array().unwrap().len(), 3);
    // Every host holds the same catalog: the writer's copy, B's made from
    // the full and the deltas since, and C's brought up from its own copy
    // across backups and an expire.
    on_host_ok(&host_c, &["--repo", repo.arg(), "info"]);
    let written = catalog_rows(&host_w);
    assert!(written.len() > 100, "{}", written.len());
    assert!(catalog_rows(&host_b) == written, "host B's catalog differs");
    assert!(catalog_rows(&host_c) == written, "host C's catalog differs");
}

/// Every row of every table of the catalog copy in a cache directory (the
/// change capture left out), in order.
fn catalog_rows(cache: &std::path::Path) -> Vec<String> {
    let state = walkdir::WalkDir::new(cache)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .find(|p| p.ends_with("state.json"))
        .expect("a state.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let db = state.with_file_name(v["file"].as_str().unwrap());
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let tables: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' \
             AND name NOT LIKE 'capture%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut out = Vec::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = st.column_count();
        let mut rows: Vec<String> = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap()
            .map(|r| format!("{t}: {:?}", r.unwrap()))
            .collect();
        rows.sort();
        out.extend(rows);
    }
    out
}

#[test]
fn damage_in_the_bucket_is_found_and_the_catalog_rebuilt_from_it() {
    let s = Scratch::new();
    let repo = Repo::s3(&s, "repo");
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 5_000);
    src.backup_ok(&repo, &["--type", "full"]);
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id % 10 = 0; CHECKPOINT;");
    src.backup_ok(&repo, &[]);
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();
    let before = repo.info_json();

    // The catalog snapshots gone, and a new host: refused, saying what to do.
    let r = repo.open();
    let store = r.backend();
    for (k, _) in store.list("catalog/").unwrap() {
        store.delete(&k).unwrap();
    }
    let host = s.path().join("fresh-cache");
    let o = on_host(&host, &["--repo", repo.arg(), "info"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("repair --rebuild-catalog"), "{}", err(&o));
    let o = on_host_ok(
        &host,
        &["--repo", repo.arg(), "repair", "--rebuild-catalog"],
    );
    assert!(o.contains("2 backup(s)"), "{o}");
    let after = repo.info_json();
    assert_eq!(
        after["clusters"][0]["backups"].as_array().unwrap().len(),
        before["clusters"][0]["backups"].as_array().unwrap().len()
    );
    on_host_ok(&host, &["--repo", repo.arg(), "verify"]);
    let mut dst = restore(&s, &repo, "dst", &[]);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
    dst.stop();

    // A flipped byte in a pack: verify names it, restore refuses.
    let (key, _) = store
        .list("packs/")
        .unwrap()
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .unwrap();
    let mut bytes = store.get(&key).unwrap().unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    store.put(&key, &bytes).unwrap();
    let o = pgstrata(&["--repo", repo.arg(), "verify"]);
    assert_ne!(o.status.code(), Some(0));
    let report = format!("{}{}", out(&o), err(&o));
    assert!(report.contains(&key), "{report}");
    // The full reads every chunk of its packs (the incr may not need the
    // damaged one).
    let full = repo.backups()[0]["id"].as_str().unwrap().to_string();
    let base = s.pg_dir("dst2");
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "restore",
        "--set",
        &full,
        "--pgdata",
        base.join("data").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
}

#[test]
fn a_dead_hosts_lock_is_taken_over_and_a_live_one_waited_for() {
    let s = Scratch::new();
    let repo = Repo::s3(&s, "repo");
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 2_000);
    let r = repo.open();
    let store = r.backend();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let holder = |renewed: i64| {
        serde_json::json!({
            "id": "dead", "host": "db-host-that-burned", "pid": 4242,
            "command": "backup", "since": renewed - 60, "renewed": renewed,
            "lease_seconds": 60
        })
        .to_string()
    };
    // A live holder (renewed just now): refused at once, naming it.
    store
        .put("locks/repository.lock", holder(now).as_bytes())
        .unwrap();
    let o = src.backup(&repo, &["--type", "full"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("db-host-that-burned") && err(&o).contains("--lock-wait"),
        "{}",
        err(&o)
    );
    // Its lease long run out: taken over, with a warning.
    store
        .put("locks/repository.lock", holder(now - 3600).as_bytes())
        .unwrap();
    let o = src.backup(&repo, &["--type", "full"]);
    check(&o, "backup over a stale lock");
    assert!(err(&o).contains("stale lock"), "{}", err(&o));
    assert!(store.get("locks/repository.lock").unwrap().is_none());
    assert_eq!(repo.backups().len(), 1);
    verify_ok(&repo);
}

fn verify_ok(repo: &Repo) {
    let o = pgstrata(&["--repo", repo.arg(), "verify"]);
    check(&o, "verify");
}

#[test]
fn bad_object_store_settings_get_one_clear_line() {
    let server = objstore::server();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_remove("PGSTRATA_REPO")
            .env_remove("PGSTRATA_CONFIG");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let one_line = |o: &Output, code: i32, needle: &str| {
        assert_eq!(o.status.code(), Some(code), "{}", err(o));
        let e = err(o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains(objstore::SECRET_KEY), "secret printed: {e}");
    };
    let missing = run(&["--repo", "s3://no-such-bucket-here/x", "init"], &[]);
    one_line(&missing, 1, "no-such-bucket-here");
    let scheme = run(&["--repo", "gs://bucket/x", "info"], &[]);
    one_line(&scheme, 2, "s3://BUCKET/PREFIX");
    let unreachable = run(
        &[
            "--repo",
            "s3://bucket-x/x",
            "--s3-endpoint",
            "http://127.0.0.1:9",
            "info",
        ],
        &[],
    );
    one_line(&unreachable, 1, "127.0.0.1:9");
    let url = objstore::new_url("never-made");
    let not_repo = run(&["--repo", &url, "info"], &[]);
    one_line(&not_repo, 1, "not a pgstrata repository");
    // Nothing was created by the failures.
    let _ = server;
}

/// A pgstrata command through `endpoint` instead of the server.
fn via(endpoint: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("PGSTRATA_REPO")
        .env_remove("PGSTRATA_CONFIG")
        .env("PGSTRATA_S3_ENDPOINT", endpoint);
    c
}

#[test]
fn throttling_and_a_server_gone_mid_upload_are_survived() {
    let s = Scratch::new();
    let repo = Repo::s3(&s, "repo");
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 20_000);

    // A quarter of the requests answered 503 SlowDown: retried, and the
    // backup completes.
    let throttled =
        objstore::Proxy::start(s.path().join("throttle.log"), &["--fail-share", "0.25"]);
    let ci = src.conninfo();
    let pgdata = src.pgdata.to_str().unwrap().to_string();
    let backup = |endpoint: &str| {
        via(
            endpoint,
            &[
                "--repo",
                repo.arg(),
                "backup",
                "--type",
                "full",
                "--dbname",
                &ci,
                "--pgdata",
                &pgdata,
                "--start-fast",
                "--pack-size-mib",
                "1",
            ],
        )
    };
    let o = backup(&throttled.endpoint()).output().unwrap();
    check(&o, "backup through a throttling server");
    let refused = throttled
        .lines()
        .iter()
        .filter(|l| l.contains(" 503 "))
        .count();
    assert!(refused > 3, "the proxy refused only {refused} requests");
    drop(throttled);

    // The server gone in the middle of the uploads, and back 3 s later.
    let mut flaky = objstore::Proxy::start(s.path().join("flaky.log"), &[]);
    src.exec("UPDATE accounts SET balance = balance + 7 WHERE id % 3 = 0; CHECKPOINT;");
    let mut child = backup(&flaky.endpoint())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !flaky
        .lines()
        .iter()
        .any(|l| l.starts_with("PUT") && l.contains("/packs/"))
    {
        assert!(std::time::Instant::now() < deadline, "no pack upload seen");
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup ended before a pack upload"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    flaky.kill();
    std::thread::sleep(std::time::Duration::from_secs(3));
    flaky.restart();
    let o = child.wait_with_output().unwrap();
    check(&o, "backup across a server restart");
    drop(flaky);

    // The answers to conditional writes that created their object (the
    // lock, the catalog) lost: each retry finds its own object there.
    let lossy = objstore::Proxy::start(s.path().join("lossy.log"), &["--lose-created"]);
    src.exec("UPDATE accounts SET balance = balance - 3 WHERE id % 5 = 0; CHECKPOINT;");
    let o = backup(&lossy.endpoint()).output().unwrap();
    check(&o, "backup through a server whose answers are lost");
    let lost = lossy.lines();
    let lost: Vec<_> = lost.iter().filter(|l| l.contains(" lost ")).collect();
    assert!(
        lost.iter().any(|l| l.contains("/catalog/")),
        "no catalog write lost its answer: {lost:?}"
    );
    // An encrypted repository made through it: its first catalog, a full
    // snapshot sealed as it streams from a file, is recognised too.
    let sealed = objstore::new_url("sealed");
    let pass = s.path().join("sealed.pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let unlock = [
        "--repo",
        &sealed,
        "--passphrase-file",
        pass.to_str().unwrap(),
    ];
    let o = via(
        &lossy.endpoint(),
        &[&unlock[..], &["init", "--encrypt"]].concat(),
    )
    .output()
    .unwrap();
    check(&o, "init of an encrypted repository whose answers are lost");
    let prefix = sealed.rsplit('/').next().unwrap();
    assert!(
        lossy
            .lines()
            .iter()
            .any(|l| l.contains(" lost ") && l.contains(prefix) && l.contains("/catalog/")),
        "the encrypted repository's catalog did not lose its answer"
    );
    drop(lossy);
    let o = via(
        &objstore::server().endpoint,
        &[&unlock[..], &["info"]].concat(),
    )
    .output()
    .unwrap();
    check(&o, "info of the encrypted repository");
    src.switch_wal_and_wait(&repo);
    let want = src.table_hashes();

    // Nothing damaged, nothing duplicated: verify passes, the backup restores.
    verify_ok(&repo);
    let mut dst = restore(&s, &repo, "dst", &[]);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
    dst.stop();
}

#[test]
fn wrong_credentials_and_abandoned_uploads() {
    let s = Scratch::new();
    let repo = Repo::s3(&s, "repo");
    // A server that knows only the test's key (moto checks no signature of
    // presigned requests, so the proxy answers as S3 does).
    let strict = objstore::Proxy::start(
        s.path().join("strict.log"),
        &["--require-key", objstore::ACCESS_KEY],
    );
    let o = via(&strict.endpoint(), &["--repo", repo.arg(), "info"])
        .output()
        .unwrap();
    check(&o, "info with the right key");
    let o = via(&strict.endpoint(), &["--repo", repo.arg(), "info"])
        .env("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY")
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret-do-not-print")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("access denied") && e.contains("InvalidAccessKeyId"),
        "{e}"
    );
    assert!(!e.contains("wrong-secret-do-not-print"), "{e}");
    let o = via(&strict.endpoint(), &["--repo", repo.arg(), "info"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", s.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no S3 credentials"), "{}", err(&o));

    // An upload a killed process left behind is aborted by expire.
    let url = repo.arg().to_string();
    let prefix = url.trim_start_matches(&format!("s3://{}/", objstore::BUCKET));
    let py = format!(
        "import boto3; c = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{}', \
         aws_secret_access_key='{}', region_name='us-east-1'); \
         c.create_multipart_upload(Bucket='{}', Key='{prefix}/tmp/upload-left-behind')",
        objstore::server().endpoint,
        objstore::ACCESS_KEY,
        objstore::SECRET_KEY,
        objstore::BUCKET
    );
    let o = Command::new("python3").args(["-c", &py]).output().unwrap();
    check(&o, "create a multipart upload");
    let backend = objstore::backend(&url);
    assert_eq!(
        backend
            .stale_uploads(std::time::Duration::ZERO)
            .unwrap()
            .len(),
        1
    );
    let r = repo.open();
    let mut opts = pgstrata::ExpireOptions::new(pgstrata::Retention::default());
    opts.tmp_age = std::time::Duration::ZERO;
    pgstrata::expire(&r, "main", &opts, false).unwrap();
    assert!(backend
        .stale_uploads(std::time::Duration::ZERO)
        .unwrap()
        .is_empty());
}

/// An expire in object storage deletes the copies and WAL it no longer
/// needs in multi-object requests, and sends no request per object to learn
/// its size (a month's expire removes thousands: one round trip each made
/// it latency-bound). A store without multi-object delete gets one request
/// per object.
#[test]
fn expire_in_object_storage_deletes_in_batches() {
    let s = Scratch::new();
    let repo = Repo::s3(&s, "repo");
    let src = Cluster::archiving(&s, "src", &repo);
    load_sample(&src, 5_000);
    // Three fulls, each followed by incrs and WAL switches.
    for full in 0..3 {
        src.backup_ok(&repo, &["--type", "full"]);
        for i in 0..6 {
            src.exec(&format!(
                "UPDATE accounts SET balance = balance + {i} WHERE id % 10 = {full}; SELECT pg_switch_wal();"
            ));
            if i % 3 == 0 {
                src.backup_ok(&repo, &["--type", "incr"]);
            }
        }
        src.switch_wal_and_wait(&repo);
    }
    let want = src.table_hashes();
    let bucket = objstore::backend(repo.arg());
    let objects = || {
        let n = |p| pgstrata::Backend::list(&bucket, p).unwrap().len();
        n("wal/") + n("manifests/")
    };
    let expire = |log: &str, args: &[&str], full: &str| {
        let mut before = objects();
        let proxy = objstore::Proxy::start(s.path().join(log), args);
        let o = via(
            &proxy.endpoint(),
            &["--repo", repo.arg(), "expire", "--retain-full", full],
        )
        .output()
        .unwrap();
        check(&o, log);
        assert!(out(&o).contains("expired 3 backups"), "{}", out(&o));
        before -= objects();
        let lines = proxy.lines();
        let heads: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("HEAD") && (l.contains("/wal/") || l.contains("/manifests/")))
            .collect();
        assert!(
            heads.is_empty(),
            "{log}: a HEAD per deleted object: {heads:?}"
        );
        // Multi-object deletes, and single deletes of WAL files and copies.
        let multi = lines
            .iter()
            .filter(|l| l.starts_with("DELETE POST"))
            .count();
        let single = lines
            .iter()
            .filter(|l| {
                l.starts_with("DELETE DELETE") && (l.contains("/wal/") || l.contains("/manifests/"))
            })
            .count();
        (before, multi, single)
    };
    // A store without DeleteObjects: refused once, then one request each.
    let (removed, multi, single) = expire("one-by-one.log", &["--no-multi-delete"], "2");
    assert!(removed >= 8, "only {removed} WAL files and copies removed");
    assert_eq!(single, removed, "{multi} refused multi-object deletes");
    verify_ok(&repo);
    let (removed, multi, single) = expire("batches.log", &[], "1");
    assert!(removed >= 8, "only {removed} WAL files and copies removed");
    assert_eq!(single, 0, "{removed} objects: {multi} multi-object deletes");
    assert!(
        multi >= 1 && multi < removed / 2,
        "{multi} multi-object deletes for {removed} objects"
    );
    verify_ok(&repo);
    let mut dst = restore(&s, &repo, "dst", &[]);
    dst.start_ok();
    dst.wait_for_consistency();
    assert_eq!(dst.table_hashes(), want);
    dst.stop();
}
