//! The command line, as clap definitions, and the config file's settings:
//! each command's settings are one struct that clap parses and serde reads
//! from the config file under the same name (kebab-case), so a setting is
//! defined once. Fields marked `#[serde(skip)]` exist only on the command
//! line; fields marked `#[arg(skip)]` only in the file. `config::ConfigFile`
//! layers the file under the command line ([`Merge`]: what the command line
//! leaves unset comes from the file). Every option and argument has a help
//! text; `pgstrata completions` and `pgstrata man` are generated from these
//! definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use merge::Merge;
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "pgstrata",
    version,
    about = "Incremental, block-granular physical backups for PostgreSQL",
    after_help = "Exit status: 0 success, 1 failure (one line on stderr says why), 2 usage error.\n\
                  Connection settings follow libpq: --dbname CONNINFO, or PGHOST, PGPORT, \
                  PGUSER, PGPASSWORD, PGDATABASE."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes.
#[derive(clap::Args, Debug, Default, Clone, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct GlobalArgs {
    /// Repository: a directory, or s3://BUCKET/PREFIX in S3-compatible object
    /// storage [config: repo].
    #[arg(long, global = true, env = "PGSTRATA_REPO", value_name = "DIR|URL")]
    pub repo: Option<PathBuf>,
    /// Cluster name inside the repository [default: main; config: cluster].
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,
    /// TOML configuration file for the settings that stay from run to run (kebab-case keys).
    #[arg(long, global = true, env = "PGSTRATA_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// error, warn, info, debug or trace, any case [default: warn; env: PGSTRATA_LOG, RUST_LOG].
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// File holding the passphrase of an encrypted repository, mode 0600
    /// [env: PGSTRATA_PASSPHRASE holds the passphrase itself; config: passphrase-file].
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Shell command that prints the passphrase [config: passphrase-command].
    #[arg(
        long,
        global = true,
        value_name = "COMMAND",
        conflicts_with = "passphrase_file"
    )]
    pub passphrase_command: Option<String>,
    /// No progress bars and no summaries.
    #[arg(long, short, global = true)]
    #[serde(skip)]
    #[merge(skip)]
    pub quiet: bool,
    /// S3 endpoint URL, for S3-compatible servers (MinIO, Ceph RGW, R2, ...)
    /// [default: AWS's for the region; config: s3-endpoint].
    #[arg(long, global = true, env = "PGSTRATA_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, else us-east-1; config: s3-region].
    #[arg(long, global = true, env = "PGSTRATA_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// S3 addressing: `host` (BUCKET.endpoint) or `path` (endpoint/BUCKET)
    /// [default: path with --s3-endpoint, else host; config: s3-uri-style].
    #[arg(long, global = true, env = "PGSTRATA_S3_URI_STYLE", value_enum)]
    pub s3_uri_style: Option<UriStyleArg>,
    /// CA certificates (PEM) for an S3 endpoint with a private CA [config: s3-ca-file].
    #[arg(long, global = true, env = "PGSTRATA_S3_CA_FILE", value_name = "FILE")]
    pub s3_ca_file: Option<PathBuf>,
    /// S3 storage class of new objects, e.g. STANDARD_IA [config: s3-storage-class].
    #[arg(
        long,
        global = true,
        env = "PGSTRATA_S3_STORAGE_CLASS",
        value_name = "CLASS"
    )]
    pub s3_storage_class: Option<String>,
    /// Where the catalog of a repository in object storage is cached
    /// [default: $XDG_CACHE_HOME/pgstrata, ~/.cache/pgstrata, or
    /// /var/cache/pgstrata for root; config: cache-dir].
    #[arg(long, global = true, env = "PGSTRATA_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TypeArg {
    /// Read every file; store only what the repository lacks.
    Full,
    /// Compare with the last full backup.
    Diff,
    /// Compare with the last backup of any type.
    Incr,
}

