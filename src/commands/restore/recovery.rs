//! Recovery settings written into a restored data directory.

use std::fmt::Write;

use crate::commands::restore::target::{RecoveryTarget, TimelineTarget};
use crate::error::{Error, Result};
use crate::util::quote;

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

pub(super) const BEGIN: &str = "# BEGIN pgstrata recovery settings";
pub(super) const END: &str = "# END pgstrata recovery settings";

/// Whether the restored copy keeps the backup's
/// archiving settings once it promotes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ArchiveMode {
    /// Write `archive_mode = off`: the copy never archives (the default: a
    /// test copy must not push its WAL and timeline history into the
    /// repository of the cluster it was copied from).
    #[default]
    Off,
    /// Keep `archive_mode` and `archive_command` from the backup (a restore
    /// that replaces the primary).
    Preserve,
}

impl ArchiveMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "off" => Ok(ArchiveMode::Off),
            "preserve" => Ok(ArchiveMode::Preserve),
            _ => Err(Error::invalid(format!(
                "unknown archive mode {s:?} (off or preserve)"
            ))),
        }
    }
}

/// What recovery should do, as the operator asked.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pub target: RecoveryTarget,
    pub action: Option<TargetAction>,
    pub timeline: Option<TimelineTarget>,
    /// Stop just before the target instead of just after it.
    pub exclusive: bool,
    /// Start as a standby (`standby.signal`) instead of recovering and promoting.
    pub standby: bool,
    pub primary_conninfo: Option<String>,
    /// Whether the copy archives once it promotes.
    pub archive_mode: ArchiveMode,
}

impl Recovery {
    pub fn signal_file(&self) -> &'static str {
        if self.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        }
    }

    /// The block of settings for postgresql.auto.conf.
    pub fn settings(&self, restore_command: &str, backup_id: &str) -> String {
        let mut s = String::new();
        let mut set = |k: &str, v: &str| {
            let _ = writeln!(s, "{k} = {}", quote(v));
        };
        set("restore_command", restore_command);
        match &self.target {
            RecoveryTarget::EndOfWal => {}
            RecoveryTarget::Immediate => set("recovery_target", "immediate"),
            RecoveryTarget::Time { text, .. } => set("recovery_target_time", text),
            RecoveryTarget::Lsn(l) => set("recovery_target_lsn", &l.to_string()),
            RecoveryTarget::Xid(x) => set("recovery_target_xid", x),
            RecoveryTarget::Name(n) => set("recovery_target_name", n),
        }
        if self.exclusive {
            set("recovery_target_inclusive", "off");
        }
        if let Some(a) = self.action {
            set("recovery_target_action", a.as_str());
        }
        if let Some(t) = &self.timeline {
            set("recovery_target_timeline", &t.setting());
        }
        if let Some(c) = &self.primary_conninfo {
            set("primary_conninfo", c);
        }
        if self.archive_mode == ArchiveMode::Off {
            set("archive_mode", "off");
        }
        format!("{BEGIN} (backup {backup_id})\n{s}{END}\n")
    }
}

/// Remove a previous pgstrata block from postgresql.auto.conf contents.
pub(super) fn strip_previous(conf: &str) -> String {
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
        let c = "/usr/bin/pgstrata get 'main' %f \"%p\"";
        let r = Recovery {
            target: RecoveryTarget::Immediate,
            action: Some(TargetAction::Promote),
            ..Default::default()
        };
        let s = r.settings(c, "X");
        assert!(s.contains("recovery_target = 'immediate'"));
        assert!(s.contains("archive_mode = 'off'"), "{s}");
        let preserve = Recovery {
            archive_mode: ArchiveMode::Preserve,
            ..Default::default()
        };
        assert!(!preserve.settings("cmd", "X").contains("archive_mode"));
        assert_eq!(
            ArchiveMode::parse("preserve").unwrap(),
            ArchiveMode::Preserve
        );
        assert!(ArchiveMode::parse("on").is_err());
        assert!(s.contains("restore_command = '/usr/bin/pgstrata get ''main'' %f \"%p\"'"));
        let conf = format!("a = 1\n{s}b = 2\n");
        assert_eq!(strip_previous(&conf), "a = 1\nb = 2\n");
        let r = Recovery {
            target: RecoveryTarget::Name("before it's gone".into()),
            exclusive: true,
            standby: true,
            primary_conninfo: Some("host=/tmp port=5432".into()),
            timeline: Some(TimelineTarget::Id(2)),
            ..Default::default()
        };
        let s = r.settings("cmd", "X");
        assert!(
            s.contains("recovery_target_name = 'before it''s gone'"),
            "{s}"
        );
        assert!(s.contains("recovery_target_inclusive = 'off'"));
        assert!(s.contains("recovery_target_timeline = '2'"));
        assert!(s.contains("primary_conninfo = 'host=/tmp port=5432'"));
        assert_eq!(r.signal_file(), "standby.signal");
    }
}
