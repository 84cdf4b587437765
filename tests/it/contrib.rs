//! The systemd units and timers shipped under contrib/systemd: systemd's
//! own checker must accept them as they would be installed (absolute
//! /usr/local/bin/pgstrata), and they must say what docs/operations.md says.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

const UNITS: &[&str] = &[
    "pgstrata@.service",
    "pgstrata-verify.service",
    "pgstrata-full.timer",
    "pgstrata-incr.timer",
    "pgstrata-verify.timer",
    "pgstrata-drill.service",
    "pgstrata-drill.timer",
];

fn contrib() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd"))
}

#[test]
fn systemd_units_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "systemd-analyze is needed to check contrib/systemd (Debian: apt-get install systemd; \
             .ci/run installs it)",
        );
    // A throwaway root: the units where an operator installs them, systemd's
    // own units beside them, and an executable at /usr/local/bin/pgstrata.
    let s = Scratch::new();
    let root = s.path().join("root");
    let etc = root.join("etc/systemd/system");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::copy(BIN, root.join("usr/local/bin/pgstrata")).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(root.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(st.success(), "copy systemd's units");
    for u in UNITS {
        std::fs::copy(contrib().join(u), etc.join(u)).unwrap();
    }
    let args: Vec<String> = [
        "pgstrata@full.service",
        "pgstrata@diff.service",
        "pgstrata@incr.service",
        "pgstrata-verify.service",
        "pgstrata-full.timer",
        "pgstrata-incr.timer",
        "pgstrata-verify.timer",
        "pgstrata-drill.service",
        "pgstrata-drill.timer",
    ]
    .iter()
    .map(|u| format!("/etc/systemd/system/{u}"))
    .collect();
    let o = Command::new(analyze)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(&args)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // systemd-analyze only warns about some mistakes: any word is a failure.
    assert!(
        o.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    let text = |u: &str| std::fs::read_to_string(contrib().join(u)).unwrap();
    let backup = text("pgstrata@.service");
    let exec = backup
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    assert!(
        exec.starts_with("ExecStart=/usr/local/bin/pgstrata "),
        "{exec}"
    );
    assert!(
        exec.contains("--type %i") && exec.contains("--lock-wait"),
        "{exec}"
    );
    assert!(text("pgstrata-verify.service").contains("ExecStart=/usr/local/bin/pgstrata "));
    assert!(text("pgstrata-full.timer").contains("Unit=pgstrata@full.service"));
    assert!(text("pgstrata-incr.timer").contains("Unit=pgstrata@incr.service"));
    assert!(text("pgstrata-incr.timer").contains("OnCalendar=*-*-* *:00:00"));
    assert!(text("pgstrata-verify.timer").contains("Unit=pgstrata-verify.service"));
    assert!(text("pgstrata-drill.service").contains("ExecStart=/usr/local/bin/pgstrata "));
    assert!(text("pgstrata-drill.timer").contains("Unit=pgstrata-drill.service"));
    assert!(text("pgstrata-drill.timer").contains("OnCalendar=Sun "));

    // The command lines are valid for this pgstrata: with a configuration
    // naming a repository that does not exist, they get as far as opening it.
    let cfg = s.path().join("pgstrata.toml");
    let missing = s.path().join("no-repo");
    std::fs::write(
        &cfg,
        format!(
            "repo = \"{}\"\npgdata = \"{}\"\n",
            missing.display(),
            s.path().join("no-pgdata").display()
        ),
    )
    .unwrap();
    for (unit, inst) in [
        ("pgstrata@.service", "full"),
        ("pgstrata@.service", "incr"),
        ("pgstrata-verify.service", ""),
        ("pgstrata-drill.service", ""),
    ] {
        let line = text(unit)
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap()
            .replace("%i", inst)
            .replace("/etc/pgstrata/pgstrata.toml", cfg.to_str().unwrap());
        let words: Vec<&str> = line["ExecStart=".len()..].split_whitespace().collect();
        let o = Command::new(BIN)
            .args(&words[1..])
            .env_remove("PGSTRATA_REPO")
            .env_remove("PGSTRATA_CONFIG")
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{unit} ({inst}): {e}");
        assert!(
            e.contains("not a pgstrata repository"),
            "{unit} ({inst}): {e}"
        );
    }
}
