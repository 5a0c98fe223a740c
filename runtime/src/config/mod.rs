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
//! max_tools = 64               # loaded tools, all tenants together
//! max_concurrent_calls = 128   # calls in flight, all tenants together (past it: 503)
//! queue_depth = 32
//! isolated_pool_per_tool = 2   # pre-warmed instances per isolated tool (mode: "isolated")
//! isolated_pool_total = 16     # all isolated tools together
//! images = true                # pre-initialised interpreter images (built once per machine)
//! max_body_bytes = 1048576
//!
//! [http]
//! header_read_timeout_ms = 10000
//! body_read_timeout_ms = 30000
//! max_header_bytes = 16384
//! max_headers = 64
//! max_connections = 1024
//! max_connections_per_ip = 64
//! auth_failures_per_minute = 10  # per client address; past it 429 for every key it sends
//! trusted_proxies = []          # e.g. ["127.0.0.1"]: believe their X-Forwarded-For
//!
//! [quotas]            # the keyless local tenant's quotas (when no [[tenants]] are declared);
//! max_tools = 64      # without this table it may use the server's totals
//!
//! [[tenants]]         # with tenants declared, every request needs an X-API-Key
//! id = "acme"
//! role = "tenant"     # or "admin"
//! api_key_sha256 = ["<64 hex digits: `scriptbox hash-key` prints them>"]
//! scripts_dir = "/srv/acme/scripts"
//! [tenants.quotas]
//! max_tools = 8
//! max_concurrent_calls = 8
//! requests_per_second = 50
//! burst = 100
//! max_body_bytes = 262144
//! scratch_bytes = 67108864
//! scratch_files = 1000
//! max_open_files = 64
//! [tenants.limits]           # this tenant's maxima (each at most the server's [limits])
//! fuel = 1000000000
//! [tenants.default_limits]   # what a load gets when it asks for nothing
//! deadline_ms = 2000
//!
//! [tenants.policy]           # what its tools may reach beyond the sandbox (all off by default)
//! native_functions = ["astro_native.altaz", "astro_report.*"]
//!
//! [policy]            # the keyless local tenant's policy
//! native_functions = []
//!
//! [native]            # trusted native modules (admins load them; tools call allowed ones)
//! modules_dir = "modules"
//! max_concurrent_calls = 4
//! call_timeout_ms = 10000
//!
//! [packages]          # installPackage: pip runs as a subprocess, never through a shell
//! python = "python3"
//! timeout_s = 120
//! max_concurrent_installs = 2
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

pub mod egress;
mod sections;
mod tenants;

pub use sections::{ClusterConfig, HttpLimits, NativeConfig, PackagesConfig, StoreConfig};
pub use tenants::{
    LOCAL_TENANT, Policy, Quotas, Role, TenantConfig, parse_key_hash, valid_tenant_id,
    validate_quotas,
};

