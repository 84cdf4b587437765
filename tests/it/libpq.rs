//! libpq conventions operators rely on: the password file, connection
//! services, the operating-system user as default, named bad keys and
//! connection errors that say where they tried. Real cluster, password
//! authentication over the Unix socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::harness::*;

/// Run `pgstrata check` with only the given PG* environment.
fn run(repo: &Repo, pgdata: &Path, dbname: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args([
        "--repo",
        repo.arg(),
        "check",
        "--pgdata",
        pgdata.to_str().unwrap(),
    ]);
    if let Some(d) = dbname {
        c.args(["--dbname", d]);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            c.env_remove(&k);
        }
    }
    c.env_remove("PGSTRATA_REPO").env_remove("PGSTRATA_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run pgstrata")
}

#[test]
fn pgpass_service_files_and_connection_errors() {
    let s = Scratch::new();
    let repo = Repo::new(&s);
    let c = Cluster::archiving(&s, "pw", &repo);
    // A password with the characters the password file must escape.
    c.exec(r"ALTER USER postgres PASSWORD 'pw:x\y'");
    let hba = c.pgdata.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("local all all scram-sha-256\n{old}")).unwrap();
    c.exec("SELECT pg_reload_conf()");
    // The postmaster rereads pg_hba.conf when it gets to it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let trusted = format!("host={} user=postgres", c.sockdir.display());
    while postgres::Client::connect(&trusted, postgres::NoTls).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_hba.conf was never reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let sock = c.sockdir.to_str().unwrap().to_string();
    let pgdata = c.pgdata.clone();
    let ci = format!("host={sock} user=postgres");

    // Without a password the server refuses us.
    let o = run(&repo, &pgdata, Some(&ci), &[]);
    fails_with(&o, "password");

    // PGPASSFILE: wildcards, escaping, first matching line wins.
    let home = s.pg_dir("home");
    let pass = home.join("passfile");
    let esc_sock = sock.replace('\\', "\\\\").replace(':', "\\:");
    std::fs::write(
        &pass,
        format!(
            "# comment\nelsewhere:*:*:postgres:wrong\n{esc_sock}:5432:*:postgres:pw\\:x\\\\y\n*:*:*:*:wrong\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = pass.to_str().unwrap();
    let h = home.to_str().unwrap();
    check(
        &run(&repo, &pgdata, Some(&ci), &[("PGPASSFILE", p)]),
        "PGPASSFILE",
    );
    check(
        &run(&repo, &pgdata, Some(&format!("{ci} passfile={p}")), &[]),
        "passfile=",
    );
    // A password file others can read is ignored, as libpq does.
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A warning about the file's mode comes before the error.
    let o = run(&repo, &pgdata, Some(&ci), &[("PGPASSFILE", p)]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("has group or world access"), "{}", err(&o));
    assert!(err(&o).contains("password missing"), "{}", err(&o));
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    // ~/.pgpass.
    std::fs::copy(&pass, home.join(".pgpass")).unwrap();
    std::fs::set_permissions(home.join(".pgpass"), std::fs::Permissions::from_mode(0o600)).unwrap();
    check(&run(&repo, &pgdata, Some(&ci), &[("HOME", h)]), "~/.pgpass");

    // A connection service: service= in --dbname, PGSERVICE, PGSYSCONFDIR.
    let svc = home.join("services.conf");
    std::fs::write(
        &svc,
        format!("[other]\nhost=/nowhere\n\n[strata]\n# the test cluster\nhost={sock}\nuser=postgres\ndbname=postgres\n"),
    )
    .unwrap();
    let sv = svc.to_str().unwrap();
    check(
        &run(
            &repo,
            &pgdata,
            Some("service=strata"),
            &[("PGSERVICEFILE", sv), ("PGPASSFILE", p)],
        ),
        "service=",
    );
    check(
        &run(
            &repo,
            &pgdata,
            None,
            &[
                ("PGSERVICEFILE", sv),
                ("PGSERVICE", "strata"),
                ("PGPASSFILE", p),
            ],
        ),
        "PGSERVICE",
    );
    let sysconf = s.pg_dir("sysconf");
    std::fs::copy(&svc, sysconf.join("pg_service.conf")).unwrap();
    check(
        &run(
            &repo,
            &pgdata,
            Some("service=strata"),
            &[
                ("PGSYSCONFDIR", sysconf.to_str().unwrap()),
                ("HOME", "/nonexistent"),
                ("PGPASSFILE", p),
            ],
        ),
        "PGSYSCONFDIR",
    );
    fails_with(
        &run(
            &repo,
            &pgdata,
            Some("service=nope"),
            &[("PGSERVICEFILE", sv)],
        ),
        "definition of service \"nope\" not found",
    );

    // The default user is the operating-system user (root here), not $USER.
    let o = run(
        &repo,
        &pgdata,
        Some(&format!("host={sock}")),
        &[("USER", "postgres"), ("PGPASSWORD", "not-it")],
    );
    fails_with(&o, "\"root\"");

    // A bad key is named; a refused connection says where and gives a hint.
    let o = run(&repo, &pgdata, Some(&format!("host={sock} prot=5432")), &[]);
    fails_one_line(&o, 1, "unknown connection setting \"prot\"");
    let nosock = s.path().join("nosock");
    let o = run(
        &repo,
        &pgdata,
        Some(&format!(
            "host={} port=5499 user=postgres",
            nosock.display()
        )),
        &[("PGPASSWORD", "pw:x\\y")],
    );
    fails_with(
        &o,
        &format!("socket \"{}/.s.PGSQL.5499\"", nosock.display()),
    );
    fails_with(&o, "is the server running and listening on");
    let o2 = run(
        &repo,
        &pgdata,
        Some("host=127.0.0.1 port=1 user=postgres connect_timeout=3"),
        &[],
    );
    fails_with(&o2, "host \"127.0.0.1\", port 1");
    // The password never reaches the output.
    for o in [&o, &o2] {
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), err(o));
        assert!(!all.contains("pw:x"), "{all}");
    }
}