#[derive(Clone, Copy, Debug, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeTrackingArg {
    /// From WAL when it is complete, else by reading files.
    Auto,
    /// From WAL, or fail.
    Wal,
    /// By reading files.
    Off,
    /// From WAL, and read every block as well to prove it: fail if WAL
    /// missed a block written since the prior backup's start (slow).
    Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UriStyleArg {
    /// https://BUCKET.endpoint/KEY (AWS's default).
    Host,
    /// https://endpoint/BUCKET/KEY (most S3-compatible servers).
    Path,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum OutputArg {
    /// For people.
    #[default]
    Text,
    /// For programs (a stable interface).
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TargetArg {
    /// Stop as soon as the backup is consistent.
    Immediate,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum RestoreTypeArg {
    /// Recover (to the target) and start as a primary: recovery.signal.
    #[default]
    Recovery,
    /// Start as a standby: standby.signal.
    Standby,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ActionArg {
    /// Pause at the target (PostgreSQL's default).
    Pause,
    /// End recovery at the target and accept writes.
    Promote,
    /// Stop the server at the target.
    Shutdown,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an empty repository (says so if it already is one).
    Init {
        /// Make the repository readable by the owner's group.
        #[arg(long)]
        group_readable: bool,
        /// Encrypt the repository under the passphrase (PGSTRATA_PASSPHRASE,
        /// --passphrase-file or --passphrase-command). Losing the passphrase
        /// loses every backup in it.
        #[arg(long)]
        encrypt: bool,
    },
    /// Wrap an encrypted repository's key under a new passphrase (no data
    /// is rewritten). The current passphrase is given as usual.
    ChangePassphrase {
        /// File holding the new passphrase, mode 0600 [env: PGSTRATA_NEW_PASSPHRASE].
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        /// Shell command that prints the new passphrase.
        #[arg(long, value_name = "COMMAND", conflicts_with = "new_passphrase_file")]
        new_passphrase_command: Option<String>,
    },
    /// Back up a running cluster.
    Backup(BackupArgs),
    /// Reassemble a data directory from a backup.
    Restore(Box<RestoreArgs>),
    /// Apply retention, remove WAL no backup needs, collect garbage.
    Expire(ExpireArgs),
    /// Archive a WAL file (for archive_command = '... archive-push %p').
    ArchivePush(ArchivePushArgs),
    /// Fetch an archived WAL file (for restore_command = '... archive-get %f "%p"').
    ArchiveGet(ArchiveGetArgs),
    /// The background pusher of `archive-push --async` (started by it).
    #[command(hide = true)]
    ArchivePushWorker(PushWorkerArgs),
    /// The background fetcher of `archive-get --prefetch` (started by it).
    #[command(hide = true)]
    ArchiveGetWorker(GetWorkerArgs),
    /// Show backups, sizes and the WAL archive.
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputArg,
    },
    /// Prove the repository can restore what it claims: every chunk, every
    /// manifest, WAL continuity, the catalog.
    Verify {
        /// Check one backup only.
        #[arg(long, value_name = "ID")]
        set: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: OutputArg,
    },
    /// Prove the live setup works: connection, identity, archive_command.
    Check(CheckArgs),
    /// Repair the repository.
    Repair(RepairArgs),
    /// After pg_upgrade: continue the cluster under its new system identifier
    /// and major, as a new entry of its history (older backups stay restorable).
    Upgrade(UpgradeArgs),
    /// Restore drill: restore a backup into a scratch directory, start
    /// PostgreSQL there privately, recover to the target, run pg_amcheck and
    /// the configured SQL checks, report, clean up. Exit status 1 on any failure.
    Drill(Box<DrillArgs>),
    /// Print shell completions for pgstrata.
    Completions {
        /// The shell.
        #[arg(value_enum, value_name = "SHELL")]
        shell: ShellArg,
    },
    /// Print pgstrata's manual page (roff), e.g. `pgstrata man > pgstrata.1`.
    Man,
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct CheckArgs {
    /// The cluster's data directory [config: pgdata].
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// libpq connection string, key=value or URI [config: dbname].
    #[arg(long, short = 'd', value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// Seconds to wait for the switched WAL segment to arrive [default: 60; config: archive-timeout].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub archive_timeout: Option<u64>,
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct RepairArgs {
    /// Rebuild catalog.db from the packs and manifest copies (the old
    /// catalog is moved aside, not deleted).
    #[arg(long)]
    #[serde(skip)]
    #[merge(skip)]
    pub rebuild_catalog: bool,
    /// Seconds to wait for a running backup or expire [default: 0; config: lock-wait].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub lock_wait: Option<u64>,
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct UpgradeArgs {
    /// The upgraded cluster's data directory [config: pgdata].
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Seconds to wait for a running backup or expire [default: 0; config: lock-wait].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub lock_wait: Option<u64>,
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct BackupArgs {
    /// The cluster's data directory [config: pgdata].
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Backup type [default: incr, or full when there is none yet].
    #[arg(long = "type", value_enum)]
    #[serde(skip)]
    pub backup_type: Option<TypeArg>,
    /// libpq connection string, key=value or URI [config: dbname].
    #[arg(long, short = 'd', value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// zstd level, 1 to 22 [default: 3; config: compress-level].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub compress_level: Option<i32>,
    /// Parallel workers [default: CPUs, at most 8; config: workers].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub workers: Option<usize>,
    /// Seconds to wait for the backup's WAL to be archived [default: 60; config: archive-timeout].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub archive_timeout: Option<u64>,
    /// Ask for an immediate checkpoint: the backup starts at once, at the cost
    /// of a burst of writes. Without it PostgreSQL finishes a spread checkpoint
    /// first, which can take up to checkpoint_timeout [config: start-fast].
    #[arg(long)]
    #[merge(strategy = merge::bool::overwrite_false)]
    pub start_fast: bool,
    /// How an incr or diff finds what changed: `auto` reads only the blocks
    /// WAL names (the server's WAL summaries on 17+ with summarize_wal = on,
    /// else the archived WAL) when WAL is complete, else files as `off`
    /// does; `wal` fails instead; `off` reads files whose size or mtime
    /// changed; `check` proves `wal` by reading everything too
    /// [default: auto; config: change-tracking].
    #[arg(long, value_enum)]
    pub change_tracking: Option<ChangeTrackingArg>,
    /// Read every file, whatever its size and mtime [config: checksum].
    #[arg(long)]
    #[merge(strategy = merge::bool::overwrite_false)]
    pub checksum: bool,
    /// Seconds to wait for another backup or expire to finish [default: 0; config: lock-wait].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub lock_wait: Option<u64>,
    /// Size at which a pack file is sealed, in MiB [default: 32; config: pack-size-mib].
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub pack_size_mib: Option<u64>,
    /// Backing up a standby: libpq connection string of its primary, used only
    /// to check it and to switch WAL when backup mode stops (without it the
    /// primary's archive_timeout bounds the wait) [config: primary-dbname].
    #[arg(long, value_name = "CONNINFO")]
    pub primary_dbname: Option<String>,
    /// Backing up a standby: refuse one whose replay is further behind than
    /// this [default: 1024; config: standby-max-lag-mib].
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub standby_max_lag_mib: Option<u64>,
    /// Retention applied after every successful backup [config only:
    /// retain-full, retain-diff, retain-days, gc-threshold].
    #[arg(skip)]
    pub retain_full: Option<u32>,
    #[arg(skip)]
    pub retain_diff: Option<u32>,
    #[arg(skip)]
    pub retain_days: Option<f64>,
    #[arg(skip)]
    pub gc_threshold: Option<f64>,
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
#[command(group(clap::ArgGroup::new("recovery_target").multiple(false)
    .args(["target", "target_time", "target_lsn", "target_xid", "target_name"])))]
pub struct RestoreArgs {
    /// The data directory to write: empty or missing (or, with --delta, a stopped copy).
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    #[merge(skip)]
    pub pgdata: PathBuf,
    /// restore_command keeps this many WAL segments fetched ahead
    /// (`archive-get --prefetch`) [default: 0; config: archive-get-prefetch].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(rename = "archive-get-prefetch")]
    pub prefetch: Option<usize>,
    /// The spool directory restore_command prefetches into [default:
    /// /var/spool/pgstrata; config: spool-dir].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Backup id, or `latest` [default: the newest backup that can reach the target].
    #[arg(long, value_name = "ID")]
    #[serde(skip)]
    pub set: Option<String>,
    /// Stop recovery as soon as the backup is consistent.
    #[arg(long, value_enum)]
    #[serde(skip)]
    pub target: Option<TargetArg>,
    /// Recover up to this time; a zone is required (e.g. '2026-11-21 08:30:00+00').
    #[arg(long, value_name = "TIME")]
    #[serde(skip)]
    pub target_time: Option<String>,
    /// Recover up to this LSN (e.g. 0/3000028).
    #[arg(long, value_name = "LSN")]
    #[serde(skip)]
    pub target_lsn: Option<String>,
    /// Recover up to this transaction id.
    #[arg(long, value_name = "XID")]
    #[serde(skip)]
    pub target_xid: Option<String>,
    /// Recover up to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME")]
    #[serde(skip)]
    pub target_name: Option<String>,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    #[serde(skip)]
    #[merge(skip)]
    pub target_exclusive: bool,
    /// What the server does at the target.
    #[arg(long, value_enum)]
    #[serde(skip)]
    pub target_action: Option<ActionArg>,
    /// Timeline to recover along: current, latest or a number.
    #[arg(long, value_name = "TIMELINE")]
    #[serde(skip)]
    pub target_timeline: Option<String>,
    /// What the restored server starts as.
    #[arg(long = "type", value_enum, default_value = "recovery")]
    #[serde(skip)]
    #[merge(skip)]
    pub restore_type: RestoreTypeArg,
    /// primary_conninfo for a standby (with --type standby).
    #[arg(long, value_name = "CONNINFO")]
    #[serde(skip)]
    pub primary_conninfo: Option<String>,
    /// Update a stopped copy of this cluster in place: rewrite only blocks that differ.
    #[arg(long)]
    #[serde(skip)]
    #[merge(skip)]
    pub delta: bool,
    /// Restore tablespace OID into DIR (repeatable).
    #[arg(long, value_name = "OID=DIR")]
    #[serde(skip)]
    #[merge(skip)]
    pub tablespace_map: Vec<String>,
    /// Restore every other tablespace into DIR/<oid>.
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    pub tablespace_map_all: Option<PathBuf>,
    /// Recreate the backup's symbolic links inside the data directory (other
    /// than tablespaces), writing what a linked file or directory holds at its
    /// destination [default: restore them as regular files and directories;
    /// config: link-all].
    #[arg(long)]
    #[merge(strategy = merge::bool::overwrite_false)]
    pub link_all: bool,
    /// Recreate link PATH (relative to the data directory), leading to DEST
    /// (repeatable).
    #[arg(long, value_name = "PATH=DEST")]
    #[serde(skip)]
    #[merge(skip)]
    pub link_map: Vec<String>,
    /// Parallel workers [default: CPUs, at most 8; config: workers].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub workers: Option<usize>,
    /// off: the copy never archives (a test copy); preserve: it keeps the
    /// backup's archive_mode and archive_command (a restore that replaces the
    /// primary) [default: off].
    #[arg(long, value_enum, default_value = "off")]
    #[serde(skip)]
    #[merge(skip)]
    pub archive_mode: ArchiveModeArg,
}

#[derive(Clone, Copy, Debug, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueFullArg {
    /// Fail: PostgreSQL keeps the WAL and retries (pg_wal grows).
    Retry,
    /// Acknowledge without archiving, loudly: pg_wal stops growing, but
    /// point-in-time recovery across the dropped WAL is lost.
    Drop,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum ArchiveModeArg {
    /// The restored copy does not archive.
    #[default]
    Off,
    /// The restored copy keeps the backup's archiving settings.
    Preserve,
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct ExpireArgs {
    /// Keep this many full backups (their diffs and incrs go with older fulls) [config: retain-full].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub retain_full: Option<u32>,
    /// Keep this many differential backups [config: retain-diff].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub retain_diff: Option<u32>,
    /// Keep what restores to any point in the last DAYS days [config: retain-days].
    #[arg(long, value_name = "DAYS", allow_negative_numbers = true)]
    pub retain_days: Option<f64>,
    /// Expire exactly this backup.
    #[arg(long, value_name = "ID")]
    #[serde(skip)]
    pub set: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    #[serde(skip)]
    #[merge(skip)]
    pub dry_run: bool,
    /// Rewrite packs whose live share falls below PCT percent [default: 50; config: gc-threshold].
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    pub gc_threshold: Option<f64>,
    /// Seconds to wait for a running backup or expire [default: 0; config: lock-wait].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub lock_wait: Option<u64>,
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
#[command(group(clap::ArgGroup::new("drill_target").multiple(false)
    .args(["target", "target_time", "target_lsn", "target_xid", "target_name"])))]
pub struct DrillArgs {
    /// Backup id, or `latest` [default: the newest backup that can reach the target].
    #[arg(long, value_name = "ID")]
    #[serde(skip)]
    pub set: Option<String>,
    /// Stop recovery as soon as the backup is consistent.
    #[arg(long, value_enum)]
    #[serde(skip)]
    pub target: Option<TargetArg>,
    /// Recover up to this time; a zone is required (e.g. '2026-11-21 08:30:00+00').
    #[arg(long, value_name = "TIME")]
    #[serde(skip)]
    pub target_time: Option<String>,
    /// Recover up to this LSN (e.g. 0/3000028).
    #[arg(long, value_name = "LSN")]
    #[serde(skip)]
    pub target_lsn: Option<String>,
    /// Recover up to this transaction id.
    #[arg(long, value_name = "XID")]
    #[serde(skip)]
    pub target_xid: Option<String>,
    /// Recover up to this restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME")]
    #[serde(skip)]
    pub target_name: Option<String>,
    /// Stop just before the target instead of just after it.
    #[arg(long)]
    #[serde(skip)]
    #[merge(skip)]
    pub target_exclusive: bool,
    /// Timeline to recover along: current, latest or a number.
    #[arg(long, value_name = "TIMELINE")]
    #[serde(skip)]
    pub target_timeline: Option<String>,
    /// The `[drill]` table of the config file.
    #[command(flatten)]
    #[merge(strategy = Merge::merge)]
    pub drill: DrillTable,
    /// Keep the restored copy (stopped) instead of removing it.
    #[arg(long)]
    #[serde(skip)]
    #[merge(skip)]
    pub keep: bool,
    /// Parallel restore workers [default: CPUs, at most 8; config: workers].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub workers: Option<usize>,
    /// Output format of the report.
    #[arg(long, value_enum, default_value = "text")]
    #[serde(skip)]
    #[merge(skip)]
    pub output: OutputArg,
    /// Same as --output json.
    #[arg(long)]
    #[serde(skip)]
    #[merge(skip)]
    pub json: bool,
}

/// `[drill]` in the config file: options of `drill` that are kept in their
/// own table, the server settings of the copy and the SQL checks.
#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct DrillTable {
    /// Restore here: an empty or missing directory [default: a new one under
    /// $TMPDIR; config: drill.scratch].
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// PostgreSQL server binaries of the backup's major [default: pg_config
    /// --bindir or /usr/lib/postgresql/MAJOR/bin; config: drill.pg-bindir].
    #[arg(long, value_name = "DIR")]
    pub pg_bindir: Option<PathBuf>,
    /// Database user for the checks [default: the data directory's owner; config: drill.db-user].
    #[arg(long, value_name = "NAME")]
    pub db_user: Option<String>,
    /// Seconds recovery may take, from the server's start to promotion
    /// [default: 3600; config: drill.timeout].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timeout: Option<u64>,
    /// Run pg_amcheck [default: true; config only: drill.amcheck].
    #[arg(skip)]
    pub amcheck: Option<bool>,
    /// Server settings for the copy, e.g. `shared_buffers = "128MB"`
    /// [config only: drill.settings].
    #[arg(skip)]
    #[merge(strategy = from_the_file)]
    pub settings: toml::Table,
    /// SQL checks [config only: `[[drill.check]]`].
    #[arg(skip)]
    #[merge(strategy = from_the_file)]
    pub check: Vec<pgstrata::DrillCheck>,
}

/// For settings only the config file has: the file's value.
fn from_the_file<T>(left: &mut T, right: T) {
    *left = right;
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct ArchivePushArgs {
    /// The WAL file to archive (PostgreSQL's %p).
    #[arg(value_name = "PATH")]
    #[serde(skip)]
    #[merge(skip)]
    pub path: PathBuf,
    /// zstd level for the archived file, 1 to 22 [default: 3; config: compress-level].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub compress_level: Option<i32>,
    /// Hand the file to a background pusher that reads ahead through
    /// pg_wal/archive_status and pushes several files at once; exit 0
    /// once this file is durable in the repository [config: archive-async].
    #[arg(long = "async")]
    #[serde(rename = "archive-async")]
    #[merge(strategy = merge::bool::overwrite_false)]
    pub async_push: bool,
    /// Where the pusher keeps its state [default: /var/spool/pgstrata; config: spool-dir].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Seconds to wait for the pusher [default: 60; config: archive-timeout].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub archive_timeout: Option<u64>,
    /// MiB of WAL waiting in pg_wal beyond which the queue is full; 0 for
    /// no limit [default: 4096; config: archive-queue-max-mib].
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub archive_queue_max_mib: Option<u64>,
    /// What a full queue does [default: retry; config: archive-queue-full].
    #[arg(long, value_enum)]
    pub archive_queue_full: Option<QueueFullArg>,
    /// Files the pusher pushes at once [default: CPUs, at most 8; config: workers].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub workers: Option<usize>,
}

#[derive(clap::Args, Debug, Default, Deserialize, Merge)]
#[serde(default, rename_all = "kebab-case")]
#[merge(strategy = merge::option::overwrite_none)]
pub struct ArchiveGetArgs {
    /// Which entry of the cluster's history the WAL belongs to (restore
    /// writes it for backups taken after a `pgstrata upgrade`) [default: 1].
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    #[serde(skip)]
    #[merge(skip)]
    pub history: u32,
    /// The WAL file's name (PostgreSQL's %f).
    #[arg(value_name = "NAME")]
    #[serde(skip)]
    #[merge(skip)]
    pub name: String,
    /// Where to write it (PostgreSQL's %p).
    #[arg(value_name = "DEST")]
    #[serde(skip)]
    #[merge(skip)]
    pub dest: PathBuf,
    /// Keep this many segments fetched ahead for recovery, in the spool
    /// directory; 0: no prefetching [default: 0; config: archive-get-prefetch].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(rename = "archive-get-prefetch")]
    pub prefetch: Option<usize>,
    /// Where prefetched segments wait [default: /var/spool/pgstrata; config: spool-dir].
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
/// The background pusher's arguments (set by `archive-push --async`).
pub struct PushWorkerArgs {
    #[arg(long)]
    pub pg_wal: PathBuf,
    #[arg(long)]
    pub spool_dir: PathBuf,
    #[arg(long)]
    pub workers: usize,
    #[arg(long)]
    pub compress_level: i32,
}

#[derive(clap::Args, Debug)]
/// The background fetcher's arguments (set by `archive-get --prefetch`).
pub struct GetWorkerArgs {
    #[arg(long)]
    pub history: u32,
    #[arg(long)]
    pub spool_dir: PathBuf,
    #[arg(long)]
    pub prefetch: usize,
    #[arg(long)]
    pub workers: usize,
    #[arg(long)]
    pub segment_size: u64,
}