use crate::limits::{LimitOverrides, Limits, StartLimits};

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
    /// How many tools may be loaded at once, all tenants together.
    pub max_tools: usize,
    /// Calls in flight (running or queued), all tenants together; past it calls get 503
    /// `overloaded` while health and cheap requests are still answered.
    pub max_concurrent_calls: usize,
    /// Calls waiting for one tool beyond the one running; past it calls get 503 `busy`.
    pub queue_depth: usize,
    /// Pre-warmed instances kept per isolated tool (`mode: "isolated"`); 0: every call starts
    /// its own.
    pub isolated_pool_per_tool: usize,
    /// Pre-warmed instances kept by all isolated tools together.
    pub isolated_pool_total: usize,
    /// Start instances from pre-initialised images (the driver, or the driver with numpy and
    /// pandas, already imported), built from `python.wasm` once per machine and cached in
    /// `cache_dir`. Off: every instance starts from the base snapshot.
    pub images: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Per-call and per-instance limits (defaults and maxima).
    pub limits: Limits,
    /// Budget to boot an instance and import its tool.
    pub start: StartLimits,
    /// Connection-level limits.
    pub http: HttpLimits,
    /// The local tenant's quotas (used when no tenants are declared).
    pub quotas: Quotas,
    /// Tenants and their keys. None: one keyless local tenant, loopback only.
    pub tenants: Vec<TenantConfig>,
    /// The local tenant's policy (used when no tenants are declared).
    pub policy: Policy,
    /// Trusted native modules (`modules/`).
    pub native: NativeConfig,
    /// `installPackage`: how pip is run.
    pub packages: PackagesConfig,
    /// Where the durable records live (default: SQLite in the data dir).
    pub store: StoreConfig,
    /// This node among others on one store.
    pub cluster: ClusterConfig,
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
            max_concurrent_calls: 128,
            queue_depth: 32,
            isolated_pool_per_tool: 2,
            isolated_pool_total: 16,
            images: true,
            max_body_bytes: 1 << 20,
            limits: Limits::default(),
            start: StartLimits::default(),
            http: HttpLimits::default(),
            // the local tenant is alone: by default it may use the whole server
            quotas: Quotas {
                max_tools: 64,
                max_concurrent_calls: 128,
                ..Quotas::default()
            },
            tenants: Vec::new(),
            policy: Policy::default(),
            native: NativeConfig::default(),
            packages: PackagesConfig::default(),
            store: StoreConfig::default(),
            cluster: ClusterConfig::default(),
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
        if let Some(url) = &self.store.url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            // The URL may hold a password: it is not echoed.
            bail!("config [store]: url must be a postgres:// URL");
        }
        if let Some(id) = &self.cluster.node_id
            && !crate::names::is_node_id(id)
        {
            bail!("config [cluster]: node_id must be 1-64 of A-Z a-z 0-9 _ . -");
        }
        if !(2..=3600).contains(&self.cluster.task_lease_s)
            || !(20..=10_000).contains(&self.cluster.poll_ms)
        {
            bail!("config [cluster]: task_lease_s must be 2-3600 and poll_ms 20-10000");
        }
        if self.start.fuel == 0 || self.start.deadline_ms == 0 {
            bail!("config [start]: fuel and deadline_ms must be above 0");
        }
        if self.start.deadline_ms > crate::limits::MAX_DEADLINE_MS {
            bail!("config [start]: deadline_ms may be at most one day");
        }
        if self.max_tools == 0 || self.queue_depth == 0 || self.max_concurrent_calls == 0 {
            bail!("config: max_tools, max_concurrent_calls and queue_depth must be above 0");
        }
        if self.isolated_pool_per_tool > 64 || self.isolated_pool_total > 4096 {
            bail!("config: isolated_pool_per_tool may be at most 64 and isolated_pool_total 4096");
        }
        if self.max_body_bytes < 1024 {
            bail!("config: max_body_bytes must be at least 1024");
        }
        self.validate_http()?;
        validate_quotas(&self.quotas).context("config [quotas]")?;
        self.policy.validate().context("config [policy]")?;
        if !(1..=3600).contains(&self.packages.timeout_s)
            || !(1..=16).contains(&self.packages.max_concurrent_installs)
            || self.packages.max_download_bytes < (64 << 10)
        {
            bail!(
                "config [packages]: timeout_s must be 1-3600, max_concurrent_installs 1-16 and max_download_bytes at least 64 KiB"
            );
        }
        if self.native.max_concurrent_calls == 0
            || self.native.max_concurrent_calls > 256
            || self.native.call_timeout_ms == 0
            || self.native.call_timeout_ms > crate::limits::MAX_DEADLINE_MS
        {
            bail!(
                "config [native]: max_concurrent_calls must be 1-256 and call_timeout_ms between 1 and a day"
            );
        }
        self.validate_tenants()?;
        if self.tenants.is_empty() && !self.bind.is_loopback() {
            bail!(
                "config: refusing to serve {} without API keys: with no [[tenants]] declared \
                 anyone who can reach the port could run code. Declare tenants with keys, or \
                 bind a loopback address (127.0.0.1).",
                self.bind
            );
        }
        Ok(())
    }

    fn validate_http(&self) -> anyhow::Result<()> {
        let h = &self.http;
        if h.header_read_timeout_ms == 0 || h.body_read_timeout_ms == 0 {
            bail!("config [http]: timeouts must be above 0");
        }
        if !(8192..=1 << 20).contains(&h.max_header_bytes) {
            bail!("config [http]: max_header_bytes must be between 8192 and 1048576");
        }
        if h.max_headers == 0
            || h.max_connections == 0
            || h.max_connections_per_ip == 0
            || h.auth_failures_per_minute == 0
        {
            bail!(
                "config [http]: max_headers, max_connections, max_connections_per_ip and \
                 auth_failures_per_minute must be above 0"
            );
        }
        if h.trusted_proxies.len() > 64 {
            bail!("config [http]: trusted_proxies takes at most 64 addresses");
        }
        Ok(())
    }

    fn validate_tenants(&self) -> anyhow::Result<()> {
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for tenant in &self.tenants {
            let id = &tenant.id;
            if !valid_tenant_id(id) {
                bail!("config [[tenants]]: id {id:?} must be 1-32 characters of a-z, 0-9, _ and -");
            }
            if !ids.insert(id.as_str()) {
                bail!("config [[tenants]]: id {id:?} is declared twice");
            }
            if tenant.api_key_sha256.is_empty() {
                bail!("config tenant {id:?}: api_key_sha256 needs at least one key hash");
            }
            for hash in &tenant.api_key_sha256 {
                let Some(digest) = parse_key_hash(hash) else {
                    bail!(
                        "config tenant {id:?}: api_key_sha256 entries must be 64 hex digits \
                         (the SHA-256 of the key; `scriptbox hash-key` prints it)"
                    );
                };
                if !keys.insert(digest) {
                    bail!("config tenant {id:?}: a key hash is declared twice");
                }
            }
            validate_quotas(&tenant.quotas)
                .with_context(|| format!("config tenant {id:?} quotas"))?;
            tenant
                .policy
                .validate()
                .with_context(|| format!("config tenant {id:?} policy"))?;
            let maxima = tenant.limits.unwrap_or(self.limits);
            maxima
                .validate()
                .with_context(|| format!("config tenant {id:?} limits"))?;
            self.limits
                .lowered(&LimitOverrides {
                    fuel: Some(maxima.fuel),
                    deadline_ms: Some(maxima.deadline_ms),
                    memory_bytes: Some(maxima.memory_bytes),
                    output_bytes: Some(maxima.output_bytes),
                })
                .with_context(|| {
                    format!("config tenant {id:?} limits must be within the server's [limits]")
                })?;
            maxima
                .lowered(&tenant.default_limits)
                .with_context(|| format!("config tenant {id:?} default_limits"))?;
        }
        Ok(())
    }

    /// The interpreter module.
    pub fn snapshot_wasm(&self) -> PathBuf {
        self.artifacts_dir.join("python-snapshot.wasm")
    }

    /// The interpreter before its snapshot, which scriptbox pre-initialises its images from.
    pub fn plain_wasm(&self) -> PathBuf {
        self.artifacts_dir.join("python.wasm")
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

    const TENANT: &str = r#"
[[tenants]]
id = "acme"
api_key_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
scripts_dir = "scripts"
[tenants.quotas]
max_tools = 2
[tenants.limits]
fuel = 1000000
deadline_ms = 100
memory_bytes = 134217728
output_bytes = 100
"#;

    #[test]
    fn tenants_parse_and_validate() {
        let config: Config = toml::from_str(TENANT).expect("valid");
        assert_eq!(config.tenants[0].role, Role::Tenant);
        assert_eq!(config.tenants[0].quotas.max_tools, 2);
        assert_eq!(config.tenants[0].quotas.burst, Quotas::default().burst);
        config.validate().expect("valid");
    }

    #[test]
    fn a_public_bind_needs_tenants() {
        let mut config = Config {
            bind: IpAddr::from([0, 0, 0, 0]),
            ..Config::default()
        };
        let err = config.validate().expect_err("must refuse");
        assert!(
            err.to_string()
                .contains("refusing to serve 0.0.0.0 without API keys"),
            "{err}"
        );
        config.tenants = toml::from_str::<Config>(TENANT).expect("valid").tenants;
        config.validate().expect("with keys it may");
    }

    #[test]
    fn bad_tenants_are_refused_with_the_reason() {
        let base: Config = toml::from_str(TENANT).expect("valid");
        type Breaker = fn(&mut Config);
        let cases: [(&str, Breaker); 5] = [
            ("must be 64 hex digits", |c| {
                c.tenants[0].api_key_sha256 = vec!["abc".into()]
            }),
            ("declared twice", |c| {
                let twin = c.tenants[0].clone();
                c.tenants.push(twin);
            }),
            ("must be 1-32 characters", |c| {
                c.tenants[0].id = "../etc".into()
            }),
            ("within the server's [limits]", |c| {
                if let Some(limits) = c.tenants[0].limits.as_mut() {
                    limits.fuel = u64::MAX;
                }
            }),
            ("needs at least one key hash", |c| {
                c.tenants[0].api_key_sha256.clear()
            }),
        ];
        for (expected, breaks) in cases {
            let mut config = base.clone();
            breaks(&mut config);
            let err = config.validate().expect_err(expected);
            assert!(
                format!("{err:#}").contains(expected),
                "{err:#} lacks {expected}"
            );
        }
    }
}
