//! Security: what the repository creates is private by default (group-
//! readable on request), passwords never reach the output, and bad input to
//! the integrity commands is a one-line error that changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{err, fails_with, misused, out};
use crate::harness::*;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file and directory below the repository, with a mode other than
/// the expected one.
fn wrong_modes(root: &Path, file: u32, dir: u32) -> Vec<String> {
    let mut bad = Vec::new();
    for e in walkdir::WalkDir::new(root).into_iter().flatten() {
        let want = if e.file_type().is_dir() { dir } else { file };
        let m = mode(e.path());
        if m != want {
            bad.push(format!("{} {:o} (want {:o})", e.path().display(), m, want));
        }
    }
    bad
}

fn backed_up_repo(s: &Scratch, group_readable: bool) -> (Repo, Cluster) {
    let path = s.pg_dir("repo");
    let mut args = vec!["--repo", path.to_str().unwrap(), "init"];
    if group_readable {
        args.push("--group-readable");
    }
    pgstrata_ok(&args);
    let repo = Repo {
        path,
        pass: None,
        url: None,
    };
    let src = Cluster::new(
        s,
        "src",
        ClusterOpts {
            archive_to: Some(&repo),
            ..Default::default()
        },
    );
    src.exec("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g");
    src.backup_ok(&repo, &["--type", "full"]);
    src.switch_wal_and_wait(&repo);
    check(
        &pgstrata(&["--repo", repo.arg(), "repair", "--rebuild-catalog"]),
        "repair",
    );
    (repo, src)
}

fn assert_kinds_present(root: &Path) {
    let names: Vec<String> = walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    for needle in [".pack", "catalog.db", ".json.zst", "wal/main/", "locks/"] {
        assert!(
            names.iter().any(|n| n.contains(needle)),
            "no {needle} in {names:?}"
        );
    }
}

#[test]
fn repository_modes_private_by_default() {
    let s = Scratch::new();
    let (repo, _src) = backed_up_repo(&s, false);
    assert_kinds_present(&repo.path);
    let bad = wrong_modes(&repo.path, 0o600, 0o700);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn repository_modes_group_readable_on_request() {
    let s = Scratch::new();
    let (repo, _src) = backed_up_repo(&s, true);
    assert_kinds_present(&repo.path);
    let bad = wrong_modes(&repo.path, 0o640, 0o750);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn passwords_never_reach_the_output() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let data = s.pg_dir("fake");
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::write(data.join("global/pg_control"), [0u8; 8192]).unwrap();
    let nosock = s.path().join("nosock");
    let cases = [
        format!("host={} port=1 user=x password=s3cr3tpw", nosock.display()),
        "host=127.0.0.1 port=1 user=x password=s3cr3tpw connect_timeout=2".to_string(),
        "postgresql://x:s3cr3tpw@127.0.0.1:1/db".to_string(),
        "host=127.0.0.1 password=s3cr3tpw bogus=1".to_string(),
        "password='s3cr3tpw".to_string(),
    ];
    for ci in &cases {
        for cmd in ["backup", "check"] {
            let o = pgstrata(&[
                "--repo",
                repo.arg(),
                "--log-level",
                "trace",
                cmd,
                "--pgdata",
                data.to_str().unwrap(),
                "--dbname",
                ci,
            ]);
            assert_eq!(o.status.code(), Some(1), "{cmd} {ci}: {}", err(&o));
            let all = format!("{}{}", out(&o), err(&o));
            assert!(
                !all.contains("s3cr3tpw"),
                "{cmd} {ci} printed the password: {all}"
            );
            assert!(err(&o).starts_with("pgstrata: error: "), "{}", err(&o));
        }
    }
    // From the environment too.
    let o = std::process::Command::new(BIN)
        .args([
            "--repo",
            repo.arg(),
            "--log-level",
            "trace",
            "check",
            "--pgdata",
        ])
        .arg(&data)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "1")
        .env("PGPASSWORD", "s3cr3tpw")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(!format!("{}{}", out(&o), err(&o)).contains("s3cr3tpw"));
}

