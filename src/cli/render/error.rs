//! The library's errors in the command line's terms: a [`Setting`] is named
//! by its flag, a [`Hint`] becomes the command or flag to use.

use pgstrata::{Error, Hint, Setting};

/// The flag that gives `s` (the same name as its config key).
pub fn flag(s: Setting) -> String {
    format!("--{}", s.key())
}

/// One line for `pgstrata: error: ...`.
pub fn error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Error>() {
        Some(ours) => library_error(ours),
        None => e.to_string(),
    }
}

/// A library error in the command line's terms.
pub fn library_error(e: &Error) -> String {
    match e {
        Error::NotARepository(p) => format!(
            "{e} (run `pgstrata --repo {} init` to create one)",
            p.display()
        ),
        Error::Setting { setting, detail } => format!("{} {detail}", flag(*setting)),
        Error::Hinted { error, hint } => format!("{} ({})", library_error(error), advice(hint)),
        e => e.to_string(),
    }
}

const UPGRADE: &str = "run `pgstrata upgrade --pgdata DIR`";

fn advice(h: &Hint) -> String {
    let with_value = |s: &Setting, v: &Option<String>| match v {
        Some(v) => format!("{} {v}", flag(*s)),
        None => flag(*s),
    };
    match h {
        Hint::RebuildCatalog => "run `pgstrata repair --rebuild-catalog`".into(),
        Hint::Upgrade => format!("after pg_upgrade {UPGRADE} first"),
        Hint::OtherClusterOrUpgrade => format!(
            "it is another PostgreSQL cluster: use another --cluster name; or this cluster was \
             upgraded with pg_upgrade: {UPGRADE} first"
        ),
        Hint::SeeInfo => "see `pgstrata info`".into(),
        Hint::NothingWrittenVerify => {
            "nothing was written; `pgstrata verify` shows what else is affected".into()
        }
        Hint::Give { setting, value } => format!("use {}", with_value(setting, value)),
        Hint::LeaveOut(s) => format!("or leave out {}", flag(*s)),
        Hint::RestoreWith { setting, value } => {
            format!("restore with {}", with_value(setting, value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_commands_and_flags() {
        let e = anyhow::Error::from(
            Error::NotFound("catalog /r/catalog.db is missing".into()).hint(Hint::RebuildCatalog),
        );
        assert_eq!(
            error(&e),
            "catalog /r/catalog.db is missing (run `pgstrata repair --rebuild-catalog`)"
        );
        let e = anyhow::Error::from(
            Error::NotFound("backup \"B\" is not a complete backup".into()).hint(Hint::SeeInfo),
        );
        assert_eq!(
            error(&e),
            "backup \"B\" is not a complete backup (see `pgstrata info`)"
        );
        let e = anyhow::Error::from(
            Error::corrupt("a (backup B)", "no block map").hint(Hint::NothingWrittenVerify),
        );
        assert_eq!(
            error(&e),
            "corrupt a (backup B): no block map (nothing was written; `pgstrata verify` shows \
             what else is affected)"
        );
        let e = anyhow::Error::from(Error::setting(Setting::LinkMap, "names \"x\""));
        assert_eq!(error(&e), "--link-map names \"x\"");
        let e = anyhow::Error::from(Error::NotARepository("/r".into()));
        assert_eq!(
            error(&e),
            "/r is not a pgstrata repository (run `pgstrata --repo /r init` to create one)"
        );
    }
}
