//! The TOML configuration file: the settings that stay from run to run,
//! under their command-line names (kebab-case), except `archive-async` and
//! `archive-get-prefetch`, named for their commands, and the `[drill]`
//! table. The settings themselves are defined once, in `args`: the file is
//! read into the same structs the command line is parsed into.
//!
//! The whole file is checked when it is loaded, whatever the command: every
//! key must be a setting of some command, and every value must have that
//! setting's type. A typo is a usage error naming the key, before any work.

use std::collections::BTreeSet;
use std::path::Path;

use merge::Merge;
use serde::de::DeserializeOwned;

use super::args::{
    ArchiveGetArgs, ArchivePushArgs, BackupArgs, CheckArgs, DrillArgs, ExpireArgs, GlobalArgs,
    RepairArgs, RestoreArgs, UpgradeArgs,
};

/// A loaded, checked config file (empty when none is named).
#[derive(Debug, Default)]
pub struct ConfigFile {
    table: toml::Table,
}

impl ConfigFile {
    /// Read and check the config file, if one is named. Errors are one line.
    pub fn load(path: Option<&Path>) -> Result<ConfigFile, String> {
        let Some(p) = path else {
            return Ok(ConfigFile::default());
        };
        let invalid = |e: String| format!("invalid config file {}: {e}", p.display());
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e: toml::de::Error| invalid(e.message().into()))?;
        let file = ConfigFile { table };
        match file.unknown_keys().map_err(invalid)?.first() {
            Some(k) => Err(invalid(format!("unknown setting `{k}`"))),
            None => Ok(file),
        }
    }

    /// The file's values for settings of type `T`.
    pub fn read<T: DeserializeOwned>(&self) -> Result<T, String> {
        self.read_noting(|_| {})
    }

    /// `given` (the command line and environment), with what it leaves
    /// unset taken from the file.
    pub fn under<T: DeserializeOwned + Merge>(&self, mut given: T) -> Result<T, String> {
        given.merge(self.read()?);
        Ok(given)
    }

    /// Deserialize, calling `ignored` with the dotted path of every key `T`
    /// has no setting for. Errors name the key.
    fn read_noting<T: DeserializeOwned>(&self, ignored: impl FnMut(String)) -> Result<T, String> {
        let mut ignored = ignored;
        let mut note = |p: serde_ignored::Path<'_>| ignored(p.to_string());
        let de =
            serde_ignored::Deserializer::new(toml::Value::Table(self.table.clone()), &mut note);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message();
            if path == "." {
                msg.to_string()
            } else {
                format!("{path}: {msg}")
            }
        })
    }

    /// Keys no command has a setting for, sorted. A key is known when some
    /// command's settings read it (or the table it is in, whole).
    fn unknown_keys(&self) -> Result<Vec<String>, String> {
        let per_command = [
            self.ignored_by::<GlobalArgs>()?,
            self.ignored_by::<BackupArgs>()?,
            self.ignored_by::<RestoreArgs>()?,
            self.ignored_by::<ExpireArgs>()?,
            self.ignored_by::<ArchivePushArgs>()?,
            self.ignored_by::<ArchiveGetArgs>()?,
            self.ignored_by::<CheckArgs>()?,
            self.ignored_by::<RepairArgs>()?,
            self.ignored_by::<UpgradeArgs>()?,
            self.ignored_by::<DrillArgs>()?,
        ];
        let all: BTreeSet<&String> = per_command.iter().flatten().collect();
        let ignored_everywhere = |key: &str| {
            per_command.iter().all(|ignored| {
                ignored.iter().any(|i| {
                    key == i
                        || key
                            .strip_prefix(i.as_str())
                            .is_some_and(|rest| rest.starts_with('.'))
                })
            })
        };
        Ok(all
            .into_iter()
            .filter(|k| ignored_everywhere(k))
            .cloned()
            .collect())
    }

    fn ignored_by<T: DeserializeOwned>(&self) -> Result<BTreeSet<String>, String> {
        let mut ignored = BTreeSet::new();
        self.read_noting::<T>(|k| {
            ignored.insert(k);
        })?;
        Ok(ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<ConfigFile, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        ConfigFile::load(Some(&p))
    }

    #[test]
    fn every_setting_of_some_command_is_known() {
        let c = parsed(
            "repo = \"/r\"\nworkers = 2\nretain-full = 2\narchive-async = true\n\
             archive-get-prefetch = 4\nlink-all = true\n[drill]\ntimeout = 5\n\
             settings = { work_mem = \"4MB\" }\n[[drill.check]]\nname = \"a\"\nsql = \"SELECT 1\"\n",
        )
        .unwrap();
        let b: BackupArgs = c.read().unwrap();
        assert_eq!((b.workers, b.retain_full), (Some(2), Some(2)));
        let d: DrillArgs = c.read().unwrap();
        assert_eq!(d.drill.timeout, Some(5));
        assert_eq!(d.drill.check.len(), 1);
        assert_eq!(d.workers, Some(2));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_by_name() {
        let e = parsed("retain-fulls = 2\n").unwrap_err();
        assert!(e.contains("`retain-fulls`"), "{e}");
        // A command-line-only option is not a setting.
        let e = parsed("type = \"full\"\n").unwrap_err();
        assert!(e.contains("`type`"), "{e}");
        // Options of [drill] belong in that table, and only there.
        assert!(parsed("scratch = \"/x\"\n")
            .unwrap_err()
            .contains("`scratch`"));
        let e = parsed("[drill]\npgdata = \"/x\"\n").unwrap_err();
        assert!(e.contains("`drill.pgdata`"), "{e}");
        let e = parsed("archive-queue-full = \"maybe\"\n").unwrap_err();
        assert!(e.contains("archive-queue-full"), "{e}");
        let e = parsed("workers = \"two\"\n").unwrap_err();
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn the_command_line_wins_and_the_file_fills_in() {
        let c = parsed("workers = 2\ncompress-level = 9\nstart-fast = true\n").unwrap();
        let given = BackupArgs {
            workers: Some(4),
            ..Default::default()
        };
        let b = c.under(given).unwrap();
        assert_eq!(b.workers, Some(4));
        assert_eq!(b.compress_level, Some(9));
        assert!(b.start_fast);
    }
}
