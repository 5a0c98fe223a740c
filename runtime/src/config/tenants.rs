//! Tenants as the configuration declares them: their keys, role, quotas, limits and policy.

use std::path::PathBuf;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::limits::{LimitOverrides, Limits};

/// What one tenant may consume. The server-wide `max_tools`, `max_concurrent_calls` and
/// `max_body_bytes` still apply on top.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    pub max_tools: usize,
    /// Calls in flight (running or queued); past it 429 `too_many_calls`.
    pub max_concurrent_calls: usize,
    /// Sustained request rate; past it (and the burst) 429 `rate_limited`.
    pub requests_per_second: u32,
    pub burst: u32,
    pub max_body_bytes: usize,
    /// Disk bytes each tool's scratch folder (`/tmp` in the guest) may use; 0: no scratch.
    pub scratch_bytes: u64,
    /// Files and folders each tool's scratch folder may hold.
    pub scratch_files: u64,
    /// Files one instance may hold open at once.
    pub max_open_files: u32,
    /// `callAsync` jobs kept at once, running or finished; past it 429 `too_many_jobs`.
    pub max_jobs: usize,
    /// How long a finished job's result is kept.
    pub job_ttl_s: u64,
    /// Tasks running at once; past it 429 `too_many_tasks`.
    pub max_running_tasks: usize,
    /// Tasks kept in the task store, finished ones included; past it 429 `too_many_tasks`.
    pub max_tasks: usize,
    /// Bytes of step results the tenant's kept tasks may hold; past it new tasks and resumes
    /// get 429 `too_many_tasks` until finished ones are deleted.
    pub task_store_bytes: u64,
    /// Bytes of installed packages (all the tenant's environments together); past it
    /// `installPackage` gets 507 `quota_exceeded`.
    pub packages_bytes: u64,
    /// Largest script one upload may store (a module's source, or a package's zip and its
    /// unpacked files each); past it 413 `payload_too_large`.
    pub max_script_bytes: u64,
    /// Bytes all the tenant's script versions may hold; past it 507 `quota_exceeded`.
    pub scripts_bytes: u64,
    /// Scripts the tenant may keep; past it 507 `quota_exceeded`.
    pub max_scripts: u64,
    /// Versions kept per script: past it the oldest are pruned, unless a loaded tool runs
    /// them.
    pub script_versions: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_tools: 16,
            max_concurrent_calls: 32,
            requests_per_second: 1000,
            burst: 2000,
            max_body_bytes: 1 << 20,
            scratch_bytes: 64 << 20,
            scratch_files: 1000,
            max_open_files: 64,
            max_jobs: 256,
            job_ttl_s: 600,
            max_running_tasks: 8,
            max_tasks: 10_000,
            task_store_bytes: 256 << 20,
            packages_bytes: 256 << 20,
            max_script_bytes: 1 << 20,
            scripts_bytes: 64 << 20,
            max_scripts: 200,
            script_versions: 20,
        }
    }
}

/// `admin` may use administrative routes; `tenant` only its own tools.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Tenant,
}

fn tenant_role() -> Role {
    Role::Tenant
}

/// One declared tenant.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// 1-32 of `a-z 0-9 _ -`; it names folders and appears in logs.
    pub id: String,
    #[serde(default = "tenant_role")]
    pub role: Role,
    /// SHA-256 (hex) of each key the tenant may use; keys themselves are never stored.
    pub api_key_sha256: Vec<String>,
    /// The tenant's scripts, mounted read-only in its instances.
    pub scripts_dir: PathBuf,
    #[serde(default)]
    pub quotas: Quotas,
    /// This tenant's maxima; absent: the server's `[limits]`.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// What a load gets when it asks for nothing (each at most the maxima).
    #[serde(default)]
    pub default_limits: LimitOverrides,
    /// What the tenant's tools may reach beyond their sandbox.
    #[serde(default)]
    pub policy: Policy,
}

/// The id of the keyless tenant served when none are declared.
pub const LOCAL_TENANT: &str = "local";

/// Checks a tenant id: 1-32 characters of `a-z 0-9 _ -`.
pub fn valid_tenant_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parses a key hash: exactly 64 hex digits.
pub fn parse_key_hash(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut out).ok()?;
    Some(out)
}

/// What a tenant's tools may reach beyond their sandbox. Everything is off by default
/// (but `run_python` over MCP, which runs in a fresh sandbox like `/api/python/execute`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Native-module functions the tenant's guest code may call (`scriptbox.native`), each
    /// `"module.function"` or `"module.*"`.
    pub native_functions: Vec<String>,
    /// May install pure-Python packages for its sandboxes (`installPackage`; admins always
    /// may).
    pub install_packages: bool,
    /// A tool whose `get_tool_info()["requirements"]` names packages that are missing gets
    /// them installed at load (needs `install_packages`), instead of a `missing_requirements`
    /// refusal.
    pub auto_install_requirements: bool,
    /// Outbound HTTP through `scriptbox.http` (none by default).
    pub egress: super::egress::Egress,
    /// The MCP endpoint offers `run_python` (code in a fresh sandbox); on by default.
    pub mcp_run_python: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            native_functions: Vec::new(),
            install_packages: false,
            auto_install_requirements: false,
            egress: super::egress::Egress::default(),
            mcp_run_python: true,
        }
    }
}

impl Policy {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.egress.validate()?;
        if self.native_functions.len() > 1024 {
            bail!("native_functions: at most 1024 entries");
        }
        for entry in &self.native_functions {
            let valid = entry.split_once('.').is_some_and(|(module, function)| {
                crate::names::is_native_module(module)
                    && (function == "*" || crate::names::is_native_function(function))
            });
            if !valid {
                bail!("native_functions: {entry:?} is not \"module.function\" or \"module.*\"");
            }
        }
        Ok(())
    }

    /// Whether guest code may call `module.function`.
    pub fn allows_native(&self, module: &str, function: &str) -> bool {
        self.native_functions.iter().any(|entry| {
            entry
                .split_once('.')
                .is_some_and(|(m, f)| m == module && (f == "*" || f == function))
        })
    }
}

/// Checks a tenant's quotas (the config's, or an admin's for a tenant made through the API).
pub fn validate_quotas(q: &Quotas) -> anyhow::Result<()> {
    if q.max_tools == 0 || q.max_concurrent_calls == 0 {
        bail!("max_tools and max_concurrent_calls must be above 0");
    }
    if q.requests_per_second == 0 || q.burst == 0 {
        bail!("requests_per_second and burst must be above 0");
    }
    if q.max_body_bytes < 1024 {
        bail!("max_body_bytes must be at least 1024");
    }
    if q.scratch_bytes > 0 && q.scratch_files == 0 {
        bail!("scratch_files must be above 0 when scratch_bytes is");
    }
    if q.max_jobs == 0 || q.job_ttl_s == 0 {
        bail!("max_jobs and job_ttl_s must be above 0");
    }
    if q.max_running_tasks == 0 || q.max_tasks == 0 {
        bail!("max_running_tasks and max_tasks must be above 0");
    }
    if !(16..=4096).contains(&q.max_open_files) {
        bail!("max_open_files must be between 16 and 4096");
    }
    if !(1024..=64 << 20).contains(&q.max_script_bytes) {
        bail!("max_script_bytes must be between 1024 and 64 MiB");
    }
    if q.max_scripts == 0 || q.script_versions == 0 || q.scripts_bytes < q.max_script_bytes {
        bail!(
            "max_scripts and script_versions must be above 0, scripts_bytes at least max_script_bytes"
        );
    }
    Ok(())
}
