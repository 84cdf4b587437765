//! Recovery settings written into a restored data directory.

use std::fmt::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum RecoveryTarget {
    /// Replay all archived WAL.
    #[default]
    EndOfWal,
    /// Stop as soon as the backup is consistent.
    Immediate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pause" => Ok(TargetAction::Pause),
            "promote" => Ok(TargetAction::Promote),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(Error::invalid(format!(
                "unknown target action {s:?} (pause, promote or shutdown)"
            ))),
        }
    }
    fn as_str(&self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

pub const BEGIN: &str = "# BEGIN pgstrata recovery settings";
pub const END: &str = "# END pgstrata recovery settings";

/// Quote a value for postgresql.conf.
pub fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quote a word for the shell that runs `restore_command`.
fn shell_word(v: &str) -> String {
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// The `restore_command` calling this binary with this repository.
pub fn restore_command(exe: &Path, repo: &Path, cluster: &str) -> String {
    format!(
        "{} --repo {} --cluster {} archive-get %f \"%p\"",
        shell_word(&exe.to_string_lossy()),
        shell_word(&repo.to_string_lossy()),
        shell_word(cluster)
    )
}

/// Settings block for postgresql.auto.conf.
pub fn settings(
    restore_command: &str,
    target: &RecoveryTarget,
    action: Option<TargetAction>,
    timeline: Option<&str>,
    backup_id: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN} (backup {backup_id})");
    let _ = writeln!(s, "restore_command = {}", quote(restore_command));
    if let RecoveryTarget::Immediate = target {
        let _ = writeln!(s, "recovery_target = 'immediate'");
    }
    if let Some(a) = action {
        let _ = writeln!(s, "recovery_target_action = '{}'", a.as_str());
    }
    if let Some(t) = timeline {
        let _ = writeln!(s, "recovery_target_timeline = {}", quote(t));
    }
    let _ = writeln!(s, "{END}");
    s
}

/// Remove a previous pgstrata block from postgresql.auto.conf contents.
pub fn strip_previous(conf: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in conf.lines() {
        if line.starts_with(BEGIN) {
            inside = true;
            continue;
        }
        if inside {
            if line.starts_with(END) {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_block() {
        let c = restore_command(
            Path::new("/usr/bin/pgstrata"),
            Path::new("/var/lib/my repo"),
            "main",
        );
        assert_eq!(
            c,
            "/usr/bin/pgstrata --repo '/var/lib/my repo' --cluster main archive-get %f \"%p\""
        );
        let s = settings(
            &c,
            &RecoveryTarget::Immediate,
            Some(TargetAction::Promote),
            None,
            "X",
        );
        assert!(s.contains("recovery_target = 'immediate'"));
        assert!(s.contains(
            "restore_command = '/usr/bin/pgstrata --repo ''/var/lib/my repo'' --cluster"
        ));
        let conf = format!("a = 1\n{s}b = 2\n");
        assert_eq!(strip_previous(&conf), "a = 1\nb = 2\n");
    }
}