#[test]
fn integrity_commands_refuse_what_is_not_a_repository() {
    let s = Scratch::new();
    let plain = s.pg_dir("plain");
    std::fs::write(plain.join("file"), b"x").unwrap();
    let missing = s.path().join("missing");
    for dir in [&plain, &missing] {
        let d = dir.to_str().unwrap();
        for args in [
            vec!["--repo", d, "verify"],
            vec!["--repo", d, "repair", "--rebuild-catalog"],
            vec!["--repo", d, "check", "--pgdata", d],
        ] {
            let o = pgstrata(&args);
            fails_with(&o, "is not a pgstrata repository");
            assert_eq!(err(&o).lines().count(), 1, "{}", err(&o));
        }
    }
    // Nothing was written.
    let names: Vec<_> = std::fs::read_dir(&plain).unwrap().flatten().collect();
    assert_eq!(names.len(), 1);
    assert!(!missing.exists());

    // repair without saying what, and verify --set of an unknown backup.
    let repo = Repo::new(&s);
    misused(
        &pgstrata(&["--repo", repo.arg(), "repair"]),
        "--rebuild-catalog",
    );
    fails_with(
        &pgstrata(&["--repo", repo.arg(), "verify", "--set", "nope"]),
        "\"nope\" is not a complete backup in this repository (see `pgstrata info`)",
    );
    // check on a directory that is not a data directory.
    fails_with(
        &pgstrata(&[
            "--repo",
            repo.arg(),
            "check",
            "--pgdata",
            plain.to_str().unwrap(),
        ]),
        "is not a PostgreSQL data directory",
    );
}

/// A cluster listening on 127.0.0.1 with TLS on; stopped when dropped.
fn openssl_cert(dir: &Path, name: &str, cn: &str) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let o = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl (Debian: apt-get install openssl)");
    check(&o, "openssl req");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&crt, std::fs::Permissions::from_mode(0o644)).unwrap();
    give_to_pg(&key);
    give_to_pg(&crt);
}

/// Start `c` (stopped) on TCP 127.0.0.1 with TLS. Tests share the loopback
/// interface: the port comes from the process id, and the next one is tried
/// when it is taken.
fn start_tls(c: &mut Cluster) -> u16 {
    for i in 0..40u32 {
        let port = 20000 + ((std::process::id() * 7 + i * 131) % 30000) as u16;
        let o = c.start_with(&format!("-c listen_addresses=127.0.0.1 -c port={port}"));
        if o.status.success() {
            return port;
        }
    }
    panic!("no free port for the TLS cluster; log:\n{}", c.log_text());
}

#[test]
fn sslmode_is_honoured_over_tcp() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let mut c = Cluster::archiving(&s, "tls", &repo);
    c.stop();
    openssl_cert(&c.pgdata, "server", "localhost");
    let other = s.pg_dir("other-ca");
    openssl_cert(&other, "other", "localhost");
    append(
        &c.pgdata.join("postgresql.conf"),
        "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
    );
    // Only TLS connections get in over TCP: a success proves TLS was used.
    let hba = c.pgdata.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n{old}"),
    )
    .unwrap();
    let port = start_tls(&mut c);
    let root = c.pgdata.join("server.crt");
    let wrong = other.join("other.crt");
    let run = |conn: String| {
        pgstrata(&[
            "--repo",
            repo.arg(),
            "check",
            "--pgdata",
            c.pgdata.to_str().unwrap(),
            "--dbname",
            &conn,
        ])
    };
    let ci = |host: &str, extra: &str| {
        format!(
            "host={host} port={} user=postgres dbname=postgres {extra}",
            port
        )
    };
    check(&run(ci("127.0.0.1", "sslmode=require")), "sslmode=require");
    check(&run(ci("127.0.0.1", "")), "sslmode=prefer (the default)");
    fails_with(&run(ci("127.0.0.1", "sslmode=disable")), "no encryption");
    let full = format!("sslmode=verify-full sslrootcert={}", root.display());
    check(&run(ci("localhost", &full)), "verify-full");
    // verify-full checks the host name; verify-ca only the chain.
    fails_with(&run(ci("127.0.0.1", &full)), "TLS");
    let ca = format!("sslmode=verify-ca sslrootcert={}", root.display());
    check(&run(ci("127.0.0.1", &ca)), "verify-ca");
    // A server certificate from another authority is refused.
    let bad = format!("sslmode=verify-ca sslrootcert={}", wrong.display());
    fails_with(&run(ci("127.0.0.1", &bad)), "certificate verify failed");
    fails_with(
        &run(ci("127.0.0.1", "sslmode=verify-full")),
        "needs a root certificate",
    );
    // A backup over verified TLS.
    let o = pgstrata(&[
        "--repo",
        repo.arg(),
        "backup",
        "--start-fast",
        "--pgdata",
        c.pgdata.to_str().unwrap(),
        "--dbname",
        &ci("localhost", &full),
    ]);
    check(&o, "backup over TLS");
    assert_eq!(repo.backups().len(), 1);
}
