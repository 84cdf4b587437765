//! The library's layers point one way: `pg` → `format` → `store` →
//! `catalog` → `repo` → commands, commands never use one another, and
//! commands never reach past `repo` to the storage backend (`store`): they
//! read stored data through the repository's one reader (see
//! docs/design.md). This reads the sources, so it needs no PostgreSQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Rank of each module: `error`, `util` and `progress` (0) may be used by
/// all, a module may use only lower ranks, and the commands (6, the modules
/// under `src/commands/`) may not use each other; `drill` (7) may use them.
/// Unit test modules are exempt.
fn rank(module: &str) -> Option<u32> {
    Some(match module {
        "error" | "util" | "progress" | "Error" | "Result" => 0,
        "pg" => 1,
        "format" => 2,
        "store" => 3,
        "catalog" => 4,
        "repo" => 5,
        "commands::drill" => 7,
        m if m.starts_with("commands::") => 6,
        _ => return None,
    })
}

/// May `module` use `used`? Lower ranks only, anything of rank 0; and a
/// command not `store`, whose objects it reads through `repo`.
fn allowed(module: &str, used: &str) -> bool {
    if used == module {
        return true;
    }
    if module.starts_with("commands::") && used == "store" {
        return false;
    }
    match (rank(module), rank(used)) {
        (_, Some(0)) => true,
        (Some(r), Some(u)) => u < r,
        _ => false,
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Modules named by `crate::` paths in `text` (including `crate::{a, b::c}`
/// groups): the top-level module, or `commands::x` for a command.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.insert(module_of(item.trim()));
            }
        } else {
            out.insert(module_of(rest));
        }
    }
    out
}

/// The module a path (`backup::x`, `commands::restore::plan`) names.
fn module_of(path: &str) -> String {
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let first = word(path);
    match path[first.len()..].strip_prefix("::") {
        Some(rest) if first == "commands" => format!("commands::{}", word(rest)),
        _ => first,
    }
}

/// The module a source file belongs to, from its path under `src/`.
fn module_of_file(rel: &Path) -> String {
    let mut parts = rel.components().map(|c| {
        c.as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string()
    });
    let first = parts.next().unwrap();
    match (first.as_str(), parts.next()) {
        ("commands", Some(cmd)) if cmd != "mod" => format!("commands::{cmd}"),
        _ => first,
    }
}

#[test]
fn layers_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = module_of_file(rel);
        if matches!(module.as_str(), "lib" | "main" | "cli" | "commands") {
            // The API list, the binary (which sees only the API), and the
            // list of commands.
            continue;
        }
        if rank(&module).is_none() {
            violations.push(format!("{}: module {module} has no layer", rel.display()));
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests (the trailing `mod tests`) may use fixtures of any layer.
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => text.as_str(),
        };
        for used in used_modules(code) {
            if !allowed(&module, &used) {
                violations.push(format!("{} ({module}) uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(checked > 30, "only {checked} files checked");
    assert!(
        violations.is_empty(),
        "layer violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_violations() {
    let m = used_modules(
        "use crate::{commands::backup::x, pg};\nlet a = crate::commands::restore::plan();",
    );
    let v: Vec<&str> = m.iter().map(String::as_str).collect();
    assert_eq!(v, ["commands::backup", "commands::restore", "pg"]);
    assert_eq!(
        module_of_file(Path::new("commands/verify/layout.rs")),
        "commands::verify"
    );
    assert_eq!(
        module_of_file(Path::new("commands/info.rs")),
        "commands::info"
    );
    assert_eq!(module_of_file(Path::new("repo/replica/mod.rs")), "repo");
    // Sideways between commands, up, and from a command to the backend.
    assert!(!allowed("commands::backup", "commands::restore"));
    assert!(!allowed("catalog", "repo"));
    assert!(allowed("commands::drill", "commands::restore"));
    assert!(allowed("commands::verify", "repo"));
    assert!(allowed("repo", "store"));
    let m = used_modules(
        "use crate::store::{read_trailer, Backend};
use crate::repo::Stored;",
    );
    let bad: Vec<&String> = m
        .iter()
        .filter(|u| !allowed("commands::verify", u))
        .collect();
    assert_eq!(bad, ["store"]);
}

/// docs/design.md's architecture section names every source file, so a
/// newcomer's map of the tree stays true.
#[test]
fn the_design_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let design = std::fs::read_to_string(root.join("docs/design.md")).unwrap();
    let start = design
        .find("## Architecture")
        .expect("an architecture section");
    let len = design[start + 1..]
        .find("\n## ")
        .unwrap_or(design.len() - start - 1);
    let section = &design[start..start + 1 + len];
    let src = root.join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let missing: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .filter(|rel| !section.contains(&format!("`{rel}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/design.md's architecture section does not name: {}",
        missing.join(", ")
    );
}
