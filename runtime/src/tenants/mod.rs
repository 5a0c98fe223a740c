//! Tenants: who is calling, what they own and how fast they may go.
//!
//! Each tenant owns one [`Registry`] (its tools, scripts, scratch folders and quotas), so
//! isolation is structural: a lookup by alias can only ever find the caller's own tools.
//! Keys are kept only as SHA-256 digests and compared in constant time. With no tenants
//! declared the server has one keyless `local` tenant (the config refuses that on a
//! non-loopback address).
//!
//! Tenants come from the config file (read-only) and from the admin API ([`admin`]: created,
//! given keys, keys revoked, deleted), whose records live in the store and come back at
//! start ([`Tenants::restore`]).

mod admin;
mod build;
mod failures;
mod strategy;
mod sync;

pub use admin::{AdminError, IssuedKey, KeyInfo, MAX_KEYS, NewTenant};
pub use failures::address_key;
pub use strategy::{ErrorStrategy, Strategies};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use anyhow::Context as _;
use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock as _, DefaultClock};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::{Config, LOCAL_TENANT, Policy, Role, parse_key_hash};
use crate::jobs::Jobs;
use crate::registry::Registry;
use crate::sandbox::LimitOverrides;
use crate::store::Store;
pub use build::Parts;
use build::Spec;
use failures::FailureWindow;

/// Where a tenant was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The config file (or the keyless local tenant): read-only through the API.
    Config,
    /// The admin API: recorded in the store.
    Api,
}

/// One tenant at run time.
pub struct Tenant {
    pub id: String,
    pub role: Role,
    pub origin: Origin,
    pub registry: Arc<Registry>,
    /// The largest request body this tenant may send.
    pub max_body_bytes: usize,
    /// The tenant's `callAsync` jobs.
    pub jobs: Jobs,
    /// How the tenant's failing calls are answered.
    pub strategies: Strategies,
    /// The tenant's log folder (`executeWithLogging`'s `log_file`).
    pub log_dir: PathBuf,
    /// Task quotas: running at once, and kept.
    pub max_running_tasks: usize,
    pub max_tasks: usize,
    pub task_store_bytes: u64,
    /// Bytes of installed packages all its environments may hold.
    pub packages_bytes: u64,
    /// What its uploaded scripts may take.
    pub script_quotas: crate::scripts::Quotas,
    /// What its tools may reach beyond the sandbox, and whether it may install packages.
    pub policy: Policy,
    rate: DefaultDirectRateLimiter,
    store: Store,
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

/// A key digest and the tenant it selects (`id`: keys made through the API have one).
struct Key {
    id: Option<String>,
    digest: [u8; 32],
    created_at: Option<f64>,
    tenant: Arc<Tenant>,
}

#[derive(Default)]
struct Table {
    by_id: BTreeMap<String, Arc<Tenant>>,
    keys: Vec<Key>,
}

/// Every tenant, and the keys that select them.
pub struct Tenants {
    table: RwLock<Table>,
    /// The keyless tenant, when none are declared.
    open: Option<Arc<Tenant>>,
    failures: FailureWindow,
    parts: Parts,
}

impl Tenants {
    /// Builds the config's tenants (those made through the API come back with
    /// [`Tenants::restore`]).
    pub fn build(parts: Parts) -> anyhow::Result<Self> {
        let config = &parts.config.clone();
        let failures = FailureWindow::new(config.http.auth_failures_per_minute);
        let mut table = Table::default();
        let mut open = None;
        if config.tenants.is_empty() {
            let tenant = Arc::new(parts.make(Spec {
                id: LOCAL_TENANT,
                role: Role::Admin,
                origin: Origin::Config,
                scripts_dir: &config.scripts_dir,
                quotas: &config.quotas,
                limits: config.limits,
                defaults: LimitOverrides::default(),
                policy: &config.policy,
            })?);
            table
                .by_id
                .insert(LOCAL_TENANT.to_owned(), Arc::clone(&tenant));
            open = Some(tenant);
        } else {
            warn_if_oversubscribed(config);
        }
        for declared in &config.tenants {
            let tenant = Arc::new(parts.make(Spec {
                id: &declared.id,
                role: declared.role,
                origin: Origin::Config,
                scripts_dir: &declared.scripts_dir,
                quotas: &declared.quotas,
                limits: declared.limits.unwrap_or(config.limits),
                defaults: declared.default_limits,
                policy: &declared.policy,
            })?);
            for hash in &declared.api_key_sha256 {
                let digest = parse_key_hash(hash).context("a key hash the config check missed")?;
                table.keys.push(Key {
                    id: None,
                    digest,
                    created_at: None,
                    tenant: Arc::clone(&tenant),
                });
            }
            table.by_id.insert(declared.id.clone(), tenant);
        }
        Ok(Self {
            table: RwLock::new(table),
            open,
            failures,
            parts,
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings back the tenants made through the API, then every tenant's recorded tools,
    /// settings and jobs. A record that cannot be used is logged and skipped.
    pub async fn restore(&self) {
        self.restore_api_tenants().await;
        for tenant in self.all() {
            self.materialize(&tenant).await;
            tenant.restore().await;
        }
    }

    /// Whether requests need a key.
    pub fn keyless(&self) -> bool {
        self.open.is_some()
    }

    /// The tenant a request's key selects. On a keyless server a request without a key (or
    /// with one that matches no tenant made through the API) is the local tenant's.
    pub fn authenticate(
        &self,
        key: Option<&[u8]>,
        client: IpAddr,
    ) -> Result<Arc<Tenant>, AuthError> {
        let Some(key) = key else {
            return self.open.clone().ok_or(AuthError::MissingKey);
        };
        if self.open.is_none()
            && let Some(retry_after) = self.failures.locked_out(client)
        {
            return Err(AuthError::LockedOut { retry_after });
        }
        let digest: [u8; 32] = Sha256::digest(key).into();
        // Every stored digest is compared, each in constant time.
        let mut found = None;
        for stored in &self.read().keys {
            if bool::from(stored.digest.ct_eq(&digest)) {
                found = Some(Arc::clone(&stored.tenant));
            }
        }
        match (found, &self.open) {
            (Some(tenant), _) => Ok(tenant),
            (None, Some(open)) => Ok(Arc::clone(open)),
            (None, None) => {
                self.failures.record(client);
                Err(AuthError::InvalidKey)
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Tenant>> {
        self.read().by_id.get(id).cloned()
    }

    /// Every tenant, by id.
    pub fn all(&self) -> Vec<Arc<Tenant>> {
        self.read().by_id.values().cloned().collect()
    }

    /// Drops every tenant's tools (at shutdown).
    pub fn clear(&self) {
        for tenant in self.all() {
            tenant.registry.clear();
        }
    }
}

fn warn_if_oversubscribed(config: &Config) {
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
}

/// The SHA-256 of a key as the config stores it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
