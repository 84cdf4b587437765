//! The TOML configuration file: the settings that stay from run to run,
//! under their command-line names (kebab-case), except `archive-async` and
//! `archive-get-prefetch`, named for their commands. Unknown keys are refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub repo: Option<PathBuf>,
    pub cluster: Option<String>,
    pub log_level: Option<String>,
    pub pgdata: Option<PathBuf>,
    pub dbname: Option<String>,
    pub compress_level: Option<i32>,
    pub workers: Option<usize>,
    pub archive_timeout: Option<u64>,
    pub start_fast: Option<bool>,
    pub checksum: Option<bool>,
    pub lock_wait: Option<u64>,
    pub pack_size_mib: Option<u64>,
    pub retain_full: Option<u32>,
    pub retain_diff: Option<u32>,
    pub retain_days: Option<f64>,
    pub gc_threshold: Option<f64>,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_command: Option<String>,
    pub archive_async: Option<bool>,
    pub spool_dir: Option<PathBuf>,
    pub archive_queue_max_mib: Option<u64>,
    pub archive_queue_full: Option<String>,
    pub archive_get_prefetch: Option<usize>,
    pub link_all: Option<bool>,
    pub primary_dbname: Option<String>,
    pub standby_max_lag_mib: Option<u64>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_uri_style: Option<super::args::UriStyleArg>,
    pub s3_ca_file: Option<PathBuf>,
    pub s3_storage_class: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// `[drill]`: options and checks of `pgstrata drill`.
    pub drill: Option<DrillConfig>,
}

/// The `[drill]` table: the drill's options (under their command-line
/// names), server settings for the copy, and `[[drill.check]]` SQL checks.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DrillConfig {
    pub scratch: Option<PathBuf>,
    pub pg_bindir: Option<PathBuf>,
    pub db_user: Option<String>,
    pub timeout: Option<u64>,
    /// Run pg_amcheck [default: true].
    pub amcheck: Option<bool>,
    /// Server settings for the copy, e.g. `shared_buffers = "128MB"`.
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub check: Vec<pgstrata::DrillCheck>,
}

/// Read the config file, if one is named. Errors are one line.
pub fn load(path: Option<&Path>) -> Result<FileConfig, String> {
    let Some(p) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        format!("invalid config file {}: {msg}", p.display())
    })
}
