//! Tenants: who is calling, what they own and how fast they may go.
//!
//! Each tenant owns one [`Registry`] (its tools, scripts folder, scratch folders and quotas),
//! so isolation is structural: a lookup by alias can only ever find the caller's own tools.
//! Keys are kept only as SHA-256 digests and compared in constant time. With no tenants
//! declared the server has one keyless `local` tenant (the config refuses that on a
//! non-loopback address).

mod failures;
mod strategy;

pub use strategy::{ErrorStrategy, Strategies};

pub use failures::address_key;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::{Config, LOCAL_TENANT, Policy, Quotas, Role, parse_key_hash};
use crate::jobs::Jobs;
use crate::native::NativeModules;
use crate::registry::{Registry, ScratchQuota, Settings, Shared};
use crate::sandbox::{LimitOverrides, Limits, Sandbox};
use failures::FailureWindow;

/// One tenant at run time.
pub struct Tenant {
    pub id: String,
    pub role: Role,
    pub registry: Arc<Registry>,
    /// The largest request body this tenant may send.
    pub max_body_bytes: usize,
    /// The tenant's `callAsync` jobs.
    pub jobs: Jobs,
    /// How the tenant's failing calls are answered.
    pub strategies: Strategies,
    /// The tenant's log folder (`executeWithLogging`'s `log_file`).
    pub log_dir: std::path::PathBuf,
    /// Task quotas: running at once, and kept.
    pub max_running_tasks: usize,
    pub max_tasks: usize,
    pub task_store_bytes: u64,
    /// Bytes of installed packages all its environments may hold.
    pub packages_bytes: u64,
    /// What its tools may reach beyond the sandbox, and whether it may install packages.
    pub policy: Policy,
    rate: DefaultDirectRateLimiter,
}

