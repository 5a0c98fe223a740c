//! Server configuration: an optional TOML file, then environment variables and command-line
//! flags on top (clap reads both). Validated once, at start-up.
//!
//! ```toml
//! bind = "127.0.0.1"
//! port = 8000
//! scripts_dir = "scripts"
//! data_dir = "/var/lib/scriptbox"
//! cache_dir = "/var/cache/scriptbox"
//! artifacts_dir = "python-wasm/dist"
//! max_tools = 64
//! queue_depth = 32
//! max_body_bytes = 1048576
//!
//! [limits]            # defaults and maxima per call / instance; a load may lower them
//! fuel = 2000000000
//! deadline_ms = 10000
//! memory_bytes = 536870912
//! output_bytes = 1048576
//!
//! [start]             # budget to boot the interpreter and import a tool
//! fuel = 20000000000
//! deadline_ms = 30000
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::sandbox::{Limits, StartLimits};

/// The repository this binary was built from: the default home of the scripts, the fetched
/// interpreter and the fetch script, so `cargo run -- serve` works from any folder.
pub const SOURCE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The largest configuration file we read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Loopback by default.
    pub bind: IpAddr,
    /// Port to listen on (0 picks a free one).
    pub port: u16,
    /// Folder of tool scripts (`<name>.py`), mounted read-only in every instance.
    pub scripts_dir: PathBuf,
    /// Folder for the server's own state (the guest driver copy, later the database).
    pub data_dir: PathBuf,
    /// Folder for the compiled interpreter (about 300 MB), shared by every clone.
    pub cache_dir: PathBuf,
    /// Folder with the fetched interpreter (`fetch-python-wasm.sh` fills it).
    pub artifacts_dir: PathBuf,
    /// Fetch the interpreter with `fetch-python-wasm.sh` when it is missing.
    pub fetch_if_missing: bool,
    /// How many tools may be loaded at once.
    pub max_tools: usize,
    /// Calls waiting for one tool beyond the one running; past it calls get 503 `busy`.
    pub queue_depth: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Per-call and per-instance limits (defaults and maxima).
    pub limits: Limits,
    /// Budget to boot an instance and import its tool.
    pub start: StartLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            scripts_dir: Path::new(SOURCE_ROOT).join("scripts"),
            data_dir: default_dir("XDG_DATA_HOME", ".local/share"),
            cache_dir: default_dir("XDG_CACHE_HOME", ".cache"),
            artifacts_dir: Path::new(SOURCE_ROOT).join("python-wasm/dist"),
            fetch_if_missing: true,
            max_tools: 64,
            queue_depth: 32,
            max_body_bytes: 1 << 20,
            limits: Limits::default(),
            start: StartLimits::default(),
        }
    }
}

/// `$VAR/scriptbox`, else `$HOME/<fallback>/scriptbox`, else `./.scriptbox`.
fn default_dir(var: &str, fallback: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("scriptbox");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(fallback).join("scriptbox"),
        None => PathBuf::from(".scriptbox"),
    }
}

impl Config {
    /// Reads a TOML file (unknown keys are errors).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            bail!("config file {} is larger than 1 MiB", path.display());
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing the config file {}", path.display()))
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.limits.validate().context("config [limits]")?;
        if self.start.fuel == 0 || self.start.deadline_ms == 0 {
            bail!("config [start]: fuel and deadline_ms must be above 0");
        }
        if self.start.deadline_ms > crate::sandbox::limits::MAX_DEADLINE_MS {
            bail!("config [start]: deadline_ms may be at most one day");
        }
        if self.max_tools == 0 || self.queue_depth == 0 {
            bail!("config: max_tools and queue_depth must be above 0");
        }
        if self.max_body_bytes < 1024 {
            bail!("config: max_body_bytes must be at least 1024");
        }
        Ok(())
    }

    /// The interpreter module.
    pub fn snapshot_wasm(&self) -> PathBuf {
        self.artifacts_dir.join("python-snapshot.wasm")
    }

    /// The folder mounted at /usr/local/lib.
    pub fn stdlib_dir(&self) -> PathBuf {
        self.artifacts_dir.join("lib")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("prot = 1").expect_err("typo must fail");
        assert!(err.to_string().contains("unknown field `prot`"), "{err}");
    }

    #[test]
    fn partial_files_keep_defaults() {
        let config: Config = toml::from_str("port = 9000\n[limits]\nfuel = 5000\ndeadline_ms = 10\nmemory_bytes = 134217728\noutput_bytes = 10\n").expect("valid");
        assert_eq!(config.port, 9000);
        assert_eq!(config.limits.fuel, 5000);
        assert_eq!(config.bind, IpAddr::from([127, 0, 0, 1]));
        config.validate().expect("valid");
    }

    #[test]
    fn zero_and_huge_limits_are_refused() {
        let mut config = Config::default();
        config.limits.deadline_ms = 0;
        assert!(config.validate().is_err());
        config.limits.deadline_ms = u64::MAX;
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.start.deadline_ms = u64::MAX;
        assert!(config.validate().is_err());
    }
}