impl Tenant {
    /// Takes one request from the tenant's rate budget, or says how long to wait.
    pub fn check_rate(&self) -> Result<(), Duration> {
        self.rate
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The tenant as the owner of tasks.
    pub fn task_owner(&self) -> crate::tasks::Owner {
        crate::tasks::Owner {
            id: self.id.clone(),
            registry: Arc::clone(&self.registry),
            max_running: self.max_running_tasks,
            max_stored: self.max_tasks,
            max_stored_bytes: self.task_store_bytes,
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no X-API-Key header")]
    MissingKey,
    #[error("the key matches no tenant")]
    InvalidKey,
    #[error("too many failed key checks from this address")]
    LockedOut { retry_after: Duration },
}

/// Every tenant, and the keys that select them.
pub struct Tenants {
    by_id: BTreeMap<String, Arc<Tenant>>,
    keys: Vec<([u8; 32], Arc<Tenant>)>,
    /// The keyless tenant, when none are declared.
    open: Option<Arc<Tenant>>,
    failures: FailureWindow,
}

impl Tenants {
    /// Builds every tenant's registry from the config.
    pub fn build(
        config: &Config,
        sandbox: &Sandbox,
        shared: &Shared,
        native: &NativeModules,
    ) -> anyhow::Result<Self> {
        let scratch_root = config.data_dir.join("scratch");
        let failures = FailureWindow::new(config.http.auth_failures_per_minute);
        let server_limits = |q: &Quotas| Quotas {
            max_tools: q.max_tools.min(config.max_tools),
            max_concurrent_calls: q.max_concurrent_calls.min(config.max_concurrent_calls),
            max_body_bytes: q.max_body_bytes.min(config.max_body_bytes),
            ..q.clone()
        };
        let parts = TenantParts {
            config,
            sandbox,
            shared,
            native,
            scratch_root: &scratch_root,
        };
        if config.tenants.is_empty() {
            let tenant = Arc::new(make_tenant(
                TenantSpec {
                    id: LOCAL_TENANT,
                    role: Role::Admin,
                    scripts_dir: &config.scripts_dir,
                    quotas: &server_limits(&config.quotas),
                    limits: config.limits,
                    defaults: LimitOverrides::default(),
                    policy: &config.policy,
                },
                parts,
            )?);
            return Ok(Self {
                by_id: BTreeMap::from([(LOCAL_TENANT.to_owned(), Arc::clone(&tenant))]),
                keys: Vec::new(),
                open: Some(tenant),
                failures,
            });
        }
        let tools: usize = config.tenants.iter().map(|t| t.quotas.max_tools).sum();
        let calls: usize = config
            .tenants
            .iter()
            .map(|t| t.quotas.max_concurrent_calls)
            .sum();
        if tools > config.max_tools || calls > config.max_concurrent_calls {
            tracing::warn!(
                tools,
                calls,
                server_tools = config.max_tools,
                server_calls = config.max_concurrent_calls,
                "the tenants' quotas add up to more than the server's totals: a busy tenant \
                 can take slots the others were promised (they get 503 overloaded)"
            );
        }
        let mut by_id = BTreeMap::new();
        let mut keys = Vec::new();
        for declared in &config.tenants {
            let tenant = Arc::new(make_tenant(
                TenantSpec {
                    id: &declared.id,
                    role: declared.role,
                    scripts_dir: &declared.scripts_dir,
                    quotas: &server_limits(&declared.quotas),
                    limits: declared.limits.unwrap_or(config.limits),
                    defaults: declared.default_limits,
                    policy: &declared.policy,
                },
                parts,
            )?);
            for hash in &declared.api_key_sha256 {
                let digest = parse_key_hash(hash).context("a key hash the config check missed")?;
                keys.push((digest, Arc::clone(&tenant)));
            }
            by_id.insert(declared.id.clone(), tenant);
        }
        Ok(Self {
            by_id,
            keys,
            open: None,
            failures,
        })
    }

    /// Whether requests need a key.
    pub fn keyless(&self) -> bool {
        self.open.is_some()
    }

    /// The tenant a request's key selects.
    pub fn authenticate(
        &self,
        key: Option<&[u8]>,
        client: IpAddr,
    ) -> Result<Arc<Tenant>, AuthError> {
        if let Some(open) = &self.open {
            return Ok(Arc::clone(open));
        }
        let key = key.ok_or(AuthError::MissingKey)?;
        if let Some(retry_after) = self.failures.locked_out(client) {
            return Err(AuthError::LockedOut { retry_after });
        }
        let digest: [u8; 32] = Sha256::digest(key).into();
        // Every stored digest is compared, each in constant time.
        let mut found = None;
        for (stored, tenant) in &self.keys {
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(tenant);
            }
        }
        match found {
            Some(tenant) => Ok(Arc::clone(tenant)),
            None => {
                self.failures.record(client);
                Err(AuthError::InvalidKey)
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_id.values()
    }

    /// Drops every tenant's tools (at shutdown).
    pub fn clear(&self) {
        for tenant in self.by_id.values() {
            tenant.registry.clear();
        }
    }
}

/// What every tenant is built from.
#[derive(Clone, Copy)]
struct TenantParts<'a> {
    config: &'a Config,
    sandbox: &'a Sandbox,
    shared: &'a Shared,
    native: &'a NativeModules,
    scratch_root: &'a Path,
}

/// One tenant's own settings.
struct TenantSpec<'a> {
    id: &'a str,
    role: Role,
    scripts_dir: &'a Path,
    quotas: &'a Quotas,
    limits: Limits,
    defaults: LimitOverrides,
    policy: &'a Policy,
}

fn make_tenant(spec: TenantSpec<'_>, parts: TenantParts<'_>) -> anyhow::Result<Tenant> {
    let TenantSpec {
        id,
        role,
        scripts_dir,
        quotas,
        limits,
        defaults,
        policy,
    } = spec;
    let scripts = scripts_dir
        .canonicalize()
        .with_context(|| format!("tenant {id:?}: scripts directory {}", scripts_dir.display()))?;
    let scratch = (quotas.scratch_bytes > 0).then(|| ScratchQuota {
        root: parts.scratch_root.join(id),
        max_bytes: quotas.scratch_bytes,
        max_files: quotas.scratch_files,
    });
    let registry = Registry::new(
        parts.sandbox.clone(),
        Settings {
            limits,
            defaults,
            max_tools: quotas.max_tools,
            max_concurrent_calls: quotas.max_concurrent_calls,
            queue_depth: parts.config.queue_depth,
            scripts,
            scratch,
            max_open_files: quotas.max_open_files,
            venvs_root: parts.config.data_dir.join("envs").join(id),
            native: crate::native::Access {
                modules: parts.native.clone(),
                policy: policy.clone(),
                slots: Arc::new(tokio::sync::Semaphore::new(
                    (parts.config.native.max_concurrent_calls / 2).max(1),
                )),
            },
        },
        parts.shared.clone(),
    );
    let per_second = NonZeroU32::new(quotas.requests_per_second).context("requests_per_second")?;
    let burst = NonZeroU32::new(quotas.burst).context("burst")?;
    Ok(Tenant {
        id: id.to_owned(),
        role,
        registry: Arc::new(registry),
        max_body_bytes: quotas.max_body_bytes,
        jobs: Jobs::new(quotas.max_jobs, Duration::from_secs(quotas.job_ttl_s)),
        strategies: Strategies::default(),
        log_dir: parts.config.data_dir.join("logs").join(id),
        max_running_tasks: quotas.max_running_tasks,
        max_tasks: quotas.max_tasks,
        task_store_bytes: quotas.task_store_bytes,
        packages_bytes: quotas.packages_bytes,
        policy: policy.clone(),
        rate: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
    })
}

/// The SHA-256 of a key as the config stores it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
